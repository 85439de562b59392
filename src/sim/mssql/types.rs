//! SQL Server data types as the simulator knows them: parsing T-SQL type names, TYPE_INFO and
//! value encoding on the wire (COLMETADATA/ROW), decoding typed RPC parameters, and the canonical
//! text forms under which dates, datetimes and decimals are kept in the embedded store.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::wire::Reader;

/// Collation sent with character columns: Latin1_General_CI_AS (LCID 0x0409, sort id 52).
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A SQL Server column or parameter type (the subset the simulator stores and sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Float,
    Real,
    /// `decimal(p,s)`; `numeric` is the same with `numeric = true` (sent as NUMERICN).
    Decimal {
        precision: u8,
        scale: u8,
        numeric: bool,
    },
    /// `nvarchar(n)` (characters); `None` is `nvarchar(max)`.
    NVarChar(Option<u16>),
    VarChar(Option<u16>),
    NChar(u16),
    Char(u16),
    Date,
    DateTime2(u8),
    /// `datetime` (only decoded from parameters; stored as datetime2 text).
    DateTime,
    VarBinary(Option<u16>),
    Binary(u16),
    /// `rowversion`/`timestamp`: sent as binary(8), stored as an integer.
    RowVersion,
    UniqueIdentifier,
}

impl SqlType {
    /// Parses a T-SQL type name with its arguments, e.g. `NVARCHAR(100)`, `decimal(18, 2)`.
    pub fn parse(text: &str) -> Option<SqlType> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '[' && *c != ']')
            .collect::<String>()
            .to_ascii_lowercase();
        let (name, args) = match compact.find('(') {
            Some(i) if compact.ends_with(')') => {
                (&compact[..i], Some(&compact[i + 1..compact.len() - 1]))
            }
            Some(_) => return None,
            None => (compact.as_str(), None),
        };
        let nums: Vec<&str> = args.map(|a| a.split(',').collect()).unwrap_or_default();
        let len_arg = |default: u16, limit: u16| -> Option<Option<u16>> {
            match nums.as_slice() {
                [] => Some(Some(default)),
                ["max"] => Some(None),
                [n] => n
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n >= 1 && *n <= limit)
                    .map(Some),
                _ => None,
            }
        };
        let t = match name {
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" | "integer" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "bit" => SqlType::Bit,
            "float" => match nums.as_slice() {
                [] => SqlType::Float,
                [n] => match n.parse::<u8>().ok()? {
                    1..=24 => SqlType::Real,
                    25..=53 => SqlType::Float,
                    _ => return None,
                },
                _ => return None,
            },
            "real" => SqlType::Real,
            "decimal" | "numeric" | "dec" => {
                let (precision, scale) = match nums.as_slice() {
                    [] => (18, 0),
                    [p] => (p.parse().ok()?, 0),
                    [p, s] => (p.parse().ok()?, s.parse().ok()?),
                    _ => return None,
                };
                if !(1..=38).contains(&precision) || scale > precision {
                    return None;
                }
                SqlType::Decimal {
                    precision,
                    scale,
                    numeric: name == "numeric",
                }
            }
            "nvarchar" => SqlType::NVarChar(len_arg(1, 4000)?),
            "varchar" => SqlType::VarChar(len_arg(1, 8000)?),
            "nchar" => SqlType::NChar(len_arg(1, 4000)??),
            "char" => SqlType::Char(len_arg(1, 8000)??),
            "date" => SqlType::Date,
            "datetime2" => match nums.as_slice() {
                [] => SqlType::DateTime2(7),
                [n] => SqlType::DateTime2(n.parse().ok().filter(|n| *n <= 7)?),
                _ => return None,
            },
            "datetime" => SqlType::DateTime,
            "varbinary" => SqlType::VarBinary(len_arg(1, 8000)?),
            "binary" => SqlType::Binary(len_arg(1, 8000)??),
            "rowversion" | "timestamp" => SqlType::RowVersion,
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            _ => return None,
        };
        Some(t)
    }

    /// The T-SQL spelling, used as the declared type of the store's columns.
    pub fn name(&self) -> String {
        let len = |n: Option<u16>| n.map_or("max".to_string(), |n| n.to_string());
        match self {
            SqlType::TinyInt => "TINYINT".into(),
            SqlType::SmallInt => "SMALLINT".into(),
            SqlType::Int => "INT".into(),
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Bit => "BIT".into(),
            SqlType::Float => "FLOAT".into(),
            SqlType::Real => "REAL".into(),
            SqlType::Decimal {
                precision,
                scale,
                numeric,
            } => format!(
                "{}({precision},{scale})",
                if *numeric { "NUMERIC" } else { "DECIMAL" }
            ),
            SqlType::NVarChar(n) => format!("NVARCHAR({})", len(*n)),
            SqlType::VarChar(n) => format!("VARCHAR({})", len(*n)),
            SqlType::NChar(n) => format!("NCHAR({n})"),
            SqlType::Char(n) => format!("CHAR({n})"),
            SqlType::Date => "DATE".into(),
            SqlType::DateTime2(s) => format!("DATETIME2({s})"),
            SqlType::DateTime => "DATETIME".into(),
            SqlType::VarBinary(n) => format!("VARBINARY({})", len(*n)),
            SqlType::Binary(n) => format!("BINARY({n})"),
            SqlType::RowVersion => "ROWVERSION".into(),
            SqlType::UniqueIdentifier => "UNIQUEIDENTIFIER".into(),
        }
    }

    /// Character types (compared case-insensitively, length-checked).
    pub fn is_text(&self) -> bool {
        matches!(
            self,
            SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::NChar(_) | SqlType::Char(_)
        )
    }

    /// Maximum length in characters (text) or bytes (binary), when bounded.
    pub fn max_len(&self) -> Option<usize> {
        match self {
            SqlType::NVarChar(n) | SqlType::VarChar(n) | SqlType::VarBinary(n) => {
                n.map(usize::from)
            }
            SqlType::NChar(n) | SqlType::Char(n) | SqlType::Binary(n) => Some(usize::from(*n)),
            _ => None,
        }
    }

    /// Writes user type, flags and TYPE_INFO of a COLMETADATA column entry.
    pub fn encode_column_info(&self, nullable: bool, out: &mut Vec<u8>) {
        let user_type: u32 = if *self == SqlType::RowVersion { 80 } else { 0 };
        out.extend_from_slice(&user_type.to_le_bytes());
        let flags: u16 = if nullable { 0x0001 } else { 0x0000 };
        out.extend_from_slice(&flags.to_le_bytes());
        self.encode_type_info(out);
    }

    fn encode_type_info(&self, out: &mut Vec<u8>) {
        match self {
            SqlType::TinyInt => out.extend_from_slice(&[0x26, 1]),
            SqlType::SmallInt => out.extend_from_slice(&[0x26, 2]),
            SqlType::Int => out.extend_from_slice(&[0x26, 4]),
            SqlType::BigInt => out.extend_from_slice(&[0x26, 8]),
            SqlType::Bit => out.extend_from_slice(&[0x68, 1]),
            SqlType::Float => out.extend_from_slice(&[0x6D, 8]),
            SqlType::Real => out.extend_from_slice(&[0x6D, 4]),
            SqlType::Decimal {
                precision,
                scale,
                numeric,
            } => out.extend_from_slice(&[
                if *numeric { 0x6C } else { 0x6A },
                decimal_size(*precision),
                *precision,
                *scale,
            ]),
            SqlType::NVarChar(n) => {
                out.push(0xE7);
                out.extend_from_slice(&n.map_or(0xFFFF, |n| n * 2).to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::VarChar(n) => {
                out.push(0xA7);
                out.extend_from_slice(&n.unwrap_or(0xFFFF).to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::NChar(n) => {
                out.push(0xEF);
                out.extend_from_slice(&(n * 2).to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::Char(n) => {
                out.push(0xAF);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::Date => out.push(0x28),
            SqlType::DateTime2(s) => out.extend_from_slice(&[0x2A, *s]),
            SqlType::DateTime => out.extend_from_slice(&[0x6F, 8]),
            SqlType::VarBinary(n) => {
                out.push(0xA5);
                out.extend_from_slice(&n.unwrap_or(0xFFFF).to_le_bytes());
            }
            SqlType::Binary(n) => {
                out.push(0xAD);
                out.extend_from_slice(&n.to_le_bytes());
            }
            SqlType::RowVersion => out.extend_from_slice(&[0xAD, 8, 0]),
            SqlType::UniqueIdentifier => out.extend_from_slice(&[0x24, 16]),
        }
    }
}

fn decimal_size(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// A value as the simulator binds it to, and reads it from, the embedded store.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Why a stored value cannot be sent as its column's type (SQL Server error 245/8115 family).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion(pub String);

/// Writes one value of a ROW token for a column of type `ty`.
pub fn encode_value(ty: &SqlType, value: &Value, out: &mut Vec<u8>) -> Result<(), Conversion> {
    if matches!(value, Value::Null) {
        encode_null(ty, out);
        return Ok(());
    }
    match ty {
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let n = as_integer(value, ty)?;
            let (size, ok) = match ty {
                SqlType::TinyInt => (1, (0..=255).contains(&n)),
                SqlType::SmallInt => (2, i16::try_from(n).is_ok()),
                SqlType::Int => (4, i32::try_from(n).is_ok()),
                _ => (8, true),
            };
            if !ok {
                return Err(Conversion(format!(
                    "Arithmetic overflow error converting expression to data type {}.",
                    ty.name().to_lowercase()
                )));
            }
            out.push(size as u8);
            out.extend_from_slice(&n.to_le_bytes()[..size]);
        }
        SqlType::Bit => {
            let n = as_integer(value, ty)?;
            out.extend_from_slice(&[1, u8::from(n != 0)]);
        }
        SqlType::Float | SqlType::Real => {
            let f = match value {
                Value::Int(n) => *n as f64,
                Value::Float(f) => *f,
                Value::Text(t) => t.trim().parse::<f64>().map_err(|_| conv_err(value, ty))?,
                _ => return Err(conv_err(value, ty)),
            };
            if *ty == SqlType::Real {
                out.push(4);
                out.extend_from_slice(&(f as f32).to_le_bytes());
            } else {
                out.push(8);
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        SqlType::Decimal {
            precision, scale, ..
        } => {
            let factor = 10i128.pow(u32::from(*scale));
            let scaled = match value {
                Value::Int(n) => i128::from(*n)
                    .checked_mul(factor)
                    .ok_or_else(|| conv_err(value, ty))?,
                // Exact while the scaled value stays within f64's 53-bit integers.
                Value::Float(f) if (f * factor as f64).abs() < 9.0e15 => {
                    (f * factor as f64).round() as i128
                }
                Value::Float(f) => parse_decimal(&format!("{:.*}", usize::from(*scale), f), *scale)
                    .ok_or_else(|| conv_err(value, ty))?,
                Value::Text(t) => parse_decimal(t, *scale).ok_or_else(|| conv_err(value, ty))?,
                Value::Bytes(_) | Value::Null => return Err(conv_err(value, ty)),
            };
            if scaled.unsigned_abs() >= 10u128.pow(u32::from(*precision)) {
                return Err(Conversion(format!(
                    "Arithmetic overflow error converting {} to data type numeric.",
                    value_type_name(value)
                )));
            }
            let size = decimal_size(*precision);
            out.push(size);
            out.push(u8::from(scaled >= 0));
            let magnitude = scaled.unsigned_abs().to_le_bytes();
            out.extend_from_slice(&magnitude[..usize::from(size) - 1]);
        }
        SqlType::NVarChar(_) | SqlType::NChar(_) => {
            let owned;
            let text: &str = match (value, ty) {
                (Value::Text(t), SqlType::NVarChar(_)) => t,
                _ => {
                    let mut t = as_text(value);
                    if let SqlType::NChar(width) = ty {
                        pad(&mut t, usize::from(*width));
                    }
                    owned = t;
                    &owned
                }
            };
            if matches!(ty, SqlType::NVarChar(None)) {
                let bytes: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
                encode_plp(&bytes, out);
            } else {
                let at = out.len();
                out.extend_from_slice(&[0, 0]);
                for unit in text.encode_utf16() {
                    out.extend_from_slice(&unit.to_le_bytes());
                }
                let len = out.len() - at - 2;
                if len > 8000 {
                    out.truncate(at);
                    return Err(Conversion(
                        "String or binary data would be truncated.".into(),
                    ));
                }
                out[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
            }
        }
        SqlType::VarChar(_) | SqlType::Char(_) => {
            let mut text = as_text(value);
            if let SqlType::Char(width) = ty {
                pad(&mut text, usize::from(*width));
            }
            let bytes: Vec<u8> = text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect();
            if matches!(ty, SqlType::VarChar(None)) {
                encode_plp(&bytes, out);
            } else {
                out.extend_from_slice(&(bytes.len().min(8000) as u16).to_le_bytes());
                out.extend_from_slice(&bytes[..bytes.len().min(8000)]);
            }
        }
        SqlType::Date => {
            let date = parse_date(&as_text(value)).ok_or_else(|| conv_err(value, ty))?;
            out.push(3);
            out.extend_from_slice(&days_since_year_one(date).to_le_bytes()[..3]);
        }
        SqlType::DateTime2(scale) => {
            let dt = parse_datetime(&as_text(value)).ok_or_else(|| conv_err(value, ty))?;
            let time_len = time_len(*scale);
            out.push(time_len + 3);
            let ticks = time_ticks(dt.time(), *scale);
            out.extend_from_slice(&ticks.to_le_bytes()[..usize::from(time_len)]);
            out.extend_from_slice(&days_since_year_one(dt.date()).to_le_bytes()[..3]);
        }
        SqlType::DateTime => {
            let dt = parse_datetime(&as_text(value)).ok_or_else(|| conv_err(value, ty))?;
            let base = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default();
            let days = (dt.date() - base).num_days() as i32;
            let nanos = u64::from(dt.time().num_seconds_from_midnight()) * 1_000_000_000
                + u64::from(dt.time().nanosecond());
            let ticks = (nanos * 300 + 500_000_000) / 1_000_000_000;
            out.push(8);
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&(ticks as u32).to_le_bytes());
        }
        SqlType::VarBinary(_) | SqlType::Binary(_) | SqlType::RowVersion => {
            let bytes = match (ty, value) {
                (SqlType::RowVersion, Value::Int(n)) => n.to_be_bytes().to_vec(),
                (_, Value::Bytes(b)) => b.clone(),
                (_, Value::Int(n)) => n.to_be_bytes().to_vec(),
                _ => return Err(conv_err(value, ty)),
            };
            if matches!(ty, SqlType::VarBinary(None)) {
                encode_plp(&bytes, out);
            } else {
                out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        SqlType::UniqueIdentifier => {
            let text = as_text(value);
            let hex: String = text.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 {
                return Err(conv_err(value, ty));
            }
            let mut raw = [0u8; 16];
            for (i, byte) in raw.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16)
                    .map_err(|_| conv_err(value, ty))?;
            }
            raw[0..4].reverse();
            raw[4..6].reverse();
            raw[6..8].reverse();
            out.push(16);
            out.extend_from_slice(&raw);
        }
    }
    Ok(())
}

fn encode_null(ty: &SqlType, out: &mut Vec<u8>) {
    match ty {
        SqlType::NVarChar(None) | SqlType::VarChar(None) | SqlType::VarBinary(None) => {
            out.extend_from_slice(&u64::MAX.to_le_bytes())
        }
        SqlType::NVarChar(_)
        | SqlType::VarChar(_)
        | SqlType::NChar(_)
        | SqlType::Char(_)
        | SqlType::VarBinary(_)
        | SqlType::Binary(_)
        | SqlType::RowVersion => out.extend_from_slice(&[0xFF, 0xFF]),
        _ => out.push(0),
    }
}

fn encode_plp(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    for chunk in bytes.chunks(8000) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
}

fn pad(text: &mut String, width: usize) {
    let n = text.chars().count();
    if n < width {
        text.extend(std::iter::repeat_n(' ', width - n));
    }
}

fn as_integer(value: &Value, ty: &SqlType) -> Result<i64, Conversion> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Value::Text(t) => t.trim().parse::<i64>().map_err(|_| conv_err(value, ty)),
        _ => Err(conv_err(value, ty)),
    }
}

/// The value as text (numbers in their shortest form).
pub fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("0x{hex}")
        }
    }
}

fn value_type_name(value: &Value) -> &'static str {
    match value {
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Text(_) => "nvarchar",
        Value::Bytes(_) => "varbinary",
        Value::Null => "NULL",
    }
}

fn conv_err(value: &Value, ty: &SqlType) -> Conversion {
    Conversion(format!(
        "Conversion failed when converting the {} value '{}' to data type {}.",
        value_type_name(value),
        as_text(value),
        ty.name().to_lowercase()
    ))
}

/// Splits decimal text (`-12.5`, `+.5`, `1.25E3`) into sign, integer digits and fraction digits,
/// exactly (an exponent moves the point; no float on the way).
fn decimal_digits(text: &str) -> Option<(bool, String, String)> {
    let t = text.trim();
    let (negative, rest) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
        || exponent.unsigned_abs() > 400
    {
        return None;
    }
    let all = format!("{int_part}{frac_part}");
    let point = i64::try_from(int_part.len()).ok()? + i64::from(exponent);
    let (int_digits, frac_digits) = if point <= 0 {
        (
            String::new(),
            format!("{}{all}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= all.len() {
        (
            format!("{all}{}", "0".repeat(point as usize - all.len())),
            String::new(),
        )
    } else {
        (
            all[..point as usize].to_string(),
            all[point as usize..].to_string(),
        )
    };
    let int_digits = int_digits.trim_start_matches('0').to_string();
    let frac_digits = frac_digits.trim_end_matches('0').to_string();
    let zero = int_digits.is_empty() && frac_digits.is_empty();
    Some((negative && !zero, int_digits, frac_digits))
}

/// Parses a decimal literal into an integer scaled by 10^scale (rounded half away from zero).
pub fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let (negative, int_part, frac_part) = decimal_digits(text)?;
    let mut value: i128 = 0;
    for c in int_part.chars() {
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(c as u8 - b'0'))?;
    }
    let mut frac = frac_part.chars();
    for _ in 0..scale {
        let d = frac.next().map_or(0, |c| i128::from(c as u8 - b'0'));
        value = value.checked_mul(10)?.checked_add(d)?;
    }
    if frac.next().is_some_and(|c| c >= '5') {
        value = value.checked_add(1)?;
    }
    Some(if negative { -value } else { value })
}

/// Numeric order of two decimal texts (the store keeps decimals as canonical text); `None`
/// when either is not a number.
pub fn compare_decimal(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let (an, ai, af) = decimal_digits(a)?;
    let (bn, bi, bf) = decimal_digits(b)?;
    let magnitude = ai
        .len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(&bi))
        .then_with(|| af.cmp(&bf));
    Some(match (an, bn) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => std::cmp::Ordering::Greater,
        (true, false) => std::cmp::Ordering::Less,
    })
}

