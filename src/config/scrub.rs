//! Keeps secrets out of configuration problems: each problem message has every value taken from
//! the environment, and any long piece of one (a truncated quote), replaced by `${NAME}`,
//! whatever key it landed in and however serde quoted it; a secret written literally in the file
//! (`hubspot.token: pat-…`, a whole `sql_server:` given as a connection string) is replaced the
//! same way by `<secret from KEY>`; and anything shaped like a secret (`password=…`,
//! `user:password@` in a URL, a HubSpot `pat-…` token) is masked wherever it comes from.

/// Pieces of an environment value this long or longer are replaced wherever they appear
/// (shorter ones would also hit ordinary words: a URL's `postgres` in a list of section names).
const MIN_FRAGMENT: usize = 12;
/// A whole value shorter than this is left alone (`1`, `on`: not a secret, and replacing it
/// would garble every message).
const MIN_WHOLE: usize = 3;

use std::sync::LazyLock;

use regex::Regex;

use super::Problem;

/// Keys whose value is a secret (and the sections a secret may be given as, by mistake).
pub const SECRET_KEYS: &[&str] = &[
    "postgres.url",
    "hubspot.token",
    "sql_server.connection",
    "service.api_token",
    "postgres",
    "hubspot",
    "sql_server",
];

/// Secret-shaped text: a connection string's password, a URL's password, a HubSpot token.
pub(crate) static SECRET_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
          (?P<kw>\b(?:password|pwd)\s*=\s*)(?:\{[^}]*\}|[^;\s`']*)
        | (?P<url>://[^:/@\s`']+:)[^@\s`']+@
        | \bpat-[a-z0-9]{2,}-[0-9a-f-]{8,}
        ",
    )
    .expect("static pattern")
});

/// `message` with every secret-shaped piece masked.
pub fn mask_secret_shapes(message: &str) -> String {
    SECRET_SHAPES
        .replace_all(message, |c: &regex::Captures<'_>| {
            if let Some(kw) = c.name("kw") {
                format!("{}***", kw.as_str())
            } else if let Some(url) = c.name("url") {
                format!("{}***@", url.as_str())
            } else {
                "pat-***".to_string()
            }
        })
        .into_owned()
}

/// Values substituted from the environment, with the variable each came from and the key path
/// it went to, and secrets written literally in the file.
#[derive(Debug, Default, Clone)]
pub struct Substituted {
    /// (what replaces the value in messages, the value).
    values: Vec<(String, String)>,
    at: Vec<(String, String)>,
}

impl Substituted {
    /// Remembers that `value`, from variable `name`, went into the value at key `path`.
    pub fn note(&mut self, path: &str, name: &str, value: &str) {
        if !self.at.iter().any(|(p, n)| p == path && n == name) {
            self.at.push((path.to_string(), name.to_string()));
        }
        self.hide(format!("${{{name}}}"), value);
    }

    /// Remembers a secret written literally at key `path` (no variable to name).
    pub fn note_literal(&mut self, path: &str, value: &str) {
        self.hide(format!("<secret from {path}>"), value);
    }

    fn hide(&mut self, replacement: String, value: &str) {
        if value.chars().count() >= MIN_WHOLE
            && !self
                .values
                .iter()
                .any(|(r, v)| *r == replacement && v == value)
        {
            self.values.push((replacement, value.to_string()));
        }
    }

    /// `problem` with its message scrubbed ([`Self::scrub`]) and, when its key took a value
    /// from the environment, naming the variable: `(the value comes from ${SQL_SERVER})`.
    pub fn explain(&self, problem: Problem) -> Problem {
        let mut message = mask_secret_shapes(&self.scrub(&problem.message));
        let unnamed: Vec<String> = self
            .at
            .iter()
            .filter(|(path, _)| *path == problem.path)
            .map(|(_, name)| format!("${{{name}}}"))
            .filter(|var| !message.contains(var.as_str()))
            .collect();
        if !unnamed.is_empty() {
            message.push_str(&format!(" (the value comes from {})", unnamed.join(", ")));
        }
        Problem { message, ..problem }
    }

