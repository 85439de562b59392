//! Errors of HubSpot calls that concern the whole call (or the whole process), so callers can
//! branch on them. Per-record problems are [`super::WriteOutcome`]s instead. No message ever
//! contains the token.

use std::time::Duration;

use super::limiter::BudgetError;

#[derive(Debug, thiserror::Error)]
pub enum HubSpotError {
    /// The configuration lacks something the client needs (e.g. the token).
    #[error("HubSpot client configuration: {0}")]
    Config(String),
    /// 401: the token is wrong, expired or revoked. Not retried.
    #[error(
        "HubSpot rejected the access token (401 {category}): the private-app token is invalid, \
         expired or revoked; set a valid token in {env}",
        env = crate::config::ENV_HUBSPOT_TOKEN
    )]
    InvalidToken { category: String },
    /// 403: the token lacks a scope. Not retried.
    #[error(
        "HubSpot refused the request (403 {category}): the private-app token is missing a \
         required scope{}; grant it in the private app's settings",
        if scopes.is_empty() { String::new() } else { format!(" ({})", scopes.join(", ")) }
    )]
    MissingScope {
        category: String,
        scopes: Vec<String>,
    },
    /// The daily budget is down to the reserve (limiter) — nothing was sent.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// HubSpot answered 429 DAILY: the account's daily limit is spent until HubSpot's reset.
    #[error(
        "HubSpot daily request limit reached (429 DAILY); hubsync stops calling HubSpot until the \
         daily reset (next check in {}s)",
        retry_after.as_secs()
    )]
    DailyLimit { retry_after: Duration },
    /// 477: the account is migrating between data centres; retry after the given time.
    #[error("HubSpot account is migrating (477); retry after {}s", retry_after.as_secs())]
    Migrating { retry_after: Duration },
    /// Timeouts, connection failures, 5xx, 423 or repeated 429 outlasted the retry budget.
    #[error(
        "HubSpot {what} did not succeed after {attempts} attempts in {}s; last: {last}",
        elapsed.as_secs()
    )]
    Unavailable {
        what: String,
        attempts: u32,
        elapsed: Duration,
        status: Option<u16>,
        last: String,
    },
    /// A 3xx answer: HubSpot's API does not redirect and hubsync follows no redirects, so the
    /// base URL is wrong or a proxy in between answers. About the setup, never the records;
    /// not retried.
    #[error(
        "HubSpot answered {what} with a redirect ({status}{}) that hubsync does not follow: \
         hubspot.base_url must point at HubSpot's API itself (https://api.hubapi.com), or a \
         proxy in between is answering",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default()
    )]
    Redirected {
        what: String,
        status: u16,
        /// The `Location` header, without its query.
        location: Option<String>,
    },
    /// HubSpot refused the whole request (4xx other than 401/403/429).
    #[error("HubSpot refused {what} ({status} {category}): {message}")]
    Rejected {
        what: String,
        status: u16,
        category: String,
        message: String,
    },
    /// HubSpot answered something hubsync cannot read.
    #[error("unexpected answer from HubSpot to {what} ({status}): {detail}")]
    Protocol {
        what: String,
        status: u16,
        detail: String,
    },
}

impl HubSpotError {
    /// How long until calling again can succeed, when HubSpot's answer (or the budget) says:
    /// the daily reset, or the end of an account migration.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Budget(BudgetError::DailyReserve { retry_after, .. })
            | Self::DailyLimit { retry_after }
            | Self::Migrating { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the caller should stop calling HubSpot for a while (budget, auth, migration,
    /// setup).
    pub fn stops_all_calls(&self) -> bool {
        matches!(
            self,
            Self::InvalidToken { .. }
                | Self::MissingScope { .. }
                | Self::Budget(_)
                | Self::DailyLimit { .. }
                | Self::Migrating { .. }
                | Self::Redirected { .. }
                | Self::Config(_)
        )
    }
}