/// The type SQL Server gives a decimal literal such as `12.50` (numeric(4,2)).
pub fn decimal_literal_type(text: &str) -> Option<SqlType> {
    let (_, int_part, _) = decimal_digits(text)?;
    let frac = text.split_once('.').map_or(0, |(_, f)| f.len());
    let scale = u8::try_from(frac).ok()?;
    let precision = u8::try_from(int_part.len()).ok()? + scale;
    if precision > 38 {
        return None;
    }
    Some(SqlType::Decimal {
        precision: precision.max(1),
        scale,
        numeric: true,
    })
}

/// Formats an integer scaled by 10^scale as decimal text ("1250000.00").
pub fn format_decimal(scaled: i128, scale: u8) -> String {
    let negative = scaled < 0;
    let digits = scaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let padded = if digits.len() <= scale {
        format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
    } else {
        digits
    };
    let (i, f) = padded.split_at(padded.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{i}")
    } else {
        format!("{sign}{i}.{f}")
    }
}

/// Canonical stored form of a date.
pub fn format_date(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Canonical stored form of a datetime2 (always seven fractional digits, so text order is time
/// order).
pub fn format_datetime(dt: NaiveDateTime) -> String {
    format!(
        "{}.{:07}",
        dt.format("%Y-%m-%d %H:%M:%S"),
        dt.time().nanosecond() / 100
    )
}

/// Reads `n` ASCII digits at `at`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// The canonical stored forms, read without format parsing (the change reader's hot path).
fn parse_canonical(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if !(b.len() == 10 || b.len() == 27) || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(b, 0, 4)?).ok()?,
        digits(b, 5, 2)?,
        digits(b, 8, 2)?,
    )?;
    if b.len() == 10 {
        return Some(date.and_time(NaiveTime::MIN));
    }
    if b[10] != b' ' || b[13] != b':' || b[16] != b':' || b[19] != b'.' {
        return None;
    }
    let time = NaiveTime::from_hms_nano_opt(
        digits(b, 11, 2)?,
        digits(b, 14, 2)?,
        digits(b, 17, 2)?,
        digits(b, 20, 7)? * 100,
    )?;
    Some(date.and_time(time))
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    if let Some(dt) = parse_canonical(text) {
        return Some(dt.date());
    }
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .or_else(|| parse_datetime(t).map(|dt| dt.date()))
}

