//! A worker's side of the queue: claim a batch under a lease, extend the lease, settle every
//! item with its own outcome, or release the batch untouched on shutdown.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use super::{Direction, ItemError, Operation, Queue, QueueError, Result, interval};

/// An item a worker holds under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub id: i64,
    pub object: String,
    pub direction: Direction,
    pub record_key: String,
    pub operation: Operation,
    pub payload: serde_json::Value,
    pub source_version: i64,
    /// Failed attempts before this one.
    pub attempts: i32,
    pub rescues: i32,
    pub hubspot_id: Option<String>,
    pub batch_id: String,
    pub created_at: DateTime<Utc>,
}

/// How one item ended this attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Synced. `operation` is what was done (CREATE, UPDATE, SKIP, WRITE, ARCHIVE, LINK).
    Done {
        operation: String,
        hubspot_id: Option<String>,
    },
    /// A transient failure: retry later with backoff, or end `dead` when attempts run out.
    Retry(ItemError),
    /// Cannot succeed as it is (validation, a 4xx on the record): kept with every reason.
    Reject(Vec<ItemError>),
    /// Give up now.
    Dead(ItemError),
    /// Not yet: take it up again after `delay`, charging no attempt and recording no error
    /// (the item waits for another item of the same record to settle).
    Defer {
        reason: String,
        delay: std::time::Duration,
    },
}

/// What a settle call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    pub done: u64,
    pub retried: u64,
    pub rejected: u64,
    pub dead: u64,
    /// Retried items whose record already had a newer pending change.
    pub superseded: u64,
    /// Items this worker no longer held (its lease expired and they were rescued).
    pub lost: Vec<i64>,
    /// Record links that followed a contact merged in HubSpot to its survivor.
    pub merges: u64,
    /// Members whose HubSpot contact was found gone for good (GDPR delete) and erased.
    pub erasures: u64,
    /// Items this settle ended `dead` (their attempts ran out, or they were given up).
    pub died: Vec<i64>,
}

const CLAIM_SQL: &str = r#"
WITH picked AS (
    SELECT q.id FROM sync_queue q
    WHERE q.state = 'pending' AND q.object = $1 AND q.direction = $2 AND q.run_after <= now()
      -- A paused direction (hubsync pause) is claimed by nobody.
      AND NOT EXISTS (SELECT 1 FROM sync_pauses p WHERE p.object = $1 AND p.direction = $2)
      -- Records already running are skipped. An uncorrelated NOT IN runs once per claim and is
      -- hashed, whatever the planner believes about the table's (fast-changing) statistics.
      AND q.record_key NOT IN (SELECT r.record_key FROM sync_queue r
                               WHERE r.state = 'running' AND r.object = $1 AND r.direction = $2)
    ORDER BY q.run_after, q.id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE sync_queue q
SET state = 'running', locked_by = $4, locked_until = now() + $5, batch_id = $6,
    claimed_at = now(), updated_at = now()
FROM picked WHERE q.id = picked.id
RETURNING q.id, q.object, q.direction, q.record_key, q.operation, q.payload, q.source_version,
          q.attempts, q.rescues, q.hubspot_id, q.created_at
"#;

const SETTLE_SQL: &str = r#"
WITH s AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[],
                         $6::text[], $7::text[])
        AS s(id, kind, delay_ms, errs, last_error, outcome, hubspot_id)
), decided AS (
    SELECT q.id, s.kind, s.delay_ms, s.errs, s.last_error, s.outcome, s.hubspot_id,
           CASE s.kind
               WHEN 'done' THEN 'done'
               WHEN 'reject' THEN 'rejected'
               WHEN 'dead' THEN 'dead'
               ELSE CASE
                   WHEN s.kind = 'retry' AND q.attempts + 1 >= q.max_attempts THEN 'dead'
                   WHEN EXISTS (SELECT 1 FROM sync_queue p
                                WHERE p.state = 'pending' AND p.object = q.object
                                  AND p.direction = q.direction AND p.record_key = q.record_key)
                       THEN 'superseded'
                   ELSE 'pending' END
           END AS new_state
    FROM sync_queue q JOIN s ON s.id = q.id
    WHERE q.state = 'running' AND q.locked_by = $8
    FOR UPDATE OF q
)
UPDATE sync_queue q
SET state = d.new_state,
    attempts = q.attempts + CASE WHEN d.kind = 'retry' THEN 1 ELSE 0 END,
    run_after = CASE WHEN d.new_state = 'pending'
                     THEN now() + d.delay_ms * interval '1 millisecond' ELSE q.run_after END,
    locked_by = NULL, locked_until = NULL,
    errors = q.errors || d.errs,
    last_error = CASE
        WHEN d.kind = 'retry' AND d.new_state = 'dead'
            THEN 'gave up after ' || (q.attempts + 1) || ' attempts: ' || d.last_error
        ELSE coalesce(d.last_error, q.last_error) END,
    outcome = coalesce(d.outcome, q.outcome),
    hubspot_id = coalesce(d.hubspot_id, q.hubspot_id),
    updated_at = now(),
    finished_at = CASE WHEN d.new_state = 'pending' THEN NULL ELSE now() END
