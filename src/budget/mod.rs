//! The HubSpot budget every hubsync instance on one queue database shares: HubSpot counts its
//! rolling window per app and its daily limit per account, so instances take their request slots
//! from one log in PostgreSQL ([`shared`]) and fall back to a share of their own while it is
//! unreachable ([`link`]).

pub mod link;
pub mod shared;

use std::sync::{Arc, Mutex};

pub use shared::{SharedBudget, SharedStatus};

use crate::hubspot::{HubSpotSettings, Limiter};

/// Budgets this process joined, left when a command ends ([`leave_all`]).
static JOINED: Mutex<Vec<Arc<SharedBudget>>> = Mutex::new(Vec::new());

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
            let stop = stopper();
            tokio::spawn(budget.clone().heartbeats(stop));
            lock(&JOINED).push(budget.clone());
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

/// Stops the heartbeats and leaves every budget this process joined, so the other instances
/// get its share back at once (a killed process's share comes back after a lease).
pub async fn leave_all() {
    if let Some(stop) = STOP.get() {
        stop.cancel();
    }
    let joined: Vec<Arc<SharedBudget>> = lock(&JOINED).drain(..).collect();
    for budget in joined {
        budget.leave().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