/// Parses `YYYY-MM-DD[ T]HH:MM[:SS[.fffffff]]` or a bare date (midnight).
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    if let Some(dt) = parse_canonical(text) {
        return Some(dt);
    }
    let t = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, format) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN))
}

fn days_since_year_one(date: NaiveDate) -> u32 {
    (date.num_days_from_ce() - 1) as u32
}

fn date_from_days(days: u32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(days).ok()? + 1)
}

fn time_len(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

fn time_ticks(time: NaiveTime, scale: u8) -> u64 {
    let nanos = u64::from(time.num_seconds_from_midnight()) * 1_000_000_000
        + u64::from(time.nanosecond() % 1_000_000_000);
    nanos / 10u64.pow(9 - u32::from(scale))
}

fn time_from_ticks(ticks: u64, scale: u8) -> Option<NaiveTime> {
    let nanos = ticks.checked_mul(10u64.pow(9 - u32::from(scale)))?;
    NaiveTime::from_num_seconds_from_midnight_opt(
        u32::try_from(nanos / 1_000_000_000).ok()?,
        (nanos % 1_000_000_000) as u32,
    )
}

/// One RPC parameter: name (with `@`), its wire type and value.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: Option<SqlType>,
    pub value: Value,
}

/// Decodes TYPE_INFO and value of one RPC parameter into the store's form.
pub fn decode_param_value(r: &mut Reader<'_>) -> Result<(Option<SqlType>, Value), String> {
    let code = r.u8()?;
    match code {
        0x1F => Ok((None, Value::Null)),
        0x30 => Ok((Some(SqlType::TinyInt), Value::Int(i64::from(r.u8()?)))),
        0x32 => Ok((Some(SqlType::Bit), Value::Int(i64::from(r.u8()? != 0)))),
        0x34 => Ok((
            Some(SqlType::SmallInt),
            Value::Int(i64::from(r.u16()? as i16)),
        )),
        0x38 => Ok((Some(SqlType::Int), Value::Int(i64::from(r.u32()? as i32)))),
        0x7F => Ok((Some(SqlType::BigInt), Value::Int(r.u64()? as i64))),
        0x3E => Ok((Some(SqlType::Float), Value::Float(f64::from_bits(r.u64()?)))),
        0x3B => Ok((
            Some(SqlType::Real),
            Value::Float(f64::from(f32::from_bits(r.u32()?))),
        )),
        0x26 => {
            let size = r.u8()?;
            let ty = match size {
                1 => SqlType::TinyInt,
                2 => SqlType::SmallInt,
                4 => SqlType::Int,
                8 => SqlType::BigInt,
                _ => return Err(format!("invalid INTN size {size}")),
            };
            let len = r.u8()?;
            let value = match len {
                0 => Value::Null,
                1 => Value::Int(i64::from(r.u8()?)),
                2 => Value::Int(i64::from(r.u16()? as i16)),
                4 => Value::Int(i64::from(r.u32()? as i32)),
                8 => Value::Int(r.u64()? as i64),
                _ => return Err(format!("invalid INTN length {len}")),
            };
            Ok((Some(ty), value))
        }
        0x68 => {
            let _size = r.u8()?;
            let value = match r.u8()? {
                0 => Value::Null,
                _ => Value::Int(i64::from(r.u8()? != 0)),
            };
            Ok((Some(SqlType::Bit), value))
        }
        0x6D => {
            let size = r.u8()?;
            let ty = if size == 4 {
                SqlType::Real
            } else {
                SqlType::Float
            };
            let value = match r.u8()? {
                0 => Value::Null,
                4 => Value::Float(f64::from(f32::from_bits(r.u32()?))),
                8 => Value::Float(f64::from_bits(r.u64()?)),
                n => return Err(format!("invalid FLTN length {n}")),
            };
            Ok((Some(ty), value))
        }
        0x6A | 0x6C => {
            let _size = r.u8()?;
            let precision = r.u8()?;
            let scale = r.u8()?;
            if !(1..=38).contains(&precision) || scale > precision {
                return Err("invalid decimal precision or scale".into());
            }
            let ty = SqlType::Decimal {
                precision,
                scale,
                numeric: code == 0x6C,
            };
            let len = usize::from(r.u8()?);
            if len == 0 {
                return Ok((Some(ty), Value::Null));
            }
            if !matches!(len, 5 | 9 | 13 | 17) {
                return Err(format!("invalid decimal length {len}"));
            }
            let sign = r.u8()?;
            let mut magnitude = [0u8; 16];
            magnitude[..len - 1].copy_from_slice(r.bytes(len - 1)?);
            let m = u128::from_le_bytes(magnitude);
            let v = i128::try_from(m).map_err(|_| "decimal out of range".to_string())?;
            let v = if sign == 0 { -v } else { v };
            Ok((Some(ty), Value::Text(format_decimal(v, scale))))
        }
        0xE7 | 0xA7 | 0xEF | 0xAF => {
            let max = r.u16()?;
            r.bytes(5)?;
            let wide = matches!(code, 0xE7 | 0xEF);
            let ty = match (code, max) {
                (0xE7, 0xFFFF) => SqlType::NVarChar(None),
                (0xE7, n) => SqlType::NVarChar(Some((n / 2).max(1))),
                (0xA7, 0xFFFF) => SqlType::VarChar(None),
                (0xA7, n) => SqlType::VarChar(Some(n.max(1))),
                (0xEF, n) => SqlType::NChar((n / 2).max(1)),
                (_, n) => SqlType::Char(n.max(1)),
            };
            let bytes = r.var_bytes(max)?;
            let value = match bytes {
                None => Value::Null,
                Some(b) if wide => Value::Text(utf16(&b)?),
                Some(b) => Value::Text(b.iter().map(|c| char::from(*c)).collect()),
            };
            Ok((Some(ty), value))
        }
        0xA5 | 0xAD => {
            let max = r.u16()?;
            let ty = match (code, max) {
                (0xA5, 0xFFFF) => SqlType::VarBinary(None),
                (0xA5, n) => SqlType::VarBinary(Some(n.max(1))),
                (_, n) => SqlType::Binary(n.max(1)),
            };
            let bytes = r.var_bytes(max)?;
            Ok((Some(ty), bytes.map_or(Value::Null, Value::Bytes)))
        }
        0x28 => {
            let len = r.u8()?;
            let value = match len {
                0 => Value::Null,
                3 => {
                    let days = r.u24()?;
                    let d = date_from_days(days).ok_or("invalid date")?;
                    Value::Text(format_date(d))
                }
                n => return Err(format!("invalid date length {n}")),
            };
            Ok((Some(SqlType::Date), value))
        }
        0x2A => {
            let scale = r.u8()?;
            if scale > 7 {
                return Err("invalid datetime2 scale".into());
            }
            let len = r.u8()?;
            if len == 0 {
                return Ok((Some(SqlType::DateTime2(scale)), Value::Null));
            }
            let tl = time_len(scale);
            if len != tl + 3 {
                return Err(format!("invalid datetime2 length {len}"));
            }
            let mut t = [0u8; 8];
            t[..usize::from(tl)].copy_from_slice(r.bytes(usize::from(tl))?);
            let time = time_from_ticks(u64::from_le_bytes(t), scale).ok_or("invalid time")?;
            let date = date_from_days(r.u24()?).ok_or("invalid date")?;
            Ok((
                Some(SqlType::DateTime2(scale)),
                Value::Text(format_datetime(date.and_time(time))),
            ))
        }
        0x6F | 0x3D => {
            let len = if code == 0x6F {
                let _size = r.u8()?;
                r.u8()?
            } else {
                8
            };
            let value = match len {
                0 => Value::Null,
                8 => {
                    let days = r.u32()? as i32;
                    let ticks = r.u32()?;
                    let base = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("date")?;
                    let date = base
                        .checked_add_signed(chrono::Duration::days(i64::from(days)))
                        .ok_or("invalid datetime")?;
                    let nanos = u64::from(ticks) * 1_000_000_000 / 300;
                    let time = time_from_ticks(nanos, 9).ok_or("invalid datetime")?;
                    Value::Text(format_datetime(date.and_time(time)))
                }
                n => return Err(format!("unsupported datetime length {n}")),
            };
            Ok((Some(SqlType::DateTime), value))
        }
        0x24 => {
            let _size = r.u8()?;
            match r.u8()? {
                0 => Ok((Some(SqlType::UniqueIdentifier), Value::Null)),
                16 => {
                    let mut raw = r.bytes(16)?.to_vec();
                    raw[0..4].reverse();
                    raw[4..6].reverse();
                    raw[6..8].reverse();
                    let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
                    let text = format!(
                        "{}-{}-{}-{}-{}",
                        &hex[0..8],
                        &hex[8..12],
                        &hex[12..16],
                        &hex[16..20],
                        &hex[20..32]
                    );
                    Ok((Some(SqlType::UniqueIdentifier), Value::Text(text)))
                }
                n => Err(format!("invalid uniqueidentifier length {n}")),
            }
        }
        other => Err(format!("unsupported parameter type 0x{other:02X}")),
    }
}

