//! The durable work queue in PostgreSQL (`sync_queue`): enqueue with coalescing, claim with
//! leases, heartbeat, settle, rescue of expired leases, pruning, operator commands, and wake-ups
//! by LISTEN/NOTIFY with a polling fallback. No transaction or row lock is held while a caller
//! does outside work: every call here is one short statement or transaction.

mod enqueue;
pub use enqueue::{Seen, enqueue_on, enqueue_with};
mod maintenance;
pub use maintenance::{Rescued, process_of, prune_once};
mod ops;
mod pauses;
pub use pauses::Pause;
mod retention;
pub use retention::{Enforced, reasons_without_values, without_values};
mod wake;
mod work;

pub use ops::{OpReport, RetrySelection, StuckItem, SummaryRow};
pub use wake::Waker;
pub use work::{ClaimedItem, Outcome, Settled};

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::QueueSettings;

/// NOTIFY channel that tells idle workers new work is due.
pub const WAKE_CHANNEL: &str = "hubsync_queue";

/// Which way an item syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Direction {
    /// A SQL Server change to send to HubSpot.
    ToHubspot,
    /// A HubSpot change to write back to SQL Server.
    ToSql,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToHubspot => "to_hubspot",
            Direction::ToSql => "to_sql",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "to_hubspot" => Ok(Direction::ToHubspot),
            "to_sql" => Ok(Direction::ToSql),
            other => Err(format!(
                "unknown direction `{other}` (to_hubspot or to_sql)"
            )),
        }
    }
}

/// What the source did to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Upsert,
    Archive,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert",
            Operation::Archive => "archive",
        }
    }
}

/// One change read from a source, to enqueue.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub record_key: String,
    pub operation: Operation,
    /// Snapshot of the source record.
    pub payload: serde_json::Value,
    /// Version of the snapshot at the source; a change never replaces a newer one.
    pub source_version: i64,
}

/// One failure of an item: kept in `sync_queue.errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    /// `transient`, `validation`, `hubspot`, `sql_server`, `lease_expired`, …
    pub kind: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The failure says when trying again can help (HubSpot's daily budget resets, an account
    /// migration ends): the item waits that long without being charged an attempt.
    #[serde(skip)]
    pub wait: Option<std::time::Duration>,
}

impl ItemError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            field: None,
            rule: None,
            http_status: None,
            wait: None,
        }
    }

    /// A HubSpot call that failed as a whole; waits out a daily budget or a migration.
    pub fn hubspot(e: &crate::hubspot::HubSpotError) -> Self {
        Self {
            wait: e.retry_after(),
            ..Self::new("hubspot", e.to_string())
        }
    }

    /// PostgreSQL failed a read or write the item needed: a transient failure, described
    /// without connection details.
    pub fn postgres(e: &sqlx::Error) -> Self {
        Self::new("postgres", crate::pg::describe(e))
    }

    /// A one-line form for `sync_queue.last_error`.
    pub fn summary(&self) -> String {
        match (&self.field, &self.rule) {
            (Some(field), Some(rule)) => format!("{field} [{rule}]: {}", self.message),
            (Some(field), None) => format!("{field}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// Queue errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database error: {}", crate::pg::describe(.0))]
    Db(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// Handle on the queue: a pool and the queue settings. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: PgPool,
    settings: QueueSettings,
}

impl Queue {
    pub fn new(pool: PgPool, settings: QueueSettings) -> Self {
        Self { pool, settings }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn lease(&self) -> Duration {
        self.settings.lease
    }
}

/// A Rust duration as a PostgreSQL interval parameter (microseconds).
fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}
