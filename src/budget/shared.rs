//! The HubSpot budget shared through the queue database: slots taken from
//! `hubsync_rate_grant` (migration 0007), the heartbeat that registers this instance and its
//! share, pacing on that share while PostgreSQL is unreachable (see [`super::link`]), and the
//! figures `/metrics` and `queue stats` show.

use crate::support::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::link::{Link, Own, Timing};
use crate::hubspot::HubSpotSettings;
use crate::hubspot::limiter::{Lane, TEN_SECONDS, WindowPacer, jitter_margin};

/// How long one grant or heartbeat may take before the database counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A grant whose round trip took longer than this is not used: the slot's time on this
/// host's clock is known only to within half the round trip, and the request must reach HubSpot
/// within the margin (200 ms) of its slot. Its slot goes unused; the caller asks again.
pub const LATE_GRANT: Duration = Duration::from_millis(40);
/// A caller woken this much later than its slot leaves the slot unused and takes another.
pub const LATE_WAKE: Duration = Duration::from_millis(50);
/// Grant round trips kept for the latency figures.
const SAMPLES: usize = 4096;
/// The window `recent_grants` counts over.
const RECENT: Duration = Duration::from_secs(60);

/// The lanes' names in the database and in `/metrics`, by index.
pub const LANES: [&str; 2] = ["standard", "search"];

fn index(lane: Lane) -> usize {
    match lane {
        Lane::Standard => 0,
        Lane::Search => 1,
    }
}

/// The lanes' windows as HubSpot counts them.
fn windows() -> [Duration; 2] {
    [TEN_SECONDS, Duration::from_secs(1)]
}

/// The windows the shared log spreads its slots over: HubSpot's plus a margin for the time
/// between a slot and the request's arrival. The 10 s window gets twice the local pacer's
/// margin (200 ms): a slot's time here is known only to within half a grant's round trip, and
/// at 100 ms `bench cluster` drew one or two 429s in each 100 s run. The search window keeps the
/// local pacer's quarter.
pub fn spans() -> [Duration; 2] {
    windows().map(|w| {
        if w >= TEN_SECONDS {
            w + 2 * jitter_margin(w)
        } else {
            w + jitter_margin(w)
        }
    })
}

/// What this instance knows of the shared budget, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedStatus {
    /// Taking slots from the shared log (false: PostgreSQL unreachable, pacing on its share).
    pub joined: bool,
    /// Instances sharing the budget at the last heartbeat, this one included.
    pub instances: u32,
    /// This instance's own share per window of the standard and search lanes.
    pub shares: [u32; 2],
    /// This instance's part of every instance's standard grants over the last minute (0–1).
    pub part: f64,
    /// Requests per window the others hold back for instances that stopped reporting.
    pub held: [u32; 2],
    /// Median and 99th percentile of a grant's round trip to the database.
    pub grant_p50: Option<Duration>,
    pub grant_p99: Option<Duration>,
    /// Slots left unused: the grant's round trip took longer than [`LATE_GRANT`], or the
    /// caller woke more than [`LATE_WAKE`] after it.
    pub late_grants: u64,
}

