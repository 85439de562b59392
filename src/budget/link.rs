//! When an instance may spend HubSpot requests on its own: the timing rules of the shared budget
//! (heartbeat, stale, look-ahead, lease) and one instance's link to it — joined, or cut off and
//! pacing itself on its share. Pure: callers pass the time.
//!
//! Why the rules keep every window at or below the limit while some instances cannot reach
//! PostgreSQL: an instance cut off at its last heartbeat (sent at `s`, answered at `r`) grants
//! nothing on its own before `r + stale + span + ahead`. The others see its heartbeat stale from
//! `stale` after it, and from then on hold its share back from the log; slots they took before
//! that lie at most `ahead` in the future, so they have left every window by the time it starts.
//! It stops at `s + lease`; the others hold its share until its heartbeat is `lease + span` old
//! (see [`Timing::hold`]), by which time its last own grant has left every window. When it
//! reaches PostgreSQL again its own grants join the log before it takes a shared slot.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The shared budget's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often each instance reports in.
    pub heartbeat: Duration,
    /// A heartbeat older than this may mean the instance is spending on its own.
    pub stale: Duration,
    /// No slot is reserved further ahead than this.
    pub ahead: Duration,
    /// How long after its last heartbeat a cut-off instance may still spend its share.
    pub lease: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            stale: Duration::from_secs(3),
            ahead: Duration::from_secs(2),
            lease: Duration::from_secs(20),
        }
    }
}

impl Timing {
    /// How long the others hold back the share of an instance that stopped reporting: until its
    /// own grants, the last one at most a lease after its heartbeat, have left every window.
    /// A dead instance's budget returns to the others after this.
    pub fn hold(&self, span: Duration) -> Duration {
        self.lease + span
    }

    /// How long after its last answered heartbeat a cut-off instance waits before spending on its
    /// own: until every slot the others took before they could know has left every window.
    pub fn quiet(&self, span: Duration) -> Duration {
        self.stale + span + self.ahead
    }
}

/// Where a cut-off instance stands for one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// Joined: take slots from the shared log.
    Shared,
    /// Cut off: nothing may go out before this.
    WaitUntil(Instant),
    /// Cut off: up to `share` per window may go out until `until`.
    Open { share: u32, until: Instant },
    /// Cut off past the lease (or never joined): nothing goes out until the link is back.
    Closed,
}

/// One instance's link to the shared budget, for its two lanes.
#[derive(Debug)]
pub struct Link {
    timing: Timing,
    spans: [Duration; 2],
    joined: bool,
    /// The last heartbeat that was answered: when it was sent and when the answer came.
    last: Option<(Instant, Instant)>,
    shares: [u32; 2],
    instances: u32,
    /// Grants made on the instance's own share since it was cut off, within a span.
    own: [VecDeque<Instant>; 2],
}

