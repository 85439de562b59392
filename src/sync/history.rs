//! Each member's sync history (`sync_history`): the entries a settled batch makes (built here
//! without I/O from its outcomes, conflicts and merges), written in the transaction that settles
//! it, and the timeline `hubsync history` reads. No values are kept: property names, ids, and
//! reasons with the values they quote masked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Row};

use super::diff::Side;
use super::links::ConflictRecord;
use super::merges::Merge;
use crate::queue::{ClaimedItem, Direction, ItemError, Outcome};
use crate::telemetry::mask;

/// One operation on a member, as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Entry {
    pub direction: Option<Direction>,
    pub operation: String,
    pub sql_key: Option<String>,
    pub hubspot_id: Option<String>,
    pub old_hubspot_id: Option<String>,
    pub item_id: Option<i64>,
    pub batch_id: Option<String>,
    /// HubSpot property names (never values).
    pub properties: Vec<String>,
    pub reasons: Option<Value>,
    pub message: Option<String>,
}

/// What a handler knows of one item beyond its outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Note {
    /// The properties sent or written (an update: only the changed ones).
    pub properties: Vec<String>,
    /// The operation to record instead of the outcome's (`INSERT` for a row a HubSpot record
    /// made).
    pub operation: Option<&'static str>,
    /// The member's SQL key, when the handler knows it (to_sql).
    pub sql_key: Option<String>,
}

/// Reasons as stored: kind, field, rule and the message with the values it quotes masked.
pub fn reasons(errors: &[ItemError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| {
                json!({
                    "kind": e.kind,
                    "field": e.field,
                    "rule": e.rule,
                    "message": mask::stored(&e.message),
                })
            })
            .collect(),
    )
}

/// The entry of one settled item: a done item's operation, a rejection with its reasons, or a
/// dead item's last failure (`died`: the settle ended it dead, a retry out of attempts too).
/// None for a retried or deferred item (nothing happened yet).
pub fn of_outcome(
    item: &ClaimedItem,
    outcome: &Outcome,
    note: Option<&Note>,
    died: bool,
) -> Option<Entry> {
    let (operation, hubspot_id, reasons) = match outcome {
        Outcome::Done {
            operation,
            hubspot_id,
        } => (
            note.and_then(|n| n.operation)
                .unwrap_or(operation)
                .to_string(),
            hubspot_id.clone(),
            None,
        ),
        Outcome::Reject(errors) => ("REJECT".to_string(), None, Some(self::reasons(errors))),
        Outcome::Dead(error) | Outcome::Retry(error) if died => (
            "DEAD".to_string(),
            None,
            Some(self::reasons(std::slice::from_ref(error))),
        ),
        Outcome::Dead(_) | Outcome::Retry(_) | Outcome::Defer { .. } => return None,
    };
    let (sql_key, hubspot_id) = match item.direction {
        Direction::ToHubspot => (
            Some(item.record_key.clone()),
            hubspot_id.or_else(|| item.hubspot_id.clone()),
        ),
        Direction::ToSql => (
            note.and_then(|n| n.sql_key.clone()),
            Some(item.record_key.clone()),
        ),
    };
    Some(Entry {
        direction: Some(item.direction),
        operation,
        sql_key,
        hubspot_id,
        item_id: Some(item.id),
        batch_id: Some(item.batch_id.clone()),
        properties: note.map(|n| n.properties.clone()).unwrap_or_default(),
        reasons,
        ..Entry::default()
    })
}

/// A field changed on both sides: its name, the policy and the winner (never the values).
pub fn of_conflict(c: &ConflictRecord, direction: Direction, batch_id: &str) -> Entry {
    Entry {
        direction: Some(direction),
        operation: "CONFLICT".into(),
        sql_key: Some(c.sql_key.clone()),
        hubspot_id: c.hubspot_id.clone(),
        item_id: c.item_id,
        batch_id: Some(batch_id.into()),
        properties: vec![c.conflict.field.clone()],
        reasons: Some(json!({
            "policy": c.conflict.policy.as_str(),
            "winner": match c.conflict.winner {
                Side::Sql => "sql",
                Side::Hubspot => "hubspot",
            },
            "decided_by": c.conflict.decided_by,
        })),
        ..Entry::default()
    }
}

