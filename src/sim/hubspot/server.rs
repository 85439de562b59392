//! The simulator's HTTP side: axum routes on HubSpot's paths for every API version (`v3`,
//! `2026-03`, `2026-09`; others 404), bearer auth, the rolling 10 s,
//! secondly (search) and daily limits with their headers, the account usage endpoint (the day
//! every app of the portal shares, reset at midnight in the account's zone), fault injection,
//! request statistics, the `/_sim/...` admin API, and a connection loop that can drop a
//! connection mid-request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::batch::{self, Ctx};
use super::errors::{Policy, Reply, missing_scope, rate_limited, unauthorized};
use super::merge;
use super::query::{self, ReadParams};
use super::rules;
use super::single;
use super::store::{Contact, Store};
use super::usage::Day;
use super::window::{PeakWindow, RollingLimit, TimeWindow};
use super::{Faults, SimOptions, SimSettings, SimStats, SimUsage};
use crate::hubspot::{ApiVersion, Paths};

const SECOND_US: u64 = 1_000_000;
/// Largest request body accepted (admin seeding can be large).
const MAX_BODY: usize = 256 * 1024 * 1024;
/// HubSpot's burst window.
pub const WINDOW_US: u64 = 10 * SECOND_US;

/// The endpoints the statistics count, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    BatchCreate,
    BatchUpdate,
    BatchRead,
    BatchArchive,
    BatchUpsert,
    Create,
    Update,
    Archive,
    Merge,
    GdprDelete,
    List,
    Get,
    Search,
    Properties,
    PropertyValidations,
    Usage,
}

impl Endpoint {
    /// Whether the endpoint needs the write scope.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Endpoint::BatchCreate
                | Endpoint::BatchUpdate
                | Endpoint::BatchArchive
                | Endpoint::BatchUpsert
                | Endpoint::Create
                | Endpoint::Update
                | Endpoint::Archive
                | Endpoint::Merge
                | Endpoint::GdprDelete
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::BatchCreate => "batch/create",
            Endpoint::BatchUpdate => "batch/update",
            Endpoint::BatchRead => "batch/read",
            Endpoint::BatchArchive => "batch/archive",
            Endpoint::BatchUpsert => "batch/upsert",
            Endpoint::Create => "create",
            Endpoint::Update => "update",
            Endpoint::Archive => "archive",
            Endpoint::Merge => "merge",
            Endpoint::GdprDelete => "gdpr-delete",
            Endpoint::List => "list",
            Endpoint::Get => "get",
            Endpoint::Search => "search",
            Endpoint::Properties => "properties",
            Endpoint::PropertyValidations => "property-validations",
            Endpoint::Usage => "account-info/usage",
        }
    }
}

/// Counters behind `/_sim/stats`.
#[derive(Debug)]
struct Counters {
    by_endpoint: BTreeMap<&'static str, u64>,
    by_version: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<u16, u64>,
    throttled: u64,
    faults: u64,
    total: u64,
    peak: PeakWindow,
}

impl Counters {
    fn new() -> Self {
        Self {
            by_endpoint: BTreeMap::new(),
            by_version: BTreeMap::new(),
            by_status: BTreeMap::new(),
            throttled: 0,
            faults: 0,
            total: 0,
            peak: PeakWindow::new(WINDOW_US),
        }
    }
}

/// Everything behind the lock.
pub struct Inner {
    pub store: Store,
    rng: StdRng,
    ten_second: RollingLimit,
    last_second: TimeWindow,
    search: RollingLimit,
    day: Day,
    counters: Counters,
    pub faults: Faults,
    correlation: u64,
}

impl Inner {
    fn new(options: &SimOptions) -> Self {
        let mut store = Store::new(
            options.properties.clone(),
            options.index_lag.as_micros() as u64,
        );
        store.keep_primary_id = options.preserve_primary_id;
        Self {
            store,
            rng: StdRng::seed_from_u64(options.seed),
            ten_second: RollingLimit::new(options.tier as usize, WINDOW_US),
            last_second: TimeWindow::new(SECOND_US),
            search: RollingLimit::new(options.search_per_second as usize, SECOND_US),
            day: Day::new(
                options.time_zone,
                options.resets_at,
                options.other_apps_usage,
                chrono::Utc::now(),
            ),
            counters: Counters::new(),
            faults: options.faults.clone(),
            correlation: 0,
        }
    }

