//! Configuration: typed settings loaded from `config.yaml`, `${VAR}` interpolation, `HUBSYNC_…`
//! secret overrides, and a check that reports every problem with its key path.

mod bounds;
pub mod duration;
pub mod envfile;
mod input;
mod interpolate;
mod load;
mod problems;
pub(crate) mod scrub;

pub use input::{MAX_BYTES, MAX_DEPTH, check_nesting, read_regular_file};
pub use load::{Need, load_file, load_file_with, load_str};
pub use problems::{ConfigError, Problem, Problems};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::hubspot::HubSpotSettings;
use crate::mapping::ObjectConfig;
use crate::mssql::SqlServerSettings;

/// Environment variable that overrides `postgres.url`.
pub const ENV_DATABASE_URL: &str = "HUBSYNC_DATABASE_URL";
/// Environment variable that overrides `hubspot.token`.
pub const ENV_HUBSPOT_TOKEN: &str = "HUBSYNC_HUBSPOT_TOKEN";
/// Environment variable that overrides `sql_server.connection`.
pub const ENV_SQL_SERVER: &str = "HUBSYNC_SQL_SERVER";
/// Environment variable that overrides `service.api_token`.
pub const ENV_API_TOKEN: &str = "HUBSYNC_API_TOKEN";

/// The whole `config.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceSettings,
    #[serde(default)]
    pub postgres: PostgresSettings,
    #[serde(default)]
    pub queue: QueueSettings,
    #[serde(default)]
    pub logging: LoggingSettings,
    #[serde(default)]
    pub hubspot: HubSpotSettings,
    #[serde(default)]
    pub sql_server: SqlServerSettings,
    /// Synced objects by name (`contacts`), each with its table, match property and fields.
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectConfig>,
    /// Cron schedules that start jobs, read in `sql_server.time_zone`.
    #[serde(default)]
    pub schedules: Vec<crate::jobs::schedule::ScheduleConfig>,
    /// Reconciliation runs (`hubsync reconcile`, reconcile jobs).
    #[serde(default)]
    pub reconcile: ReconcileSettings,
}

/// `reconcile:` — how much a reconciliation run may spend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Share of HubSpot's 10-second limit a run may use (0 < share ≤ 1; default 0.3), so live
    /// changes keep the rest.
    pub budget_share: f64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self { budget_share: 0.3 }
    }
}

impl Config {
    /// Notes on how the objects are synced and how the connections are secured that an
    /// operator should know (none is an error).
    /// The checked schedules (`check` has refused a configuration whose schedules fail).
    pub fn schedules(&self) -> Vec<crate::jobs::schedule::Schedule> {
        let objects: Vec<&str> = self.objects.keys().map(String::as_str).collect();
        crate::jobs::schedule::check(&self.schedules, &objects).unwrap_or_default()
    }

    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .objects
            .iter()
            .flat_map(|(name, o)| o.notes(&format!("objects.{name}")))
            .collect();
        let pg = self.postgres.url.as_ref().and_then(|url| {
            crate::pg::connect_options(secrecy::ExposeSecret::expose_secret(url)).ok()
        });
        notes.extend(
            pg.as_ref()
                .and_then(crate::pg::tls_warning)
                .map(|w| format!("postgres.url: {w}")),
        );
        notes.extend(self.sql_server.notes("sql_server"));
        notes
    }
}

/// `service:` — the daemon process itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Name of this instance in logs and in `sync_queue.locked_by` (as `name@host:pid`);
    /// without one, `host:pid`.
    pub instance: Option<String>,
    /// Address of the `/healthz`, `/readyz` and `/metrics` listener.
    pub http_listen: SocketAddr,
    /// How long SIGTERM waits for in-flight batches before releasing them.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How often dependencies are checked and queue metrics refreshed.
    #[serde(with = "duration")]
    pub health_interval: Duration,
    /// Bearer token of the job API (`/api/v1/…`); a secret, usually from `HUBSYNC_API_TOKEN`.
    /// Without one the job API is off (its routes answer 404).
    pub api_token: Option<SecretString>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            instance: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            shutdown_grace: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            api_token: None,
        }
    }
}

/// `postgres:` — the queue database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/db`; a secret, usually from `HUBSYNC_DATABASE_URL`.
    pub url: Option<SecretString>,
    pub max_connections: u32,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `queue:` — workers, leases, retries and retention of the work queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Worker tasks per process.
    pub workers: usize,
    /// Items claimed per batch (HubSpot's batch limit is 100).
    pub batch_size: u32,
    /// How long a claim is valid before the rescuer may take it back.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Failed attempts before an item ends `dead`.
    pub max_attempts: i32,
    /// Expired leases (worker crashes) before an item ends `dead`.
    pub max_rescues: i32,
    /// First retry delay; doubles per attempt with jitter, capped by `retry_max`.
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Idle workers look for work at least this often even without a NOTIFY.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Finished items (done, rejected settled by a newer change, discarded) kept for audit.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// A record's newest item that ended rejected or dead keeps its payload values this long
    /// after it finished; then they are dropped (keys, reasons and record key kept).
    #[serde(with = "duration")]
    pub rejected_payload_retention: Duration,
    /// `sync_conflicts` rows (both sides' values) are deleted this long after detection.
    #[serde(with = "duration")]
    pub conflict_retention: Duration,
    /// Rows deleted per pruning statement, so pruning never holds long locks.
    pub prune_batch: i64,
    /// A pending item older than this past its due time shows in `sync_queue_stuck`.
    #[serde(with = "duration")]
    pub stuck_after: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            batch_size: 100,
            lease: Duration::from_secs(120),
            max_attempts: 10,
            max_rescues: 3,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 24 * 3600),
            rejected_payload_retention: Duration::from_secs(30 * 24 * 3600),
            conflict_retention: Duration::from_secs(90 * 24 * 3600),
            prune_batch: 1000,
            stuck_after: Duration::from_secs(15 * 60),
        }
    }
}

/// `logging:` — JSON log lines to stdout and daily-rotated files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// `RUST_LOG`-style filter, e.g. `info,hubsync::hubspot=debug`. `RUST_LOG` overrides it.
    pub level: String,
    /// Write JSON lines to stdout (journald).
    pub stdout: bool,
    /// Directory for daily-rotated `hubsync.log.YYYY-MM-DD` files; none means no files.
    pub directory: Option<PathBuf>,
    /// Rotated files kept.
    pub retention_days: usize,
    /// Mask personal data (emails, identity numbers, phones, record values) in every log line;
    /// while on, tiberius row logging (debug/trace) is refused.
    pub mask_personal_data: bool,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            stdout: true,
            directory: None,
            retention_days: 14,
            mask_personal_data: true,
        }
    }
}
