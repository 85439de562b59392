//! HubSpot API types: records, batch inputs and per-input outcomes, property definitions, and the
//! wire shapes of HubSpot's answers (parsed leniently: HubSpot says every error field is optional).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A HubSpot record's properties: values are strings; empty or absent is `None`.
pub type Properties = BTreeMap<String, Option<String>>;

/// One CRM record as HubSpot returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub object_write_trace_id: Option<String>,
    /// On upsert results: whether the record was created (true) or updated (false).
    #[serde(default)]
    pub new: Option<bool>,
}

impl Record {
    /// A property's value, `None` when absent or empty.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .get(name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
    }
}

/// One input of `batch_update`: the record id and the properties to write (`None` clears).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateInput {
    pub id: String,
    pub properties: Properties,
}

/// One input of `batch_create`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInput {
    pub properties: Properties,
}

/// How `batch_read` identifies records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBy {
    /// By record id (`hs_object_id`).
    Id,
    /// By `email` or a property with `hasUniqueValue: true`; matched case-insensitively.
    Property(String),
}

/// What happened to one input of a batch write; the sync engine settles queue items with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; `id` is the record's id (new for a create).
    Ok {
        id: String,
        updated_at: Option<String>,
        /// Upserts: whether HubSpot created the record (`new`); None for other writes.
        created: Option<bool>,
    },
    /// A create found a record with the same unique value: link `existing_id` and update it.
    Exists { existing_id: String },
    /// The record to update or archive does not exist (deleted, purged or merged away).
    NotFound { id: String },
    /// HubSpot refused this input; retrying the same data will fail again.
    Rejected {
        /// HTTP status of the answer that carried the error (400, 207, …).
        status: u16,
        /// HubSpot's `category` (VALIDATION_ERROR, …) and, where given, the error `code`.
        category: String,
        message: String,
        /// The property HubSpot named, when it named one.
        property: Option<String>,
    },
    /// Not settled: HubSpot kept failing or timing out within the retry budget. Retry later.
    Transient {
        status: Option<u16>,
        message: String,
    },
}

impl WriteOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }

    /// The id this input now maps to, for `Ok` and `Exists`.
    pub fn linked_id(&self) -> Option<&str> {
        match self {
            Self::Ok { id, .. } => Some(id),
            Self::Exists { existing_id } => Some(existing_id),
            _ => None,
        }
    }
}

/// One option of an enumeration property.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    #[serde(default)]
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub hidden: bool,
}

/// `modificationMetadata` of a property definition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    #[serde(default)]
    pub read_only_value: bool,
    #[serde(default)]
    pub read_only_definition: bool,
    #[serde(default)]
    pub archivable: bool,
}

/// A property definition from `GET …/properties/{object}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub name: String,
    #[serde(default)]
    pub label: String,
    /// `string`, `number`, `date`, `datetime`, `bool`, `enumeration`, `phone_number`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub field_type: String,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    #[serde(default)]
    pub has_unique_value: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub calculated: bool,
    #[serde(default)]
    pub modification_metadata: Option<ModificationMetadata>,
}

impl PropertyDef {
    /// Whether HubSpot refuses writes to this property.
    pub fn read_only(&self) -> bool {
        self.calculated
            || self
                .modification_metadata
                .as_ref()
                .is_some_and(|m| m.read_only_value)
    }
}

/// An object type's property definitions, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropertyDefs {
    pub by_name: BTreeMap<String, PropertyDef>,
}

impl PropertyDefs {
    pub fn new(defs: Vec<PropertyDef>) -> Self {
        Self {
            by_name: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&PropertyDef> {
        self.by_name.get(name)
    }
}

// ---- wire shapes -------------------------------------------------------------------------------

/// HubSpot's error body (`StandardError` / the 401, 409, 429 bodies), every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub policy_name: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
}

/// One entry of an error's `errors[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
}

impl ApiError {
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// Strings under `context.<key>` (an array of strings or one string).
    pub fn context_strings(&self, key: &str) -> Vec<String> {
        context_strings(self.context.as_ref(), key)
    }

    pub fn message(&self) -> &str {
        self.message.as_deref().unwrap_or("(no message)")
    }

    pub fn category(&self) -> &str {
        self.category.as_deref().unwrap_or("UNKNOWN")
    }