/// A link that followed a contact merged in HubSpot.
pub fn of_merge(m: &Merge, direction: Direction, batch_id: &str) -> Entry {
    Entry {
        direction: Some(direction),
        operation: "MERGE".into(),
        sql_key: Some(m.sql_key.clone()),
        hubspot_id: Some(m.to.clone()),
        old_hubspot_id: Some(m.from.clone()),
        item_id: Some(m.item_id),
        batch_id: Some(batch_id.into()),
        message: Some("HubSpot merged the member's contact: its link follows the survivor".into()),
        ..Entry::default()
    }
}

/// Operations counted by name, as an ERASE row summarises the history it replaced:
/// `CREATE 1, UPDATE 2`.
pub fn summary(counts: &BTreeMap<String, i64>) -> String {
    counts
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INSERT_SQL: &str = r#"
INSERT INTO sync_history (object, direction, operation, sql_key, hubspot_id, old_hubspot_id,
                          item_id, batch_id, properties, reasons, message)
SELECT $1, h.direction, h.operation,
       coalesce(h.sql_key, (SELECT l.sql_key FROM record_links l
                            WHERE l.object = $1 AND l.hubspot_id = h.hubspot_id)),
       coalesce(h.hubspot_id, (SELECT l.hubspot_id FROM record_links l
                               WHERE l.object = $1 AND l.sql_key = h.sql_key)),
       h.old_hubspot_id, h.item_id, h.batch_id, h.properties, h.reasons, h.message
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
            $8::text[], $9::jsonb[], $10::jsonb[], $11::text[])
    WITH ORDINALITY
    AS h(direction, operation, sql_key, hubspot_id, old_hubspot_id, item_id, batch_id,
         properties, reasons, message, n)
ORDER BY h.n
"#;

/// Writes `entries` in one statement (on the caller's transaction). A missing SQL key or HubSpot
/// id is filled in from the member's record link.
pub async fn record(
    conn: &mut PgConnection,
    object: &str,
    entries: &[Entry],
) -> Result<u64, sqlx::Error> {
    if entries.is_empty() {
        return Ok(0);
    }
    let col =
        |f: fn(&Entry) -> Option<&str>| -> Vec<Option<&str>> { entries.iter().map(f).collect() };
    let directions = col(|e| e.direction.map(Direction::as_str));
    let operations = col(|e| Some(e.operation.as_str()));
    let sql_keys = col(|e| e.sql_key.as_deref());
    let hubspot_ids = col(|e| e.hubspot_id.as_deref());
    let old_ids = col(|e| e.old_hubspot_id.as_deref());
    let batch_ids = col(|e| e.batch_id.as_deref());
    let messages = col(|e| e.message.as_deref());
    let item_ids: Vec<Option<i64>> = entries.iter().map(|e| e.item_id).collect();
    let properties: Vec<Value> = entries.iter().map(|e| json!(e.properties)).collect();
    let reasons: Vec<Option<Value>> = entries.iter().map(|e| e.reasons.clone()).collect();
    let done = sqlx::query(INSERT_SQL)
        .bind(object)
        .bind(&directions)
        .bind(&operations)
        .bind(&sql_keys)
        .bind(&hubspot_ids)
        .bind(&old_ids)
        .bind(&item_ids)
        .bind(&batch_ids)
        .bind(&properties)
        .bind(&reasons)
        .bind(&messages)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Property names a table row lists; more are counted (`--json` has them all).
const SHOWN_PROPERTIES: usize = 6;

/// One row of a member's timeline: an entry and when it was settled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub entry: Entry,
}

