//! Queue upkeep: rescue of expired leases (a crashed or stalled worker) and pruning of finished
//! items past retention, both in small batches that never block claims.

use std::time::Duration;

use sqlx::Row;

use super::{Queue, Result, interval};

/// Items taken back go to pending without charging an attempt; the rescue is counted, and an
/// item rescued `max_rescues` times ends dead (it may be what kills workers), which its member's
/// history records (`sync_history`, in the same statement). `{select}` picks the items, `{kind}`
/// and `{message}` say why in the item's errors.
fn rescue_sql(select: &str, kind: &str, message: &str) -> String {
    format!(
        r#"
WITH expired AS (
    SELECT q.id,
           CASE WHEN q.rescues + 1 >= $1 THEN 'dead'
                WHEN EXISTS (SELECT 1 FROM sync_queue p
                             WHERE p.state = 'pending' AND p.object = q.object
                               AND p.direction = q.direction AND p.record_key = q.record_key)
                    THEN 'superseded'
                ELSE 'pending' END AS new_state,
           {message} AS message
    FROM sync_queue q
    WHERE q.state = 'running' AND {select}
    ORDER BY q.locked_until
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), rescued AS (
UPDATE sync_queue q
SET state = e.new_state,
    rescues = q.rescues + 1,
    errors = q.errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'kind', '{kind}', 'message', e.message)),
    last_error = CASE WHEN e.new_state = 'dead'
                      THEN 'gave up after ' || (q.rescues + 1) || ' rescues; ' || e.message
                      ELSE e.message END,
    locked_by = NULL, locked_until = NULL, run_after = now(), updated_at = now(),
    finished_at = CASE WHEN e.new_state = 'pending' THEN NULL ELSE now() END
FROM expired e WHERE q.id = e.id
RETURNING q.id, q.state, q.object, q.direction, q.record_key, q.hubspot_id, q.batch_id,
          e.message
), died AS (
    INSERT INTO sync_history (object, direction, operation, sql_key, hubspot_id, item_id,
                              batch_id, reasons)
    SELECT r.object, r.direction, 'DEAD',
           CASE WHEN r.direction = 'to_hubspot' THEN r.record_key
                ELSE (SELECT l.sql_key FROM record_links l
                      WHERE l.object = r.object AND l.hubspot_id = r.record_key) END,
           CASE WHEN r.direction = 'to_sql' THEN r.record_key ELSE r.hubspot_id END,
           r.id, r.batch_id,
           jsonb_build_array(jsonb_build_object('kind', '{kind}', 'message', r.message))
    FROM rescued r WHERE r.state = 'dead'
)
SELECT id, state FROM rescued
"#
    )
}

/// Expired leases: a worker crashed or stalled.
static RESCUE_EXPIRED_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    rescue_sql(
        "q.locked_until < now()",
        "lease_expired",
        "'lease expired: worker ' || q.locked_by || ' neither settled nor renewed it by ' \
         || to_char(q.locked_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
});

/// Items held by processes known to be gone (`$3`: their worker-name prefixes).
static RESCUE_GONE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    rescue_sql(
        "split_part(q.locked_by, '/', 1) = ANY($3)",
        "worker_gone",
        "'worker ' || q.locked_by || ' ended without settling it (its process is gone)'",
    )
});

/// The process part of a worker name, `[instance@]host:pid/…`: (prefix, host, pid).
pub fn process_of(locked_by: &str) -> Option<(&str, &str, u32)> {
    let prefix = locked_by.split('/').next()?;
    let process = prefix.rsplit('@').next()?;
    let (host, pid) = process.rsplit_once(':')?;
    Some((prefix, host, pid.parse().ok()?))
}

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
        self.rescue(&RESCUE_EXPIRED_SQL, &[]).await
    }

    /// Takes back at once, without waiting for their leases, the items held by earlier
    /// processes on this host that have ended (a restart after a crash): a worker is named
    /// `[instance@]host:pid/…`, and a process of this host whose pid `alive` denies is gone for
    /// good. Items held on other hosts, or by live processes, wait for their leases.
    pub async fn rescue_from_ended_processes(
        &self,
        host: &str,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Rescued> {
        let holders: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT locked_by FROM sync_queue WHERE state = 'running'")
                .fetch_all(&self.pool)
                .await?;
        let mut gone: Vec<String> = holders
            .iter()
            .filter_map(|h| process_of(h))
            .filter(|(_, h, pid)| *h == host && *pid != std::process::id() && !alive(*pid))
            .map(|(prefix, _, _)| prefix.to_string())
            .collect();
        gone.sort();
        gone.dedup();
        if gone.is_empty() {
            return Ok(Rescued::default());
        }
        self.rescue(&RESCUE_GONE_SQL, &gone).await
    }

    async fn rescue(&self, sql: &str, prefixes: &[String]) -> Result<Rescued> {
        let mut out = Rescued::default();
        loop {
            let rows = loop {
                let query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(self.settings.max_rescues)
                    .bind(1000_i64);
                let query = if prefixes.is_empty() {
                    query
                } else {
                    query.bind(prefixes)
                };
                match query.fetch_all(&self.pool).await {
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
                break;
            }
        }
        // Writes left on record by items that never finished (discarded by an operator, or
        // superseded with no newer item ending since), once no item of the record is open.
        sqlx::query(
            "DELETE FROM sync_writes w WHERE w.created_at < now() - $1 \
             AND NOT EXISTS (SELECT 1 FROM sync_queue q WHERE q.state IN ('pending', 'running') \
                               AND q.object = w.object AND q.direction = w.direction \
                               AND q.record_key = w.record_key)",
        )
        .bind(interval(retention))
        .execute(&self.pool)
        .await?;
        Ok(total)
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

#[cfg(test)]
mod tests {
    use super::process_of;

    #[test]
    fn worker_names_give_their_process() {
        assert_eq!(
            process_of("db1:4242/contacts/0"),
            Some(("db1:4242", "db1", 4242))
        );
        assert_eq!(
            process_of("hubsync-1@db1:77/contacts/to_sql/3"),
            Some(("hubsync-1@db1:77", "db1", 77))
        );
        assert_eq!(process_of("db1:4242/once"), Some(("db1:4242", "db1", 4242)));
        assert_eq!(process_of("hubsync-1/contacts/0"), None);
        assert_eq!(process_of("db1:x/contacts/0"), None);
    }
}
