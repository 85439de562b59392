//! The batch endpoints' semantics (create, update, read, archive): the 100-input cap, whole-batch
//! 400 versus per-input errors with `objectWriteTraceId` (207 before `2026-09`, 200/201 with
//! `numErrors`/`errors` from it), 409 on an existing email, OBJECT_NOT_FOUND, updates by record
//! id or unique property only (merged-away ids left out, while reads resolve them to their
//! survivor), `lifecyclestage` forward only, GDPR-blocklisted emails refused, and results in
//! shuffled order. The per-write checks are shared with the single-object endpoints. Pure over
//! the store (time and randomness are passed in).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use serde_json::{Value, json};

use super::errors::{Reply, bad_request, conflict, error_body, validation_body};
use super::store::Store;
use super::validate::{PropertyError, check_value, format_ms, normalize, parse_timestamp_ms};

/// Most inputs one batch request may carry.
pub const MAX_BATCH: usize = 100;

/// Per-request context: clock, randomness and the correlation id for error bodies.
pub struct Ctx<'a, R: Rng> {
    pub now_ms: i64,
    pub now_us: u64,
    pub rng: &'a mut R,
    pub correlation: String,
    /// Partial batches answer 207 (API versions before `2026-09`); otherwise the success status
    /// with the errors in the body.
    pub multi_status: bool,
    /// Conditionally required properties and the create form's required fields are enforced
    /// (`2026-09` on).
    pub enforce_required: bool,
    /// The portal's day, for the usage endpoint.
    pub usage: super::usage::Figures,
}

#[derive(Debug, Deserialize)]
struct Inputs<T> {
    inputs: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteInput {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    id_property: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    #[serde(default)]
    object_write_trace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdInput {
    id: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadRequest {
    inputs: Vec<IdInput>,
    #[serde(default)]
    properties: Vec<String>,
    #[serde(default)]
    id_property: Option<String>,
}

/// Parses a JSON body, answering HubSpot-style 400 when it does not fit.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], correlation: &str) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(
            format!(
                "Invalid input JSON on line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
            correlation,
        )
    })
}

/// Refuses an `idProperty` that is neither email (where `email_ok`) nor a unique custom
/// property, in HubSpot's words. Batch update takes record ids, never email.
pub fn check_id_property(
    store: &Store,
    name: Option<&str>,
    action: &str,
    email_ok: bool,
    corr: &str,
) -> Result<(), Reply> {
    let allowed =
        |name: &str| store.is_unique_property(name) || (email_ok && store.is_id_property(name));
    match name {
        Some(name) if !allowed(name) => Err(bad_request(
            format!("Unable to perform {action} by non-unique 0-1 property {name}"),
            corr,
        )),
        _ => Ok(()),
    }
}

fn check_cap(len: usize, correlation: &str) -> Result<(), Reply> {
    if len > MAX_BATCH {
        return Err(bad_request(
            format!(
                "Batch input limit exceeded: {len} inputs were sent but the maximum is {MAX_BATCH}."
            ),
            correlation,
        ));
    }
    Ok(())
}

/// A property value as sent: strings as they are, numbers and booleans as text, null clears.
fn value_text(name: &str, value: &Value) -> Result<String, PropertyError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        _ => Err(PropertyError {
            name: name.to_owned(),
            code: "INVALID_PROPERTY_VALUE",
            message: format!("Property \"{name}\" must be a string, number or boolean"),
        }),
    }
}

