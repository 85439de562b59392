//! The HubSpot HTTP client: one `reqwest` client, bearer auth from a secret, every request through
//! the shared [`Limiter`], retries (timeouts, connection errors, 429, 423, 5xx, 477) via
//! `support::retry`, the daily budget read from HubSpot's usage endpoint, and the property cache
//! with its preflight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::HubSpotSettings;
use super::error::HubSpotError;
use super::limiter::{Lane, Limiter, TEN_SECONDS};
use super::paths::Paths;
use super::portal::{PropertyRules, ValidationList, object_type_id};
use super::preflight::{PreflightProblem, PropertyUse, preflight};
use super::types::{ApiError, PropertyDefs, PropertyList};
use super::usage::UsageReport;
use crate::support::retry;

/// How long loaded property definitions are trusted before they are read again.
pub const PROPERTY_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// HubSpot asks for at least 2 s after a 423 Locked.
const LOCKED_WAIT: Duration = Duration::from_secs(2);
/// A search 429 ("secondly limit") clears within a second.
const SEARCH_429_WAIT: Duration = Duration::from_secs(1);

/// A HubSpot answer the caller interprets (2xx, or a 4xx that is about the request's data).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What hubsync reads from an answer's headers: the rate-limit figures HubSpot sends on
/// non-search answers, `Retry-After`, and where a redirect points.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub daily_remaining: Option<u64>,
    pub window_remaining: Option<u64>,
    pub interval: Option<Duration>,
    pub retry_after: Option<Duration>,
    /// `Location`, without its query or fragment.
    pub location: Option<String>,
}

impl RateHeaders {
    pub fn parse(headers: &HeaderMap) -> Self {
        let number = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        Self {
            daily_remaining: number("x-hubspot-ratelimit-daily-remaining"),
            window_remaining: number("x-hubspot-ratelimit-remaining"),
            interval: number("x-hubspot-ratelimit-interval-milliseconds")
                .map(Duration::from_millis),
            retry_after: number("retry-after").map(Duration::from_secs),
            location: headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(['?', '#']).next())
                .map(str::to_owned),
        }
    }
}

/// What the client knows of HubSpot's usage endpoint.
#[derive(Debug, Default)]
struct UsageState {
    /// When it was last tried.
    tried: Option<Instant>,
    /// It refused in a way that will not change for this client (scope, path, shape): no
    /// more tries.
    refused: bool,
    /// A failure was logged as a warning; later ones are not, until a read succeeds.
    warned: bool,
}

/// When [`HubSpotClient::refresh_usage`] reads the endpoint.
#[derive(Debug, Clone, Copy)]
enum Refresh {
    Now,
    /// When the limiter asks for it (reserve reached, day ended, 429 DAILY).
    IfWanted,
    /// When the last try is at least this old.
    IfOlder(Duration),
}

/// One request as [`HubSpotClient::attempt`] sends it.
struct Outgoing<'a> {
    what: &'a str,
    lane: Lane,
    method: Method,
    url: String,
    bearer: HeaderValue,
    query: &'a [(&'a str, String)],
    /// The JSON body, serialised once before the first slot is taken: the time between a
    /// grant and the request's arrival at HubSpot must stay within the limiter's margin.
    body: Option<bytes::Bytes>,
}

/// The HubSpot client. Cheap to share behind an `Arc`; workers share its limiter.
pub struct HubSpotClient {
    http: reqwest::Client,
    base: String,
    paths: Paths,
    token: SecretString,
    limiter: Arc<Limiter>,
    retry_initial: Duration,
    retry_max_interval: Duration,
    max_retry_elapsed: Duration,
    properties: Cache<PropertyDefs>,
    /// The portal's published validation rules per object, cached like the definitions.
    validations: Cache<Vec<PropertyRules>>,
    usage: tokio::sync::Mutex<UsageState>,
}

impl std::fmt::Debug for HubSpotClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotClient")
            .field("base_url", &self.base)
            .field("api_version", &self.paths.version)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// Per-object answers and when they were read.
type Cache<T> = tokio::sync::Mutex<HashMap<String, (Instant, Arc<T>)>>;

/// `object`'s cached answer while younger than [`PROPERTY_CACHE_TTL`].
async fn fresh<T>(cache: &Cache<T>, object: &str) -> Option<Arc<T>> {
    let cache = cache.lock().await;
    let (at, value) = cache.get(object)?;
    (at.elapsed() < PROPERTY_CACHE_TTL).then(|| value.clone())
}

