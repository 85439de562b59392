//! The always-on service (`hubsync run`): supervisor, signals (SIGTERM/SIGINT stop, SIGHUP
//! reload), systemd notifications and watchdog, the health/metrics HTTP listener, and the queue
//! maintenance tasks (lease rescue, pruning, queue metrics).

pub mod health;
pub mod http;
pub mod jobs_api;
pub mod metrics;
pub mod reload;
pub mod supervisor;
pub mod systemd;
pub mod tasks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Need};
use crate::exit::{self, Failure};
use crate::queue::{Direction, Queue};
use crate::sync::dry_run::Scope as DryScope;
use health::Health;
use metrics::Metrics;
use supervisor::{Supervisor, every};
use tasks::SyncTasks;

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

/// Allocator settings the service runs with (`deploy/hubsync.service` sets them): freed memory
/// goes back to the system at once, so a months-long process stays near what it uses. Batch
/// commands keep the allocator's faster defaults.
pub const SERVICE_ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// Options of `hubsync run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Poll every object once, drain the queue until nothing is due, and exit: 0, or 1 when
    /// anything was rejected or gave up (for cron and tests).
    #[arg(long)]
    pub once: bool,
    /// With --once: read both sides, map, validate and diff, and print what would be done (one
    /// JSON line per record) without writing anywhere.
    #[arg(long, requires = "once")]
    pub dry_run: bool,
    /// With --dry-run: print the planned values as they are; personal data is masked otherwise.
    #[arg(long, requires = "dry_run")]
    pub unmask: bool,
}

/// `hubsync run`: runs until SIGTERM/SIGINT; exits 0 then, 78 on a configuration error.
pub async fn run(config_path: &Path, args: RunArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::All)?;
    if args.dry_run {
        crate::telemetry::init_cli();
        let (queue, engine) = crate::app::engine(&config).await?;
        let plan: Vec<_> = engine
            .objects
            .iter()
            .flat_map(|o| [(o, Direction::ToHubspot), (o, Direction::ToSql)])
            .collect();
        return crate::app::dry_run(&queue, &plan, DryScope::SinceCursor, args.unmask).await;
    }
    let _telemetry = crate::telemetry::init(&config.logging)
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
    if args.once {
        return run_once(&config).await;
    }
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
    let jobs_wake = Arc::new(tokio::sync::Notify::new());
    let http_state = http::AppState {
        health: health.clone(),
        metrics: metrics.clone(),
        queue: Arc::default(),
        limiter: Arc::default(),
        api: jobs_api::Api::new(&config, jobs_wake.clone()),
    };
    tokio::spawn(http::serve(
        listener,
        http_state.clone(),
        http_token.clone(),
    ));
    tracing::info!(operation = "START", listen = ?http_addr, "hubsync starting");
    if http_state.api.is_some() {
        tracing::info!(
            operation = "START",
            "job API on (/api/v1/, bearer token from service.api_token)"
        );
    } else {
        tracing::info!(
            operation = "START",
            "job API off: its routes answer 404; set HUBSYNC_API_TOKEN (service.api_token) to turn it on"
        );
    }

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
    let queue = Queue::new(pool.clone(), config.queue.clone());
    let _ = http_state.queue.set(queue.clone());
    let engine = crate::sync::engine::build(&config, &queue)
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
    crate::budget::share(
        engine.hubspot.limiter(),
        &pool,
        &instance(&config),
        &config.hubspot,
    )
    .await;
    http_state.set_limiter(engine.hubspot.limiter().clone());
    // HubSpot may be down now; a property problem is logged, the service still starts (and
    // a reload only applies a configuration that passes). The daily budget is read first, so
    // nothing is sent before hubsync knows what the account has left today.
    let problems = tokio::select! {
        problems = reload::check_hubspot(&engine, &config) => problems,
        _ = signals.terminate() => return Ok(stopped(&http_token)),
    };
    for problem in problems {
        tracing::error!(operation = "START", %problem, "HubSpot property check");
    }
    for clash in reload::portal_clashes(&engine.hubspot, &config).await {
        tracing::warn!(operation = "START", %clash, "portal write rule");
    }
    for note in config.notes() {
        tracing::warn!(operation = "START", %note, "configuration note");
    }
    if let Err(e) = rescue_from_ended(&queue).await {
        tracing::warn!(error = %format!("{e:#}"), "could not take back an ended process's items");
    }
    let mut maintenance = Supervisor::new(CancellationToken::new(), health.clone());
    spawn_maintenance(&mut maintenance, &queue, &health, &config);
    let ctx = tasks::Context {
        health: health.clone(),
        metrics,
        pool: pool.clone(),
        instance: instance(&config),
        jobs_wake,
        clock: Arc::new(crate::jobs::schedule::SystemClock),
    };
    let first_checks = tasks::PROBE_TIMEOUT.max(config.hubspot.timeout);
    let mut sync = SyncTasks::start(&ctx, config, engine).await;
    // READY=1 once every dependency has been checked (ready or not: /readyz tells).
    let checked = health.reported(&["sql_server", "hubspot", "pollers"]);
    tokio::select! {
        r = tokio::time::timeout(first_checks, checked) => if r.is_err() {
            tracing::warn!("first readiness checks did not finish in time");
        },
        _ = signals.terminate() => {
            let grace = sync.config.service.shutdown_grace;
            sync.stop(grace).await;
            return Ok(stopped(&http_token));
        }
    }

    systemd::ready(&health.summary());
    tracing::info!(operation = "START", status = "ready", "hubsync is ready");

    while let Sig::Reload = signals.recv().await {
        sync = reload(config_path, sync, &ctx, &queue, &http_state).await;
    }
    systemd::stopping();
    tracing::info!(operation = "STOP", "stopping: finishing in-flight work");
    let grace = sync.config.service.shutdown_grace;
    let stop_all = async {
        let clean = sync.stop(grace).await;
        maintenance.shutdown(grace, &CancellationToken::new()).await;
        clean
    };
    tokio::select! {
        clean = stop_all => {
            if !clean {
                tracing::warn!(grace_ms = grace.as_millis() as u64,
                    "tasks did not finish within the grace period");
            }
        }
        _ = signals.terminate() => tracing::warn!("second stop signal: exiting now"),
    }
    crate::budget::leave_all().await;
    // Connections still held by a task that did not stop must not hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
    Ok(stopped(&http_token))
}

