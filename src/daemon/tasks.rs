//! The sync tasks of one running configuration: per object the SQL Server and HubSpot pollers
//! and the workers of both directions, plus the SQL Server, HubSpot and poller readiness checks
//! and the periodic read of HubSpot's daily usage.
//! A reload stops one set gracefully (stop claiming, finish in-flight batches) and starts the next.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::metrics::Metrics;
use super::supervisor::{Supervisor, beating};
use super::{spawn_every, systemd};
use crate::config::Config;
use crate::hubspot::limiter::USAGE_REFRESH_INTERVAL;
use crate::queue::{Direction, Queue, Waker};
use crate::sync::engine::Engine;
use crate::sync::worker::{BatchHandler, Round, Stop, Worker};

/// What every set of sync tasks shares and a reload keeps.
#[derive(Clone)]
pub struct Context {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub pool: PgPool,
    /// This process's name in logs and `sync_queue.locked_by`.
    pub instance: String,
    /// Woken when this process queues a job (the job API), so its runner starts it at once.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// What schedules read the time from.
    pub clock: Arc<dyn crate::jobs::schedule::Clock>,
}

/// Longest a readiness probe may take before its component counts as not ready.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A poller that has not completed a poll for this long makes the service not ready.
pub fn poller_stall_limit(poll_interval: Duration) -> Duration {
    (poll_interval * 10).max(Duration::from_secs(300))
}

/// How often HubSpot is probed (one request, through the shared limiter, that also refreshes
/// the property cache): a sixth as often as the other checks.
pub fn hubspot_check_interval(health_interval: Duration) -> Duration {
    health_interval * 6
}

/// The running sync tasks of one configuration.
pub struct SyncTasks {
    sup: Supervisor,
    abandon: CancellationToken,
    pub config: Arc<Config>,
    pub engine: Arc<Engine>,
}

impl SyncTasks {
    /// Starts the pollers, workers and readiness checks of `engine`, built from `config`.
    pub async fn start(ctx: &Context, config: Arc<Config>, engine: Engine) -> SyncTasks {
        let engine = Arc::new(engine);
        let queue = Queue::new(ctx.pool.clone(), config.queue.clone());
        let mut sup = Supervisor::new(CancellationToken::new(), ctx.health.clone());
        let abandon = CancellationToken::new();
        let interval = config.queue.poll_interval;
        spawn_probes(&mut sup, ctx, &config, &engine);
        let pollers: Vec<(String, String)> = engine
            .objects
            .iter()
            .flat_map(|o| {
                [Direction::ToHubspot, Direction::ToSql]
                    .map(|d| (o.name.clone(), d.as_str().to_string()))
            })
            .collect();
        ctx.health.pollers_started(&pollers);
        ctx.metrics
            .init_records(engine.objects.iter().map(|o| o.name.as_str()));
        // One LISTEN connection for all workers of this set.
        let waker = Waker::new(ctx.pool.clone(), interval).await;
        for object in &engine.objects {
            let (sql, hubspot) = (object.poller.clone(), object.hubspot_poller.clone());
            let poll_sql = move || {
                let poller = sql.clone();
                async move { poller.poll_once().await }
            };
            let poll_hubspot = move || {
                let poller = hubspot.clone();
                async move { poller.poll_once().await }
            };
            let name = &object.name;
            spawn_poller(
                &mut sup,
                ctx,
                interval,
                name,
                Direction::ToHubspot,
                poll_sql,
            );
            spawn_poller(
                &mut sup,
                ctx,
                interval,
                name,
                Direction::ToSql,
                poll_hubspot,
            );
            for n in 0..config.queue.workers {
                let name = format!("{}/{}/{n}", ctx.instance, object.name);
                let worker = Arc::new(object.worker(&queue, &name));
                spawn_worker(&mut sup, ctx, worker, &waker, &abandon);
                let name = format!("{}/{}/to_sql/{n}", ctx.instance, object.name);
                let worker = Arc::new(object.sql_worker(&queue, &name));
                spawn_worker(&mut sup, ctx, worker, &waker, &abandon);
            }
        }
        spawn_jobs(&mut sup, ctx, &config, &engine, &queue);
        SyncTasks {
            sup,
            abandon,
            config,
            engine,
        }
    }

    /// Stops claiming and waits up to `grace` for in-flight batches; what cannot finish is
    /// released to the queue. True when everything finished within `grace`.
    pub async fn stop(self, grace: Duration) -> bool {
        self.sup.shutdown(grace, &self.abandon).await
    }
}