/// Validates one input's properties; returns the changes to apply or every problem found.
fn validate_input(
    store: &Store,
    properties: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Option<String>>, Vec<PropertyError>> {
    let mut changes = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, raw) in properties {
        let checked =
            value_text(name, raw).and_then(|text| check_value(store.property(name), name, &text));
        match checked {
            Ok(value) => {
                if let Some(v) = &value {
                    problems.extend(store.rules.value_problems(name, v));
                }
                changes.insert(name.clone(), value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(problems)
    }
}

/// Unique-value problems of `changes` for contact `own` (None = new): values of unique custom
/// properties held by another live contact or claimed earlier in the same batch.
fn unique_problems(
    store: &Store,
    own: Option<u64>,
    changes: &BTreeMap<String, Option<String>>,
    claimed: &mut HashMap<(String, String), usize>,
    input: usize,
) -> Vec<PropertyError> {
    let mut problems = Vec::new();
    for (name, value) in changes {
        let Some(value) = value else { continue };
        let Some(def) = store.property(name) else {
            continue;
        };
        if !(def.unique || def.email) {
            continue;
        }
        let key = (name.clone(), value.clone());
        let holder = store.holder(name, value).filter(|&h| Some(h) != own);
        let earlier = claimed.get(&key).copied().filter(|&i| i != input);
        if !def.email && holder.is_some() {
            problems.push(PropertyError {
                name: name.clone(),
                code: "INVALID_UNIQUE_VALUE",
                message: format!(
                    "{value} is already the value of {name} for another contact; {name} values must be unique"
                ),
            });
        } else if earlier.is_some() {
            problems.push(PropertyError {
                name: name.clone(),
                code: "INVALID_UNIQUE_VALUE",
                message: format!(
                    "{value} is given for {name} by more than one input of this batch"
                ),
            });
        } else {
            claimed.insert(key, input);
        }
    }
    problems
}

/// An error entry for one input, with its trace id and id in `context`.
fn input_error(body: Value, trace: Option<&str>, id: Option<&str>) -> Value {
    let mut body = body;
    let mut context = serde_json::Map::new();
    if let Some(trace) = trace {
        context.insert("objectWriteTraceId".into(), json!([trace]));
    }
    if let Some(id) = id {
        context.insert("ids".into(), json!([id]));
    }
    if let Some(object) = body.as_object_mut() {
        object.remove("correlationId");
        object.insert("context".into(), Value::Object(context));
        object.insert("subCategory".into(), json!({}));
        object.insert("links".into(), json!({}));
    }
    body
}

/// Shuffles results so they never come back in input order (when there are two or more).
fn shuffle<R: Rng>(results: &mut [Value], rng: &mut R) {
    if results.len() < 2 {
        return;
    }
    let before: Vec<Value> = results.to_vec();
    results.shuffle(rng);
    if results == before.as_slice() {
        results.reverse();
    }
}

fn batch_reply<R: Rng>(
    ctx: &mut Ctx<'_, R>,
    ok: u16,
    mut results: Vec<Value>,
    errors: Vec<Value>,
) -> Reply {
    shuffle(&mut results, ctx.rng);
    let at = format_ms(ctx.now_ms);
    let mut body = json!({"status": "COMPLETE", "results": results, "requestedAt": at,
                          "startedAt": at, "completedAt": at, "links": {}});
    if errors.is_empty() {
        return Reply::json(ok, body);
    }
    body["numErrors"] = json!(errors.len());
    body["errors"] = Value::Array(errors);
    Reply::json(if ctx.multi_status { 207 } else { ok }, body)
}

fn trace_mode(inputs: &[WriteInput]) -> bool {
    !inputs.is_empty() && inputs.iter().all(|i| i.object_write_trace_id.is_some())
}

fn with_trace(mut object: Value, trace: Option<&str>) -> Value {
    if let Some(trace) = trace {
        object["objectWriteTraceId"] = Value::String(trace.to_owned());
    }
    object
}

/// `POST …/objects/contacts/batch/create`.
pub fn create<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    write(store, body, ctx, Mode::Create)
}

/// `POST …/objects/contacts/batch/update`: by record id (or a unique custom property).
pub fn update<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    write(store, body, ctx, Mode::Update)
}

/// `POST …/objects/contacts/batch/upsert`: by `idProperty` (email or a unique property),
/// updating the contact that holds the value or creating one with it; results carry `new`.
pub fn upsert<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    write(store, body, ctx, Mode::Upsert)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
    Upsert,
}

/// Where an accepted input goes.
#[derive(Clone, Copy)]
pub enum Target {
    Existing(u64),
    New,
}

impl Target {
    pub fn own(self) -> Option<u64> {
        match self {
            Target::Existing(id) => Some(id),
            Target::New => None,
        }
    }
}

fn duplicate_ids(ids: BTreeSet<String>, corr: &str) -> Reply {
    let ids: Vec<String> = ids.into_iter().collect();
    let mut body = error_body(
        "VALIDATION_ERROR",
        &format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            ids.join(", ")
        ),
        corr,
    );
    body["context"] = json!({"ids": ids});
    Reply::json(400, body)
}