/// One instance's membership of the shared budget. Shared (`Arc`) by the limiters of the
/// process (a reload with new rate limits keeps it).
pub struct SharedBudget {
    pool: PgPool,
    instance: String,
    limits: [AtomicU32; 2],
    link: Mutex<Link>,
    local: [Mutex<Option<WindowPacer>>; 2],
    back: tokio::sync::Notify,
    samples: Mutex<VecDeque<Duration>>,
    seen: [AtomicU64; 2],
    granted: [AtomicU64; 2],
    late: AtomicU64,
    waited_nanos: AtomicU64,
    held: [AtomicU32; 2],
    recent: Mutex<VecDeque<Instant>>,
    part: Mutex<f64>,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A slot as `hubsync_rate_grant` answers it.
#[derive(sqlx::FromRow)]
struct Grant {
    wait_us: i64,
    slot: Option<chrono::DateTime<chrono::Utc>>,
    granted: Option<i64>,
    held: i32,
}

#[derive(sqlx::FromRow)]
struct Beat {
    lane: String,
    share: i32,
    instances: i32,
    recent_total: i64,
    granted: i64,
}

impl SharedBudget {
    /// Joins the budget of the queue database behind `pool` as `instance` (one heartbeat), on
    /// a small pool of its own so grants never wait behind queue work.
    pub async fn join(
        pool: &PgPool,
        instance: &str,
        settings: &HubSpotSettings,
    ) -> Result<std::sync::Arc<Self>, sqlx::Error> {
        let own = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CALL_TIMEOUT)
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        let budget = std::sync::Arc::new(Self {
            pool: own,
            instance: instance.to_string(),
            limits: [
                AtomicU32::new(settings.requests_per_10s.max(1)),
                AtomicU32::new(settings.search_per_second.max(1)),
            ],
            link: Mutex::new(Link::new(Timing::default(), spans())),
            local: [Mutex::new(None), Mutex::new(None)],
            back: tokio::sync::Notify::new(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            seen: [AtomicU64::new(0), AtomicU64::new(0)],
            granted: [AtomicU64::new(0), AtomicU64::new(0)],
            late: AtomicU64::new(0),
            waited_nanos: AtomicU64::new(0),
            held: [AtomicU32::new(0), AtomicU32::new(0)],
            recent: Mutex::new(VecDeque::new()),
            part: Mutex::new(0.0),
        });
        budget.sweep_ended().await;
        budget.beat().await?;
        Ok(budget)
    }

    /// Removes the registrations of earlier processes that have ended (a restart after a
    /// crash), so their shares come back at once instead of after their hold: processes of this
    /// host that no longer run, and silent (stale) ones under this one's configured
    /// `service.instance` name (a restarted container has another host name). An instance is
    /// named `[name@]host:pid`; others are left alone.
    async fn sweep_ended(&self) {
        let Ok(Ok(names)) = tokio::time::timeout(
            CALL_TIMEOUT,
            sqlx::query_as::<_, (String, bool)>(
                "SELECT instance, heartbeat_at <= clock_timestamp() - $1 FROM rate_instances",
            )
            .bind(interval(Timing::default().stale))
            .fetch_all(&self.pool),
        )
        .await
        else {
            return;
        };
        let host = crate::daemon::host();
        let mine = configured_name(&self.instance);
        for (name, stale) in names {
            let Some((_, h, pid)) = crate::queue::process_of(&name) else {
                continue;
            };
            if name == self.instance {
                continue;
            }
            let ended_here = h == host && !crate::daemon::process_alive(pid);
            let same_name = stale && mine.is_some() && configured_name(&name) == mine;
            if !(ended_here || same_name) {
                continue;
            }
            let gone = sqlx::query("SELECT hubsync_rate_leave($1)")
                .bind(&name)
                .execute(&self.pool);
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, gone).await {
                tracing::info!(
                    operation = "LIMITER",
                    ended = %name,
                    "an ended process of this host left the shared HubSpot budget"
                );
            }
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// New rate limits (a reload): the next grant and heartbeat use them.
    pub fn set_limits(&self, settings: &HubSpotSettings) {
        self.limits[0].store(settings.requests_per_10s.max(1), Ordering::Relaxed);
        self.limits[1].store(settings.search_per_second.max(1), Ordering::Relaxed);
    }

    /// Waits for a slot on `lane`. Returns how many requests the other instances were granted
    /// on that lane since this one's previous grant (for the daily budget).
    pub async fn acquire(&self, lane: Lane) -> u64 {
        let i = index(lane);
        let started = Instant::now();
        let elsewhere = loop {
            let now = Instant::now();
            let own = lock(&self.link).own(i, now);
            match own {
                Own::Shared => match self.grant(i).await {
                    Ok(Some((wait, elsewhere))) => {
                        let due = Instant::now() + wait;
                        tokio::time::sleep(wait).await;
                        // Woken too late (a busy runtime), the request could reach HubSpot
                        // outside its slot's margin: leave the slot unused, take another.
                        if Instant::now().saturating_duration_since(due) > LATE_WAKE {
                            self.late.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        break elsewhere;
                    }
                    Ok(None) => {}
                    Err(e) => self.lost(&e),
                },
                Own::WaitUntil(until) => self.wait_back(until - now).await,
                Own::Open { share, until } => {
                    let tried = {
                        let mut local = lock(&self.local[i]);
                        let pacer =
                            local.get_or_insert_with(|| WindowPacer::new(share, windows()[i]));
                        pacer.try_acquire()
                    };
                    match tried {
                        Ok(()) => {
                            lock(&self.link).granted_own(i, Instant::now());
                            break 0;
                        }
                        Err(wait) => self.wait_back(wait.min(until - now)).await,
                    }
                }
                Own::Closed => self.wait_back(Timing::default().heartbeat).await,
            }
        };
        self.granted[i].fetch_add(1, Ordering::Relaxed);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(waited, Ordering::Relaxed);
        if i == 0 {
            let mut recent = lock(&self.recent);
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|at| now.duration_since(*at) > RECENT)
            {
                recent.pop_front();
            }
            recent.push_back(now);
        }
        elsewhere
    }

    /// Sleeps for `wait`, or less when the link comes back.
    async fn wait_back(&self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.back.notified() => {}
        }
    }

