//! `hubsync backfill`: queue every record of an object again (initial load / full resync), with
//! a progress bar, resuming an interrupted backfill; `--dry-run` prints the planned operations
//! instead and writes nothing.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::app::{dry_run, engine, unavailable};
use crate::config::Need;
use crate::exit::{self, Failure};
use crate::queue::Direction;
use crate::sync::dry_run::Scope;

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// The object to backfill, as named under `objects:` in config.yaml (default: every object).
    #[arg(long)]
    pub object: Option<String>,
    /// to_hubspot reads every SQL Server row and queues it for HubSpot; to_sql reads every
    /// HubSpot record and queues it for SQL Server.
    #[arg(long, value_enum, default_value = "to_hubspot")]
    pub direction: Direction,
    /// Print what would be done (one JSON line per record) and write nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the planned values as they are; personal data (every value sent,
    /// emails, identity numbers, quoted values in errors) is masked otherwise.
    #[arg(long, requires = "dry_run")]
    pub unmask: bool,
    /// Start from the beginning even when an earlier backfill was interrupted.
    #[arg(long)]
    pub restart: bool,
}

pub async fn run(config_path: &Path, args: BackfillArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::All)?;
    if let Some(name) = &args.object {
        crate::app::object(&config, name)?;
    }
    crate::telemetry::init_cli();
    let (queue, engine) = engine(&config).await?;
    let objects = engine
        .objects
        .iter()
        .filter(|o| args.object.as_ref().is_none_or(|n| *n == o.name));
    if args.dry_run {
        let plan: Vec<_> = objects.map(|o| (o, args.direction)).collect();
        return dry_run(&queue, &plan, Scope::Everything, args.unmask).await;
    }
    for object in objects {
        let bar = ProgressBar::new(0);
        let template = "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(format!("{} {}", object.name, args.direction));
        let max_attempts = queue.settings().max_attempts;
        let done = crate::sync::backfill::run(
            object,
            queue.pool(),
            args.direction,
            args.restart,
            max_attempts,
            |p| {
                if let Some(total) = p.total {
                    bar.set_length(total.max(p.rows_read));
                }
                bar.set_position(p.rows_read);
            },
        )
        .await
        .map_err(unavailable)?;
        bar.finish_and_clear();
        let resumed = if done.resumed { " (resumed)" } else { "" };
        eprintln!(
            "{} {}: {} records read, {} items queued{resumed}; the service (or `hubsync run --once`) syncs them",
            object.name, args.direction, done.rows_read, done.enqueued
        );
        tracing::info!(operation = "BACKFILL", object = %object.name, direction = %args.direction,
            rows_read = done.rows_read, enqueued = done.enqueued, resumed = done.resumed,
            "backfill queued every record");
    }
    Ok(exit::OK)
}