/// `run --once`: poll each object once and drain its queue.
async fn run_once(config: &Config) -> Result<u8, Failure> {
    let (queue, engine) = crate::app::engine(config).await?;
    let worker_name = format!("{}/once", instance(config));
    let mut failed = 0;
    let unavailable = |e: anyhow::Error| Failure::new(exit::UNAVAILABLE, format!("{e:#}"));
    for object in &engine.objects {
        let sql = object.poller.poll_once().await.map_err(unavailable)?;
        let out = object
            .worker(&queue, &worker_name)
            .drain()
            .await
            .map_err(unavailable)?;
        let hs = object
            .hubspot_poller
            .poll_once()
            .await
            .map_err(unavailable)?;
        let back = object
            .sql_worker(&queue, &worker_name)
            .drain()
            .await
            .map_err(unavailable)?;
        failed += out.rejected + out.dead + back.rejected + back.dead;
        tracing::info!(operation = "RUN_ONCE", object = %object.name,
            sql_rows_read = sql.rows_read, hubspot_records_read = hs.rows_read,
            to_hubspot_done = out.done, to_hubspot_rejected = out.rejected,
            to_sql_done = back.done, to_sql_rejected = back.rejected,
            retried = out.retried + back.retried, dead = out.dead + back.dead,
            "poll and drain finished");
    }
    Ok(if failed > 0 { exit::REJECTED } else { exit::OK })
}

/// This machine's host name.
pub(crate) fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "hubsync".into())
}

/// This process's name in logs and `sync_queue.locked_by`: `host:pid`, after the configured
/// instance name and `@` when there is one. The host and pid let a restarted process take back
/// at once what an ended one held (see [`rescue_from_ended`]).
pub fn instance(config: &Config) -> String {
    let process = format!("{}:{}", host(), std::process::id());
    match &config.service.instance {
        Some(name) => format!("{name}@{process}"),
        None => process,
    }
}

/// Whether process `pid` of this host still exists (a process of another user counts).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Takes back the items earlier processes of this host held when they ended (crashed or were
/// killed): they are returned at once instead of after their leases.
async fn rescue_from_ended(queue: &Queue) -> anyhow::Result<()> {
    let r = queue
        .rescue_from_ended_processes(&host(), process_alive)
        .await?;
    log_rescue(
        &r,
        "took back items held by an ended hubsync process of this host",
    );
    Ok(())
}

/// One `RESCUE` line for a rescue that took anything back.
fn log_rescue(r: &crate::queue::Rescued, message: &str) {
    if !(r.returned.is_empty() && r.dead.is_empty() && r.superseded.is_empty()) {
        tracing::warn!(
            operation = "RESCUE",
            returned = r.returned.len(),
            dead = r.dead.len(),
            superseded = r.superseded.len(),
            "{message}"
        );
    }
}

