//! Field mapping: per-object configuration, the transforms between SQL columns and HubSpot
//! properties, and the compiled `Mapper` that maps and validates a record in either direction.
//! Pure code, no I/O.

mod object;
pub mod rule;
pub mod transform;

pub use object::{
    ArchiveAction, ChangeDetection, ChangeMode, ConflictPolicy, Direction, EmailSettings,
    EnumValue, ErasureAction, FieldConfig, IdnDomains, ObjectConfig, OnHubspotArchive,
    OnHubspotErasure, OnInvalid, OnNewHubspotRecord, SqlType, UnsafeCharacters, ValidationSettings,
};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use crate::validation::cedula::KindSet;
use crate::validation::placeholder::{Placeholders, ValueKind};
use crate::validation::record::{self, Record, RecordRule};
use crate::validation::text::{find_unsafe, strip_unsafe};
use crate::validation::{Invalid, Issue, Note};
use rule::Rule;
use transform::{Context, EnumMap, Step};

/// A SQL Server row keyed by column name, values encoded as in the contracts (numbers, exact
/// decimal strings, ISO dates, bools, null).
pub type SqlRow = serde_json::Map<String, Value>;

/// HubSpot record properties; `None` = empty.
pub type Properties = BTreeMap<String, Option<String>>;

/// A record mapped SQL → HubSpot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mapped {
    /// The SQL key of the record, when present.
    pub record_key: Option<String>,
    /// Mapped HubSpot properties (invalid fields left out).
    pub properties: Properties,
    /// Every failed rule; any error rejects the record.
    pub errors: Vec<Issue>,
    /// Accepted with a remark (placeholder cleared, extension dropped, field dropped).
    pub warnings: Vec<Issue>,
}

impl Mapped {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// HubSpot properties mapped HubSpot → SQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedSql {
    /// Column values encoded as in the contracts (per the field's `sql_type`).
    pub columns: SqlRow,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl MappedSql {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The object's configuration could not be compiled; problems are (key path below the object,
/// message), e.g. (`fields[3].transform[1]`, `unknown transform "foo" …`).
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; "))]
pub struct MapperError {
    pub problems: Vec<(String, String)>,
}

/// A mapped field, as the sync engine sees it.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    pub sql: String,
    pub hubspot: String,
    pub direction: Direction,
    pub conflict_policy: ConflictPolicy,
}

#[derive(Debug)]
struct Field {
    info: FieldInfo,
    steps: Vec<Step>,
    rules: Vec<Rule>,
    required: bool,
    on_invalid: OnInvalid,
    multiline: bool,
    sql_type: SqlType,
    placeholder: Option<ValueKind>,
}

/// The mapping of one object, compiled once from its `ObjectConfig`.
#[derive(Debug)]
pub struct Mapper {
    fields: Vec<Field>,
    /// The object's record rules naming fields by index.
    record_rules: Vec<RecordRule<usize>>,
    sql_key: String,
    match_property: String,
    placeholders: Placeholders,
    phone_form: crate::validation::phone::PhoneForm,
    unsafe_characters: UnsafeCharacters,
    email: EmailSettings,
    today: Option<NaiveDate>,
    /// The field reading the key column, if any.
    key_field: Option<usize>,
    /// Field indexes sorted by SQL column.
    by_column: Vec<usize>,
    /// Indexes of the fields mapped to HubSpot, sorted by HubSpot property.
    by_property: Vec<usize>,
    /// Those fields' properties, all empty: cloned for each record (which copies the keys and
    /// the tree's shape without comparing any key) and filled in property order.
    template: Properties,
}

/// Whether `SqlRow` iterates in key order (serde_json without `preserve_order`).
static ROWS_ARE_SORTED: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    let mut probe = SqlRow::new();
    probe.insert("b".into(), Value::Null);
    probe.insert("a".into(), Value::Null);
    probe.keys().next().is_some_and(|k| k == "a")
});

