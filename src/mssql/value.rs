//! Conversions between SQL Server values and hubsync's JSON rows: reading any cell into the
//! contract's JSON encoding, and turning a JSON value into a parameter of the target column's
//! type. Pure code; never panics on unexpected types or values.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::{Number, Value};
use tiberius::numeric::Numeric;
use tiberius::{Column, ColumnData, ColumnType, FromSql, Query, Row, Uuid};

use super::error::MssqlError;

/// A SQL Server row keyed by column name (same type as `crate::mapping::SqlRow`).
pub type SqlRow = serde_json::Map<String, Value>;

/// SQL Server's name of a column type, for messages.
pub fn type_name(t: ColumnType) -> &'static str {
    use ColumnType as T;
    match t {
        T::Null => "null",
        T::Bit | T::Bitn => "bit",
        T::Int1 => "tinyint",
        T::Int2 => "smallint",
        T::Int4 => "int",
        T::Int8 => "bigint",
        T::Intn => "int",
        T::Datetime4 => "smalldatetime",
        T::Float4 => "real",
        T::Float8 | T::Floatn => "float",
        T::Money | T::Money4 => "money",
        T::Datetime | T::Datetimen => "datetime",
        T::Guid => "uniqueidentifier",
        T::Decimaln => "decimal",
        T::Numericn => "numeric",
        T::Daten => "date",
        T::Timen => "time",
        T::Datetime2 => "datetime2",
        T::DatetimeOffsetn => "datetimeoffset",
        T::BigVarBin => "varbinary",
        T::BigVarChar => "varchar",
        T::BigBinary => "binary",
        T::BigChar => "char",
        T::NVarchar => "nvarchar",
        T::NChar => "nchar",
        T::Xml => "xml",
        T::Udt => "user-defined type",
        T::Text => "text",
        T::Image => "image",
        T::NText => "ntext",
        T::SSVariant => "sql_variant",
    }
}

/// Exact decimal digits of `value × 10^-scale` ("1250000.00", "-0.5", "42").
pub fn format_decimal(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Parses "123.45", "-7", "1e3" is refused; returns (value, scale).
pub fn parse_decimal(text: &str) -> Option<(i128, u8)> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        || frac.len() > 38
    {
        return None;
    }
    let magnitude: i128 = format!("{int}{frac}").parse().ok()?;
    Some((if neg { -magnitude } else { magnitude }, frac.len() as u8))
}

