//! Masking of personal data for log and CLI output: `m***@example.com`, `1-****-**78`,
//! `********77`. On by default; `logging.mask_personal_data: false` turns it off for logs (for
//! debugging on a secured host); the CLI masks unless asked with `--unmask`.
//!
//! Every hubsync log line passes through [`Masked`] on its way to stdout or a file, so the
//! messages and fields of dependencies (tiberius quoting a rejected value, sqlx, hyper…) are
//! masked like hubsync's own: emails, identity numbers (cédula 9 digits, DIMEX 11–12, also as
//! `1-0234-0567`), phones (`+506`, 8 digits) and the values SQL Server quotes in its errors.
//! Fields that carry a record's values (`sql_value`, `hubspot_value`, `synced_value`,
//! `properties`…) are masked whole, and CONFLICT and REJECT lines also lose every
//! double-quoted text (names, amounts).

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use regex::{Captures, Regex};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// What a masked value of unknown length shows.
const HIDDEN: &str = "***";

/// Turns masking of log output on or off for the whole process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `maria.rojas@example.com` → `m***@example.com`; text without `@` is masked whole.
pub fn email(value: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(value);
    }
    Cow::Owned(mask_email(value))
}

pub(super) fn mask_email(value: &str) -> String {
    match value.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => HIDDEN.into(),
    }
}

/// Identity numbers keep their first and last two digits: `112345678` → `1-****-**78`,
/// `155812345678` (DIMEX) → `1**********78`.
pub fn identity(value: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(value);
    }
    Cow::Owned(mask_identity(value))
}

pub(super) fn mask_identity(value: &str) -> String {
    let digits: Vec<char> = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let n = digits.len();
    if n < 4 {
        return "*".repeat(n.max(1));
    }
    let last2: String = digits[n - 2..].iter().collect();
    if n == 9 {
        return format!("{}-****-**{last2}", digits[0]);
    }
    format!("{}{}{last2}", digits[0], "*".repeat(n - 3))
}

/// Every digit but the last two becomes `*`; separators and a `+506` prefix stay.
fn mask_phone(value: &str) -> String {
    let (prefix, rest) = match value.strip_prefix("+506") {
        Some(rest) => ("+506", rest),
        None => ("", value),
    };
    let total = rest.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    let masked: String = rest
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen + 2 > total { c } else { '*' }
        })
        .collect();
    format!("{prefix}{masked}")
}

/// Masks a value of unknown kind: emails and identity-number-shaped values (9–12 digits, with
/// or without dashes, dots or spaces); anything else is returned as it is.
pub fn value(value: &str) -> Cow<'_, str> {
    if value.contains('@') {
        return email(value);
    }
    let digits = value.chars().filter(|c| c.is_ascii_digit()).count();
    let only_id_chars = value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ' '));
    if only_id_chars && (9..=12).contains(&digits) && !value.trim_start().starts_with('+') {
        return identity(value);
    }
    Cow::Borrowed(value)
}

/// Personal data inside free text. Alternatives are tried leftmost first: UUIDs, timestamps and
/// decimals are kept as they are so that their digits are not taken for identity numbers.
static PERSONAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
          (?P<keep>
              \b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b
            | \b\d{4}-\d{2}-\d{2}(?:[T\ ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?
          )
        | (?P<sql_open>Truncated\ value:\ '|\bvalue\ ')(?P<sql_quoted>[^']*)'
        | (?P<key_open>duplicate\ key\ value\ is\ \()(?P<key_quoted>[^)]*)\)
        | (?P<email>[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)
        | (?P<phone>\+506[\ \-]?\d{4}[\ \-]?\d{4}\b)
        | (?P<id>\b0?\d[\-\ .]\d{3,4}[\-\ .]\d{3,4}\b)
        | (?P<decimal>\d+\.\d+)
        | (?P<digits>\b\d{8,12}\b)
        | (?P<phone8>\b\d{4}[\-\ ]\d{4}\b)
        ",
    )
    .expect("static pattern")
});

/// Double-quoted text, which CONFLICT and REJECT lines and stored errors use to quote values.
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""[^"]*""#).expect("static pattern"));

fn replace(c: &Captures<'_>) -> String {
    let all = &c[0];
    if c.name("keep").is_some() || c.name("decimal").is_some() {
        all.to_owned()
    } else if let Some(open) = c.name("sql_open") {
        format!("{}{HIDDEN}'", open.as_str())
    } else if let Some(open) = c.name("key_open") {
        format!("{}{HIDDEN})", open.as_str())
    } else if c.name("email").is_some() {
        mask_email(all)
    } else if c.name("digits").is_some_and(|d| d.len() == 8)
        || c.name("phone").is_some()
        || c.name("phone8").is_some()
    {
        mask_phone(all)
    } else {
        mask_identity(all)
    }
}

/// Masks the personal data found in `text`, whatever the process setting.
pub(super) fn mask_text(text: &str, strict: bool) -> Cow<'_, str> {
    let masked = PERSONAL.replace_all(text, replace);
    if !strict {
        return masked;
    }
    match QUOTED.replace_all(&masked, "\"***\"") {
        Cow::Borrowed(_) => masked,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// Masks the personal data in free text (a message, an error) when masking is on.
pub fn text(text: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(text);
    }
    mask_text(text, false)
}

/// Masks a value read back from storage for the CLI (an item's last error, a record key):
/// personal data and every double-quoted text, whatever the log setting.
pub fn stored(text: &str) -> Cow<'_, str> {
    mask_text(text, true)
}

/// A record's value as the CLI prints it unless asked with `--unmask`: `***`, an email as
/// `a***@example.com` (its domain still shows what the email transform made of it).
pub fn hidden(value: &str) -> String {
    if value.contains('@') {
        stored(value).into_owned()
    } else {
        HIDDEN.into()
    }
}

/// Fields whose whole value is a record's data (names, amounts, phones): always hidden.
const WHOLE: &[&str] = &[
    "sql_value",
    "hubspot_value",
    "synced_value",
    "value",
    "values",
    "payload",
    "properties",
    "row",
];

/// Fields hubsync fills with its own identifiers: never personal data, never masked.
const EXEMPT: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "hubspot_id",
    // a MERGE line's merged-away id
    "old_hubspot_id",
    "batch_id",
    "item_id",
    "operation",
    "object",
    "direction",
    "status",
    // `name@host:pid` of a worker, not an email.
    "worker",
    "locked_by",
    "instance",
];

