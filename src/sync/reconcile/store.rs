//! The reconciliation tables (`reconcile_runs`, `reconcile_findings`): starting or taking over
//! a run under a lease, storing its position and findings with each page (in the page's
//! transaction, so a resumed run neither loses nor repeats one), pairing unlinked members
//! with unlinked HubSpot records, finishing a run, and what the queue already holds for a
//! record.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use super::{Finding, Kind};
use crate::queue::Direction;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// SQL Server rows against their links.
    Sql,
    /// Links whose SQL Server row is gone.
    Links,
    /// HubSpot's list against the links.
    Hubspot,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Sql => "sql",
            Phase::Links => "links",
            Phase::Hubspot => "hubspot",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Phase {
        match s {
            "links" => Phase::Links,
            "hubspot" => Phase::Hubspot,
            "done" => Phase::Done,
            _ => Phase::Sql,
        }
    }
}

/// A run as this process holds it.
#[derive(Debug, Clone)]
pub struct Run {
    pub run_id: i64,
    pub object: String,
    pub dry_run: bool,
    pub phase: Phase,
    pub position: Option<Value>,
    /// The SQL Server poller's position at the start, as a `source_version`.
    pub sql_high: Option<i64>,
    /// The HubSpot poller's high-water mark at the start (epoch ms).
    pub hubspot_high: Option<i64>,
    /// Rows and records read, items queued, findings by kind.
    pub counts: BTreeMap<String, i64>,
    pub requests: i64,
    pub started_at: DateTime<Utc>,
    /// This process took the run over from an interrupted one.
    pub resumed: bool,
}

