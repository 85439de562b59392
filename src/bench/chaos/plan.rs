//! The scenario's seeded plan: at which moment of the daemon's work each `kill -9` comes, and
//! which HubSpot fault window each life of the daemon runs under. Pure.

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::sim::hubspot::Faults;

/// What kind of moment a kill waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// During the initial load, the SQL Server poller mid-way.
    Loading,
    /// Right after HubSpot got a create, before the daemon settled it.
    Written,
    /// While a HubSpot write call is in flight.
    InFlight,
    /// While the HubSpot poller is mid-pass.
    MidPoll,
    /// At the next HubSpot write in flight (the last kill, right after the last edits, so that
    /// the recovery after it has something to recover).
    Holding,
}

/// Where the daemon's work stands when a kill is armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub members: u64,
    pub valid: u64,
    /// Distinct records queued for HubSpot.
    pub queued: u64,
    /// HubSpot write calls received.
    pub writes: u64,
    /// Live HubSpot contacts.
    pub contacts: u64,
    /// HubSpot search calls received.
    pub searches: u64,
}

/// A concrete moment: the kill comes once the figure reaches the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// This many records queued for HubSpot.
    Queued(u64),
    /// HubSpot has received this many write calls and the process holds items (the last call
    /// is the daemon's, in flight).
    InFlight(u64),
    /// HubSpot holds this many contacts (the batch just written is not settled).
    Written(u64),
    /// HubSpot has received this many searches (the HubSpot poller mid-pass).
    MidPoll(u64),
}

impl Moment {
    pub fn describe(&self) -> String {
        match self {
            Moment::Queued(n) => format!("mid-poll in the initial load ({n} records queued)"),
            Moment::InFlight(n) => format!("HubSpot write #{n} in flight"),
            Moment::Written(n) => format!("contact #{n} written to HubSpot, not settled"),
            Moment::MidPoll(n) => format!("HubSpot poller mid-pass (search #{n})"),
        }
    }
}

/// The kinds of the `kills` kills in order: the first during the initial load, the last
/// [`Kind::Holding`], the others cycling through the rest.
pub fn kinds(kills: usize) -> Vec<Kind> {
    const MIDDLE: [Kind; 3] = [Kind::Written, Kind::InFlight, Kind::MidPoll];
    (0..kills)
        .map(|n| match n {
            n if n + 1 == kills => Kind::Holding,
            0 => Kind::Loading,
            n => MIDDLE[(n - 1) % MIDDLE.len()],
        })
        .collect()
}

/// How long the daemon works before a kill of `kind` is armed: a kill in the initial load or
/// right after the last edits at once, the others after a while of edits and sync.
pub fn armed_after(kind: Kind, rng: &mut impl Rng) -> Duration {
    Duration::from_millis(match kind {
        Kind::Loading => rng.random_range(0..=500),
        Kind::Holding => 0,
        _ => rng.random_range(1_000..=5_000),
    })
}

/// The moment a kill of `kind` waits for, from where the work stands. A moment of the initial
/// load that has passed becomes a write in flight.
pub fn moment(kind: Kind, p: &Progress, rng: &mut impl Rng) -> Moment {
    let in_flight =
        |rng: &mut dyn rand::RngCore| Moment::InFlight(p.writes + rng.random_range(1..=4));
    match kind {
        Kind::Loading if p.queued + 10 < p.members => {
            let left = p.members - p.queued;
            Moment::Queued(p.queued + rng.random_range(1..=(left * 3 / 4).max(1)))
        }
        Kind::Written if p.contacts + 100 < p.valid => {
            let left = p.valid - p.contacts;
            Moment::Written(p.contacts + rng.random_range(1..=(left / 2).max(1)))
        }
        Kind::MidPoll => Moment::MidPoll(p.searches + rng.random_range(1..=3)),
        Kind::Holding => Moment::InFlight(p.writes + 1),
        Kind::Loading | Kind::Written | Kind::InFlight => in_flight(rng),
    }
}

/// HubSpot's condition during one life of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    Calm,
    /// A share of 5xx answers and of connections dropped before any work.
    Errors {
        rate: f64,
        drops: f64,
    },
    /// Latency on every call, and a share of answers lost after the work was done.
    Slow {
        latency: Duration,
        lost: f64,
    },
    /// A burst of 429s, each answered after some latency.
    Burst {
        answers: u32,
        latency: Duration,
    },
    /// Searches slower than `search_lag`: one pass of the HubSpot poller outlasts it.
    SlowSearch {
        latency: Duration,
    },
}

impl Window {
    pub fn faults(&self) -> Faults {
        match *self {
            Window::Calm => Faults::default(),
            Window::Errors { rate, drops } => Faults {
                error_rate: rate,
                drop_rate: drops,
                ..Faults::default()
            },
            Window::Slow { latency, lost } => Faults {
                latency,
                lost_response_rate: lost,
                ..Faults::default()
            },
            Window::Burst { answers, latency } => Faults {
                burst_429: answers,
                latency,
                ..Faults::default()
            },
            Window::SlowSearch { latency } => Faults {
                search_latency: latency,
                ..Faults::default()
            },
        }
    }

