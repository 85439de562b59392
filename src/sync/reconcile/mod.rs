//! Reconciliation (`hubsync reconcile`, reconcile jobs): both sides read page by page and
//! compared with the record links, so that drift the pollers cannot see (a missed change, a
//! contact deleted by hand, a lost link) is found and its fix queued. This module holds what a
//! finding is and how one record is classified (pure); `store` the runs and findings tables,
//! `run` the pass over both sides.

pub mod run;
pub mod store;

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::diff::{self, Values};
use super::links::Link;
use crate::hubspot::types::Record;
use crate::mapping::{FieldInfo, Mapped};

pub use run::{Progress, Reconciler, Summary};

/// What a finding is. The first six are drift; `LeftByPolicy` is a difference the object's
/// policies keep on purpose. While a run is under way, `Unlinked` is a member without a link
/// (it ends as `MissingInHubspot` or `UnlinkedMatchable`) and `MissingRecord` a link whose
/// record HubSpot's list did not show (asked of HubSpot in batches, it ends as `OrphanLink`,
/// `LeftByPolicy` or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MissingInHubspot,
    UnlinkedMatchable,
    SqlDrift,
    HubspotDrift,
    OrphanLink,
    OrphanContact,
    LeftByPolicy,
    Unlinked,
    MissingRecord,
}

impl Kind {
    /// The kinds of drift, in the order reports list them.
    pub const DRIFT: [Kind; 6] = [
        Kind::MissingInHubspot,
        Kind::UnlinkedMatchable,
        Kind::SqlDrift,
        Kind::HubspotDrift,
        Kind::OrphanLink,
        Kind::OrphanContact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingInHubspot => "missing_in_hubspot",
            Kind::UnlinkedMatchable => "unlinked_matchable",
            Kind::SqlDrift => "sql_drift",
            Kind::HubspotDrift => "hubspot_drift",
            Kind::OrphanLink => "orphan_link",
            Kind::OrphanContact => "orphan_contact",
            Kind::LeftByPolicy => "left_by_policy",
            Kind::Unlinked => "unlinked",
            Kind::MissingRecord => "missing_record",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::DRIFT
            .into_iter()
            .chain([Kind::LeftByPolicy, Kind::Unlinked, Kind::MissingRecord])
            .find(|k| k.as_str() == s)
    }