impl Event {
    /// What the event says beyond its operation, on one line: the properties, the reasons or
    /// the message (masked like the logs).
    pub fn details(&self) -> String {
        let e = &self.entry;
        let mut parts = Vec::new();
        if let Some(old) = &e.old_hubspot_id {
            parts.push(format!("from contact {old}"));
        }
        match e.properties.len() {
            0 => {}
            n if n > SHOWN_PROPERTIES => parts.push(format!("{n} properties")),
            _ => parts.push(e.properties.join(", ")),
        }
        match &e.reasons {
            Some(Value::Array(reasons)) => {
                for r in reasons {
                    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-");
                    parts.push(format!(
                        "{}[{}]: {}",
                        text("field"),
                        r.get("rule")
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| text("kind")),
                        text("message")
                    ));
                }
            }
            Some(Value::Object(o)) if e.operation == "CONFLICT" => {
                let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("?");
                parts.push(format!("{} -> {} wins", text("policy"), text("winner")));
            }
            _ => {}
        }
        if let Some(m) = &e.message {
            parts.push(m.clone());
        }
        mask::stored(&parts.join("; ")).into_owned()
    }

    /// The event as `hubsync history` shows it: its member key and free text masked like the
    /// logs (ids, times and names of properties as they are).
    pub fn masked(mut self) -> Self {
        let m = |s: &str| mask::stored(s).into_owned();
        let e = &mut self.entry;
        e.sql_key = e.sql_key.as_deref().map(m);
        e.message = e.message.as_deref().map(m);
        if let Some(Value::Array(reasons)) = &mut e.reasons {
            for r in reasons {
                if let Some(Value::String(message)) = r.get_mut("message") {
                    *message = m(message);
                }
            }
        }
        self
    }
}

/// Every HubSpot id member `sql_key` is known by: its link's, and those its history, queue
/// items, conflicts and unsettled writes name (a contact merged away included).
pub async fn ids_of(
    conn: &mut PgConnection,
    object: &str,
    sql_key: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT id FROM ( \
           SELECT hubspot_id AS id FROM record_links WHERE object = $1 AND sql_key = $2 \
           UNION ALL SELECT hubspot_id FROM sync_history WHERE object = $1 AND sql_key = $2 \
           UNION ALL SELECT old_hubspot_id FROM sync_history WHERE object = $1 AND sql_key = $2 \
           UNION ALL SELECT hubspot_id FROM sync_queue \
                     WHERE object = $1 AND direction = 'to_hubspot' AND record_key = $2 \
           UNION ALL SELECT hubspot_id FROM sync_conflicts WHERE object = $1 AND sql_key = $2 \
           UNION ALL SELECT hubspot_id FROM sync_writes WHERE object = $1 AND sql_key = $2 \
         ) ids WHERE id IS NOT NULL ORDER BY id",
    )
    .bind(object)
    .bind(sql_key)
    .fetch_all(&mut *conn)
    .await
}

/// Which of `sql_keys` were erased because HubSpot erased their contact (an ERASE row a
/// worker left; `hubsync forget` leaves one without a direction, which does not count).
pub async fn erased(
    pool: &PgPool,
    object: &str,
    sql_keys: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT sql_key FROM sync_history \
         WHERE object = $1 AND sql_key = ANY($2) AND operation = 'ERASE' AND direction IS NOT NULL",
    )
    .bind(object)
    .bind(sql_keys)
    .fetch_all(pool)
    .await?;
    Ok(keys.into_iter().collect())
}

