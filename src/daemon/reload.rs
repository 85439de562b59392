//! SIGHUP: re-reads `config.yaml`, checks it (structure, mappings, the HubSpot property
//! preflight) and builds its sync engine, reading HubSpot's daily usage into the budget; only a
//! configuration that passes every check replaces the running one. Every problem of a refused
//! one is logged.

use std::path::Path;
use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::{Config, Need};
use crate::hubspot::portal::{PortalRules, PortalUse};
use crate::hubspot::{HubSpotClient, HubSpotSettings, Limiter, PropertyUse};
use crate::mapping::ObjectConfig;
use crate::queue::Queue;
use crate::sync::engine::Engine;

/// How hubsync uses each HubSpot property of one object's mapping: every mapped property and
/// the match property are read; the ones flowing to HubSpot are written, with the enumeration
/// values the mapping may write.
pub fn property_uses(object: &ObjectConfig) -> Vec<PropertyUse> {
    let mut uses: Vec<PropertyUse> = Vec::new();
    for field in &object.fields {
        let mut u = if field.direction.to_hubspot() {
            PropertyUse::written(&field.hubspot)
        } else {
            PropertyUse::read(&field.hubspot)
        };
        if field.direction.to_hubspot() {
            let values = field
                .transform
                .iter()
                .filter_map(|t| t.strip_prefix("enum:"))
                .filter_map(|name| object.enums.get(name.trim()))
                .flatten()
                .map(|v| v.hubspot.clone());
            u = u.with_values(values);
        }
        uses.push(u);
    }
    if !uses.iter().any(|u| u.name == object.match_property) {
        uses.push(PropertyUse::read(&object.match_property));
    }
    uses
}

/// How one object's mapping writes each property, for comparing with the portal's rules.
pub fn portal_uses(object: &ObjectConfig) -> Vec<PortalUse> {
    object
        .fields
        .iter()
        .filter(|f| f.direction.to_hubspot())
        .map(|f| PortalUse {
            property: f.hubspot.clone(),
            field: f.sql.clone(),
            max_length: f
                .rules
                .iter()
                .filter_map(|r| r.trim().strip_prefix("max_length:"))
                .filter_map(|n| n.trim().parse().ok())
                .min(),
            international_phone: f.transform.iter().any(|t| t.trim().starts_with("phone_cr")),
            required: f.required,
        })
        .collect()
}

/// Where each object's mapping clashes with the portal's write rules (its published property
/// validation rules and the declared `portal_required`), one line per property and rule, as
/// `objects.<name>: …`. None of them stops the service: records that break a rule are
/// rejected before sending.
pub async fn portal_clashes(client: &HubSpotClient, config: &Config) -> Vec<String> {
    let limit = config.hubspot.timeout.max(super::tasks::PROBE_TIMEOUT);
    let mut lines = Vec::new();
    for (name, object) in &config.objects {
        let published = match tokio::time::timeout(
            limit,
            client.validation_rules(&object.hubspot_object),
        )
        .await
        {
            Ok(Ok(published)) => published.as_ref().clone(),
            Ok(Err(e)) => {
                lines.push(format!("objects.{name}: cannot read the portal's property validation rules ({e}); only portal_required is checked before sending"));
                Vec::new()
            }
            Err(_) => {
                lines.push(format!("objects.{name}: HubSpot did not answer the property validation rules within {} s", limit.as_secs()));
                Vec::new()
            }
        };
        let rules = PortalRules::new(published, object.portal_required.clone());
        lines.extend(
            rules
                .clashes(&portal_uses(object))
                .into_iter()
                .map(|c| format!("objects.{name}: {c}")),
        );
    }
    lines
}

/// At start and on reload: reads HubSpot's daily API usage into the budget (a failure is a
/// warning, never a problem), then checks every object's property uses.
pub async fn check_hubspot(engine: &Engine, config: &Config) -> Vec<String> {
    engine.hubspot.refresh_daily_budget().await;
    check_properties(&engine.hubspot, config).await
}

/// Checks every object's property uses against HubSpot's definitions; each problem as
/// `objects.<name>: …`. HubSpot not answering is a problem too: an unverified mapping is not
/// applied.
pub async fn check_properties(client: &HubSpotClient, config: &Config) -> Vec<String> {
    let limit = config.hubspot.timeout.max(super::tasks::PROBE_TIMEOUT);
    let mut problems = Vec::new();
    for (name, object) in &config.objects {
        let uses = property_uses(object);
        let check = client.preflight(&object.hubspot_object, &uses);
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(found)) => {
                problems.extend(found.iter().map(|p| format!("objects.{name}: {p}")));
            }
            Ok(Err(e)) => {
                problems.push(format!(
                    "objects.{name}: cannot read HubSpot's {} properties: {e}",
                    object.hubspot_object
                ));
            }
            Err(_) => problems.push(format!(
                "objects.{name}: HubSpot did not answer the property check within {} s",
                limit.as_secs()
            )),
        }
    }
    problems
}

