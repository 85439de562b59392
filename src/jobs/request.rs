//! A job request (`POST /api/v1/jobs`, `hubsync jobs start`, a schedule) checked field by field:
//! every bad field is named with why, none is echoed back in full.

use serde::Serialize;
use serde_json::{Map, Value};

use super::JobKind;
use crate::queue::Direction;

/// Members one resync job may name.
pub const MAX_MEMBERS: usize = 1000;
/// Longest member key accepted.
const MAX_KEY_LEN: usize = 128;
const FIELDS: [&str; 5] = ["kind", "object", "direction", "members", "dry_run"];

/// A checked request for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub kind: JobKind,
    pub object: String,
    pub direction: Direction,
    /// resync: the members' keys, sorted and without repeats.
    pub members: Vec<String>,
    pub dry_run: bool,
}

/// One bad field of a request and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a JSON request body against the configured `objects`; every bad field is reported.
pub fn parse_request(body: &Value, objects: &[&str]) -> Result<JobRequest, Vec<FieldError>> {
    let Some(map) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors: Vec<FieldError> = map
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                shown_key(k),
                format!("unknown field (fields: {})", FIELDS.join(", ")),
            )
        })
        .collect();
    let kind = field_kind(map, &mut errors);
    let object = field_object(map, objects, &mut errors);
    let direction = match map.get("direction") {
        None | Some(Value::Null) => Some(Direction::ToHubspot),
        Some(Value::String(s)) => match s.parse::<Direction>() {
            Ok(d) => Some(d),
            Err(_) => {
                errors.push(FieldError::new("direction", "must be to_hubspot or to_sql"));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("direction", "must be to_hubspot or to_sql"));
            None
        }
    };
    let dry_run = match map.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new("dry_run", "must be true or false"));
            false
        }
    };
    let members = field_members(map, &mut errors);
    if let Some(kind) = kind {
        check_for_kind(kind, direction, &members, dry_run, &mut errors);
    }
    match (kind, object, direction) {
        (Some(kind), Some(object), Some(direction)) if errors.is_empty() => Ok(JobRequest {
            kind,
            object,
            direction,
            members: members.unwrap_or_default(),
            dry_run,
        }),
        _ => Err(errors),
    }
}

/// A key of the request as an error may show it: at most 40 characters, printable.
fn shown_key(key: &str) -> String {
    let clean: String = key.chars().filter(|c| !c.is_control()).take(40).collect();
    clean
}

fn field_kind(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<JobKind> {
    let names = JobKind::ALL.map(JobKind::as_str).join(", ");
    match map.get("kind") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("kind", format!("required ({names})")));
            None
        }
        Some(Value::String(s)) => match JobKind::parse(s) {
            Some(kind) => Some(kind),
            None => {
                errors.push(FieldError::new("kind", format!("must be one of {names}")));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("kind", format!("must be one of {names}")));
            None
        }
    }
}

fn field_object(
    map: &Map<String, Value>,
    objects: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let known = objects.join(", ");
    match map.get("object") {
        Some(Value::String(s)) if objects.contains(&s.as_str()) => Some(s.clone()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(
                "object",
                format!("required (objects: {known})"),
            ));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(
                "object",
                format!("no such object in the configuration (objects: {known})"),
            ));
            None
        }
    }
}

