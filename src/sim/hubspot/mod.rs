//! HubSpot simulator: an HTTP server on HubSpot's CRM paths (`v3`, `2026-03` and `2026-09`, each
//! with its version's answer shapes) with an in-memory contact store, batch and single-object
//! endpoints, merges and GDPR deletes, HubSpot's validation, conflicts, rate limits and error
//! bodies, the account usage endpoint with a daily limit shared with other apps, injectable
//! faults and request statistics. Started in-process by tests and benchmarks, or by
//! `hubsync sim hubspot`.

mod batch;
mod errors;
mod merge;
mod properties;
mod query;
mod rules;
mod server;
mod single;
mod store;
mod usage;
mod validate;
mod window;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use merge::{MAX_MERGES, MergeError};
pub use properties::{
    FRECUENCIA_DEPOSITO, LIFECYCLE_STAGES, MARITAL_STATUS, PropertyDef, PropertyOption,
    PropertyType, default_properties,
};
pub use store::Contact as SimContact;

use crate::exit::{self, Failure};

/// How the simulator starts.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The private-app token requests must carry as `Authorization: Bearer …`.
    pub token: SecretString,
    /// Requests per rolling 10 s window: 100, 190 or 250.
    pub tier: u32,
    /// Requests per day; `None` takes the tier's default (250k, 625k, 1.25M).
    pub daily_limit: Option<u64>,
    /// The account's time zone: the daily limit resets at midnight there.
    pub time_zone: chrono_tz::Tz,
    /// The first daily reset, instead of the next midnight (a test can have it seconds away).
    pub resets_at: Option<DateTime<Utc>>,
    /// Requests other apps of the portal have already made today: they share the daily limit.
    pub other_apps_usage: u64,
    /// Search requests per rolling second (HubSpot: 5).
    pub search_per_second: u32,
    /// Seed for result order and fault draws.
    pub seed: u64,
    /// Delay before writes become visible to search (zero = at once).
    pub index_lag: Duration,
    /// Faults active from the start (and after `/_sim/reset`).
    pub faults: Faults,
    /// Contact property definitions; `default_properties()` unless replaced.
    pub properties: Vec<PropertyDef>,
    /// Merges keep the primary's id, as in portals with HubSpot's "primary ID preservation for
    /// merged records" beta; otherwise (HubSpot's default) a merge makes a new record with a new
    /// id. Changeable at run time through `PUT /_sim/settings`.
    pub preserve_primary_id: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            token: SecretString::from("sim-token"),
            tier: 100,
            daily_limit: None,
            time_zone: chrono_tz::UTC,
            resets_at: None,
            other_apps_usage: 0,
            search_per_second: 5,
            seed: 0,
            index_lag: Duration::ZERO,
            faults: Faults::default(),
            properties: default_properties(),
            preserve_primary_id: false,
        }
    }
}

/// How far HubSpot's search index trails writes in the stands of the engine and daemon tests,
/// the demo and the benchmarks (HubSpot's own lag is seconds; their `search_lag` covers it).
pub const TYPICAL_INDEX_LAG: Duration = Duration::from_secs(1);

impl SimOptions {
    /// The defaults with search trailing writes by [`TYPICAL_INDEX_LAG`], as on HubSpot.
    pub fn lagging() -> Self {
        Self {
            index_lag: TYPICAL_INDEX_LAG,
            ..Self::default()
        }
    }

    /// The daily allowance in force.
    pub fn daily_limit(&self) -> u64 {
        self.daily_limit.unwrap_or(match self.tier {
            0..=100 => 250_000,
            101..=190 => 625_000,
            _ => 1_250_000,
        })
    }
}

