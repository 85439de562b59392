//! Loading: YAML text → interpolated value → typed `Config`, collecting every problem.
//!
//! This is the one place that uses `serde_yaml` (deprecated upstream): replacing it touches only
//! this file and `interpolate.rs`.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde_yaml::Value;

use super::interpolate::{interpolate, join};
use super::{
    Config, ConfigError, ENV_DATABASE_URL, ENV_HUBSPOT_TOKEN, ENV_SQL_SERVER, Problem, Problems,
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
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, need, &|name| std::env::var(name).ok())
}

/// Checks configuration text; `env` looks up environment variables (tests pass their own).
pub fn load_str(
    text: &str,
    need: Need,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            problems.push_problem(problem_from_yaml("", &e));
            return Err(ConfigError::Invalid(problems.into_vec()));
        }
    };
    interpolate(&mut value, "", env, &mut problems);

    let config = deserialize_all(text, value, &mut problems);
    let Some(mut config) = config else {
        return Err(ConfigError::Invalid(problems.into_vec()));
    };
    apply_secret_overrides(&mut config, env);
    check(&config, need, &mut problems);
    problems.into_result(config)
}

/// Deserializes, and on failure removes the offending node and tries again, so that every
/// structural problem (unknown key, wrong type, bad duration) is reported, not just the first.
fn deserialize_all(text: &str, mut value: Value, problems: &mut Problems) -> Option<Config> {
    // serde_yaml reports line and column only when it reads the text itself.
    let first_location = serde_yaml::from_str::<Config>(text).err().and_then(|e| {
        let loc = e.location()?;
        Some((loc.line(), loc.column()))
    });
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..100 {
        match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            Ok(config) => {
                return if removed.is_empty() {
                    Some(config)
                } else {
                    None
                };
            }
            Err(err) => {
                let segments = segments(err.path());
                let message = err.inner().to_string();
                let message = strip_location(&message);
                // A required field we removed ourselves is already reported.
                if let Some(field) = quoted_after(&message, "missing field `") {
                    let full = join(&segments.join("."), &field);
                    if removed.contains(&full) {
                        return None;
                    }
                }
                let mut target = segments.clone();
                if let Some(field) = quoted_after(&message, "unknown field `") {
                    target.push(field);
                }
                let path = render_path(&target);
                let location = if removed.is_empty() {
                    first_location
                } else {
                    None
                };
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
        if let Value::Sequence(items) = node {
            if index < items.len() {
                items.remove(index);
                return true;
            }
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

fn apply_secret_overrides(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) {
    let secret = |name: &str| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(SecretString::from)
    };
    if let Some(v) = secret(ENV_DATABASE_URL) {
        config.postgres.url = Some(v);
    }
    if let Some(v) = secret(ENV_HUBSPOT_TOKEN) {
        config.hubspot.token = Some(v);
    }
    if let Some(v) = secret(ENV_SQL_SERVER) {
        config.sql_server.connection = Some(v);
    }
}

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
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {}
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
    if config.postgres.max_connections == 0 {
        problems.push("postgres.max_connections", "must be at least 1");
    }

    let q = &config.queue;
    if q.workers == 0 {
        problems.push("queue.workers", "must be at least 1");
    }
    if !(1..=100).contains(&q.batch_size) {
        problems.push(
            "queue.batch_size",
            "must be between 1 and 100 (HubSpot's batch limit)",
        );
    }
    if q.max_attempts < 1 {
        problems.push("queue.max_attempts", "must be at least 1");
    }
    if q.max_rescues < 1 {
        problems.push("queue.max_rescues", "must be at least 1");
    }
    if q.lease.as_secs() < 5 {
        problems.push("queue.lease", "must be at least 5s");
    }
    if q.retry_initial > q.retry_max {
        problems.push("queue.retry_initial", "must not exceed queue.retry_max");
    }
    if q.prune_batch < 1 {
        problems.push("queue.prune_batch", "must be at least 1");
    }

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.logging.level) {
        problems.push("logging.level", format!("not a valid log filter ({e})"));
    }
    if config.logging.retention_days == 0 {
        problems.push("logging.retention_days", "must be at least 1");
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
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "queue.workerz",
                "queue.lease",
                "queue.batch_size",
                "logging.stdout"
            ],
            "{p:?}"
        );
        assert!(p[0].message.contains("unknown field"), "{}", p[0].message);
        assert_eq!(p[0].location, Some((2, 3)));
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
