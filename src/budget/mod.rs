//! The HubSpot budget every hubsync instance on one queue database shares: HubSpot counts its
//! rolling window per app and its daily limit per account, so instances take their request slots
//! from one log in PostgreSQL ([`shared`]) and fall back to a share of their own while it is
//! unreachable ([`link`]).

pub mod link;
pub mod shared;

use crate::support::lock;
use std::sync::{Arc, Mutex};

pub use shared::{SharedBudget, SharedStatus};

use crate::hubspot::{HubSpotSettings, Limiter};

/// The heartbeat tasks of the budgets this process joined; each leaves its budget when
/// stopped ([`leave_all`]).
static JOINED: Mutex<Vec<tokio::task::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Joins the shared budget of the queue database behind `pool` as `instance`, makes `limiter`
/// take its slots there, and keeps the heartbeat going until [`leave_all`]. A database that
/// does not answer leaves the limiter pacing alone (a warning): the caller has just used the
/// same database, so this is rare.
pub async fn share(
    limiter: &Limiter,
    pool: &sqlx::PgPool,
    instance: &str,
    settings: &HubSpotSettings,
) -> Option<Arc<SharedBudget>> {
    match SharedBudget::join(pool, instance, settings).await {
        Ok(budget) => {
            limiter.share_through(budget.clone());
            let beats = tokio::spawn(budget.clone().heartbeats(stopper()));
            lock(&JOINED).push(beats);
            Some(budget)
        }
        Err(e) => {
            tracing::warn!(
                operation = "LIMITER",
                error = %crate::pg::describe(&e),
                "could not join the shared HubSpot budget; this instance paces alone"
            );
            None
        }
    }
}

static STOP: std::sync::OnceLock<tokio_util::sync::CancellationToken> = std::sync::OnceLock::new();

fn stopper() -> tokio_util::sync::CancellationToken {
    STOP.get_or_init(tokio_util::sync::CancellationToken::new)
        .child_token()
}

/// Stops the heartbeats and waits while each leaves its budget (after its last heartbeat, so
/// none registers the process again), so the other instances get its share back at once (a
/// killed process's share comes back after a hold).
pub async fn leave_all() {
    if let Some(stop) = STOP.get() {
        stop.cancel();
    }
    let joined: Vec<tokio::task::JoinHandle<()>> = lock(&JOINED).drain(..).collect();
    for beats in joined {
        // A heartbeat and the leave each give up after their own timeout.
        let _ = tokio::time::timeout(3 * shared::CALL_TIMEOUT, beats).await;
    }
}

/// One instance of the shared budget as `hubsync queue stats` shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct InstanceRow {
    pub instance: String,
    /// `shared`, or `local` when it last reported pacing on its own share.
    pub mode: String,
    pub heartbeat_age_s: f64,
    /// Requests per 10 s window it may send on its own.
    pub share: i32,
    /// Standard-lane grants within its last minute.
    pub recent_grants: i32,
    pub granted: i64,
    pub waited_seconds: f64,
}

/// Every instance registered in the shared budget, by name.
pub async fn instances(pool: &sqlx::PgPool) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.instance, i.mode, \
                extract(epoch FROM clock_timestamp() - i.heartbeat_at)::float8 AS heartbeat_age_s, \
                coalesce(s.share, 0) AS share, i.recent_grants, i.granted, i.waited_seconds \
         FROM rate_instances i \
         LEFT JOIN rate_shares s ON s.instance = i.instance AND s.lane = 'standard' \
         ORDER BY i.instance",
    )
    .fetch_all(pool)
    .await
}

/// How `queue stats` names an instance's state from its heartbeat's age.
pub fn heartbeat_state(age: std::time::Duration) -> &'static str {
    let timing = link::Timing::default();
    if age <= timing.stale {
        "live"
    } else if age <= timing.hold(shared::spans()[0]) {
        "silent (share held back)"
    } else {
        "gone"
    }
}
