//! Batch calls (`…/batch/{create,update,read,archive}`, paths by API version): chunks of 100, an `objectWriteTraceId`
//! per input, per-input outcomes matched by trace id / id / lowercased unique value (never by
//! position), 409 "already exists" resolved to the existing id, and whole-batch 400s split in
//! halves until the bad inputs are isolated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Answer, HubSpotClient, Repeat, expect_ok};
use super::error::HubSpotError;
use super::limiter::Lane;
use super::paths::BatchOp as Op;
use super::types::{
    ApiError, BatchAnswer, CreateInput, ReadBy, Record, UpdateInput, WriteOutcome, wire_properties,
};

/// HubSpot's cap on inputs per batch call.
pub const BATCH_LIMIT: usize = 100;

/// One input waiting for its outcome; its position in the call is its trace id.
struct Pending {
    id: Option<String>,
    body: Value,
    /// Lowercased value of the unique property (creates), to match 409 look-ups and results.
    unique: Option<String>,
}

fn normalize(value: &str) -> String {
    value.trim().to_lowercase()
}

impl HubSpotClient {
    /// Updates records by id. One outcome per input, in input order. A request that may have
    /// landed is sent again (see [`HubSpotClient::batch_update_with`]).
    pub async fn batch_update(
        &self,
        object: &str,
        inputs: &[UpdateInput],
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        self.batch_update_with(object, inputs, Repeat::Always).await
    }

    /// [`HubSpotClient::batch_update`], sending a request again after an attempt that may have
    /// done its work only as `repeat` allows. The sync sends its updates
    /// [`Repeat::OnlyIfUnsent`]: a repeat after the update landed would overwrite a HubSpot
    /// edit of the same field made in between, which deciding again finds as a conflict.
    pub async fn batch_update_with(
        &self,
        object: &str,
        inputs: &[UpdateInput],
        repeat: Repeat,
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        let pending = inputs
            .iter()
            .map(|i| Pending {
                id: Some(i.id.clone()),
                body: json!({"id": i.id, "properties": wire_properties(&i.properties)}),
                unique: None,
            })
            .collect();
        self.write(object, Op::Update, pending, None, repeat).await
    }

    /// Creates records. `unique_property` (e.g. `email`) names the property HubSpot keeps unique:
    /// on a 409 the inputs' values are looked up and the ones that exist come back as
    /// [`WriteOutcome::Exists`] while the rest are created. One outcome per input, in input order.
    pub async fn batch_create(
        &self,
        object: &str,
        inputs: &[CreateInput],
        unique_property: Option<&str>,
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        let pending = inputs
            .iter()
            .map(|i| Pending {
                id: None,
                body: json!({"properties": wire_properties(&i.properties)}),
                unique: unique_property
                    .and_then(|p| i.properties.get(p))
                    .and_then(|v| v.as_deref())
                    .filter(|v| !v.trim().is_empty())
                    .map(normalize),
            })
            .collect();
        self.write(object, Op::Create, pending, unique_property, Repeat::Always)
            .await
    }

    /// Creates or updates records by a unique property (`email`, or a custom property HubSpot
    /// keeps unique): one idempotent request per 100, so a retried upsert never makes a second
    /// record. Each input carries its whole property set (HubSpot refuses partial upserts by
    /// email). One outcome per input, in input order; `created` says which it was.
    pub async fn batch_upsert(
        &self,
        object: &str,
        id_property: &str,
        inputs: &[CreateInput],
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        let pending = inputs
            .iter()
            .map(|i| {
                let value = i
                    .properties
                    .get(id_property)
                    .and_then(|v| v.clone())
                    .unwrap_or_default();
                Pending {
                    id: Some(value.clone()),
                    body: json!({"id": value, "idProperty": id_property,
                                 "properties": wire_properties(&i.properties)}),
                    unique: Some(normalize(&value)),
                }
            })
            .collect();
        // Never sent again as it was: see [`Repeat::OnlyIfUnsent`].
        let repeat = Repeat::OnlyIfUnsent;
        self.write(object, Op::Upsert, pending, Some(id_property), repeat)
            .await
    }