    /// What the kind means, for reports.
    pub fn meaning(self) -> &'static str {
        match self {
            Kind::MissingInHubspot => "SQL Server member with no HubSpot record",
            Kind::UnlinkedMatchable => "member and HubSpot record not linked, but matching",
            Kind::SqlDrift => "SQL Server value changed without reaching HubSpot",
            Kind::HubspotDrift => "HubSpot value changed without reaching SQL Server",
            Kind::OrphanLink => "link to a record gone from one side",
            Kind::OrphanContact => "HubSpot record with no member",
            Kind::LeftByPolicy => "difference the object's policies keep",
            Kind::Unlinked => "member with no link (run under way)",
            Kind::MissingRecord => "link whose record the list did not show (run under way)",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fix a finding gets: which queue items, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Fix {
    /// Queue the member's current SQL Server row for HubSpot.
    pub to_hubspot: bool,
    /// Queue the HubSpot record for SQL Server.
    pub to_sql: bool,
    /// Archive the HubSpot record (its SQL Server row is gone).
    pub archive_in_hubspot: bool,
    /// Apply `on_hubspot_archive` to the SQL Server row (the HubSpot record is archived).
    pub archive_to_sql: bool,
}

impl Fix {
    pub const NONE: Fix = Fix {
        to_hubspot: false,
        to_sql: false,
        archive_in_hubspot: false,
        archive_to_sql: false,
    };
    pub const TO_HUBSPOT: Fix = Fix {
        to_hubspot: true,
        ..Fix::NONE
    };
    pub const TO_SQL: Fix = Fix {
        to_sql: true,
        ..Fix::NONE
    };

    /// How `reconcile_findings.fix` and reports name it.
    pub fn name(self) -> String {
        let parts: Vec<&str> = [
            (self.to_hubspot, "to_hubspot"),
            (self.to_sql, "to_sql"),
            (self.archive_in_hubspot, "archive_in_hubspot"),
            (self.archive_to_sql, "archive_to_sql"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("+")
        }
    }
}

/// One record a run found out of step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub sql_key: Option<String>,
    pub hubspot_id: Option<String>,
    /// Names of the fields that differ (drift kinds), never their values.
    pub fields: Vec<String>,
    pub fix: Fix,
    /// Snapshot values to set before the fix is queued: a field only SQL Server writes that
    /// was changed in HubSpot is recorded as HubSpot has it, so the member's row is sent again.
    pub rebase: Values,
    /// An unlinked member's salted match value (see [`match_hash`]).
    pub match_hash: Option<Vec<u8>>,
}

impl Finding {
    pub(crate) fn new(kind: Kind, sql_key: Option<&str>, hubspot_id: Option<&str>) -> Self {
        Finding {
            kind,
            sql_key: sql_key.map(str::to_string),
            hubspot_id: hubspot_id.map(str::to_string),
            fields: Vec::new(),
            fix: Fix::NONE,
            rebase: Values::new(),
            match_hash: None,
        }
    }
}

/// A match value as a run keeps it while pairing unlinked members with unlinked HubSpot
/// records: hashed with the run's id, trimmed and lowercased (HubSpot lowercases emails).
pub fn match_hash(run_id: i64, value: &str) -> Option<Vec<u8>> {
    let value = value.trim().to_lowercase();
    if value.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(run_id.to_be_bytes());
    h.update(value.as_bytes());
    Some(h.finalize().to_vec())
}

/// Why a record is left out of the comparison: its change is still on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Compare it.
    Open,
    /// Changed after the poller's position when the run started: the poller queues it.
    NotPolledYet,
    /// The queue holds an item for it (pending, running, or refused at this version).
    Queued,
    /// HubSpot erased the member's contact (an ERASE in its history): never sent again.
    Erased,
}

/// A SQL Server row of a member, mapped (`mapped`), against its link: `Unlinked` when it has
/// none, `SqlDrift` naming the fields whose value differs from the snapshot, nothing when in
/// step. Fields not mapped towards HubSpot are not compared here (HubSpot's side speaks for
/// them). Pure.
pub fn classify_sql(
    run_id: i64,
    key: &str,
    mapped: &Mapped,
    link: Option<&Link>,
    match_property: &str,
) -> Option<Finding> {
    match link {
        Some(link) if link.hubspot_id.is_some() => {
            let changed = diff::changes(&mapped.properties, &link.synced);
            if changed.is_empty() {
                return None;
            }
            Some(Finding {
                fields: changed.into_keys().collect(),
                fix: Fix::TO_HUBSPOT,
                ..Finding::new(Kind::SqlDrift, Some(key), link.hubspot_id.as_deref())
            })
        }
        _ => Some(Finding {
            fix: Fix::TO_HUBSPOT,
            match_hash: mapped
                .properties
                .get(match_property)
                .and_then(|v| v.as_deref())
                .and_then(|v| match_hash(run_id, v)),
            ..Finding::new(Kind::Unlinked, Some(key), None)
        }),
    }
}

/// The values of a HubSpot record for the mapped fields (`None` for absent or empty).
pub fn record_values(fields: &[FieldInfo], record: &Record) -> Values {
    fields
        .iter()
        .map(|f| {
            (
                f.hubspot.clone(),
                record.property(&f.hubspot).map(str::to_string),
            )
        })
        .collect()
}

/// A linked HubSpot record against its link's snapshot: `HubspotDrift` naming the fields that
/// differ. A field HubSpot may write to SQL Server is fixed by queueing the record for SQL
/// Server; one only SQL Server writes gets its snapshot set to HubSpot's value and the member's
/// row queued for HubSpot, so SQL Server's value is sent back. Pure.
pub fn classify_hubspot(fields: &[FieldInfo], record: &Record, link: &Link) -> Option<Finding> {
    let current = record_values(fields, record);
    let changed = diff::changes(&current, &link.synced);
    if changed.is_empty() {
        return None;
    }
    let mut finding = Finding::new(Kind::HubspotDrift, Some(&link.sql_key), Some(&record.id));
    for (name, value) in changed {
        let to_sql = fields
            .iter()
            .any(|f| f.hubspot == name && f.direction.to_sql());
        if to_sql {
            finding.fix.to_sql = true;
        } else {
            finding.fix.to_hubspot = true;
            finding.rebase.insert(name.clone(), value);
        }
        finding.fields.push(name);
    }
    Some(finding)
}

/// A link whose HubSpot record the list does not show. `archived`: HubSpot holds the record
/// archived; `sql_row`: whether the member's row is still there and not deleted;
/// `archive_settled`: the queue already applied an archive for this record; `archive_policy`:
/// whether `on_hubspot_archive` does anything to SQL Server. Pure.
pub fn classify_missing_record(
    link: &Link,
    archived: bool,
    sql_row: bool,
    archive_settled: bool,
    archive_policy: bool,
) -> Option<Finding> {
    let id = link.hubspot_id.as_deref();
    let key = Some(link.sql_key.as_str());
    if archived {
        // Archived in HubSpot while the row lives on: HubSpot's archive did not reach SQL Server.
        if !sql_row || archive_settled {
            return None;
        }
        return Some(if archive_policy {
            Finding {
                fix: Fix {
                    archive_to_sql: true,
                    ..Fix::NONE
                },
                ..Finding::new(Kind::OrphanLink, key, id)
            }
        } else {
            Finding::new(Kind::LeftByPolicy, key, id)
        });
    }
    // Merged away or erased: the member's row is sent again as if never synced (its snapshot
    // emptied, so the send reaches HubSpot), and follows the merge or the erasure policy.
    sql_row.then(|| Finding {
        fix: Fix::TO_HUBSPOT,
        rebase: link.synced.keys().map(|k| (k.clone(), None)).collect(),
        ..Finding::new(Kind::OrphanLink, key, id)
    })
}

/// A link whose SQL Server row is gone: its HubSpot record is archived, as when the row is
/// deleted. Pure.
pub fn classify_missing_row(link: &Link) -> Option<Finding> {
    link.hubspot_id.as_ref()?;
    Some(Finding {
        fix: Fix {
            archive_in_hubspot: true,
            ..Fix::NONE
        },
        ..Finding::new(
            Kind::OrphanLink,
            Some(&link.sql_key),
            link.hubspot_id.as_deref(),
        )
    })
}

/// A HubSpot record no link holds and no unlinked member matches: queued for SQL Server when
/// `on_new_hubspot_record` inserts, else kept by policy. Pure.
pub fn classify_unlinked_record(record: &Record, inserts: bool) -> Finding {
    if inserts {
        Finding {
            fix: Fix::TO_SQL,
            ..Finding::new(Kind::OrphanContact, None, Some(&record.id))
        }
    } else {
        Finding::new(Kind::LeftByPolicy, None, Some(&record.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ConflictPolicy, Direction as FieldDirection};

    use crate::sync::diff::values;

    fn link(key: &str, id: Option<&str>, synced: Values) -> Link {
        Link {
            sql_key: key.into(),
            hubspot_id: id.map(str::to_string),
            synced,
            sql_version: Some(1),
            hubspot_version: Some(1),
        }
    }

    fn field(name: &str, direction: FieldDirection) -> FieldInfo {
        FieldInfo {
            sql: name.into(),
            hubspot: name.into(),
            direction,
            conflict_policy: ConflictPolicy::NewestWins,
        }
    }

    fn record(id: &str, props: &[(&str, Option<&str>)]) -> Record {
        Record {
            id: id.into(),
            properties: values(props),
            ..Record::default()
        }
    }

    #[test]
    fn a_row_in_step_is_no_finding_and_a_changed_one_names_its_fields() {
        let synced = values(&[("email", Some("a@x.cr")), ("phone", Some("+50688887777"))]);
        let l = link("7", Some("101"), synced.clone());
        let mapped = Mapped {
            properties: synced.clone(),
            ..Mapped::default()
        };
        assert_eq!(classify_sql(1, "7", &mapped, Some(&l), "email"), None);
        let mut changed = mapped.clone();
        changed
            .properties
            .insert("phone".into(), Some("+50622223333".into()));
        let f = classify_sql(1, "7", &changed, Some(&l), "email").unwrap();
        assert_eq!(f.kind, Kind::SqlDrift);
        assert_eq!(f.fields, ["phone"]);
        assert_eq!(f.fix, Fix::TO_HUBSPOT);
        assert_eq!(f.hubspot_id.as_deref(), Some("101"));
    }

    #[test]
    fn an_unlinked_row_carries_a_salted_hash_of_its_match_value() {
        let mapped = Mapped {
            properties: values(&[("email", Some(" Ana@X.cr "))]),
            ..Mapped::default()
        };
        let f = classify_sql(9, "7", &mapped, None, "email").unwrap();
        assert_eq!(f.kind, Kind::Unlinked);
        assert_eq!(f.match_hash, match_hash(9, "ana@x.cr"));
        assert_ne!(f.match_hash, match_hash(10, "ana@x.cr"));
        let half = link("7", None, Values::new());
        assert_eq!(
            classify_sql(9, "7", &mapped, Some(&half), "email")
                .unwrap()
                .kind,
            Kind::Unlinked
        );
        assert_eq!(match_hash(1, "  "), None);
    }

    #[test]
    fn hubspot_drift_goes_back_to_sql_or_is_overwritten_by_the_owner() {
        let fields = [
            field("firstname", FieldDirection::Both),
            field("cedula", FieldDirection::ToHubspot),
            field("notes", FieldDirection::ToSql),
        ];
        let synced = values(&[
            ("firstname", Some("Ana")),
            ("cedula", Some("101110111")),
            ("notes", None),
        ]);
        let l = link("7", Some("101"), synced);
        let same = record(
            "101",
            &[("firstname", Some("Ana")), ("cedula", Some("101110111"))],
        );
        assert_eq!(classify_hubspot(&fields, &same, &l), None);
        let drift = record(
            "101",
            &[
                ("firstname", Some("Anabel")),
                ("cedula", Some("999")),
                ("notes", Some("")),
            ],
        );
        let f = classify_hubspot(&fields, &drift, &l).unwrap();
        assert_eq!(f.kind, Kind::HubspotDrift);
        assert_eq!(f.fields, ["cedula", "firstname"]);
        assert!(f.fix.to_sql && f.fix.to_hubspot);
        assert_eq!(f.rebase, values(&[("cedula", Some("999"))]));
        assert_eq!(f.fix.name(), "to_hubspot+to_sql");
    }

    #[test]
    fn a_missing_record_is_archived_to_sql_followed_or_left_by_policy() {
        let l = link("7", Some("101"), Values::new());
        let archived = classify_missing_record(&l, true, true, false, true).unwrap();
        assert_eq!(archived.kind, Kind::OrphanLink);
        assert!(archived.fix.archive_to_sql);
        assert_eq!(
            classify_missing_record(&l, true, true, false, false)
                .unwrap()
                .kind,
            Kind::LeftByPolicy
        );
        assert_eq!(classify_missing_record(&l, true, true, true, true), None);
        assert_eq!(classify_missing_record(&l, true, false, false, true), None);
        let synced = values(&[("email", Some("a@x.cr"))]);
        let sent = link("7", Some("101"), synced);
        let gone = classify_missing_record(&sent, false, true, false, true).unwrap();
        assert_eq!((gone.kind, gone.fix), (Kind::OrphanLink, Fix::TO_HUBSPOT));
        assert_eq!(gone.rebase, values(&[("email", None)]));
        assert_eq!(classify_missing_record(&l, false, false, false, true), None);
    }

    #[test]
    fn a_gone_row_archives_its_record_and_an_unlinked_record_follows_the_new_record_policy() {
        let f = classify_missing_row(&link("7", Some("101"), Values::new())).unwrap();
        assert!(f.fix.archive_in_hubspot && f.kind == Kind::OrphanLink);
        assert_eq!(classify_missing_row(&link("7", None, Values::new())), None);
        let r = record("55", &[]);
        assert_eq!(classify_unlinked_record(&r, true).kind, Kind::OrphanContact);
        assert_eq!(classify_unlinked_record(&r, true).fix, Fix::TO_SQL);
        let kept = classify_unlinked_record(&r, false);
        assert_eq!((kept.kind, kept.fix), (Kind::LeftByPolicy, Fix::NONE));
    }

    #[test]
    fn kinds_read_back_what_they_write() {
        for k in Kind::DRIFT
            .into_iter()
            .chain([Kind::LeftByPolicy, Kind::Unlinked])
        {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Fix::NONE.name(), "none");
    }
}
