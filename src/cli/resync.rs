//! `hubsync resync --object O (--member KEY… | --email E…)`: queue those members' current SQL
//! Server rows for HubSpot now, even when nothing changed since their last sync (a member
//! reported out of step). An email names the member whose record link holds it.

use crate::config::Need;
use crate::exit::{self, Failure};
use crate::queue::{Direction, NewItem, Operation, Seen, enqueue_with};

#[derive(Debug, Clone, clap::Args)]
pub struct ResyncArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// A member's key (`sql_key`); repeat for several.
    #[arg(
        long = "member",
        value_name = "KEY",
        required_unless_present = "emails"
    )]
    pub members: Vec<String>,
    /// A synced member's email (as last synced); repeat for several.
    #[arg(long = "email", value_name = "EMAIL")]
    pub emails: Vec<String>,
}

pub async fn run(config_path: &std::path::Path, args: ResyncArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::All)?;
    crate::telemetry::init_cli();
    crate::app::object(&config, &args.object)?;
    let (queue, engine) = crate::app::engine(&config).await?;
    let Some(object) = engine.objects.iter().find(|o| o.name == args.object) else {
        return Err(Failure::new(
            exit::SOFTWARE,
            format!("object {} has no sync engine", args.object),
        ));
    };
    let mut members = args.members.clone();
    let mut unknown_emails = Vec::new();
    if !args.emails.is_empty() {
        let wanted: Vec<String> = args
            .emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .collect();
        let holders = crate::sync::links::holders_of(queue.pool(), &object.name, "email", &wanted)
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e)))?;
        for email in &wanted {
            match holders.get(email) {
                Some(link) => members.push(link.sql_key.clone()),
                None => unknown_emails.push(crate::telemetry::mask::email(email).into_owned()),
            }
        }
    }
    members.sort();
    members.dedup();
    let reader = &object.poller.reader;
    let rows = reader
        .rows_by_keys(&members)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for key in &members {
        let Some(row) = rows.get(key) else {
            missing.push(key.as_str());
            continue;
        };
        // The row's own version, so a newer change is never replaced by this one.
        let version = reader
            .rowversion_of(row)
            .map(|v| v as i64)
            .or_else(|| reader.modified_utc(row).map(|t| t.timestamp_micros()))
            .unwrap_or(0);
        items.push(NewItem {
            record_key: key.clone(),
            operation: Operation::Upsert,
            payload: serde_json::Value::Object(row.clone()),
            source_version: version,
        });
    }
    let db = |e: sqlx::Error| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e));
    let mut tx = queue.pool().begin().await.map_err(db)?;
    let queued = enqueue_with(
        &mut tx,
        &object.name,
        Direction::ToHubspot,
        &items,
        config.queue.max_attempts,
        Seen::Requeue,
    )
    .await
    .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    tx.commit().await.map_err(db)?;
    println!(
        "queued {queued} of {} member(s) of {} for HubSpot",
        members.len() + unknown_emails.len(),
        object.name
    );
    if !unknown_emails.is_empty() {
        println!("no synced member with email: {}", unknown_emails.join(", "));
    }
    if missing.is_empty() && unknown_emails.is_empty() {
        Ok(exit::OK)
    } else {
        println!("no SQL Server row for: {}", missing.join(", "));
        Ok(exit::REJECTED)
    }
}