/// Decodes UTF-16LE bytes.
pub fn utf16(bytes: &[u8]) -> Result<String, String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| "invalid UTF-16 text".to_string())
}

/// Parses the `params` declaration of `sp_executesql` (`@P1 int,@P2 nvarchar(4000)`) into
/// (name, type) pairs; names keep their `@`.
pub fn parse_declarations(text: &str) -> Result<Vec<(String, SqlType)>, String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, rest) = part
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("parameter declaration `{part}` has no type"))?;
        let rest = rest.trim();
        let rest = rest
            .strip_suffix("OUTPUT")
            .or_else(|| rest.strip_suffix("output"))
            .unwrap_or(rest);
        let ty = SqlType::parse(rest)
            .ok_or_else(|| format!("unsupported parameter type `{}`", rest.trim()))?;
        out.push((name.to_string(), ty));
    }
    Ok(out)
}

// Latin1_General_CI_AS: case-insensitive, accent-sensitive, Windows (linguistic) order.

/// One character's weights: class (punctuation < digits < letters), its base letter folded
/// to lower case, and its accents.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Weight {
    class: u8,
    base: char,
}

/// Sort key levels of a string: primary (base letters, hyphens and apostrophes ignored as in
/// Windows word sort), secondary (accents per base letter, unaccented first), and a last level
/// (the case-folded text) that only separates strings differing in ignored punctuation.
fn sort_key(text: &str) -> (Vec<Weight>, Vec<Vec<char>>, Vec<char>) {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    let text = text.trim_end_matches(' ');
    let mut primary = Vec::new();
    let mut secondary: Vec<Vec<char>> = Vec::new();
    let mut folded = Vec::new();
    for c in text.nfd() {
        if is_combining_mark(c) {
            if let Some(last) = secondary.last_mut() {
                last.push(c);
            }
            folded.push(c);
            continue;
        }
        let lower = fold_char(c);
        if lower == '-' || lower == '\'' || lower == '\u{2019}' {
            // Last level: 'coop' before 'co-op'.
            folded.push(char::MAX);
            continue;
        }
        let (bases, mark): (&[char], Option<char>) = match lower {
            'ß' => (&['s', 's'], None),
            'æ' => (&['a', 'e'], None),
            'œ' => (&['o', 'e'], None),
            'ø' => (&['o'], Some('\u{338}')),
            'đ' => (&['d'], Some('\u{335}')),
            'ł' => (&['l'], Some('\u{337}')),
            _ => (std::slice::from_ref(&lower), None),
        };
        folded.extend_from_slice(bases);
        for (i, b) in bases.iter().enumerate() {
            let class = if b.is_alphabetic() {
                2
            } else if b.is_numeric() {
                1
            } else {
                0
            };
            primary.push(Weight { class, base: *b });
            secondary.push(match mark {
                Some(m) if i == 0 => vec![m],
                _ => Vec::new(),
            });
        }
    }
    (primary, secondary, folded)
}