/// Today in Costa Rica (dates of birth, two-digit years): UTC−06:00 all year, no DST since 1992.
fn today_in_costa_rica() -> NaiveDate {
    (chrono::Utc::now() - chrono::TimeDelta::hours(6)).date_naive()
}

enum Outcome<'a> {
    Value(Option<Cow<'a, str>>),
    /// Left out: invalid (error or dropped with a warning).
    Omitted,
}

/// One field's value while a record is mapped; values are borrowed from the input row or the
/// mapping where no transform changed them, and copied once into the output.
#[derive(Debug, Clone)]
enum Slot<'a> {
    /// Not mapped in this direction, absent from the input, or removed by a record rule.
    Absent,
    /// Failed its own rules and is left out.
    Failed,
    Value(Option<Cow<'a, str>>),
}

impl<'a> From<Outcome<'a>> for Slot<'a> {
    fn from(outcome: Outcome<'a>) -> Self {
        match outcome {
            Outcome::Value(v) => Slot::Value(v),
            Outcome::Omitted => Slot::Failed,
        }
    }
}

/// A record's slots as the record rules see them (keys are field indexes).
struct Slots<'s, 'a> {
    slots: &'s mut [Slot<'a>],
    fields: &'s [Field],
}

impl Record for Slots<'_, '_> {
    type Key = usize;

    fn get(&self, key: &usize) -> Option<&str> {
        match &self.slots[*key] {
            Slot::Value(Some(v)) => Some(v),
            _ => None,
        }
    }

    fn failed(&self, key: &usize) -> bool {
        matches!(self.slots[*key], Slot::Failed)
    }

    fn name<'k>(&'k self, key: &'k usize) -> &'k str {
        &self.fields[*key].info.hubspot
    }

    fn set(&mut self, key: &usize, value: &'static str) {
        self.slots[*key] = Slot::Value(Some(Cow::Borrowed(value)));
    }

    fn remove(&mut self, key: &usize) {
        self.slots[*key] = Slot::Absent;
    }
}