/// `HH:MM:SS` plus `.fffffff` when the time has a fraction (100 ns precision).
fn format_time(t: NaiveTime) -> String {
    let base = t.format("%H:%M:%S").to_string();
    let ticks = t.nanosecond() / 100;
    if ticks == 0 {
        base
    } else {
        format!("{base}.{ticks:07}")
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fffffff]`, local time without zone.
pub fn format_datetime(dt: NaiveDateTime) -> String {
    format!(
        "{}T{}",
        dt.date().format("%Y-%m-%d"),
        format_time(dt.time())
    )
}

/// Accepts `YYYY-MM-DDTHH:MM:SS[.f…]`, the same with a space, or a bare date (midnight).
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim();
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// `0x` + upper-case hex.
pub fn format_binary(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

fn parse_binary(text: &str) -> Option<Vec<u8>> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One cell in the contract's JSON encoding, or an error naming table, column and type.
pub fn cell_to_json(
    table: &str,
    column: &Column,
    data: &ColumnData<'static>,
) -> Result<Value, MssqlError> {
    let ty = column.column_type();
    let fail = |message: String| MssqlError::Type {
        table: table.to_string(),
        column: column.name().to_string(),
        sql_type: type_name(ty).to_string(),
        message,
    };
    let float = |v: f64| {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| fail(format!("{v} has no JSON representation")))
    };
    let chrono_err = |e: tiberius::error::Error| fail(e.to_string());
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I16(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I32(v) => v.map_or(Value::Null, Value::from),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::from),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::F32(None) | ColumnData::F64(None) => Value::Null,
        ColumnData::F64(Some(v)) if matches!(ty, ColumnType::Money | ColumnType::Money4) => {
            Value::String(format!("{v:.4}"))
        }
        ColumnData::F32(Some(v)) => float(f64::from(*v))?,
        ColumnData::F64(Some(v)) => float(*v)?,
        ColumnData::String(v) => v
            .as_ref()
            .map_or(Value::Null, |s| Value::String(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, |g| {
            Value::String(g.hyphenated().to_string().to_uppercase())
        }),
        ColumnData::Binary(v) => v
            .as_ref()
            .map_or(Value::Null, |b| Value::String(format_binary(b))),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::String(format_decimal(n.value(), n.scale()))
        }),
        ColumnData::Xml(_) => return Err(fail("xml columns are not supported".into())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(data)
                .map_err(chrono_err)?
                .map_or(Value::Null, |d| Value::String(format_datetime(d)))
        }
        ColumnData::Date(_) => NaiveDate::from_sql(data)
            .map_err(chrono_err)?
            .map_or(Value::Null, |d| {
                Value::String(d.format("%Y-%m-%d").to_string())
            }),
        ColumnData::Time(_) => NaiveTime::from_sql(data)
            .map_err(chrono_err)?
            .map_or(Value::Null, |t| Value::String(format_time(t))),
        ColumnData::DateTimeOffset(_) => DateTime::<FixedOffset>::from_sql(data)
            .map_err(chrono_err)?
            .map_or(Value::Null, |d| Value::String(d.to_rfc3339())),
    })
}

/// A whole row as a JSON map keyed by column name.
pub fn row_to_json(table: &str, row: &Row) -> Result<SqlRow, MssqlError> {
    let mut map = SqlRow::new();
    for (column, data) in row.cells() {
        map.insert(
            column.name().to_string(),
            cell_to_json(table, column, data)?,
        );
    }
    Ok(map)
}

/// A key value as text (`record_key`): numbers in decimal, strings as they are.
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// An owned, typed statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    I32(Option<i32>),
    I64(Option<i64>),
    Bool(Option<bool>),
    F64(Option<f64>),
    Str(Option<String>),
    Decimal(Option<(i128, u8)>),
    Date(Option<NaiveDate>),
    DateTime(Option<NaiveDateTime>),
    DateTimeOffset(Option<DateTime<FixedOffset>>),
    Guid(Option<Uuid>),
    Binary(Option<Vec<u8>>),
}

impl Param {
    pub fn bind(&self, q: &mut Query<'_>) {
        match self.clone() {
            Param::I32(v) => q.bind(v),
            Param::I64(v) => q.bind(v),
            Param::Bool(v) => q.bind(v),
            Param::F64(v) => q.bind(v),
            Param::Str(v) => q.bind(v),
            Param::Decimal(v) => {
                q.bind(v.map(|(value, scale)| Numeric::new_with_scale(value, scale)))
            }
            Param::Date(v) => q.bind(v),
            Param::DateTime(v) => q.bind(v),
            Param::DateTimeOffset(v) => q.bind(v),
            Param::Guid(v) => q.bind(v),
            Param::Binary(v) => q.bind(v),
        }
    }

    /// A key parameter from its JSON value: numbers as bigint, text as nvarchar.
    pub fn key(value: &Value) -> Option<Param> {
        match value {
            Value::Number(n) => n.as_i64().map(|i| Param::I64(Some(i))),
            Value::String(s) => Some(Param::Str(Some(s.clone()))),
            _ => None,
        }
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Converts a JSON value for a column of type `ty` into a parameter of that type; the error
/// says what the column expects (without echoing the value, which may be personal data).
pub fn param_for(ty: ColumnType, value: &Value) -> Result<Param, String> {
    use ColumnType as T;
    let null = value.is_null();
    let expect = |what: &str| format!("expects {what} ({})", type_name(ty));
    Ok(match ty {
        T::Int1 | T::Int2 | T::Int4 => {
            if null {
                Param::I32(None)
            } else {
                let v = as_i64(value).ok_or_else(|| expect("an integer"))?;
                Param::I32(Some(
                    i32::try_from(v).map_err(|_| expect("an integer in range"))?,
                ))
            }
        }
        T::Int8 | T::Intn => Param::I64(if null {
            None
        } else {
            Some(as_i64(value).ok_or_else(|| expect("an integer"))?)
        }),
        T::Bit | T::Bitn => Param::Bool(if null {
            None
        } else {
            Some(match value {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(expect("true/false or 1/0")),
                },
                _ => return Err(expect("true/false or 1/0")),
            })
        }),
        T::Float4 | T::Float8 | T::Floatn => Param::F64(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| expect("a number"))?,
            )
        }),
        T::Decimaln | T::Numericn | T::Money | T::Money4 => Param::Decimal(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| parse_decimal(&t))
                    .ok_or_else(|| expect("a decimal number like 1250.50"))?,
            )
        }),
        T::Daten => Param::Date(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").ok())
                    .ok_or_else(|| expect("a date YYYY-MM-DD"))?,
            )
        }),
        T::Datetime | T::Datetimen | T::Datetime2 | T::Datetime4 => Param::DateTime(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| parse_datetime(&t))
                    .ok_or_else(|| expect("a local date-time YYYY-MM-DDTHH:MM:SS"))?,
            )
        }),
        T::DatetimeOffsetn => Param::DateTimeOffset(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
                    .ok_or_else(|| expect("an RFC 3339 timestamp"))?,
            )
        }),
        T::Guid => Param::Guid(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| Uuid::parse_str(t.trim()).ok())
                    .ok_or_else(|| expect("a GUID"))?,
            )
        }),
        T::BigVarBin | T::BigBinary | T::Image => Param::Binary(if null {
            None
        } else {
            Some(
                as_text(value)
                    .and_then(|t| parse_binary(&t))
                    .ok_or_else(|| expect("hex bytes 0x…"))?,
            )
        }),
        T::BigVarChar | T::BigChar | T::NVarchar | T::NChar | T::Text | T::NText => {
            Param::Str(if null {
                None
            } else {
                Some(as_text(value).ok_or_else(|| expect("text"))?)
            })
        }
        T::Null | T::Timen | T::Xml | T::Udt | T::SSVariant => {
            return Err(format!(
                "{} columns cannot be written by hubsync",
                type_name(ty)
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_keep_their_exact_digits() {
        assert_eq!(format_decimal(125_000_000, 2), "1250000.00");
        assert_eq!(format_decimal(-5, 1), "-0.5");
        assert_eq!(format_decimal(7, 3), "0.007");
        assert_eq!(format_decimal(42, 0), "42");
        assert_eq!(parse_decimal("1250000.00"), Some((125_000_000, 2)));
        assert_eq!(parse_decimal("-0.5"), Some((-5, 1)));
        assert_eq!(parse_decimal("12"), Some((12, 0)));
        for bad in ["", ".", "1e3", "12,5", "abc", "1.2.3", "--1"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn datetimes_format_and_parse_local_time() {
        let dt = NaiveDate::from_ymd_opt(2024, 3, 9)
            .unwrap()
            .and_hms_nano_opt(14, 5, 0, 123_456_700)
            .unwrap();
        assert_eq!(format_datetime(dt), "2024-03-09T14:05:00.1234567");
        assert_eq!(parse_datetime("2024-03-09T14:05:00.1234567"), Some(dt));
        let midnight = NaiveDate::from_ymd_opt(2024, 3, 9)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(format_datetime(midnight), "2024-03-09T00:00:00");
        assert_eq!(parse_datetime("2024-03-09"), Some(midnight));
        assert_eq!(parse_datetime("09/03/2024"), None);
    }

    #[test]
    fn binary_is_upper_hex() {
        assert_eq!(
            format_binary(&[0, 0, 0, 0, 0, 0, 0x07, 0xD1]),
            "0x00000000000007D1"
        );
        assert_eq!(parse_binary("0x07d1"), Some(vec![0x07, 0xD1]));
        assert_eq!(parse_binary("07d1"), None);
        assert_eq!(parse_binary("0x7"), None);
    }

    #[test]
    fn parameters_take_the_column_type_and_refuse_bad_values() {
        assert_eq!(
            param_for(ColumnType::Int4, &json!(5)),
            Ok(Param::I32(Some(5)))
        );
        assert_eq!(
            param_for(ColumnType::Int4, &json!("5")),
            Ok(Param::I32(Some(5)))
        );
        assert!(param_for(ColumnType::Int4, &json!(5_000_000_000i64)).is_err());
        assert!(param_for(ColumnType::Int4, &json!("cinco")).is_err());
        assert_eq!(
            param_for(ColumnType::Intn, &json!(7)),
            Ok(Param::I64(Some(7)))
        );
        assert_eq!(
            param_for(ColumnType::Int8, &Value::Null),
            Ok(Param::I64(None))
        );
        assert_eq!(
            param_for(ColumnType::Decimaln, &json!("10.50")),
            Ok(Param::Decimal(Some((1050, 2))))
        );
        assert_eq!(
            param_for(ColumnType::Bitn, &json!("0")),
            Ok(Param::Bool(Some(false)))
        );
        let err = param_for(ColumnType::Daten, &json!("mañana")).unwrap_err();
        assert!(
            err.contains("YYYY-MM-DD") && !err.contains("mañana"),
            "{err}"
        );
        assert_eq!(
            param_for(ColumnType::NVarchar, &json!("x'); DROP TABLE t;--")),
            Ok(Param::Str(Some("x'); DROP TABLE t;--".into())))
        );
        assert!(param_for(ColumnType::Xml, &json!("<a/>")).is_err());
    }

    #[test]
    fn cells_follow_the_contract_and_unexpected_types_name_table_column_and_type() {
        let col = |name: &str, ty| Column::new(name.to_string(), ty);
        let ok = |c: &Column, d: ColumnData<'static>| cell_to_json("dbo.t", c, &d).unwrap();
        assert_eq!(
            ok(&col("n", ColumnType::Int4), ColumnData::I32(Some(7))),
            json!(7)
        );
        assert_eq!(
            ok(&col("b", ColumnType::Bitn), ColumnData::Bit(None)),
            Value::Null
        );
        assert_eq!(
            ok(
                &col("d", ColumnType::Decimaln),
                ColumnData::Numeric(Some(Numeric::new_with_scale(125_000_000, 2)))
            ),
            json!("1250000.00")
        );
        assert_eq!(
            ok(&col("m", ColumnType::Money), ColumnData::F64(Some(12.5))),
            json!("12.5000")
        );
        assert_eq!(
            ok(
                &col("rv", ColumnType::BigBinary),
                ColumnData::Binary(Some(vec![0, 0, 0, 0, 0, 0, 7, 0xD1].into()))
            ),
            json!("0x00000000000007D1")
        );
        let err = cell_to_json(
            "dbo.t",
            &col("doc", ColumnType::Xml),
            &ColumnData::Xml(None),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dbo.t") && err.contains("doc") && err.contains("xml"),
            "{err}"
        );
        let err = cell_to_json(
            "dbo.t",
            &col("f", ColumnType::Float8),
            &ColumnData::F64(Some(f64::NAN)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("column f (float)"), "{err}");
    }

    #[test]
    fn keys_become_text_and_parameters() {
        assert_eq!(key_text(&json!(42)), Some("42".into()));
        assert_eq!(key_text(&json!("A-1")), Some("A-1".into()));
        assert_eq!(key_text(&Value::Null), None);
        assert_eq!(Param::key(&json!(42)), Some(Param::I64(Some(42))));
    }
}