    /// Archives records by id (HubSpot's recycle bin). One outcome per input, in input order.
    pub async fn batch_archive(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        let pending = ids
            .iter()
            .map(|id| Pending {
                id: Some(id.clone()),
                body: json!({"id": id}),
                unique: None,
            })
            .collect();
        self.write(object, Op::Archive, pending, None, Repeat::Always)
            .await
    }

    async fn write(
        &self,
        object: &str,
        op: Op,
        items: Vec<Pending>,
        unique_property: Option<&str>,
        repeat: Repeat,
    ) -> Result<Vec<WriteOutcome>, HubSpotError> {
        let path = self.paths().batch(object, op)?;
        let what = format!("batch {} of {object}", op.name());
        let mut out: Vec<Option<WriteOutcome>> = vec![None; items.len()];
        let all: Vec<usize> = (0..items.len()).collect();
        let mut groups: Vec<Vec<usize>> = all
            .chunks(BATCH_LIMIT)
            .rev()
            .map(<[usize]>::to_vec)
            .collect();
        while let Some(group) = groups.pop() {
            let inputs: Vec<Value> = group
                .iter()
                .map(|&i| {
                    let mut body = items[i].body.clone();
                    if op != Op::Archive
                        && let Value::Object(map) = &mut body
                    {
                        map.insert("objectWriteTraceId".into(), Value::String(i.to_string()));
                    }
                    body
                })
                .collect();
            let body = json!({ "inputs": inputs });
            let request = (Method::POST, path.as_str(), &[][..], Some(&body));
            let answer = match self
                .call_repeating(&what, Lane::Standard, request, repeat)
                .await
            {
                Ok(answer) => answer,
                Err(HubSpotError::Unavailable { status, last, .. }) => {
                    transient(&group, status, &last, &mut out);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match answer.status {
                200 | 201 | 207 => settle(op, &items, &group, &answer, unique_property, &mut out),
                204 => {
                    for &i in &group {
                        let id = items[i].id.clone().unwrap_or_default();
                        out[i] = Some(WriteOutcome::Ok {
                            id,
                            updated_at: None,
                            created: None,
                        });
                    }
                }
                409 if op == Op::Create => {
                    let error = ApiError::parse(&answer.body);
                    if let [only] = group[..] {
                        out[only] = Some(match error.existing_id() {
                            Some(existing_id) => WriteOutcome::Exists { existing_id },
                            None => rejection(&answer, &error),
                        });
                        continue;
                    }
                    let rest = match self
                        .resolve_existing(object, unique_property, &items, &group, &mut out)
                        .await
                    {
                        Ok(rest) => rest,
                        Err(HubSpotError::Unavailable { status, last, .. }) => {
                            transient(&group, status, &last, &mut out);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if rest.len() == group.len() {
                        // Nothing found by the unique value: isolate the conflicting input.
                        split(rest, &mut groups);
                    } else if !rest.is_empty() {
                        groups.push(rest);
                    }
                }
                400..=499 if group.len() > 1 => {
                    tracing::info!(
                        call = %what,
                        status = answer.status,
                        inputs = group.len(),
                        "HubSpot refused the whole batch; splitting it to isolate the bad inputs"
                    );
                    split(group, &mut groups);
                }
                _ => {
                    let error = ApiError::parse(&answer.body);
                    for &i in &group {
                        out[i] = Some(rejection(&answer, &error));
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| {
                o.unwrap_or(WriteOutcome::Transient {
                    status: None,
                    message: "no outcome recorded".into(),
                })
            })
            .collect())
    }

    /// After a 409 on create: reads the group's unique values; found inputs become `Exists`.
    /// Returns the inputs still to create.
    async fn resolve_existing(
        &self,
        object: &str,
        unique_property: Option<&str>,
        items: &[Pending],
        group: &[usize],
        out: &mut [Option<WriteOutcome>],
    ) -> Result<Vec<usize>, HubSpotError> {
        let Some(property) = unique_property else {
            return Ok(group.to_vec());
        };
        let values: Vec<String> = group
            .iter()
            .filter_map(|&i| items[i].unique.clone())
            .collect();
        let found = self
            .batch_read(object, &ReadBy::Property(property.to_owned()), &values, &[])
            .await?;
        let existing: HashMap<String, String> = values
            .into_iter()
            .zip(found)
            .filter_map(|(v, r)| Some((v, r?.id)))
            .collect();
        let mut rest = Vec::new();
        for &i in group {
            match items[i].unique.as_ref().and_then(|u| existing.get(u)) {
                Some(id) => {
                    out[i] = Some(WriteOutcome::Exists {
                        existing_id: id.clone(),
                    });
                }
                None => rest.push(i),
            }
        }
        Ok(rest)
    }

    /// Reads records by id or by a unique property. One entry per key, in key order: `None` when
    /// HubSpot has no such record. Property values are matched case-insensitively.
    pub async fn batch_read(
        &self,
        object: &str,
        by: &ReadBy,
        keys: &[String],
        properties: &[&str],
    ) -> Result<Vec<Option<Record>>, HubSpotError> {
        self.read_batch(object, by, keys, properties, false).await
    }

    /// Reads archived records (in HubSpot's recycle bin) by id: `None` for an id HubSpot holds
    /// no archived record of (live, or gone for good).
    pub async fn batch_read_archived(
        &self,
        object: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Record>>, HubSpotError> {
        self.read_batch(object, &ReadBy::Id, ids, &[], true).await
    }

    async fn read_batch(
        &self,
        object: &str,
        by: &ReadBy,
        keys: &[String],
        properties: &[&str],
        archived: bool,
    ) -> Result<Vec<Option<Record>>, HubSpotError> {
        let path = self.paths().batch(object, Op::Read)?;
        let what = match archived {
            true => format!("batch read of archived {object}"),
            false => format!("batch read of {object}"),
        };
        let query: Vec<(&str, String)> = match archived {
            true => vec![("archived", "true".to_owned())],
            false => Vec::new(),
        };
        let key_of = |k: &str| match by {
            ReadBy::Id => k.trim().to_owned(),
            ReadBy::Property(_) => normalize(k),
        };
        let mut wanted: Vec<String> = keys.iter().map(|k| key_of(k)).collect();
        wanted.sort();
        wanted.dedup();
        let mut props: Vec<&str> = properties.to_vec();
        if let ReadBy::Property(p) = by
            && !props.contains(&p.as_str())
        {
            props.push(p);
        }
        let mut found: HashMap<String, Record> = HashMap::new();
        for chunk in wanted.chunks(BATCH_LIMIT) {
            let inputs: Vec<Value> = chunk.iter().map(|k| json!({"id": k})).collect();
            let mut body = json!({"inputs": inputs, "properties": props});
            if let ReadBy::Property(p) = by {
                body["idProperty"] = Value::String(p.clone());
            }
            let answer = self
                .call(
                    &what,
                    Lane::Standard,
                    Method::POST,
                    &path,
                    &query,
                    Some(&body),
                )
                .await?;
            let batch: BatchAnswer = expect_ok(&what, &answer)?;
            for record in batch.results {
                for key in record_keys(by, &record) {
                    found.entry(key).or_insert_with(|| record.clone());
                }
            }
        }
        Ok(keys
            .iter()
            .map(|k| found.get(&key_of(k)).cloned())
            .collect())
    }
}

/// The keys a read result answers: its id (and merged-away ids) or its unique value.
fn record_keys(by: &ReadBy, record: &Record) -> Vec<String> {
    match by {
        ReadBy::Id => {
            let mut keys = vec![record.id.clone()];
            if let Some(merged) = record.property("hs_merged_object_ids") {
                keys.extend(merged.split(';').map(|s| s.trim().to_owned()));
            }
            keys
        }
        ReadBy::Property(p) => record.property(p).map(normalize).into_iter().collect(),
    }
}

fn transient(
    group: &[usize],
    status: Option<u16>,
    message: &str,
    out: &mut [Option<WriteOutcome>],
) {
    for &i in group {
        out[i] = Some(WriteOutcome::Transient {
            status,
            message: message.to_owned(),
        });
    }
}

fn split(group: Vec<usize>, groups: &mut Vec<Vec<usize>>) {
    let mid = group.len() / 2;
    groups.push(group[mid..].to_vec());
    groups.push(group[..mid].to_vec());
}

fn rejection(answer: &Answer, error: &ApiError) -> WriteOutcome {
    let category = match error.code() {
        Some(code) => format!("{}/{code}", error.category()),
        None => error.category().to_owned(),
    };
    WriteOutcome::Rejected {
        status: answer.status,
        category,
        message: error.message().to_owned(),
        property: error.property(),
    }
}

/// Settles a group from a 200/201/207 answer by trace id, id or unique value. Per-input errors
/// are read whatever the status: from `2026-09` on a partial batch answers 200/201 with
/// `numErrors`/`errors` in the body, before it 207.
fn settle(
    op: Op,
    items: &[Pending],
    group: &[usize],
    answer: &Answer,
    unique_property: Option<&str>,
    out: &mut [Option<WriteOutcome>],
) {
    let Ok(batch) = serde_json::from_slice::<BatchAnswer>(&answer.body) else {
        // Written or not, we cannot tell: let the queue retry (updates are idempotent and a
        // repeated create resolves through the 409 path).
        let message = "HubSpot's answer could not be read";
        transient(group, Some(answer.status), message, out);
        return;
    };
    let in_group = |trace: &str| -> Option<usize> {
        let i: usize = trace.parse().ok()?;
        group.contains(&i).then_some(i)
    };
    let by_id: HashMap<&str, usize> = group
        .iter()
        .filter_map(|&i| Some((items[i].id.as_deref()?, i)))
        .collect();
    let by_unique: HashMap<&str, usize> = group
        .iter()
        .filter_map(|&i| Some((items[i].unique.as_deref()?, i)))
        .collect();
    for record in &batch.results {
        let position = record
            .object_write_trace_id
            .as_deref()
            .and_then(in_group)
            .or_else(|| by_id.get(record.id.as_str()).copied())
            .or_else(|| {
                let value = normalize(record.property(unique_property?)?);
                by_unique.get(value.as_str()).copied()
            });
        if let Some(i) = position {
            // The modification time the record's pollers will see (its `lastmodifieddate`),
            // else HubSpot's `updatedAt`.
            let modified = ["lastmodifieddate", "hs_lastmodifieddate"]
                .iter()
                .find_map(|p| record.property(p))
                .map(str::to_string);
            out[i] = Some(WriteOutcome::Ok {
                id: record.id.clone(),
                updated_at: modified.or_else(|| record.updated_at.clone()),
                created: record.new,
            });
        }
    }
    for error in &batch.errors {
        let mut positions: Vec<usize> = error
            .context_strings("objectWriteTraceId")
            .iter()
            .filter_map(|t| in_group(t))
            .collect();
        if positions.is_empty() {
            positions = error
                .context_strings("ids")
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .collect();
        }
        for i in positions {
            out[i] = Some(if error.category() == "OBJECT_NOT_FOUND" {
                WriteOutcome::NotFound {
                    id: items[i].id.clone().unwrap_or_default(),
                }
            } else if let Some(existing_id) = error.existing_id() {
                WriteOutcome::Exists { existing_id }
            } else {
                rejection(answer, error)
            });
        }
    }
    for &i in group {
        if out[i].is_none() {
            out[i] = Some(match op {
                // HubSpot leaves merged-away or deleted ids out of update results.
                Op::Update | Op::Archive => WriteOutcome::NotFound {
                    id: items[i].id.clone().unwrap_or_default(),
                },
                Op::Create | Op::Upsert | Op::Read => WriteOutcome::Transient {
                    status: Some(answer.status),
                    message: "HubSpot's answer did not mention this input".into(),
                },
            });
        }
    }
}

/// Sends `batches` of updates through `workers` concurrent tasks sharing `client` (and so its
/// one limiter); returns every input with its outcome. Used by `hubsync bench hubspot`.
pub async fn update_concurrently(
    client: &Arc<HubSpotClient>,
    object: &str,
    batches: Vec<Vec<UpdateInput>>,
    workers: usize,
) -> Result<Vec<(UpdateInput, WriteOutcome)>, HubSpotError> {
    let queue = Arc::new(Mutex::new(batches));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let client = client.clone();
        let object = object.to_owned();
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let batch = crate::support::lock(&queue).pop();
                let Some(batch) = batch else {
                    return Ok::<_, HubSpotError>(done);
                };
                let outcomes = client.batch_update(&object, &batch).await?;
                done.extend(batch.into_iter().zip(outcomes));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let done =
            joined.map_err(|e| HubSpotError::Config(format!("update worker failed: {e}")))??;
        all.extend(done);
    }
    Ok(all)
}