/// Injected faults. Rates are fractions of API requests (0.0–1.0), drawn from the seeded
/// generator; counts apply to the next requests. Admin paths (`/_sim/...`) are never faulted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer an error status (drawn evenly from `error_statuses`) without doing anything.
    pub error_rate: f64,
    /// Statuses `error_rate` draws from; empty means 500, 502, 503 and 504. 423 and 477 get
    /// HubSpot's bodies (477 with `Retry-After: 1`).
    pub error_statuses: Vec<u16>,
    /// Close the connection without an answer before doing anything.
    pub drop_rate: f64,
    /// Do the work, then close the connection without an answer.
    pub lost_response_rate: f64,
    /// The three rates above draw on write requests only (creates, updates, upserts,
    /// archives, merges, GDPR deletes); reads and searches are answered.
    pub writes_only: bool,
    /// Added before every API request is handled.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Added, on top of `latency`, before every search request is handled: a slow search index
    /// makes a poller's pass over the changes last longer than the writes it reads.
    #[serde(with = "humantime_serde")]
    pub search_latency: Duration,
    /// The next N API requests get 429 (TEN_SECONDLY_ROLLING; SECONDLY for search).
    pub burst_429: u32,
    /// The next N API requests hang for `timeout_hang`, then get 524, doing nothing.
    pub timeout_next: u32,
    #[serde(with = "humantime_serde")]
    pub timeout_hang: Duration,
    /// The token lacks `crm.objects.contacts.write`: writes get 403 MISSING_SCOPES.
    pub missing_write_scope: bool,
    /// The usage endpoint answers this status: 403 MISSING_SCOPES (a token without its
    /// scope), 404 (a portal without it), or a server error.
    pub usage_refused: Option<u16>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_statuses: Vec::new(),
            drop_rate: 0.0,
            lost_response_rate: 0.0,
            writes_only: false,
            latency: Duration::ZERO,
            search_latency: Duration::ZERO,
            burst_429: 0,
            timeout_next: 0,
            timeout_hang: Duration::from_secs(100),
            missing_write_scope: false,
            usage_refused: None,
        }
    }
}

/// Portal settings changeable at run time: `GET`/`PUT /_sim/settings`. `/_sim/reset` restores
/// the starting ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// See `SimOptions::preserve_primary_id`.
    pub preserve_primary_id: bool,
}

impl SimSettings {
    fn of(store: &store::Store) -> Self {
        Self {
            preserve_primary_id: store.keep_primary_id,
        }
    }

    fn apply(&self, store: &mut store::Store) {
        store.keep_primary_id = self.preserve_primary_id;
    }
}

/// What `GET /_sim/stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests received per endpoint: batch/create, batch/update, batch/upsert,
    /// batch/read, batch/archive, create, update, archive, merge, gdpr-delete, list, get,
    /// search, properties.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// API requests received per API version of their path (`v3`, `2026-03`, `2026-09`).
    #[serde(default)]
    pub requests_by_version: BTreeMap<String, u64>,
    /// API answers served per HTTP status (`"200"`, `"400"`, …).
    #[serde(default)]
    pub answers_by_status: BTreeMap<String, u64>,
    /// 429 answers served (rate limits and injected bursts).
    pub throttled_429: u64,
    /// Largest number of non-search API requests received in any rolling 10 s window
    /// (half-open), every request counted whatever its answer.
    pub max_requests_in_10s_window: u64,
    pub total_requests: u64,
    /// Requests that got an injected fault.
    pub faults_injected: u64,
    /// Live (not archived) contacts.
    pub contacts: u64,
}

impl SimStats {
    /// Batch write calls received (create, update, upsert and archive), whatever their answer.
    pub fn write_requests(&self) -> u64 {
        [
            "batch/create",
            "batch/update",
            "batch/upsert",
            "batch/archive",
        ]
        .iter()
        .map(|e| self.requests_by_endpoint.get(*e).copied().unwrap_or(0))
        .sum()
    }
}

/// What `GET /_sim/usage` reports: the portal's day as the usage endpoint sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUsage {
    pub usage_limit: u64,
    /// Every app's requests today (what `currentUsage` reports).
    pub current_usage: u64,
    /// The API requests this simulator admitted today.
    pub own: u64,
    /// Other apps' requests today.
    pub other_apps: u64,
    pub resets_at: DateTime<Utc>,
    pub time_zone: String,
}

/// A running simulator; dropping it stops the server too.
pub struct RunningSim {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

/// Starts the simulator on `addr` (port 0 picks a free port).
pub async fn start(addr: SocketAddr, options: SimOptions) -> anyhow::Result<RunningSim> {
    let (listener, local) = server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let shared = server::shared(options, local);
    let router = server::router(shared.clone());
    let task = tokio::spawn(server::serve(listener, router, shared.cancel.clone()));
    Ok(RunningSim {
        shared,
        addr: local,
        task: Some(task),
    })
}

impl RunningSim {
    /// `http://127.0.0.1:PORT`, to use as `hubspot.base_url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The same figures as `GET /_sim/stats`.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Resolves once every write made so far is visible to search (at once without an index
    /// lag): the point after which a poll is sure to see them.
    pub async fn indexed(&self) {
        let due = self.shared.lock().store.indexed_by_us();
        let now = self.shared.now_us();
        if let Some(due) = due.filter(|&d| d > now) {
            tokio::time::sleep(Duration::from_micros(due - now)).await;
        }
    }