/// Resolves update/upsert inputs to contact ids (`None` = not found), refusing duplicates.
fn resolve(
    store: &Store,
    inputs: &[WriteInput],
    corr: &str,
) -> Result<Vec<(String, Option<u64>)>, Reply> {
    let mut resolved = Vec::new();
    let mut seen = BTreeSet::new();
    let mut duplicates = BTreeSet::new();
    for input in inputs {
        let raw = input.id.clone().unwrap_or_default();
        let id = store
            .lookup(input.id_property.as_deref(), &raw)
            .filter(|id| store.get(*id).is_some_and(|c| !c.archived()));
        if let Some(id) = id {
            if !seen.insert(id) {
                duplicates.insert(id.to_string());
            }
        } else if !appears_once(inputs, &raw) {
            // A missing id given twice is still a duplicate.
            duplicates.insert(raw.clone());
        }
        resolved.push((raw, id));
    }
    if duplicates.is_empty() {
        Ok(resolved)
    } else {
        Err(duplicate_ids(duplicates, corr))
    }
}

/// The shared write path: validation per input (207 with trace ids, whole-batch 400 without),
/// unique values, whole-batch 409 on an email held by another contact, then the writes.
fn write<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>, mode: Mode) -> Reply {
    let corr = ctx.correlation.clone();
    let request: Inputs<WriteInput> = match parse(body, &corr) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_cap(request.inputs.len(), &corr) {
        return reply;
    }
    let traced = trace_mode(&request.inputs);
    let resolved = if mode == Mode::Create {
        request
            .inputs
            .iter()
            .map(|_| (String::new(), None))
            .collect()
    } else {
        for input in &request.inputs {
            if mode == Mode::Upsert && input.id_property.is_none() {
                return bad_request(
                    "idProperty is required for upsert (email or a unique property)",
                    &corr,
                );
            }
            let id_property = input.id_property.as_deref();
            let email_ok = mode == Mode::Upsert;
            if let Err(reply) =
                check_id_property(store, id_property, "update/upsert", email_ok, &corr)
            {
                return reply;
            }
        }
        match resolve(store, &request.inputs, &corr) {
            Ok(resolved) => resolved,
            Err(reply) => return reply,
        }
    };
    let mut accepted = Vec::new();
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    let mut all_problems = Vec::new();
    let mut claimed = HashMap::new();
    for (i, (input, (raw, id))) in request.inputs.iter().zip(&resolved).enumerate() {
        let trace = input.object_write_trace_id.as_deref();
        let target = match (*id, mode) {
            (Some(id), _) => Target::Existing(id),
            (None, Mode::Create | Mode::Upsert) => Target::New,
            // HubSpot's contacts guide: ids listed in `hs_merged_object_ids` work with a single
            // PATCH but not with batch update [D]; RudderStack's fixtures show batch update
            // leaving such ids out of `results` without an error entry [C]. So: not written,
            // not reported.
            (None, Mode::Update) if store.merged_away(raw) => continue,
            (None, Mode::Update) => {
                missing.push((raw.clone(), trace));
                continue;
            }
        };
        let mut properties = input.properties.clone();
        if let (Mode::Upsert, Target::New, Some(name)) =
            (mode, target, input.id_property.as_deref())
        {
            properties
                .entry(name.to_owned())
                .or_insert_with(|| Value::String(raw.clone()));
        }
        match check_write(
            store,
            target,
            &properties,
            &mut claimed,
            i,
            ctx.enforce_required,
        ) {
            Ok(changes) => accepted.push((target, trace, changes)),
            Err(problems) => {
                let id_text = match (mode, target) {
                    (Mode::Create, _) => None,
                    (_, Target::Existing(id)) => Some(id.to_string()),
                    (_, Target::New) => Some(raw.clone()),
                };
                failed.push(input_error(
                    validation_body(&problems, &corr),
                    trace,
                    id_text.as_deref(),
                ));
                all_problems.extend(problems);
            }
        }
    }
    if !traced && !all_problems.is_empty() {
        return Reply::json(400, validation_body(&all_problems, &corr));
    }
    // An email that already belongs to another contact fails the whole batch, naming the first.
    for (target, _, changes) in &accepted {
        if let Some(reply) = email_conflict(store, *target, changes, &corr) {
            return reply;
        }
    }
    let mut errors: Vec<Value> = failed;
    errors.extend(not_found_errors(&missing, traced, &corr));
    let mut results = Vec::new();
    for (target, trace, changes) in accepted {
        let id = apply(store, target, changes, ctx);
        if let Some(contact) = store.get(id) {
            let mut object = with_trace(contact.to_json_all(), trace);
            if mode == Mode::Upsert {
                object["new"] = Value::Bool(matches!(target, Target::New));
            }
            results.push(object);
        }
    }
    let ok = if mode == Mode::Create { 201 } else { 200 };
    batch_reply(ctx, ok, results, errors)
}