/// A character folded to lower case (one-to-one mappings only).
fn fold_char(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Compares two strings as SQL Server's Latin1_General_CI_AS does: 'a' = 'A', 'e' < 'é',
/// 'Álvarez' between 'Alvarez' and 'Azofeifa'; trailing spaces ignored.
pub fn compare_ci_as(a: &str, b: &str) -> std::cmp::Ordering {
    let simple = |s: &str| s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b' ');
    if simple(a) && simple(b) {
        let a = a
            .trim_end_matches(' ')
            .bytes()
            .map(|c| c.to_ascii_lowercase());
        let b = b
            .trim_end_matches(' ')
            .bytes()
            .map(|c| c.to_ascii_lowercase());
        // Digits (class 1) before letters (class 2), as in the general key.
        let weight = |c: u8| (u8::from(c.is_ascii_alphabetic()), c);
        return a.map(weight).cmp(b.map(weight));
    }
    let (ap, asec, af) = sort_key(a);
    let (bp, bsec, bf) = sort_key(b);
    ap.cmp(&bp)
        .then_with(|| asec.cmp(&bsec))
        .then_with(|| af.cmp(&bf))
}

/// One element of a compiled T-SQL LIKE pattern.
#[derive(Debug)]
enum LikeElem {
    Any,
    One,
    Char(char),
    Set {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn compile_like(pattern: &[char], escape: Option<char>) -> Vec<LikeElem> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        let c = pattern[i];
        if Some(c) == escape && i + 1 < pattern.len() {
            out.push(LikeElem::Char(pattern[i + 1]));
            i += 2;
            continue;
        }
        match c {
            '%' => out.push(LikeElem::Any),
            '_' => out.push(LikeElem::One),
            '[' => {
                if let Some(len) = pattern[i + 1..].iter().position(|c| *c == ']') {
                    let mut body = &pattern[i + 1..i + 1 + len];
                    // `[]` is a literal `[` followed by `]`.
                    if !body.is_empty() {
                        let negated = body.first() == Some(&'^') && body.len() > 1;
                        if negated {
                            body = &body[1..];
                        }
                        let mut items = Vec::new();
                        let mut j = 0;
                        while j < body.len() {
                            if j + 2 < body.len() && body[j + 1] == '-' {
                                items.push((body[j], body[j + 2]));
                                j += 3;
                            } else {
                                items.push((body[j], body[j]));
                                j += 1;
                            }
                        }
                        out.push(LikeElem::Set { negated, items });
                        i += len + 2;
                        continue;
                    }
                }
                out.push(LikeElem::Char('['));
            }
            c => out.push(LikeElem::Char(c)),
        }
        i += 1;
    }
    out
}