    /// How long after a write search sees it ([`SimOptions::index_lag`]).
    pub fn index_lag(&self) -> Duration {
        self.shared.options.index_lag
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// The portal's day: the daily limit, what every app used, the next reset.
    pub fn usage(&self) -> SimUsage {
        self.shared.usage()
    }

    /// Other apps of the portal spend `n` requests of today's limit.
    pub fn spend_other_apps(&self, n: u64) {
        self.shared.spend_other_apps(n);
    }

    /// The next daily reset falls at `at` (later ones at midnight in the account's zone).
    pub fn set_resets_at(&self, at: DateTime<Utc>) {
        self.shared.set_resets_at(at);
    }

    /// Empties the store and counters and restores the starting faults and seed.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Adds contacts directly (no auth, limits or faults). Values are validated and normalised
    /// like API writes, except that `createdate` and `lastmodifieddate` may be set. Returns the
    /// new ids in input order.
    pub fn seed_contacts(
        &self,
        contacts: &[BTreeMap<String, Option<String>>],
    ) -> anyhow::Result<Vec<String>> {
        seed(&self.shared, contacts)
    }

    /// Every contact, archived ones included, in id order.
    pub fn contacts(&self) -> Vec<SimContact> {
        self.shared.lock().store.all().cloned().collect()
    }

    /// Keeps (or stops keeping) every property value updates change, for
    /// [`RunningSim::history_of`].
    pub fn keep_history(&self, keep: bool) {
        self.shared.lock().store.keep_history(keep);
    }

    /// The values updates gave `property` of contact `id` while history was kept, oldest
    /// first: (modification time in epoch ms, value).
    pub fn history_of(&self, id: &str, property: &str) -> Vec<(i64, Option<String>)> {
        let Ok(id) = id.trim().parse() else {
            return Vec::new();
        };
        self.shared.lock().store.history_of(id, property)
    }

    /// One contact by id (archived ones included).
    pub fn contact(&self, id: &str) -> Option<SimContact> {
        let id: u64 = id.trim().parse().ok()?;
        self.shared.lock().store.get(id).cloned()
    }

    /// The settings in force (`GET /_sim/settings`).
    pub fn settings(&self) -> SimSettings {
        SimSettings::of(&self.shared.lock().store)
    }

    /// Changes the settings (`PUT /_sim/settings`).
    pub fn set_settings(&self, settings: &SimSettings) {
        settings.apply(&mut self.shared.lock().store);
    }

    /// Merges contact `other` into `primary` as a HubSpot user would, without auth, limits or
    /// faults (the API's `POST …/contacts/merge` does the same with them). Returns the
    /// survivor's id: new, or the primary's with `preserve_primary_id`.
    pub fn merge_contacts(&self, primary: &str, other: &str) -> Result<String, MergeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let now_us = self.shared.now_us();
        let mut state = self.shared.lock();
        merge::merge_contacts(&mut state.store, primary, other, now_ms, now_us)
            .map(|id| id.to_string())
    }

    /// GDPR-deletes the contact holding `email` (any case) for good and blocklists its emails;
    /// an email no contact holds is blocklisted all the same. Returns whether a contact went.
    pub fn gdpr_delete_email(&self, email: &str) -> bool {
        let now_us = self.shared.now_us();
        let store = &mut self.shared.lock().store;
        let found = store.lookup(Some("email"), email).is_some();
        single::purge(store, Some("email"), email, now_us);
        found
    }

    /// The live contact with this email (any case).
    pub fn contact_by_email(&self, email: &str) -> Option<SimContact> {
        let state = self.shared.lock();
        let id = state.store.lookup(Some("email"), email)?;
        state.store.get(id).cloned()
    }

