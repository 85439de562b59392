//! The running application, built once from a configuration file: the configuration itself
//! (exit 78 naming every problem), the queue database pool with its schema (exit 69 when
//! unreachable), the queue and the sync engine with its HubSpot and SQL Server clients, and the
//! printed dry-run plan. The CLI commands and the daemon all start from here.

use std::io::Write;
use std::path::Path;

use crate::config::{self, Config, Need};
use crate::exit::{self, Failure};
use crate::queue::{Direction, Queue};
use crate::sync::dry_run::{self, Scope};
use crate::sync::engine::{Engine, ObjectSync};
use crate::sync::plan::Report;

/// Loads the configuration or fails with exit 78 listing every problem.
pub fn load(path: &Path, need: Need) -> Result<Config, Failure> {
    config::load_file(path, need).map_err(config_failure)
}

/// A configuration error as the exit-78 failure every command reports.
pub fn config_failure(e: config::ConfigError) -> Failure {
    Failure::new(exit::CONFIG, e.to_string())
}

/// The object `--object name` names, or exit 78 listing the configured ones.
pub fn object<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::mapping::ObjectConfig, Failure> {
    config.objects.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.objects.keys().map(String::as_str).collect();
        Failure::new(
            exit::CONFIG,
            format!(
                "--object {name}: no such object in config.yaml (objects: {})",
                known.join(", ")
            ),
        )
    })
}

/// Connects to the queue database or fails with exit 69 and a one-line reason.
pub async fn connect(config: &Config) -> Result<sqlx::PgPool, Failure> {
    crate::pg::connect(&config.postgres)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))
}

/// Connects, migrates and builds the queue and the sync engine (the steps every sync command
/// and the daemon share), joins the HubSpot budget the instances on that database share, then
/// reads what the HubSpot account has left today (a failure is a
/// warning).
pub async fn engine(config: &Config) -> Result<(Queue, Engine), Failure> {
    let pool = connect(config).await?;
    crate::pg::migrate(&pool)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let queue = Queue::new(pool, config.queue.clone());
    let engine = crate::sync::engine::build(config, &queue)
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
    crate::budget::share(
        engine.hubspot.limiter(),
        queue.pool(),
        &crate::daemon::instance(config),
        &config.hubspot,
    )
    .await;
    engine.hubspot.refresh_daily_budget().await;
    Ok((queue, engine))
}

/// For a command on one object: the configuration (checked for everything `run` needs), CLI
/// logging, and the queue and sync engine, once the object is known to be configured.
pub async fn engine_for(path: &Path, object: &str) -> Result<(Config, Queue, Engine), Failure> {
    let config = load(path, Need::All)?;
    crate::telemetry::init_cli();
    self::object(&config, object)?;
    let (queue, engine) = engine(&config).await?;
    Ok((config, queue, engine))
}

/// The sync engine of object `name`.
pub fn object_sync<'e>(engine: &'e Engine, name: &str) -> Result<&'e ObjectSync, Failure> {
    engine
        .objects
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| Failure::new(exit::SOFTWARE, format!("object {name} has no sync engine")))
}

/// Prints the plan of `plan`'s objects and directions (one JSON line per record on stdout, a
/// summary on stderr); writes nothing anywhere. Exit 1 when the plan rejects any record.
pub async fn dry_run(
    queue: &Queue,
    plan: &[(&ObjectSync, Direction)],
    scope: Scope,
    unmask: bool,
) -> Result<u8, Failure> {
    let mut report = if unmask {
        Report::unmasked()
    } else {
        Report::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (object, direction) in plan {
        dry_run::plan_object(object, queue, *direction, scope, &mut report, &mut out)
            .await
            .map_err(unavailable)?;
    }
    out.flush()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("stdout: {e}")))?;
    for line in report.summary() {
        eprintln!("dry run: {line}");
    }
    eprintln!("dry run: nothing was written to HubSpot, SQL Server or the queue");
    Ok(if report.count("REJECT") > 0 {
        exit::REJECTED
    } else {
        exit::OK
    })
}

/// A dependency failed mid-command: exit 69 with the reason.
pub fn unavailable(e: anyhow::Error) -> Failure {
    Failure::new(exit::UNAVAILABLE, format!("{e:#}"))
}