/// The job runner and, when any is configured, the schedules.
fn spawn_jobs(
    sup: &mut Supervisor,
    ctx: &Context,
    config: &Config,
    engine: &Arc<Engine>,
    queue: &Queue,
) {
    let runner = Arc::new(crate::jobs::runner::Runner {
        queue: queue.clone(),
        engine: engine.clone(),
        holder: format!("{}/jobs", ctx.instance),
        host: super::host(),
        alive: super::process_alive,
        poll: config.queue.poll_interval,
        wake: ctx.jobs_wake.clone(),
        reconcile: crate::jobs::runner::ReconcileBudget {
            budget_share: config.reconcile.budget_share,
            requests_per_10s: config.hubspot.requests_per_10s,
        },
    });
    let health = ctx.health.clone();
    sup.spawn("jobs", move |token| {
        let (runner, health) = (runner.clone(), health.clone());
        async move {
            runner.run(&token, &|| health.beat("jobs")).await;
            Ok(())
        }
    });
    let schedules = config.schedules();
    if schedules.is_empty() {
        return;
    }
    let zone = config.sql_server.zone();
    let (pool, clock, wake) = (ctx.pool.clone(), ctx.clock.clone(), ctx.jobs_wake.clone());
    let health = ctx.health.clone();
    sup.spawn("schedules", move |token| {
        let fire = crate::jobs::scheduler::run(
            pool.clone(),
            schedules.clone(),
            zone,
            clock.clone(),
            wake.clone(),
            token,
        );
        let health = health.clone();
        async move {
            beating(fire, &health, "schedules").await;
            Ok(())
        }
    });
}

/// The SQL Server, HubSpot and poller readiness checks.
fn spawn_probes(sup: &mut Supervisor, ctx: &Context, config: &Config, engine: &Arc<Engine>) {
    let interval = config.service.health_interval;
    let sql = engine.sql.clone();
    let h = ctx.health.clone();
    spawn_every(sup, "sql-server-check", interval, &ctx.health, move || {
        let (sql, health) = (sql.clone(), h.clone());
        async move {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, sql.probe()).await;
            let (ok, detail) = match probe {
                Ok(Ok(())) => (true, "ok".to_string()),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (false, no_answer(PROBE_TIMEOUT)),
            };
            report(&health, "sql_server", ok, detail);
            Ok(())
        }
    });

    // One property-definitions read per HubSpot object: proves the API answers this token,
    // goes through the shared limiter and keeps the property cache fresh.
    let client = engine.hubspot.clone();
    let mut hubspot_objects: Vec<String> = engine
        .objects
        .iter()
        .map(|o| o.hubspot_poller.hubspot_object.clone())
        .collect();
    hubspot_objects.sort();
    hubspot_objects.dedup();
    // The client retries transient failures; the probe reports after PROBE_TIMEOUT instead.
    let limit = PROBE_TIMEOUT;
    let h = ctx.health.clone();
    let every = hubspot_check_interval(interval);
    spawn_every(sup, "hubspot-check", every, &ctx.health, move || {
        let (client, health, objects) = (client.clone(), h.clone(), hubspot_objects.clone());
        async move {
            let probe = async {
                for object in &objects {
                    client.refresh_properties(object).await?;
                }
                Ok::<_, crate::hubspot::HubSpotError>(())
            };
            let (ok, detail) = match tokio::time::timeout(limit, probe).await {
                Ok(Ok(())) => (true, "ok".to_string()),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (false, no_answer(limit)),
            };
            report(&health, "hubspot", ok, detail);
            Ok(())
        }
    });

    // HubSpot's daily usage, read again every USAGE_REFRESH_INTERVAL (the client also reads it
    // at the reserve and when the day ends); checked as often as the HubSpot probe, so the
    // round stays within the watchdog's reach.
    let client = engine.hubspot.clone();
    spawn_every(sup, "hubspot-usage", every, &ctx.health, move || {
        let client = client.clone();
        async move {
            client
                .refresh_daily_budget_older_than(USAGE_REFRESH_INTERVAL)
                .await;
            Ok(())
        }
    });

    let h = ctx.health.clone();
    let stall = poller_stall_limit(config.queue.poll_interval);
    spawn_every(sup, "poller-check", interval, &ctx.health, move || {
        let health = h.clone();
        async move {
            let stalled = health.stalled_pollers(stall);
            let (ok, detail) = if stalled.is_empty() {
                (true, "ok".to_string())
            } else {
                let secs = stall.as_secs();
                (
                    false,
                    format!("no poll completed for {secs} s: {}", stalled.join(", ")),
                )
            };
            report(&health, "pollers", ok, detail);
            Ok(())
        }
    });
}

