//! The process-wide HubSpot request limiter: a rolling-window pacer on `governor` for ordinary
//! calls, a separate pacer for search, a daily budget seeded from HubSpot's usage endpoint and
//! tightened by the rate-limit headers, a shared pause after a burst 429, and wait-time
//! accounting for metrics. Once it has joined the budget the instances of one queue database
//! share ([`crate::budget`]), its slots come from there and the local pacers stand idle.
//!
//! A plain GCRA quota of N per window lets N requests through at once and then refills during the
//! next window, so a rolling window can see up to 2N. [`window_quota`] instead picks a small burst
//! `B` and a replenish period `τ` so that `B + ⌊(window + margin) / τ⌋ ≤ N`: any `k` grants of a
//! GCRA span at least `(k − B)·τ`, hence no closed window of `window + margin` ever holds more
//! than N grants. The margin absorbs network jitter between the client and HubSpot's clock.

use crate::support::lock;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::HubSpotSettings;
use super::usage::UsageReport;

/// HubSpot's burst window.
pub const TEN_SECONDS: Duration = Duration::from_secs(10);
/// How long hubsync stops spending once the daily reserve is reached, when HubSpot's reset time
/// is unknown (its usage endpoint could not be read), before it lets one request through to
/// read the daily headers again.
pub const DAILY_PROBE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How often the service reads HubSpot's usage endpoint again; it also reads it at start, on
/// reload, when the reserve is reached, when the reported day ends and after a 429 DAILY.
pub const USAGE_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long past HubSpot's reported reset hubsync waits before spending again, for the
/// difference between HubSpot's clock and this machine's.
pub const RESET_GRACE: Duration = Duration::from_secs(1);

/// Which pacer a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Batch, list, read and property calls: the rolling 10 s window.
    Standard,
    /// `…/search`: HubSpot's separate per-second search limit (exempt from the 10 s window).
    Search,
}

/// Why the limiter refuses to spend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The daily budget is down to the configured reserve (or HubSpot answered 429 DAILY).
    #[error(
        "HubSpot daily API budget reached: {remaining} requests left today, reserve is {reserve}; \
         hubsync stops calling HubSpot {}",
        until_reset(resets_at.as_ref(), *retry_after)
    )]
    DailyReserve {
        remaining: u64,
        reserve: u64,
        retry_after: Duration,
        /// HubSpot's reported reset, when its usage endpoint could be read.
        resets_at: Option<DateTime<Utc>>,
    },
}

/// "until …" for a refusal: the reported reset, or the next check when none is known.
fn until_reset(resets_at: Option<&DateTime<Utc>>, retry_after: Duration) -> String {
    match resets_at {
        Some(at) => format!(
            "until HubSpot's daily reset at {} (in {}s)",
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            retry_after.as_secs()
        ),
        None => format!(
            "until the daily reset (next check in {}s)",
            retry_after.as_secs()
        ),
    }
}

/// The quota that keeps every closed window of `window` (plus [`jitter_margin`]) at or below
/// `limit` grants. Uses a burst of 2 when the limit allows (so a late wake-up does not lose a
/// slot), else 1.
pub fn window_quota(limit: u32, window: Duration) -> Quota {
    let limit = limit.max(1);
    let burst: u32 = if limit >= 10 { 2 } else { 1 };
    let span = window + jitter_margin(window);
    // τ strictly greater than span / (limit − burst + 1) ⇒ ⌊span / τ⌋ ≤ limit − burst.
    let per = span.as_nanos() / u128::from(limit - burst + 1) + 1;
    let per = Duration::from_nanos(u64::try_from(per).unwrap_or(u64::MAX));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// How much longer than HubSpot's window a pacer spreads its grants over, for the jitter between
/// a grant here and the request's arrival there: 1 % of the 10 s window (100 ms; at 50 ms a busy
/// machine drew a 429 in `bench sync`, a window of 101 at the simulator), a quarter of the 1 s
/// search window (paced to within 100 ms, a busy machine still drew an occasional search 429).
pub fn jitter_margin(window: Duration) -> Duration {
    if window >= TEN_SECONDS {
        window / 100
    } else {
        window / 4
    }
}

/// One rolling-window pacer over a `governor` GCRA, on any clock (a fake one in tests).
pub struct WindowPacer<C: Clock = DefaultClock> {
    gcra: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    limit: u32,
    window: Duration,
}

impl<C: Clock> WindowPacer<C> {
    pub fn with_clock(limit: u32, window: Duration, clock: C) -> Self {
        Self {
            gcra: RateLimiter::direct_with_clock(window_quota(limit, window), clock),
            limit,
            window,
        }
    }

    /// Takes one slot now, or says how long until one may be free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.gcra
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.gcra.clock().now()))
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

