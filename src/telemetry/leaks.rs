//! Finding what must never be in hubsync's output: given secrets (in any quoting), secret-shaped
//! text (`password=…`, a URL's password, a `pat-…` token) not masked, email addresses not in
//! their masked form `a***@example.com`, and cédulas in clear: written `1-0234-0567`, or nine
//! digits where the text says it is a cédula (`no__de_cedula`, `cédula`, `identificación`) or
//! where they are a value known to be one. The tests scan every output of every process with
//! it; what it reports is itself masked, so a failure never shows what leaked.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// Secrets shorter than this are ignored: they would match ordinary words.
const MIN_SECRET: usize = 6;
/// How far (in bytes) after a word naming a cédula a number is taken for one.
const CONTEXT: usize = 40;
/// How much of the line around the first hit a [`Leak`] shows.
const EXCERPT: usize = 160;

/// What a scan looks for besides the shapes: the secrets in play and values known to be
/// identity numbers (their digits), and whether personal data counts at all (not in output a
/// user asked to be unmasked: secrets are looked for in every output).
#[derive(Debug, Clone)]
pub struct Watch {
    secrets: Vec<String>,
    identities: HashSet<String>,
    personal: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            identities: HashSet::new(),
            personal: true,
        }
    }
}

impl Watch {
    /// Also looks for `secret` (ignored when shorter than 6 characters).
    pub fn secret(&mut self, secret: &str) -> &mut Self {
        if secret.chars().count() >= MIN_SECRET && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
        }
        self
    }

    /// Also looks for the identity number `value` (any written form) as a number of its own.
    pub fn identity(&mut self, value: &str) -> &mut Self {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if (9..=12).contains(&digits.len()) {
            self.identities.insert(digits);
        }
        self
    }

    /// Everything `other` looks for, too.
    pub fn extend(&mut self, other: &Watch) -> &mut Self {
        for s in &other.secrets {
            self.secret(s);
        }
        self.identities.extend(other.identities.iter().cloned());
        self
    }

    /// The same secrets, without personal data: for output a user asked to be unmasked.
    pub fn secrets_only(&self) -> Watch {
        Watch {
            secrets: self.secrets.clone(),
            identities: HashSet::new(),
            personal: false,
        }
    }
}

/// What kind of thing leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakKind {
    /// One of the watched secrets.
    Secret,
    /// A password or token by its shape, not masked.
    SecretShape,
    /// An email address not in its masked form.
    Email,
    /// A cédula (or DIMEX) in clear.
    Cedula,
}

impl fmt::Display for LeakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeakKind::Secret => "a secret",
            LeakKind::SecretShape => "a password or token",
            LeakKind::Email => "an unmasked email",
            LeakKind::Cedula => "an unmasked cédula",
        })
    }
}

/// One hit: its kind, its line (from 1) and the line around it with every hit masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub kind: LeakKind,
    pub line: usize,
    pub excerpt: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.kind, self.excerpt)
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
        .expect("static pattern")
});

/// A written cédula, `1-0234-0567` (or padded, `01-0234-0567`).
static WRITTEN_CEDULA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b0?[1-9]-[0-9]{4}-[0-9]{4}\b").expect("static pattern"));

/// Words that make the number after them an identity number.
static CEDULA_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)c[eé]dula|identificaci[oó]n|dimex").expect("static pattern"));

static DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]+").expect("static pattern"));

/// Every leak in `text`, line by line, in order.
pub fn leaks(text: &str, watch: &Watch) -> Vec<Leak> {
    let forms = secret_forms(&watch.secrets);
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let hits = hits(line, watch, &forms);
            let first = hits.first()?;
            Some(Leak {
                kind: first.1,
                line: i + 1,
                excerpt: excerpt(line, &hits),
            })
        })
        .collect()
}

/// `text` with everything [`leaks`] would report masked, whole: a command line to show.
pub fn hide(text: &str, watch: &Watch) -> String {
    let forms = secret_forms(&watch.secrets);
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| masked_line(line, &hits(line, watch, &forms)).0)
        .collect();
    lines.join("\n")
}