impl Run {
    pub fn add(&mut self, name: &str, n: i64) {
        if n != 0 {
            *self.counts.entry(name.to_string()).or_default() += n;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "a reconcile of {object} is running (run {run_id}, held by {holder}): wait for it, or for its lease to end"
    )]
    Busy {
        object: String,
        run_id: i64,
        holder: String,
    },
    #[error("reconcile run {0}: another process holds it now; this one stops")]
    LostLease(i64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the caller knows about who may still hold a run.
pub struct Claim<'a> {
    pub object: &'a str,
    pub dry_run: bool,
    /// The job running it, when a job does.
    pub job_id: Option<i64>,
    pub holder: &'a str,
    pub lease: Duration,
    /// Whether a holder (`[instance@]host:pid/…`) is a process that ended on this host.
    pub ended: &'a (dyn Fn(&str) -> bool + Sync),
    /// The pollers' positions, for a new run.
    pub sql_high: Option<i64>,
    pub hubspot_high: Option<i64>,
}

const RUN_COLUMNS: &str = "run_id, object, dry_run, job_id, phase, position, sql_high, \
    hubspot_high, counts, requests, locked_by, locked_until < now() AS expired, started_at";

fn counts_of(v: Value) -> BTreeMap<String, i64> {
    serde_json::from_value(v).unwrap_or_default()
}

fn run_of(row: &sqlx::postgres::PgRow, resumed: bool) -> Result<Run, sqlx::Error> {
    Ok(Run {
        run_id: row.try_get("run_id")?,
        object: row.try_get("object")?,
        dry_run: row.try_get("dry_run")?,
        phase: Phase::parse(row.try_get::<&str, _>("phase")?),
        position: row.try_get("position")?,
        sql_high: row.try_get("sql_high")?,
        hubspot_high: row.try_get("hubspot_high")?,
        counts: counts_of(row.try_get("counts")?),
        requests: row.try_get("requests")?,
        started_at: row.try_get("started_at")?,
        resumed,
    })
}

/// Takes over the object's unfinished run (same kind of run, and its holder gone: its lease
/// ended, its process ended, its job finished, or it is this job's) or starts a new one; an
/// unfinished run of the other kind whose holder is gone is marked failed first.
pub async fn start(pool: &PgPool, claim: &Claim<'_>) -> Result<Run, StoreError> {
    let mut tx = pool.begin().await?;
    let lease = claim.lease.as_secs_f64();
    let running = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS}, (job_id IS NOT NULL AND EXISTS (SELECT 1 FROM sync_jobs j \
           WHERE j.id = r.job_id AND j.status IN ('completed', 'failed', 'cancelled'))) AS job_over \
         FROM reconcile_runs r WHERE object = $1 AND status = 'running' FOR UPDATE"
    )))
    .bind(claim.object)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = running {
        let run_id: i64 = row.try_get("run_id")?;
        let holder: Option<String> = row.try_get("locked_by")?;
        let job_id: Option<i64> = row.try_get("job_id")?;
        let expired: Option<bool> = row.try_get("expired")?;
        let job_over: bool = row.try_get("job_over")?;
        let dry_run: bool = row.try_get("dry_run")?;
        let holder_text = holder.clone().unwrap_or_default();
        let gone = expired.unwrap_or(true)
            || job_over
            || holder.as_deref().is_some_and(|h| h == claim.holder)
            || (claim.job_id.is_some() && job_id == claim.job_id)
            || holder.as_deref().is_some_and(claim.ended);
        if !gone {
            return Err(StoreError::Busy {
                object: claim.object.to_string(),
                run_id,
                holder: holder_text,
            });
        }
        if dry_run == claim.dry_run && !job_over {
            sqlx::query(
                "UPDATE reconcile_runs SET locked_by = $2, \
                   locked_until = now() + make_interval(secs => $3), job_id = $4, updated_at = now() \
                 WHERE run_id = $1",
            )
            .bind(run_id)
            .bind(claim.holder)
            .bind(lease)
            .bind(claim.job_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(run_of(&row, true)?);
        }
        sqlx::query(
            "UPDATE reconcile_runs SET status = 'failed', finished_at = now(), locked_by = NULL, \
               locked_until = NULL, error = $2 WHERE run_id = $1",
        )
        .bind(run_id)
        .bind(format!(
            "abandoned by {holder_text}: a new run started after it stopped"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE reconcile_findings SET match_hash = NULL WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reconcile_runs (object, dry_run, job_id, sql_high, hubspot_high, locked_by, \
           locked_until) VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) \
         RETURNING {RUN_COLUMNS}"
    )))
    .bind(claim.object)
    .bind(claim.dry_run)
    .bind(claim.job_id)
    .bind(claim.sql_high)
    .bind(claim.hubspot_high)
    .bind(claim.holder)
    .bind(lease)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(run_of(&row, false)?)
}

