//! The always-on service (`hubsync run`): supervisor, signals (SIGTERM/SIGINT stop, SIGHUP
//! reload), systemd notifications and watchdog, the health/metrics HTTP listener, and the queue
//! maintenance tasks (lease rescue, pruning, queue metrics).

pub mod health;
pub mod http;
pub mod metrics;
pub mod supervisor;
pub mod systemd;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Need};
use crate::exit::{self, Failure};
use crate::queue::Queue;
use health::Health;
use metrics::Metrics;
use supervisor::{Supervisor, every};

enum Sig {
    Terminate,
    Reload,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Terminate,
            _ = self.int.recv() => Sig::Terminate,
            _ = self.hup.recv() => Sig::Reload,
        }
    }

    async fn terminate(&mut self) {
        loop {
            if let Sig::Terminate = self.recv().await {
                return;
            }
        }
    }
}

/// `hubsync run`: runs until SIGTERM/SIGINT; exits 0 then, 78 on a configuration error.
pub async fn run(config_path: &Path) -> Result<u8, Failure> {
    let config = crate::cli::load(config_path, Need::All)?;
    let _telemetry = crate::telemetry::init(&config.logging)
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
    // Signals are caught from here on, so an early SIGTERM is a clean stop.
    let mut signals =
        Signals::new().map_err(|e| Failure::new(exit::SOFTWARE, format!("signals: {e}")))?;
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());

    let listener = tokio::net::TcpListener::bind(config.service.http_listen)
        .await
        .map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot listen on {}: {e}", config.service.http_listen),
            )
        })?;
    let http_addr = listener.local_addr().ok();
    let http_token = CancellationToken::new();
    let http_state = http::AppState {
        health: health.clone(),
        metrics: metrics.clone(),
        queue: Arc::default(),
    };
    tokio::spawn(http::serve(
        listener,
        http_state.clone(),
        http_token.clone(),
    ));
    tracing::info!(operation = "START", listen = ?http_addr, "hubsync starting");

    // PostgreSQL: retry until it answers (the service stays up, not ready, meanwhile).
    health.set("postgres", false, "connecting");
    let mut failures = 0;
    let pool = loop {
        let attempt = async {
            let pool = crate::pg::connect(&config.postgres).await?;
            crate::pg::migrate(&pool).await?;
            Ok::<_, crate::pg::PgError>(pool)
        };
        tokio::select! {
            result = attempt => match result {
                Ok(pool) => break pool,
                Err(e) => {
                    failures += 1;
                    let delay = crate::support::retry::delay(
                        failures, Duration::from_secs(1), Duration::from_secs(30));
                    health.set("postgres", false, e.to_string());
                    systemd::status(&health.summary());
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "queue database not available");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = signals.terminate() => return Ok(stopped(&http_token)),
                    }
                }
            },
            _ = signals.terminate() => return Ok(stopped(&http_token)),
        }
    };
    health.set("postgres", true, "ok");

    let config = Arc::new(config);
    let (config_tx, config_rx) = watch::channel(config.clone());
    let queue = Queue::new(pool.clone(), config.queue.clone());
    let _ = http_state.queue.set(queue.clone());
    let root = CancellationToken::new();
    let mut sup = Supervisor::new(root.clone(), health.clone());
    spawn_maintenance(&mut sup, &queue, &health, config_rx);

    systemd::ready(&health.summary());
    tracing::info!(operation = "START", status = "ready", "hubsync is ready");

    while let Sig::Reload = signals.recv().await {
        reload(config_path, &config_tx);
    }
    systemd::stopping();
    tracing::info!(operation = "STOP", "stopping: finishing in-flight work");
    let grace = config.service.shutdown_grace;
    tokio::select! {
        clean = sup.shutdown(grace) => {
            if !clean {
                tracing::warn!(grace_ms = grace.as_millis() as u64,
                    "tasks did not finish within the grace period");
            }
        }
        _ = signals.terminate() => tracing::warn!("second stop signal: exiting now"),
    }
    pool.close().await;
    Ok(stopped(&http_token))
}

