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
use crate::validation::{Invalid, number};

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
    /// What to do with the SQL row of a record archived (deleted) in HubSpot.
    #[serde(default)]
    pub on_hubspot_archive: OnHubspotArchive,
    /// What to do with the SQL row of a member whose HubSpot contact is gone for good (a GDPR
    /// delete: not found, not archived, not merged).
    #[serde(default)]
    pub on_hubspot_erasure: OnHubspotErasure,
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
    /// The HubSpot portal's required properties, as its admins set them (HubSpot enforces them
    /// on writes from API version 2026-09 but has no API to read them): a record that lacks one
    /// is rejected before sending, naming the rule.
    #[serde(default)]
    pub portal_required: Vec<crate::hubspot::portal::RequiredProperty>,
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
    /// The rowversion column or the modified-at datetime column (none for change_tracking).
    #[serde(default)]
    pub column: Option<String>,
    /// `modified_at` only: re-read this far back on every poll.
    #[serde(default = "default_overlap", with = "crate::config::duration")]
    pub overlap: Duration,
    /// `rowversion` and `change_tracking`: a datetime/datetime2 column holding the row's last
    /// modification (local time), so `newest_wins` can compare it with HubSpot's. Without it
    /// SQL Server's time is unknown and HubSpot's change wins every newest_wins conflict.
    #[serde(default)]
    pub modified_column: Option<String>,
}

fn default_overlap() -> Duration {
    Duration::from_secs(5 * 60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeMode {
    Rowversion,
    ModifiedAt,
    /// SQL Server Change Tracking (tables with a primary key).
    ChangeTracking,
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

/// `on_hubspot_archive:` — `{ action: ignore }` (default), `{ action: delete }`, or
/// `{ action: set_column, column: activo, value: 0 }`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnHubspotArchive {
    #[serde(default)]
    pub action: ArchiveAction,
    /// `set_column`: the column to set (not the key).
    #[serde(default)]
    pub column: Option<String>,
    /// `set_column`: the value to write, a scalar in the SQL row encoding (`0`, `false`, `"baja"`).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// How often HubSpot's archived records are listed (one request per 100 archived records in
    /// its recycle bin); the first poll of a process always lists them.
    #[serde(default = "default_archive_scan", with = "crate::config::duration")]
    pub scan_every: Duration,
}

fn default_archive_scan() -> Duration {
    Duration::from_secs(5 * 60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveAction {
    /// Leave the SQL row alone (HubSpot's archived records are not even read).
    #[default]
    Ignore,
    /// Set `column` to `value`.
    SetColumn,
    /// Delete the SQL row.
    Delete,
}

impl OnHubspotArchive {
    /// How often HubSpot's archived records must be listed; None when they are ignored.
    pub fn scan_interval(&self) -> Option<Duration> {
        (self.action != ArchiveAction::Ignore).then_some(self.scan_every)
    }

    /// Whether an archive in HubSpot changes the SQL Server row (delete or set_column).
    pub fn does_something(&self) -> bool {
        self.action != ArchiveAction::Ignore
    }

    fn check(&self, path: &str, key: &str, problems: &mut Problems) {
        let path = format!("{path}.on_hubspot_archive");
        let set_column = self.action == ArchiveAction::SetColumn;
        check_set_column(&path, set_column, &self.column, &self.value, key, problems);
    }
}

/// `on_hubspot_erasure:` — `{ action: ignore }` (default: the link ends, the row stays),
/// `{ action: delete }`, `{ action: anonymize }` (the mapped personal columns set to NULL, or to
/// the value `neutral` gives a column that cannot be NULL), or
/// `{ action: set_column, column: borrado_hubspot, value: 1 }`. In every case hubsync erases
/// its own copies of the member's data.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnHubspotErasure {
    #[serde(default)]
    pub action: ErasureAction,
    /// `set_column`: the column to set (not the key).
    #[serde(default)]
    pub column: Option<String>,
    /// `set_column`: the value to write, a scalar in the SQL row encoding (`1`, `true`, `"baja"`).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// `anonymize`: a neutral value for personal columns that cannot be NULL (`{ email: "" }`).
    #[serde(default)]
    pub neutral: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureAction {
    /// Leave the SQL row alone; the record link ends.
    #[default]
    Ignore,
    /// Delete the SQL row.
    Delete,
    /// Clear the mapped personal columns (see [`FieldConfig::is_personal`]).
    Anonymize,
    /// Set `column` to `value`.
    SetColumn,
}

impl ErasureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureAction::Ignore => "ignore",
            ErasureAction::Delete => "delete",
            ErasureAction::Anonymize => "anonymize",
            ErasureAction::SetColumn => "set_column",
        }
    }
}

/// A scalar config value for a SQL column, or why not.
fn check_scalar(v: &serde_json::Value) -> Result<(), &'static str> {
    match v.is_array() || v.is_object() {
        true => Err("must be a single value (number, text or true/false)"),
        false => Ok(()),
    }
}