/// Caches `value` as `object`'s answer, read now.
async fn keep<T>(cache: &Cache<T>, object: &str, value: T) -> Arc<T> {
    let value = Arc::new(value);
    cache
        .lock()
        .await
        .insert(object.to_owned(), (Instant::now(), value.clone()));
    value
}

/// What went wrong with one attempt, and how long to wait before the next.
#[derive(Debug)]
struct Retry {
    status: Option<u16>,
    reason: String,
    /// At least this long, whatever the backoff says.
    at_least: Duration,
    /// HubSpot may have done the work (the request went out and no answer said it was
    /// refused): a timeout, a connection broken after sending, a 5xx.
    may_have_landed: bool,
}

/// Whether a call may be sent again after an attempt that may have done its work (a lost
/// answer, a timeout, a connection broken after sending, a 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Sending it twice does what sending it once does: reads, searches, archives, creates
    /// (HubSpot refuses the second with a 409), and updates whose caller accepts that a HubSpot
    /// edit of the same field made in between is overwritten.
    Always,
    /// Only when the attempt certainly did nothing (429, 423, 477, no connection); otherwise the
    /// call ends `Unavailable` and its caller decides again from what HubSpot holds then. An
    /// upsert repeated after it landed would update the contact it created with every property,
    /// undoing the HubSpot edits made in between; an update would overwrite an edit of the field.
    OnlyIfUnsent,
}

