//! Rolling time windows over request timestamps (microseconds since the simulator started):
//! the rate limiter's admission count and the exact largest number of requests seen in any
//! window of the span. A window is half-open: requests at `t` and `t + span` are not in one
//! window. Pure.

use std::collections::VecDeque;

/// Timestamps inside the last `span` microseconds.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    span: u64,
    stamps: VecDeque<u64>,
}

impl TimeWindow {
    pub fn new(span_us: u64) -> Self {
        Self {
            span: span_us,
            stamps: VecDeque::new(),
        }
    }

    /// Forgets stamps that fell out of the window ending at `now`; returns how many remain.
    pub fn count_at(&mut self, now: u64) -> usize {
        while let Some(&front) = self.stamps.front() {
            if front + self.span <= now {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
        self.stamps.len()
    }

    /// Adds a stamp (stamps must not go backwards); returns the count including it.
    pub fn push(&mut self, now: u64) -> usize {
        let now = now.max(self.stamps.back().copied().unwrap_or(0));
        self.count_at(now);
        self.stamps.push_back(now);
        self.stamps.len()
    }
}

/// A rolling-window limit: at most `limit` admissions in any window.
#[derive(Debug, Clone)]
pub struct RollingLimit {
    limit: usize,
    window: TimeWindow,
}

impl RollingLimit {
    pub fn new(limit: usize, span_us: u64) -> Self {
        Self {
            limit,
            window: TimeWindow::new(span_us),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Admits a request at `now` and returns the remaining allowance, or `None` when the window
    /// is full (the request is not counted).
    pub fn try_admit(&mut self, now: u64) -> Option<usize> {
        if self.window.count_at(now) >= self.limit {
            return None;
        }
        let used = self.window.push(now);
        Some(self.limit.saturating_sub(used))
    }

    /// Allowance left at `now` without admitting.
    pub fn remaining(&mut self, now: u64) -> usize {
        self.limit.saturating_sub(self.window.count_at(now))
    }
}

/// The largest number of stamps seen in any window of the span, computed exactly: the busiest
/// window always ends at some request, and at each request the window holds exactly the stamps
/// of the preceding `span`.
#[derive(Debug, Clone)]
pub struct PeakWindow {
    window: TimeWindow,
    peak: usize,
}

impl PeakWindow {
    pub fn new(span_us: u64) -> Self {
        Self {
            window: TimeWindow::new(span_us),
            peak: 0,
        }
    }

    pub fn record(&mut self, now: u64) {
        let count = self.window.push(now);
        self.peak = self.peak.max(count);
    }

    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// Brute force over every window starting at a stamp.
    fn brute_peak(stamps: &[u64], span: u64) -> usize {
        stamps
            .iter()
            .map(|&start| {
                stamps
                    .iter()
                    .filter(|&&t| t >= start && t < start + span)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn peak_counts_the_busiest_window_exactly() {
        // 60 requests in the last second of one window and 60 in the first second of the next:
        // no fixed 10 s bucket holds more than 60, but a rolling window holds 120.
        let mut stamps: Vec<u64> = (0..60).map(|i| 9 * S + i * 10_000).collect();
        stamps.extend((0..60).map(|i| 10 * S + i * 10_000));
        let mut peak = PeakWindow::new(10 * S);
        for &t in &stamps {
            peak.record(t);
        }
        assert_eq!(peak.peak(), 120);
        assert_eq!(peak.peak(), brute_peak(&stamps, 10 * S));
    }

    #[test]
    fn window_is_half_open() {
        let mut peak = PeakWindow::new(10 * S);
        peak.record(0);
        peak.record(10 * S);
        assert_eq!(peak.peak(), 1);
        peak.record(10 * S + 1);
        assert_eq!(peak.peak(), 2);
    }

    #[test]
    fn peak_matches_brute_force_on_irregular_stamps() {
        let mut t = 0;
        let mut stamps = Vec::new();
        for i in 0..500u64 {
            t += (i * 7919) % 200_000;
            stamps.push(t);
        }
        let mut peak = PeakWindow::new(S);
        for &s in &stamps {
            peak.record(s);
        }
        assert_eq!(peak.peak(), brute_peak(&stamps, S));
    }

    #[test]
    fn limit_refuses_the_extra_request_until_the_window_rolls() {
        let mut limit = RollingLimit::new(3, 10 * S);
        assert_eq!(limit.try_admit(0), Some(2));
        assert_eq!(limit.try_admit(S), Some(1));
        assert_eq!(limit.try_admit(2 * S), Some(0));
        assert_eq!(limit.try_admit(3 * S), None);
        assert_eq!(limit.try_admit(10 * S - 1), None);
        assert_eq!(limit.try_admit(10 * S), Some(0));
        assert_eq!(limit.remaining(11 * S), 1);
        assert_eq!(limit.remaining(12 * S), 2);
    }
}