/// The `column` and `value` of an archive or erasure policy (at `path`): both required by
/// `set_column` (the column not the key, the value a scalar), neither given otherwise.
fn check_set_column(
    path: &str,
    set_column: bool,
    column: &Option<String>,
    value: &Option<serde_json::Value>,
    key: &str,
    problems: &mut Problems,
) {
    if !set_column {
        for (name, given) in [("column", column.is_some()), ("value", value.is_some())] {
            if given {
                problems.push(format!("{path}.{name}"), "only used by set_column");
            }
        }
        return;
    }
    match column.as_deref() {
        None => problems.push(format!("{path}.column"), "required by set_column"),
        Some(c) if c.eq_ignore_ascii_case(key) => problems.push(
            format!("{path}.column"),
            "must not be the key column (use action: delete)",
        ),
        // Its name is checked with the object's other columns (`check_sql`).
        Some(_) => {}
    }
    match value {
        None => problems.push(format!("{path}.value"), "required by set_column"),
        Some(v) => {
            if let Err(message) = check_scalar(v) {
                problems.push(format!("{path}.value"), message);
            }
        }
    }
}

impl OnHubspotErasure {
    fn check(&self, path: &str, object: &ObjectConfig, problems: &mut Problems) {
        let path = format!("{path}.on_hubspot_erasure");
        if !self.neutral.is_empty() && self.action != ErasureAction::Anonymize {
            problems.push(format!("{path}.neutral"), "only used by anonymize");
        }
        let set_column = self.action == ErasureAction::SetColumn;
        let (column, value) = (&self.column, &self.value);
        check_set_column(&path, set_column, column, value, &object.sql_key, problems);
        if self.action != ErasureAction::Anonymize {
            return;
        }
        let personal = object.personal_columns();
        if personal.is_empty() {
            problems.push(
                format!("{path}.action"),
                "no mapped column holds personal data (mark fields `personal: true`)",
            );
        }
        for (column, v) in &self.neutral {
            let at = format!("{path}.neutral.{column}");
            if !personal.iter().any(|p| p == column) {
                problems.push(
                    at,
                    format!(
                        "not a personal column of this object (anonymize clears: {})",
                        personal.join(", ")
                    ),
                );
            } else if let Err(message) = check_scalar(v) {
                problems.push(at, message);
            }
        }
    }

    /// The columns anonymize writes, each with its value (NULL unless `neutral` gives one), in
    /// the mapping's order.
    pub fn anonymized(&self, object: &ObjectConfig) -> Vec<(String, serde_json::Value)> {
        object
            .personal_columns()
            .into_iter()
            .map(|c| {
                let v = self
                    .neutral
                    .get(&c)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                (c, v)
            })
            .collect()
    }
}

/// Name parts that say a column or property holds personal data (names, contact details,
/// identity numbers, birth dates, addresses), in Spanish and English.
const PERSONAL_WORDS: &[&str] = &[
    "nombre",
    "nombres",
    "apellido",
    "apellidos",
    "name",
    "firstname",
    "lastname",
    "email",
    "correo",
    "telefono",
    "phone",
    "mobilephone",
    "celular",
    "cedula",
    "dimex",
    "pasaporte",
    "birth",
    "nacimiento",
    "direccion",
    "address",
];

impl FieldConfig {
    /// Whether the field holds personal data: as `personal:` says, or else by its kind — an
    /// email, identity-number, phone or birth-date transform or rule, or a column or property
    /// named like a name, contact detail, identity number or address
    /// (`nombre_y_apellidos__beneficiario_01_`, `telefono_oficina`, `no__de_cedula`).
    pub fn is_personal(&self) -> bool {
        if let Some(personal) = self.personal {
            return personal;
        }
        let kind = |name: &str| {
            let base = name.split(':').next().unwrap_or_default();
            matches!(base, "email" | "cedula_cr" | "phone_cr" | "birth_date")
        };
        let named = |name: &str| {
            name.to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| PERSONAL_WORDS.contains(&w))
        };
        self.transform.iter().any(|t| kind(t))
            || self.rules.iter().any(|r| kind(r))
            || named(&self.sql)
            || named(&self.hubspot)
    }
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
    /// Control, bidi and zero-width characters in any field's value: the record is rejected
    /// naming the field (default), or they are stripped with a warning.
    pub unsafe_characters: UnsafeCharacters,
    /// How email addresses with non-ASCII parts are treated.
    pub email: EmailSettings,
}