    fn next_correlation(&mut self, seed: u64) -> String {
        self.correlation += 1;
        format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            seed & 0xffff_ffff,
            (seed >> 32) & 0xffff,
            self.correlation
        )
    }
}

/// Shared between the routes and the in-process handle.
pub struct Shared {
    pub options: SimOptions,
    pub state: Mutex<Inner>,
    started: Instant,
    pub cancel: CancellationToken,
    pub base_url: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::support::lock(&self.state)
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub fn stats(&self) -> SimStats {
        let state = self.lock();
        let c = &state.counters;
        SimStats {
            requests_by_endpoint: c
                .by_endpoint
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            requests_by_version: c
                .by_version
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            answers_by_status: c
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            throttled_429: c.throttled,
            max_requests_in_10s_window: c.peak.peak() as u64,
            total_requests: c.total,
            faults_injected: c.faults,
            contacts: state.store.all().filter(|c| !c.archived()).count() as u64,
        }
    }

    pub fn reset(&self) {
        *self.lock() = Inner::new(&self.options);
    }

    fn daily_limit(&self) -> u64 {
        self.options.daily_limit()
    }

    /// The portal's day as `GET /_sim/usage` reports it, after any reset that is due.
    pub fn usage(&self) -> SimUsage {
        let mut state = self.lock();
        state.day.roll(chrono::Utc::now());
        let day = &state.day;
        SimUsage {
            usage_limit: self.daily_limit(),
            current_usage: day.used(),
            own: day.own(),
            other_apps: day.other_apps(),
            resets_at: day.resets_at(),
            time_zone: day.zone().name().to_owned(),
        }
    }

    /// Other apps of the portal spend `n` requests of today's limit.
    pub fn spend_other_apps(&self, n: u64) {
        let mut state = self.lock();
        state.day.roll(chrono::Utc::now());
        state.day.spend_other_apps(n);
    }

    /// The next daily reset falls at `at` (later ones at midnight in the account's zone).
    pub fn set_resets_at(&self, at: chrono::DateTime<chrono::Utc>) {
        self.lock().day.set_resets_at(at);
    }
}

/// Closes the request's connection without an answer.
#[derive(Clone)]
struct ConnKill(CancellationToken);

impl ConnKill {
    async fn drop_connection(&self) -> Response {
        self.0.cancel();
        std::future::pending::<Response>().await
    }
}

/// What the fault draw decided for one request.
#[derive(Debug, Default)]
struct FaultPlan {
    missing_scope: bool,
    latency: Duration,
    hang: Option<Duration>,
    burst_429: bool,
    drop_before: bool,
    error: Option<u16>,
    lose_response: bool,
    usage_refused: Option<u16>,
}

fn draw_faults(state: &mut Inner, endpoint: Endpoint) -> FaultPlan {
    let faults = state.faults.clone();
    let mut plan = FaultPlan {
        missing_scope: faults.missing_write_scope,
        usage_refused: faults.usage_refused,
        latency: match endpoint {
            Endpoint::Search => faults.latency + faults.search_latency,
            _ => faults.latency,
        },
        ..FaultPlan::default()
    };
    let rates_apply = !faults.writes_only || endpoint.writes();
    if faults.timeout_next > 0 {
        state.faults.timeout_next -= 1;
        plan.hang = Some(faults.timeout_hang);
    } else if faults.burst_429 > 0 {
        state.faults.burst_429 -= 1;
        plan.burst_429 = true;
    } else if !rates_apply {
        // A read while only writes are faulted.
    } else if faults.drop_rate > 0.0 && state.rng.random::<f64>() < faults.drop_rate {
        plan.drop_before = true;
    } else if faults.error_rate > 0.0 && state.rng.random::<f64>() < faults.error_rate {
        let statuses: &[u16] = if faults.error_statuses.is_empty() {
            &[500, 502, 503, 504]
        } else {
            &faults.error_statuses
        };
        plan.error = Some(statuses[state.rng.random_range(0..statuses.len())]);
    } else if faults.lost_response_rate > 0.0
        && state.rng.random::<f64>() < faults.lost_response_rate
    {
        plan.lose_response = true;
    }
    let injected = plan.hang.is_some()
        || plan.burst_429
        || plan.drop_before
        || plan.error.is_some()
        || plan.lose_response;
    if injected {
        state.counters.faults += 1;
    }
    plan
}

