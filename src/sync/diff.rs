//! Diff and conflict resolution against the last synced snapshot (`record_links.synced`).
//! Pure: no I/O. Values are mapped HubSpot property values (`None` = empty).
//!
//! - A side's change is a field whose value differs from the snapshot; an unchanged record (or
//!   our own write coming back through the other side's poller) yields nothing: echo suppression.
//! - A field changed on both sides to different values is a conflict; the policy decides.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Property name → value.
pub type Values = BTreeMap<String, Option<String>>;

/// Which side's value wins a conflict (configured per object and per field).
pub use crate::mapping::ConflictPolicy;

impl ConflictPolicy {
    /// The name used in `config.yaml` and in `sync_conflicts.policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::NewestWins => "newest_wins",
            ConflictPolicy::SqlWins => "sql_wins",
            ConflictPolicy::HubspotWins => "hubspot_wins",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Sql,
    Hubspot,
}

/// A field changed on both sides since the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub field: String,
    pub sql_value: Option<String>,
    pub hubspot_value: Option<String>,
    pub synced_value: Option<String>,
    pub policy: ConflictPolicy,
    pub winner: Side,
    /// Why the winner won (stored as `sync_conflicts.decided_by`).
    pub decided_by: &'static str,
}

/// `Values` from (name, value) pairs, for tests.
#[cfg(test)]
pub fn values(pairs: &[(&str, Option<&str>)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

/// Fields of `current` whose value differs from `synced` (fields absent from `current` are not
/// considered: a side only speaks for the fields it maps).
pub fn changes(current: &Values, synced: &Values) -> Values {
    current
        .iter()
        .filter(|(k, v)| {
            synced
                .get(*k)
                .map(|s| norm(s) != norm(v))
                .unwrap_or(v.is_some())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The snapshot as a side's current values show it after hubsync's own unsettled writes to that
/// side: every field of `sent` (what hubsync wrote or is writing) that `current` holds is taken
/// as synced, so the write's echo is no change and no conflict. Fields `current` holds
/// differently stay as they were: someone else changed them. Pure.
pub fn recognise(synced: &Values, sent: &Values, current: &Values) -> Values {
    let mut base = synced.clone();
    for (field, value) in sent {
        if current.get(field).is_some_and(|c| norm(c) == norm(value)) {
            base.insert(field.clone(), value.clone());
        }
    }
    base
}

/// An empty string and no value are the same to HubSpot.
fn norm(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// What to write where after comparing both sides with the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Properties to send to HubSpot.
    pub to_hubspot: Values,
    /// Properties whose HubSpot value must be written to SQL Server.
    pub to_sql: Values,
    pub conflicts: Vec<Conflict>,
}

/// Times the two sides last modified the record, for `newest_wins`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Modified {
    pub sql: Option<DateTime<Utc>>,
    pub hubspot: Option<DateTime<Utc>>,
}

/// The conflict policy of a mapped HubSpot property (its own or the object's).
pub fn policy_of(mapper: &crate::mapping::Mapper, property: &str) -> ConflictPolicy {
    mapper
        .fields()
        .find(|f| f.hubspot == property)
        .map(|f| f.conflict_policy)
        .unwrap_or_default()
}

/// A HubSpot timestamp (`2026-11-23T10:00:00.123Z` or epoch milliseconds).
pub fn hubspot_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| value.parse().ok().and_then(DateTime::from_timestamp_millis))
}

/// Which side a policy lets win a conflict, and why (as `sync_conflicts.decided_by` says it).
/// `newest_wins` compares the two modification times; without SQL Server's (rowversion mode
/// and no `modified_column`) HubSpot's edit wins, without HubSpot's SQL Server's does, and the
/// reason says which time was missing.
pub fn decide(policy: ConflictPolicy, modified: Modified) -> (Side, &'static str) {
    match policy {
        ConflictPolicy::SqlWins => (Side::Sql, "policy sql_wins"),
        ConflictPolicy::HubspotWins => (Side::Hubspot, "policy hubspot_wins"),
        ConflictPolicy::NewestWins => match (modified.sql, modified.hubspot) {
            (Some(s), Some(h)) if h > s => (Side::Hubspot, "HubSpot's edit is newer"),
            (Some(_), Some(_)) => (Side::Sql, "SQL Server's edit is newer or as new"),
            (None, Some(_)) => (
                Side::Hubspot,
                "no SQL Server modification time: HubSpot's edit wins",
            ),
            (_, None) => (
                Side::Sql,
                "no HubSpot modification time: SQL Server's edit wins",
            ),
        },
    }
}

/// Three-way merge of one record: SQL-side values, HubSpot-side values, and the snapshot.
/// `policy_for` gives each field's policy (a per-field override or the object's).
pub fn plan(
    sql: &Values,
    hubspot: &Values,
    synced: &Values,
    modified: Modified,
    policy_for: &dyn Fn(&str) -> ConflictPolicy,
) -> Plan {
    let sql_changes = changes(sql, synced);
    let hubspot_changes = changes(hubspot, synced);
    let mut out = Plan::default();
    for (field, sql_value) in &sql_changes {
        match hubspot_changes.get(field) {
            None => {
                out.to_hubspot.insert(field.clone(), sql_value.clone());
            }
            // Both changed to the same value: already agreed, nothing to write.
            Some(hs_value) if norm(hs_value) == norm(sql_value) => {}
            Some(hs_value) => {
                let policy = policy_for(field);
                let (winner, decided_by) = decide(policy, modified);
                match winner {
                    Side::Sql => out.to_hubspot.insert(field.clone(), sql_value.clone()),
                    Side::Hubspot => out.to_sql.insert(field.clone(), hs_value.clone()),
                };
                out.conflicts.push(Conflict {
                    field: field.clone(),
                    sql_value: sql_value.clone(),
                    hubspot_value: hs_value.clone(),
                    synced_value: synced.get(field).cloned().flatten(),
                    policy,
                    winner,
                    decided_by,
                });
            }
        }
    }
    for (field, hs_value) in &hubspot_changes {
        if !sql_changes.contains_key(field) {
            out.to_sql.insert(field.clone(), hs_value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, Option<&str>)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    fn t(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn only_changed_fields_are_sent_and_echoes_are_nothing() {
        let synced = v(&[("firstname", Some("Ana")), ("city", None)]);
        let sql = v(&[("firstname", Some("Ana")), ("city", Some("Escazú"))]);
        assert_eq!(changes(&sql, &synced), v(&[("city", Some("Escazú"))]));
        // Our own write coming back: equal to the snapshot, so no change.
        assert!(changes(&synced, &synced).is_empty());
        // Empty string and no value are the same.
        assert!(changes(&v(&[("city", Some(""))]), &synced).is_empty());
    }

    #[test]
    fn one_sided_changes_flow_to_the_other_side() {
        let synced = v(&[("a", Some("1")), ("b", Some("1"))]);
        let sql = v(&[("a", Some("2")), ("b", Some("1"))]);
        let hs = v(&[("a", Some("1")), ("b", Some("3"))]);
        let p = plan(&sql, &hs, &synced, Modified::default(), &|_| {
            ConflictPolicy::NewestWins
        });
        assert_eq!(p.to_hubspot, v(&[("a", Some("2"))]));
        assert_eq!(p.to_sql, v(&[("b", Some("3"))]));
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn both_sides_changed_is_a_conflict_the_policy_decides() {
        let synced = v(&[("phone", Some("+50622223333"))]);
        let sql = v(&[("phone", Some("+50688887777"))]);
        let hs = v(&[("phone", Some("+50611112222"))]);
        let newer_hs = Modified {
            sql: t("2026-11-01T10:00:00Z"),
            hubspot: t("2026-11-01T11:00:00Z"),
        };
        let p = plan(&sql, &hs, &synced, newer_hs, &|_| {
            ConflictPolicy::NewestWins
        });
        assert_eq!(p.to_sql, hs);
        assert!(p.to_hubspot.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].winner, Side::Hubspot);
        assert_eq!(p.conflicts[0].synced_value.as_deref(), Some("+50622223333"));

        let p = plan(&sql, &hs, &synced, newer_hs, &|_| ConflictPolicy::SqlWins);
        assert_eq!(p.to_hubspot, sql);
        assert_eq!(p.conflicts[0].winner, Side::Sql);

        // Unknown times go to SQL Server under newest_wins, and the conflict says why.
        let p = plan(&sql, &hs, &synced, Modified::default(), &|_| {
            ConflictPolicy::NewestWins
        });
        assert_eq!(p.conflicts[0].winner, Side::Sql);
        assert!(
            p.conflicts[0]
                .decided_by
                .contains("no HubSpot modification time")
        );
        // Without SQL Server's time HubSpot's edit wins, said on the conflict.
        let no_sql_time = Modified {
            sql: None,
            ..newer_hs
        };
        let p = plan(&sql, &hs, &synced, no_sql_time, &|_| {
            ConflictPolicy::NewestWins
        });
        assert_eq!(p.conflicts[0].winner, Side::Hubspot);
        assert!(
            p.conflicts[0]
                .decided_by
                .contains("no SQL Server modification time")
        );
    }

    #[test]
    fn hubsyncs_own_unsettled_writes_are_recognised_not_someone_elses_edits() {
        let synced = v(&[("firstname", Some("Ana")), ("lastname", Some("Mora"))]);
        let sent = v(&[("firstname", Some("Ana")), ("lastname", Some("Solís"))]);
        // The other side holds what hubsync sent: its echo is no change.
        let echo = v(&[("firstname", Some("Ana")), ("lastname", Some("Solís"))]);
        let base = recognise(&synced, &sent, &echo);
        assert!(changes(&echo, &base).is_empty());
        // Someone changed the field since: it stays a change against the old snapshot.
        let edited = v(&[("firstname", Some("Ana")), ("lastname", Some("Rojas"))]);
        let base = recognise(&synced, &sent, &edited);
        assert_eq!(base, synced);
        assert_eq!(changes(&edited, &base), v(&[("lastname", Some("Rojas"))]));
    }

    #[test]
    fn hubspot_times_in_both_spellings() {
        let t = t("2026-11-23T10:00:00.123Z");
        assert_eq!(hubspot_time("2026-11-23T10:00:00.123Z"), t);
        assert_eq!(hubspot_time("1795428000123"), t);
        assert_eq!(hubspot_time("yesterday"), None);
    }

    #[test]
    fn the_same_change_on_both_sides_is_no_conflict() {
        let synced = v(&[("email", Some("a@x.cr"))]);
        let both = v(&[("email", Some("b@x.cr"))]);
        let p = plan(&both, &both, &synced, Modified::default(), &|_| {
            ConflictPolicy::SqlWins
        });
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn per_field_policies_apply() {
        let synced = v(&[("a", Some("0")), ("b", Some("0"))]);
        let sql = v(&[("a", Some("s")), ("b", Some("s"))]);
        let hs = v(&[("a", Some("h")), ("b", Some("h"))]);
        let policy = |f: &str| {
            if f == "a" {
                ConflictPolicy::HubspotWins
            } else {
                ConflictPolicy::SqlWins
            }
        };
        let p = plan(&sql, &hs, &synced, Modified::default(), &policy);
        assert_eq!(p.to_sql, v(&[("a", Some("h"))]));
        assert_eq!(p.to_hubspot, v(&[("b", Some("s"))]));
    }
}