    /// One call to `hubsync_rate_grant`: `Some((wait, elsewhere))` when a slot was taken,
    /// `None` when the caller is to come back (after sleeping as told).
    async fn grant(&self, i: usize) -> Result<Option<(Duration, u64)>, String> {
        let timing = Timing::default();
        let span = spans()[i];
        let started = Instant::now();
        let call = sqlx::query_as::<_, Grant>(
            "SELECT wait_us, slot, granted, held \
             FROM hubsync_rate_grant($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(LANES[i])
        .bind(self.limits[i].load(Ordering::Relaxed) as i32)
        .bind(interval(span))
        .bind(interval(timing.ahead))
        .bind(&self.instance)
        .bind(interval(timing.stale))
        .bind(interval(timing.hold(span)))
        .fetch_one(&self.pool);
        let grant = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(grant)) => grant,
            Ok(Err(e)) => return Err(crate::pg::describe(&e)),
            Err(_) => return Err(format!("no answer within {}s", CALL_TIMEOUT.as_secs())),
        };
        let took = started.elapsed();
        self.sample(took);
        self.held[i].store(u32::try_from(grant.held).unwrap_or(0), Ordering::Relaxed);
        // The database measured the wait somewhere within the round trip: count from its middle.
        let wait = Duration::from_micros(u64::try_from(grant.wait_us).unwrap_or(0));
        let wait = wait.saturating_sub(took / 2);
        let (Some(_), Some(total)) = (grant.slot, grant.granted) else {
            tokio::time::sleep(wait).await;
            return Ok(None);
        };
        if took > LATE_GRANT {
            self.late.fetch_add(1, Ordering::Relaxed);
            self.seen[i].store(u64::try_from(total).unwrap_or(0), Ordering::Relaxed);
            return Ok(None);
        }
        let total = u64::try_from(total).unwrap_or(0);
        let before = self.seen[i].swap(total, Ordering::Relaxed);
        let elsewhere = total.saturating_sub(before).saturating_sub(1);
        Ok(Some((wait, if before == 0 { 0 } else { elsewhere })))
    }