fn server_error(status: u16, correlation: &str) -> Reply {
    let message = match status {
        423 => "Locked: too many writes to the same records; retry after at least 2 seconds",
        477 => "This account is being migrated between data centers",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        524 => "A timeout occurred",
        _ => "internal error",
    };
    let category = match status {
        423 => "LOCKED",
        477 => "MIGRATION_IN_PROGRESS",
        _ => "INTERNAL_ERROR",
    };
    Reply::error(status, category, message, correlation)
}

/// The usage endpoint refused: 403 as for a token without its scope, 404 as on a portal that
/// does not have it, else the server error's body.
fn usage_refused(status: u16, correlation: &str) -> Reply {
    match status {
        403 => {
            let mut reply = missing_scope(correlation);
            if let Some(body) = reply.body.as_mut() {
                body["errors"][0]["context"]["requiredGranularScopes"] = json!(["oauth"]);
            }
            reply
        }
        404 => Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            "Unknown path for the HubSpot simulator",
            correlation,
        ),
        other => server_error(other, correlation),
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let expected = shared.options.token.expose_secret();
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == expected)
}

/// Rate-limit headers for a non-search response.
#[derive(Debug, Clone, Copy)]
struct LimitHeaders {
    max: usize,
    remaining: usize,
    secondly: usize,
    secondly_remaining: usize,
    daily: u64,
    daily_remaining: u64,
}

impl LimitHeaders {
    fn apply(&self, headers: &mut HeaderMap) {
        let pairs: [(&str, String); 7] = [
            ("x-hubspot-ratelimit-daily", self.daily.to_string()),
            (
                "x-hubspot-ratelimit-daily-remaining",
                self.daily_remaining.to_string(),
            ),
            (
                "x-hubspot-ratelimit-interval-milliseconds",
                (WINDOW_US / 1000).to_string(),
            ),
            ("x-hubspot-ratelimit-max", self.max.to_string()),
            ("x-hubspot-ratelimit-remaining", self.remaining.to_string()),
            ("x-hubspot-ratelimit-secondly", self.secondly.to_string()),
            (
                "x-hubspot-ratelimit-secondly-remaining",
                self.secondly_remaining.to_string(),
            ),
        ];
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

fn limit_headers(state: &mut Inner, daily: u64, now_us: u64) -> LimitHeaders {
    let used = state.day.used();
    let max = state.ten_second.limit();
    let secondly = (max / 10).max(1);
    LimitHeaders {
        max,
        remaining: state.ten_second.remaining(now_us),
        secondly,
        secondly_remaining: secondly.saturating_sub(state.last_second.count_at(now_us)),
        daily,
        daily_remaining: daily.saturating_sub(used),
    }
}

fn to_response(reply: Reply, correlation: &str, limits: Option<LimitHeaders>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match reply.body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(correlation) {
        headers.insert(HeaderName::from_static("x-hubspot-correlation-id"), value);
    }
    if status.as_u16() == 477 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            HeaderName::from_static("x-hubspot-auth-failure"),
            HeaderValue::from_static("401 Unauthorized"),
        );
    }
    if let Some(limits) = limits {
        limits.apply(headers);
    }
    response
}