impl Link {
    /// `spans` are the lanes' windows with their jitter margins.
    pub fn new(timing: Timing, spans: [Duration; 2]) -> Self {
        Self {
            timing,
            spans,
            joined: false,
            last: None,
            shares: [0; 2],
            instances: 0,
            own: [VecDeque::new(), VecDeque::new()],
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// A heartbeat sent at `sent` was answered at `received` with these shares: the instance is
    /// joined (its own grants were pushed with that heartbeat).
    pub fn joined(&mut self, sent: Instant, received: Instant, shares: [u32; 2], instances: u32) {
        self.joined = true;
        self.last = Some((sent, received));
        self.shares = shares;
        self.instances = instances;
        for own in &mut self.own {
            own.clear();
        }
    }

    /// A grant or heartbeat failed: the instance is cut off until a heartbeat is answered.
    pub fn lost(&mut self) {
        self.joined = false;
    }

    pub fn is_joined(&self) -> bool {
        self.joined
    }

    pub fn shares(&self) -> [u32; 2] {
        self.shares
    }

    pub fn instances(&self) -> u32 {
        self.instances
    }

    /// What lane `lane` may do at `now`.
    pub fn own(&self, lane: usize, now: Instant) -> Own {
        if self.joined {
            return Own::Shared;
        }
        let Some((sent, received)) = self.last else {
            return Own::Closed;
        };
        let start = received + self.timing.quiet(self.spans[lane]);
        let until = sent + self.timing.lease;
        if now >= until || self.shares[lane] == 0 {
            Own::Closed
        } else if now < start {
            Own::WaitUntil(start)
        } else {
            Own::Open {
                share: self.shares[lane],
                until,
            }
        }
    }

    /// A grant made on the instance's own share at `at`.
    pub fn granted_own(&mut self, lane: usize, at: Instant) {
        self.own[lane].push_back(at);
    }

    /// The own grants still inside a window at `now`, as (lane, age) for the next heartbeat.
    pub fn own_grants(&mut self, now: Instant) -> Vec<(usize, Duration)> {
        let mut out = Vec::new();
        for (lane, own) in self.own.iter_mut().enumerate() {
            let span = self.spans[lane];
            while own.front().is_some_and(|at| now.duration_since(*at) > span) {
                own.pop_front();
            }
            out.extend(own.iter().map(|at| (lane, now.duration_since(*at))));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: Duration = Duration::from_millis(10_100);

    fn link() -> (Link, Instant) {
        let mut link = Link::new(Timing::default(), [SPAN, Duration::from_millis(1_250)]);
        let t0 = Instant::now();
        link.joined(t0, t0 + Duration::from_millis(2), [33, 1], 3);
        (link, t0)
    }

    #[test]
    fn a_joined_instance_takes_shared_slots() {
        let (link, t0) = link();
        assert_eq!(link.own(0, t0 + Duration::from_secs(100)), Own::Shared);
    }

    #[test]
    fn a_cut_off_instance_is_quiet_then_spends_its_share_until_the_lease_ends() {
        let (mut link, t0) = link();
        link.lost();
        let received = t0 + Duration::from_millis(2);
        let start = received + Timing::default().quiet(SPAN);
        assert_eq!(
            link.own(0, t0 + Duration::from_secs(1)),
            Own::WaitUntil(start)
        );
        assert_eq!(
            link.own(0, start),
            Own::Open {
                share: 33,
                until: t0 + Duration::from_secs(20)
            }
        );
        assert_eq!(link.own(0, t0 + Duration::from_secs(20)), Own::Closed);
        // The search lane's window is shorter, so it may start sooner.
        assert!(matches!(
            link.own(1, t0 + Duration::from_secs(7)),
            Own::Open { share: 1, .. }
        ));
    }

    #[test]
    fn an_instance_that_never_joined_or_has_no_share_sends_nothing_on_its_own() {
        let link = Link::new(Timing::default(), [SPAN, SPAN]);
        assert_eq!(link.own(0, Instant::now()), Own::Closed);
        let (mut link, t0) = link_with_share(0);
        link.lost();
        assert_eq!(link.own(0, t0 + Duration::from_secs(16)), Own::Closed);
    }

    fn link_with_share(share: u32) -> (Link, Instant) {
        let mut link = Link::new(Timing::default(), [SPAN, SPAN]);
        let t0 = Instant::now();
        link.joined(t0, t0, [share, share], 2);
        (link, t0)
    }

    #[test]
    fn own_grants_within_a_window_are_reported_once_joined_again_they_are_forgotten() {
        let (mut link, t0) = link();
        link.lost();
        let a = t0 + Duration::from_secs(16);
        link.granted_own(0, a);
        link.granted_own(0, a + Duration::from_secs(1));
        link.granted_own(1, a + Duration::from_secs(1));
        let now = a + Duration::from_secs(11);
        // The first left the 10.1 s window; the search grant left its 1.25 s one.
        assert_eq!(link.own_grants(now), vec![(0, Duration::from_secs(10))]);
        link.joined(now, now, [33, 1], 3);
        assert!(link.own_grants(now).is_empty());
    }

    #[test]
    fn the_hold_outlasts_the_quiet_time_and_every_own_grant() {
        let t = Timing::default();
        // A cut-off instance's last own grant is at most a lease after its heartbeat, and stays
        // in windows for a span; the others hold its share that long.
        assert_eq!(t.hold(SPAN), t.lease + SPAN);
        // It can spend on its own at all: the quiet time ends before the lease does.
        assert!(t.quiet(SPAN) < t.lease);
        // The others notice it before it starts.
        assert!(t.stale < t.quiet(SPAN));
    }
}
