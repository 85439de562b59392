//! `objects.<name>:` — one synced object: SQL table and key, HubSpot object, match property,
//! sync policies, validation settings, enumerations and its field list.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problems;
use crate::validation::cedula::IdKind;
use crate::validation::phone::PhoneForm;
use crate::validation::placeholder::PlaceholderSettings;
use crate::validation::record::RecordRule;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectConfig {
    /// SQL Server table, optionally schema-qualified (`dbo.hb_contacts`).
    pub sql_table: String,
    /// Primary-key column of that table.
    pub sql_key: String,
    /// HubSpot object type (`contacts`).
    #[serde(default = "default_hubspot_object")]
    pub hubspot_object: String,
    /// Unique HubSpot property used to find existing records (`email`).
    #[serde(default = "default_match_property")]
    pub match_property: String,
    /// How SQL Server changes are found; none = the sync engine's default.
    #[serde(default)]
    pub change_detection: Option<ChangeDetection>,
    /// Which side wins when a field changed on both since the last sync.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// What to do with a record created in HubSpot that has no SQL row.
    #[serde(default)]
    pub on_new_hubspot_record: OnNewHubspotRecord,
    /// Settings of the Costa Rica rules for this object.
    #[serde(default)]
    pub validation: ValidationSettings,
    /// Value maps used by `enum:<name>` transforms.
    #[serde(default)]
    pub enums: BTreeMap<String, Vec<EnumValue>>,
    /// Column ↔ property mappings.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    /// Rules over several fields (territory, amounts, beneficiaries).
    #[serde(default)]
    pub record_rules: Vec<RecordRule>,
}

fn default_hubspot_object() -> String {
    "contacts".into()
}

fn default_match_property() -> String {
    "email".into()
}

/// `change_detection:` — how the SQL Server poller finds changed rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeDetection {
    pub mode: ChangeMode,
    /// The rowversion column or the modified-at datetime column.
    pub column: String,
    /// `modified_at` only: re-read this far back on every poll.
    #[serde(default = "default_overlap", with = "crate::config::duration")]
    pub overlap: Duration,
}

fn default_overlap() -> Duration {
    Duration::from_secs(5 * 60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeMode {
    Rowversion,
    ModifiedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    #[default]
    NewestWins,
    SqlWins,
    HubspotWins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNewHubspotRecord {
    #[default]
    Ignore,
    Insert,
}

/// `validation:` of an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Identity kinds `cedula_cr` accepts unless a field names its own (`cedula_cr:juridica`).
    pub identity_kinds: Vec<IdKind>,
    /// Regex for the `numero_asociado` rule.
    pub numero_asociado_pattern: String,
    /// How SQL Server stores phones: `national` (8 digits) or `e164` (`+506…`).
    pub phone_sql_form: PhoneForm,
    pub placeholders: PlaceholderSettings,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            identity_kinds: vec![IdKind::Fisica, IdKind::Dimex],
            numero_asociado_pattern: r"^[0-9]{1,10}$".into(),
            phone_sql_form: PhoneForm::National,
            placeholders: PlaceholderSettings::default(),
        }
    }
}

/// One value of an enumeration: SQL code, HubSpot internal option value, accepted synonyms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumValue {
    #[serde(deserialize_with = "scalar")]
    pub sql: String,
    pub hubspot: String,
    #[serde(default)]
    pub synonyms: Vec<String>,
}

fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Int(i64),
        Text(String),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Int(i) => i.to_string(),
        Scalar::Text(s) => s,
    })
}

/// One mapped field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// SQL column.
    pub sql: String,
    /// HubSpot property (internal name).
    pub hubspot: String,
    #[serde(default)]
    pub direction: Direction,
    /// Transform chain, applied in order (`trim`, `phone_cr`, `enum:marital_status`, …).
    #[serde(default)]
    pub transform: Vec<String>,
    /// Rules checked after the transforms (`email`, `max_length:100`, `birth_date`, …).
    #[serde(default)]
    pub rules: Vec<String>,
    /// The value must be non-empty.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// SQL column type, for writing values back; default from the transforms (text otherwise).
    #[serde(default)]
    pub sql_type: Option<SqlType>,
    /// Per-field override of the object's conflict policy.
    #[serde(default)]
    pub conflict_policy: Option<ConflictPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Both,
    ToHubspot,
    ToSql,
}

impl Direction {
    pub fn to_hubspot(self) -> bool {
        matches!(self, Direction::Both | Direction::ToHubspot)
    }

    pub fn to_sql(self) -> bool {
        matches!(self, Direction::Both | Direction::ToSql)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// The whole record is rejected (default).
    #[default]
    Reject,
    /// The field is left out with a warning; the record goes on.
    DropField,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlType {
    Text,
    Int,
    Decimal,
    Date,
    Datetime,
    Bit,
}

impl ObjectConfig {
    /// Adds a problem for every setting of this object that cannot work, including unknown
    /// transform and rule names (`objects.contacts.fields[3].transform[1]: unknown transform "foo"`).
    pub fn check(&self, path: &str, problems: &mut Problems) {
        if self.sql_table.trim().is_empty() {
            problems.push(format!("{path}.sql_table"), "must not be empty");
        }
        if self.sql_key.trim().is_empty() {
            problems.push(format!("{path}.sql_key"), "must not be empty");
        }
        if let Err(e) = super::Mapper::new(self) {
            for (at, message) in e.problems {
                problems.push(format!("{path}.{at}"), message);
            }
        }
    }
}