type BodyLogic = fn(&mut Store, &[u8], &mut Ctx<'_, StdRng>) -> Reply;
type Op = Box<dyn FnOnce(&mut Store, &mut Ctx<'_, StdRng>) -> Reply + Send>;

/// One API request, its answer's status counted.
async fn api(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    version: ApiVersion,
    headers: HeaderMap,
    kill: ConnKill,
    op: Op,
) -> Response {
    let response = answer(shared.clone(), endpoint, version, headers, kill, op).await;
    *shared
        .lock()
        .counters
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

/// One API request: statistics, faults, auth, limits, then the endpoint's logic.
async fn answer(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    version: ApiVersion,
    headers: HeaderMap,
    kill: ConnKill,
    op: Op,
) -> Response {
    let search = endpoint == Endpoint::Search;
    // Limits count a request at its arrival, as the statistics do, whatever latency follows.
    // The stamp is taken under the lock so the statistics see stamps in order.
    let (plan, correlation, arrived_us) = {
        let mut state = shared.lock();
        let arrived_us = shared.now_us();
        let counters = &mut state.counters;
        counters.total += 1;
        *counters.by_endpoint.entry(endpoint.name()).or_default() += 1;
        *counters.by_version.entry(version.as_str()).or_default() += 1;
        if !search {
            counters.peak.record(arrived_us);
        }
        let correlation = state.next_correlation(shared.options.seed);
        (draw_faults(&mut state, endpoint), correlation, arrived_us)
    };
    if !plan.latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(plan.latency) => {}
            _ = shared.cancel.cancelled() => return to_response(server_error(503, &correlation), &correlation, None),
        }
    }
    if let Some(hang) = plan.hang {
        tokio::select! {
            _ = tokio::time::sleep(hang) => {}
            _ = shared.cancel.cancelled() => {}
        }
        return to_response(server_error(524, &correlation), &correlation, None);
    }
    if plan.drop_before {
        return kill.drop_connection().await;
    }
    if let Some(status) = plan.error {
        return to_response(server_error(status, &correlation), &correlation, None);
    }
    if !authorized(&shared, &headers) {
        return to_response(unauthorized(&correlation), &correlation, None);
    }
    if plan.missing_scope && endpoint.writes() {
        return to_response(missing_scope(&correlation), &correlation, None);
    }
    if endpoint == Endpoint::Usage
        && let Some(status) = plan.usage_refused
    {
        return to_response(usage_refused(status, &correlation), &correlation, None);
    }
    let daily = shared.daily_limit();
    let (reply, limits) = {
        let mut guard = shared.lock();
        let now_us = shared.now_us();
        let state = &mut *guard;
        let wall = chrono::Utc::now();
        state.day.roll(wall);
        let throttled = if plan.burst_429 {
            Some(if search {
                Policy::Secondly
            } else {
                Policy::TenSecondly
            })
        } else if state.day.used() >= daily {
            Some(Policy::Daily)
        } else if search {
            state
                .search
                .try_admit(arrived_us)
                .is_none()
                .then_some(Policy::Secondly)
        } else {
            state
                .ten_second
                .try_admit(arrived_us)
                .is_none()
                .then_some(Policy::TenSecondly)
        };
        let reply = match throttled {
            Some(policy) => {
                state.counters.throttled += 1;
                rate_limited(policy, &correlation)
            }
            None => {
                state.day.count();
                if !search {
                    state.last_second.push(arrived_us);
                }
                let mut ctx = Ctx {
                    now_ms: wall.timestamp_millis(),
                    now_us,
                    rng: &mut state.rng,
                    correlation: correlation.clone(),
                    multi_status: version.multi_status(),
                    enforce_required: version.enforces_required(),
                    usage: state.day.figures(daily),
                };
                op(&mut state.store, &mut ctx)
            }
        };
        let limits = (!search).then(|| limit_headers(state, daily, arrived_us));
        (reply, limits)
    };
    if plan.lose_response {
        return kill.drop_connection().await;
    }
    to_response(reply, &correlation, limits)
}

type S = State<Arc<Shared>>;
type K = Extension<ConnKill>;
/// The API version of the path a request came in on.
type V = Extension<ApiVersion>;

async fn batch_read(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let archived = ReadParams::parse(q.as_deref()).archived;
    api(
        sh,
        Endpoint::BatchRead,
        v,
        h,
        k,
        Box::new(move |store, ctx| batch::read(store, &body, archived, ctx)),
    )
    .await
}

/// A body-only endpoint (batch, single create, merge, GDPR delete).
fn body_route(endpoint: Endpoint, logic: BodyLogic) -> MethodRouter<Arc<Shared>> {
    post(
        move |State(sh): S, Extension(k): K, Extension(v): V, h: HeaderMap, body: Bytes| async move {
            api(
                sh,
                endpoint,
                v,
                h,
                k,
                Box::new(move |store, ctx| logic(store, &body, ctx)),
            )
            .await
        },
    )
}

async fn property_one(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Response {
    api(
        sh,
        Endpoint::Properties,
        v,
        h,
        k,
        Box::new(move |store, ctx| query::property(store, &name, &ctx.correlation)),
    )
    .await
}

async fn list(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    uri: axum::http::Uri,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    // `paging.next.link` repeats the path the request came in on.
    let base = format!("{}{}", sh.base_url, uri.path());
    let p = ReadParams::parse(q.as_deref());
    api(
        sh,
        Endpoint::List,
        v,
        h,
        k,
        Box::new(move |store, ctx| query::list(store, &p, &base, &ctx.correlation)),
    )
    .await
}

async fn get_one(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> Response {
    let p = ReadParams::parse(q.as_deref());
    api(
        sh,
        Endpoint::Get,
        v,
        h,
        k,
        Box::new(move |store, ctx| query::get(store, &id, &p, &ctx.correlation)),
    )
    .await
}

async fn update_one(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let id_property = ReadParams::parse(q.as_deref()).id_property;
    api(
        sh,
        Endpoint::Update,
        v,
        h,
        k,
        Box::new(move |store, ctx| single::update(store, &id, id_property.as_deref(), &body, ctx)),
    )
    .await
}

async fn archive_one(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    api(
        sh,
        Endpoint::Archive,
        v,
        h,
        k,
        Box::new(move |store, ctx| single::archive(store, &id, ctx)),
    )
    .await
}

async fn search(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    api(
        sh,
        Endpoint::Search,
        v,
        h,
        k,
        Box::new(move |store, ctx| query::search(store, &body, ctx.now_us, &ctx.correlation)),
    )
    .await
}

async fn properties(State(sh): S, Extension(k): K, Extension(v): V, h: HeaderMap) -> Response {
    api(
        sh,
        Endpoint::Properties,
        v,
        h,
        k,
        Box::new(|store, _| query::properties(store)),
    )
    .await
}

/// `…/property-validations/{objectTypeId}`, `…/{propertyName}` and
/// `…/{propertyName}/rule-type/{ruleType}` (GET, PUT, DELETE).
async fn validations(
    State(sh): S,
    Extension(k): K,
    Extension(v): V,
    method: axum::http::Method,
    Path(params): Path<BTreeMap<String, String>>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let property = params.get("name").cloned();
    let rule_type = params.get("rule").cloned();
    let op: Op = match (method, property, rule_type) {
        (axum::http::Method::PUT, Some(p), Some(r)) => {
            Box::new(move |store, ctx| rules::put(store, &p, &r, &body, &ctx.correlation))
        }
        (axum::http::Method::DELETE, Some(p), Some(r)) => {
            Box::new(move |store, ctx| rules::delete(store, &p, &r, &ctx.correlation))
        }
        (_, p, None) => {
            Box::new(move |store, ctx| rules::get(store, p.as_deref(), &ctx.correlation))
        }
        (_, p, Some(r)) => Box::new(move |store, ctx| {
            rules::get_rule(store, p.as_deref().unwrap_or(""), &r, &ctx.correlation)
        }),
    };
    api(sh, Endpoint::PropertyValidations, v, h, k, op).await
}

/// `PUT /_sim/required-rules`: the portal's conditionally required properties (set in HubSpot's
/// UI by an admin, with no public API).
async fn admin_required(
    State(sh): S,
    Json(rules): Json<Vec<rules::RequiredRule>>,
) -> Json<Vec<rules::RequiredRule>> {
    sh.lock().store.rules.required = rules.clone();
    Json(rules)
}

/// `GET /account-info/{version}/api-usage/daily/private-apps`.
async fn usage(State(sh): S, Extension(k): K, Extension(v): V, h: HeaderMap) -> Response {
    api(
        sh,
        Endpoint::Usage,
        v,
        h,
        k,
        Box::new(|_, ctx| ctx.usage.answer(chrono::Utc::now())),
    )
    .await
}

/// `POST /_sim/usage` body: other apps spend `other_apps` requests; the next reset moves to
/// `resets_at`, or `resets_in` from now.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UsageRequest {
    other_apps: u64,
    resets_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(with = "humantime_serde")]
    resets_in: Option<Duration>,
}

async fn admin_usage(State(sh): S) -> Json<SimUsage> {
    Json(sh.usage())
}

async fn admin_set_usage(State(sh): S, Json(request): Json<UsageRequest>) -> Json<SimUsage> {
    sh.spend_other_apps(request.other_apps);
    let at = request.resets_at.or_else(|| {
        let ahead = chrono::TimeDelta::from_std(request.resets_in?).ok()?;
        Some(chrono::Utc::now() + ahead)
    });
    if let Some(at) = at {
        sh.set_resets_at(at);
    }
    Json(sh.usage())
}

async fn admin_stats(State(sh): S) -> Json<SimStats> {
    Json(sh.stats())
}

async fn admin_get_faults(State(sh): S) -> Json<Faults> {
    Json(sh.lock().faults.clone())
}

async fn admin_set_faults(State(sh): S, Json(faults): Json<Faults>) -> Json<Faults> {
    sh.lock().faults = faults.clone();
    Json(faults)
}

async fn admin_get_settings(State(sh): S) -> Json<SimSettings> {
    Json(SimSettings::of(&sh.lock().store))
}

async fn admin_set_settings(State(sh): S, Json(settings): Json<SimSettings>) -> Json<SimSettings> {
    settings.apply(&mut sh.lock().store);
    Json(settings)
}

async fn admin_reset(State(sh): S) -> StatusCode {
    sh.reset();
    StatusCode::NO_CONTENT
}

/// `GET /_sim/contacts[?email=x]`: every contact (archived too), or the one holding the email.
async fn admin_contacts(State(sh): S, RawQuery(q): RawQuery) -> Json<Vec<Contact>> {
    let email = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "email")
        .map(|(_, v)| v.into_owned());
    let state = sh.lock();
    let store = &state.store;
    Json(match email {
        Some(email) => store
            .lookup(Some("email"), &email)
            .and_then(|id| store.get(id))
            .cloned()
            .into_iter()
            .collect(),
        None => store.all().cloned().collect(),
    })
}