FROM decided d WHERE q.id = d.id
RETURNING q.id, q.state
"#;

/// Releases held items without charging an attempt: back to pending, or superseded when the
/// record has a newer pending change. Used by graceful shutdown.
const RELEASE_SQL: &str = r#"
WITH decided AS (
    SELECT q.id,
           CASE WHEN EXISTS (SELECT 1 FROM sync_queue p
                             WHERE p.state = 'pending' AND p.object = q.object
                               AND p.direction = q.direction AND p.record_key = q.record_key)
                THEN 'superseded' ELSE 'pending' END AS new_state
    FROM sync_queue q
    WHERE q.id = ANY($1) AND q.state = 'running' AND q.locked_by = $2
    FOR UPDATE OF q
)
UPDATE sync_queue q
SET state = d.new_state, locked_by = NULL, locked_until = NULL, run_after = now(),
    updated_at = now(), finished_at = CASE WHEN d.new_state = 'pending' THEN NULL ELSE now() END
FROM decided d WHERE q.id = d.id
"#;

impl Queue {
    /// Claims up to `limit` due items of one object and direction for `worker`, never an item
    /// whose record already has a running item. Returns them with a fresh batch id.
    pub async fn claim(
        &self,
        object: &str,
        direction: Direction,
        limit: u32,
        worker: &str,
    ) -> Result<Vec<ClaimedItem>> {
        let batch_id = format!("{:016x}", rand::random::<u64>());
        let rows = sqlx::query(CLAIM_SQL)
            .bind(object)
            .bind(direction.as_str())
            .bind(i64::from(limit))
            .bind(worker)
            .bind(interval(self.lease()))
            .bind(&batch_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ClaimedItem {
                    id: row.try_get("id")?,
                    object: row.try_get("object")?,
                    direction,
                    record_key: row.try_get("record_key")?,
                    operation: match row.try_get::<&str, _>("operation")? {
                        "archive" => Operation::Archive,
                        _ => Operation::Upsert,
                    },
                    payload: row.try_get("payload")?,
                    source_version: row.try_get("source_version")?,
                    attempts: row.try_get("attempts")?,
                    rescues: row.try_get("rescues")?,
                    hubspot_id: row.try_get("hubspot_id")?,
                    batch_id: batch_id.clone(),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(QueueError::from)
    }

    /// Extends the lease of items `worker` still holds; returns how many it still holds.
    pub async fn heartbeat(&self, worker: &str, ids: &[i64]) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sync_queue SET locked_until = now() + $3, updated_at = now() \
             WHERE id = ANY($1) AND state = 'running' AND locked_by = $2",
        )
        .bind(ids)
        .bind(worker)
        .bind(interval(self.lease()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Settles every item with its own outcome in one statement. Items `worker` no longer
    /// holds are left alone and listed in `lost`.
    pub async fn settle(
        &self,
        worker: &str,
        results: &[(&ClaimedItem, Outcome)],
    ) -> Result<Settled> {
        let mut conn = self.pool.acquire().await?;
        self.settle_on(&mut conn, worker, results).await
    }

    /// Like [`Queue::settle`], on a given connection — inside the caller's transaction, so
    /// that record links and the items' outcomes commit together.
    pub async fn settle_on(
        &self,
        conn: &mut sqlx::PgConnection,
        worker: &str,
        results: &[(&ClaimedItem, Outcome)],
    ) -> Result<Settled> {
        use sqlx::Acquire;
        let now = Utc::now();
        let n = results.len();
        let mut ids = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut delays = Vec::with_capacity(n);
        let mut errs = Vec::with_capacity(n);
        let mut last_errors: Vec<Option<String>> = Vec::with_capacity(n);
        let mut outcomes: Vec<Option<String>> = Vec::with_capacity(n);
        let mut hubspot_ids: Vec<Option<String>> = Vec::with_capacity(n);
        for (item, outcome) in results {
            ids.push(item.id);
            let (kind, delay, entries, last, op, hs): (_, i64, Vec<&ItemError>, _, _, _) =
                match outcome {
                    Outcome::Done {
                        operation,
                        hubspot_id,
                    } => (
                        "done",
                        0,
                        vec![],
                        None,
                        Some(operation.clone()),
                        hubspot_id.clone(),
                    ),
                    Outcome::Retry(e) => {
                        let d = crate::support::retry::delay(
                            (item.attempts + 1) as u32,
                            self.settings.retry_initial,
                            self.settings.retry_max,
                        );
                        (
                            "retry",
                            d.as_millis() as i64,
                            vec![e],
                            Some(e.summary()),
                            None,
                            None,
                        )
                    }
                    Outcome::Reject(es) => {
                        let last = es
                            .iter()
                            .map(ItemError::summary)
                            .collect::<Vec<_>>()
                            .join("; ");
                        (
                            "reject",
                            0,
                            es.iter().collect(),
                            Some(last),
                            Some("REJECT".into()),
                            None,
                        )
                    }
                    Outcome::Dead(e) => ("dead", 0, vec![e], Some(e.summary()), None, None),
                    Outcome::Defer { reason, delay } => (
                        "defer",
                        delay.as_millis() as i64,
                        vec![],
                        Some(reason.clone()),
                        None,
                        None,
                    ),
                };
            kinds.push(kind);
            delays.push(delay);
            errs.push(error_entries(&entries, now));
            last_errors.push(last);
            outcomes.push(op);
            hubspot_ids.push(hs);
        }

        let rows = loop {
            // A savepoint, so a unique violation can be retried inside the caller's transaction.
            let mut savepoint = conn.begin().await?;
            let attempt = sqlx::query(SETTLE_SQL)
                .bind(&ids)
                .bind(&kinds)
                .bind(&delays)
                .bind(&errs)
                .bind(&last_errors)
                .bind(&outcomes)
                .bind(&hubspot_ids)
                .bind(worker)
                .fetch_all(&mut *savepoint)
                .await;
            match attempt {
                // A new change of a retried record was enqueued between our check and our
                // update: try again and the retried item is then marked superseded.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                    savepoint.rollback().await?;
                }
                other => {
                    let rows = other?;
                    savepoint.commit().await?;
                    break rows;
                }
            }
        };

        let mut settled = Settled::default();
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let state: &str = row.try_get("state")?;
            seen.insert(id);
            match state {
                "done" => settled.done += 1,
                "pending" => settled.retried += 1,
                "rejected" => settled.rejected += 1,
                "superseded" => settled.superseded += 1,
                _ => {
                    settled.dead += 1;
                    settled.died.push(id);
                }
            }
        }
        settled.lost = ids
            .iter()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect();
        Ok(settled)
    }

    /// Gives held items back without charging an attempt (graceful shutdown).
    pub async fn release(&self, worker: &str, ids: &[i64]) -> Result<u64> {
        loop {
            match sqlx::query(RELEASE_SQL)
                .bind(ids)
                .bind(worker)
                .execute(&self.pool)
                .await
            {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => continue,
                other => return Ok(other?.rows_affected()),
            }
        }
    }
}

fn error_entries(errors: &[&ItemError], at: DateTime<Utc>) -> serde_json::Value {
    serde_json::Value::Array(
        errors
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
                v["at"] = json!(at);
                v
            })
            .collect(),
    )
}
