//! `hubspot:` settings — API base URL and version, token, rate-limit tier, timeouts and retry
//! budget.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::paths::ApiVersion;
use crate::config::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSpotSettings {
    /// API root; tests and the demo point it at `hubsync sim hubspot`.
    pub base_url: url::Url,
    /// HubSpot API version the paths are built for: `2026-09` (default), `2026-03` or the legacy
    /// `v3` (unsupported by HubSpot from September 2027). Anything else is a config error.
    pub api_version: ApiVersion,
    /// Private-app token; a secret, usually from `HUBSYNC_HUBSPOT_TOKEN`.
    pub token: Option<SecretString>,
    /// Requests allowed in any rolling 10 s window (the account tier: 100, 190 or 250).
    pub requests_per_10s: u32,
    /// Search requests per second (HubSpot allows 5).
    pub search_per_second: u32,
    /// Requests per day the account may make, when HubSpot's usage endpoint (which gives the
    /// real limit, usage and reset) cannot be read.
    pub daily_limit: u64,
    /// hubsync stops sending at this many requests left today, until HubSpot's daily reset.
    pub daily_reserve: u64,
    /// Per-request timeout.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
    /// The HubSpot poller re-reads this far behind its cursor: search results lag writes.
    #[serde(with = "crate::config::duration")]
    pub search_lag: Duration,
    /// Give up retrying a call after this long; the queue then retries the items later.
    #[serde(with = "crate::config::duration")]
    pub max_retry_elapsed: Duration,
    /// First retry delay; doubles per attempt with ±50 % jitter up to `retry_max_interval`.
    #[serde(with = "crate::config::duration")]
    pub retry_initial: Duration,
    #[serde(with = "crate::config::duration")]
    pub retry_max_interval: Duration,
}

impl Default for HubSpotSettings {
    fn default() -> Self {
        Self {
            base_url: url::Url::parse("https://api.hubapi.com").expect("static URL"),
            api_version: ApiVersion::default(),
            token: None,
            requests_per_10s: 100,
            search_per_second: 5,
            daily_limit: 250_000,
            daily_reserve: 10_000,
            timeout: Duration::from_secs(30),
            max_retry_elapsed: Duration::from_secs(120),
            search_lag: Duration::from_secs(30),
            retry_initial: Duration::from_millis(250),
            retry_max_interval: Duration::from_secs(10),
        }
    }
}

impl HubSpotSettings {
    /// Adds a problem for every setting that cannot work; `need_token` when the command calls out.
    pub fn check(&self, path: &str, need_token: bool, problems: &mut Problems) {
        if need_token && self.token.is_none() {
            problems.push(
                format!("{path}.token"),
                format!(
                    "required secret is missing: set {} or {path}.token",
                    crate::config::ENV_HUBSPOT_TOKEN
                ),
            );
        }
        match self.base_url.scheme() {
            "https" => {}
            // The token would cross the network in clear: only to this host (the simulators).
            "http" if is_loopback(&self.base_url) => {}
            "http" => problems.push(
                format!("{path}.base_url"),
                "http:// sends the token in clear: use https://, or http:// to a loopback host \
                 (127.0.0.1, ::1, localhost) only",
            ),
            _ => problems.push(format!("{path}.base_url"), "must be an http(s) URL"),
        }
        if self.requests_per_10s == 0 {
            problems.push(format!("{path}.requests_per_10s"), "must be at least 1");
        }
        if self.search_per_second == 0 {
            problems.push(format!("{path}.search_per_second"), "must be at least 1");
        }
        if self.timeout.is_zero() {
            problems.push(format!("{path}.timeout"), "must be above zero");
        }
        if self.retry_initial.is_zero() || self.retry_initial > self.retry_max_interval {
            problems.push(
                format!("{path}.retry_initial"),
                "must be above zero and at most retry_max_interval",
            );
        }
        if self.daily_reserve >= self.daily_limit {
            problems.push(format!("{path}.daily_reserve"), "must be below daily_limit");
        }
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