async fn admin_contact(State(sh): S, Path(id): Path<u64>) -> Response {
    match sh.lock().store.get(id) {
        Some(c) => Json(c.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /_sim/contacts` body.
#[derive(Debug, Deserialize)]
struct SeedRequest {
    contacts: Vec<BTreeMap<String, Option<String>>>,
}

async fn admin_seed(State(sh): S, Json(request): Json<SeedRequest>) -> Response {
    match super::seed(&sh, &request.contacts) {
        Ok(ids) => (StatusCode::CREATED, Json(json!({"ids": ids}))).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "error", "message": e.to_string()})),
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    let body: Value = json!({"status": "error", "message": "Unknown path for the HubSpot simulator",
                             "category": "OBJECT_NOT_FOUND"});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// HubSpot's routes for one API version, contacts by name or by type id `0-1`.
fn api_routes(version: ApiVersion) -> Router<Arc<Shared>> {
    let paths = Paths::new(version);
    let mut router = Router::new();
    for object in ["contacts", "0-1"] {
        let (Ok(objects), Ok(props)) = (paths.objects(object), paths.properties(object)) else {
            continue;
        };
        let posts: [(&str, Endpoint, BodyLogic); 6] = [
            ("batch/create", Endpoint::BatchCreate, batch::create),
            ("batch/update", Endpoint::BatchUpdate, batch::update),
            ("batch/upsert", Endpoint::BatchUpsert, batch::upsert),
            ("batch/archive", Endpoint::BatchArchive, batch::archive),
            ("merge", Endpoint::Merge, merge::merge),
            ("gdpr-delete", Endpoint::GdprDelete, single::gdpr_delete),
        ];
        for (suffix, endpoint, logic) in posts {
            router = router.route(&format!("{objects}/{suffix}"), body_route(endpoint, logic));
        }
        router = router
            .route(&format!("{objects}/batch/read"), post(batch_read))
            .route(&format!("{objects}/search"), post(search))
            .route(
                &objects,
                get(list).merge(body_route(Endpoint::Create, single::create)),
            )
            .route(
                &format!("{objects}/{{id}}"),
                get(get_one).patch(update_one).delete(archive_one),
            )
            .route(&props, get(properties))
            .route(&format!("{props}/{{name}}"), get(property_one));
        let Ok(rules) = paths.property_validations(object) else {
            continue;
        };
        router = router
            .route(&rules, get(validations))
            .route(&format!("{rules}/{{name}}"), get(validations))
            .route(
                &format!("{rules}/{{name}}/rule-type/{{rule}}"),
                get(validations).put(validations).delete(validations),
            );
    }
    router
        .route(&paths.account_usage(), get(usage))
        .layer(Extension(version))
}

/// All routes: HubSpot's for every supported API version, and the admin ones.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for version in ApiVersion::ALL {
        router = router.merge(api_routes(version));
    }
    router
        .route("/_sim/stats", get(admin_stats))
        .route(
            "/_sim/faults",
            get(admin_get_faults)
                .put(admin_set_faults)
                .post(admin_set_faults),
        )
        .route(
            "/_sim/settings",
            get(admin_get_settings).put(admin_set_settings),
        )
        .route("/_sim/reset", post(admin_reset))
        .route("/_sim/required-rules", put(admin_required))
        .route("/_sim/usage", get(admin_usage).post(admin_set_usage))
        .route("/_sim/contacts", get(admin_contacts).post(admin_seed))
        .route("/_sim/contacts/{id}", get(admin_contact))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Accepts connections until cancelled; each connection can be dropped by its request.
pub async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = accepted else { continue };
        let kill = CancellationToken::new();
        let service =
            TowerToHyperService::new(router.clone().layer(Extension(ConnKill(kill.clone()))));
        let cancel = cancel.clone();
        connections.spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = kill.cancelled() => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
    connections.shutdown().await;
}

/// Binds `addr` and returns the listener and its actual address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Creates the shared state for a server listening on `local`.
pub fn shared(options: SimOptions, local: SocketAddr) -> Arc<Shared> {
    Arc::new(Shared {
        state: Mutex::new(Inner::new(&options)),
        options,
        started: Instant::now(),
        cancel: CancellationToken::new(),
        base_url: format!("http://{local}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(faults: Faults, seed: u64, n: usize) -> Vec<(bool, Option<u16>, bool)> {
        let options = SimOptions {
            seed,
            faults,
            ..SimOptions::default()
        };
        let mut state = Inner::new(&options);
        (0..n)
            .map(|_| {
                let plan = draw_faults(&mut state, Endpoint::BatchUpdate);
                (plan.drop_before, plan.error, plan.burst_429)
            })
            .collect()
    }

    #[test]
    fn fault_draws_follow_the_rate_and_repeat_with_the_seed() {
        let faults = Faults {
            error_rate: 0.2,
            ..Faults::default()
        };
        let first = draws(faults.clone(), 9, 2_000);
        let errors = first.iter().filter(|d| d.1.is_some()).count();
        assert!(
            (300..500).contains(&errors),
            "{errors} errors of 2000 at 20 %"
        );
        assert!(
            first
                .iter()
                .all(|d| d.1.is_none_or(|s| [500, 502, 503, 504].contains(&s)))
        );
        assert_eq!(draws(faults.clone(), 9, 2_000), first);
        assert_ne!(draws(faults, 10, 2_000), first);
    }

    #[test]
    fn search_latency_slows_searches_only() {
        let mut state = Inner::new(&SimOptions {
            faults: Faults {
                latency: Duration::from_millis(100),
                search_latency: Duration::from_secs(3),
                ..Faults::default()
            },
            ..SimOptions::default()
        });
        let search = draw_faults(&mut state, Endpoint::Search);
        let update = draw_faults(&mut state, Endpoint::BatchUpdate);
        assert_eq!(search.latency, Duration::from_millis(3_100));
        assert_eq!(update.latency, Duration::from_millis(100));
        assert_eq!(state.counters.faults, 0, "latency is not an injected fault");
    }

    #[test]
    fn counted_faults_run_out_and_custom_statuses_are_used() {
        let burst = draws(
            Faults {
                burst_429: 3,
                ..Faults::default()
            },
            0,
            5,
        );
        let bursts: Vec<bool> = burst.iter().map(|d| d.2).collect();
        assert_eq!(bursts, [true, true, true, false, false]);
        let locked = draws(
            Faults {
                error_rate: 1.0,
                error_statuses: vec![423],
                ..Faults::default()
            },
            0,
            3,
        );
        assert!(locked.iter().all(|d| d.1 == Some(423)));
    }
}