fn field_members(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let list = match map.get("members") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.push(FieldError::new("members", "must be a list of member keys"));
            return Some(vec![]);
        }
    };
    if list.len() > MAX_MEMBERS {
        errors.push(FieldError::new(
            "members",
            format!("at most {MAX_MEMBERS} members per job"),
        ));
        return Some(vec![]);
    }
    let mut keys = Vec::new();
    for (i, member) in list.iter().enumerate() {
        let key = match member {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            errors.push(FieldError::new(
                format!("members[{i}]"),
                format!("must be a member key (1 to {MAX_KEY_LEN} printable characters)"),
            ));
        } else {
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    Some(keys)
}

/// What each kind allows: resync names members and queues for HubSpot; backfills and
/// reconciles have a dry run; only a resync has members.
fn check_for_kind(
    kind: JobKind,
    direction: Option<Direction>,
    members: &Option<Vec<String>>,
    dry_run: bool,
    errors: &mut Vec<FieldError>,
) {
    match kind {
        JobKind::Resync => {
            if members.is_none() {
                errors.push(FieldError::new(
                    "members",
                    "required for kind resync: the members' keys",
                ));
            } else if members.as_ref().is_some_and(|m| m.is_empty())
                && !errors.iter().any(|e| e.field.starts_with("members"))
            {
                errors.push(FieldError::new("members", "name at least one member"));
            }
            if direction == Some(Direction::ToSql) {
                errors.push(FieldError::new(
                    "direction",
                    "a resync queues SQL Server rows for HubSpot: only to_hubspot",
                ));
            }
            if dry_run {
                errors.push(FieldError::new(
                    "dry_run",
                    "only kinds backfill and reconcile have a dry run",
                ));
            }
        }
        JobKind::Backfill | JobKind::Reconcile => {
            if members.is_some() {
                errors.push(FieldError::new("members", "only kind resync names members"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OBJECTS: &[&str] = &["contacts"];

    fn fields(body: Value) -> Vec<String> {
        parse_request(&body, OBJECTS)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_backfill_takes_defaults() {
        let r = parse_request(&json!({"kind": "backfill", "object": "contacts"}), OBJECTS).unwrap();
        assert_eq!(r.kind, JobKind::Backfill);
        assert_eq!(r.direction, Direction::ToHubspot);
        assert!(!r.dry_run && r.members.is_empty());
        let r = parse_request(
            &json!({"kind": "backfill", "object": "contacts", "direction": "to_sql", "dry_run": true}),
            OBJECTS,
        )
        .unwrap();
        assert_eq!(r.direction, Direction::ToSql);
        assert!(r.dry_run);
    }

    #[test]
    fn a_resync_names_members_sorted_once_each() {
        let r = parse_request(
            &json!({"kind": "resync", "object": "contacts", "members": ["7", 3, " 7 "]}),
            OBJECTS,
        )
        .unwrap();
        assert_eq!(r.members, ["3", "7"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(
                json!({"kind": "nightly", "object": "cars", "direction": "up", "dry_run": "yes", "extra": 1})
            ),
            ["extra", "kind", "object", "direction", "dry_run"]
        );
        assert_eq!(fields(json!({})), ["kind", "object"]);
        assert_eq!(fields(json!([1])), ["body"]);
        assert_eq!(
            fields(json!({"kind": "resync", "object": "contacts"})),
            ["members"]
        );
        assert_eq!(
            fields(
                json!({"kind": "resync", "object": "contacts", "members": ["1", "", {}],
                "direction": "to_sql", "dry_run": true})
            ),
            ["members[1]", "members[2]", "direction", "dry_run"]
        );
        assert_eq!(
            fields(json!({"kind": "backfill", "object": "contacts", "members": ["1"]})),
            ["members"]
        );
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| i.to_string()).collect();
        assert_eq!(
            fields(json!({"kind": "resync", "object": "contacts", "members": many})),
            ["members"]
        );
    }

    #[test]
    fn a_reconcile_may_be_a_dry_run_and_names_no_members() {
        let r = parse_request(
            &json!({"kind": "reconcile", "object": "contacts", "dry_run": true}),
            OBJECTS,
        )
        .unwrap();
        assert_eq!((r.kind, r.dry_run), (JobKind::Reconcile, true));
        assert_eq!(
            fields(json!({"kind": "reconcile", "object": "contacts", "members": ["1"]})),
            ["members"]
        );
    }

    #[test]
    fn an_unknown_key_is_shown_short_and_printable() {
        let key = format!("a\u{1b}{}", "x".repeat(100));
        let f = fields(json!({key: 1, "kind": "backfill", "object": "contacts"}));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].len(), 40);
        assert!(!f[0].contains('\u{1b}'));
    }
}