/// Stores the run's phase, position, counts and requests and renews its lease, in the page's
/// transaction; LostLease when another process holds the run now.
pub async fn advance(
    tx: &mut PgConnection,
    run: &Run,
    holder: &str,
    lease: Duration,
) -> Result<(), StoreError> {
    let held = sqlx::query(
        "UPDATE reconcile_runs SET phase = $3, position = $4, counts = $5, requests = $6, \
           locked_until = now() + make_interval(secs => $7), updated_at = now() \
         WHERE run_id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(run.run_id)
    .bind(holder)
    .bind(run.phase.as_str())
    .bind(&run.position)
    .bind(serde_json::to_value(&run.counts).unwrap_or_default())
    .bind(run.requests)
    .bind(lease.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    if held.rows_affected() == 0 {
        return Err(StoreError::LostLease(run.run_id));
    }
    Ok(())
}

/// Stores findings of one page.
pub async fn insert_findings(
    tx: &mut PgConnection,
    run: &Run,
    findings: &[Finding],
) -> Result<(), sqlx::Error> {
    if findings.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    let keys: Vec<Option<&str>> = findings.iter().map(|f| f.sql_key.as_deref()).collect();
    let ids: Vec<Option<&str>> = findings.iter().map(|f| f.hubspot_id.as_deref()).collect();
    let fields: Vec<String> = findings.iter().map(|f| f.fields.join(",")).collect();
    let fixes: Vec<String> = findings.iter().map(|f| f.fix.name()).collect();
    let hashes: Vec<Option<&[u8]>> = findings.iter().map(|f| f.match_hash.as_deref()).collect();
    sqlx::query(
        "INSERT INTO reconcile_findings (run_id, object, kind, sql_key, hubspot_id, fields, fix, \
           match_hash) \
         SELECT $1, $2, k, s, h, CASE WHEN f = '' THEN '{}'::text[] ELSE string_to_array(f, ',') END, \
           x, m \
         FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[]) \
           AS t(k, s, h, f, x, m)",
    )
    .bind(run.run_id)
    .bind(&run.object)
    .bind(&kinds)
    .bind(&keys)
    .bind(&ids)
    .bind(&fields)
    .bind(&fixes)
    .bind(&hashes)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Pairs an unlinked HubSpot record with an unlinked member of this run whose match value
/// hashes the same: the member's finding becomes `unlinked_matchable` with the record's id.
/// Returns the member's key.
pub async fn pair(
    tx: &mut PgConnection,
    run_id: i64,
    hash: &[u8],
    hubspot_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE reconcile_findings SET kind = 'unlinked_matchable', hubspot_id = $3, \
           match_hash = NULL \
         WHERE id = (SELECT id FROM reconcile_findings WHERE run_id = $1 AND kind = 'unlinked' \
                     AND match_hash = $2 ORDER BY id LIMIT 1 FOR UPDATE) \
         RETURNING sql_key",
    )
    .bind(run_id)
    .bind(hash)
    .bind(hubspot_id)
    .fetch_optional(&mut *tx)
    .await
    .map(Option::flatten)
}

/// Up to `limit` links this run noted as missing from HubSpot's list: (finding id, HubSpot id).
pub async fn noted_missing(
    pool: &PgPool,
    run_id: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, hubspot_id FROM reconcile_findings \
         WHERE run_id = $1 AND kind = 'missing_record' AND hubspot_id IS NOT NULL \
         ORDER BY id LIMIT $2",
    )
    .bind(run_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Deletes findings by id (noted ones a page settles).
pub async fn delete_findings(tx: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query("DELETE FROM reconcile_findings WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Pairs members this run found unlinked with the record each is linked to now (its fix, or
/// the sync, linked it meanwhile): their findings become `unlinked_matchable`. `pairs` are
/// (member key, HubSpot id). Returns how many.
pub async fn pair_linked(
    tx: &mut PgConnection,
    run_id: i64,
    pairs: &[(String, String)],
) -> Result<u64, sqlx::Error> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let (keys, ids): (Vec<&str>, Vec<&str>) =
        pairs.iter().map(|(k, i)| (k.as_str(), i.as_str())).unzip();
    let done = sqlx::query(
        "UPDATE reconcile_findings f SET kind = 'unlinked_matchable', hubspot_id = p.id, \
           match_hash = NULL \
         FROM unnest($2::text[], $3::text[]) AS p(key, id) \
         WHERE f.run_id = $1 AND f.kind = 'unlinked' AND f.sql_key = p.key",
    )
    .bind(run_id)
    .bind(&keys)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Ends a run: members left unpaired are `missing_in_hubspot`, match hashes are dropped, and
/// the counts by kind are stored with the status.
pub async fn finish(
    pool: &PgPool,
    run: &mut Run,
    holder: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE reconcile_findings SET kind = 'missing_in_hubspot', match_hash = NULL \
         WHERE run_id = $1 AND kind = 'unlinked'",
    )
    .bind(run.run_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE reconcile_findings SET match_hash = NULL WHERE run_id = $1 AND match_hash IS NOT NULL")
        .bind(run.run_id)
        .execute(&mut *tx)
        .await?;
    let by_kind: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, count(*) FROM reconcile_findings WHERE run_id = $1 GROUP BY kind",
    )
    .bind(run.run_id)
    .fetch_all(&mut *tx)
    .await?;
    for kind in [Kind::Unlinked, Kind::MissingRecord] {
        run.counts.remove(kind.as_str());
    }
    for kind in Kind::DRIFT.into_iter().chain([Kind::LeftByPolicy]) {
        run.counts.insert(kind.as_str().to_string(), 0);
    }
    for (kind, n) in by_kind {
        run.counts.insert(kind, n);
    }
    run.phase = Phase::Done;
    run.position = None;
    let held = sqlx::query(
        "UPDATE reconcile_runs SET status = $3, phase = 'done', position = NULL, counts = $4, \
           requests = $5, finished_at = now(), updated_at = now(), locked_by = NULL, \
           locked_until = NULL, error = $6 \
         WHERE run_id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(run.run_id)
    .bind(holder)
    .bind(status)
    .bind(serde_json::to_value(&run.counts).unwrap_or_default())
    .bind(run.requests)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    if held.rows_affected() == 0 {
        return Err(StoreError::LostLease(run.run_id));
    }
    tx.commit().await?;
    Ok(())
}

/// What the queue holds for one record in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    /// A pending or running item.
    pub open: bool,
    /// The newest version an item was rejected or given up at.
    pub refused: Option<i64>,
    /// An archive was applied.
    pub archived: bool,
}

/// What the queue holds for each of `keys` (record keys of `direction`).
pub async fn queued(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    keys: &[String],
) -> Result<HashMap<String, Queued>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, bool, Option<i64>, bool)> = sqlx::query_as(
        "SELECT record_key, bool_or(state IN ('pending', 'running')), \
           max(source_version) FILTER (WHERE state IN ('rejected', 'dead')), \
           bool_or(operation = 'archive' AND state = 'done') \
         FROM sync_queue WHERE record_key = ANY($3) AND object = $1 AND direction = $2 \
           AND state IN ('pending', 'running', 'rejected', 'dead', 'done') \
         GROUP BY record_key",
    )
    .bind(object)
    .bind(direction.as_str())
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(k, open, refused, archived)| {
            (
                k,
                Queued {
                    open,
                    refused,
                    archived,
                },
            )
        })
        .collect())
}

