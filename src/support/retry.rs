//! Retry delays: exponential with full jitter, capped. The one place hubsync uses `backoff`
//! (unmaintained upstream), so it can be replaced without touching callers.

use std::time::Duration;

use backoff::backoff::Backoff;

/// Delay before retry number `attempt` (1-based): `initial × 2^(attempt-1)`, capped at `max`,
/// then randomized by ±50 % so that many failing items do not retry in lockstep.
pub fn delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let mut b = exponential(initial, max, None);
    let mut d = initial;
    for _ in 0..attempt.max(1) {
        d = b.next_backoff().unwrap_or(max);
    }
    d.min(max)
}

/// An exponential backoff for retrying one call in-process, giving up after `max_elapsed`.
pub fn exponential(
    initial: Duration,
    max: Duration,
    max_elapsed: Option<Duration>,
) -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(initial)
        .with_max_interval(max)
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_elapsed_time(max_elapsed)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_per_attempt_and_is_capped() {
        let initial = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        // With ±50 % jitter, attempt n lies in [0.5, 1.5] × 10 s × 2^(n-1).
        for attempt in 1..=5u32 {
            let base = 10.0 * 2f64.powi(attempt as i32 - 1);
            let d = delay(attempt, initial, max).as_secs_f64();
            assert!(
                d >= base * 0.5 - 0.01 && d <= base * 1.5 + 0.01,
                "attempt {attempt}: {d}"
            );
        }
        assert!(delay(30, initial, max) <= max);
    }
}