/// Required properties the record would lack after the write (`current` None: a create).
pub fn required_problems(
    store: &Store,
    current: Option<&super::store::Contact>,
    changes: &BTreeMap<String, Option<String>>,
) -> Vec<PropertyError> {
    let mut after = current.map(|c| c.properties.clone()).unwrap_or_default();
    for (name, value) in changes {
        match value {
            Some(v) => after.insert(name.clone(), v.clone()),
            None => after.remove(name),
        };
    }
    store.rules.required_problems(&after, current.is_none())
}

/// Checks one write's properties for `target`: values, unique values (against other contacts
/// and, through `claimed`, earlier inputs of the batch), the lifecycle stage's direction and the
/// GDPR blocklist, and (`enforce_required`, from 2026-09) the portal's required properties.
/// Returns the changes to apply or every problem found.
pub fn check_write(
    store: &Store,
    target: Target,
    properties: &BTreeMap<String, Value>,
    claimed: &mut HashMap<(String, String), usize>,
    input: usize,
    enforce_required: bool,
) -> Result<BTreeMap<String, Option<String>>, Vec<PropertyError>> {
    let changes = validate_input(store, properties)?;
    let mut problems = unique_problems(store, target.own(), &changes, claimed, input);
    let current = target.own().and_then(|id| store.get(id));
    problems.extend(lifecycle_problem(store, current, &changes));
    problems.extend(blocklisted(store, &changes));
    if enforce_required {
        problems.extend(required_problems(store, current, &changes));
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(problems)
    }
}

/// An email a GDPR delete blocklisted cannot be written again. HubSpot documents the blocklist
/// ("you will not be able to add their email (primary or additional) back") but not the API's
/// answer; [I] the simulator refuses it as the invalid email value it now is (400
/// VALIDATION_ERROR, INVALID_EMAIL), HubSpot's documented answer to a refused property value.
fn blocklisted(store: &Store, changes: &BTreeMap<String, Option<String>>) -> Option<PropertyError> {
    let email = changes.get("email")?.as_deref()?;
    store.is_blocklisted(email).then(|| PropertyError {
        name: "email".to_owned(),
        code: "INVALID_EMAIL",
        message: format!(
            "Email address {email} belongs to a contact deleted for GDPR and is blocklisted"
        ),
    })
}

/// 409 when the write gives `target` an email another live contact holds.
pub fn email_conflict(
    store: &Store,
    target: Target,
    changes: &BTreeMap<String, Option<String>>,
    corr: &str,
) -> Option<Reply> {
    let email = changes.get("email")?.as_deref()?;
    let existing = store
        .holder("email", email)
        .filter(|h| Some(*h) != target.own())?;
    Some(conflict(existing, corr))
}

/// Writes checked changes: updates the existing contact or creates one. Returns its id.
pub fn apply<R: Rng>(
    store: &mut Store,
    target: Target,
    changes: BTreeMap<String, Option<String>>,
    ctx: &Ctx<'_, R>,
) -> u64 {
    match target {
        Target::Existing(id) => {
            store.update(id, &changes, ctx.now_ms, ctx.now_us);
            id
        }
        Target::New => {
            let values = changes
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            store.create(values, ctx.now_ms, ctx.now_us, None, None)
        }
    }
}

/// `lifecyclestage` only moves forward (in option order) unless it is first cleared.
fn lifecycle_problem(
    store: &Store,
    current: Option<&super::store::Contact>,
    changes: &BTreeMap<String, Option<String>>,
) -> Option<PropertyError> {
    const NAME: &str = "lifecyclestage";
    let new = changes.get(NAME)?.as_deref()?;
    let old = current?.get(NAME)?;
    let options = &store.property(NAME)?.options;
    let rank = |v: &str| options.iter().position(|o| o.value == v);
    (rank(new)? < rank(old)?).then(|| PropertyError {
        name: NAME.to_owned(),
        code: "INVALID_OPTION",
        message: format!(
            "{NAME} can only move forward: {new} comes before the current {old}; clear it first"
        ),
    })
}

