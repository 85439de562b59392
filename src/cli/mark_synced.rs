//! `hubsync mark-synced --object O [--dry-run]`: after a manual bulk fix, accept the current
//! values of both sides as the baseline where they agree (the record links' snapshots are
//! rewritten), printing one JSON line per record with what changes (field names only) and
//! which fields still differ; `--dry-run` prints the same and writes nothing.

use crate::exit::{self, Failure};

#[derive(Debug, Clone, clap::Args)]
pub struct MarkSyncedArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// Print what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(config_path: &std::path::Path, args: MarkSyncedArgs) -> Result<u8, Failure> {
    let (_config, queue, engine) = crate::app::engine_for(config_path, &args.object).await?;
    let object = crate::app::object_sync(&engine, &args.object)?;
    let summary = crate::sync::mark_synced::run(object, queue.pool(), args.dry_run, |r| {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    })
    .await
    .map_err(crate::app::unavailable)?;
    let verb = if args.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    eprintln!(
        "{}: {} linked records; {verb} the snapshot of {} ({} fields); {} fields differ between \
         the sides (left to the sync); {} records without their SQL Server row or HubSpot record",
        object.name,
        summary.links,
        summary.rewritten,
        summary.fields,
        summary.differ,
        summary.missing
    );
    if args.dry_run {
        eprintln!("dry run: nothing was written");
    } else {
        tracing::info!(operation = "MARK_SYNCED", object = %object.name, links = summary.links,
            rewritten = summary.rewritten, fields = summary.fields, differ = summary.differ,
            "record links' snapshots rewritten from both sides' current values");
    }
    Ok(exit::OK)
}