/// A finished run, as `/metrics` and reports show it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub run_id: i64,
    pub object: String,
    pub dry_run: bool,
    pub status: String,
    pub finished_at: DateTime<Utc>,
    pub counts: BTreeMap<String, i64>,
}

/// The newest completed run of each object.
pub async fn latest(pool: &PgPool) -> Result<Vec<Finished>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (object) run_id, object, dry_run, status, finished_at, counts \
         FROM reconcile_runs WHERE status = 'completed' ORDER BY object, finished_at DESC",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Finished {
                run_id: row.try_get("run_id")?,
                object: row.try_get("object")?,
                dry_run: row.try_get("dry_run")?,
                status: row.try_get("status")?,
                finished_at: row.try_get("finished_at")?,
                counts: counts_of(row.try_get("counts")?),
            })
        })
        .collect()
}

/// A stored finding, as reports print it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub kind: String,
    pub sql_key: Option<String>,
    pub hubspot_id: Option<String>,
    pub fields: Vec<String>,
    pub fix: String,
}

/// id, kind, sql_key, hubspot_id, fields, fix.
type FindingRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Vec<String>,
    String,
);

/// Up to `limit` findings of a run after finding `after_id`, in the order found; with the last
/// id.
pub async fn findings(
    pool: &PgPool,
    run_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<(Vec<Stored>, i64), sqlx::Error> {
    let rows: Vec<FindingRow> = sqlx::query_as(
        "SELECT id, kind, sql_key, hubspot_id, fields, fix FROM reconcile_findings \
             WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(run_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let last = rows.last().map(|r| r.0).unwrap_or(after_id);
    Ok((
        rows.into_iter()
            .map(|(_, kind, sql_key, hubspot_id, fields, fix)| Stored {
                kind,
                sql_key,
                hubspot_id,
                fields,
                fix,
            })
            .collect(),
        last,
    ))
}