fn like_char_eq(a: char, b: char) -> bool {
    a == b || fold_char(a) == fold_char(b)
}

fn like_in_range(c: char, lo: char, hi: char) -> bool {
    let (c, lo, hi) = (c.to_string(), lo.to_string(), hi.to_string());
    compare_ci_as(&lo, &c).is_le() && compare_ci_as(&c, &hi).is_le()
}

/// T-SQL `value LIKE pattern [ESCAPE escape]` under Latin1_General_CI_AS: `%`, `_`, `[a-c]`,
/// `[^x]`; case-insensitive for every script, accent-sensitive.
pub fn like(value: &str, pattern: &str, escape: Option<char>) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let value: Vec<char> = value.nfc().collect();
    let pattern: Vec<char> = pattern.nfc().collect();
    let elems = compile_like(&pattern, escape);
    // matches[j]: the pattern's first i elements can match the value's first j characters.
    let mut matches = vec![false; value.len() + 1];
    matches[0] = true;
    for e in &elems {
        let mut next = vec![false; value.len() + 1];
        match e {
            LikeElem::Any => {
                let mut seen = false;
                for j in 0..=value.len() {
                    seen |= matches[j];
                    next[j] = seen;
                }
            }
            _ => {
                for j in 0..value.len() {
                    if !matches[j] {
                        continue;
                    }
                    let c = value[j];
                    let ok = match e {
                        LikeElem::One => true,
                        LikeElem::Char(p) => like_char_eq(c, *p),
                        LikeElem::Set { negated, items } => {
                            items.iter().any(|(lo, hi)| {
                                if lo == hi {
                                    like_char_eq(c, *lo)
                                } else {
                                    like_in_range(c, *lo, *hi)
                                }
                            }) != *negated
                        }
                        LikeElem::Any => unreachable!("handled above"),
                    };
                    if ok {
                        next[j + 1] = true;
                    }
                }
            }
        }
        matches = next;
    }
    matches[value.len()]
}

