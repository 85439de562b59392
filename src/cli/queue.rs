//! `hubsync queue …`: the operator's view of the work queue (stats, stuck, retry, discard,
//! prune), safe against a running daemon's database.

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::config::Config;
use crate::exit::{self, Failure};
use crate::queue::{OpReport, Queue, RetrySelection, StuckItem};
use crate::telemetry::mask;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Items by object, direction and state, with the age of the oldest pending item.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Items that need a look: expired leases, overdue pending, rejected and dead (with the
    /// last error).
    Stuck {
        #[arg(long)]
        json: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Show record keys and errors as stored: personal data (emails, identity numbers,
        /// phones, quoted values) is masked otherwise.
        #[arg(long)]
        unmask: bool,
    },
    /// Bring rejected or dead items back to pending with fresh attempts.
    Retry(RetryArgs),
    /// Mark pending, rejected or dead items as discarded (kept for the audit trail).
    Discard {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Apply retention now (the daemon also does this): delete finished items older than
    /// queue.retention, drop the payload values of rejected and dead items older than
    /// queue.rejected_payload_retention, delete conflicts older than queue.conflict_retention.
    Prune,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "rejected", "dead"])))]
pub struct RetryArgs {
    /// Item ids.
    ids: Vec<i64>,
    /// Every rejected item (the newest of each record).
    #[arg(long, conflicts_with_all = ["ids", "dead"])]
    rejected: bool,
    /// Every dead item (the newest of each record).
    #[arg(long, conflicts_with = "ids")]
    dead: bool,
    /// Only items of this object.
    #[arg(long, requires = "which")]
    object: Option<String>,
}

/// The instances sharing the HubSpot budget: state, part of the last minute's requests, own
/// share, and the mean wait per grant.
fn instances_table(rows: &[crate::budget::InstanceRow]) -> Table {
    let recent: i64 = rows.iter().map(|r| i64::from(r.recent_grants)).sum();
    let mut t = table([
        "instance",
        "budget",
        "heartbeat",
        "part of the last minute",
        "own share / 10 s",
        "requests",
        "mean wait",
    ]);
    for r in rows {
        let age = std::time::Duration::from_secs_f64(r.heartbeat_age_s.max(0.0));
        let part = if recent > 0 {
            format!(
                "{:.0} %",
                100.0 * f64::from(r.recent_grants) / recent as f64
            )
        } else {
            "-".into()
        };
        let wait = if r.granted > 0 {
            format!("{:.2} s", r.waited_seconds / r.granted as f64)
        } else {
            "-".into()
        };
        t.add_row(vec![
            r.instance.clone(),
            format!("{} ({})", r.mode, crate::budget::heartbeat_state(age)),
            format!("{} ago", self::age(r.heartbeat_age_s)),
            part,
            r.share.to_string(),
            r.granted.to_string(),
            wait,
        ]);
    }
    t
}

pub async fn run(command: QueueCommand, config: &Config) -> Result<u8, Failure> {
    let pool = super::connect(config).await?;
    let queue = Queue::new(pool, config.queue.clone());
    let db = |e: crate::queue::QueueError| Failure::new(exit::UNAVAILABLE, e.to_string());
    match command {
        QueueCommand::Stats { json } => {
            let rows = queue.summary().await.map_err(db)?;
            let pauses = queue.pauses().await.map_err(db)?;
            let paused = |object: &str, direction: &str| {
                pauses
                    .iter()
                    .any(|p| p.object == object && p.direction == direction)
            };
            if json {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["paused"] = paused(&r.object, &r.direction).into();
                        v
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else if rows.is_empty() {
                println!("the queue is empty");
            } else {
                let mut t = table(["object", "direction", "state", "items", "oldest pending"]);
                for r in rows {
                    t.add_row(vec![
                        r.object,
                        r.direction,
                        r.state,
                        r.items.to_string(),
                        r.oldest_pending_age_s.map(age).unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
            if !json {
                let instances = crate::budget::instances(queue.pool())
                    .await
                    .map_err(|e| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e)))?;
                if !instances.is_empty() {
                    println!("{}", instances_table(&instances));
                }
                for p in &pauses {
                    println!(
                        "paused: {} {} since {} (by {}); `hubsync resume` lets its workers claim again",
                        p.object,
                        p.direction,
                        p.paused_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        p.paused_by
                    );
                }
            }
        }
        QueueCommand::Stuck {
            json,
            limit,
            unmask,
        } => {
            let mut items = queue
                .stuck(config.queue.stuck_after, limit)
                .await
                .map_err(db)?;
            if !unmask {
                items.iter_mut().for_each(mask_stuck);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).unwrap_or_default()
                );
            } else if items.is_empty() {
                println!("nothing is stuck");
            } else {
                let mut t = table([
                    "id",
                    "object",
                    "direction",
                    "record",
                    "state",
                    "problem",
                    "last error",
                ]);
                for i in items {
                    t.add_row(vec![
                        i.id.to_string(),
                        i.object,
                        i.direction,
                        i.record_key,
                        i.state,
                        i.problem,
                        i.last_error.unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
        }
        QueueCommand::Retry(args) => {
            let selection = if args.rejected {
                RetrySelection::Rejected {
                    object: args.object,
                }
            } else if args.dead {
                RetrySelection::Dead {
                    object: args.object,
                }
            } else {
                RetrySelection::Ids(args.ids)
            };
            let report = queue.retry(&selection).await.map_err(db)?;
            print_report("retried", &report);
            if !report.skipped.is_empty() {
                return Ok(exit::REJECTED);
            }
        }
        QueueCommand::Discard { ids } => {
            let report = queue.discard(&ids).await.map_err(db)?;
            print_report("discarded", &report);
            if !report.skipped.is_empty() {
                return Ok(exit::REJECTED);
            }
        }
        QueueCommand::Prune => {
            let done = queue.enforce_retention().await.map_err(db)?;
            println!(
                "pruned {} finished item(s), dropped the payload values of {} rejected or dead \
                 item(s), deleted {} conflict(s) and {} history row(s)",
                done.items, done.payloads_dropped, done.conflicts, done.history
            );
        }
    }
    Ok(exit::OK)
}

fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

/// Masks the stored values an item shows: its record key and last error (the problem is
/// hubsync's own words and names a worker, `name@host:pid`).
fn mask_stuck(item: &mut StuckItem) {
    fn masked(s: &str) -> String {
        mask::stored(s).into_owned()
    }
    item.record_key = masked(&item.record_key);
    item.last_error = item.last_error.as_deref().map(masked);
}

fn print_report(verb: &str, report: &OpReport) {
    println!("{verb} {} item(s)", report.changed.len());
    for (id, why) in &report.skipped {
        println!("  item {id} left alone: {why}");
    }
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
