//! `${VAR}` and `${VAR:-default}` interpolation of string values from the environment.

use serde_yaml::Value;

use super::Problems;
use super::scrub::Substituted;

/// Replaces `${VAR}` in every string scalar of `value`; `$${` stays a literal `${`.
/// A variable that is not set (and has no default) is a problem at the value's key path.
/// Every value taken from the environment is noted in `substituted`, so that no problem
/// message shows it.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Substituted,
    problems: &mut Problems,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, path, env, substituted) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(path, message),
        },
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                interpolate(v, &join(path, &key), env, substituted, problems);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env, substituted, problems);
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, env, substituted, problems),
        _ => {}
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn expand(
    input: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Substituted,
) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated `${` in value".to_string())?;
            let spec = &body[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{spec}}}` is not a valid variable reference"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => {
                    substituted.note(path, name, &v);
                    out.push_str(&v);
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        super::expand(input, "x", env, &mut Substituted::default())
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(expand("a ${HOST} b", &env).unwrap(), "a db.local b");
        assert_eq!(expand("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("cost $5 $${HOST}", &env).unwrap(), "cost $5 ${HOST}");
    }

    #[test]
    fn unset_variable_is_named() {
        let err = expand("${SQL_SERVER}", &env).unwrap_err();
        assert!(err.contains("SQL_SERVER"), "{err}");
        assert!(expand("${HOST", &env).is_err());
        assert!(expand("${BAD-NAME}", &env).is_err());
    }

    #[test]
    fn walks_nested_values_with_paths() {
        let mut v: Value =
            serde_yaml::from_str("a:\n  b: [\"${HOST}\", \"${MISSING}\"]\n").unwrap();
        let mut problems = Problems::default();
        let mut substituted = Substituted::default();
        interpolate(&mut v, "", &env, &mut substituted, &mut problems);
        assert_eq!(v["a"]["b"][0].as_str(), Some("db.local"));
        assert_eq!(substituted.scrub("at db.local:1"), "at ${HOST}:1");
        let p = problems.into_vec();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "a.b[1]");
    }
}
