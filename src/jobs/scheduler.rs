//! Fires schedules: waits on its clock for the next run of any schedule, then asks for each
//! due schedule's job. A run that would overlap a queued or running job of the same kind and
//! object is skipped with a log line; a run another instance already started is left to it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::schedule::{Clock, Schedule};
use super::store::{self, Created, Requester};

/// What firing one schedule's run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Started(i64),
    /// Skipped: this job of the same kind and object was still queued or running.
    Overlapped(i64),
    /// Another instance started this run.
    Elsewhere,
}

/// Asks for `schedule`'s job for its run at `at`, and logs what happened.
pub async fn fire(pool: &PgPool, schedule: &Schedule, at: DateTime<Utc>) -> anyhow::Result<Fired> {
    let r = &schedule.request;
    let fired = match store::create(pool, r, Requester::Schedule(&schedule.name, at)).await? {
        Created::Job(id) => {
            tracing::info!(operation = "SCHEDULE", schedule = %schedule.name, job_id = id,
                kind = %r.kind, object = %r.object, run = %at.to_rfc3339(),
                "schedule started a job");
            Fired::Started(id)
        }
        Created::Busy(id) => {
            tracing::info!(operation = "SCHEDULE", schedule = %schedule.name, status = "skipped",
                running_job_id = id, kind = %r.kind, object = %r.object, run = %at.to_rfc3339(),
                "schedule run skipped: a job of the same kind and object is still queued or running");
            Fired::Overlapped(id)
        }
        Created::AlreadyFired => {
            tracing::debug!(operation = "SCHEDULE", schedule = %schedule.name,
                run = %at.to_rfc3339(), "another instance started this run");
            Fired::Elsewhere
        }
    };
    Ok(fired)
}

/// The next run of each schedule after `after`.
pub fn next_runs(
    schedules: &[Schedule],
    after: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> Vec<(&Schedule, Option<DateTime<Utc>>)> {
    schedules
        .iter()
        .map(|s| (s, s.next_after(after, zone)))
        .collect()
}

/// A schedule as `GET /api/v1/schedules` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub kind: super::JobKind,
    pub object: String,
    pub direction: crate::queue::Direction,
    pub dry_run: bool,
    pub cron: String,
    pub time_zone: String,
    pub next_run: Option<DateTime<Utc>>,
}

/// Every schedule with its next run after `now`.
pub fn views(schedules: &[Schedule], now: DateTime<Utc>, zone: chrono_tz::Tz) -> Vec<ScheduleView> {
    next_runs(schedules, now, zone)
        .into_iter()
        .map(|(s, next)| ScheduleView {
            name: s.name.clone(),
            kind: s.request.kind,
            object: s.request.object.clone(),
            direction: s.request.direction,
            dry_run: s.request.dry_run,
            cron: s.cron_text.clone(),
            time_zone: zone.name().to_string(),
            next_run: next,
        })
        .collect()
}

/// Fires `schedules` on `clock` until `stop` is cancelled; `started` is woken when a job was
/// queued. Counts from the clock's time when called (not when first polled). Runs missed while
/// the clock jumped ahead are skipped, not caught up.
pub fn run(
    pool: PgPool,
    schedules: Vec<Schedule>,
    zone: chrono_tz::Tz,
    clock: Arc<dyn Clock>,
    started: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let mut after = clock.now();
    async move {
        loop {
            let Some(next) = next_runs(&schedules, after, zone)
                .into_iter()
                .filter_map(|(_, t)| t)
                .min()
            else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = clock.sleep_until(next) => {}
            }
            let now = clock.now();
            if now < next {
                continue;
            }
            for (schedule, at) in next_runs(&schedules, after, zone) {
                if at != Some(next) {
                    continue;
                }
                match fire(&pool, schedule, next).await {
                    Ok(Fired::Started(_)) => started.notify_one(),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(operation = "SCHEDULE", schedule = %schedule.name,
                        error = %format!("{e:#}"), "schedule run could not start its job"),
                }
            }
            after = now.max(next);
        }
    }
}
