//! Loading: YAML text → interpolated value → typed `Config`, collecting every problem.
//!
//! This is the one place that uses `serde_yaml` (deprecated upstream): replacing it touches only
//! this file and `interpolate.rs`.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde_yaml::Value;

use super::input::{MAX_BYTES, MAX_DEPTH, check_nesting, read_regular_file};
use super::interpolate::{interpolate, join};
use super::scrub::Substituted;
use super::{
    Config, ConfigError, ENV_API_TOKEN, ENV_DATABASE_URL, ENV_HUBSPOT_TOKEN, ENV_SQL_SERVER,
    Problem, Problems,
};

/// Which secrets the command about to run needs; missing ones are problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only the queue database (queue and migrate commands).
    Postgres,
    /// Nothing outside (validate, sims).
    Nothing,
    /// Everything the daemon needs (run, check-config).
    All,
}

/// Reads and checks a configuration file, with overrides from the process environment.
pub fn load_file(path: &Path, need: Need) -> Result<Config, ConfigError> {
    load_file_with(path, need, &|name| std::env::var(name).ok())
}

/// Reads and checks a configuration file (a regular file of at most 1 MiB), looking variables
/// up with `env` (e.g. those of an environment file).
pub fn load_file_with(
    path: &Path,
    need: Need,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load_str(&read_regular_file(path)?, need, env)
}

/// Checks configuration text; `env` looks up environment variables (tests pass their own).
/// No problem shows a value taken from the environment: it names the variable instead.
pub fn load_str(
    text: &str,
    need: Need,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut substituted = Substituted::default();
    load_noting(text, need, env, &mut substituted).map_err(|e| match e {
        ConfigError::Invalid(problems) => ConfigError::Invalid(
            problems
                .into_iter()
                .map(|p| substituted.explain(p))
                .collect(),
        ),
        other => other,
    })
}

