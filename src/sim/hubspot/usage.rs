//! The simulated account's API day: the requests counted since the last reset (hubsync's own
//! and other apps' on the same portal, which share the daily limit), the reset at midnight in the
//! account's time zone (or at a set instant first), and the usage endpoint's answer. Pure:
//! callers pass the time.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::errors::Reply;

/// The portal's daily request count.
#[derive(Debug, Clone)]
pub struct Day {
    zone: Tz,
    resets_at: DateTime<Utc>,
    own: u64,
    other_apps: u64,
}

impl Day {
    /// A day that resets at `first_reset` (else the next midnight in `zone`), with
    /// `other_apps` requests already spent by other apps.
    pub fn new(
        zone: Tz,
        first_reset: Option<DateTime<Utc>>,
        other_apps: u64,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            zone,
            resets_at: first_reset.unwrap_or_else(|| next_midnight(zone, now)),
            own: 0,
            other_apps,
        }
    }

    /// Starts a new day, counting from zero, for the reset `now` has passed.
    pub fn roll(&mut self, now: DateTime<Utc>) {
        if now >= self.resets_at {
            self.own = 0;
            self.other_apps = 0;
            self.resets_at = next_midnight(self.zone, now);
        }
    }

    /// Requests counted today, every app.
    pub fn used(&self) -> u64 {
        self.own + self.other_apps
    }

    /// One request of the API's own clients, admitted.
    pub fn count(&mut self) {
        self.own += 1;
    }

    /// Requests other apps of the portal made.
    pub fn spend_other_apps(&mut self, n: u64) {
        self.other_apps = self.other_apps.saturating_add(n);
    }

    /// Moves the next reset (later resets fall at midnight in the zone again).
    pub fn set_resets_at(&mut self, at: DateTime<Utc>) {
        self.resets_at = at;
    }

    pub fn resets_at(&self) -> DateTime<Utc> {
        self.resets_at
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The requests the API's clients made today (the other apps' left out).
    pub fn own(&self) -> u64 {
        self.own
    }

    pub fn other_apps(&self) -> u64 {
        self.other_apps
    }

    /// What the usage endpoint reports now for a daily limit of `limit`.
    pub fn figures(&self, limit: u64) -> Figures {
        Figures {
            limit,
            used: self.used(),
            resets_at: self.resets_at,
        }
    }
}

/// The figures one usage answer reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub limit: u64,
    pub used: u64,
    pub resets_at: DateTime<Utc>,
}

impl Figures {
    /// `GET /account-info/{version}/api-usage/daily/private-apps`, as HubSpot documents it.
    pub fn answer(&self, now: DateTime<Utc>) -> Reply {
        Reply::json(
            200,
            json!({"results": [{
                "name": crate::hubspot::usage::USAGE_NAME,
                "usageLimit": self.limit,
                "currentUsage": self.used,
                "collectedAt": now,
                "fetchStatus": "SUCCESS",
                "resetsAt": self.resets_at,
            }]}),
        )
    }
}

/// The first midnight in `zone` after `after` (the first existing local time of that date when
/// a clock change skips midnight).
pub fn next_midnight(zone: Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    let local = after.with_timezone(&zone).date_naive();
    let next = local.checked_add_days(Days::new(1)).unwrap_or(local);
    (0..24)
        .filter_map(|hour| NaiveTime::from_hms_opt(hour, 0, 0))
        .find_map(|time| zone.from_local_datetime(&next.and_time(time)).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(after + chrono::TimeDelta::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn midnight_is_the_accounts() {
        use chrono_tz::America::{Costa_Rica, Santiago};
        for (zone, after, midnight) in [
            (Costa_Rica, "2026-10-01T05:59:59Z", "2026-10-01T06:00:00Z"),
            (Costa_Rica, "2026-10-01T06:00:00Z", "2026-10-02T06:00:00Z"),
            (
                chrono_tz::UTC,
                "2026-10-01T23:00:00Z",
                "2026-10-02T00:00:00Z",
            ),
            // Santiago skips 00:00–01:00 when summer time starts (6 September 2026).
            (Santiago, "2026-09-05T12:00:00Z", "2026-09-06T04:00:00Z"),
        ] {
            assert_eq!(
                next_midnight(zone, at(after)),
                at(midnight),
                "{zone} {after}"
            );
        }
    }

    #[test]
    fn the_day_counts_every_app_and_starts_again_at_the_reset() {
        let now = at("2026-10-01T12:00:00Z");
        let reset = at("2026-10-01T12:00:03Z");
        let mut day = Day::new(chrono_tz::UTC, Some(reset), 900, now);
        day.count();
        day.spend_other_apps(10);
        assert_eq!((day.own(), day.other_apps(), day.used()), (1, 910, 911));
        day.roll(at("2026-10-01T12:00:02.999Z"));
        assert_eq!(day.used(), 911);
        day.roll(reset);
        assert_eq!(day.used(), 0);
        assert_eq!(day.resets_at(), at("2026-10-02T00:00:00Z"));
        let body = day.figures(1_000).answer(now).body.expect("body");
        assert_eq!(body["results"][0]["usageLimit"], 1_000);
        assert_eq!(body["results"][0]["currentUsage"], 0);
        assert_eq!(body["results"][0]["resetsAt"], "2026-10-02T00:00:00Z");
        assert_eq!(body["results"][0]["fetchStatus"], "SUCCESS");
    }
}