impl HubSpotClient {
    /// Builds the client; `limiter` is the process's one limiter (see [`Limiter::from_settings`]).
    pub fn new(settings: &HubSpotSettings, limiter: Arc<Limiter>) -> Result<Self, HubSpotError> {
        let token = settings.token.clone().ok_or_else(|| {
            HubSpotError::Config(format!(
                "hubspot.token is missing: set {}",
                crate::config::ENV_HUBSPOT_TOKEN
            ))
        })?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hubsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubSpotError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: settings.base_url.as_str().trim_end_matches('/').to_owned(),
            paths: Paths::new(settings.api_version),
            token,
            limiter,
            retry_initial: settings.retry_initial,
            retry_max_interval: settings.retry_max_interval,
            max_retry_elapsed: settings.max_retry_elapsed,
            properties: tokio::sync::Mutex::new(HashMap::new()),
            validations: tokio::sync::Mutex::new(HashMap::new()),
            usage: tokio::sync::Mutex::default(),
        })
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn bearer(&self) -> Result<HeaderValue, HubSpotError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| {
                HubSpotError::Config(
                    "hubspot.token holds characters not allowed in an HTTP header".into(),
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The paths of the configured API version.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Sends one call through the limiter, retrying transient failures. Returns 2xx answers and
    /// the 4xx answers that are about the request's data; auth, budget and give-up are errors.
    pub(crate) async fn call(
        &self,
        what: &str,
        lane: Lane,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, HubSpotError> {
        let request = (method, path, query, body);
        self.call_repeating(what, lane, request, Repeat::Always)
            .await
    }

    /// [`HubSpotClient::call`], repeating an attempt that may have done its work only as
    /// `repeat` allows; otherwise the call ends [`HubSpotError::Unavailable`] at once, saying so.
    pub(crate) async fn call_repeating(
        &self,
        what: &str,
        lane: Lane,
        (method, path, query, body): (Method, &str, &[(&str, String)], Option<&Value>),
        repeat: Repeat,
    ) -> Result<Answer, HubSpotError> {
        if self.limiter.usage_wanted() {
            self.refresh_usage(Refresh::IfWanted).await;
        }
        let out = Outgoing {
            what,
            lane,
            method,
            url: format!("{}{path}", self.base),
            bearer: self.bearer()?,
            query,
            body: body.map(|b| bytes::Bytes::from(b.to_string())),
        };
        let started = Instant::now();
        let mut backoff = retry::exponential(
            self.retry_initial,
            self.retry_max_interval,
            Some(self.max_retry_elapsed),
        );
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Err(refused) = self.limiter.acquire(lane).await {
                // Reaching the reserve asks for HubSpot's own figures first: they may leave
                // room (another app spent less, the limit was raised, the day has reset).
                if !self.limiter.usage_wanted() {
                    return Err(refused.into());
                }
                self.refresh_usage(Refresh::IfWanted).await;
                self.limiter.acquire(lane).await?;
            }
            let retry = match self.attempt(&out).await? {
                Ok(answer) => return Ok(answer),
                Err(retry) => retry,
            };
            use backoff::backoff::Backoff as _;
            let unrepeatable = retry.may_have_landed && repeat == Repeat::OnlyIfUnsent;
            let wait = if unrepeatable {
                None
            } else {
                backoff.next_backoff()
            };
            let Some(wait) = wait else {
                let last = if unrepeatable {
                    format!(
                        "{}; HubSpot may have done it, so it is not sent again as it was",
                        retry.reason
                    )
                } else {
                    retry.reason
                };
                return Err(HubSpotError::Unavailable {
                    what: what.to_owned(),
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    status: retry.status,
                    last,
                });
            };
            let wait = wait.max(retry.at_least);
            tracing::warn!(
                call = what,
                attempt,
                status = retry.status,
                reason = %retry.reason,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying HubSpot call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one request (its slot already granted) and reads the answer: `Ok(Ok)` for the
    /// caller, `Ok(Err)` to retry, `Err` to stop.
    async fn attempt(&self, out: &Outgoing<'_>) -> Result<Result<Answer, Retry>, HubSpotError> {
        let mut request = self
            .http
            .request(out.method.clone(), &out.url)
            .header(AUTHORIZATION, out.bearer.clone());
        if !out.query.is_empty() {
            request = request.query(out.query);
        }
        if let Some(body) = &out.body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Ok(Err(Retry {
                    status: None,
                    reason: describe(&e),
                    at_least: Duration::ZERO,
                    may_have_landed: !e.is_connect(),
                }));
            }
        };
        let status = response.status();
        let headers = RateHeaders::parse(response.headers());
        self.limiter
            .observe(headers.daily_remaining, headers.window_remaining);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                return Ok(Err(Retry {
                    status: Some(status.as_u16()),
                    reason: describe(&e),
                    at_least: Duration::ZERO,
                    may_have_landed: true,
                }));
            }
        };
        Ok(
            match self.classify(out.what, out.lane, status, &headers, &bytes)? {
                Some(retry) => Err(retry),
                None => Ok(Answer {
                    status: status.as_u16(),
                    body: bytes.to_vec(),
                }),
            },
        )
    }

    /// Reads HubSpot's usage endpoint once: the account's daily limit, what every app has used
    /// today and when the day resets. The request counts against the day but goes out even at
    /// the reserve, which is kept for it; it is not retried (the next refresh tries again).
    pub async fn read_usage(&self) -> Result<UsageReport, HubSpotError> {
        let what = "daily API usage";
        let out = Outgoing {
            what,
            lane: Lane::Standard,
            method: Method::GET,
            url: format!("{}{}", self.base, self.paths.account_usage()),
            bearer: self.bearer()?,
            query: &[],
            body: None,
        };
        let started = Instant::now();
        self.limiter.acquire_reserve().await;
        let answer = match self.attempt(&out).await? {
            Ok(answer) => answer,
            Err(retry) => {
                return Err(HubSpotError::Unavailable {
                    what: what.to_owned(),
                    attempts: 1,
                    elapsed: started.elapsed(),
                    status: retry.status,
                    last: retry.reason,
                });
            }
        };
        if !(200..300).contains(&answer.status) {
            return Err(refused(what, &answer));
        }
        UsageReport::parse(&answer.body).map_err(|detail| HubSpotError::Protocol {
            what: what.to_owned(),
            status: answer.status,
            detail,
        })
    }

    /// Reads HubSpot's usage endpoint and seeds the daily budget with it (at start and on
    /// reload). When it cannot be read, the budget keeps to `hubspot.daily_limit` and the
    /// rate-limit headers, and the first failure is logged as a warning naming the reason;
    /// never an error.
    pub async fn refresh_daily_budget(&self) -> Option<UsageReport> {
        self.refresh_usage(Refresh::Now).await
    }

    /// As [`Self::refresh_daily_budget`] when the last read is at least `age` old (the
    /// service's periodic refresh).
    pub async fn refresh_daily_budget_older_than(&self, age: Duration) -> Option<UsageReport> {
        self.refresh_usage(Refresh::IfOlder(age)).await
    }

    async fn refresh_usage(&self, when: Refresh) -> Option<UsageReport> {
        // One reader at a time; the others wait and then see its figures.
        let mut state = self.usage.lock().await;
        let due = match when {
            Refresh::Now => true,
            Refresh::IfWanted => self.limiter.usage_wanted(),
            Refresh::IfOlder(age) => state.tried.is_none_or(|t| t.elapsed() >= age),
        };
        if state.refused || !due {
            if state.refused {
                self.limiter.daily_unreported();
            }
            return None;
        }
        state.tried = Some(Instant::now());
        match self.read_usage().await {
            Ok(report) => {
                self.limiter.seed_daily(&report);
                if std::mem::take(&mut state.warned) {
                    tracing::info!("HubSpot's daily API usage can be read again");
                }
                tracing::debug!(
                    usage_limit = report.usage_limit,
                    current_usage = report.current_usage,
                    resets_at = %report.resets_at,
                    fetch_status = %report.fetch_status,
                    "HubSpot daily API usage"
                );
                Some(report)
            }
            Err(e) => {
                self.limiter.daily_unreported();
                // A refusal about the scope, the path or the answer's shape stays so.
                state.refused = matches!(
                    e,
                    HubSpotError::MissingScope { .. }
                        | HubSpotError::Rejected { .. }
                        | HubSpotError::Protocol { .. }
                        | HubSpotError::Redirected { .. }
                        | HubSpotError::Config(_)
                );
                if std::mem::replace(&mut state.warned, true) {
                    tracing::debug!(reason = %e, "HubSpot's daily API usage still unreadable");
                } else {
                    tracing::warn!(
                        reason = %e,
                        retried = !state.refused,
                        "cannot read HubSpot's daily API usage; the daily budget keeps to \
                         hubspot.daily_limit and the rate-limit headers"
                    );
                }
                None
            }
        }
    }

    /// `Ok(None)`: hand the answer to the caller; `Ok(Some)`: retry; `Err`: stop.
    fn classify(
        &self,
        what: &str,
        lane: Lane,
        status: StatusCode,
        headers: &RateHeaders,
        body: &[u8],
    ) -> Result<Option<Retry>, HubSpotError> {
        let code = status.as_u16();
        // Only a 5xx leaves it open whether HubSpot did the work; 429, 423 and 477 say it
        // did not.
        let retry = |reason: String, at_least: Duration| {
            Ok(Some(Retry {
                status: Some(code),
                reason,
                at_least,
                may_have_landed: (500..600).contains(&code),
            }))
        };
        match code {
            401 => Err(HubSpotError::InvalidToken {
                category: ApiError::parse(body).category().to_owned(),
            }),
            403 => {
                let error = ApiError::parse(body);
                let mut scopes = error.context_strings("requiredGranularScopes");
                for detail in &error.errors {
                    if let Some(ctx) = &detail.context
                        && let Some(Value::Array(items)) = ctx.get("requiredGranularScopes")
                    {
                        scopes.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                    }
                }
                Err(HubSpotError::MissingScope {
                    category: error.category().to_owned(),
                    scopes,
                })
            }
            429 => {
                let error = ApiError::parse(body);
                match (lane, error.policy_name.as_deref()) {
                    (_, Some("DAILY")) => Err(HubSpotError::DailyLimit {
                        retry_after: self.limiter.daily_exhausted(),
                    }),
                    (Lane::Search, _) => retry(format!("429 {}", error.message()), SEARCH_429_WAIT),
                    (Lane::Standard, policy) => {
                        // Everyone waits the window out; the limiter holds the other workers.
                        let window = headers.interval.unwrap_or(TEN_SECONDS);
                        self.limiter.pause(window);
                        retry(
                            format!(
                                "429 {} ({})",
                                error.message(),
                                policy.unwrap_or("no policy")
                            ),
                            Duration::ZERO,
                        )
                    }
                }
            }
            423 => retry("423 Locked".into(), LOCKED_WAIT),
            477 => {
                let after = headers.retry_after.unwrap_or(Duration::from_secs(60));
                if after > self.max_retry_elapsed {
                    Err(HubSpotError::Migrating { retry_after: after })
                } else {
                    retry("477 account migrating".into(), after)
                }
            }
            500..=599 => retry(format!("{status} from HubSpot"), Duration::ZERO),
            300..=399 => Err(HubSpotError::Redirected {
                what: what.to_owned(),
                status: code,
                location: headers.location.clone(),
            }),
            _ => {
                tracing::debug!(call = what, status = code, "HubSpot answered");
                Ok(None)
            }
        }
    }

    /// The property definitions of `object`, from the cache when fresh.
    pub async fn properties(&self, object: &str) -> Result<Arc<PropertyDefs>, HubSpotError> {
        match fresh(&self.properties, object).await {
            Some(defs) => Ok(defs),
            None => self.refresh_properties(object).await,
        }
    }

    /// Reads the property definitions of `object` again and caches them.
    pub async fn refresh_properties(
        &self,
        object: &str,
    ) -> Result<Arc<PropertyDefs>, HubSpotError> {
        let what = "property definitions";
        let path = self.paths.properties(object)?;
        let answer = self
            .call(what, Lane::Standard, Method::GET, &path, &[], None)
            .await?;
        let list: PropertyList = expect_ok(what, &answer)?;
        Ok(keep(&self.properties, object, PropertyDefs::new(list.results)).await)
    }

    /// The portal's property validation rules for `object`
    /// (`GET …/property-validations/{objectTypeId}`), from the cache when fresh.
    pub async fn validation_rules(
        &self,
        object: &str,
    ) -> Result<Arc<Vec<PropertyRules>>, HubSpotError> {
        if let Some(rules) = fresh(&self.validations, object).await {
            return Ok(rules);
        }
        let what = "property validation rules";
        let path = self.paths.property_validations(object_type_id(object))?;
        let answer = self
            .call(what, Lane::Standard, Method::GET, &path, &[], None)
            .await?;
        match expect_ok::<ValidationList>(what, &answer) {
            Ok(list) => Ok(keep(&self.validations, object, list.results).await),
            Err(refused) => {
                // Refused (a missing scope, a portal without the API): not asked again before
                // the cache expires.
                keep(&self.validations, object, Vec::new()).await;
                Err(refused)
            }
        }
    }

    /// HubSpot's GDPR delete of record `id` of `object`: permanent, and its email is
    /// blocklisted. A record already gone (404) counts as deleted.
    pub async fn gdpr_delete(&self, object: &str, id: &str) -> Result<(), HubSpotError> {
        let what = "GDPR delete";
        let path = format!("{}/gdpr-delete", self.paths.objects(object)?);
        let body = serde_json::json!({ "objectId": id });
        let answer = self
            .call(what, Lane::Standard, Method::POST, &path, &[], Some(&body))
            .await?;
        if answer.status == 404 || (200..300).contains(&answer.status) {
            return Ok(());
        }
        expect_ok::<Value>(what, &answer).map(|_| ())
    }

    /// Checks property uses against `object`'s definitions; every problem, named.
    pub async fn preflight(
        &self,
        object: &str,
        uses: &[PropertyUse],
    ) -> Result<Vec<PreflightProblem>, HubSpotError> {
        let defs = self.properties(object).await?;
        Ok(preflight(&defs, uses))
    }
}