/// `validation.unsafe_characters:` — what the default text rule does with a control, bidi or
/// zero-width character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsafeCharacters {
    /// The value fails rule `text` (the field's `on_invalid` applies).
    #[default]
    Reject,
    /// The characters are removed (a tab or line break in a single-line field becomes a space)
    /// and a warning names the field.
    Strip,
}

/// `validation.email:` — internationalised addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// A domain with non-ASCII letters (`correo.café.cr`).
    pub idn_domains: IdnDomains,
    /// Accept non-ASCII letters before the `@` (`josé@…`); many mail systems, and HubSpot's
    /// validation, do not.
    pub unicode_local_part: bool,
}

/// What the `email` transform does with an internationalised domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdnDomains {
    /// Converted to its ASCII form (`correo.xn--caf-dma.cr`, IDNA/UTS #46) with a warning; a
    /// domain IDNA refuses (mixed scripts, bidi violations) is rejected.
    #[default]
    Punycode,
    /// The value fails rule `email_domain`.
    Reject,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            identity_kinds: vec![IdKind::Fisica, IdKind::Dimex],
            numero_asociado_pattern: r"^[0-9]{1,10}$".into(),
            phone_sql_form: PhoneForm::National,
            placeholders: PlaceholderSettings::default(),
            unsafe_characters: UnsafeCharacters::default(),
            email: EmailSettings::default(),
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
    /// The value may hold tabs and line breaks (an address, a note); names and ids may not.
    #[serde(default)]
    pub multiline: bool,
    /// SQL column type, for writing values back; default from the transforms (text otherwise).
    #[serde(default)]
    pub sql_type: Option<SqlType>,
    /// Per-field override of the object's conflict policy.
    #[serde(default)]
    pub conflict_policy: Option<ConflictPolicy>,
    /// Whether the column holds personal data (cleared by `on_hubspot_erasure: anonymize`);
    /// default from the field's kind (see [`FieldConfig::is_personal`]).
    #[serde(default)]
    pub personal: Option<bool>,
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

/// A field's SQL column type, as `sql_type:` names it: `text`, `tinyint`, `smallint`, `int`,
/// `bigint`, `decimal(18,2)` (or `numeric(p,s)`; a bare `decimal` is SQL Server's widest, 38
/// digits), `date`, `datetime`, `bit`. Numbers that do not fit are rejected before any write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Text,
    /// An integer column: its name and range.
    Int {
        name: &'static str,
        min: i64,
        max: i64,
    },
    /// `decimal(precision, scale)`; `None`: any SQL Server decimal (38 digits at most).
    Decimal(Option<(u8, u8)>),
    Date,
    Datetime,
    Bit,
}

impl SqlType {
    /// SQL Server's `int`.
    pub const INT: SqlType = SqlType::Int {
        name: "INT",
        min: i32::MIN as i64,
        max: i32::MAX as i64,
    };