impl WindowPacer<DefaultClock> {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_clock(limit, window, DefaultClock::default())
    }

    /// Waits for a slot on the real clock.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_acquire() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The day HubSpot's usage endpoint reported.
#[derive(Debug, Clone)]
struct ReportedDay {
    report: UsageReport,
    /// The reset on the wall clock.
    resets_at: DateTime<Utc>,
    /// The reset plus [`RESET_GRACE`] on the monotonic clock.
    resets: Instant,
}

/// The daily budget: the account's figures from HubSpot's usage endpoint (limit, what every app
/// has used, when the day resets) or else the configured limit, tightened by the
/// `X-HubSpot-RateLimit-Daily-Remaining` headers, minus later grants; and the block that starts
/// when the reserve is reached. Pure: callers pass the time.
#[derive(Debug)]
pub struct DailyBudget {
    limit: u64,
    reserve: u64,
    /// Last daily-remaining figure HubSpot sent (usage endpoint or headers).
    remaining: Option<u64>,
    /// Grants since that figure (or since start when none was seen).
    spent_since: u64,
    /// No spending before this instant (reserve reached or 429 DAILY).
    blocked_until: Option<Instant>,
    /// The block comes from a 429 DAILY, which a (possibly cached) usage figure does not lift.
    exhausted: bool,
    /// The day the usage endpoint reported, until it ends.
    day: Option<ReportedDay>,
    /// The usage endpoint should be read before spending more.
    refresh_wanted: bool,
}

impl DailyBudget {
    pub fn new(limit: u64, reserve: u64) -> Self {
        Self {
            limit,
            reserve,
            remaining: None,
            spent_since: 0,
            blocked_until: None,
            exhausted: false,
            day: None,
            refresh_wanted: false,
        }
    }

    /// Requests left today as far as hubsync knows.
    pub fn remaining(&self) -> u64 {
        self.remaining
            .unwrap_or(self.limit)
            .saturating_sub(self.spent_since)
    }

    /// May one more request go out at `now`? Spends it if so.
    pub fn spend(&mut self, now: Instant) -> Result<(), BudgetError> {
        self.roll(now);
        let remaining = self.remaining();
        match self.blocked_until {
            Some(until) if now < until => return Err(self.refusal(remaining, until - now)),
            Some(_) => {
                // Probe: one request goes out and its headers tell the new figure.
                self.blocked_until = None;
                self.exhausted = false;
            }
            None if remaining <= self.reserve => {
                let wait = self.block(now);
                // Read HubSpot's figure before staying put: another app may have spent less, or
                // the limit may have been raised.
                self.refresh_wanted = true;
                let refusal = self.refusal(remaining, wait);
                tracing::warn!(
                    remaining,
                    reserve = self.reserve,
                    resets_at = ?self.day.as_ref().map(|d| d.resets_at),
                    wait_s = wait.as_secs(),
                    "HubSpot daily budget reached the reserve; pausing HubSpot calls"
                );
                return Err(refusal);
            }
            None => {}
        }
        self.spent_since += 1;
        Ok(())
    }

    /// Spends one request of the reserve itself, block or not: reading the usage endpoint is
    /// what the reserve keeps room for.
    pub fn spend_reserve(&mut self, now: Instant) {
        self.roll(now);
        self.spent_since += 1;
    }

    /// Other instances were granted `n` requests since this one's previous grant: they count
    /// against today's figure too.
    pub fn spent_elsewhere(&mut self, n: u64, now: Instant) {
        self.roll(now);
        self.spent_since += n;
    }