impl Mapper {
    /// Compiles an object's mapping; every unknown transform or rule, bad argument, duplicate or
    /// dangling reference is reported.
    pub fn new(config: &ObjectConfig) -> Result<Mapper, MapperError> {
        let mut problems = Vec::new();
        let settings = &config.validation;
        let kinds = KindSet::of(&settings.identity_kinds);
        if settings.identity_kinds.is_empty() {
            problems.push((
                "validation.identity_kinds".to_string(),
                "must list at least one kind".to_string(),
            ));
        }
        if let Err(e) = regex::Regex::new(&settings.numero_asociado_pattern) {
            problems.push((
                "validation.numero_asociado_pattern".into(),
                format!("not a valid regex: {e}"),
            ));
        }
        let mut enums = HashMap::new();
        for (name, values) in &config.enums {
            match EnumMap::new(values) {
                Ok(map) => {
                    enums.insert(name.clone(), Arc::new(map));
                }
                Err(e) => problems.push((format!("enums.{name}"), e)),
            }
        }
        let mut fields = Vec::new();
        let mut sql_seen = HashSet::new();
        let mut hubspot_seen = HashSet::new();
        for (i, f) in config.fields.iter().enumerate() {
            let at = format!("fields[{i}]");
            if !is_identifier(&f.sql) {
                problems.push((
                    format!("{at}.sql"),
                    format!(
                        "{:?} is not a valid column name ([A-Za-z_][A-Za-z0-9_]*)",
                        f.sql
                    ),
                ));
            }
            if f.hubspot.trim().is_empty() {
                problems.push((format!("{at}.hubspot"), "must not be empty".into()));
            }
            if !sql_seen.insert(f.sql.as_str()) {
                problems.push((
                    format!("{at}.sql"),
                    format!("column {:?} is mapped twice", f.sql),
                ));
            }
            if !hubspot_seen.insert(f.hubspot.as_str()) {
                problems.push((
                    format!("{at}.hubspot"),
                    format!("property {:?} is mapped twice", f.hubspot),
                ));
            }
            let mut steps = Vec::new();
            for (j, spec) in f.transform.iter().enumerate() {
                match Step::parse(spec, kinds, &enums) {
                    Ok(s) => steps.push(s),
                    Err(e) => problems.push((format!("{at}.transform[{j}]"), e)),
                }
            }
            let mut rules = Vec::new();
            let mut required = f.required;
            let mut placeholder = None;
            for (j, spec) in f.rules.iter().enumerate() {
                match Rule::parse(spec, &settings.numero_asociado_pattern) {
                    Ok(Rule::Required) => required = true,
                    Ok(Rule::Placeholder) => {
                        placeholder = Some(
                            steps
                                .iter()
                                .find_map(Step::value_kind)
                                .unwrap_or(ValueKind::Text),
                        )
                    }
                    Ok(r) => rules.push(r),
                    Err(e) => problems.push((format!("{at}.rules[{j}]"), e)),
                }
            }
            let sql_type = f
                .sql_type
                .or_else(|| steps.iter().rev().find_map(Step::sql_type))
                .unwrap_or(SqlType::Text);
            fields.push(Field {
                info: FieldInfo {
                    sql: f.sql.clone(),
                    hubspot: f.hubspot.clone(),
                    direction: f.direction,
                    conflict_policy: f.conflict_policy.unwrap_or(config.conflict_policy),
                },
                steps,
                rules,
                required,
                on_invalid: f.on_invalid,
                multiline: f.multiline,
                sql_type,
                placeholder,
            });
        }
        if !config.fields.is_empty() && !hubspot_seen.contains(config.match_property.as_str()) {
            problems.push((
                "match_property".into(),
                format!(
                    "{:?} is not the hubspot property of any field",
                    config.match_property
                ),
            ));
        }
        let mut distrito_covered = HashSet::new();
        for (i, r) in config.record_rules.iter().enumerate() {
            for p in r.properties() {
                if !hubspot_seen.contains(p) {
                    problems.push((
                        format!("record_rules[{i}]"),
                        format!("{p:?} is not the hubspot property of any field"),
                    ));
                }
            }
            if let RecordRule::Territory { distrito, .. } = r {
                distrito_covered.insert(distrito.as_str());
            }
        }
        for (i, f) in fields.iter().enumerate() {
            let names_distrito = f.steps.iter().any(|s| {
                matches!(
                    s,
                    Step::Territory(crate::validation::territory::Level::Distrito)
                )
            });
            if names_distrito && !distrito_covered.contains(f.info.hubspot.as_str()) {
                problems.push((
                    format!("fields[{i}].transform"),
                    "territory_cr:distrito needs a `territory` record rule naming this property, \
                     to resolve distrito names within their cantón"
                        .into(),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(MapperError { problems });
        }
        let index: HashMap<&str, usize> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.info.hubspot.as_str(), i))
            .collect();
        // Every property was checked above to be a field's.
        let record_rules = config
            .record_rules
            .iter()
            .filter_map(|r| r.try_map_keys(|p| index.get(p.as_str()).copied()))
            .collect();
        let mut by_column: Vec<usize> = (0..fields.len()).collect();
        by_column.sort_by(|&a, &b| fields[a].info.sql.cmp(&fields[b].info.sql));
        let mut by_property: Vec<usize> = (0..fields.len())
            .filter(|&i| fields[i].info.direction.to_hubspot())
            .collect();
        by_property.sort_by(|&a, &b| fields[a].info.hubspot.cmp(&fields[b].info.hubspot));
        let template = by_property
            .iter()
            .map(|&i| (fields[i].info.hubspot.clone(), None))
            .collect();
        let key_field = fields.iter().position(|f| f.info.sql == config.sql_key);
        Ok(Mapper {
            key_field,
            by_column,
            by_property,
            template,
            fields,
            record_rules,
            sql_key: config.sql_key.clone(),
            match_property: config.match_property.clone(),
            placeholders: Placeholders::new(&settings.placeholders),
            phone_form: settings.phone_sql_form,
            unsafe_characters: settings.unsafe_characters,
            email: settings.email,
            today: None,
        })
    }

    /// Fixes "today" (for tests and reproducible reports); otherwise today in Costa Rica.
    pub fn with_today(mut self, today: NaiveDate) -> Self {
        self.today = Some(today);
        self
    }

    /// The mapped fields in config order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldInfo> {
        self.fields.iter().map(|f| &f.info)
    }

