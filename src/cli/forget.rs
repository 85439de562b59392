//! `hubsync forget --object O --member KEY [--hubspot]`: a member asked to be forgotten. hubsync
//! erases every copy of the member's data it holds (queue payloads and errors, unsettled writes,
//! conflicts, the record link and its snapshot, its history) and leaves one ERASE history row;
//! with `--hubspot` it first has HubSpot delete the linked contact for good (GDPR delete, which
//! also blocklists the email). Logs one `ERASE` line with ids and counts only.

use crate::config::Need;
use crate::exit::{self, Failure};

#[derive(Debug, Clone, clap::Args)]
pub struct ForgetArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// The member's key (`sql_key`).
    #[arg(long = "member", value_name = "KEY")]
    pub member: String,
    /// Also delete the linked HubSpot contact permanently (HubSpot's GDPR delete).
    #[arg(long)]
    pub hubspot: bool,
}

pub async fn run(config_path: &std::path::Path, args: ForgetArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::All)?;
    crate::telemetry::init_cli();
    let object = crate::app::object(&config, &args.object)?;
    let (queue, engine) = crate::app::engine(&config).await?;
    let pool = queue.pool();
    let db = |e: sqlx::Error| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e));
    let linked = crate::sync::forget::linked_id(pool, &args.object, &args.member)
        .await
        .map_err(db)?;
    // HubSpot first: should it fail, hubsync still holds the link to try again with.
    let erased_in_hubspot = match (&linked, args.hubspot) {
        (Some(id), true) => {
            engine
                .hubspot
                .gdpr_delete(&object.hubspot_object, id)
                .await
                .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
            true
        }
        _ => false,
    };
    let cause = crate::sync::forget::Cause {
        message: match erased_in_hubspot {
            true => "hubsync forget: HubSpot contact deleted for good (GDPR)".into(),
            false => "hubsync forget".into(),
        },
        ..Default::default()
    };
    let gone = crate::sync::forget::forget(pool, &args.object, &args.member, &cause)
        .await
        .map_err(db)?;
    tracing::info!(
        operation = "ERASE",
        object = %args.object,
        record_key = %args.member,
        hubspot_id = gone.hubspot_id.as_deref().unwrap_or(""),
        hubspot_deleted = erased_in_hubspot,
        queue_items = gone.queue_items,
        writes = gone.writes,
        conflicts = gone.conflicts,
        links = gone.links,
        history = gone.history,
        "member erased from hubsync's tables"
    );
    println!(
        "forgot member {} of {}: {} queue item(s), {} unsettled write(s), {} conflict(s), {} link(s), {} history row(s) erased{}",
        args.member,
        args.object,
        gone.queue_items,
        gone.writes,
        gone.conflicts,
        gone.links,
        gone.history,
        match (&gone.hubspot_id, erased_in_hubspot, args.hubspot) {
            (Some(id), true, _) => format!("; HubSpot contact {id} deleted for good (GDPR)"),
            (None, _, true) => "; no linked HubSpot contact to delete".to_owned(),
            _ => String::new(),
        }
    );
    Ok(exit::OK)
}