fn stopped(http: &CancellationToken) -> u8 {
    http.cancel();
    tracing::info!(operation = "STOP", status = "done", "hubsync stopped");
    exit::OK
}

/// SIGHUP: a configuration that passes every check (incl. the HubSpot property preflight)
/// replaces the running sync tasks: they stop claiming and finish their batches, then the new
/// ones start. Otherwise the running ones stay and every problem is logged.
async fn reload(
    path: &Path,
    running: SyncTasks,
    ctx: &tasks::Context,
    queue: &Queue,
    http: &http::AppState,
) -> SyncTasks {
    systemd::reloading();
    let limiter = running.engine.hubspot.limiter().clone();
    let next = match reload::prepare(path, &running.config, &limiter, queue).await {
        Err(problems) => {
            for problem in &problems {
                tracing::error!(operation = "RELOAD", %problem, "configuration problem");
            }
            tracing::error!(
                operation = "RELOAD",
                status = "rejected",
                problems = problems.len(),
                "configuration reload rejected; keeping the running configuration"
            );
            running
        }
        Ok((config, engine)) => {
            for key in reload::needs_restart(&running.config, &config) {
                tracing::warn!(
                    operation = "RELOAD",
                    key,
                    "this setting changed but takes effect only after a restart"
                );
            }
            let grace = running.config.service.shutdown_grace;
            if !running.stop(grace).await {
                tracing::warn!(
                    operation = "RELOAD",
                    grace_ms = grace.as_millis() as u64,
                    "batches that did not finish within the grace period were released"
                );
            }
            http.set_limiter(engine.hubspot.limiter().clone());
            if let Some(api) = &http.api {
                api.update(&config);
            }
            let objects = engine.objects.len();
            let next = SyncTasks::start(ctx, Arc::new(config), engine).await;
            tracing::info!(
                operation = "RELOAD",
                status = "done",
                objects,
                "configuration reloaded"
            );
            next
        }
    };
    systemd::ready(&ctx.health.summary());
    next
}

/// The PostgreSQL readiness check, lease rescue, pruning and the systemd watchdog: kept
/// across reloads.
fn spawn_maintenance(sup: &mut Supervisor, queue: &Queue, health: &Arc<Health>, config: &Config) {
    let interval = config.service.health_interval;
    let (q, h) = (queue.clone(), health.clone());
    spawn_every(sup, "postgres-check", interval, health, move || {
        let (queue, health) = (q.clone(), h.clone());
        async move {
            let probe = sqlx::query("SELECT 1").execute(queue.pool());
            let (ok, detail) = match tokio::time::timeout(tasks::PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => (true, "ok".to_string()),
                Ok(Err(e)) => (false, crate::pg::describe(&e)),
                Err(_) => (false, "no answer to SELECT 1".to_string()),
            };
            tasks::report(&health, "postgres", ok, detail);
            Ok(())
        }
    });
    let q = queue.clone();
    let period = (queue.settings().lease / 4).max(Duration::from_secs(1));
    spawn_every(sup, "rescue", period, health, move || {
        let queue = q.clone();
        async move {
            rescue_from_ended(&queue).await?;
            let r = queue.rescue_expired().await?;
            log_rescue(
                &r,
                "took back items whose worker stopped renewing its lease",
            );
            Ok(())
        }
    });
    let q = queue.clone();
    spawn_every(sup, "prune", Duration::from_secs(600), health, move || {
        let queue = q.clone();
        async move {
            let done = queue.enforce_retention().await?;
            if !done.is_empty() {
                tracing::info!(
                    operation = "PRUNE",
                    deleted = done.items,
                    payloads_dropped = done.payloads_dropped,
                    conflicts_deleted = done.conflicts,
                    history_deleted = done.history,
                    "applied retention"
                );
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
pub(crate) fn spawn_every<S, Fut>(
    sup: &mut Supervisor,
    name: &str,
    period: Duration,
    health: &Arc<Health>,
    step: S,
) where
    S: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let health = health.clone();
    let task = name.to_string();
    sup.spawn(name, move |token| {
        let (health, step, task) = (health.clone(), step.clone(), task.clone());
        async move { every(&task, period, &health, &token, step).await }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unit_runs_the_service_with_its_allocator_settings() {
        let unit = include_str!("../../deploy/hubsync.service");
        let line = super::SERVICE_ALLOCATOR_ENV
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(unit.contains(&format!("Environment={line}\n")), "{unit}");
    }
}