/// Masks one formatted log line. A JSON object keeps its shape and key order: each string value
/// is masked by its key (see [`WHOLE`], [`EXEMPT`]), numbers under a [`WHOLE`] key become
/// `"***"`. A line that is not JSON is masked as text.
pub fn line(line: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(line);
    }
    mask_line(line)
}

fn mask_line(line: &str) -> Cow<'_, str> {
    if !line.trim_start().starts_with('{') {
        return mask_text(line, false);
    }
    let strict = ["\"operation\":\"CONFLICT\"", "\"operation\":\"REJECT\""]
        .iter()
        .any(|op| line.contains(op));
    match mask_json(line, strict) {
        Some(masked) => Cow::Owned(masked),
        None => mask_text(line, strict),
    }
}

/// The JSON scanner behind [`line`]; `None` when the text is not well-formed enough to walk.
fn mask_json(line: &str, strict: bool) -> Option<String> {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 16);
    let mut key = String::new();
    // Nesting depth, and the depth a WHOLE value's container opened at.
    let mut depth = 0usize;
    let mut whole_from: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i)?;
                let literal = &line[i..end];
                let is_key = bytes[end..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|&b| b == b':');
                if is_key {
                    out.push_str(literal);
                    if whole_from.is_none() {
                        key = serde_json::from_str(literal).ok()?;
                    }
                } else {
                    let whole = whole_from.is_some() || WHOLE.contains(&key.as_str());
                    out.push_str(&mask_literal(literal, &key, whole, strict)?);
                }
                i = end;
            }
            b'{' | b'[' => {
                if whole_from.is_none() && WHOLE.contains(&key.as_str()) {
                    whole_from = Some(depth);
                }
                depth += 1;
                out.push(bytes[i] as char);
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if whole_from == Some(depth) {
                    whole_from = None;
                }
                out.push(bytes[i] as char);
                i += 1;
            }
            b'-' | b'0'..=b'9' if whole_from.is_some() || WHOLE.contains(&key.as_str()) => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                out.push_str("\"***\"");
                i += len;
            }
            // Outside strings JSON is ASCII; anything else is not a line this walks.
            0x80.. => return None,
            _ => {
                // Structural characters, whitespace, numbers, true/false/null.
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| {
                        b.is_ascii()
                            && !matches!(b, b'"' | b'{' | b'[' | b'}' | b']' | b'-' | b'0'..=b'9')
                    })
                    .count()
                    .max(1);
                out.push_str(&line[i..i + len]);
                i += len;
            }
        }
    }
    Some(out)
}

/// The index just past the closing quote of the string literal opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// One JSON string value, masked and re-encoded (the original literal when nothing changes).
fn mask_literal<'a>(
    literal: &'a str,
    key: &str,
    whole: bool,
    strict: bool,
) -> Option<Cow<'a, str>> {
    if EXEMPT.contains(&key) && !whole {
        return Some(Cow::Borrowed(literal));
    }
    if whole {
        return Some(Cow::Borrowed(if literal == "\"\"" {
            "\"\""
        } else {
            "\"***\""
        }));
    }
    let decoded: Cow<'_, str> = serde_json::from_str(literal).ok()?;
    Some(match mask_text(&decoded, strict) {
        Cow::Borrowed(_) => Cow::Borrowed(literal),
        Cow::Owned(masked) => Cow::Owned(serde_json::to_string(&masked).ok()?),
    })
}

/// A [`tracing_subscriber::fmt::MakeWriter`] whose writers mask every line (see [`line`])
/// before it reaches the inner writer: stdout, a log file, or a non-blocking queue to either.
#[derive(Debug, Clone)]
pub struct Masked<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Masked<M>
{
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter::new(self.0.make_writer(), false)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        MaskingWriter::new(self.0.make_writer_for(meta), false)
    }
}