    /// A daily-remaining figure from HubSpot's headers. Within a day the usage endpoint
    /// reported, the headers can only lower the figure; otherwise they set it.
    pub fn observe(&mut self, remaining: u64, now: Instant) {
        self.roll(now);
        if self.day.is_some() && remaining >= self.remaining() {
            return;
        }
        self.remaining = Some(remaining);
        self.spent_since = 0;
    }

    /// The usage endpoint's figures, read at `now` (`wall` on the wall clock): they replace
    /// the limit, what is left and the reset time. A block at the reserve lasts until the
    /// reported reset, or ends when the figures leave room above the reserve.
    pub fn seed(&mut self, report: &UsageReport, now: Instant, wall: DateTime<Utc>) {
        let resets_at = report.next_reset(wall);
        let ahead = (resets_at - wall).to_std().unwrap_or_default();
        self.limit = report.usage_limit;
        self.remaining = Some(report.remaining());
        self.spent_since = 0;
        self.refresh_wanted = false;
        self.day = Some(ReportedDay {
            report: report.clone(),
            resets_at,
            resets: now + ahead + RESET_GRACE,
        });
        if self.remaining() <= self.reserve {
            self.block(now);
        } else if !self.exhausted {
            self.blocked_until = None;
        }
    }

    /// The usage endpoint could not be read: today's figures stand, no new read is wanted.
    pub fn unreported(&mut self, now: Instant) {
        self.roll(now);
        self.refresh_wanted = false;
    }

    /// HubSpot answered 429 DAILY at `now`: no spending until the reported reset (or the next
    /// probe). Returns how long that is.
    pub fn exhausted(&mut self, now: Instant) -> Duration {
        self.roll(now);
        self.remaining = Some(0);
        self.spent_since = 0;
        self.exhausted = true;
        self.refresh_wanted = true;
        self.block(now)
    }

    /// Whether the usage endpoint should be read before spending more: the reserve was
    /// reached, HubSpot answered 429 DAILY or the reported day ended.
    pub fn refresh_wanted(&self, now: Instant) -> bool {
        self.refresh_wanted || self.day.as_ref().is_some_and(|d| now >= d.resets)
    }

    /// Until when spending is held back, if it is at `now`.
    pub fn blocked_until(&self, now: Instant) -> Option<Instant> {
        self.blocked_until.filter(|until| *until > now)
    }

    /// The usage endpoint's last figures and the reset they lead to, within their day.
    pub fn reported(&self) -> Option<(&UsageReport, DateTime<Utc>)> {
        self.day.as_ref().map(|d| (&d.report, d.resets_at))
    }

    /// Blocks spending until the reported reset, or for a probe interval when none is known;
    /// returns how long.
    fn block(&mut self, now: Instant) -> Duration {
        let until = match &self.day {
            Some(day) if day.resets > now => day.resets,
            _ => now + DAILY_PROBE_INTERVAL,
        };
        self.blocked_until = Some(until);
        until - now
    }

    /// Past the reported reset a new day starts with the whole limit, and HubSpot's figures
    /// are wanted again.
    fn roll(&mut self, now: Instant) {
        if self.day.as_ref().is_some_and(|d| now >= d.resets) {
            self.day = None;
            self.remaining = Some(self.limit);
            self.spent_since = 0;
            self.refresh_wanted = true;
            if self.blocked_until.is_some_and(|until| until <= now) {
                self.blocked_until = None;
                self.exhausted = false;
            }
        }
    }

    fn refusal(&self, remaining: u64, retry_after: Duration) -> BudgetError {
        BudgetError::DailyReserve {
            remaining,
            reserve: self.reserve,
            retry_after,
            resets_at: self.day.as_ref().map(|d| d.resets_at),
        }
    }
}

/// Figures for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Requests granted on the standard lane (retries included).
    pub granted: u64,
    /// Requests granted on the search lane.
    pub search_granted: u64,
    /// Total time callers spent waiting for a slot, summed over callers.
    pub waited: Duration,
    /// Times hubsync paused everyone after a burst 429.
    pub pauses: u64,
    /// Last daily-remaining figure HubSpot reported.
    pub daily_remaining: Option<u64>,
    /// Last `X-HubSpot-RateLimit-Remaining` HubSpot reported.
    pub window_remaining: Option<u64>,
    /// The daily limit in force: HubSpot's reported `usageLimit`, else `hubspot.daily_limit`.
    pub daily_limit: u64,
    /// The account's figures as HubSpot's usage endpoint last reported them, within their day
    /// (none when the endpoint could not be read).
    pub daily_usage: Option<UsageReport>,
    /// The next daily reset those figures lead to.
    pub daily_resets_at: Option<DateTime<Utc>>,
    /// While hubsync holds back at the reserve (or after a 429 DAILY): until when.
    pub daily_paused_until: Option<DateTime<Utc>>,
}

