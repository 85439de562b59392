//! The process-wide HubSpot request limiter: a rolling-window pacer on `governor` for ordinary
//! calls, a separate pacer for search, a daily budget fed by the rate-limit headers, a shared
//! pause after a burst 429, and wait-time accounting for metrics.
//!
//! A plain GCRA quota of N per window lets N requests through at once and then refills during the
//! next window, so a rolling window can see up to 2N. [`window_quota`] instead picks a small burst
//! `B` and a replenish period `τ` so that `B + ⌊(window + margin) / τ⌋ ≤ N`: any `k` grants of a
//! GCRA span at least `(k − B)·τ`, hence no closed window of `window + margin` ever holds more
//! than N grants. The margin absorbs network jitter between the client and HubSpot's clock.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::HubSpotSettings;

/// HubSpot's burst window.
pub const TEN_SECONDS: Duration = Duration::from_secs(10);
/// How long hubsync stops spending once the daily reserve is reached before it lets one request
/// through to read the daily headers again (HubSpot resets at midnight in the account's zone).
pub const DAILY_PROBE_INTERVAL: Duration = Duration::from_secs(15 * 60);

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
         hubsync stops calling HubSpot until the daily reset (next check in {}s)",
        retry_after.as_secs()
    )]
    DailyReserve {
        remaining: u64,
        reserve: u64,
        retry_after: Duration,
    },
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
/// a grant here and the request's arrival there: 1 % of the 10 s window (100 ms), a quarter of
/// the 1 s search window (paced to within 100 ms, a busy machine still drew an occasional
/// search 429).
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

/// The daily budget: the last `X-HubSpot-RateLimit-Daily-Remaining` minus later grants, and the
/// block that starts when the reserve is reached. Pure: callers pass the time.
#[derive(Debug)]
pub struct DailyBudget {
    limit: u64,
    reserve: u64,
    /// Last daily-remaining figure HubSpot sent.
    remaining: Option<u64>,
    /// Grants since that figure (or since start when none was seen).
    spent_since: u64,
    /// No spending before this instant (reserve reached or 429 DAILY).
    blocked_until: Option<Instant>,
}

impl DailyBudget {
    pub fn new(limit: u64, reserve: u64) -> Self {
        Self {
            limit,
            reserve,
            remaining: None,
            spent_since: 0,
            blocked_until: None,
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
        let remaining = self.remaining();
        match self.blocked_until {
            Some(until) if now < until => {
                return Err(BudgetError::DailyReserve {
                    remaining,
                    reserve: self.reserve,
                    retry_after: until - now,
                });
            }
            Some(_) => {
                // Probe: one request goes out and its headers tell the new figure.
                self.blocked_until = None;
            }
            None if remaining <= self.reserve => {
                self.blocked_until = Some(now + DAILY_PROBE_INTERVAL);
                tracing::warn!(
                    remaining,
                    reserve = self.reserve,
                    "HubSpot daily budget reached the reserve; pausing HubSpot calls"
                );
                return Err(BudgetError::DailyReserve {
                    remaining,
                    reserve: self.reserve,
                    retry_after: DAILY_PROBE_INTERVAL,
                });
            }
            None => {}
        }
        self.spent_since += 1;
        Ok(())
    }

    /// A daily-remaining figure from HubSpot's headers.
    pub fn observe(&mut self, remaining: u64) {
        self.remaining = Some(remaining);
        self.spent_since = 0;
    }

    /// HubSpot answered 429 DAILY at `now`.
    pub fn exhausted(&mut self, now: Instant) -> Duration {
        self.observe(0);
        self.blocked_until = Some(now + DAILY_PROBE_INTERVAL);
        DAILY_PROBE_INTERVAL
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
        }
    }

    /// Waits for a slot on `lane`; refuses when the daily budget is down to the reserve.
    pub async fn acquire(&self, lane: Lane) -> Result<(), BudgetError> {
        // Budget first, so a refused caller does not wait for a slot it will not use.
        lock(&self.daily).spend(Instant::now())?;
        let started = tokio::time::Instant::now();
        loop {
            let paused = *lock(&self.paused_until);
            if let Some(until) = paused.filter(|u| *u > tokio::time::Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            match lane {
                Lane::Standard => self.standard.acquire().await,
                Lane::Search => self.search.acquire().await,
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
        Ok(())
    }

    /// Records the `X-HubSpot-RateLimit-Daily-Remaining` and `-Remaining` figures of a response.
    pub fn observe(&self, daily_remaining: Option<u64>, window_remaining: Option<u64>) {
        if let Some(remaining) = daily_remaining {
            lock(&self.daily).observe(remaining);
        }
        if let Some(remaining) = window_remaining {
            self.window_remaining.store(remaining, Ordering::Relaxed);
        }
    }

    /// HubSpot answered 429 DAILY: stop spending until the next probe.
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
        let daily_remaining = lock(&self.daily).remaining;
        let window_remaining = self.window_remaining.load(Ordering::Relaxed);
        LimiterStats {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        budget.observe(102);
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
        budget.observe(250_000);
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
