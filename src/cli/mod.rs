//! Command line: parses arguments (clap), loads the configuration and runs one command, mapping
//! failures to exit codes (78 config, 69 unavailable, 65 bad data, 70 internal).

pub mod backfill;
mod forget;
mod history;
mod jobs;
mod mark_synced;
mod pause;
mod queue;
pub mod reconcile;
mod resync;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Need};
use crate::exit::{self, Failure};

#[derive(Debug, Parser)]
#[command(
    name = "hubsync",
    version,
    about = "Keeps member contacts in SQL Server and HubSpot CRM in step"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "config.yaml",
        env = "HUBSYNC_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration exactly as `run` does; prints "ok" or every problem with its key
    /// path (exit 78).
    CheckConfig(CheckConfigArgs),
    /// Apply the queue database migrations.
    Migrate,
    /// Run the service until SIGTERM (SIGHUP reloads config.yaml); `--once` polls and drains.
    Run(crate::daemon::RunArgs),
    /// Queue every record of an object again (initial load / full resync); resumes if
    /// interrupted; `--dry-run` prints the plan and writes nothing.
    Backfill(backfill::BackfillArgs),
    /// Start, show, list and cancel jobs (backfill, resync) that the running service runs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Look at and act on the work queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Stop one object's direction for every instance: workers claim nothing of it until
    /// `resume`; pollers keep queueing its changes.
    Pause(pause::PauseArgs),
    /// Let a paused direction's workers claim again; they catch up on what was queued.
    Resume(pause::PauseArgs),
    /// Queue members' current SQL Server rows for HubSpot now (exit 1 if a key has no row).
    Resync(resync::ResyncArgs),
    /// After a manual bulk fix: accept both sides' current values as the baseline where they
    /// agree (`--dry-run` first prints what would change).
    MarkSynced(mark_synced::MarkSyncedArgs),
    /// Compare both sides with the record links and queue what drifted (exit 1 when anything
    /// did); `--dry-run` only lists it.
    Reconcile(reconcile::ReconcileArgs),
    /// Erase a member from hubsync's own tables; `--hubspot` also deletes the HubSpot contact
    /// for good (GDPR delete).
    Forget(forget::ForgetArgs),
    /// One member's sync history, oldest first (exit 1 when there is none).
    History(history::HistoryArgs),
    /// Benchmarks: print figures and ratios from one run.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Run a simulator of an outside system (for tests, benchmarks and the demo).
    #[command(subcommand)]
    Sim(crate::sim::SimCommand),
    /// Map and validate a CSV/JSONL file of SQL-side records (exit 1 if any is rejected).
    Validate(validate::ValidateArgs),
    /// See it all work: throwaway PostgreSQL, both simulators, the daemon, live figures.
    Demo(crate::demo::DemoArgs),
}

/// Options of `hubsync check-config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckConfigArgs {
    /// Take the variables from this systemd EnvironmentFile (e.g. /etc/hubsync/hubsync.env,
    /// mode 0600) instead of the environment, read as systemd reads it: the check sees what the
    /// service will, and no secret goes on a command line.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Do not contact HubSpot: skip the check of the mapped properties and of the portal's
    /// write rules.
    #[arg(long)]
    pub offline: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubsync: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let outcome = runtime.block_on(async {
        let outcome = run(cli).await;
        crate::budget::leave_all().await;
        outcome
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("hubsync: {failure}");
            failure.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::CheckConfig(args) => {
            let config = match &args.env_file {
                None => load(&cli.config, Need::All)?,
                // Only the file's variables: the service gets no others from a shell.
                Some(path) => {
                    let vars = config::envfile::read(path).map_err(config_failure)?;
                    config::load_file_with(&cli.config, Need::All, &|name| vars.get(name).cloned())
                        .map_err(config_failure)?
                }
            };
            for note in config.notes() {
                println!("note: {note}");
            }
            if !args.offline {
                for line in hubspot_check(&config).await {
                    println!("{line}");
                }
            }
            println!("ok");
            Ok(exit::OK)
        }
        Command::Migrate => {
            let config = load(&cli.config, Need::Postgres)?;
            let _guard = crate::telemetry::init(&config.logging)
                .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
            let pool = connect(&config).await?;
            crate::pg::migrate(&pool)
                .await
                .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
            let applied = crate::pg::MIGRATOR.iter().count();
            tracing::info!(
                operation = "MIGRATE",
                status = "done",
                migrations = applied,
                "queue database schema is current"
            );
            Ok(exit::OK)
        }
        Command::Run(args) => crate::daemon::run(&cli.config, args).await,
        Command::Backfill(args) => backfill::run(&cli.config, args).await,
        Command::Queue(command) => {
            let config = load(&cli.config, Need::Postgres)?;
            crate::telemetry::init_cli();
            queue::run(command, &config).await
        }
        Command::Jobs(command) => {
            let config = load(&cli.config, Need::Postgres)?;
            crate::telemetry::init_cli();
            jobs::run(command, &config).await
        }
        Command::Pause(args) => pause_or_resume(&cli.config, args, true).await,
        Command::Resume(args) => pause_or_resume(&cli.config, args, false).await,
        Command::Resync(args) => resync::run(&cli.config, args).await,
        Command::MarkSynced(args) => mark_synced::run(&cli.config, args).await,
        Command::Reconcile(args) => reconcile::run(&cli.config, args).await,
        Command::Forget(args) => forget::run(&cli.config, args).await,
        Command::History(args) => history::run(&cli.config, args).await,
        Command::Bench(command) => crate::bench::run(command, &cli.config).await,
        Command::Sim(command) => crate::sim::run(command).await,
        Command::Validate(args) => validate::run(&cli.config, args),
        Command::Demo(args) => crate::demo::run(args).await,
    }
}

/// What `run` logs at start about HubSpot, checked once without retries: the mapped
/// properties against their definitions and the mapping against the portal's write rules.
/// HubSpot unreachable is a note: `run` starts then too.
async fn hubspot_check(config: &Config) -> Vec<String> {
    let mut settings = config.hubspot.clone();
    settings.max_retry_elapsed = std::time::Duration::ZERO;
    settings.timeout = settings.timeout.min(std::time::Duration::from_secs(5));
    let limiter = std::sync::Arc::new(crate::hubspot::Limiter::from_settings(&settings));
    let client = match crate::hubspot::HubSpotClient::new(&settings, limiter) {
        Ok(client) => client,
        Err(e) => return vec![format!("note: HubSpot not checked: {e}")],
    };
    let first = config.objects.values().next();
    if let Some(object) = first
        && let Err(e) = client.properties(&object.hubspot_object).await
    {
        return vec![format!(
            "note: HubSpot not checked (properties and portal rules): {e}"
        )];
    }
    let mut lines: Vec<String> = crate::daemon::reload::check_properties(&client, config)
        .await
        .into_iter()
        .map(|p| format!("warning: {p} (run starts; a reload with it is refused)"))
        .collect();
    let clashes = crate::daemon::reload::portal_clashes(&client, config).await;
    lines.extend(clashes.into_iter().map(|c| format!("warning: {c}")));
    lines
}

use crate::app::config_failure;
pub use crate::app::{connect, load};

async fn pause_or_resume(
    config: &std::path::Path,
    args: pause::PauseArgs,
    pause: bool,
) -> Result<u8, Failure> {
    let config = load(config, Need::Postgres)?;
    crate::telemetry::init_cli();
    pause::run(args, &config, pause).await
}