/// The one limiter per process; share it (`Arc`) between every worker and client.
pub struct Limiter {
    standard: WindowPacer,
    search: WindowPacer,
    daily: Mutex<DailyBudget>,
    paused_until: Mutex<Option<tokio::time::Instant>>,
    granted: AtomicU64,
    search_granted: AtomicU64,
    waited_nanos: AtomicU64,
    pauses: AtomicU64,
    window_remaining: AtomicU64,
    /// The budget shared with the other instances on the queue database, once joined: slots
    /// come from there instead of the local pacers.
    shared: std::sync::OnceLock<std::sync::Arc<crate::budget::SharedBudget>>,
}

const UNKNOWN: u64 = u64::MAX;

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("requests_per_10s", &self.standard.limit())
            .field("search_per_second", &self.search.limit())
            .field("daily", &*lock(&self.daily))
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// The limiter for the configured tier.
    pub fn from_settings(settings: &HubSpotSettings) -> Self {
        Self::new(
            settings.requests_per_10s,
            settings.search_per_second,
            settings.daily_limit,
            settings.daily_reserve,
        )
    }

    pub fn new(
        requests_per_10s: u32,
        search_per_second: u32,
        daily_limit: u64,
        daily_reserve: u64,
    ) -> Self {
        Self {
            standard: WindowPacer::new(requests_per_10s, TEN_SECONDS),
            search: WindowPacer::new(search_per_second, Duration::from_secs(1)),
            daily: Mutex::new(DailyBudget::new(daily_limit, daily_reserve)),
            paused_until: Mutex::new(None),
            granted: AtomicU64::new(0),
            search_granted: AtomicU64::new(0),
            waited_nanos: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            window_remaining: AtomicU64::new(UNKNOWN),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Takes slots from the budget shared with the other instances from now on.
    pub fn share_through(&self, budget: std::sync::Arc<crate::budget::SharedBudget>) {
        let _ = self.shared.set(budget);
    }

    /// The shared budget this limiter takes its slots from, once joined.
    pub fn shared(&self) -> Option<&std::sync::Arc<crate::budget::SharedBudget>> {
        self.shared.get()
    }

    /// Waits for a slot on `lane`; refuses when the daily budget is down to the reserve.
    pub async fn acquire(&self, lane: Lane) -> Result<(), BudgetError> {
        // Budget first, so a refused caller does not wait for a slot it will not use.
        lock(&self.daily).spend(Instant::now())?;
        self.slot(lane).await;
        Ok(())
    }

    /// Waits for a standard slot for a request the reserve is kept for (reading the usage
    /// endpoint): it counts against the day but goes out even at the reserve.
    pub async fn acquire_reserve(&self) {
        lock(&self.daily).spend_reserve(Instant::now());
        self.slot(Lane::Standard).await;
    }

    async fn slot(&self, lane: Lane) {
        let started = tokio::time::Instant::now();
        loop {
            let paused = *lock(&self.paused_until);
            if let Some(until) = paused.filter(|u| *u > tokio::time::Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            match (self.shared.get(), lane) {
                (Some(shared), _) => {
                    // The other instances' grants count against the same day.
                    let elsewhere = shared.acquire(lane).await;
                    if elsewhere > 0 {
                        lock(&self.daily).spent_elsewhere(elsewhere, Instant::now());
                    }
                }
                (None, Lane::Standard) => self.standard.acquire().await,
                (None, Lane::Search) => self.search.acquire().await,
            }
            // A pause may have begun while this caller slept in the pacer.
            let paused = *lock(&self.paused_until);
            if paused.is_some_and(|u| u > tokio::time::Instant::now()) {
                continue;
            }
            break;
        }
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(waited, Ordering::Relaxed);
        match lane {
            Lane::Standard => self.granted.fetch_add(1, Ordering::Relaxed),
            Lane::Search => self.search_granted.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Records the `X-HubSpot-RateLimit-Daily-Remaining` and `-Remaining` figures of a response.
    pub fn observe(&self, daily_remaining: Option<u64>, window_remaining: Option<u64>) {
        if let Some(remaining) = daily_remaining {
            lock(&self.daily).observe(remaining, Instant::now());
        }
        if let Some(remaining) = window_remaining {
            self.window_remaining.store(remaining, Ordering::Relaxed);
        }
    }

    /// Seeds the daily budget with the figures of HubSpot's usage endpoint.
    pub fn seed_daily(&self, report: &UsageReport) {
        lock(&self.daily).seed(report, Instant::now(), Utc::now());
    }

    /// The usage endpoint could not be read: the budget keeps its figures.
    pub fn daily_unreported(&self) {
        lock(&self.daily).unreported(Instant::now());
    }

    /// Whether HubSpot's usage endpoint should be read before spending more (the reserve was
    /// reached, the reported day ended, or HubSpot answered 429 DAILY).
    pub fn usage_wanted(&self) -> bool {
        lock(&self.daily).refresh_wanted(Instant::now())
    }

    /// Resolves once the daily budget may be spent again: at once when nothing holds it back,
    /// else at HubSpot's reported reset (or the next probe when the reset is unknown).
    pub async fn daily_budget_back(&self) {
        loop {
            let until = lock(&self.daily).blocked_until(Instant::now());
            match until {
                Some(until) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
                }
                None => return,
            }
        }
    }

    /// HubSpot answered 429 DAILY: stop spending until the reported reset (or the next probe).
    pub fn daily_exhausted(&self) -> Duration {
        lock(&self.daily).exhausted(Instant::now())
    }

    /// HubSpot answered 429 TEN_SECONDLY_ROLLING: hold every caller for `window`.
    pub fn pause(&self, window: Duration) {
        let until = tokio::time::Instant::now() + window;
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
            self.pauses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The daily budget as the limiter sees it: the last figure HubSpot sent minus later grants.
    pub fn daily_remaining(&self) -> u64 {
        lock(&self.daily).remaining()
    }

    pub fn stats(&self) -> LimiterStats {
        let (now, wall) = (Instant::now(), Utc::now());
        let daily = lock(&self.daily);
        let daily_remaining = daily.remaining;
        let reported = daily.reported();
        let paused = daily.blocked_until(now).and_then(|until| {
            let ahead = chrono::TimeDelta::from_std(until - now).ok()?;
            wall.checked_add_signed(ahead)
        });
        let window_remaining = self.window_remaining.load(Ordering::Relaxed);
        LimiterStats {
            daily_limit: daily.limit,
            daily_usage: reported.map(|(report, _)| report.clone()),
            daily_resets_at: reported.map(|(_, at)| at),
            daily_paused_until: paused,
            granted: self.granted.load(Ordering::Relaxed),
            search_granted: self.search_granted.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed)),
            pauses: self.pauses.load(Ordering::Relaxed),
            daily_remaining,
            window_remaining: (window_remaining != UNKNOWN).then_some(window_remaining),
        }
    }

    pub fn requests_per_10s(&self) -> u32 {
        self.standard.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use rand::{Rng, SeedableRng};

    /// Largest number of grant times inside any closed interval `[t, t + window]`.
    fn largest_window(grants: &[u64], window: Duration) -> usize {
        let w = u64::try_from(window.as_nanos()).expect("window fits");
        let mut largest = 0;
        let mut start = 0;
        for end in 0..grants.len() {
            while grants[end] - grants[start] > w {
                start += 1;
            }
            largest = largest.max(end - start + 1);
        }
        largest
    }

    fn nanos(clock: &FakeRelativeClock) -> u64 {
        clock.now().as_u64()
    }

    /// Drives a pacer on a fake clock for `span`: callers arrive after random idle gaps (sometimes
    /// none: greedy), wait exactly as told, and each grant time is recorded.
    fn replay(limit: u32, window: Duration, span: Duration, seed: u64) -> Vec<u64> {
        let clock = FakeRelativeClock::default();
        let pacer = WindowPacer::with_clock(limit, window, clock.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut grants = Vec::new();
        let end = u64::try_from(span.as_nanos()).expect("span fits");
        while nanos(&clock) < end {
            match pacer.try_acquire() {
                Ok(()) => {
                    grants.push(nanos(&clock));
                    // Greedy most of the time; occasionally idle, to refill the burst.
                    if rng.random_bool(0.02) {
                        let idle = rng.random_range(0..window.as_millis() as u64 / 5);
                        clock.advance(Duration::from_millis(idle));
                    }
                }
                Err(wait) => {
                    // Wake exactly on time, or a little late, as a real timer would.
                    let late = Duration::from_micros(rng.random_range(0..2_000));
                    clock.advance(wait.max(Duration::from_nanos(1)) + late);
                }
            }
        }
        grants
    }

    #[test]
    fn no_rolling_window_exceeds_the_limit_at_any_tier() {
        for (limit, seed) in [(100, 1), (190, 2), (250, 3), (5, 4), (1, 5), (11, 6)] {
            let window = if limit == 5 {
                Duration::from_secs(1)
            } else {
                TEN_SECONDS
            };
            let grants = replay(limit, window, window * 30, seed);
            // Every closed window, stretched by the jitter margin, holds ≤ limit grants.
            let largest = largest_window(&grants, window + jitter_margin(window));
            assert!(
                largest <= limit as usize,
                "tier {limit}: {largest} grants in one window"
            );
            // Enough grants that windows were full (the greedy test checks the rate itself).
            assert!(
                grants.len() >= limit as usize * 15,
                "tier {limit}: {}",
                grants.len()
            );
        }
    }

    #[test]
    fn greedy_callers_reach_the_ceiling() {
        let clock = FakeRelativeClock::default();
        let pacer = WindowPacer::with_clock(100, TEN_SECONDS, clock.clone());
        let mut grants = 0u32;
        while clock.now().as_u64() < 100 * 1_000_000_000 {
            match pacer.try_acquire() {
                Ok(()) => grants += 1,
                Err(wait) => clock.advance(wait),
            }
        }
        // 100 s at 100 per 10 s is 1,000; the margin and burst leave ≥ 97 %.
        assert!((970..=1000).contains(&grants), "{grants}");
    }

    #[test]
    fn a_plain_quota_would_exceed_the_window() {
        // The property the test above checks is not trivially true: a plain "N per 10 s" GCRA
        // admits a full burst at a window edge plus refills inside the next window.
        let clock = FakeRelativeClock::default();
        let quota = Quota::with_period(TEN_SECONDS / 100)
            .expect("period")
            .allow_burst(NonZeroU32::new(100).expect("nonzero"));
        let plain = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut grants = Vec::new();
        clock.advance(Duration::from_secs(20));
        while clock.now().as_u64() < 40_000_000_000 {
            match plain.check() {
                Ok(()) => grants.push(nanos(&clock)),
                Err(n) => clock.advance(n.wait_time_from(clock.now())),
            }
        }
        assert!(largest_window(&grants, TEN_SECONDS) > 100);
    }

    #[test]
    fn daily_reserve_stops_spending_and_reports_it() {
        let mut budget = DailyBudget::new(1_000, 100);
        let t0 = Instant::now();
        budget.observe(102, t0);
        budget.spend(t0).expect("102 left");
        budget.spend(t0).expect("101 left");
        let err = budget.spend(t0).expect_err("reserve");
        let BudgetError::DailyReserve {
            remaining, reserve, ..
        } = err;
        assert_eq!((remaining, reserve), (100, 100));
        assert!(budget.spend(t0 + Duration::from_secs(60)).is_err());
        // After the probe interval one request may go out to read the new figure …
        budget.spend(t0 + DAILY_PROBE_INTERVAL).expect("probe");
        // … and if the day has not reset the next is refused again.
        assert!(budget.spend(t0 + DAILY_PROBE_INTERVAL).is_err());
        budget.observe(250_000, t0 + DAILY_PROBE_INTERVAL);
        budget.spend(t0 + DAILY_PROBE_INTERVAL * 3).expect("reset");
        assert_eq!(budget.remaining(), 249_999);
    }

    #[test]
    fn without_headers_the_configured_limit_counts_down() {
        let mut budget = DailyBudget::new(3, 1);
        let t0 = Instant::now();
        budget.spend(t0).expect("3 left");
        budget.spend(t0).expect("2 left");
        assert!(budget.spend(t0).is_err());
    }

    #[test]
    fn daily_429_blocks_until_probe() {
        let mut budget = DailyBudget::new(250_000, 10);
        let t0 = Instant::now();
        assert_eq!(budget.exhausted(t0), DAILY_PROBE_INTERVAL);
        assert!(budget.spend(t0 + Duration::from_secs(1)).is_err());
    }

    fn report(limit: u64, used: u64, resets_at: &str) -> UsageReport {
        UsageReport {
            usage_limit: limit,
            current_usage: used,
            resets_at: resets_at.parse().expect("time"),
            collected_at: None,
            fetch_status: "SUCCESS".into(),
        }
    }

    fn wall(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    /// A budget configured for 250k with `reserve`, seeded at `at` (wall clock) with HubSpot's
    /// `limit` and `used`, the day ending at midnight UTC; with its instant and wall time.
    fn seeded(
        reserve: u64,
        at: &str,
        limit: u64,
        used: u64,
    ) -> (DailyBudget, Instant, DateTime<Utc>) {
        let mut budget = DailyBudget::new(250_000, reserve);
        let (t0, w0) = (Instant::now(), wall(at));
        budget.seed(&report(limit, used, MIDNIGHT), t0, w0);
        (budget, t0, w0)
    }

    const MIDNIGHT: &str = "2026-10-02T00:00:00Z";

    #[test]
    fn the_usage_endpoint_seeds_limit_usage_and_reset() {
        // Configured for 250k; HubSpot says 1,000 of which other apps used 900.
        let (mut budget, t0, w0) = seeded(50, "2026-10-01T23:00:00Z", 1_000, 900);
        assert_eq!(budget.remaining(), 100);
        assert_eq!(budget.limit, 1_000);
        assert_eq!(budget.reported().map(|(_, at)| at), Some(wall(MIDNIGHT)));
        for _ in 0..50 {
            budget.spend(t0).expect("above the reserve");
        }
        // At the reserve: refused until the reported reset, not for a probe interval.
        let err = budget.spend(t0).expect_err("reserve");
        let BudgetError::DailyReserve {
            retry_after,
            resets_at,
            ..
        } = err.clone();
        assert_eq!(retry_after, Duration::from_secs(3_600) + RESET_GRACE);
        assert_eq!(resets_at, Some(wall(MIDNIGHT)));
        assert!(
            err.to_string()
                .contains("until HubSpot's daily reset at 2026-10-02T00:00:00Z (in 3601s)"),
            "{err}"
        );
        assert!(
            budget.refresh_wanted(t0),
            "the reserve asks for a fresh figure"
        );
        // A fresh figure still at the reserve keeps the block; no further read is wanted.
        budget.seed(&report(1_000, 951, MIDNIGHT), t0, w0);
        assert!(!budget.refresh_wanted(t0));
        let hour = Duration::from_secs(3_600);
        assert!(
            budget.spend(t0 + DAILY_PROBE_INTERVAL * 2).is_err(),
            "no probe"
        );
        assert!(budget.spend(t0 + hour).is_err(), "the grace");
        // Past the reset: the whole limit again, and HubSpot's figures are wanted.
        let after = t0 + hour + RESET_GRACE;
        assert!(budget.refresh_wanted(after));
        budget.spend(after).expect("a new day");
        assert_eq!(budget.remaining(), 999);
        assert!(budget.reported().is_none());
    }

    #[test]
    fn a_fresh_figure_with_room_lifts_the_block_and_headers_only_tighten() {
        let (mut budget, t0, w0) = seeded(10, "2026-10-01T12:00:00Z", 100, 80);
        // Headers within the reported day lower the figure, never raise it.
        budget.observe(50, t0);
        assert_eq!(budget.remaining(), 20);
        budget.observe(15, t0);
        assert_eq!(budget.remaining(), 15);
        for _ in 0..5 {
            budget.spend(t0).expect("spend");
        }
        assert!(budget.spend(t0).is_err());
        // The limit was raised meanwhile: HubSpot's figure leaves room again.
        budget.seed(&report(1_000, 95, MIDNIGHT), t0, w0);
        budget.spend(t0).expect("room again");
        assert_eq!(budget.remaining(), 904);
    }

    #[test]
    fn a_daily_429_waits_for_the_reported_reset_and_outranks_a_cached_figure() {
        let (mut budget, t0, w0) = seeded(10, "2026-10-01T23:30:00Z", 1_000, 500);
        let half_hour = Duration::from_secs(1_800);
        assert_eq!(budget.exhausted(t0), half_hour + RESET_GRACE);
        assert!(budget.refresh_wanted(t0));
        // A (cached) figure with room does not lift HubSpot's 429.
        budget.seed(&report(1_000, 500, MIDNIGHT), t0, w0);
        assert!(budget.spend(t0 + half_hour).is_err());
        budget
            .spend(t0 + half_hour + RESET_GRACE)
            .expect("after the reset");
    }

    #[test]
    fn without_a_reported_day_the_headers_set_the_figure() {
        let mut budget = DailyBudget::new(250_000, 10);
        let t0 = Instant::now();
        budget.observe(100, t0);
        budget.observe(200, t0);
        assert_eq!(budget.remaining(), 200);
        // A failed read leaves the probe behaviour as it was.
        budget.observe(10, t0);
        assert!(budget.spend(t0).is_err());
        budget.unreported(t0);
        assert!(!budget.refresh_wanted(t0));
        budget.spend(t0 + DAILY_PROBE_INTERVAL).expect("probe");
    }

    #[test]
    fn the_reserve_pays_for_reading_the_usage_endpoint() {
        let mut budget = DailyBudget::new(100, 10);
        let t0 = Instant::now();
        budget.observe(10, t0);
        assert!(budget.spend(t0).is_err());
        budget.spend_reserve(t0);
        assert_eq!(budget.remaining(), 9);
    }

    #[tokio::test]
    async fn daily_budget_back_resolves_when_the_block_ends() {
        let limiter = Limiter::new(100, 5, 250_000, 10);
        // Nothing holds it back: at once.
        limiter.daily_budget_back().await;
        let soon = Utc::now() + chrono::TimeDelta::milliseconds(200);
        limiter.seed_daily(&UsageReport {
            resets_at: soon,
            ..report(1_000, 995, "2026-10-02T00:00:00Z")
        });
        let stats = limiter.stats();
        assert_eq!(stats.daily_limit, 1_000);
        assert_eq!(stats.daily_resets_at, Some(soon));
        assert!(stats.daily_paused_until.is_some_and(|p| p >= soon));
        assert!(limiter.acquire(Lane::Standard).await.is_err());
        limiter.daily_budget_back().await;
        assert!(Utc::now() >= soon);
        limiter.acquire(Lane::Standard).await.expect("a new day");
        assert!(limiter.usage_wanted());
        assert_eq!(limiter.stats().daily_paused_until, None);
    }

    #[tokio::test]
    async fn limiter_refuses_and_reports_at_the_reserve() {
        let limiter = Limiter::new(100, 5, 250_000, 10);
        limiter.observe(Some(11), Some(97));
        limiter.acquire(Lane::Search).await.expect("11 left");
        assert!(matches!(
            limiter.acquire(Lane::Standard).await,
            Err(BudgetError::DailyReserve { remaining: 10, .. })
        ));
        let stats = limiter.stats();
        assert_eq!((stats.granted, stats.search_granted), (0, 1));
        assert_eq!(stats.daily_remaining, Some(11));
        assert_eq!(stats.window_remaining, Some(97));
    }

    #[tokio::test]
    async fn pause_holds_callers_and_counts_wait() {
        let limiter = Limiter::new(100, 5, 250_000, 10);
        let pause = Duration::from_millis(60);
        let start = tokio::time::Instant::now();
        limiter.pause(pause);
        limiter.acquire(Lane::Standard).await.expect("granted");
        assert!(start.elapsed() >= pause);
        let stats = limiter.stats();
        assert!(stats.waited >= pause);
        assert_eq!((stats.pauses, stats.granted), (1, 1));
    }
}