fn appears_once(inputs: &[WriteInput], raw: &str) -> bool {
    inputs
        .iter()
        .filter(|i| i.id.as_deref().unwrap_or_default() == raw)
        .count()
        <= 1
}

const NOT_FOUND: &str = "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.";

/// OBJECT_NOT_FOUND entries: one per input with trace ids, otherwise one naming every id.
fn not_found_errors(missing: &[(String, Option<&str>)], traced: bool, corr: &str) -> Vec<Value> {
    if missing.is_empty() {
        return Vec::new();
    }
    if traced {
        return missing
            .iter()
            .map(|(raw, trace)| {
                input_error(
                    error_body("OBJECT_NOT_FOUND", NOT_FOUND, corr),
                    *trace,
                    Some(raw),
                )
            })
            .collect();
    }
    let ids: Vec<&str> = missing.iter().map(|(raw, _)| raw.as_str()).collect();
    let mut body = error_body("OBJECT_NOT_FOUND", NOT_FOUND, corr);
    if let Some(object) = body.as_object_mut() {
        object.remove("correlationId");
    }
    body["context"] = json!({"ids": ids});
    vec![body]
}

/// An id as sent, string or number.
pub fn id_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `POST …/objects/contacts/batch/read[?archived=true]`.
pub fn read<R: Rng>(store: &Store, body: &[u8], archived: bool, ctx: &mut Ctx<'_, R>) -> Reply {
    let corr = ctx.correlation.clone();
    let request: ReadRequest = match parse(body, &corr) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_cap(request.inputs.len(), &corr) {
        return reply;
    }
    let id_property = request
        .id_property
        .as_deref()
        .filter(|p| *p != "hs_object_id");
    if let Err(reply) = check_id_property(store, id_property, "read", true, &corr) {
        return reply;
    }
    let mut properties = super::query::requested(store, request.properties.clone());
    if let Some(name) = id_property
        && !properties.iter().any(|p| p == name)
    {
        properties.push(name.to_owned());
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    let mut returned = BTreeSet::new();
    for input in &request.inputs {
        let raw = id_text(&input.id);
        let found = if archived && id_property.is_some() {
            None
        } else {
            store.lookup_survivor(id_property, &raw)
        };
        match found
            .and_then(|id| store.get(id))
            .filter(|c| c.archived() == archived)
        {
            Some(contact) => {
                if returned.insert(contact.id) {
                    results.push(contact.to_json(&properties));
                }
            }
            None => missing.push((raw, None)),
        }
    }
    let errors = not_found_errors(&missing, false, &corr);
    batch_reply(ctx, 200, results, errors)
}

/// `POST …/objects/contacts/batch/archive`: 204, unknown ids ignored.
pub fn archive<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    let request: Inputs<IdInput> = match parse(body, &ctx.correlation) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_cap(request.inputs.len(), &ctx.correlation) {
        return reply;
    }
    for input in &request.inputs {
        if let Some(id) = store.lookup(None, &id_text(&input.id)) {
            store.archive(id, ctx.now_ms, ctx.now_us);
        }
    }
    Reply::empty(204)
}

/// A contact to seed: validated values and optional timestamps.
pub struct Seeded {
    pub values: BTreeMap<String, String>,
    pub created_ms: Option<i64>,
    pub modified_ms: Option<i64>,
}