    fn sample(&self, took: Duration) {
        let mut samples = lock(&self.samples);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took);
    }

    /// The database could not be reached: pace on the own share from now on.
    fn lost(&self, reason: &str) {
        let mut link = lock(&self.link);
        if link.is_joined() {
            let timing = link.timing();
            tracing::warn!(
                operation = "LIMITER",
                error = reason,
                shares = ?link.shares(),
                quiet_s = timing.quiet(spans()[0]).as_secs(),
                lease_s = timing.lease.as_secs(),
                "queue database unreachable: HubSpot calls pace on this instance's own share"
            );
        }
        link.lost();
    }

    /// One heartbeat: reports this instance, pushes the grants it made on its own, and reads
    /// its shares. Joins (again) on success; counts as cut off on failure.
    pub async fn beat(&self) -> Result<(), sqlx::Error> {
        let sent = Instant::now();
        let (mode, own) = {
            let mut link = lock(&self.link);
            let mode = if link.is_joined() { "shared" } else { "local" };
            (mode, link.own_grants(sent))
        };
        let timing = Timing::default();
        let (own_lanes, own_ages): (Vec<&str>, Vec<i64>) = own
            .iter()
            .map(|(lane, age)| (LANES[*lane], i64::try_from(age.as_micros()).unwrap_or(0)))
            .unzip();
        let recent = lock(&self.recent).len() as i32;
        let call = sqlx::query_as::<_, Beat>(
            "SELECT lane, share, instances, recent_total, granted \
             FROM hubsync_rate_heartbeat($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&self.instance)
        .bind(mode)
        .bind(LANES.to_vec())
        .bind(
            self.limits
                .iter()
                .map(|l| l.load(Ordering::Relaxed) as i32)
                .collect::<Vec<_>>(),
        )
        .bind(interval(timing.hold(spans()[0])))
        .bind(self.granted[0].load(Ordering::Relaxed) as i64)
        .bind(self.granted[1].load(Ordering::Relaxed) as i64)
        .bind(recent)
        .bind(Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed)).as_secs_f64())
        .bind(own_lanes)
        .bind(own_ages)
        .fetch_all(&self.pool);
        let beats = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(beats)) => beats,
            Ok(Err(e)) => {
                self.lost(&crate::pg::describe(&e));
                return Err(e);
            }
            Err(_) => {
                self.lost("no answer to the heartbeat");
                return Err(sqlx::Error::PoolTimedOut);
            }
        };
        let mut shares = [0u32; 2];
        let mut instances = 1;
        for beat in &beats {
            let Some(i) = LANES.iter().position(|l| *l == beat.lane) else {
                continue;
            };
            shares[i] = u32::try_from(beat.share).unwrap_or(0);
            instances = u32::try_from(beat.instances).unwrap_or(1);
            self.seen[i].store(u64::try_from(beat.granted).unwrap_or(0), Ordering::Relaxed);
            if i == 0 {
                *lock(&self.part) = if beat.recent_total > 0 {
                    f64::from(recent) / beat.recent_total as f64
                } else {
                    0.0
                };
            }
        }
        let was_joined = {
            let mut link = lock(&self.link);
            let was = link.is_joined();
            link.joined(sent, Instant::now(), shares, instances);
            was
        };
        for local in &self.local {
            *lock(local) = None;
        }
        if !was_joined {
            tracing::info!(
                operation = "LIMITER",
                instances,
                own_grants_pushed = own.len(),
                "sharing the HubSpot budget through the queue database"
            );
            self.back.notify_waiters();
        }
        Ok(())
    }

    /// Heartbeats every [`Timing::heartbeat`] until `stop`; then leaves the budget.
    pub async fn heartbeats(self: std::sync::Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Timing::default().heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    beats += 1;
                    // Silent instances held back: one of them may be a crashed process here.
                    if beats.is_multiple_of(5) && self.held.iter().any(|h| h.load(Ordering::Relaxed) > 0) {
                        self.sweep_ended().await;
                    }
                    let _ = self.beat().await;
                }
                _ = stop.cancelled() => break,
            }
        }
        self.leave().await;
    }

    /// Leaves the budget (a clean stop): the others need not hold this instance's share back.
    pub async fn leave(&self) {
        let call = sqlx::query("SELECT hubsync_rate_leave($1)")
            .bind(&self.instance)
            .execute(&self.pool);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                operation = "LIMITER",
                error = %crate::pg::describe(&e),
                "could not leave the shared HubSpot budget; the others hold this share back for a lease"
            ),
            Err(_) => tracing::warn!(
                operation = "LIMITER",
                "could not leave the shared HubSpot budget in time"
            ),
        }
    }

    pub fn status(&self) -> SharedStatus {
        let (joined, instances, shares) = {
            let link = lock(&self.link);
            (link.is_joined(), link.instances(), link.shares())
        };
        let mut sorted: Vec<Duration> = lock(&self.samples).iter().copied().collect();
        sorted.sort_unstable();
        let pct = |p: f64| -> Option<Duration> {
            let last = sorted.len().checked_sub(1)?;
            sorted.get(((last as f64) * p).round() as usize).copied()
        };
        SharedStatus {
            joined,
            instances,
            shares,
            part: *lock(&self.part),
            held: [
                self.held[0].load(Ordering::Relaxed),
                self.held[1].load(Ordering::Relaxed),
            ],
            grant_p50: pct(0.5),
            grant_p99: pct(0.99),
            late_grants: self.late.load(Ordering::Relaxed),
        }
    }
}

/// The configured `service.instance` part of an instance's name, if it has one.
fn configured_name(instance: &str) -> Option<&str> {
    instance.rsplit_once('@').map(|(name, _)| name)
}

/// A duration as a PostgreSQL interval.
fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}