/// UPPER/LOWER for every script (SQLite's own change ASCII only); one-to-one mappings only, as
/// SQL Server (UPPER('ß') stays 'ß').
pub fn change_case(text: &str, upper: bool) -> String {
    text.chars()
        .map(|c| {
            let mut m: Box<dyn Iterator<Item = char>> = if upper {
                Box::new(c.to_uppercase())
            } else {
                Box::new(c.to_lowercase())
            };
            match (m.next(), m.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_names() {
        assert_eq!(
            SqlType::parse("NVARCHAR(100)"),
            Some(SqlType::NVarChar(Some(100)))
        );
        assert_eq!(
            SqlType::parse("nvarchar(max)"),
            Some(SqlType::NVarChar(None))
        );
        assert_eq!(
            SqlType::parse("decimal(18, 2)"),
            Some(SqlType::Decimal {
                precision: 18,
                scale: 2,
                numeric: false
            })
        );
        assert_eq!(SqlType::parse("datetime2"), Some(SqlType::DateTime2(7)));
        assert_eq!(SqlType::parse("[rowversion]"), Some(SqlType::RowVersion));
        assert_eq!(SqlType::parse("geography"), None);
        assert_eq!(SqlType::parse("decimal(50,2)"), None);
    }

    #[test]
    fn decimals_round_trip_as_scaled_integers() {
        assert_eq!(parse_decimal("1250000.00", 2), Some(125_000_000));
        assert_eq!(parse_decimal("-0.5", 0), Some(-1));
        assert_eq!(parse_decimal("12.345", 2), Some(1235));
        assert_eq!(parse_decimal("1e3", 2), Some(100_000));
        assert_eq!(parse_decimal("abc", 2), None);
        assert_eq!(format_decimal(125_000_000, 2), "1250000.00");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn decimals_parse_exactly_and_compare_by_value() {
        assert_eq!(
            parse_decimal("1234567890123456.78", 2),
            Some(123_456_789_012_345_678)
        );
        assert_eq!(
            parse_decimal("1.2345678901234567891E3", 4),
            Some(12_345_679)
        );
        assert_eq!(parse_decimal("-2.5", 0), Some(-3));
        assert_eq!(parse_decimal("1e400", 0), None);
        use std::cmp::Ordering::*;
        for (a, b, o) in [
            ("12.30", "12.3", Equal),
            ("-0.00", "0", Equal),
            ("9999999999999999.99", "10000000000000000", Less),
            ("-10", "-9.99", Less),
            ("-1", "0.5", Less),
            ("100", "99.999", Greater),
        ] {
            assert_eq!(compare_decimal(a, b), Some(o), "{a} vs {b}");
        }
        assert_eq!(compare_decimal("abc", "1"), None);
        assert_eq!(
            decimal_literal_type("0012.50"),
            Some(SqlType::Decimal {
                precision: 4,
                scale: 2,
                numeric: true
            })
        );
    }

    #[test]
    fn text_orders_as_latin1_general_ci_as() {
        use std::cmp::Ordering::*;
        for (a, b, o) in [
            ("abc", "ABC", Equal),
            ("abc ", "ABC", Equal),
            ("e", "é", Less),
            ("É", "é", Equal),
            ("Álvarez", "Alvarez", Greater),
            ("Álvarez", "Azofeifa", Less),
            ("Álvarez", "Zamora", Less),
            ("Ñandú", "Nandu", Greater),
            ("Ñandú", "Oviedo", Less),
            ("e\u{301}", "é", Equal),
            ("co-op", "coop", Greater),
            ("co-op", "coopa", Less),
            ("9", "a", Less),
            ("Straße", "STRASSE", Equal),
        ] {
            assert_eq!(compare_ci_as(a, b), o, "{a} vs {b}");
            assert_eq!(compare_ci_as(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn like_follows_t_sql() {
        for (value, pattern, escape, expected) in [
            ("Ébano", "é%", None, true),
            ("Ébano", "e%", None, false),
            ("ÑANDÚ", "ñandú", None, true),
            ("abc", "a_c", None, true),
            ("abc", "a_", None, false),
            ("b1", "[a-c]_", None, true),
            ("d1", "[a-c]_", None, false),
            ("d1", "[^a-c]1", None, true),
            ("á", "[a-b]", None, true),
            ("50%", "50!%", Some('!'), true),
            ("50x", "50!%", Some('!'), false),
            ("[x", "[x", None, true),
            ("a]", "a]", None, true),
            ("", "%", None, true),
        ] {
            assert_eq!(
                like(value, pattern, escape),
                expected,
                "{value} LIKE {pattern}"
            );
        }
        assert_eq!(change_case("núñez straße", true), "NÚÑEZ STRAßE");
    }

    #[test]
    fn datetimes_have_one_canonical_text_form() {
        let dt = parse_datetime("2024-03-01T10:20:30.5").unwrap();
        assert_eq!(format_datetime(dt), "2024-03-01 10:20:30.5000000");
        assert_eq!(
            parse_datetime("2024-03-01").unwrap().to_string(),
            "2024-03-01 00:00:00"
        );
        assert!(parse_datetime("yesterday").is_none());
        let canonical = "2024-03-01 10:20:30.1234567";
        assert_eq!(
            format_datetime(parse_datetime(canonical).unwrap()),
            canonical
        );
        assert!(parse_datetime("2024-02-30 10:20:30.1234567").is_none());
    }

    #[test]
    fn parses_sp_executesql_declarations() {
        let d = parse_declarations("@P1 bigint,@P2 nvarchar(4000),@P3 numeric(18,2)").unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[2].0, "@P3");
        assert!(parse_declarations("@P1 sql_variant").is_err());
        assert!(parse_declarations("").unwrap().is_empty());
    }

    #[test]
    fn encodes_rowversion_big_endian() {
        let mut out = Vec::new();
        encode_value(&SqlType::RowVersion, &Value::Int(0x0102), &mut out).unwrap();
        assert_eq!(out, vec![8, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut out = Vec::new();
        assert!(encode_value(&SqlType::Int, &Value::Int(1 << 40), &mut out).is_err());
    }
}
