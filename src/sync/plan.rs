//! Dry runs (`run --once --dry-run`, `backfill --dry-run`): what a sync would do — creates,
//! updates by property, SQL Server writes, rejections with reasons — decided by the same code the
//! workers run, printed one JSON line per record, and nothing written anywhere (no HubSpot or
//! SQL Server write, no queue item, link or cursor).

use std::collections::BTreeMap;
use std::io::Write;

use chrono::Utc;
use serde::Serialize;

use super::diff::{Side, Values};
use super::links::ConflictRecord;
use super::merges::Merge;
use crate::queue::{ClaimedItem, Direction, ItemError, NewItem};
use crate::telemetry::mask;

/// One record's planned operation, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedOp {
    pub object: String,
    pub direction: &'static str,
    /// SQL key (to_hubspot) or HubSpot id (to_sql).
    pub record_key: String,
    /// CREATE, UPDATE, LINK, SKIP, ARCHIVE, REJECT, RETRY (a read failed), WRITE, INSERT,
    /// CONFLICT, MERGE.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hubspot_id: Option<String>,
    /// What would be sent: every property of a create, the changed ones of an update, the
    /// HubSpot values a SQL Server write carries.
    #[serde(skip_serializing_if = "Values::is_empty")]
    pub properties: Values,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PlannedOp {
    pub fn new(object: &str, direction: Direction, record_key: &str, action: &'static str) -> Self {
        Self {
            object: object.into(),
            direction: direction.as_str(),
            record_key: record_key.into(),
            action,
            hubspot_id: None,
            properties: Values::new(),
            errors: Vec::new(),
            message: None,
        }
    }
}

impl PlannedOp {
    /// The operation as printed without `--unmask`: every value it would send hidden (`***`;
    /// an email keeps its first letter and domain, `a***@example.com`), personal data and
    /// quoted values in its errors and message masked, a SQL key masked like stored errors.
    /// Property names, actions, rules and HubSpot ids stay, so the plan still says what changes.
    pub fn masked(&self) -> PlannedOp {
        let stored = |s: &str| mask::stored(s).into_owned();
        let value = |v: &String| mask::hidden(v);
        PlannedOp {
            record_key: if self.direction == Direction::ToHubspot.as_str() {
                stored(&self.record_key)
            } else {
                self.record_key.clone()
            },
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(value)))
                .collect(),
            errors: self
                .errors
                .iter()
                .map(|e| ItemError {
                    message: stored(&e.message),
                    ..e.clone()
                })
                .collect(),
            message: self.message.as_deref().map(stored),
            ..self.clone()
        }
    }

    /// A field changed on both sides, and which side its policy lets win.
    pub fn conflict(object: &str, direction: Direction, c: &ConflictRecord) -> Self {
        let winner = match c.conflict.winner {
            Side::Sql => "SQL Server",
            Side::Hubspot => "HubSpot",
        };
        PlannedOp {
            hubspot_id: c.hubspot_id.clone(),
            message: Some(format!(
                "{} changed on both sides; {winner} wins by {}",
                c.conflict.field,
                c.conflict.policy.as_str()
            )),
            ..PlannedOp::new(object, direction, &c.sql_key, "CONFLICT")
        }
    }

    /// A contact merged in HubSpot whose record link follows the survivor.
    pub fn merge(object: &str, direction: Direction, m: &Merge) -> Self {
        let record_key = match direction {
            Direction::ToHubspot => &m.sql_key,
            Direction::ToSql => &m.to,
        };
        PlannedOp {
            hubspot_id: Some(m.to.clone()),
            message: Some(format!(
                "HubSpot merged contact {} into {}: the link of record {} follows",
                m.from, m.to, m.sql_key
            )),
            ..PlannedOp::new(object, direction, record_key, "MERGE")
        }
    }
}

/// Prints planned operations and counts them by object, direction and action. Values are
/// masked (see [`PlannedOp::masked`]) unless the report is [`unmasked`](Report::unmasked).
#[derive(Debug, Default)]
pub struct Report {
    counts: BTreeMap<(String, &'static str, &'static str), u64>,
    unmask: bool,
}

impl Report {
    /// A report that prints values as they are (`--unmask`).
    pub fn unmasked() -> Self {
        Self {
            unmask: true,
            ..Self::default()
        }
    }

    /// Prints one operation as a JSON line.
    pub fn print(&mut self, op: &PlannedOp, out: &mut impl Write) -> std::io::Result<()> {
        *self
            .counts
            .entry((op.object.clone(), op.direction, op.action))
            .or_default() += 1;
        if self.unmask {
            serde_json::to_writer(&mut *out, op)?;
        } else {
            serde_json::to_writer(&mut *out, &op.masked())?;
        }
        writeln!(out)
    }