/// Each secret as written, JSON-escaped and Debug-escaped.
fn secret_forms(secrets: &[String]) -> Vec<String> {
    let mut forms: Vec<String> = Vec::new();
    for s in secrets {
        let json = serde_json::to_string(s).unwrap_or_default();
        let debug = format!("{s:?}");
        for form in [s.clone(), unquote(&json), unquote(&debug)] {
            if !form.is_empty() && !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

fn unquote(quoted: &str) -> String {
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(quoted)
        .to_owned()
}

/// The hits in one line, by position, none overlapping.
fn hits(line: &str, watch: &Watch, secrets: &[String]) -> Vec<(Range<usize>, LeakKind)> {
    let mut found: Vec<(Range<usize>, LeakKind)> = Vec::new();
    for form in secrets {
        found.extend(
            line.match_indices(form.as_str())
                .map(|(at, s)| (at..at + s.len(), LeakKind::Secret)),
        );
    }
    found.extend(secret_shapes(line).map(|r| (r, LeakKind::SecretShape)));
    if watch.personal {
        found.extend(emails(line).map(|r| (r, LeakKind::Email)));
        found.extend(cedulas(line, &watch.identities).map(|r| (r, LeakKind::Cedula)));
    }
    found.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut kept: Vec<(Range<usize>, LeakKind)> = Vec::new();
    for hit in found {
        if kept.last().is_none_or(|(last, _)| hit.0.start >= last.end) {
            kept.push(hit);
        }
    }
    kept
}

/// Secret-shaped values that are not masked (`***`) or named (`${VAR}`, `<secret from …>`).
fn secret_shapes(line: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    crate::config::scrub::SECRET_SHAPES
        .captures_iter(line)
        .filter_map(|c| {
            let all = c.get(0)?;
            let prefix = c.name("kw").or(c.name("url")).map_or(0, |p| p.len());
            let value = all.as_str()[prefix..].trim_end_matches('@');
            let named = value.is_empty() || value.starts_with(['*', '$', '<']);
            (!named).then(|| all.start() + prefix..all.start() + prefix + value.len())
        })
}

/// Emails but masked ones (`a***@…`, which the pattern cannot match), the user or password of
/// a URL (`postgres://hubsync@db.internal`: a password is a secret shape) and a worker's
/// `name@host:pid`.
fn emails(line: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    EMAIL.find_iter(line).filter_map(move |m| {
        // `scheme://` or `scheme://user:` just before: the user or password of a URL.
        let url_user = line[..m.start()]
            .rsplit_once("://")
            .is_some_and(|(_, user)| {
                user.is_empty()
                    || user.strip_suffix(':').is_some_and(|u| {
                        !u.is_empty()
                            && !u.contains(|c: char| c.is_whitespace() || "/@:".contains(c))
                    })
            });
        let rest = &line[m.end()..];
        let worker = rest.starts_with(':') && rest[1..].starts_with(|c: char| c.is_ascii_digit());
        (!url_user && !worker).then(|| m.range())
    })
}

/// Cédulas written with dashes, watched identity numbers standing alone, and a 9–12 digit
/// number that is the first one after a word naming a cédula (within 40 bytes). A number that is the fraction of a decimal
/// (`1.123456789s`) is never one.
fn cedulas<'a>(
    line: &'a str,
    known: &'a HashSet<String>,
) -> impl Iterator<Item = Range<usize>> + 'a {
    // The first number after each word naming a cédula, if it follows closely.
    let named: Vec<usize> = CEDULA_WORD
        .find_iter(line)
        .filter_map(|w| {
            let number = DIGITS.find_at(line, w.end())?;
            (number.start() - w.end() <= CONTEXT).then_some(number.start())
        })
        .collect();
    let written = WRITTEN_CEDULA
        .find_iter(line)
        .filter(|m| !touches(line, m.range(), |c| c == '-' || c.is_ascii_alphanumeric()))
        .map(|m| m.range());
    let numbers = DIGITS.find_iter(line).filter_map(move |m| {
        let digits = m.as_str();
        let fraction = line[..m.start()].ends_with('.')
            && line[..m.start() - 1].ends_with(|c: char| c.is_ascii_digit());
        if fraction || touches(line, m.range(), |c| c.is_ascii_alphabetic() || c == '-') {
            return None;
        }
        let named = (9..=12).contains(&digits.len())
            && !digits.starts_with('0')
            && named.contains(&m.start());
        (named || known.contains(digits)).then(|| m.range())
    });
    written.chain(numbers)
}

/// Whether the character just before or just after `range` satisfies `joins`.
fn touches(line: &str, range: Range<usize>, joins: impl Fn(char) -> bool) -> bool {
    line[..range.start].chars().next_back().is_some_and(&joins)
        || line[range.end..].chars().next().is_some_and(&joins)
}

/// The line around its first hit (at most [`EXCERPT`] bytes), every hit replaced by its
/// masked form and what else masking recognises masked too.
fn excerpt(line: &str, hits: &[(Range<usize>, LeakKind)]) -> String {
    let (masked, first) = masked_line(line, hits);
    let start = floor_char(&masked, first.saturating_sub(EXCERPT / 2));
    let end = floor_char(&masked, (start + EXCERPT).min(masked.len()));
    let shown = super::mask::mask_text(&masked[start..end], false);
    let dots = |cut: bool| if cut { "…" } else { "" };
    format!("{}{shown}{}", dots(start > 0), dots(end < masked.len()))
}

/// `line` with each hit replaced by its masked form, and where the first one starts.
fn masked_line(line: &str, hits: &[(Range<usize>, LeakKind)]) -> (String, usize) {
    let mut masked = String::with_capacity(line.len());
    let mut at = 0;
    let mut first = 0;
    for (i, (range, kind)) in hits.iter().enumerate() {
        masked.push_str(&line[at..range.start]);
        if i == 0 {
            first = masked.len();
        }
        let hit = &line[range.clone()];
        masked.push_str(&match kind {
            LeakKind::Secret | LeakKind::SecretShape => "<secret>".to_owned(),
            LeakKind::Email => super::mask::mask_email(hit),
            LeakKind::Cedula => super::mask::mask_identity(hit),
        });
        at = range.end;
    }
    masked.push_str(&line[at..]);
    (masked, first)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        let mut w = Watch::default();
        w.secret("Sim-Passw0rd!")
            .secret("sim-token")
            .secret("pw")
            .identity("304560789");
        w
    }

    fn assert_clean(lines: &[&str], watch: &Watch) {
        for line in lines {
            let found = leaks(line, watch);
            assert!(found.is_empty(), "{line}: {found:?}");
        }
    }

    /// Each of `lines` has one leak, of `kind`.
    fn assert_found(kind: LeakKind, lines: &[&str], watch: &Watch) {
        for line in lines {
            assert_eq!(kinds(line, watch), [kind], "{line}");
        }
    }

    fn kinds(text: &str, watch: &Watch) -> Vec<LeakKind> {
        leaks(text, watch).into_iter().map(|l| l.kind).collect()
    }

    #[test]
    fn finds_secrets_in_any_quoting_and_unmasked_secret_shapes() {
        let w = watch();
        for line in [
            "server=tcp:127.0.0.1,1433;user=sa;password=Sim-Passw0rd!",
            r#"{"message":"token \"sim-token\" refused"}"#,
            "Authorization: Bearer sim-token",
            "connect postgres://hubsync:hunter22@db.internal/hubsync",
            "SQL_SERVER=server=tcp:x;Password = {braced;secret}",
            "token pat-na1-99999999-8888-7777-6666-555555555555",
        ] {
            let found = leaks(line, &w);
            assert_eq!(found.len(), 1, "{line}: {found:?}");
            let shown = found[0].to_string();
            for secret in ["Passw0rd", "sim-token", "hunter22", "braced", "99999999"] {
                assert!(!shown.contains(secret), "the message shows it: {shown}");
            }
            assert!(shown.contains("<secret>"), "{shown}");
        }
        let json = serde_json::to_string(&serde_json::json!({ "m": "say \"Sim-Passw0rd!\"" }));
        assert_eq!(kinds(&json.unwrap(), &w), [LeakKind::Secret]);
        let mut quoted = Watch::default();
        quoted.secret("hunter2\"x\\y");
        assert_eq!(
            kinds(r#"{"m":"password hunter2\"x\\y"}"#, &quoted),
            [LeakKind::Secret]
        );
        assert_clean(
            &[
                "password=***;user=sa",
                "postgres://hubsync:***@db.internal/hubsync",
                "sql_server.connection: password=${SQL_SERVER}",
                "postgres://<secret from postgres.url>@h",
                "token pat-*** refused",
                // Short secrets are not looked for: `pw` is in ordinary words.
                "pwd is not a password",
            ],
            &w,
        );
    }

    #[test]
    fn finds_unmasked_emails_but_not_masked_ones_urls_or_workers() {
        let w = watch();
        assert_found(
            LeakKind::Email,
            &[
                "created contact for ana.rojas@example.com",
                r#"{"message":"duplicate email","email":"Member7@Example.COM"}"#,
                "ana@correo.xn--caf-dma.cr",
            ],
            &w,
        );
        let shown = leaks("created contact for ana.rojas@example.com", &w)[0].to_string();
        assert!(
            shown.contains("a***@example.com") && !shown.contains("ana.rojas"),
            "{shown}"
        );
        assert_clean(
            &[
                "created contact for a***@example.com",
                r#"{"email":"***"}"#,
                "postgres://hubsync@db.internal/hubsync",
                "postgres://postgres@127.0.0.1:5432/t1",
                "worker hubsync@build.example.com:4242 claimed 50 items",
                "member7.example.com is not an email",
            ],
            &w,
        );
    }

    #[test]
    fn finds_cedulas_written_named_or_known_but_not_ids_ports_times_or_decimals() {
        let w = watch();
        assert_found(
            LeakKind::Cedula,
            &[
                "The duplicate key value is (1-0234-0567).",
                "beneficiary 01-0234-0567",
                r#"{"no__de_cedula":"112345678"}"#,
                "cédula 112345678 is not valid",
                "identificación: 155812345678",
                // A known value, whatever is around it.
                r#"{"properties":{"numero_de_cedula__beneficiario_2_":"x","n":304560789}}"#,
                "seen 304560789",
            ],
            &w,
        );
        let shown = leaks(r#"{"no__de_cedula":"112345678"}"#, &w)[0].to_string();
        assert!(
            shown.contains("1-****-**78") && !shown.contains("112345678"),
            "{shown}"
        );
        assert_clean(
            &[
                r#"{"no__de_cedula":"1-****-**78","hubspot_id":"37765128953"}"#,
                "cédula 1-****-**67",
                r#"{"hubspot_id":"112345678","record_key":"10045"}"#,
                "listening on 127.0.0.1:54321, rowversion 0x00000000000007D1",
                "at 2026-12-01T22:29:33.123456789Z took 1.304560789s",
                "batch 550e8400-e29b-41d4-a716-446655440000",
                "tel 2222-3333, +506 8888-7777",
                "cedula rule: 0123456789 has a leading zero",
                "no__de_cedula (cedula) rejected for 2 records of 5000 read since cursor 13377331",
            ],
            &w,
        );
    }

    #[test]
    fn hide_masks_a_whole_text() {
        let w = watch();
        assert_eq!(
            hide("sim mssql --password Sim-Passw0rd!\nto ana@example.com", &w),
            "sim mssql --password <secret>\nto a***@example.com"
        );
    }

    #[test]
    fn personal_data_is_ignored_when_unmasked_output_was_asked_for_but_secrets_are_not() {
        let w = watch().secrets_only();
        assert!(leaks("ana@example.com 1-0234-0567 304560789", &w).is_empty());
        assert_eq!(kinds("ana@example.com sim-token", &w), [LeakKind::Secret]);
    }

    #[test]
    fn reports_each_leaking_line_once_with_its_number() {
        let text =
            "ok\nto ana@example.com and luis@example.com\nok\npassword=Sim-Passw0rd! 1-0234-0567";
        let found = leaks(text, &watch());
        assert_eq!(
            found.iter().map(|l| (l.line, l.kind)).collect::<Vec<_>>(),
            [(2, LeakKind::Email), (4, LeakKind::Secret)]
        );
        assert_eq!(found[0].excerpt, "to a***@example.com and l***@example.com");
        assert_eq!(found[1].excerpt, "password=<secret> 1-****-**67");
        let long = format!("{} ana@example.com {}", "x".repeat(300), "y".repeat(300));
        let shown = &leaks(&long, &watch())[0].excerpt;
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert!(
            shown.contains("a***@example.com") && shown.len() < 200,
            "{shown}"
        );
    }
}