/// Validates a seeded contact like a write, except that `createdate` and `lastmodifieddate`
/// (or `hs_lastmodifieddate`) may be given; the error names the property and the rule.
pub fn seed_values(
    store: &Store,
    record: &BTreeMap<String, Option<String>>,
) -> Result<Seeded, String> {
    let mut seeded = Seeded {
        values: BTreeMap::new(),
        created_ms: None,
        modified_ms: None,
    };
    for (name, value) in record {
        let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        let stamp = || {
            parse_timestamp_ms(value).ok_or_else(|| {
                format!("property {name}: {value} is not a datetime (ISO 8601 or epoch ms)")
            })
        };
        match name.as_str() {
            "hs_object_id" => {
                return Err("property hs_object_id: ids are assigned by the simulator".into());
            }
            "createdate" => seeded.created_ms = Some(stamp()?),
            "lastmodifieddate" | "hs_lastmodifieddate" => seeded.modified_ms = Some(stamp()?),
            _ => {
                let def = store.property(name).ok_or_else(|| {
                    format!("property {name}: Property \"{name}\" does not exist")
                })?;
                let normalized = normalize(def, value)
                    .map_err(|e| format!("property {name}: {} ({})", e.message, e.code))?;
                if def.unique
                    && let Some(holder) = store.holder(name, &normalized)
                {
                    return Err(format!(
                        "property {name}: value {normalized} already belongs to contact {holder}"
                    ));
                }
                seeded.values.insert(name.clone(), normalized);
            }
        }
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::properties::default_properties;
    use super::*;

    fn run(
        store: &mut Store,
        f: fn(&mut Store, &[u8], &mut Ctx<'_, StdRng>) -> Reply,
        body: Value,
    ) -> Reply {
        let mut rng = StdRng::seed_from_u64(7);
        let mut ctx = Ctx {
            now_ms: 1_700_000_000_000,
            now_us: 0,
            rng: &mut rng,
            correlation: "c".into(),
            multi_status: true,
            enforce_required: true,
            usage: Default::default(),
        };
        f(store, body.to_string().as_bytes(), &mut ctx)
    }

    fn body(reply: &Reply) -> Value {
        reply.body.clone().unwrap_or_default()
    }

    #[test]
    fn create_without_trace_ids_fails_whole_batch_on_one_bad_input() {
        let mut store = Store::new(default_properties(), 0);
        let reply = run(
            &mut store,
            create,
            json!({"inputs": [
            {"properties": {"email": "a@x.cr"}},
            {"properties": {"marital_status": "casado"}}]}),
        );
        assert_eq!(reply.status, 400);
        assert_eq!(body(&reply)["errors"][0]["code"], "INVALID_OPTION");
        assert!(store.is_empty());
    }

    #[test]
    fn create_with_trace_ids_applies_good_inputs_and_reports_bad_ones() {
        let mut store = Store::new(default_properties(), 0);
        let reply = run(
            &mut store,
            create,
            json!({"inputs": [
            {"properties": {"email": "A@X.cr"}, "objectWriteTraceId": "t1"},
            {"properties": {"bogus": "1"}, "objectWriteTraceId": "t2"}]}),
        );
        assert_eq!(reply.status, 207);
        let b = body(&reply);
        assert_eq!(b["numErrors"], 1);
        assert_eq!(b["errors"][0]["context"]["objectWriteTraceId"][0], "t2");
        assert_eq!(b["results"][0]["objectWriteTraceId"], "t1");
        assert_eq!(b["results"][0]["properties"]["email"], "a@x.cr");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn update_reports_duplicates_and_missing_ids() {
        let mut store = Store::new(default_properties(), 0);
        let id = store.create(BTreeMap::new(), 0, 0, None, None).to_string();
        let dup = run(
            &mut store,
            update,
            json!({"inputs": [
            {"id": id, "properties": {}}, {"id": id, "properties": {}}]}),
        );
        assert_eq!(dup.status, 400);
        assert_eq!(body(&dup)["context"]["ids"][0], id.as_str());
        let missing = run(
            &mut store,
            update,
            json!({"inputs": [
            {"id": id, "properties": {"firstname": "Ana"}}, {"id": "99", "properties": {}}]}),
        );
        assert_eq!(missing.status, 207);
        assert_eq!(body(&missing)["errors"][0]["category"], "OBJECT_NOT_FOUND");
        assert_eq!(body(&missing)["errors"][0]["context"]["ids"][0], "99");
    }

    #[test]
    fn unique_custom_values_cannot_repeat() {
        let mut store = Store::new(default_properties(), 0);
        let reply = run(
            &mut store,
            create,
            json!({"inputs": [
            {"properties": {"numero_asociado": "77"}, "objectWriteTraceId": "a"},
            {"properties": {"numero_asociado": "77"}, "objectWriteTraceId": "b"}]}),
        );
        assert_eq!(reply.status, 207);
        assert_eq!(
            body(&reply)["errors"][0]["errors"][0]["code"],
            "INVALID_UNIQUE_VALUE"
        );
        assert_eq!(store.len(), 1);
    }
}