    /// The HubSpot property used to find existing records.
    pub fn match_property(&self) -> &str {
        &self.match_property
    }

    /// The record's SQL key as text (`numero_asociado`), when present and non-empty.
    pub fn record_key(&self, row: &SqlRow) -> Option<String> {
        key_text(row.get(&self.sql_key)?)
    }

    /// The row's value for each field, by index. A row kept in column order (serde_json's
    /// default map) is read in one pass instead of one search per field.
    fn columns_of<'r>(&self, row: &'r SqlRow) -> Vec<Option<&'r Value>> {
        let mut columns = vec![None; self.fields.len()];
        if !*ROWS_ARE_SORTED {
            for (i, f) in self.fields.iter().enumerate() {
                columns[i] = row.get(&f.info.sql);
            }
            return columns;
        }
        let mut entries = row.iter().peekable();
        for &i in &self.by_column {
            let name = self.fields[i].info.sql.as_str();
            // Usually the next column is this field's: test equality (length first) before order.
            while let Some((k, v)) = entries.peek() {
                if k.as_str() == name {
                    columns[i] = Some(*v);
                    entries.next();
                    break;
                }
                if k.as_str() > name {
                    break;
                }
                entries.next();
            }
        }
        columns
    }

    fn context(&self) -> Context {
        Context {
            today: self.today.unwrap_or_else(today_in_costa_rica),
            phone_form: self.phone_form,
            email: self.email,
        }
    }

    /// Maps and validates one SQL row for HubSpot. Every failure is reported, not just the first.
    pub fn to_hubspot(&self, row: &SqlRow) -> Mapped {
        let ctx = self.context();
        let columns = self.columns_of(row);
        let record_key = match self.key_field {
            Some(i) => columns[i].and_then(key_text),
            None => self.record_key(row),
        };
        let mut out = Mapped {
            record_key,
            ..Mapped::default()
        };
        let mut slots: Vec<Slot> = Vec::with_capacity(self.fields.len());
        for (f, column) in self.fields.iter().zip(columns) {
            if !f.info.direction.to_hubspot() {
                slots.push(Slot::Absent);
                continue;
            }
            let raw = match column {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
                Some(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
                Some(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
                Some(other) => {
                    out.errors.push(Issue {
                        field: f.info.sql.clone(),
                        rule: "type".into(),
                        message: format!("expected a single value, got {other}"),
                    });
                    slots.push(Slot::Failed);
                    continue;
                }
            };
            let outcome = self.map_value(
                f,
                &f.info.sql,
                raw,
                &ctx,
                &mut out.errors,
                &mut out.warnings,
            );
            slots.push(outcome.into());
        }
        self.apply_record_rules(&mut slots, true, &mut out.errors);
        // The template holds every property in order: fill it, then drop the left-out ones.
        let mut properties = self.template.clone();
        let mut left_out = false;
        for (value, &i) in properties.values_mut().zip(&self.by_property) {
            match &mut slots[i] {
                Slot::Value(v) => *value = v.take().map(Cow::into_owned),
                Slot::Absent | Slot::Failed => left_out = true,
            }
        }
        if left_out {
            let mut keep = self
                .by_property
                .iter()
                .map(|&i| matches!(slots[i], Slot::Value(_)));
            properties.retain(|_, _| keep.next().unwrap_or(true));
        }
        out.properties = properties;
        out
    }

    /// Maps and validates HubSpot properties for SQL Server. Only properties present in `props`
    /// (and mapped `both`/`to_sql`) give columns, so partial changes stay partial.
    pub fn to_sql(&self, props: &Properties) -> MappedSql {
        let ctx = self.context();
        let mut out = MappedSql::default();
        let mut slots = vec![Slot::Absent; self.fields.len()];
        for (f, slot) in self.fields.iter().zip(&mut slots) {
            if !f.info.direction.to_sql() {
                continue;
            }
            let Some(raw) = props.get(&f.info.hubspot) else {
                continue;
            };
            *slot = self
                .map_value(
                    f,
                    &f.info.hubspot,
                    raw.as_deref().map(Cow::Borrowed),
                    &ctx,
                    &mut out.errors,
                    &mut out.warnings,
                )
                .into();
        }
        self.apply_record_rules(&mut slots, false, &mut out.errors);
        for (f, slot) in self.fields.iter().zip(slots) {
            let Slot::Value(value) = slot else {
                continue;
            };
            let encoded = match value {
                None => Value::Null,
                Some(v) => {
                    let sql_form = f
                        .steps
                        .iter()
                        .rev()
                        .fold(v.into_owned(), |v, s| s.invert(v, &ctx));
                    match encode(&sql_form, f.sql_type) {
                        Ok(json) => json,
                        Err(message) => {
                            out.errors.push(Issue {
                                field: f.info.hubspot.clone(),
                                rule: "type".into(),
                                message,
                            });
                            continue;
                        }
                    }
                }
            };
            out.columns.insert(f.info.sql.clone(), encoded);
        }
        out
    }

    /// Placeholder → transforms → rules → required, for one value in either direction.
    fn map_value<'a>(
        &'a self,
        f: &'a Field,
        name: &str,
        raw: Option<Cow<'a, str>>,
        ctx: &Context,
        errors: &mut Vec<Issue>,
        warnings: &mut Vec<Issue>,
    ) -> Outcome<'a> {
        let issue = |rule: &str, message: String| Issue {
            field: name.to_string(),
            rule: rule.to_string(),
            message,
        };
        let mut value = raw.filter(|s| !s.trim().is_empty());
        let mut invalid = None;
        if let Some(found) = value.as_deref().and_then(|v| find_unsafe(v, f.multiline)) {
            let what = found.describe();
            match self.unsafe_characters {
                UnsafeCharacters::Reject => {
                    invalid = Some(Invalid::new(
                        "text",
                        format!(
                            "contains {what}: control, bidi and zero-width characters are refused"
                        ),
                    ));
                    value = None;
                }
                UnsafeCharacters::Strip => {
                    warnings.push(issue(
                        "text",
                        format!("contained {what} and others like it; they were removed"),
                    ));
                    value = value
                        .map(|v| Cow::<str>::Owned(strip_unsafe(&v, f.multiline)))
                        .filter(|s| !s.trim().is_empty());
                }
            }
        }
        if let (Some(kind), Some(v)) = (f.placeholder, value.as_deref())
            && self.placeholders.matches(v, kind)
        {
            warnings.push(issue(
                "placeholder",
                format!(
                    "{:?} is a placeholder, not data; the field was cleared",
                    v.trim()
                ),
            ));
            value = None;
        }
        if let Some(mut v) = value.take() {
            let mut notes: Vec<Note> = Vec::new();
            for step in &f.steps {
                match step.apply(v, ctx, &mut notes) {
                    Ok(next) => v = next,
                    Err(e) => {
                        invalid = Some(e);
                        v = Cow::Borrowed("");
                        break;
                    }
                }
            }
            if invalid.is_none() {
                invalid = f.rules.iter().find_map(|r| r.check(&v, ctx).err());
            }
            if invalid.is_none() && f.sql_type.is_bounded() && !v.is_empty() {
                // The column's own bounds, on the value as SQL Server would store it.
                let sql_form = f
                    .steps
                    .iter()
                    .rev()
                    .fold(v.to_string(), |v, s| s.invert(v, ctx));
                invalid = f.sql_type.check(&sql_form).err();
            }
            for n in notes {
                warnings.push(issue(n.rule, n.message));
            }
            if invalid.is_none() && !v.is_empty() {
                value = Some(v);
            }
        }
        if let Some(e) = invalid {
            match f.on_invalid {
                OnInvalid::Reject => errors.push(issue(e.rule, e.message)),
                OnInvalid::DropField => warnings.push(issue(
                    e.rule,
                    format!("{}; the field was left out", e.message),
                )),
            }
            return Outcome::Omitted;
        }
        if value.is_none() && f.required {
            errors.push(issue("required", "is required but empty".into()));
            return Outcome::Omitted;
        }
        Outcome::Value(value)
    }

    /// Record rules over the mapped slots; failures name the SQL column (SQL → HubSpot) or the
    /// HubSpot property (HubSpot → SQL).
    fn apply_record_rules<'a>(
        &'a self,
        slots: &mut [Slot<'a>],
        by_sql_column: bool,
        errors: &mut Vec<Issue>,
    ) {
        let mut record = Slots {
            slots,
            fields: &self.fields,
        };
        for r in &self.record_rules {
            record::check(r, &mut record, &mut |&i, rule, message| {
                let info = &self.fields[i].info;
                errors.push(Issue {
                    field: if by_sql_column {
                        info.sql.clone()
                    } else {
                        info.hubspot.clone()
                    },
                    rule: rule.into(),
                    message,
                })
            });
        }
    }

    /// A checker for one input or batch: a record whose match property value (email) was already
    /// seen is rejected naming the first record's key.
    pub fn duplicate_check(&self) -> DuplicateCheck {
        let field = self
            .fields
            .iter()
            .find(|f| f.info.hubspot == self.match_property)
            .map_or(self.match_property.clone(), |f| f.info.sql.clone());
        DuplicateCheck {
            property: self.match_property.clone(),
            field,
            seen: HashMap::new(),
        }
    }

    /// Rejects, within one batch, the later records sharing a match property value (email).
    pub fn reject_duplicates(&self, batch: &mut [Mapped]) {
        let mut check = self.duplicate_check();
        for m in batch {
            check.check(m);
        }
    }
}

