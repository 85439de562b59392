//! Queue upkeep: rescue of expired leases (a crashed or stalled worker) and pruning of finished
//! items past retention, both in small batches that never block claims.

use std::time::Duration;

use sqlx::Row;

use super::{Queue, Result, interval};

/// Expired leases go back to pending without charging an attempt; the rescue is counted, and
/// an item rescued `max_rescues` times ends dead (it may be what kills workers).
const RESCUE_SQL: &str = r#"
WITH expired AS (
    SELECT q.id,
           CASE WHEN q.rescues + 1 >= $1 THEN 'dead'
                WHEN EXISTS (SELECT 1 FROM sync_queue p
                             WHERE p.state = 'pending' AND p.object = q.object
                               AND p.direction = q.direction AND p.record_key = q.record_key)
                    THEN 'superseded'
                ELSE 'pending' END AS new_state,
           'lease expired: worker ' || q.locked_by || ' neither settled nor renewed it by '
               || to_char(q.locked_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
               AS message
    FROM sync_queue q
    WHERE q.state = 'running' AND q.locked_until < now()
    ORDER BY q.locked_until
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE sync_queue q
SET state = e.new_state,
    rescues = q.rescues + 1,
    errors = q.errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'kind', 'lease_expired', 'message', e.message)),
    last_error = CASE WHEN e.new_state = 'dead'
                      THEN 'gave up after ' || (q.rescues + 1) || ' rescues; ' || e.message
                      ELSE e.message END,
    locked_by = NULL, locked_until = NULL, run_after = now(), updated_at = now(),
    finished_at = CASE WHEN e.new_state = 'pending' THEN NULL ELSE now() END
FROM expired e WHERE q.id = e.id
RETURNING q.id, q.state
"#;

/// Finished items past retention; a rejected or dead item only once a newer item of the same
/// record exists (until then it is the record's current state and operators need it).
const PRUNE_SQL: &str = r#"
DELETE FROM sync_queue WHERE id IN (
    SELECT q.id FROM sync_queue q
    WHERE q.finished_at < now() - $1
      AND (q.state IN ('done', 'superseded', 'discarded')
           OR EXISTS (SELECT 1 FROM sync_queue n
                      WHERE n.object = q.object AND n.direction = q.direction
                        AND n.record_key = q.record_key AND n.id > q.id))
    ORDER BY q.finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
"#;

/// What one rescue pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub returned: Vec<i64>,
    pub dead: Vec<i64>,
    pub superseded: Vec<i64>,
}

impl Queue {
    /// Takes back every expired lease (in batches of 1,000).
    pub async fn rescue_expired(&self) -> Result<Rescued> {
        let mut out = Rescued::default();
        loop {
            let rows = loop {
                match sqlx::query(RESCUE_SQL)
                    .bind(self.settings.max_rescues)
                    .bind(1000_i64)
                    .fetch_all(&self.pool)
                    .await
                {
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
                    other => break other?,
                }
            };
            let n = rows.len();
            for row in rows {
                let id: i64 = row.try_get("id")?;
                match row.try_get::<&str, _>("state")? {
                    "dead" => out.dead.push(id),
                    "superseded" => out.superseded.push(id),
                    _ => out.returned.push(id),
                }
            }
            if n < 1000 {
                return Ok(out);
            }
        }
    }

    /// Deletes finished items older than `retention`, `batch` rows per statement, until none
    /// are left; returns how many were deleted.
    pub async fn prune(&self, retention: Duration, batch: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = prune_once(&self.pool, retention, batch).await?;
            total += n;
            if n < batch as u64 {
                return Ok(total);
            }
        }
    }
}

/// One pruning statement on any executor (deletes at most `batch` rows, skipping locked ones).
pub async fn prune_once<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    retention: Duration,
    batch: i64,
) -> Result<u64> {
    Ok(sqlx::query(PRUNE_SQL)
        .bind(interval(retention))
        .bind(batch)
        .execute(executor)
        .await?
        .rows_affected())
}
