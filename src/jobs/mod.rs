//! Jobs: the backfills, resyncs and reconciles that operators start through the job API,
//! `hubsync jobs` or a schedule — what a job is and how a request for one is checked (pure), the
//! `sync_jobs` table, the runner every instance has, and the cron schedules that start them.

pub mod request;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use request::{FieldError, JobRequest, parse_request};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum JobKind {
    /// Queue every record of the object again (`hubsync backfill`), resumable.
    Backfill,
    /// Queue the named members' current SQL Server rows for HubSpot (`hubsync resync`).
    Resync,
    /// Compare both sides with the record links and queue what drifted (`hubsync reconcile`).
    Reconcile,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Backfill, JobKind::Resync, JobKind::Reconcile];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backfill => "backfill",
            JobKind::Resync => "resync",
            JobKind::Reconcile => "reconcile",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Completed, failed or cancelled: nothing more happens to the job.
    pub fn finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Jobs listed at most and by default (`GET /api/v1/jobs?limit=N`, `hubsync jobs list`).
pub const LIST_MAX: u32 = 100;
pub const LIST_DEFAULT: u32 = 20;

/// `limit` of a job list: 1–100, 20 when left out.
pub fn list_limit(limit: Option<&str>) -> Result<u32, FieldError> {
    let Some(text) = limit else {
        return Ok(LIST_DEFAULT);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=LIST_MAX).contains(&n) => Ok(n),
        _ => Err(FieldError::new(
            "limit",
            format!("must be a whole number from 1 to {LIST_MAX}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_read_back_what_they_write() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("Backfill"), None);
        assert_eq!(JobStatus::parse("cancelled"), Some(JobStatus::Cancelled));
        assert!(JobStatus::Failed.finished() && !JobStatus::Running.finished());
    }

    #[test]
    fn list_limits_are_one_to_a_hundred() {
        assert_eq!(list_limit(None), Ok(20));
        assert_eq!(list_limit(Some("100")), Ok(100));
        assert_eq!(list_limit(Some("1")), Ok(1));
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(list_limit(Some(bad)).unwrap_err().field, "limit", "{bad}");
        }
    }
}
