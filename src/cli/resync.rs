//! `hubsync resync --object O (--member KEY… | --email E… | --cedula C…)`: queue those members'
//! current SQL Server rows for HubSpot now, even when nothing changed since their last sync (a
//! member reported out of step). An email or a cédula names the member whose record link holds
//! it (the cédula as the mapping's cédula column sends it to HubSpot).

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
        required_unless_present_any = ["emails", "cedulas"]
    )]
    pub members: Vec<String>,
    /// A synced member's email (as last synced); repeat for several.
    #[arg(long = "email", value_name = "EMAIL")]
    pub emails: Vec<String>,
    /// A synced member's cédula, in any written form (`1-0234-0567`, `102340567`), read as the
    /// mapping's cédula column (the required field with the `cedula_cr` transform); repeat
    /// for several.
    #[arg(long = "cedula", value_name = "CEDULA")]
    pub cedulas: Vec<String>,
}

/// The member's own cédula field of a mapping: the required field with the `cedula_cr`
/// transform, or the only field with it.
pub fn cedula_field(object: &crate::mapping::ObjectConfig) -> Option<&crate::mapping::FieldConfig> {
    let cedula = |f: &&crate::mapping::FieldConfig| {
        f.transform
            .iter()
            .any(|t| t.split(':').next() == Some("cedula_cr"))
    };
    let all: Vec<_> = object.fields.iter().filter(cedula).collect();
    all.iter()
        .find(|f| f.required)
        .or(if all.len() == 1 { all.first() } else { None })
        .copied()
}

/// Each cédula as the mapping sends it to HubSpot (None: not a cédula the mapping accepts).
fn normalized_cedulas(
    object: &crate::mapping::ObjectConfig,
    field: &crate::mapping::FieldConfig,
    cedulas: &[String],
) -> Result<Vec<(String, Option<String>)>, Failure> {
    let mapper = crate::mapping::Mapper::new(object)
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    Ok(cedulas
        .iter()
        .map(|c| {
            let mut row = crate::mapping::SqlRow::new();
            row.insert(field.sql.clone(), serde_json::Value::String(c.clone()));
            let mapped = mapper.to_hubspot(&row);
            let value = mapped.properties.get(&field.hubspot).cloned().flatten();
            (c.clone(), value)
        })
        .collect())
}

pub async fn run(config_path: &std::path::Path, args: ResyncArgs) -> Result<u8, Failure> {
    let (config, queue, engine) = crate::app::engine_for(config_path, &args.object).await?;
    let object = crate::app::object_sync(&engine, &args.object)?;
    let mut members = args.members.clone();
    let mut unknown_emails = Vec::new();
    let mut unknown_cedulas = Vec::new();
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
    if !args.cedulas.is_empty() {
        let settings = crate::app::object(&config, &args.object)?;
        let field = cedula_field(settings).ok_or_else(|| {
            Failure::new(
                exit::CONFIG,
                format!(
                    "--cedula: objects.{} maps no cédula column (a required field with the cedula_cr transform)",
                    args.object
                ),
            )
        })?;
        let wanted = normalized_cedulas(settings, field, &args.cedulas)?;
        let values: Vec<String> = wanted.iter().filter_map(|(_, v)| v.clone()).collect();
        let holders =
            crate::sync::links::holders_of(queue.pool(), &object.name, &field.hubspot, &values)
                .await
                .map_err(|e| Failure::new(exit::UNAVAILABLE, crate::pg::describe(&e)))?;
        for (given, value) in &wanted {
            match value.as_ref().and_then(|v| holders.get(&v.to_lowercase())) {
                Some(link) => members.push(link.sql_key.clone()),
                None => unknown_cedulas.push(crate::telemetry::mask::identity(given).into_owned()),
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
        members.len() + unknown_emails.len() + unknown_cedulas.len(),
        object.name
    );
    if !unknown_emails.is_empty() {
        println!("no synced member with email: {}", unknown_emails.join(", "));
    }
    if !unknown_cedulas.is_empty() {
        println!(
            "no synced member with cédula: {}",
            unknown_cedulas.join(", ")
        );
    }
    if !missing.is_empty() {
        println!("no SQL Server row for: {}", missing.join(", "));
    }
    if missing.is_empty() && unknown_emails.is_empty() && unknown_cedulas.is_empty() {
        Ok(exit::OK)
    } else {
        Ok(exit::REJECTED)
    }
}