    /// `message` with every substituted value, in the forms an error may show it (as is, or
    /// escaped as serde's `"…"` quoting does) and any piece of at least [`MIN_FRAGMENT`]
    /// characters of those, replaced by `${NAME}`.
    pub fn scrub(&self, message: &str) -> String {
        let mut forms: Vec<(Vec<char>, &str)> = Vec::new();
        for (name, value) in &self.values {
            let debug = format!("{value:?}");
            let debug = &debug[1..debug.len() - 1];
            for form in [value.as_str(), debug, &value.escape_default().to_string()] {
                let chars: Vec<char> = form.chars().collect();
                if !forms.iter().any(|(f, _)| *f == chars) {
                    forms.push((chars, name));
                }
            }
        }
        if forms.is_empty() {
            return message.to_string();
        }
        let text: Vec<char> = message.chars().collect();
        let mut out = String::with_capacity(message.len());
        let mut i = 0;
        while i < text.len() {
            // The longest piece of any form starting here.
            let mut best: Option<(usize, &str)> = None;
            for (form, name) in &forms {
                let len = longest_piece_at(&text[i..], form);
                let whole = len == form.len();
                if (whole || len >= MIN_FRAGMENT) && best.is_none_or(|(l, _)| len > l) {
                    best = Some((len, name));
                }
            }
            match best {
                Some((len, replacement)) => {
                    out.push_str(replacement);
                    i += len;
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        out
    }
}

/// Length of the longest prefix of `text` that occurs somewhere in `form`.
fn longest_piece_at(text: &[char], form: &[char]) -> usize {
    let mut best = 0;
    for start in 0..form.len() {
        if form.len() - start <= best {
            break;
        }
        let len = text
            .iter()
            .zip(&form[start..])
            .take_while(|(a, b)| a == b)
            .count();
        best = best.max(len);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: &str = "server=tcp:db,1433;user=u;password=hunter2\"x\\y";

    fn subs() -> Substituted {
        let mut s = Substituted::default();
        s.note("sql_server", "SQL_SERVER", CONN);
        s.note("service.x", "SHORT", "on");
        s
    }

    #[test]
    fn replaces_whole_values_in_any_quoting() {
        let s = subs();
        let raw = format!("invalid value `{CONN}`");
        assert_eq!(s.scrub(&raw), "invalid value `${SQL_SERVER}`");
        let serde = format!("invalid type: string {CONN:?}, expected a duration");
        let scrubbed = s.scrub(&serde);
        assert_eq!(
            scrubbed,
            "invalid type: string \"${SQL_SERVER}\", expected a duration"
        );
        assert!(!scrubbed.contains("hunter2"));
    }

    #[test]
    fn replaces_truncated_and_inner_pieces() {
        let s = subs();
        let truncated = format!("invalid type: string \"{}…", &CONN[..20]);
        assert_eq!(s.scrub(&truncated), "invalid type: string \"${SQL_SERVER}…");
        let inner = "near `password=hunter2` here";
        let scrubbed = s.scrub(inner);
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
        assert!(scrubbed.contains("${SQL_SERVER}"), "{scrubbed}");
    }

    #[test]
    fn names_the_variable_of_the_key_even_when_the_message_has_no_value() {
        let s = subs();
        let p = |path: &str, message: &str| Problem {
            path: path.into(),
            message: message.into(),
            location: None,
        };
        let e = s.explain(p("service.x", "invalid socket address syntax"));
        assert_eq!(
            e.message,
            "invalid socket address syntax (the value comes from ${SHORT})"
        );
        let e = s.explain(p("sql_server", &format!("invalid type: string {CONN:?}")));
        assert_eq!(e.message, "invalid type: string \"${SQL_SERVER}\"");
        let e = s.explain(p("queue", "unrelated"));
        assert_eq!(e.message, "unrelated");
    }

    #[test]
    fn literal_secrets_are_named_by_their_key() {
        let mut s = Substituted::default();
        s.note_literal("hubspot.token", "pat-na1-0000-literal-token");
        let message = "invalid type: string \"pat-na1-0000-literal-token\", expected struct";
        assert_eq!(
            s.scrub(message),
            "invalid type: string \"<secret from hubspot.token>\", expected struct"
        );
    }

    #[test]
    fn secret_shapes_are_masked_wherever_they_come_from() {
        assert_eq!(
            mask_secret_shapes("server=tcp:db;Password=hunter2;user=u"),
            "server=tcp:db;Password=***;user=u"
        );
        assert_eq!(mask_secret_shapes("pwd = {a;b}x"), "pwd = ***x");
        assert_eq!(
            mask_secret_shapes("bad `postgres://hub:s3cr%40t@db/x`"),
            "bad `postgres://hub:***@db/x`"
        );
        assert_eq!(
            mask_secret_shapes("token pat-na1-99999999-8888-7777 refused"),
            "token pat-*** refused"
        );
        let plain = "postgres://db/x: expected one of `service`, `postgres`";
        assert_eq!(mask_secret_shapes(plain), plain);
    }

    #[test]
    fn leaves_short_values_and_unrelated_text_alone() {
        let mut s = subs();
        s.note(
            "postgres.url",
            "HUBSYNC_DATABASE_URL",
            "postgres://u:pw@db/x",
        );
        let list = "expected one of `service`, `postgres`, `queue`";
        assert_eq!(s.scrub(list), list);
        assert_eq!(s.scrub("must be on or off"), "must be on or off");
        assert_eq!(s.scrub("server"), "server");
        assert_eq!(Substituted::default().scrub("x"), "x");
    }
}
