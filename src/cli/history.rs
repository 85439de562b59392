//! `hubsync history --object O (--member KEY | --email E | --hubspot-id N) [--json]`: one
//! member's timeline from `sync_history`, oldest first, as a table or JSON, masked like the
//! logs unless `--unmask`.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::config::Need;
use crate::exit::{self, Failure};
use crate::sync::history::{self, Event};
use crate::telemetry::mask;

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["member", "email", "hubspot_id"])))]
pub struct HistoryArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// The member's key (`sql_key`).
    #[arg(long, value_name = "KEY")]
    pub member: Option<String>,
    /// A synced member's email (as its record link holds it; any case).
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// A HubSpot id the member has or had (a contact merged away included).
    #[arg(long, value_name = "ID")]
    pub hubspot_id: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the member key and messages as stored (personal data is masked otherwise).
    #[arg(long)]
    pub unmask: bool,
}

pub async fn run(config_path: &std::path::Path, args: HistoryArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::Postgres)?;
    crate::telemetry::init_cli();
    crate::app::object(&config, &args.object)?;
    let pool = crate::app::connect(&config).await?;
    crate::pg::migrate(&pool)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let db = |e: sqlx::Error| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e));
    let object = args.object.as_str();
    let member = match (&args.member, &args.email, &args.hubspot_id) {
        (Some(key), _, _) => Some(key.clone()),
        (_, Some(email), _) => {
            let wanted = [email.trim().to_lowercase()];
            let holders = crate::sync::links::holders_of(&pool, object, "email", &wanted)
                .await
                .map_err(db)?;
            match holders.get(&wanted[0]) {
                Some(link) => Some(link.sql_key.clone()),
                None => {
                    println!(
                        "no synced member of {object} with email: {}",
                        mask::email(&wanted[0])
                    );
                    return Ok(exit::REJECTED);
                }
            }
        }
        (_, _, Some(id)) => history::member_of_hubspot_id(&pool, object, id)
            .await
            .map_err(db)?,
        _ => None,
    };
    let ids: Vec<String> = match (&member, &args.hubspot_id) {
        (Some(key), _) => {
            let mut conn = pool.acquire().await.map_err(db)?;
            history::ids_of(&mut conn, object, key).await.map_err(db)?
        }
        (None, Some(id)) => vec![id.clone()],
        (None, None) => Vec::new(),
    };
    let mut events = history::timeline(&pool, object, member.as_deref(), &ids)
        .await
        .map_err(db)?;
    if !args.unmask {
        events = events.into_iter().map(Event::masked).collect();
    }
    let shown = |key: &str| match args.unmask {
        true => key.to_string(),
        false => mask::stored(key).into_owned(),
    };
    let who = match (&member, &args.hubspot_id) {
        (Some(key), _) => format!("member {}", shown(key)),
        (None, Some(id)) => format!("HubSpot record {id}"),
        (None, None) => "member".to_string(),
    };
    if args.json {
        let out = serde_json::json!({
            "object": object,
            "member": member.as_deref().map(shown),
            "hubspot_ids": ids,
            "events": events,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if events.is_empty() {
        println!("no history for {who} of {object}");
    } else {
        println!("{who} of {object}: {} event(s)", events.len());
        println!("{}", table(&events));
    }
    Ok(match events.is_empty() {
        true => exit::REJECTED,
        false => exit::OK,
    })
}

/// The timeline as a table: one row per event.
fn table(events: &[Event]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "time (UTC)",
        "direction",
        "operation",
        "hubspot id",
        "batch",
        "details",
    ]);
    for e in events {
        let entry = &e.entry;
        t.add_row(vec![
            e.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            entry.direction.map_or("-", |d| d.as_str()).to_string(),
            entry.operation.clone(),
            entry.hubspot_id.clone().unwrap_or_default(),
            entry.batch_id.clone().unwrap_or_default(),
            e.details(),
        ]);
    }
    t
}