/// Parses a 2xx answer, or turns any other into [`HubSpotError::Rejected`].
pub(crate) fn expect_ok<T: serde::de::DeserializeOwned>(
    what: &str,
    answer: &Answer,
) -> Result<T, HubSpotError> {
    if !(200..300).contains(&answer.status) {
        return Err(refused(what, answer));
    }
    serde_json::from_slice(&answer.body).map_err(|e| HubSpotError::Protocol {
        what: what.to_owned(),
        status: answer.status,
        detail: e.to_string(),
    })
}

/// A non-2xx answer handed to the caller, as [`HubSpotError::Rejected`].
fn refused(what: &str, answer: &Answer) -> HubSpotError {
    let error = ApiError::parse(&answer.body);
    HubSpotError::Rejected {
        what: what.to_owned(),
        status: answer.status,
        category: error.category().to_owned(),
        message: error.message().to_owned(),
    }
}

/// A transport error in a few words (no URL query, never headers).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the answer"
    } else {
        "connection error"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    format!("{kind}: {root}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "X-HubSpot-RateLimit-Daily-Remaining",
            HeaderValue::from_static("249990"),
        );
        h.insert(
            "X-HubSpot-RateLimit-Remaining",
            HeaderValue::from_static("97"),
        );
        h.insert(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            HeaderValue::from_static("10000"),
        );
        h.insert("Retry-After", HeaderValue::from_static("30"));
        assert_eq!(
            RateHeaders::parse(&h),
            RateHeaders {
                daily_remaining: Some(249_990),
                window_remaining: Some(97),
                interval: Some(TEN_SECONDS),
                retry_after: Some(Duration::from_secs(30)),
                location: None,
            }
        );
        assert_eq!(
            RateHeaders::parse(&HeaderMap::new()),
            RateHeaders::default()
        );
    }

    fn client() -> HubSpotClient {
        let settings = HubSpotSettings {
            token: Some(SecretString::from("pat-na1-secret-value")),
            ..HubSpotSettings::default()
        };
        let limiter = Arc::new(Limiter::from_settings(&settings));
        HubSpotClient::new(&settings, limiter).expect("client")
    }

    fn classify(
        status: u16,
        headers: RateHeaders,
        body: &str,
    ) -> Result<Option<Retry>, HubSpotError> {
        let status = StatusCode::from_u16(status).expect("status");
        client().classify("test", Lane::Standard, status, &headers, body.as_bytes())
    }

    #[test]
    fn debug_never_shows_the_token() {
        assert!(!format!("{:?}", client()).contains("secret-value"));
    }

    #[test]
    fn auth_failures_name_their_cause_and_are_not_retried() {
        let err = classify(
            401,
            RateHeaders::default(),
            r#"{"category":"INVALID_AUTHENTICATION"}"#,
        )
        .expect_err("401");
        assert!(err.to_string().contains("token is invalid"), "{err}");
        let err = classify(
            403,
            RateHeaders::default(),
            r#"{"category":"MISSING_SCOPES","errors":[{"context":{"requiredGranularScopes":["crm.objects.contacts.write"]}}]}"#,
        )
        .expect_err("403");
        assert!(
            err.to_string()
                .contains("missing a required scope (crm.objects.contacts.write)"),
            "{err}"
        );
    }

    #[test]
    fn transient_answers_are_retried_with_their_minimum_wait() {
        for status in [500, 502, 503, 504, 524] {
            assert!(matches!(
                classify(status, RateHeaders::default(), ""),
                Ok(Some(_))
            ));
        }
        let locked = classify(423, RateHeaders::default(), "")
            .expect("retry")
            .expect("423");
        assert_eq!(locked.at_least, LOCKED_WAIT);
        let soon = RateHeaders {
            retry_after: Some(Duration::from_secs(3)),
            ..RateHeaders::default()
        };
        let migrating = classify(477, soon, "").expect("retry").expect("477");
        assert_eq!(migrating.at_least, Duration::from_secs(3));
        let tomorrow = RateHeaders {
            retry_after: Some(Duration::from_secs(86_400)),
            ..RateHeaders::default()
        };
        assert!(matches!(
            classify(477, tomorrow, ""),
            Err(HubSpotError::Migrating { .. })
        ));
        for status in [200, 207, 400, 404, 409] {
            assert!(matches!(
                classify(status, RateHeaders::default(), ""),
                Ok(None)
            ));
        }
    }

    #[test]
    fn a_redirect_is_a_setup_error_that_names_the_status_and_not_the_records() {
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            HeaderValue::from_static("https://login.example.com/sso?session=abc#top"),
        );
        let headers = RateHeaders::parse(&h);
        assert_eq!(
            headers.location.as_deref(),
            Some("https://login.example.com/sso")
        );
        for status in [301, 302, 307, 308] {
            let err = classify(status, headers.clone(), "").expect_err("redirect");
            assert!(
                matches!(err, HubSpotError::Redirected { status: s, .. } if s == status),
                "{err:?}"
            );
            assert!(err.stops_all_calls());
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "redirect ({status} to https://login.example.com/sso)"
                )) && text.contains("hubspot.base_url")
                    && !text.contains("session=abc"),
                "{text}"
            );
        }
        let bare = classify(302, RateHeaders::default(), "").expect_err("redirect");
        assert!(bare.to_string().contains("redirect (302)"), "{bare}");
    }

    #[test]
    fn a_daily_429_stops_and_a_burst_429_pauses_everyone() {
        let c = client();
        let status = StatusCode::TOO_MANY_REQUESTS;
        let daily = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        let err = c
            .classify(
                "t",
                Lane::Standard,
                status,
                &RateHeaders::default(),
                daily.as_bytes(),
            )
            .expect_err("daily");
        assert!(matches!(err, HubSpotError::DailyLimit { .. }));
        let burst = r#"{"message":"You have reached your ten_secondly_rolling limit.","policyName":"TEN_SECONDLY_ROLLING"}"#;
        let c = client();
        let retry = c
            .classify(
                "t",
                Lane::Standard,
                status,
                &RateHeaders::default(),
                burst.as_bytes(),
            )
            .expect("retry");
        assert!(retry.is_some());
        assert_eq!(c.limiter().stats().pauses, 1);
    }
}