/// [`load_str`], noting every value taken from the environment in `substituted`.
fn load_noting(
    text: &str,
    need: Need,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Substituted,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    if text.len() as u64 > MAX_BYTES {
        problems.push("", "the configuration is larger than 1 MiB");
        return Err(ConfigError::Invalid(problems.into_vec()));
    }
    // Before the parser: deep nesting costs it seconds of CPU before it gives up.
    if let Err(problem) = check_nesting(text, MAX_DEPTH) {
        return Err(ConfigError::Invalid(vec![problem]));
    }
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            problems.push_problem(problem_from_yaml("", &e));
            return Err(ConfigError::Invalid(problems.into_vec()));
        }
    };
    note_literal_secrets(&value, "", substituted);
    interpolate(&mut value, "", env, substituted, &mut problems);

    let Some(mut config) = deserialize_all(text, value, &mut problems) else {
        return Err(ConfigError::Invalid(problems.into_vec()));
    };
    apply_secret_overrides(&mut config, env, substituted);
    check(&config, need, &mut problems);
    let problems: Vec<Problem> = problems
        .into_vec()
        .into_iter()
        .map(|mut p| {
            if p.location.is_none() {
                p.location = locate(text, &path_segments(&p.path));
            }
            p
        })
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Notes the secrets written literally in the file (not as `${VAR}`, which interpolation
/// notes with its variable), so no problem message shows them: the string at each secret key,
/// and any string anywhere that holds something shaped like a secret (`password=…`).
fn note_literal_secrets(value: &Value, path: &str, substituted: &mut Substituted) {
    match value {
        Value::String(text) if !text.contains("${") => {
            let secret_key = super::scrub::SECRET_KEYS.contains(&path);
            if secret_key || super::scrub::mask_secret_shapes(text) != *text {
                substituted.note_literal(path, text);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                if let Value::String(key) = k {
                    note_literal_secrets(v, &super::interpolate::join(path, key), substituted);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                note_literal_secrets(v, &format!("{path}[{i}]"), substituted);
            }
        }
        _ => {}
    }
}

/// Deserializes, and on failure removes the offending node and tries again, so that every
/// structural problem (unknown key, wrong type, bad duration) is reported, not just the first.
fn deserialize_all(text: &str, mut value: Value, problems: &mut Problems) -> Option<Config> {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..100 {
        match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            // Removed nodes take their defaults, so the semantic checks still run on the rest.
            Ok(config) => return Some(config),
            Err(err) => {
                let segments = segments(err.path());
                let message = err.inner().to_string();
                let message = strip_location(&message);
                // A required field we removed ourselves is already reported.
                if let Some(field) = quoted_after(message, "missing field `") {
                    let full = join(&segments.join("."), &field);
                    if removed.contains(&full) {
                        return None;
                    }
                }
                let mut target = segments.clone();
                if let Some(field) = quoted_after(message, "unknown field `")
                    && target.last() != Some(&field)
                {
                    target.push(field);
                }
                let path = render_path(&target);
                let location = locate(text, &target);
                problems.push_problem(Problem {
                    path: path.clone(),
                    message: message.to_string(),
                    location,
                });
                removed.push(target.join("."));
                if !remove(&mut value, &target) {
                    return None;
                }
            }
        }
    }
    None
}

/// Line and column (1-based) of the key at `segments` in YAML `text`, found by indentation.
/// Good for block-style YAML (what config files are); `None` where it cannot tell.
pub(super) fn locate(text: &str, segments: &[String]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // (effective indent, content) of a line; a sequence dash counts as indentation.
    let shape = |line: &str| -> Option<(usize, bool, String)> {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let indent = line.len() - trimmed.len();
        match trimmed.strip_prefix("- ") {
            Some(rest) => Some((
                indent + 2 + rest.len() - rest.trim_start().len(),
                true,
                rest.trim_start().to_string(),
            )),
            None => Some((indent, false, trimmed.to_string())),
        }
    };
    let (mut lo, mut hi) = (0, lines.len());
    let mut found = None;
    for seg in segments {
        let children: Vec<(usize, usize, bool, String)> = (lo..hi)
            .filter_map(|i| shape(lines[i]).map(|(ind, dash, c)| (i, ind, dash, c)))
            .collect();
        let child_indent = children.iter().map(|c| c.1).min()?;
        let (line, indent) = if let Some(index) = seq_index(seg) {
            let (i, ind, _, _) = children
                .iter()
                .filter(|c| c.1 == child_indent && c.2)
                .nth(index)?;
            (*i, *ind)
        } else {
            let (i, ind, _, _) = children.iter().find(|c| {
                c.1 == child_indent
                    && (c.3.starts_with(&format!("{seg}:"))
                        || c.3.starts_with(&format!("\"{seg}\":")))
            })?;
            (*i, *ind)
        };
        found = Some((line + 1, indent + 1));
        let is_seq_item = seq_index(seg).is_some();
        lo = if is_seq_item { line } else { line + 1 };
        hi = (line + 1..hi)
            .find(|&j| {
                shape(lines[j]).is_some_and(|(ind, dash, _)| {
                    if is_seq_item {
                        ind < indent || (ind == indent && dash)
                    } else {
                        ind <= indent
                    }
                })
            })
            .unwrap_or(hi);
    }
    found
}

/// `objects.contacts.fields[3].rule` → `["objects", "contacts", "fields", "[3]", "rule"]`.
fn path_segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(rest[..i].to_string());
            }
            let end = rest[i..].find(']').map_or(rest.len(), |e| i + e + 1);
            out.push(rest[i..end].to_string());
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

fn segments(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(format!("[{index}]")),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect()
}

fn render_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if s.starts_with('[') || out.is_empty() {
            out.push_str(s);
        } else {
            out.push('.');
            out.push_str(s);
        }
    }
    out
}

/// Removes the node at `segments` from `value`; false when there is nothing to remove.
fn remove(value: &mut Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match child(node, seg) {
            Some(n) => n,
            None => return false,
        };
    }
    if let Some(index) = seq_index(last) {
        if let Value::Sequence(items) = node
            && index < items.len()
        {
            items.remove(index);
            return true;
        }
        return false;
    }
    match node {
        Value::Mapping(map) => map.remove(last.as_str()).is_some(),
        _ => false,
    }
}

fn child<'a>(node: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match (seq_index(seg), node) {
        (Some(i), Value::Sequence(items)) => items.get_mut(i),
        (None, Value::Mapping(map)) => map.get_mut(seg),
        (_, Value::Tagged(t)) => child(&mut t.value, seg),
        _ => None,
    }
}