/// Settings a reload cannot change in a running process (they need a restart), by key.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.service.http_listen != new.service.http_listen {
        keys.push("service.http_listen");
    }
    if old.service.instance != new.service.instance {
        keys.push("service.instance");
    }
    let token = |c: &Config| {
        c.service
            .api_token
            .as_ref()
            .map(|t| t.expose_secret().to_string())
    };
    if token(old) != token(new) {
        keys.push("service.api_token");
    }
    let url = |c: &Config| {
        c.postgres
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_string())
    };
    if url(old) != url(new)
        || old.postgres.max_connections != new.postgres.max_connections
        || old.postgres.connect_timeout != new.postgres.connect_timeout
    {
        keys.push("postgres");
    }
    let (a, b) = (&old.logging, &new.logging);
    if a.level != b.level
        || a.stdout != b.stdout
        || a.directory != b.directory
        || a.retention_days != b.retention_days
        || a.mask_personal_data != b.mask_personal_data
    {
        keys.push("logging");
    }
    let (a, b) = (&old.queue, &new.queue);
    if a.lease != b.lease
        || a.retention != b.retention
        || a.rejected_payload_retention != b.rejected_payload_retention
        || a.conflict_retention != b.conflict_retention
        || a.prune_batch != b.prune_batch
    {
        keys.push("queue.lease/retention/prune_batch");
    }
    keys
}

/// Whether two HubSpot settings allow the same request rates (so the limiter, and its record
/// of the current window, can be kept).
pub fn same_rate_limits(a: &HubSpotSettings, b: &HubSpotSettings) -> bool {
    a.requests_per_10s == b.requests_per_10s
        && a.search_per_second == b.search_per_second
        && a.daily_limit == b.daily_limit
        && a.daily_reserve == b.daily_reserve
}

/// Reads and checks the configuration at `path` and builds its engine (sharing `running`'s
/// limiter when the rate limits are unchanged). `Err` carries every problem found.
pub async fn prepare(
    path: &Path,
    running: &Config,
    limiter: &Arc<Limiter>,
    queue: &Queue,
) -> Result<(Config, Engine), Vec<String>> {
    let config = crate::config::load_file(path, Need::All).map_err(|e| {
        let mut problems: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        if problems.is_empty() {
            problems.push(e.to_string());
        }
        problems
    })?;
    let limiter = if same_rate_limits(&running.hubspot, &config.hubspot) {
        limiter.clone()
    } else {
        let fresh = Arc::new(Limiter::from_settings(&config.hubspot));
        // The instance stays in the shared budget (its new limits apply once the reload passes).
        if let Some(shared) = limiter.shared() {
            fresh.share_through(shared.clone());
        }
        fresh
    };
    let queue = Queue::new(queue.pool().clone(), config.queue.clone());
    let engine = crate::sync::engine::build_with(&config, &queue, limiter)
        .map_err(|e| vec![format!("{e:#}")])?;
    let problems = check_hubspot(&engine, &config).await;
    if !problems.is_empty() {
        return Err(problems);
    }
    for clash in portal_clashes(&engine.hubspot, &config).await {
        tracing::warn!(operation = "RELOAD", %clash, "portal write rule");
    }
    if let Some(shared) = engine.hubspot.limiter().shared() {
        shared.set_limits(&config.hubspot);
    }
    Ok((config, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        let text = include_str!("../../config.yaml");
        crate::config::load_str(text, Need::All, &|name| match name {
            "HUBSYNC_DATABASE_URL" => Some("postgres://h@localhost/q".into()),
            "HUBSYNC_HUBSPOT_TOKEN" => Some("t".into()),
            "HUBSYNC_SQL_SERVER" => Some("server=tcp:db,1433;user=u;password=p".into()),
            _ => None,
        })
        .expect("the example config loads")
    }

    #[test]
    fn property_uses_follow_the_mapping() {
        let config = example();
        let uses = property_uses(&config.objects["contacts"]);
        assert_eq!(uses.len(), 31, "{uses:?}");
        let marital = uses.iter().find(|u| u.name == "marital_status").unwrap();
        assert!(marital.written);
        assert_eq!(
            marital.enum_values,
            ["Soltero", "Casado", "Divorciado", "Viudo", "Unión Libre"]
        );
        let email = uses.iter().find(|u| u.name == "email").unwrap();
        assert!(email.written && email.enum_values.is_empty());
    }

    #[test]
    fn a_read_only_field_and_the_match_property_are_read() {
        let mut config = example();
        let object = config.objects.get_mut("contacts").unwrap();
        object.fields[0].direction = crate::mapping::Direction::ToSql;
        object.match_property = "hs_object_id".into();
        let uses = property_uses(object);
        assert_eq!(uses[0], PropertyUse::read("numero_asociado"));
        assert_eq!(uses.last(), Some(&PropertyUse::read("hs_object_id")));
    }

    #[test]
    fn names_the_settings_that_need_a_restart() {
        let old = example();
        let mut new = example();
        assert!(needs_restart(&old, &new).is_empty());
        new.service.http_listen = "127.0.0.1:1".parse().unwrap();
        new.logging.level = "debug".into();
        new.queue.workers += 1;
        assert_eq!(
            needs_restart(&old, &new),
            ["service.http_listen", "logging"]
        );
        assert!(same_rate_limits(&old.hubspot, &new.hubspot));
        new.hubspot.requests_per_10s = 190;
        assert!(!same_rate_limits(&old.hubspot, &new.hubspot));
    }
}
