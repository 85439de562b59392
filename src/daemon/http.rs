//! The HTTP listener: `/healthz` (alive), `/readyz` (dependencies reachable; JSON naming what is
//! not), `/metrics` (Prometheus text) and, with a token configured, the job API (see
//! [`super::jobs_api`]), hardened against clients that hold connections open: a header-read
//! timeout, a cap on open connections (a new one closes the oldest) and a small request body
//! limit.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
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
    /// The job API, when a token is configured; None: its routes answer 404.
    pub api: Option<Arc<super::jobs_api::Api>>,
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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    /// The job API's bearer token.
    Token,
}

/// One route of the listener.
pub struct Route {
    pub path: &'static str,
    pub method: Method,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

/// Every route the listener serves: the probes and metrics, and the job API's when it is on.
pub fn routes(api_on: bool) -> Vec<Route> {
    let open = |path, handler| Route {
        path,
        method: Method::GET,
        access: Access::Open,
        handler,
    };
    let mut routes = vec![
        open("/healthz", get(|| async { "ok\n" })),
        open("/readyz", get(readyz)),
        open("/metrics", get(metrics_text)),
    ];
    if api_on {
        routes.extend(super::jobs_api::routes());
    }
    routes
}

pub fn router(state: AppState) -> Router {
    let mut open = Router::new();
    let mut guarded = Router::new();
    for route in routes(state.api.is_some()) {
        match route.access {
            Access::Open => open = open.route(route.path, route.handler),
            Access::Token => guarded = guarded.route(route.path, route.handler),
        }
    }
    if state.api.is_some() {
        let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::jobs_api::require_token,
        ));
        open = open.merge(guarded);
    }
    open.with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let ready = s.health.ready();
    let mut body = serde_json::json!({
        "ready": ready,
        "not_ready": s.health.not_ready(),
        "components": s.health.public_components(),
    });
    // Paused directions (`hubsync pause`) are shown; they do not make the service unready.
    if let Some(pauses) = pauses(&s).await {
        body["paused"] = pauses
            .iter()
            .map(|p| serde_json::json!({"object": p.object, "direction": p.direction, "since": p.paused_at}))
            .collect();
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// The paused directions, when the queue database answers within 5 s.
async fn pauses(s: &AppState) -> Option<Vec<crate::queue::Pause>> {
    let queue = s.queue.get()?;
    match tokio::time::timeout(Duration::from_secs(5), queue.pauses()).await {
        Ok(Ok(pauses)) => Some(pauses),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "paused directions unavailable");
            None
        }
        Err(_) => None,
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.health.ready()));
    if let Some(limiter) = s.limiter() {
        s.metrics.set_hubspot(&limiter.stats());
        if let Some(shared) = limiter.shared() {
            s.metrics.set_shared(&shared.status());
        }
    }
    s.metrics.set_poll_lags(&s.health.poll_lags());
    if let Some(pauses) = pauses(&s).await {
        s.metrics.set_pauses(&pauses);
    }
    // Queue gauges are read at scrape time, so they are never staler than the scrape.
    if let Some(queue) = s.queue.get() {
        let runs = tokio::time::timeout(
            Duration::from_secs(5),
            crate::sync::reconcile::store::latest(queue.pool()),
        )
        .await;
        match runs {
            Ok(Ok(runs)) => s.metrics.set_reconciles(&runs),
            Ok(Err(e)) => tracing::warn!(error = %e, "reconcile metrics unavailable"),
            Err(_) => tracing::warn!("reconcile metrics timed out"),
        }
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

/// A connection must send a request's headers within this time, and an idle keep-alive
/// connection is closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at most; accepting one more closes the oldest, so clients that hold
/// connections open can neither exhaust file descriptors nor lock the probes out.
pub const MAX_CONNECTIONS: usize = 64;
/// Only job requests have a body, and they are small.
const MAX_BODY: usize = 16 * 1024;
/// The longest a connection lives, whatever it does (a scraper reconnects).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Serves until `token` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let router = router(state).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    // Oldest first; a connection's token is cancelled when it ends or is evicted.
    let mut open: std::collections::VecDeque<CancellationToken> = Default::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP listener cannot accept a connection");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
        };
        open.retain(|c| !c.is_cancelled());
        while open.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = open.pop_front() {
                oldest.cancel();
            }
        }
        let closed = token.child_token();
        open.push_back(closed.clone());
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tasks.spawn(async move {
            let _ends = closed.clone().drop_guard();
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = closed.cancelled() => {}
                _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
            }
        });
    }
    tasks.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(api: bool) -> AppState {
        let config = crate::config::load_str(
            "service:\n  api_token: 0123456789abcdef0123\n",
            crate::config::Need::Nothing,
            &|_| None,
        )
        .unwrap();
        AppState {
            health: Arc::default(),
            metrics: Arc::default(),
            queue: Arc::default(),
            limiter: Arc::default(),
            api: api
                .then(|| super::super::jobs_api::Api::new(&config, Arc::default()))
                .flatten(),
        }
    }

    #[test]
    fn the_router_builds_with_the_job_api_on_and_off() {
        assert!(state(true).api.is_some());
        let _on = router(state(true));
        let _off = router(state(false));
        assert_eq!(routes(false).len(), 3);
        assert!(routes(true).len() > 3);
    }
}