/// Remembers the first record of each match property value (see `Mapper::duplicate_check`).
#[derive(Debug)]
pub struct DuplicateCheck {
    property: String,
    field: String,
    seen: HashMap<String, Option<String>>,
}

impl DuplicateCheck {
    /// Records `mapped`, or adds a `duplicate` error to it when its value was seen before.
    pub fn check(&mut self, mapped: &mut Mapped) {
        let Some(Some(value)) = mapped.properties.get(&self.property) else {
            return;
        };
        match self.seen.get(value) {
            Some(first) => {
                let first = first.as_deref().unwrap_or("(no key)");
                mapped.errors.push(Issue {
                    field: self.field.clone(),
                    rule: "duplicate".into(),
                    message: format!(
                        "{} {value} is already used by record {first}",
                        self.property
                    ),
                });
            }
            None => {
                self.seen.insert(value.clone(), mapped.record_key.clone());
            }
        }
    }
}

fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Encodes a SQL-side text value as the contracts' JSON for the column type.
fn encode(value: &str, sql_type: SqlType) -> Result<Value, String> {
    Ok(match sql_type {
        SqlType::Int { .. } => Value::Number(
            value
                .parse::<i64>()
                .map_err(|_| format!("{value:?} is not an integer"))?
                .into(),
        ),
        SqlType::Bit => match value.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("{value:?} is not true or false")),
        },
        SqlType::Datetime if value.len() == 10 => Value::String(format!("{value}T00:00:00")),
        SqlType::Text | SqlType::Decimal(_) | SqlType::Date | SqlType::Datetime => {
            Value::String(value.to_string())
        }
    })
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: a column or variable name.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
