//! `hubsync pause` / `hubsync resume`: stop and restart one object's direction for every
//! instance (a SQL Server maintenance window, a bulk fix in HubSpot). Workers claim nothing of a
//! paused direction; pollers keep queueing its changes, so resuming catches up with nothing lost.

use crate::config::Config;
use crate::exit::{self, Failure};
use crate::queue::{Direction, Queue};

#[derive(Debug, Clone, clap::Args)]
pub struct PauseArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// The direction (default: both).
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
}

/// Pauses (`pause`) or resumes the directions `args` names; prints one line for each.
pub async fn run(args: PauseArgs, config: &Config, pause: bool) -> Result<u8, Failure> {
    crate::app::object(config, &args.object)?;
    let pool = super::connect(config).await?;
    crate::pg::migrate(&pool)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let queue = Queue::new(pool, config.queue.clone());
    let db = |e: crate::queue::QueueError| Failure::new(exit::UNAVAILABLE, e.to_string());
    let directions = match args.direction {
        Some(d) => vec![d],
        None => vec![Direction::ToHubspot, Direction::ToSql],
    };
    let by = crate::daemon::instance(config);
    for direction in directions {
        let (object, d) = (&args.object, direction.as_str());
        let line = if pause {
            if queue.pause(object, direction, &by).await.map_err(db)? {
                format!("paused {object} {d}: no worker claims its items until `hubsync resume`")
            } else {
                format!("{object} {d} was already paused")
            }
        } else if queue.resume(object, direction).await.map_err(db)? {
            format!("resumed {object} {d}")
        } else {
            format!("{object} {d} was not paused")
        };
        tracing::info!(
            operation = if pause { "PAUSE" } else { "RESUME" },
            object = %object,
            direction = d,
            by = %by,
            "{line}"
        );
        println!("{line}");
    }
    Ok(exit::OK)
}
