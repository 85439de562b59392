//! The `sync_jobs` table: creating a job (refused while one of the same kind and object is
//! queued or running), reading and listing jobs, cancelling, and the claim, lease renewal and
//! settling that keep a job run by one instance at a time. Every write of a held job names its
//! holder, so an instance that lost its lease changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::{JobKind, JobRequest, JobStatus};
use crate::queue::Direction;

/// A job as stored, shown by the API and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub job_id: i64,
    pub kind: JobKind,
    pub object: String,
    pub direction: Direction,
    pub members: Vec<String>,
    pub dry_run: bool,
    pub status: JobStatus,
    /// api, cli or schedule.
    pub requested_by: String,
    pub schedule: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    /// How often an instance claimed it (more than 1: resumed).
    pub claims: i32,
    /// How often it was taken over from an instance that stopped while running it.
    pub resumes: i32,
    pub progress: Progress,
    /// Records by outcome.
    pub counts: Value,
    pub errors: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub(crate) locked_by: Option<String>,
}

impl Job {
    /// Who holds the job while it runs: `[instance@]host:pid/jobs`.
    pub fn holder(&self) -> Option<&str> {
        self.locked_by.as_deref()
    }
}

/// Records done so far, of how many (when known).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: i64,
    pub total: Option<i64>,
}

const COLUMNS: &str = "id, kind, object, direction, members, dry_run, status, requested_by, \
    schedule, scheduled_for, cancel_requested, claims, resumes, done, total, counts, errors, created_at, \
    started_at, finished_at, locked_by";

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Job {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let bad = |column: &str, value: &str| sqlx::Error::ColumnDecode {
            index: column.into(),
            source: format!("unknown value {value}").into(),
        };
        let kind: String = row.try_get("kind")?;
        let status: String = row.try_get("status")?;
        let direction: String = row.try_get("direction")?;
        let members: Value = row.try_get("members")?;
        Ok(Job {
            job_id: row.try_get("id")?,
            kind: JobKind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
            object: row.try_get("object")?,
            direction: direction
                .parse()
                .map_err(|_| bad("direction", &direction))?,
            members: serde_json::from_value(members).unwrap_or_default(),
            dry_run: row.try_get("dry_run")?,
            status: JobStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
            requested_by: row.try_get("requested_by")?,
            schedule: row.try_get("schedule")?,
            scheduled_for: row.try_get("scheduled_for")?,
            cancel_requested: row.try_get("cancel_requested")?,
            claims: row.try_get("claims")?,
            resumes: row.try_get("resumes")?,
            progress: Progress {
                done: row.try_get("done")?,
                total: row.try_get("total")?,
            },
            counts: row.try_get("counts")?,
            errors: row.try_get("errors")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            locked_by: row.try_get("locked_by")?,
        })
    }
}

/// What asking for a job gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new queued job.
    Job(i64),
    /// Refused: this job of the same kind and object is queued or running.
    Busy(i64),
    /// A schedule's run that another instance has already started.
    AlreadyFired,
}

/// Who asked for a job.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    Api,
    Cli,
    /// A schedule, for the run at this time.
    Schedule(&'a str, DateTime<Utc>),
}

/// Queues a job, unless one of the same kind and object is queued or running.
pub async fn create(
    pool: &PgPool,
    request: &JobRequest,
    by: Requester<'_>,
) -> Result<Created, sqlx::Error> {
    let (requested_by, schedule, fire) = match by {
        Requester::Api => ("api", None, None),
        Requester::Cli => ("cli", None, None),
        Requester::Schedule(name, at) => ("schedule", Some(name), Some(at)),
    };
    // A job that ends between the refused insert and the look is no reason to refuse: again.
    for _ in 0..3 {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO sync_jobs (kind, object, direction, members, dry_run, requested_by, \
               schedule, scheduled_for) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(request.kind.as_str())
        .bind(&request.object)
        .bind(request.direction.as_str())
        .bind(serde_json::json!(request.members))
        .bind(request.dry_run)
        .bind(requested_by)
        .bind(schedule)
        .bind(fire)
        .fetch_optional(pool)
        .await?;
        if let Some(id) = id {
            return Ok(Created::Job(id));
        }
        if let (Some(name), Some(at)) = (schedule, fire) {
            let fired: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sync_jobs WHERE schedule = $1 AND scheduled_for = $2)",
            )
            .bind(name)
            .bind(at)
            .fetch_one(pool)
            .await?;
            if fired {
                return Ok(Created::AlreadyFired);
            }
        }
        if let Some(active) = active(pool, request.kind, &request.object).await? {
            return Ok(Created::Busy(active));
        }
    }
    Err(sqlx::Error::Protocol(
        "a job of this kind and object kept starting and ending".into(),
    ))
}