/// The member a HubSpot id belongs to: the link holding it, or else the newest history row
/// naming it (as its id, or as the id a merge moved the member away from).
pub async fn member_of_hubspot_id(
    pool: &PgPool,
    object: &str,
    hubspot_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sql_key FROM ( \
           SELECT sql_key, 0 AS rank, now() AS at FROM record_links \
           WHERE object = $1 AND hubspot_id = $2 \
           UNION ALL SELECT sql_key, 1, at FROM sync_history \
           WHERE object = $1 AND (hubspot_id = $2 OR old_hubspot_id = $2) AND sql_key IS NOT NULL \
         ) m ORDER BY rank, at DESC LIMIT 1",
    )
    .bind(object)
    .bind(hubspot_id)
    .fetch_optional(pool)
    .await
}

/// A member's timeline, oldest first: the rows of SQL key `sql_key` and those of its HubSpot
/// ids (`ids`) that name no member (a HubSpot change read before the link existed).
pub async fn timeline(
    pool: &PgPool,
    object: &str,
    sql_key: Option<&str>,
    ids: &[String],
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at, direction, operation, sql_key, hubspot_id, old_hubspot_id, item_id, \
                batch_id, properties, reasons, message \
         FROM sync_history \
         WHERE object = $1 AND (sql_key = $2 OR (sql_key IS NULL AND hubspot_id = ANY($3))) \
         ORDER BY at, id",
    )
    .bind(object)
    .bind(sql_key)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let properties: Value = row.try_get("properties")?;
            let direction: Option<&str> = row.try_get("direction")?;
            let entry = Entry {
                direction: direction.and_then(|d| d.parse().ok()),
                operation: row.try_get("operation")?,
                sql_key: row.try_get("sql_key")?,
                hubspot_id: row.try_get("hubspot_id")?,
                old_hubspot_id: row.try_get("old_hubspot_id")?,
                item_id: row.try_get("item_id")?,
                batch_id: row.try_get("batch_id")?,
                properties: serde_json::from_value(properties).unwrap_or_default(),
                reasons: row.try_get("reasons")?,
                message: row.try_get("message")?,
            };
            Ok(Event {
                at: row.try_get("at")?,
                entry,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::ConflictPolicy;
    use crate::queue::Operation;
    use crate::sync::diff::Conflict;

    fn item(direction: Direction, key: &str) -> ClaimedItem {
        ClaimedItem {
            id: 7,
            object: "contacts".into(),
            direction,
            record_key: key.into(),
            operation: Operation::Upsert,
            payload: json!({}),
            source_version: 1,
            attempts: 0,
            rescues: 0,
            hubspot_id: None,
            batch_id: "b1".into(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_done_item_is_its_operation_with_the_properties_it_changed() {
        let done = Outcome::Done {
            operation: "UPDATE".into(),
            hubspot_id: Some("501".into()),
        };
        let note = Note {
            properties: vec!["lastname".into()],
            ..Note::default()
        };
        let e = of_outcome(
            &item(Direction::ToHubspot, "10045"),
            &done,
            Some(&note),
            false,
        )
        .unwrap();
        assert_eq!(e.operation, "UPDATE");
        assert_eq!(e.sql_key.as_deref(), Some("10045"));
        assert_eq!(e.hubspot_id.as_deref(), Some("501"));
        assert_eq!(e.properties, ["lastname"]);
        assert_eq!((e.item_id, e.batch_id.as_deref()), (Some(7), Some("b1")));
        // A to_sql item is keyed by its HubSpot id; the note names the member and the
        // operation a new row makes.
        let write = Outcome::Done {
            operation: "WRITE".into(),
            hubspot_id: Some("501".into()),
        };
        let note = Note {
            operation: Some("INSERT"),
            sql_key: Some("10046".into()),
            ..Note::default()
        };
        let e = of_outcome(&item(Direction::ToSql, "501"), &write, Some(&note), false).unwrap();
        assert_eq!(
            (
                e.operation.as_str(),
                e.sql_key.as_deref(),
                e.hubspot_id.as_deref()
            ),
            ("INSERT", Some("10046"), Some("501"))
        );
        let retry = Outcome::Retry(ItemError::new("transient", "503"));
        assert_eq!(
            of_outcome(&item(Direction::ToSql, "1"), &retry, None, false),
            None
        );
        // A retry out of attempts is the item's death, with its last failure.
        let dead = of_outcome(&item(Direction::ToSql, "1"), &retry, None, true).unwrap();
        assert_eq!(dead.operation, "DEAD");
        assert_eq!(dead.reasons.unwrap()[0]["kind"], "transient");
    }

    #[test]
    fn a_rejection_keeps_its_reasons_with_the_values_masked() {
        let error = ItemError {
            field: Some("email".into()),
            rule: Some("email".into()),
            ..ItemError::new(
                "validation",
                "\"ana.rojas@example\" is not a valid email; cédula 112345678",
            )
        };
        let e = of_outcome(
            &item(Direction::ToHubspot, "1"),
            &Outcome::Reject(vec![error]),
            None,
            false,
        )
        .unwrap();
        assert_eq!(e.operation, "REJECT");
        let text = e.reasons.unwrap().to_string();
        assert!(text.contains("\"field\":\"email\""), "{text}");
        assert!(!text.contains("ana.rojas"), "{text}");
        assert!(!text.contains("112345678"), "{text}");
    }

    #[test]
    fn a_conflict_names_the_field_policy_and_winner_never_the_values() {
        let c = ConflictRecord {
            item_id: Some(3),
            sql_key: "10045".into(),
            hubspot_id: Some("501".into()),
            conflict: Conflict {
                field: "firstname".into(),
                sql_value: Some("María".into()),
                hubspot_value: Some("Mafer".into()),
                synced_value: Some("Ana".into()),
                policy: ConflictPolicy::HubspotWins,
                winner: Side::Hubspot,
                decided_by: "policy",
            },
            sql_modified_at: None,
            hubspot_modified_at: None,
        };
        let e = of_conflict(&c, Direction::ToSql, "b2");
        assert_eq!(e.properties, ["firstname"]);
        let text = format!("{e:?}");
        for value in ["María", "Mafer", "Ana\""] {
            assert!(!text.contains(value), "{text}");
        }
        let event = Event {
            at: Utc::now(),
            entry: e,
        };
        assert_eq!(event.details(), "firstname; hubspot_wins -> hubspot wins");
        let create = Event {
            at: Utc::now(),
            entry: Entry {
                operation: "CREATE".into(),
                properties: (0..31).map(|i| format!("p{i}")).collect(),
                ..Entry::default()
            },
        };
        assert_eq!(create.details(), "31 properties");
    }

    #[test]
    fn a_merge_keeps_both_ids_and_an_erase_summary_counts_operations() {
        let m = Merge {
            item_id: 4,
            sql_key: "10045".into(),
            from: "501".into(),
            to: "777".into(),
        };
        let e = of_merge(&m, Direction::ToHubspot, "b3");
        assert_eq!(
            (e.hubspot_id.as_deref(), e.old_hubspot_id.as_deref()),
            (Some("777"), Some("501"))
        );
        let counts = BTreeMap::from([("CREATE".to_string(), 1), ("UPDATE".to_string(), 2)]);
        assert_eq!(summary(&counts), "CREATE 1, UPDATE 2");
    }

    #[test]
    fn events_are_shown_masked() {
        let reasons = json!([{"kind": "validation", "field": "email", "rule": "email",
                              "message": "ana@example.com refused"}]);
        let event = Event {
            at: Utc::now(),
            entry: Entry {
                operation: "REJECT".into(),
                sql_key: Some("112345678".into()),
                hubspot_id: Some("37765128953".into()),
                reasons: Some(reasons),
                ..Entry::default()
            },
        }
        .masked();
        assert_eq!(event.entry.sql_key.as_deref(), Some("1-****-**78"));
        assert_eq!(event.entry.hubspot_id.as_deref(), Some("37765128953"));
        assert_eq!(event.details(), "email[email]: a***@example.com refused");
    }
}