    /// How long a life under this window lasts at least: slow searches long enough for a
    /// poller pass of several pages, each slower than the lag.
    pub fn min_life(&self) -> Duration {
        match self {
            Window::SlowSearch { latency } => *latency * 3,
            _ => Duration::ZERO,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Window::Calm => "no faults".into(),
            Window::Errors { rate, drops } => format!(
                "{:.0} % 5xx, {:.0} % connections dropped",
                rate * 100.0,
                drops * 100.0
            ),
            Window::Slow { latency, lost } => format!(
                "{:.1} s latency, {:.0} % answers lost after the work",
                latency.as_secs_f64(),
                lost * 100.0
            ),
            Window::Burst { answers, latency } => format!(
                "a burst of {answers} × 429 after {:.1} s latency",
                latency.as_secs_f64()
            ),
            Window::SlowSearch { latency } => {
                format!("searches {:.1} s slower", latency.as_secs_f64())
            }
        }
    }
}

/// One window per life before the last kill (`lives`): every faulty kind once in a seeded order,
/// then a calm one, over again; the values drawn from the ranges of the scenario.
pub fn windows(lives: usize, search_lag: Duration, rng: &mut impl Rng) -> Vec<Window> {
    let mut out = Vec::with_capacity(lives);
    while out.len() < lives {
        let ms = |rng: &mut dyn rand::RngCore, lo: u64, hi: u64| {
            Duration::from_millis(rng.random_range(lo..=hi))
        };
        let lag_ms = search_lag.as_millis() as u64;
        let mut round = vec![
            Window::Errors {
                rate: rng.random_range(0.10..=0.35),
                drops: rng.random_range(0.02..=0.05),
            },
            Window::Slow {
                latency: ms(rng, 100, 1_500),
                lost: rng.random_range(0.03..=0.08),
            },
            Window::Burst {
                answers: rng.random_range(3..=8),
                latency: ms(rng, 200, 500),
            },
            Window::SlowSearch {
                latency: ms(rng, lag_ms + 500, lag_ms * 2),
            },
        ];
        round.shuffle(rng);
        // The first life is cut short by a kill in the initial load, too soon for a slow pass.
        if out.is_empty() && matches!(round[0], Window::SlowSearch { .. }) {
            round.swap(0, 1);
        }
        round.push(Window::Calm);
        out.extend(round);
    }
    out.truncate(lives);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn kills_start_in_the_load_and_end_holding_items() {
        assert_eq!(kinds(1), [Kind::Holding]);
        assert_eq!(
            kinds(5),
            [
                Kind::Loading,
                Kind::Written,
                Kind::InFlight,
                Kind::MidPoll,
                Kind::Holding
            ]
        );
    }

    #[test]
    fn a_moment_of_the_load_that_has_passed_becomes_a_write_in_flight() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let loading = Progress {
            members: 1_000,
            valid: 950,
            queued: 100,
            writes: 7,
            ..Progress::default()
        };
        match moment(Kind::Loading, &loading, &mut rng) {
            Moment::Queued(n) => assert!((101..=775).contains(&n), "{n}"),
            other => panic!("{other:?}"),
        }
        let loaded = Progress {
            queued: 1_000,
            contacts: 950,
            ..loading
        };
        for kind in [Kind::Loading, Kind::Written] {
            match moment(kind, &loaded, &mut rng) {
                Moment::InFlight(n) => assert!((8..=11).contains(&n), "{n}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            moment(Kind::Holding, &loaded, &mut rng),
            Moment::InFlight(8)
        );
    }

    #[test]
    fn every_fault_window_comes_within_four_lives() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let lag = Duration::from_secs(2);
        let w = windows(4, lag, &mut rng);
        assert_eq!(w.len(), 4);
        assert!(w.iter().any(|w| matches!(w, Window::Errors { .. })));
        assert!(w.iter().any(|w| matches!(w, Window::Slow { .. })));
        assert!(w.iter().any(|w| matches!(w, Window::Burst { .. })));
        let slow = w.iter().find_map(|w| match w {
            Window::SlowSearch { latency } => Some(*latency),
            _ => None,
        });
        assert!(slow.is_some_and(|l| l > lag), "{slow:?}");
        assert!(
            !matches!(w[0], Window::SlowSearch { .. }),
            "not in the first life"
        );
        assert_eq!(windows(10, lag, &mut rng)[4], Window::Calm);
        for window in windows(10, lag, &mut rng) {
            let f = window.faults();
            assert!((0.0..=0.35).contains(&f.error_rate), "{f:?}");
            assert!(f.latency <= Duration::from_millis(1_500), "{f:?}");
        }
    }
}