/// The queued or running job of `kind` and `object`.
pub async fn active(
    pool: &PgPool,
    kind: JobKind,
    object: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM sync_jobs WHERE kind = $1 AND object = $2 \
         AND status IN ('queued', 'running')",
    )
    .bind(kind.as_str())
    .bind(object)
    .fetch_optional(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The newest `limit` jobs, newest first.
pub async fn list(pool: &PgPool, limit: u32) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sync_jobs ORDER BY id DESC LIMIT $1"
    )))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// Cancelled (a queued job), or asked to stop (a running one: its runner stops soon).
    Done(Job),
    /// The job had already finished.
    Finished(Job),
    NotFound,
}

/// Cancels a queued job at once; asks a running one's runner to stop.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<Cancelled, sqlx::Error> {
    let job: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_jobs SET \
           cancel_requested = true, \
           status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
           finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END, \
           locked_by = CASE WHEN status = 'queued' THEN NULL ELSE locked_by END, \
           updated_at = now() \
         WHERE id = $1 AND status IN ('queued', 'running') RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(match job {
        Some(job) => Cancelled::Done(job),
        None => match get(pool, id).await? {
            Some(job) => Cancelled::Finished(job),
            None => Cancelled::NotFound,
        },
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Claims the oldest job no instance holds: queued, or running under a lease that has passed or
/// held by one of `gone` (holders known to have ended). A job claimed again is noted as resumed.
pub async fn claim(
    pool: &PgPool,
    holder: &str,
    lease: Duration,
    gone: &[String],
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_jobs SET status = 'running', locked_by = $1, \
           locked_until = now() + $2 * interval '1 millisecond', claims = claims + 1, \
           resumes = resumes + (status = 'running')::int, \
           started_at = coalesce(started_at, now()), updated_at = now(), \
           errors = CASE WHEN status = 'running' THEN errors || jsonb_build_array(jsonb_build_object( \
             'at', now(), 'message', 'resumed: the instance running it stopped')) ELSE errors END \
         WHERE id = ( \
           SELECT id FROM sync_jobs \
           WHERE status = 'queued' \
              OR (status = 'running' AND (locked_until < now() OR locked_by = ANY($3))) \
           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(holder)
    .bind(millis(lease))
    .bind(gone)
    .fetch_optional(pool)
    .await
}

/// The holders of running jobs.
pub async fn holders(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT locked_by FROM sync_jobs WHERE status = 'running' AND locked_by IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Held,
    /// Still held; a cancel asks the runner to stop.
    CancelRequested,
    /// Another instance holds the job now (or it was settled): stop without writing.
    Lost,
}

/// Renews the lease of a held job and stores its progress so far.
pub async fn beat(
    pool: &PgPool,
    id: i64,
    holder: &str,
    lease: Duration,
    progress: &Snapshot,
) -> Result<Beat, sqlx::Error> {
    let cancel: Option<bool> = sqlx::query_scalar(
        "UPDATE sync_jobs SET locked_until = now() + $3 * interval '1 millisecond', \
           done = $4, total = $5, counts = $6, updated_at = now() \
         WHERE id = $1 AND locked_by = $2 AND status = 'running' RETURNING cancel_requested",
    )
    .bind(id)
    .bind(holder)
    .bind(millis(lease))
    .bind(progress.done)
    .bind(progress.total)
    .bind(&progress.counts)
    .fetch_optional(pool)
    .await?;
    Ok(match cancel {
        None => Beat::Lost,
        Some(true) => Beat::CancelRequested,
        Some(false) => Beat::Held,
    })
}

/// A running job's progress and counts, as its runner last saw them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub done: i64,
    pub total: Option<i64>,
    pub counts: Value,
}

/// Settles a held job as `status` with its final progress, adding `error` to its errors.
/// False when the job was not held by `holder` any more.
pub async fn settle(
    pool: &PgPool,
    id: i64,
    holder: &str,
    status: JobStatus,
    progress: &Snapshot,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET status = $3, done = $4, total = $5, counts = $6, \
           errors = CASE WHEN $7::text IS NULL THEN errors \
             ELSE errors || jsonb_build_array(jsonb_build_object('at', now(), 'message', $7::text)) END, \
           finished_at = now(), updated_at = now(), locked_by = NULL, locked_until = NULL \
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(holder)
    .bind(status.as_str())
    .bind(progress.done)
    .bind(progress.total)
    .bind(&progress.counts)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a held job back to the queue (this instance is stopping): another instance, or this
/// one after its restart, resumes it.
pub async fn release(
    pool: &PgPool,
    id: i64,
    holder: &str,
    progress: &Snapshot,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, \
           done = $3, total = $4, counts = $5, updated_at = now() \
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(holder)
    .bind(progress.done)
    .bind(progress.total)
    .bind(&progress.counts)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