fn stopped(http: &CancellationToken) -> u8 {
    http.cancel();
    tracing::info!(operation = "STOP", status = "done", "hubsync stopped");
    exit::OK
}

/// SIGHUP: apply a valid configuration; keep the running one (and say why) otherwise.
fn reload(path: &Path, tx: &watch::Sender<Arc<Config>>) {
    systemd::reloading();
    match crate::config::load_file(path, Need::All) {
        Ok(new) => {
            let _ = tx.send(Arc::new(new));
            tracing::info!(
                operation = "RELOAD",
                status = "done",
                "configuration reloaded"
            );
        }
        Err(e) => {
            for p in e.problems() {
                tracing::error!(operation = "RELOAD", path = %p.path, problem = %p, "configuration problem");
            }
            tracing::error!(operation = "RELOAD", status = "rejected", error = %e,
                "configuration reload rejected; keeping the running configuration");
        }
    }
    systemd::ready("ready");
}

fn spawn_maintenance(
    sup: &mut Supervisor,
    queue: &Queue,
    health: &Arc<Health>,
    config: watch::Receiver<Arc<Config>>,
) {
    let interval = config.borrow().service.health_interval;
    let (q, h) = (queue.clone(), health.clone());
    spawn_every(sup, "postgres-check", interval, health, move || {
        let (queue, health) = (q.clone(), h.clone());
        async move {
            let result = sqlx::query("SELECT 1").execute(queue.pool()).await;
            let (ok, detail) = match &result {
                Ok(_) => (true, "ok".to_string()),
                Err(e) => (false, crate::pg::describe(e)),
            };
            if health.set("postgres", ok, detail) {
                let summary = health.summary();
                systemd::status(&summary);
                tracing::warn!(component = "postgres", ready = ok, %summary, "readiness changed");
            }
            Ok(())
        }
    });
    let q = queue.clone();
    let period = (queue.settings().lease / 4).max(Duration::from_secs(1));
    spawn_every(sup, "rescue", period, health, move || {
        let queue = q.clone();
        async move {
            let r = queue.rescue_expired().await?;
            if !(r.returned.is_empty() && r.dead.is_empty() && r.superseded.is_empty()) {
                tracing::warn!(
                    operation = "RESCUE",
                    returned = r.returned.len(),
                    dead = r.dead.len(),
                    superseded = r.superseded.len(),
                    "took back items whose worker stopped renewing its lease"
                );
            }
            Ok(())
        }
    });
    let q = queue.clone();
    spawn_every(sup, "prune", Duration::from_secs(600), health, move || {
        let queue = q.clone();
        async move {
            let s = queue.settings();
            let n = queue.prune(s.retention, s.prune_batch).await?;
            if n > 0 {
                tracing::info!(operation = "PRUNE", deleted = n, "pruned finished items");
            }
            Ok(())
        }
    });
    if let Some(watchdog) = systemd::watchdog_interval() {
        let h = health.clone();
        spawn_every(sup, "watchdog", watchdog / 2, health, move || {
            let health = h.clone();
            async move {
                // Ping only while every supervised loop is alive: a stuck task lets systemd
                // restart the service.
                let stalled = health.stalled(watchdog.max(interval * 3));
                if stalled.is_empty() {
                    systemd::watchdog();
                } else {
                    tracing::error!(?stalled, "tasks stalled; withholding the watchdog ping");
                }
                Ok(())
            }
        });
    }
}

/// Supervises a loop that runs `step` every `period`.
fn spawn_every<S, Fut>(
    sup: &mut Supervisor,
    name: &'static str,
    period: Duration,
    health: &Arc<Health>,
    step: S,
) where
    S: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let health = health.clone();
    sup.spawn(name, move |token| {
        let (health, step) = (health.clone(), step.clone());
        async move { every(name, period, &health, &token, step).await }
    });
}