    /// The property this error is about, from `errors[].context.propertyName`, the error's own
    /// context, or the `Property values were not valid: [...]` message.
    pub fn property(&self) -> Option<String> {
        self.errors
            .iter()
            .flat_map(|d| context_strings(d.context.as_ref(), "propertyName"))
            .chain(self.context_strings("propertyName"))
            .next()
            .or_else(|| property_from_message(self.message.as_deref()?))
    }

    /// The error `code` of the first detail (PROPERTY_DOESNT_EXIST, INVALID_OPTION, …).
    pub fn code(&self) -> Option<&str> {
        self.errors.iter().find_map(|d| d.code.as_deref())
    }

    /// `Contact already exists. Existing ID: N` → N.
    pub fn existing_id(&self) -> Option<String> {
        existing_id(self.message.as_deref()?)
    }
}

fn context_strings(context: Option<&Value>, key: &str) -> Vec<String> {
    match context.and_then(|c| c.get(key)) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Parses the id out of HubSpot's 409 message (`Existing ID:\s*(\d+)`).
pub fn existing_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Existing ID:")?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// `Property values were not valid: [{"name":"x",...}]` → `x`.
fn property_from_message(message: &str) -> Option<String> {
    let start = message.find('[')?;
    let items: Vec<Value> = serde_json::from_str(&message[start..]).ok()?;
    items
        .iter()
        .find_map(|v| v.get("name")?.as_str().map(str::to_owned))
}

/// A batch answer (`BatchResponseSimplePublicObject[WithErrors]`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchAnswer {
    #[serde(default)]
    pub results: Vec<Record>,
    #[serde(default)]
    pub errors: Vec<ApiError>,
}

/// A search or list page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    pub results: Vec<Record>,
    #[serde(default)]
    pub paging: Option<Paging>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub next: Option<PagingNext>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PagingNext {
    pub after: String,
}

impl Page {
    pub fn next_after(&self) -> Option<String> {
        self.paging
            .as_ref()
            .and_then(|p| p.next.as_ref())
            .map(|n| n.after.clone())
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PropertyList {
    #[serde(default)]
    pub results: Vec<PropertyDef>,
}

/// Properties as HubSpot wants them on writes: strings, `""` to clear.
pub(crate) fn wire_properties(properties: &Properties) -> Value {
    Value::Object(
        properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone().unwrap_or_default())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_existing_id_from_409() {
        let e = ApiError::parse(
            br#"{"status":"error","message":"Contact already exists. Existing ID: 37765128953","category":"CONFLICT"}"#,
        );
        assert_eq!(e.existing_id().as_deref(), Some("37765128953"));
        assert_eq!(existing_id("Contact already exists. Existing ID:"), None);
        assert_eq!(existing_id("something else"), None);
    }

    #[test]
    fn finds_property_in_validation_error() {
        let from_details = ApiError::parse(
            br#"{"category":"VALIDATION_ERROR","message":"x","errors":[{"message":"Property \"zz\" does not exist","code":"PROPERTY_DOESNT_EXIST","context":{"propertyName":["zz"]}}]}"#,
        );
        assert_eq!(from_details.property().as_deref(), Some("zz"));
        assert_eq!(from_details.code(), Some("PROPERTY_DOESNT_EXIST"));
        let from_message = ApiError::parse(
            br#"{"category":"VALIDATION_ERROR","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"bad\",\"error\":\"INVALID_OPTION\",\"name\":\"estado\"}]"}"#,
        );
        assert_eq!(from_message.property().as_deref(), Some("estado"));
        assert_eq!(ApiError::parse(b"not json").message(), "(no message)");
    }

    #[test]
    fn context_accepts_string_or_array() {
        let e = ApiError::parse(br#"{"context":{"objectWriteTraceId":["3"],"ids":"9"}}"#);
        assert_eq!(e.context_strings("objectWriteTraceId"), vec!["3"]);
        assert_eq!(e.context_strings("ids"), vec!["9"]);
        assert!(e.context_strings("missing").is_empty());
    }

    #[test]
    fn wire_properties_clear_with_empty_string() {
        let mut p = Properties::new();
        p.insert("a".into(), Some("1".into()));
        p.insert("b".into(), None);
        assert_eq!(wire_properties(&p), serde_json::json!({"a": "1", "b": ""}));
    }

    #[test]
    fn read_only_from_metadata_or_calculated() {
        let def: PropertyDef = serde_json::from_value(serde_json::json!({
            "name": "hs_object_id", "type": "number",
            "modificationMetadata": {"readOnlyValue": true}
        }))
        .expect("def");
        assert!(def.read_only());
    }
}
