//! `hubsync resync --object O (--member KEY… | --email E…)`: queue those members' current SQL
//! Server rows for HubSpot now, even when nothing changed since their last sync (a member
//! reported out of step). An email names the member whose record link holds it.

use crate::config::Need;
use crate::exit::{self, Failure};

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
    let done = crate::sync::resync::queue_members(
        object,
        queue.pool(),
        &members,
        config.queue.max_attempts,
    )
    .await
    .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("{e:#}")))?;
    let (queued, missing) = (done.queued, done.missing);
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
