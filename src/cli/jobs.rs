//! `hubsync jobs start|show|list|cancel`: the job API's operations run directly against the
//! queue database (a running service's runner picks a started job up), printing JSON.

use crate::config::Config;
use crate::exit::{self, Failure};
use crate::jobs::store::{self, Cancelled, Created, Requester};
use crate::jobs::{JobKind, list_limit, parse_request};
use crate::queue::Direction;

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Queue a job for the running service (exit 1 while one of the same kind and object is
    /// queued or running).
    Start(StartArgs),
    /// Print one job as JSON (exit 1 if there is none).
    Show {
        /// The job's id.
        id: i64,
    },
    /// Print the newest jobs, newest first, one JSON line each.
    List {
        /// How many, 1–100.
        #[arg(long, default_value_t = crate::jobs::LIST_DEFAULT)]
        limit: u32,
    },
    /// Cancel a queued job, or ask a running one to stop (exit 1 if it had finished).
    Cancel {
        /// The job's id.
        id: i64,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    #[arg(long, value_enum)]
    pub kind: JobKind,
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// backfill only (default to_hubspot).
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// resync: a member's key (`sql_key`); repeat for several.
    #[arg(long = "member", value_name = "KEY")]
    pub members: Vec<String>,
    /// backfill: plan every record and count the planned actions; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(command: JobsCommand, config: &Config) -> Result<u8, Failure> {
    let pool = super::connect(config).await?;
    crate::pg::migrate(&pool)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let db = |e: sqlx::Error| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e));
    match command {
        JobsCommand::Start(args) => {
            let mut body = serde_json::json!({
                "kind": args.kind.as_str(),
                "object": args.object,
                "direction": args.direction.map(Direction::as_str),
                "dry_run": args.dry_run,
            });
            if !args.members.is_empty() {
                body["members"] = serde_json::json!(args.members);
            }
            let objects: Vec<&str> = config.objects.keys().map(String::as_str).collect();
            let request = parse_request(&body, &objects).map_err(|fields| {
                let lines: Vec<String> = fields.iter().map(ToString::to_string).collect();
                Failure::new(exit::DATA_ERR, lines.join("; "))
            })?;
            match store::create(&pool, &request, Requester::Cli)
                .await
                .map_err(db)?
            {
                Created::Job(id) => {
                    print(&serde_json::json!({"job_id": id, "status": "queued"}));
                    Ok(exit::OK)
                }
                Created::Busy(id) => {
                    print(&serde_json::json!({"error": "JOB_ALREADY_RUNNING", "job_id": id}));
                    Ok(exit::REJECTED)
                }
                // Only a schedule's request can find its run already started.
                Created::AlreadyFired => Ok(exit::REJECTED),
            }
        }
        JobsCommand::Show { id } => match store::get(&pool, id).await.map_err(db)? {
            Some(job) => {
                print(&job);
                Ok(exit::OK)
            }
            None => {
                eprintln!("hubsync: no job {id}");
                Ok(exit::REJECTED)
            }
        },
        JobsCommand::List { limit } => {
            let limit = list_limit(Some(&limit.to_string()))
                .map_err(|e| Failure::new(exit::DATA_ERR, format!("--{e}")))?;
            for job in store::list(&pool, limit).await.map_err(db)? {
                print(&job);
            }
            Ok(exit::OK)
        }
        JobsCommand::Cancel { id } => match store::cancel(&pool, id).await.map_err(db)? {
            Cancelled::Done(job) => {
                print(&job);
                Ok(exit::OK)
            }
            Cancelled::Finished(job) => {
                eprintln!(
                    "hubsync: job {id} has already finished ({})",
                    job.status.as_str()
                );
                Ok(exit::REJECTED)
            }
            Cancelled::NotFound => {
                eprintln!("hubsync: no job {id}");
                Ok(exit::REJECTED)
            }
        },
    }
}

/// One JSON line on stdout.
fn print(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}
