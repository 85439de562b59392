//! Property value validation as HubSpot does it on writes (unknown, read-only, email, number,
//! enumeration option, date at midnight UTC) and the value normalisation it applies. Pure.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use regex::Regex;

use super::properties::{PropertyDef, PropertyType};

/// Longest string value HubSpot accepts.
const MAX_STRING: usize = 65_536;

/// One rejected property value, with HubSpot's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyError {
    pub name: String,
    pub code: &'static str,
    pub message: String,
}

impl PropertyError {
    fn new(name: &str, code: &'static str, message: String) -> Self {
        Self {
            name: name.to_owned(),
            code,
            message,
        }
    }
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^-?(\d+(\.\d*)?|\.\d+)$").unwrap_or_else(|e| panic!("number pattern: {e}"))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$").unwrap_or_else(|e| panic!("email pattern: {e}"))
});

/// Checks one written value against its definition (`None` = unknown property). Returns the
/// value to store: `None` clears it (empty string), emails are lowercased, dates become
/// `YYYY-MM-DD`, datetimes ISO 8601 UTC with milliseconds.
pub fn check_value(
    def: Option<&PropertyDef>,
    name: &str,
    value: &str,
) -> Result<Option<String>, PropertyError> {
    let Some(def) = def else {
        return Err(PropertyError::new(
            name,
            "PROPERTY_DOESNT_EXIST",
            format!("Property \"{name}\" does not exist"),
        ));
    };
    if def.read_only {
        return Err(PropertyError::new(
            name,
            "READ_ONLY_VALUE",
            format!("Property \"{name}\" is a read only property; its value cannot be set."),
        ));
    }
    if value.is_empty() {
        return Ok(None);
    }
    normalize(def, value).map(Some)
}

/// Normalises a non-empty value of a known property (read-only ones too: the simulator's seeding
/// sets them).
pub fn normalize(def: &PropertyDef, value: &str) -> Result<String, PropertyError> {
    let name = def.name.as_str();
    if def.email {
        let lower = value.trim().to_lowercase();
        return if EMAIL.is_match(&lower) {
            Ok(lower)
        } else {
            Err(PropertyError::new(
                name,
                "INVALID_EMAIL",
                format!("Email address {value} is invalid"),
            ))
        };
    }
    match def.kind {
        PropertyType::String => {
            if value.chars().count() > MAX_STRING {
                Err(PropertyError::new(
                    name,
                    "INVALID_STRING",
                    format!("value for {name} is longer than {MAX_STRING} characters"),
                ))
            } else {
                Ok(value.to_owned())
            }
        }
        PropertyType::Number => {
            if NUMBER.is_match(value) {
                Ok(value.to_owned())
            } else {
                Err(PropertyError::new(
                    name,
                    "INVALID_INTEGER",
                    format!("{value} was not a valid number."),
                ))
            }
        }
        PropertyType::Bool => match value {
            "true" | "false" => Ok(value.to_owned()),
            _ => Err(PropertyError::new(
                name,
                "INVALID_BOOLEAN",
                format!("{value} was not a valid boolean (true or false)."),
            )),
        },
        PropertyType::Enumeration => {
            if def.options.iter().any(|o| o.value == value) {
                Ok(value.to_owned())
            } else {
                let allowed: Vec<&str> = def.options.iter().map(|o| o.value.as_str()).collect();
                Err(PropertyError::new(
                    name,
                    "INVALID_OPTION",
                    format!(
                        "{value} was not one of the allowed options: [{}]",
                        allowed.join(", ")
                    ),
                ))
            }
        }
        PropertyType::Date => {
            date_value(value).map_err(|m| PropertyError::new(name, "INVALID_DATE", m))
        }
        PropertyType::DateTime => parse_timestamp_ms(value).map(format_ms).ok_or_else(|| {
            PropertyError::new(
                name,
                "INVALID_DATETIME",
                format!("{value} is not a valid datetime (ISO 8601 or epoch milliseconds)"),
            )
        }),
    }
}

/// A `date` value: `YYYY-MM-DD`, or epoch milliseconds exactly at midnight UTC.
fn date_value(value: &str) -> Result<String, String> {
    if value.len() == 10
        && let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d")
    {
        return Ok(date.format("%Y-%m-%d").to_string());
    }
    let ms: i64 = value
        .parse()
        .map_err(|_| format!("{value} is not a valid date (YYYY-MM-DD or epoch milliseconds)"))?;
    let at = Utc
        .timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| format!("{value} is out of range for a date"))?;
    if ms.rem_euclid(86_400_000) != 0 {
        return Err(format!(
            "{value} is at {} UTC, not midnight!",
            at.format("%H:%M:%S%.3f")
        ));
    }
    Ok(at.format("%Y-%m-%d").to_string())
}

/// Epoch milliseconds of a datetime given as epoch ms or RFC 3339.
pub fn parse_timestamp_ms(value: &str) -> Option<i64> {
    if let Ok(ms) = value.parse::<i64>() {
        return Some(ms);
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Epoch milliseconds as HubSpot prints datetimes: `2024-01-17T19:55:04.281Z`.
pub fn format_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::super::properties::default_properties;
    use super::*;

    fn check(name: &str, value: &str) -> Result<Option<String>, PropertyError> {
        let props = default_properties();
        check_value(props.iter().find(|p| p.name == name), name, value)
    }

    fn code(name: &str, value: &str) -> &'static str {
        check(name, value).err().map(|e| e.code).unwrap_or("ok")
    }

    #[test]
    fn unknown_and_read_only_properties_are_rejected() {
        assert_eq!(code("favorite_food", "x"), "PROPERTY_DOESNT_EXIST");
        assert_eq!(code("createdate", "2024-01-01"), "READ_ONLY_VALUE");
        assert_eq!(code("hs_object_id", "5"), "READ_ONLY_VALUE");
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(
            check("email", "Ana.Mora@Coop.CR"),
            Ok(Some("ana.mora@coop.cr".into()))
        );
        assert_eq!(code("email", "ana.mora@"), "INVALID_EMAIL");
        assert_eq!(code("email", "no at sign"), "INVALID_EMAIL");
        assert_eq!(check("email", ""), Ok(None));
    }

    #[test]
    fn numbers_enumerations_and_dates() {
        assert_eq!(
            check("porcentaje__beneficiario_1_", "12.5"),
            Ok(Some("12.5".into()))
        );
        assert_eq!(
            code("porcentaje__beneficiario_1_", "12,5"),
            "INVALID_INTEGER"
        );
        assert_eq!(
            code("salario_neto_semanal_o_quincenal", "abc"),
            "INVALID_INTEGER"
        );
        assert_eq!(check("marital_status", "casado"), Ok(Some("casado".into())));
        assert_eq!(code("marital_status", "Casado"), "INVALID_OPTION");
        assert_eq!(
            check("date_of_birth", "1980-02-29"),
            Ok(Some("1980-02-29".into()))
        );
        assert_eq!(
            check("date_of_birth", "320716800000"),
            Ok(Some("1980-03-01".into()))
        );
        let err = check("date_of_birth", "1635535865").err();
        assert_eq!(
            err.map(|e| e.message),
            Some("1635535865 is at 22:18:55.865 UTC, not midnight!".to_owned())
        );
        assert_eq!(code("date_of_birth", "1980-02-30"), "INVALID_DATE");
        assert_eq!(code("date_of_birth", "29/02/1980"), "INVALID_DATE");
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp_ms("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(
            parse_timestamp_ms("2023-11-14T22:13:20.000Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
