//! Retention of personal data in the queue database: conflicts deleted after
//! `queue.conflict_retention`, and the payload values of rejected and dead items dropped after
//! `queue.rejected_payload_retention` (keys, reasons and record key kept for operators), and
//! members' history (`sync_history`) deleted after `queue.retention`, like finished items.

use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::Row;

use super::{Queue, Result, interval};
use crate::telemetry::mask;

/// What one retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Enforced {
    /// Finished items deleted (`queue.retention`).
    pub items: u64,
    /// Rejected or dead items whose payload values were dropped.
    pub payloads_dropped: u64,
    /// `sync_conflicts` rows deleted.
    pub conflicts: u64,
    /// `sync_history` rows deleted.
    pub history: u64,
}

impl Enforced {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A payload with its values dropped: every column or property name kept, with a null value,
/// so an operator still sees which fields the record had. A payload that is not an object keeps
/// nothing.
pub fn without_values(payload: &Value) -> Value {
    match payload {
        Value::Object(map) => Value::Object(map.keys().map(|k| (k.clone(), Value::Null)).collect()),
        _ => Value::Object(Map::new()),
    }
}

/// An item's errors with the values they quote masked: each entry keeps its kind, field, rule,
/// time and status, and its message loses personal data and every double-quoted text.
pub fn reasons_without_values(errors: &Value) -> Value {
    match errors {
        Value::Array(entries) => Value::Array(entries.iter().map(entry_without_values).collect()),
        other => other.clone(),
    }
}

fn entry_without_values(entry: &Value) -> Value {
    let mut entry = entry.clone();
    if let Some(Value::String(message)) = entry.get_mut("message") {
        *message = mask::stored(message).into_owned();
    }
    entry
}

/// Deletes up to `$2` rows of `table` whose `time` is older than `$1`, oldest first; rows
/// another transaction holds are left for the next pass. (`table` and `time` are fixed names,
/// never input.)
fn prune_sql(table: &str, time: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE id IN ( \
           SELECT id FROM {table} WHERE {time} < now() - $1 ORDER BY {time} LIMIT $2 \
           FOR UPDATE SKIP LOCKED)"
    )
}

/// Rejected and dead items past retention whose values are still stored. Items another
/// transaction holds (an operator's retry) are left for the next pass.
const SELECT_EXPIRED_PAYLOADS_SQL: &str = r#"
SELECT id, payload, errors, last_error FROM sync_queue
WHERE state IN ('rejected', 'dead') AND payload_dropped_at IS NULL
  AND finished_at < now() - $1
ORDER BY finished_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"#;

const DROP_PAYLOADS_SQL: &str = r#"
UPDATE sync_queue q
SET payload = d.payload, errors = d.errors, last_error = d.last_error,
    payload_dropped_at = now(), updated_at = now()
FROM unnest($1::bigint[], $2::jsonb[], $3::jsonb[], $4::text[])
    AS d(id, payload, errors, last_error)
WHERE q.id = d.id
"#;

impl Queue {
    /// Applies every retention setting of the queue: finished items pruned, rejected and dead
    /// payload values dropped, conflicts deleted, each in batches of `queue.prune_batch`.
    pub async fn enforce_retention(&self) -> Result<Enforced> {
        let s = &self.settings;
        Ok(Enforced {
            items: self.prune(s.retention, s.prune_batch).await?,
            payloads_dropped: self
                .drop_rejected_payloads(s.rejected_payload_retention, s.prune_batch)
                .await?,
            conflicts: self
                .prune_conflicts(s.conflict_retention, s.prune_batch)
                .await?,
            history: self.prune_history(s.retention, s.prune_batch).await?,
        })
    }

    /// Deletes conflicts detected more than `retention` ago, `batch` rows per statement.
    pub async fn prune_conflicts(&self, retention: Duration, batch: i64) -> Result<u64> {
        self.prune_by(prune_sql("sync_conflicts", "detected_at"), retention, batch)
            .await
    }

    /// Deletes history rows older than `retention`, `batch` rows per statement.
    pub async fn prune_history(&self, retention: Duration, batch: i64) -> Result<u64> {
        self.prune_by(prune_sql("sync_history", "at"), retention, batch)
            .await
    }

    /// Runs a pruning statement (`$1` the retention, `$2` the batch) until a run deletes
    /// fewer than `batch` rows.
    async fn prune_by(&self, sql: String, retention: Duration, batch: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(interval(retention))
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// Drops the payload values of rejected and dead items that finished more than
    /// `retention` ago and masks the values their reasons quote, `batch` items per transaction.
    pub async fn drop_rejected_payloads(&self, retention: Duration, batch: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(SELECT_EXPIRED_PAYLOADS_SQL)
                .bind(interval(retention))
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let n = rows.len();
            let (mut ids, mut payloads, mut errors, mut last_errors) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for row in rows {
                ids.push(row.try_get::<i64, _>("id")?);
                payloads.push(without_values(&row.try_get::<Value, _>("payload")?));
                errors.push(reasons_without_values(&row.try_get::<Value, _>("errors")?));
                last_errors.push(
                    row.try_get::<Option<String>, _>("last_error")?
                        .map(|e| mask::stored(&e).into_owned()),
                );
            }
            if n > 0 {
                sqlx::query(DROP_PAYLOADS_SQL)
                    .bind(&ids)
                    .bind(&payloads)
                    .bind(&errors)
                    .bind(&last_errors)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            total += n as u64;
            if n < batch as usize {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payload_keeps_its_keys_and_loses_its_values() {
        let payload = json!({"email": "ana.rojas@example.com", "salario": 1250000.5, "hijos": [1]});
        assert_eq!(
            without_values(&payload),
            json!({"email": null, "salario": null, "hijos": null})
        );
        assert_eq!(without_values(&json!("text")), json!({}));
    }

    #[test]
    fn reasons_keep_field_rule_and_kind_and_lose_quoted_values() {
        let errors = json!([{
            "at": "2026-01-02T03:04:05Z", "kind": "validation", "field": "email", "rule": "email",
            "message": "\"ana.rojas@example\" is not a valid email address"
        }, {
            "at": "2026-01-02T03:04:05Z", "kind": "validation", "field": "no__de_cedula",
            "rule": "cedula", "message": "cédula 112345678 is not in the registry"
        }]);
        let out = reasons_without_values(&errors);
        assert_eq!(out[0]["field"], "email");
        assert_eq!(out[0]["rule"], "email");
        assert_eq!(out[0]["kind"], "validation");
        assert_eq!(out[0]["at"], "2026-01-02T03:04:05Z");
        assert_eq!(out[0]["message"], "\"***\" is not a valid email address");
        let second = out[1]["message"].as_str().unwrap();
        assert!(!second.contains("112345678"), "{second}");
        assert!(second.contains("is not in the registry"), "{second}");
    }
}