/// Masks complete lines on their way to `inner`; a partial line waits for its end (or for
/// `flush`/drop). `always` masks whatever the process setting (the CLI's output).
pub struct MaskingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    always: bool,
}

impl<W: Write> MaskingWriter<W> {
    pub fn new(inner: W, always: bool) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            always,
        }
    }

    fn write_masked(&mut self, chunk: &[u8]) -> io::Result<()> {
        match std::str::from_utf8(chunk) {
            Ok(text) if self.always || enabled() => {
                let masked: String = text.split_inclusive('\n').map(mask_line).collect();
                self.inner.write_all(masked.as_bytes())
            }
            // Not text, or masking is off: passed on as it is.
            _ => self.inner.write_all(chunk),
        }
    }
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
            self.pending.extend_from_slice(buf);
            return Ok(buf.len());
        };
        let mut chunk = std::mem::take(&mut self.pending);
        chunk.extend_from_slice(&buf[..=last_newline]);
        self.write_masked(&chunk)?;
        self.pending.extend_from_slice(&buf[last_newline + 1..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.write_masked(&chunk)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for MaskingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_identity_numbers() {
        assert_eq!(email("maria@example.com"), "m***@example.com");
        assert_eq!(email("not-an-email"), "***");
        assert_eq!(identity("112345678"), "1-****-**78");
        assert_eq!(identity("1-1234-5678"), "1-****-**78");
        assert_eq!(identity("155812345678"), "1*********78");
        assert_eq!(identity("12"), "**");
        assert_eq!(value("ana@x.cr"), "a***@x.cr");
        assert_eq!(value("1-1234-5678"), "1-****-**78");
        assert_eq!(value("San José"), "San José");
        assert_eq!(value("+50688887777"), "+50688887777");
        assert_eq!(hidden("Ana María"), "***");
        assert_eq!(
            hidden("ana@correo.xn--caf-dma.cr"),
            "a***@correo.xn--caf-dma.cr"
        );
    }

    #[test]
    fn free_text_loses_emails_identity_numbers_and_phones_but_keeps_ids_and_times() {
        for (clear, masked) in [
            (
                "mail ana.rojas@example.com now",
                "mail a***@example.com now",
            ),
            ("cédula 112345678.", "cédula 1-****-**78."),
            ("cédula 1-0234-0567", "cédula 1-****-**67"),
            ("DIMEX 155812345678", "DIMEX 1*********78"),
            ("tel +506 8888-7777", "tel +506 ****-**77"),
            ("tel 88887777 or 2222-3333", "tel ******77 or ****-**33"),
            (
                "converting the nvarchar value 'Ana Rojas' to data type int",
                "converting the nvarchar value '***' to data type int",
            ),
        ] {
            assert_eq!(mask_text(clear, false), masked);
        }
        for kept in [
            "batch 550e8400-e29b-41d4-a716-446655440000 at 2026-12-01T22:29:33.123456789Z",
            "took 1.234567891s on 10.0.0.12:5432, record 10045",
            "column 'email' of dbo.hb_contacts",
        ] {
            assert_eq!(mask_text(kept, false), kept);
        }
        assert_eq!(
            stored(r#""Ana María" is not a valid name"#),
            r#""***" is not a valid name"#
        );
    }

    #[test]
    fn json_lines_stay_valid_json_in_the_same_key_order() {
        let line = r#"{"timestamp":"2026-12-01T22:29:33Z","level":"WARN","message":"to \"ana@x.cr\" \u00e9","hubspot_id":"37765128953","properties":{"firstname":"Ana","n":[1,2]},"record_key":"112345678","ok":true,"n":-1.5}"#;
        let masked = mask_line(line);
        let v: serde_json::Value = serde_json::from_str(&masked).expect(&masked);
        assert_eq!(v["message"], "to \"a***@x.cr\" é");
        assert_eq!(v["hubspot_id"], "37765128953");
        assert_eq!(v["properties"]["firstname"], "***");
        assert_eq!(v["properties"]["n"][0], "***");
        assert_eq!(v["record_key"], "1-****-**78");
        assert_eq!((&v["ok"], &v["n"]), (&true.into(), &(-1.5).into()));
        assert!(masked.starts_with(r#"{"timestamp":"#) && masked.ends_with(r#""n":-1.5}"#));
        let reject = r#"{"operation":"REJECT","message":"\"Ana\" is too long"}"#;
        assert_eq!(
            mask_line(reject),
            r#"{"operation":"REJECT","message":"\"***\" is too long"}"#
        );
    }

    #[test]
    fn the_writer_masks_lines_split_across_writes() {
        let mut out = Vec::new();
        {
            let mut w = MaskingWriter::new(&mut out, true);
            w.write_all(b"{\"message\":\"ana@").unwrap();
            w.write_all(b"x.cr\"}\nsecond 112345678").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"message\":\"a***@x.cr\"}\nsecond 1-****-**78"
        );
    }
}