    /// Parses a `sql_type:` value (case does not matter).
    pub fn parse(spec: &str) -> Result<SqlType, String> {
        let spec = spec.trim().to_ascii_lowercase();
        let int = |name, min, max| Ok(SqlType::Int { name, min, max });
        match spec.as_str() {
            "text" => return Ok(SqlType::Text),
            "tinyint" => return int("TINYINT", 0, 255),
            "smallint" => return int("SMALLINT", i16::MIN.into(), i16::MAX.into()),
            "int" => return Ok(SqlType::INT),
            "bigint" => return int("BIGINT", i64::MIN, i64::MAX),
            "decimal" | "numeric" => return Ok(SqlType::Decimal(None)),
            "date" => return Ok(SqlType::Date),
            "datetime" => return Ok(SqlType::Datetime),
            "bit" => return Ok(SqlType::Bit),
            _ => {}
        }
        let args = spec
            .strip_prefix("decimal")
            .or_else(|| spec.strip_prefix("numeric"))
            .and_then(|rest| rest.trim().strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'));
        let Some(args) = args else {
            return Err(format!(
                "unknown sql_type {spec:?} (known: text, tinyint, smallint, int, bigint, \
                 decimal, decimal(p,s), numeric(p,s), date, datetime, bit)"
            ));
        };
        let (p, s) = args.split_once(',').unwrap_or((args, "0"));
        match (p.trim().parse::<u8>(), s.trim().parse::<u8>()) {
            (Ok(p), Ok(s)) if (1..=38).contains(&p) && s <= p => Ok(SqlType::Decimal(Some((p, s)))),
            _ => Err(format!(
                "{spec:?}: precision must be 1 to 38 and scale 0 to the precision, \
                 as SQL Server requires"
            )),
        }
    }

    /// Whether a value in its SQL form fits this column: an integer in the column's range, a
    /// decimal with at most `precision - scale` integer digits and `scale` fractional digits
    /// (trailing zeros past the scale do not count; nothing is rounded). Other types pass.
    pub fn check(&self, value: &str) -> Result<(), Invalid> {
        let invalid = |why: String| Invalid::new("sql_type", why);
        match *self {
            SqlType::Int { name, min, max } => match value.trim().parse::<i128>() {
                Ok(n) if (i128::from(min)..=i128::from(max)).contains(&n) => Ok(()),
                Ok(_) => Err(invalid(format!(
                    "does not fit the column's {name} ({min} to {max})"
                ))),
                Err(_) => Err(invalid(format!(
                    "is not a whole number, as the column's {name} needs"
                ))),
            },
            SqlType::Decimal(bounds) => {
                let value = value.trim();
                let (int, frac) = match number::digit_counts(value) {
                    Some(counts) => counts,
                    None => number::digit_counts(&number::parse(value, None)?)
                        .ok_or_else(|| invalid("is not a number".into()))?,
                };
                let (column, int_max, frac_max) = match bounds {
                    Some((p, s)) => (
                        format!("DECIMAL({p},{s})"),
                        usize::from(p - s),
                        usize::from(s),
                    ),
                    None => ("DECIMAL (38 digits at most)".to_string(), 38 - frac, frac),
                };
                if int > int_max {
                    Err(invalid(format!(
                        "{int} integer digits do not fit the column's {column}: at most {int_max}"
                    )))
                } else if frac > frac_max {
                    Err(invalid(format!(
                        "{frac} decimals do not fit the column's {column}: at most {frac_max}"
                    )))
                } else {
                    Ok(())
                }
            }
            SqlType::Text | SqlType::Date | SqlType::Datetime | SqlType::Bit => Ok(()),
        }
    }

    /// Whether [`check`](Self::check) can refuse a value of this type.
    pub fn is_bounded(&self) -> bool {
        matches!(self, SqlType::Int { .. } | SqlType::Decimal(_))
    }
}

impl<'de> Deserialize<'de> for SqlType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        SqlType::parse(&spec).map_err(serde::de::Error::custom)
    }
}

impl ObjectConfig {
    /// Whether `newest_wins` settles some field's conflicts without SQL Server's modification
    /// time (rowversion mode and no `modified_column`): HubSpot's edit then wins them all.
    pub fn newest_wins_without_sql_time(&self) -> bool {
        let rowversion = self
            .change_detection
            .as_ref()
            .is_none_or(|d| d.mode != ChangeMode::ModifiedAt && d.modified_column.is_none());
        rowversion
            && self.fields.iter().any(|f| {
                f.direction == Direction::Both
                    && f.conflict_policy.unwrap_or(self.conflict_policy)
                        == ConflictPolicy::NewestWins
            })
    }

    /// What an operator should know about how this object is synced (printed by
    /// `check-config`, logged at start); none of it stops the service.
    pub fn notes(&self, path: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if self.newest_wins_without_sql_time() {
            notes.push(format!(
                "{path}.conflict_policy: newest_wins has no SQL Server modification time to \
                 compare (rowversion or change_tracking mode without \
                 change_detection.modified_column): HubSpot's \
                 edit wins every conflict, and each conflict records that reason"
            ));
        }
        notes
    }

