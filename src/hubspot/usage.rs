//! HubSpot's account usage endpoint (`GET /account-info/{version}/api-usage/daily/private-apps`):
//! the account's daily request limit, what every app of the account has used of it today, and
//! when the day resets (midnight in the account's time zone). Parsing and reset arithmetic; pure.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

/// The entry of the answer that counts private-app (and service-key) requests.
pub const USAGE_NAME: &str = "private-apps-api-calls-daily";

/// The account's daily figures as the usage endpoint reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// Requests the account may make today (every app together).
    pub usage_limit: u64,
    /// Requests the account has made today, every app counted.
    pub current_usage: u64,
    /// HubSpot's `resetsAt`; see [`UsageReport::next_reset`].
    pub resets_at: DateTime<Utc>,
    /// When HubSpot collected the figures (`collectedAt`).
    pub collected_at: Option<DateTime<Utc>>,
    /// `SUCCESS`, or `CACHED` when HubSpot served a stored figure.
    pub fetch_status: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    name: Option<String>,
    usage_limit: u64,
    current_usage: u64,
    resets_at: DateTime<Utc>,
    #[serde(default)]
    collected_at: Option<DateTime<Utc>>,
    #[serde(default)]
    fetch_status: Option<String>,
}

impl UsageReport {
    /// Reads the endpoint's answer: the private-apps entry (or the only one), with a fetch
    /// status of `SUCCESS` or `CACHED`. `Err` says what is wrong with it.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let mut results = answer.results;
        let at = results
            .iter()
            .position(|e| e.name.as_deref() == Some(USAGE_NAME))
            .or((results.len() == 1).then_some(0))
            .ok_or_else(|| format!("no `{USAGE_NAME}` entry among {} results", results.len()))?;
        let entry = results.swap_remove(at);
        let status = entry.fetch_status.unwrap_or_else(|| "SUCCESS".into());
        if !["SUCCESS", "CACHED"].contains(&status.to_ascii_uppercase().as_str()) {
            return Err(format!("fetchStatus is {status}"));
        }
        Ok(Self {
            usage_limit: entry.usage_limit,
            current_usage: entry.current_usage,
            resets_at: entry.resets_at,
            collected_at: entry.collected_at,
            fetch_status: status,
        })
    }

    /// Requests the account has left today.
    pub fn remaining(&self) -> u64 {
        self.usage_limit.saturating_sub(self.current_usage)
    }

    /// The first reset after `now`. `resetsAt` is normally ahead; an answer whose `resetsAt` is
    /// already past (HubSpot's own example shows the start of the current day) is read as the
    /// start of the day, so the reset is a whole number of days after it.
    pub fn next_reset(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.resets_at > now {
            return self.resets_at;
        }
        let days = (now - self.resets_at).num_days() + 1;
        self.resets_at + TimeDelta::days(days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn reads_hubspots_documented_answer() {
        let body = br#"{"results":[{"name":"private-apps-api-calls-daily","usageLimit":500000,
            "currentUsage":1,"collectedAt":"2026-10-01T06:46:40.789Z","fetchStatus":"SUCCESS",
            "resetsAt":"2026-10-02T06:00:00Z"}]}"#;
        let report = UsageReport::parse(body).expect("parses");
        assert_eq!(
            report,
            UsageReport {
                usage_limit: 500_000,
                current_usage: 1,
                resets_at: at("2026-10-02T06:00:00Z"),
                collected_at: Some(at("2026-10-01T06:46:40.789Z")),
                fetch_status: "SUCCESS".into(),
            }
        );
        assert_eq!(report.remaining(), 499_999);
    }

    #[test]
    fn picks_the_private_apps_entry_and_refuses_what_it_cannot_use() {
        let two = br#"{"results":[
            {"name":"other","usageLimit":1,"currentUsage":1,"resetsAt":"2026-10-02T06:00:00Z"},
            {"name":"private-apps-api-calls-daily","usageLimit":250000,"currentUsage":7,
             "fetchStatus":"CACHED","resetsAt":"2026-10-02T06:00:00Z"}]}"#;
        let report = UsageReport::parse(two).expect("parses");
        assert_eq!((report.usage_limit, report.current_usage), (250_000, 7));
        assert_eq!(report.fetch_status, "CACHED");
        let failed = br#"{"results":[{"name":"private-apps-api-calls-daily","usageLimit":1,
            "currentUsage":0,"fetchStatus":"FAILURE","resetsAt":"2026-10-02T06:00:00Z"}]}"#;
        assert_eq!(
            UsageReport::parse(failed).unwrap_err(),
            "fetchStatus is FAILURE"
        );
        assert!(
            UsageReport::parse(br#"{"results":[]}"#)
                .unwrap_err()
                .contains("no `private-apps-api-calls-daily` entry")
        );
        assert!(UsageReport::parse(b"<html>").is_err());
    }

    #[test]
    fn a_past_reset_time_is_the_start_of_the_day() {
        let report = UsageReport {
            usage_limit: 10,
            current_usage: 0,
            resets_at: at("2026-10-01T04:00:00Z"),
            collected_at: None,
            fetch_status: "SUCCESS".into(),
        };
        for (now, next) in [
            // Ahead: as reported.
            ("2026-10-01T03:59:59Z", "2026-10-01T04:00:00Z"),
            // Behind (HubSpot's legacy example: collected at 06:46, resets at 04:00 that day).
            ("2026-10-01T06:46:40Z", "2026-10-02T04:00:00Z"),
            ("2026-10-01T04:00:00Z", "2026-10-02T04:00:00Z"),
            ("2026-10-03T05:00:00Z", "2026-10-04T04:00:00Z"),
        ] {
            assert_eq!(report.next_reset(at(now)), at(next), "at {now}");
        }
    }
}