    /// Stops accepting, closes every connection and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Seeds contacts into the store; problems name the record, property and rule.
fn seed(
    shared: &server::Shared,
    contacts: &[BTreeMap<String, Option<String>>],
) -> anyhow::Result<Vec<String>> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now_us = shared.now_us();
    let mut state = shared.lock();
    let mut planned = Vec::new();
    let mut emails = std::collections::HashSet::new();
    for (index, record) in contacts.iter().enumerate() {
        let seeded = batch::seed_values(&state.store, record)
            .map_err(|e| anyhow::anyhow!("seed contact #{index}: {e}"))?;
        if let Some(email) = seeded.values.get("email") {
            if state.store.is_blocklisted(email) {
                anyhow::bail!("seed contact #{index}: email is blocklisted by a GDPR delete");
            }
            if let Some(existing) = state.store.holder("email", email) {
                anyhow::bail!("seed contact #{index}: email already belongs to contact {existing}");
            }
            if !emails.insert(email.clone()) {
                anyhow::bail!("seed contact #{index}: email repeats an earlier seeded contact");
            }
        }
        planned.push(seeded);
    }
    Ok(planned
        .into_iter()
        .map(|s| {
            state
                .store
                .create(s.values, now_ms, now_us, s.created_ms, s.modified_ms)
                .to_string()
        })
        .collect())
}

/// `hubsync sim hubspot` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct HubspotArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Bearer token clients must send.
    #[arg(
        long,
        env = "HUBSYNC_SIM_TOKEN",
        default_value = "sim-token",
        hide_env_values = true
    )]
    pub token: String,
    /// Requests per rolling 10 s window.
    #[arg(long, default_value_t = 100, value_parser = parse_tier)]
    pub tier: u32,
    /// Requests per day (default from the tier).
    #[arg(long)]
    pub daily_limit: Option<u64>,
    /// The account's time zone: the daily limit resets at midnight there.
    #[arg(long, default_value = "UTC")]
    pub time_zone: chrono_tz::Tz,
    /// Requests other apps of the portal have already made today.
    #[arg(long, default_value_t = 0)]
    pub other_apps_usage: u64,
    /// Search requests per rolling second.
    #[arg(long, default_value_t = 5)]
    pub search_per_second: u32,
    /// Seed for result order and fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Delay before writes show in search, e.g. "2s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub index_lag: Duration,
    /// Fraction of API requests answered 500/502/503/504.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Status drawn by --error-rate (repeatable; default 500, 502, 503, 504).
    #[arg(long)]
    pub error_status: Vec<u16>,
    /// Fraction of API requests whose connection is dropped before any work.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Fraction of API requests done and then dropped without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub lost_response_rate: f64,
    /// The error, drop and lost-answer rates hit write requests only.
    #[arg(long)]
    pub writes_only: bool,
    /// Latency added to every API request, e.g. "20ms".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub latency: Duration,
    /// Latency added to every search request on top of --latency, e.g. "3s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub search_latency: Duration,
    /// Answer the first N API requests with 429.
    #[arg(long, default_value_t = 0)]
    pub burst_429: u32,
    /// Let the first N API requests hang (then 524).
    #[arg(long, default_value_t = 0)]
    pub timeout_next: u32,
    /// Refuse writes with 403 MISSING_SCOPES, as for a token without the write scope.
    #[arg(long)]
    pub missing_write_scope: bool,
    /// How long a hanging request hangs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100s")]
    pub timeout_hang: Duration,
    /// Merges keep the primary's id (HubSpot's primary ID preservation beta) instead of making
    /// a new record.
    #[arg(long)]
    pub preserve_primary_id: bool,
}

fn parse_tier(text: &str) -> Result<u32, String> {
    match text {
        "100" => Ok(100),
        "190" => Ok(190),
        "250" => Ok(250),
        _ => Err(format!("tier must be 100, 190 or 250, got {text}")),
    }
}

impl HubspotArgs {
    /// The simulator options these arguments describe.
    pub fn options(&self) -> anyhow::Result<SimOptions> {
        for (name, rate) in [
            ("--error-rate", self.error_rate),
            ("--drop-rate", self.drop_rate),
            ("--lost-response-rate", self.lost_response_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                anyhow::bail!("{name} must be between 0 and 1, got {rate}");
            }
        }
        if let Some(status) = self.error_status.iter().find(|s| !(400..=599).contains(*s)) {
            anyhow::bail!("--error-status must be an HTTP error status (400-599), got {status}");
        }
        Ok(SimOptions {
            token: SecretString::from(self.token.clone()),
            tier: self.tier,
            daily_limit: self.daily_limit,
            time_zone: self.time_zone,
            resets_at: None,
            other_apps_usage: self.other_apps_usage,
            search_per_second: self.search_per_second,
            seed: self.seed,
            index_lag: self.index_lag,
            faults: Faults {
                error_rate: self.error_rate,
                error_statuses: self.error_status.clone(),
                drop_rate: self.drop_rate,
                lost_response_rate: self.lost_response_rate,
                writes_only: self.writes_only,
                latency: self.latency,
                search_latency: self.search_latency,
                burst_429: self.burst_429,
                timeout_next: self.timeout_next,
                timeout_hang: self.timeout_hang,
                missing_write_scope: self.missing_write_scope,
                usage_refused: None,
            },
            properties: default_properties(),
            preserve_primary_id: self.preserve_primary_id,
        })
    }
}

/// Runs `hubsync sim hubspot` until SIGINT or SIGTERM, printing the base URL on stdout.
pub async fn run(args: HubspotArgs) -> Result<u8, Failure> {
    let options = args
        .options()
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    let stop = crate::sim::stop_signal()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot wait for signals: {e}")))?;
    let sim = start(args.listen, options)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("{e:#}")))?;
    println!("{}", sim.base_url());
    stop.await;
    sim.shutdown().await;
    Ok(exit::OK)
}