    /// Adds a problem for every setting of this object that cannot work, including unknown
    /// transform and rule names (`objects.contacts.fields[3].transform[1]: unknown transform "foo"`).
    /// The SQL Server side is checked by the very validation the sync engine runs before it
    /// quotes any identifier, so what passes here is what `run` accepts.
    pub fn check(&self, path: &str, problems: &mut Problems) {
        if let Err(message) = check_hubspot_object(&self.hubspot_object) {
            problems.push(format!("{path}.hubspot_object"), message);
        }
        for (i, rule) in self.portal_required.iter().enumerate() {
            let names = std::iter::once(("property", &rule.property))
                .chain(rule.when.iter().map(|w| ("when.property", &w.property)));
            for (key, name) in names {
                let valid = name.len() <= 100
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    problems.push(
                        format!("{path}.portal_required[{i}].{key}"),
                        "not a HubSpot property name (lowercase letters, digits, `_`)",
                    );
                }
            }
            if rule.when.as_ref().is_some_and(|w| w.values.is_empty()) {
                problems.push(
                    format!("{path}.portal_required[{i}].when.is"),
                    "list the values that make the property required",
                );
            }
        }
        if let Some(d) = &self.change_detection {
            if d.modified_column.is_some() && d.mode == ChangeMode::ModifiedAt {
                problems.push(
                    format!("{path}.change_detection.modified_column"),
                    "only for mode rowversion or change_tracking (in modified_at mode `column` \
                     is the modification time)",
                );
            }
            match (d.mode, &d.column) {
                (ChangeMode::ChangeTracking, Some(_)) => problems.push(
                    format!("{path}.change_detection.column"),
                    "not for mode change_tracking: changes come from CHANGETABLE, not a column",
                ),
                (ChangeMode::Rowversion, None) => problems.push(
                    format!("{path}.change_detection.column"),
                    "required for mode rowversion: the rowversion column",
                ),
                (ChangeMode::ModifiedAt, None) => problems.push(
                    format!("{path}.change_detection.column"),
                    "required for mode modified_at: the modification-time column",
                ),
                _ => {}
            }
        }
        self.check_sql(path, problems);
        self.on_hubspot_archive.check(path, &self.sql_key, problems);
        self.on_hubspot_erasure.check(path, self, problems);
        if let Err(e) = super::Mapper::new(self) {
            for (at, message) in e.problems {
                problems.push(format!("{path}.{at}"), message);
            }
        }
    }

    /// Runs the sync engine's SQL Server validation (`SqlObjectSettings::validate`) on the
    /// settings the engine derives from this object, naming each refused setting by the key
    /// that gave it (`sql_table`, `fields[2].sql`, …).
    fn check_sql(&self, path: &str, problems: &mut Problems) {
        let settings = crate::sync::poller::sql_object_settings(self);
        let Err(found) = settings.validate() else {
            return;
        };
        for problem in found.iter() {
            let at = problem.path.strip_prefix("sql.").unwrap_or(&problem.path);
            let key = match at {
                "table" => "sql_table".to_string(),
                "key" => "sql_key".to_string(),
                // Reported above, with the object's own wording.
                "modified_column"
                    if self
                        .change_detection
                        .as_ref()
                        .is_some_and(|d| d.mode == ChangeMode::ModifiedAt) =>
                {
                    continue;
                }
                "modified_column" => "change_detection.modified_column".to_string(),
                // Reported above: the mode needs a column and none is given.
                "change_detection.column"
                    if self
                        .change_detection
                        .as_ref()
                        .is_some_and(|d| d.column.is_none()) =>
                {
                    continue;
                }
                other => match column_index(other).and_then(|i| settings.columns.get(i)) {
                    Some(column) => self.column_key(column),
                    None => other.to_string(),
                },
            };
            problems.push(format!("{path}.{key}"), problem.message.clone());
        }
    }

    /// The key a column read by the engine comes from: the first field mapping it, or the
    /// archive or erasure column.
    fn column_key(&self, column: &str) -> String {
        match self.fields.iter().position(|f| f.sql == column) {
            Some(i) => format!("fields[{i}].sql"),
            None if self.on_hubspot_archive.column.as_deref() == Some(column) => {
                "on_hubspot_archive.column".to_string()
            }
            None => "on_hubspot_erasure.column".to_string(),
        }
    }

    /// The mapped columns holding personal data (the key column never counts), once each, in
    /// the mapping's order: what `on_hubspot_erasure: anonymize` clears.
    pub fn personal_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for f in self.fields.iter().filter(|f| f.is_personal()) {
            if !f.sql.eq_ignore_ascii_case(&self.sql_key) && !columns.contains(&f.sql) {
                columns.push(f.sql.clone());
            }
        }
        columns
    }
}

/// `columns[3]` → 3.
fn column_index(at: &str) -> Option<usize> {
    at.strip_prefix("columns[")?.strip_suffix(']')?.parse().ok()
}

/// A HubSpot object type as the CRM API names it: `contacts`, `companies`, `deals`, a custom
/// object's `p12345_cars`, or an object type id such as `0-1` or `2-123`. Anything else could
/// change the API path it is put into.
pub fn check_hubspot_object(name: &str) -> Result<(), String> {
    let named = name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let id = name.split_once('-').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| (1..=20).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
    });
    if named || id {
        Ok(())
    } else {
        Err(
            "not a HubSpot object type: write a name such as `contacts` or `p12345_cars` \
             (lowercase letters, digits, `_`) or a type id such as `0-1` or `2-123`"
                .into(),
        )
    }
}