    /// How many operations of `action` were planned (all objects and directions).
    pub fn count(&self, action: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((_, _, a), _)| *a == action)
            .map(|(_, n)| n)
            .sum()
    }

    /// Planned operations by action (all objects and directions).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for ((_, _, action), n) in &self.counts {
            *counts.entry(*action).or_default() += n;
        }
        counts
    }

    /// One line per object and direction: `contacts to_hubspot: 4750 CREATE, 250 REJECT`.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: BTreeMap<(String, &str), Vec<String>> = BTreeMap::new();
        for ((object, direction, action), n) in &self.counts {
            lines
                .entry((object.clone(), direction))
                .or_default()
                .push(format!("{n} {action}"));
        }
        lines
            .into_iter()
            .map(|((object, direction), parts)| {
                format!("{object} {direction}: {}", parts.join(", "))
            })
            .collect()
    }
}

/// Stand-ins for queue items, so records read during a dry run go through the workers' own
/// planning code without ever being stored. Ids are positions (negative: never a real item).
pub fn dry_items(object: &str, direction: Direction, items: Vec<NewItem>) -> Vec<ClaimedItem> {
    let now = Utc::now();
    items
        .into_iter()
        .zip(1i64..)
        .map(|(item, n)| ClaimedItem {
            id: -n,
            object: object.into(),
            direction,
            record_key: item.record_key,
            operation: item.operation,
            payload: item.payload,
            source_version: item.source_version,
            attempts: 0,
            rescues: 0,
            hubspot_id: None,
            batch_id: "dry-run".into(),
            created_at: now,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Operation;

    #[test]
    fn report_masks_values_unless_unmasked() {
        let mut op = PlannedOp::new("contacts", Direction::ToHubspot, "112345678", "UPDATE");
        op.hubspot_id = Some("512".into());
        op.properties
            .insert("email".into(), Some("ana.rojas@example.com".into()));
        op.properties.insert("firstname".into(), Some("Ana".into()));
        op.properties.insert("telefono_oficina".into(), None);
        op.errors.push(ItemError {
            field: Some("lastname".into()),
            rule: Some("text".into()),
            ..ItemError::new("validation", "\"Rojas\" for 112345678")
        });
        op.message = Some("ana.rojas@example.com changed".into());
        let printed = |mut report: Report| {
            let mut out = Vec::new();
            report.print(&op, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let masked = printed(Report::default());
        for value in ["ana.rojas", "Ana\"", "Rojas", "112345678"] {
            assert!(!masked.contains(value), "{value} in {masked}");
        }
        let line: serde_json::Value = serde_json::from_str(&masked).unwrap();
        assert_eq!(line["properties"]["email"], "a***@example.com");
        assert_eq!(line["properties"]["firstname"], "***");
        assert_eq!(
            line["properties"]["telefono_oficina"],
            serde_json::Value::Null
        );
        assert_eq!(line["hubspot_id"], "512");
        assert_eq!(line["errors"][0]["field"], "lastname");
        assert_eq!(line["errors"][0]["rule"], "text");
        assert_eq!(line["action"], "UPDATE");
        let unmasked = printed(Report::unmasked());
        assert_eq!(
            unmasked,
            format!("{}\n", serde_json::to_string(&op).unwrap())
        );
        // A HubSpot id as the key of a to_sql operation is not personal data.
        let to_sql = PlannedOp::new("contacts", Direction::ToSql, "123456789012", "WRITE");
        assert_eq!(to_sql.masked().record_key, "123456789012");
    }

    #[test]
    fn report_prints_json_lines_and_counts_by_action() {
        let mut report = Report::unmasked();
        let mut out = Vec::new();
        let mut create = PlannedOp::new("contacts", Direction::ToHubspot, "7", "CREATE");
        create
            .properties
            .insert("email".into(), Some("a@b.cr".into()));
        report.print(&create, &mut out).unwrap();
        let reject = PlannedOp {
            errors: vec![ItemError::new("validation", "bad")],
            ..PlannedOp::new("contacts", Direction::ToHubspot, "8", "REJECT")
        };
        report.print(&reject, &mut out).unwrap();
        report.print(&reject, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["action"], "CREATE");
        assert_eq!(first["properties"]["email"], "a@b.cr");
        assert!(first.get("errors").is_none());
        assert_eq!(text.lines().count(), 3);
        assert_eq!((report.count("CREATE"), report.count("REJECT")), (1, 2));
        assert_eq!(
            report.summary(),
            vec!["contacts to_hubspot: 1 CREATE, 2 REJECT"]
        );
    }

    #[test]
    fn dry_items_are_never_real_ids() {
        let items = dry_items(
            "contacts",
            Direction::ToSql,
            vec![NewItem {
                record_key: "101".into(),
                operation: Operation::Upsert,
                payload: serde_json::json!({}),
                source_version: 5,
            }],
        );
        assert_eq!(items[0].id, -1);
        assert_eq!(items[0].direction, Direction::ToSql);
        assert_eq!(items[0].source_version, 5);
    }
}