fn seq_index(seg: &str) -> Option<usize> {
    seg.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

fn strip_location(message: &str) -> &str {
    match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

fn problem_from_yaml(path: &str, e: &serde_yaml::Error) -> Problem {
    Problem {
        path: path.to_string(),
        message: strip_location(&e.to_string()).to_string(),
        location: e.location().map(|l| (l.line(), l.column())),
    }
}

fn apply_secret_overrides(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Substituted,
) {
    // An empty secret in the file (e.g. `${SQL_SERVER:-}` with the variable unset) is no secret.
    let blank = |s: &Option<SecretString>| {
        s.as_ref()
            .is_some_and(|v| v.expose_secret().trim().is_empty())
    };
    if blank(&config.postgres.url) {
        config.postgres.url = None;
    }
    if blank(&config.hubspot.token) {
        config.hubspot.token = None;
    }
    if blank(&config.sql_server.connection) {
        config.sql_server.connection = None;
    }
    if blank(&config.service.api_token) {
        config.service.api_token = None;
    }
    let mut secret = |path: &str, name: &str| {
        let value = env(name).filter(|v| !v.trim().is_empty())?;
        substituted.note(path, name, &value);
        Some(SecretString::from(value))
    };
    if let Some(v) = secret("postgres.url", ENV_DATABASE_URL) {
        config.postgres.url = Some(v);
    }
    if let Some(v) = secret("hubspot.token", ENV_HUBSPOT_TOKEN) {
        config.hubspot.token = Some(v);
    }
    if let Some(v) = secret("sql_server.connection", ENV_SQL_SERVER) {
        config.sql_server.connection = Some(v);
    }
    if let Some(v) = secret("service.api_token", ENV_API_TOKEN) {
        config.service.api_token = Some(v);
    }
}

/// The shortest job API token accepted.
pub const MIN_API_TOKEN_CHARS: usize = 16;

/// Semantic checks that serde cannot express. Never echoes a secret's value.
fn check(config: &Config, need: Need, problems: &mut Problems) {
    let needs_pg = matches!(need, Need::Postgres | Need::All);
    match &config.postgres.url {
        None if needs_pg => problems.push(
            "postgres.url",
            format!("required secret is missing: set {ENV_DATABASE_URL} or postgres.url"),
        ),
        None => {}
        Some(url) => match url::Url::parse(url.expose_secret()) {
            // The parse `run` connects with; its message may quote the URL, so it is not shown.
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
                if url
                    .expose_secret()
                    .parse::<sqlx::postgres::PgConnectOptions>()
                    .is_err()
                {
                    problems.push(
                        "postgres.url",
                        "not a usable PostgreSQL URL: check the port and the options after `?` \
                         (e.g. sslmode=require)",
                    );
                }
            }
            Ok(u) => problems.push(
                "postgres.url",
                format!(
                    "scheme must be postgres:// or postgresql://, not {}://",
                    u.scheme()
                ),
            ),
            Err(e) => problems.push("postgres.url", format!("not a valid URL ({e})")),
        },
    }
    let q = &config.queue;
    if q.retry_initial > q.retry_max {
        problems.push("queue.retry_initial", "must not exceed queue.retry_max");
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.logging.level) {
        problems.push("logging.level", format!("not a valid log filter ({e})"));
    }
    let rows = crate::telemetry::row_logging(&config.logging.level);
    if config.logging.mask_personal_data && !rows.is_empty() {
        problems.push(
            "logging.level",
            format!(
                "{} would log whole SQL Server rows, which masking cannot recognise; \
                 set logging.mask_personal_data: false to allow it",
                rows.join(",")
            ),
        );
    }

    // The header the HubSpot client sends; a token that cannot be one fails every call.
    if let Some(token) = &config.hubspot.token
        && reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .is_err()
    {
        problems.push(
            "hubspot.token",
            "holds characters not allowed in an HTTP header (a line break or control character?)",
        );
    }
    if let Some(token) = &config.service.api_token {
        let token = token.expose_secret();
        if token.chars().count() < MIN_API_TOKEN_CHARS {
            problems.push(
                "service.api_token",
                format!(
                    "too short: at least {MIN_API_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
                ),
            );
        } else if !token.chars().all(|c| c.is_ascii_graphic()) {
            problems.push(
                "service.api_token",
                "only printable ASCII without spaces can be sent in an Authorization header",
            );
        }
    }
    let objects: Vec<&str> = config.objects.keys().map(String::as_str).collect();
    if let Err(found) = crate::jobs::schedule::check(&config.schedules, &objects) {
        for (path, message) in found {
            problems.push(path, message);
        }
    }
    let share = config.reconcile.budget_share;
    if !(share > 0.0 && share <= 1.0) {
        problems.push(
            "reconcile.budget_share",
            "must be above 0 and at most 1 (a share of HubSpot's 10-second limit, e.g. 0.3)",
        );
    }
    let needs_outside = need == Need::All;
    config.hubspot.check("hubspot", needs_outside, problems);
    config
        .sql_server
        .check("sql_server", needs_outside, problems);
    for (name, object) in &config.objects {
        object.check(&format!("objects.{name}"), problems);
    }
    if need == Need::All && config.objects.is_empty() {
        problems.push("objects", "no objects are configured: nothing to sync");
    }
    // Last, so a key its section already refused is not reported twice.
    super::bounds::check(config, problems);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HUBSYNC_DATABASE_URL" => Some("postgres://u:p@localhost/db".into()),
            _ => None,
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load_str(text, Need::Postgres, &env) {
            Ok(_) => vec![],
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = load_str("", Need::Postgres, &env).unwrap();
        assert_eq!(c.queue.batch_size, 100);
    }

    #[test]
    fn every_structural_problem_is_reported_with_its_path() {
        let text =
            "queue:\n  workerz: 3\n  lease: soon\n  batch_size: many\nlogging:\n  stdout: maybe\n";
        let p = problems(text);
        let mut paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        paths.sort();
        let want = [
            "logging.stdout",
            "queue.batch_size",
            "queue.lease",
            "queue.workerz",
        ];
        assert_eq!(paths, want, "{p:?}");
        let workerz = p.iter().find(|p| p.path == "queue.workerz").unwrap();
        assert!(
            workerz.message.contains("unknown field"),
            "{}",
            workerz.message
        );
        assert_eq!(workerz.location, Some((2, 3)));
        let stdout = p.iter().find(|p| p.path == "logging.stdout").unwrap();
        assert_eq!(stdout.location, Some((6, 3)));
    }

    #[test]
    fn locates_keys_in_maps_and_sequences() {
        let text =
            "a:\n  b: 1\n  # note\n  list:\n    - x: 1\n      y: 2\n    - x: 3\n      y: 4\nc: 2\n";
        let seg = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(locate(text, &seg(&["a", "b"])), Some((2, 3)));
        assert_eq!(locate(text, &seg(&["a", "list", "[1]", "y"])), Some((8, 7)));
        assert_eq!(locate(text, &seg(&["a", "list", "[0]", "x"])), Some((5, 7)));
        assert_eq!(locate(text, &seg(&["c"])), Some((9, 1)));
        assert_eq!(locate(text, &seg(&["a", "zzz"])), None);
    }

    #[test]
    fn syntax_error_has_a_location() {
        let p = problems("queue: [\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].location.is_some());
    }

    #[test]
    fn missing_secret_is_named_without_values() {
        let err = load_str("", Need::Postgres, &|_| None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("postgres.url") && text.contains(ENV_DATABASE_URL),
            "{text}"
        );
    }

    #[test]
    fn urls_and_tokens_run_cannot_use_are_refused_without_their_values() {
        let env = |name: &str| match name {
            "HUBSYNC_DATABASE_URL" => {
                Some("postgres://u:hunter2@localhost/db?sslmode=bogus".to_string())
            }
            "HUBSYNC_HUBSPOT_TOKEN" => Some("pat-na1-hunter2\nX".to_string()),
            _ => None,
        };
        let err = load_str("", Need::Postgres, &env).unwrap_err();
        let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["postgres.url", "hubspot.token"]);
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("${HUBSYNC_HUBSPOT_TOKEN}"), "{text}");
    }

    #[test]
    fn a_value_from_the_environment_is_named_not_shown() {
        let env = |name: &str| match name {
            "HUBSYNC_DATABASE_URL" => Some("postgres://u:p@localhost/db".to_string()),
            "SQL_SERVER" => Some("server=tcp:db,1433;user=u;password=hunter2".to_string()),
            _ => None,
        };
        let text = "sql_server: ${SQL_SERVER}\nqueue:\n  lease: ${SQL_SERVER}\n";
        let err = load_str(text, Need::Postgres, &env).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["sql_server", "queue.lease"], "{shown}");
        for p in err.problems() {
            assert!(p.message.contains("${SQL_SERVER}"), "{p}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let text = "queue: ".to_string() + &"[".repeat(100_000);
        let start = std::time::Instant::now();
        let p = problems(&text);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("nested"), "{}", p[0].message);
    }

    #[test]
    fn the_api_token_is_checked_without_showing_it() {
        let err =
            load_str("service:\n  api_token: tiny-secret\n", Need::Postgres, &env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("service.api_token: too short"), "{text}");
        assert!(!text.contains("tiny-secret"), "{text}");
        let from_env = |name: &str| match name {
            "HUBSYNC_API_TOKEN" => Some("0123456789abcdef-from-env".to_string()),
            other => env(other),
        };
        let config = load_str(
            "service:\n  api_token: tiny-secret\n",
            Need::Postgres,
            &from_env,
        )
        .unwrap();
        let token = config.service.api_token.unwrap();
        assert_eq!(token.expose_secret(), "0123456789abcdef-from-env");
    }

    #[test]
    fn bad_url_does_not_echo_the_secret() {
        let err = load_str(
            "postgres:\n  url: 'mysql://u:hunter2@x/db'\n",
            Need::Postgres,
            &|_| None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("postgres.url"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
