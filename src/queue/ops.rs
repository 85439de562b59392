//! Operator commands on the queue: summary, stuck items, retry and discard. Safe to run against
//! a live daemon's database: each is one short statement that skips rows a worker holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Queue, Result, WAKE_CHANNEL};

/// One row of `sync_queue_summary`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SummaryRow {
    pub object: String,
    pub direction: String,
    pub state: String,
    pub items: i64,
    /// Seconds the oldest pending item has waited (pending rows only).
    pub oldest_pending_age_s: Option<f64>,
}

/// One row of `sync_queue_stuck`.
#[derive(Debug, Clone, Serialize)]
pub struct StuckItem {
    pub id: i64,
    pub object: String,
    pub direction: String,
    pub record_key: String,
    pub state: String,
    pub problem: String,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub rescues: i32,
    pub updated_at: DateTime<Utc>,
}

/// Which items `queue retry` brings back.
#[derive(Debug, Clone)]
pub enum RetrySelection {
    Ids(Vec<i64>),
    Rejected { object: Option<String> },
    Dead { object: Option<String> },
}

/// What `retry` or `discard` did with each requested item.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpReport {
    pub changed: Vec<i64>,
    /// Requested ids left alone, with the reason.
    pub skipped: Vec<(i64, String)>,
}

const RETRY_SQL: &str = r#"
UPDATE sync_queue q
SET state = 'pending', attempts = 0, rescues = 0, run_after = now(), finished_at = NULL,
    updated_at = now(),
    errors = q.errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'kind', 'operator_retry', 'message', 'retried by an operator'))
WHERE q.state IN ('rejected', 'dead')
  -- Values dropped after retention: retrying would send an empty record.
  AND q.payload_dropped_at IS NULL
  AND ($1::bigint[] IS NULL OR q.id = ANY($1))
  AND ($2::text IS NULL OR q.state = $2)
  AND ($3::text IS NULL OR q.object = $3)
  -- Only a record's newest item: an older one would resend stale data.
  AND NOT EXISTS (SELECT 1 FROM sync_queue n
                  WHERE n.object = q.object AND n.direction = q.direction
                    AND n.record_key = q.record_key AND n.id > q.id)
RETURNING q.id
"#;

const DISCARD_SQL: &str = r#"
UPDATE sync_queue
SET state = 'discarded', finished_at = now(), updated_at = now(), run_after = now(),
    errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'kind', 'operator_discard', 'message', 'discarded by an operator'))
WHERE id = ANY($1) AND state IN ('pending', 'rejected', 'dead')
RETURNING id
"#;

impl Queue {
    /// Counts by object, direction and state (the `sync_queue_summary` view).
    pub async fn summary(&self) -> Result<Vec<SummaryRow>> {
        let rows = sqlx::query(
            "SELECT object, direction, state, items, \
                    extract(epoch FROM oldest_pending_age)::float8 AS age \
             FROM sync_queue_summary ORDER BY object, direction, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SummaryRow {
                    object: r.try_get("object")?,
                    direction: r.try_get("direction")?,
                    state: r.try_get("state")?,
                    items: r.try_get("items")?,
                    oldest_pending_age_s: r.try_get("age")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Items that need a look (the `sync_queue_stuck` view), newest first.
    pub async fn stuck(&self, stuck_after: Duration, limit: i64) -> Result<Vec<StuckItem>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('hubsync.stuck_after', $1, true)")
            .bind(format!("{} seconds", stuck_after.as_secs()))
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT id, object, direction, record_key, state, problem, last_error, attempts, \
                    rescues, updated_at \
             FROM sync_queue_stuck ORDER BY updated_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|r| {
                Ok(StuckItem {
                    id: r.try_get("id")?,
                    object: r.try_get("object")?,
                    direction: r.try_get("direction")?,
                    record_key: r.try_get("record_key")?,
                    state: r.try_get("state")?,
                    problem: r.try_get("problem")?,
                    last_error: r.try_get("last_error")?,
                    attempts: r.try_get("attempts")?,
                    rescues: r.try_get("rescues")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Brings rejected or dead items back to pending with fresh attempts.
    pub async fn retry(&self, selection: &RetrySelection) -> Result<OpReport> {
        let (ids, state, object) = match selection {
            RetrySelection::Ids(ids) => (Some(ids.clone()), None, None),
            RetrySelection::Rejected { object } => (None, Some("rejected"), object.clone()),
            RetrySelection::Dead { object } => (None, Some("dead"), object.clone()),
        };
        let changed: Vec<i64> = loop {
            match sqlx::query_scalar(RETRY_SQL)
                .bind(&ids)
                .bind(state)
                .bind(&object)
                .fetch_all(&self.pool)
                .await
            {
                // A record already has a pending item: then its newest item is that one and
                // the NOT EXISTS filter skips this one on the next try.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
                other => break other?,
            }
        };
        if !changed.is_empty() {
            self.notify().await?;
        }
        let skipped = match ids {
            Some(ids) => {
                self.explain_skipped(&ids, &changed, "rejected or dead")
                    .await?
            }
            None => vec![],
        };
        Ok(OpReport { changed, skipped })
    }

    /// Marks pending, rejected or dead items `discarded` (kept for the audit trail).
    pub async fn discard(&self, ids: &[i64]) -> Result<OpReport> {
        let changed: Vec<i64> = sqlx::query_scalar(DISCARD_SQL)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        let skipped = self
            .explain_skipped(ids, &changed, "pending, rejected or dead")
            .await?;
        Ok(OpReport { changed, skipped })
    }

    async fn explain_skipped(
        &self,
        requested: &[i64],
        changed: &[i64],
        allowed: &str,
    ) -> Result<Vec<(i64, String)>> {
        let rest: Vec<i64> = requested
            .iter()
            .copied()
            .filter(|id| !changed.contains(id))
            .collect();
        if rest.is_empty() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(
            "SELECT q.id, q.state, q.payload_dropped_at IS NOT NULL AS dropped, \
                 (SELECT max(n.id) FROM sync_queue n \
                 WHERE n.object = q.object AND n.direction = q.direction \
                   AND n.record_key = q.record_key AND n.id > q.id) AS newer \
             FROM sync_queue q WHERE q.id = ANY($1)",
        )
        .bind(&rest)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for id in rest {
            let row = rows
                .iter()
                .find(|r| r.try_get::<i64, _>("id").ok() == Some(id));
            let reason = match row {
                None => "no such item".to_string(),
                Some(r) => {
                    let state: String = r.try_get("state")?;
                    match r.try_get::<Option<i64>, _>("newer")? {
                        Some(newer) if state != "running" => {
                            format!("{state}; superseded by newer item {newer} of the same record")
                        }
                        _ if r.try_get::<bool, _>("dropped")? => format!(
                            "{state}; its payload values were dropped after \
                             queue.rejected_payload_retention: change the record at its source \
                             or backfill it"
                        ),
                        _ => format!("it is {state}, not {allowed}"),
                    }
                }
            };
            out.push((id, reason));
        }
        Ok(out)
    }

    /// Wakes idle workers (they also poll, so this is only a hint).
    pub async fn notify(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, 'retry')")
            .bind(WAKE_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