fn no_answer(limit: Duration) -> String {
    format!("no answer within {} s", limit.as_secs())
}

/// Records a readiness result; a change is logged and shown to systemd.
pub fn report(health: &Health, component: &str, ok: bool, detail: String) {
    let detail_for_log = detail.clone();
    if health.set(component, ok, detail) {
        let summary = health.summary();
        systemd::status(&summary);
        if ok {
            tracing::info!(component, ready = ok, %summary, "readiness changed");
        } else {
            tracing::warn!(component, ready = ok, detail = %detail_for_log, %summary,
                "readiness changed");
        }
    }
}

/// Supervises one change poller, recording each completed poll for poll lag and readiness.
fn spawn_poller<P, Fut>(
    sup: &mut Supervisor,
    ctx: &Context,
    interval: Duration,
    object: &str,
    direction: Direction,
    poll: P,
) where
    P: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<crate::sync::poller::Polled>> + Send + 'static,
{
    let source = match direction {
        Direction::ToHubspot => "poll",
        Direction::ToSql => "poll-hubspot",
    };
    let name = format!("{source}:{object}");
    let (health, object) = (ctx.health.clone(), object.to_string());
    let metrics = ctx.metrics.clone();
    spawn_every(sup, &name, interval, &ctx.health, move || {
        let (poll, health, object) = (poll.clone(), health.clone(), object.clone());
        let metrics = metrics.clone();
        async move {
            let polled = poll().await?;
            health.polled(&object, direction.as_str());
            if polled.resynced {
                metrics
                    .change_tracking_resyncs
                    .get_or_create(&crate::daemon::metrics::ObjectLabels {
                        object: object.clone(),
                    })
                    .inc();
            }
            if polled.items_enqueued > 0 {
                tracing::info!(operation = "POLL", object = %object, direction = %direction,
                    rows_read = polled.rows_read, enqueued = polled.items_enqueued,
                    "changes queued");
            }
            Ok(())
        }
    });
}

/// Supervises one worker loop.
fn spawn_worker<H: BatchHandler>(
    sup: &mut Supervisor,
    ctx: &Context,
    worker: Arc<Worker<H>>,
    waker: &Waker,
    abandon: &CancellationToken,
) {
    let (waker, abandon) = (waker.clone(), abandon.clone());
    let (health, metrics) = (ctx.health.clone(), ctx.metrics.clone());
    let task = format!("worker:{}", worker.name);
    let name = task.clone();
    sup.spawn(&task, move |token| {
        let (worker, mut waker) = (worker.clone(), waker.clone());
        let (health, metrics, name) = (health.clone(), metrics.clone(), name.clone());
        let stop = Stop {
            stop_claiming: token,
            abandon: abandon.clone(),
        };
        async move { work(&worker, &stop, &mut waker, &health, &metrics, &name).await }
    });
}

/// A worker's loop: rounds until told to stop claiming, counting outcomes; a failed round (an
/// unreachable database, say) is retried with a short backoff, so the worker resumes soon after
/// the outage ends.
async fn work<H: BatchHandler>(
    worker: &Worker<H>,
    stop: &Stop,
    waker: &mut Waker,
    health: &Health,
    metrics: &Metrics,
    task: &str,
) -> anyhow::Result<()> {
    let mut failures = 0u32;
    while !stop.stop_claiming.is_cancelled() {
        health.beat(task);
        match beating(worker.round(&stop.abandon), health, task).await {
            Ok(Round::Idle) => {
                failures = 0;
                tokio::select! {
                    _ = stop.stop_claiming.cancelled() => {}
                    _ = waker.wait() => {}
                }
            }
            Ok(Round::Released(_)) => return Ok(()),
            Ok(Round::Settled(settled)) => {
                failures = 0;
                metrics.count_settled(&worker.object, worker.direction.as_str(), &settled);
            }
            Err(e) => {
                failures += 1;
                let delay = crate::support::retry::delay(
                    failures,
                    Duration::from_millis(250),
                    Duration::from_secs(5),
                );
                tracing::warn!(worker = %worker.name, error = %format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64, "worker round failed");
                tokio::select! {
                    _ = stop.stop_claiming.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    Ok(())
}
