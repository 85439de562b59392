//! The HTTP listener: `/healthz` (alive), `/readyz` (dependencies reachable; JSON naming what is
//! not) and `/metrics` (Prometheus text).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::metrics::Metrics;
use crate::queue::Queue;

/// What the handlers read: health, metrics, and the queue once PostgreSQL is connected.
#[derive(Clone)]
pub struct AppState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<OnceLock<Queue>>,
    /// The process's HubSpot limiter, once the sync engine is built (a reload may replace it).
    pub limiter: Arc<RwLock<Option<Arc<crate::hubspot::Limiter>>>>,
}

impl AppState {
    pub fn set_limiter(&self, limiter: Arc<crate::hubspot::Limiter>) {
        *self.limiter.write().unwrap_or_else(|p| p.into_inner()) = Some(limiter);
    }

    fn limiter(&self) -> Option<Arc<crate::hubspot::Limiter>> {
        self.limiter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let ready = s.health.ready();
    let body = serde_json::json!({
        "ready": ready,
        "not_ready": s.health.not_ready(),
        "components": s.health.components(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.health.ready()));
    if let Some(limiter) = s.limiter() {
        s.metrics.set_hubspot(&limiter.stats());
    }
    s.metrics.set_poll_lags(&s.health.poll_lags());
    // Queue gauges are read at scrape time, so they are never staler than the scrape.
    if let Some(queue) = s.queue.get() {
        let summary = tokio::time::timeout(Duration::from_secs(5), queue.summary()).await;
        match summary {
            Ok(Ok(rows)) => s.metrics.set_queue(&rows),
            Ok(Err(e)) => tracing::warn!(error = %e, "queue metrics unavailable"),
            Err(_) => tracing::warn!("queue metrics timed out"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serves until `token` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    token: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await?;
    Ok(())
}
