//! SQL Server changes to HubSpot end to end: queue → map and validate → diff → HubSpot batch
//! calls on the simulator → record links, with real PostgreSQL. The key tests run on API version
//! `2026-09` (the default) and on the legacy `v3`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hubsync::config::{Need, load_str};
use hubsync::hubspot::{ApiVersion, HubSpotClient, HubSpotSettings, Limiter};
use hubsync::mapping::{Mapper, ObjectConfig, SqlRow};
use hubsync::mssql::{ChangeReader, SqlWriter};
use hubsync::queue::{Direction, NewItem, Operation, Queue};
use hubsync::sim::hubspot::{RunningSim, SimOptions};
use hubsync::sync::erasure::ErasurePolicy;
use hubsync::sync::to_hubspot::{PortalCache, ToHubspot};
use hubsync::sync::worker::Worker;
use sqlx::Row;

use crate::support::{HOSTILE, example_config, fresh_db};

pub struct Stand {
    pub sim: RunningSim,
    pub queue: Queue,
    pub worker: Worker<ToHubspot>,
    pub mapper: Arc<Mapper>,
    /// The test database's URL (for running the binary against it).
    pub url: String,
}

pub async fn stand() -> Stand {
    stand_with(SimOptions::lagging(), &contacts_config(), None).await
}

/// The `contacts` object of the repository's example configuration.
pub fn contacts_config() -> ObjectConfig {
    let text = std::fs::read_to_string(example_config()).unwrap();
    let mut config = load_str(&text, Need::Nothing, &|_| None).unwrap();
    config.objects.remove("contacts").unwrap()
}

/// A stand whose HubSpot simulator starts with `options` (its tier raised so tests never wait),
/// syncing `object`, with SQL Server's modification times from `sql_reader` when given.
pub async fn stand_with(
    options: SimOptions,
    object: &ObjectConfig,
    sql_reader: Option<Arc<ChangeReader>>,
) -> Stand {
    stand_on(ApiVersion::default(), options, object, sql_reader).await
}

/// The API versions the key tests run on: the default and the legacy one a portal may still use.
const VERSIONS: [ApiVersion; 2] = [ApiVersion::V2026_09, ApiVersion::V3];

/// [`stand_with`] speaking HubSpot API `version`.
pub async fn stand_on(
    version: ApiVersion,
    options: SimOptions,
    object: &ObjectConfig,
    sql_reader: Option<Arc<ChangeReader>>,
) -> Stand {
    let (pool, url) = fresh_db().await;
    let sim = hubsync::sim::hubspot::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            tier: 5000,
            ..options
        },
    )
    .await
    .unwrap();
    let mapper = Arc::new(Mapper::new(object).unwrap());
    let queue = Queue::new(pool, Default::default());
    let client = client_at(&sim.base_url(), version);
    let worker = worker_with(&queue, &mapper, object, client, sql_reader, None);
    Stand {
        sim,
        queue,
        worker,
        mapper,
        url,
    }
}

/// A HubSpot client speaking API `version` to the simulator (or a stand-in for it) at
/// `base_url`, its limit raised so tests never wait.
pub fn client_at(base_url: &str, version: ApiVersion) -> Arc<HubSpotClient> {
    let settings = HubSpotSettings {
        base_url: base_url.parse().unwrap(),
        token: Some("sim-token".to_string().into()),
        requests_per_10s: 5000,
        api_version: version,
        ..HubSpotSettings::default()
    };
    Arc::new(HubSpotClient::new(&settings, Arc::new(Limiter::from_settings(&settings))).unwrap())
}

/// A to_hubspot worker on `queue` syncing `object` through `client`, applying its erasure
/// policy through `sql_writer` when given.
pub fn worker_with(
    queue: &Queue,
    mapper: &Arc<Mapper>,
    object: &ObjectConfig,
    client: Arc<HubSpotClient>,
    sql_reader: Option<Arc<ChangeReader>>,
    sql_writer: Option<Arc<SqlWriter>>,
) -> Worker<ToHubspot> {
    Worker {
        queue: queue.clone(),
        name: "w1".into(),
        object: "contacts".into(),
        direction: Direction::ToHubspot,
        handler: Arc::new(ToHubspot {
            object: "contacts".into(),
            hubspot_object: "contacts".into(),
            mapper: mapper.clone(),
            client,
            pool: queue.pool().clone(),
            sql_reader,
            lookup: Default::default(),
            portal: PortalCache::new(object.portal_required.clone()),
            erasure: ErasurePolicy::new(object),
            sql_writer,
        }),
    }
}

impl Stand {
    /// HubSpot contacts whose first name is `name`.
    pub fn with_firstname(&self, name: &str) -> usize {
        let name = Some(name);
        let contacts = self.sim.contacts();
        let named = contacts
            .iter()
            .filter(|c| c.properties.get("firstname").map(String::as_str) == name);
        named.count()
    }
}

pub fn rows(n: u64) -> Vec<SqlRow> {
    crate::support::members(0..n, 11)
}

pub(crate) async fn enqueue(queue: &Queue, rows: &[SqlRow], version: i64) {
    let items: Vec<NewItem> = rows
        .iter()
        .map(|r| NewItem {
            record_key: r["numero_asociado"].to_string(),
            operation: Operation::Upsert,
            payload: serde_json::Value::Object(r.clone()),
            source_version: version,
        })
        .collect();
    queue
        .enqueue("contacts", Direction::ToHubspot, &items)
        .await
        .unwrap();
}

#[tokio::test]
async fn members_reach_hubspot_once_linked_and_only_changes_are_resent() {
    for version in VERSIONS {
        let s = stand_on(version, SimOptions::lagging(), &contacts_config(), None).await;
        let members = rows(500);
        // 30 valid members already exist in HubSpot, their email in capitals.
        let existing: Vec<BTreeMap<String, Option<String>>> = members
            .iter()
            .filter(|r| r["email"].as_str().unwrap().contains('@'))
            .take(30)
            .map(|r| {
                BTreeMap::from([
                    (
                        "email".to_string(),
                        Some(r["email"].as_str().unwrap().to_uppercase()),
                    ),
                    ("firstname".to_string(), Some("Old name".to_string())),
                ])
            })
            .collect();
        s.sim.seed_contacts(&existing).unwrap();

        enqueue(&s.queue, &members, 1).await;
        let settled = s.worker.drain().await.unwrap();

        let valid: Vec<&SqlRow> = members
            .iter()
            .filter(|r| s.mapper.to_hubspot(r).is_valid())
            .collect();
        assert!(valid.len() > 400 && valid.len() < 500, "{}", valid.len());
        assert_eq!(settled.done as usize, valid.len());
        assert_eq!(settled.rejected as usize, 500 - valid.len());
        let contacts = s.sim.contacts();
        assert_eq!(
            contacts.len(),
            valid.len(),
            "no duplicates, nothing missing"
        );
        for row in &valid {
            let mapped = s.mapper.to_hubspot(row);
            let email = mapped.properties["email"].clone().unwrap();
            let contact = s
                .sim
                .contact_by_email(&email)
                .unwrap_or_else(|| panic!("{email} missing"));
            for (prop, value) in &mapped.properties {
                let got = contact.properties.get(prop).filter(|v| !v.is_empty());
                assert_eq!(got, value.as_ref(), "{email}: {prop}");
            }
        }
        let rejected = sqlx::query("SELECT errors FROM sync_queue WHERE state = 'rejected'")
            .fetch_all(s.queue.pool())
            .await
            .unwrap();
        for row in rejected {
            let errors: serde_json::Value = row.get("errors");
            assert!(errors.to_string().contains("email"), "{errors}");
        }
        let links: i64 =
            sqlx::query_scalar("SELECT count(*) FROM record_links WHERE hubspot_id IS NOT NULL")
                .fetch_one(s.queue.pool())
                .await
                .unwrap();
        assert_eq!(links as usize, valid.len());

        // 20 rows change version; only 10 really changed. One update call, 10 records in it.
        let before = s
            .sim
            .stats()
            .requests_by_endpoint
            .get("batch/update")
            .copied()
            .unwrap_or(0);
        let mut again: Vec<SqlRow> = valid.iter().take(20).map(|r| (*r).clone()).collect();
        for row in again.iter_mut().take(10) {
            row.insert("firstname".into(), "Renombrada".into());
        }
        enqueue(&s.queue, &again, 2).await;
        let settled = s.worker.drain().await.unwrap();
        assert_eq!(settled.done, 20);
        let after = s
            .sim
            .stats()
            .requests_by_endpoint
            .get("batch/update")
            .copied()
            .unwrap_or(0);
        assert_eq!(after - before, 1);
        let outcomes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM sync_queue WHERE source_version = 2 GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(s.queue.pool())
    .await
    .unwrap();
        assert_eq!(
            outcomes,
            [("SKIP".to_string(), 10), ("UPDATE".to_string(), 10)]
        );
        let renamed = s.with_firstname("Renombrada");
        assert_eq!(renamed, 10);
    }
}

/// [`contacts_config`] reading and writing `target`'s contact table.
pub fn contacts_config_on(target: &crate::sql_target::SqlTarget) -> ObjectConfig {
    ObjectConfig {
        sql_table: target.table(),
        ..contacts_config()
    }
}

#[tokio::test]
async fn sql_server_members_flow_to_hubspot_through_the_poller_and_only_changes_follow() {
    let s = stand().await;
    let mssql = crate::sql_target::SqlTarget::start().await;
    let mut members = rows(5000);
    // 300 valid members already exist in HubSpot under another name; SQL Server spells their
    // email in capitals, HubSpot in lower case.
    let mut emails: HashMap<String, usize> = HashMap::new();
    for r in &members {
        *emails
            .entry(r["email"].to_string().to_lowercase())
            .or_default() += 1;
    }
    let existing: Vec<usize> = (0..members.len())
        .filter(|&i| {
            s.mapper.to_hubspot(&members[i]).is_valid()
                && emails[&members[i]["email"].to_string().to_lowercase()] == 1
        })
        .step_by(10)
        .take(300)
        .collect();
    assert_eq!(existing.len(), 300);
    let mut seeded: Vec<BTreeMap<String, Option<String>>> = Vec::new();
    for &i in &existing {
        let email = members[i]["email"].as_str().unwrap().to_string();
        members[i].insert("email".into(), email.to_uppercase().into());
        seeded.push(BTreeMap::from([
            ("email".to_string(), Some(email.to_lowercase())),
            ("firstname".to_string(), Some("Nombre Viejo".to_string())),
        ]));
    }
    let seeded_ids = s.sim.seed_contacts(&seeded).unwrap();
    mssql.insert_rows(&members).await;

    let sql_settings = hubsync::mssql::SqlServerSettings {
        connection: Some(mssql.connection_string().into()),
        ..Default::default()
    };
    let object = hubsync::sync::poller::sql_object_settings(&contacts_config_on(&mssql))
        .validate()
        .unwrap();
    let sql_pool = hubsync::mssql::SqlPool::new(&sql_settings).unwrap();
    let poller = hubsync::sync::poller::SqlPoller {
        object: "contacts".into(),
        reader: hubsync::mssql::ChangeReader::new(sql_pool, object),
        pool: s.queue.pool().clone(),
        max_attempts: 10,
    };

    let polled = poller.poll_once().await.unwrap();
    assert!(polled.elected);
    assert_eq!((polled.rows_read, polled.items_enqueued), (5000, 5000));
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.done + settled.rejected, 5000);
    assert!(
        settled.rejected > 0 && settled.rejected < 500,
        "{settled:?}"
    );

    // HubSpot holds exactly the valid members, with the mapped values of the rows as read: the
    // 300 that existed are linked to their contact and updated, never duplicated.
    let done = sqlx::query("SELECT payload FROM sync_queue WHERE state = 'done'")
        .fetch_all(s.queue.pool())
        .await
        .unwrap();
    assert_eq!(done.len() as u64, settled.done);
    assert_eq!(s.sim.contacts().len() as u64, 5000 - settled.rejected);
    let links: HashMap<String, String> =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links")
            .fetch_all(s.queue.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (&i, id) in existing.iter().zip(&seeded_ids) {
        let key = members[i]["numero_asociado"].to_string();
        assert_eq!(
            links.get(&key),
            Some(id),
            "member {key} linked to its contact"
        );
        let contact = s.sim.contact(id).unwrap();
        assert_eq!(
            contact.get("firstname"),
            members[i]["firstname"].as_str().map(str::trim),
            "member {key} updated"
        );
    }
    let updated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue WHERE outcome = 'UPDATE' AND record_key = ANY($1)",
    )
    .bind(
        existing
            .iter()
            .map(|&i| members[i]["numero_asociado"].to_string())
            .collect::<Vec<_>>(),
    )
    .fetch_one(s.queue.pool())
    .await
    .unwrap();
    assert_eq!(updated, 300);
    for row in &done {
        let payload: serde_json::Value = row.get("payload");
        let mapped = s.mapper.to_hubspot(payload.as_object().unwrap());
        let email = mapped.properties["email"].clone().unwrap();
        let contact = s.sim.contact_by_email(&email).unwrap();
        for (prop, value) in &mapped.properties {
            assert_eq!(
                contact.properties.get(prop).filter(|v| !v.is_empty()),
                value.as_ref(),
                "{email} {prop}"
            );
        }
    }

    // 50 rows change in SQL Server: only those 50 are read, sent, and only their changed property.
    let keys: Vec<String> = done
        .iter()
        .take(50)
        .map(|r| r.get::<serde_json::Value, _>("payload")["numero_asociado"].to_string())
        .collect();
    // Meanwhile a HubSpot user edits another field of theirs: an update that sent every mapped
    // property would overwrite it.
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT hubspot_id FROM record_links WHERE sql_key = ANY($1)")
            .bind(&keys)
            .fetch_all(s.queue.pool())
            .await
            .unwrap();
    let edits: Vec<hubsync::hubspot::types::UpdateInput> = ids
        .iter()
        .map(|id| hubsync::hubspot::types::UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("lastname".to_string(), Some("Editado".to_string()))]),
        })
        .collect();
    s.worker
        .handler
        .client
        .batch_update("contacts", &edits)
        .await
        .unwrap();
    mssql
        .execute_batch(&format!(
            "UPDATE {} SET [firstname] = N'Nuevo Nombre' WHERE [numero_asociado] IN ({})",
            mssql.quoted(),
            keys.join(", ")
        ))
        .await
        .unwrap();
    let writes = |s: &Stand| crate::support::hubspot_writes(&s.sim);
    let before = writes(&s);
    let polled = poller.poll_once().await.unwrap();
    assert_eq!((polled.rows_read, polled.items_enqueued), (50, 50));
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.done, 50);
    assert_eq!(writes(&s) - before, 1, "one batch update of 50");
    let renamed = s.with_firstname("Nuevo Nombre");
    assert_eq!(renamed, 50);
    for id in &ids {
        let contact = s.sim.contact(id).unwrap();
        assert_eq!(contact.properties["firstname"], "Nuevo Nombre");
        assert_eq!(
            contact.properties["lastname"], "Editado",
            "only firstname was sent"
        );
    }

    // Nothing changed: the next cycle reads nothing and writes nothing.
    let polled = poller.poll_once().await.unwrap();
    assert_eq!((polled.rows_read, polled.items_enqueued), (0, 0));
    assert_eq!(s.worker.drain().await.unwrap().done, 0);
    assert_eq!(writes(&s) - before, 1);
}

#[tokio::test]
async fn unlinked_records_are_upserted_by_email_and_an_existing_contact_is_linked_never_duplicated()
{
    let s = stand().await;
    let members = rows(600);
    let (first, rest) = members.split_at(500);
    let lookups = |s: &Stand| {
        s.sim
            .stats()
            .requests_by_endpoint
            .get("batch/read")
            .copied()
            .unwrap_or(0)
    };
    let upserts = |s: &Stand| s.sim.stats().requests_by_endpoint["batch/upsert"];
    // An empty HubSpot: one upsert per 100 valid records, no look-ups, no creates.
    enqueue(&s.queue, first, 1).await;
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.done + settled.rejected, 500);
    assert_eq!(lookups(&s), 0, "no look-ups");
    let valid = first
        .iter()
        .filter(|r| s.mapper.to_hubspot(r).is_valid())
        .count() as u64;
    assert_eq!(upserts(&s), valid.div_ceil(100), "one upsert per 100");
    assert!(
        !s.sim
            .stats()
            .requests_by_endpoint
            .contains_key("batch/create")
    );

    // A HubSpot user creates one of the next members by hand meanwhile (email in capitals).
    let target = rest
        .iter()
        .find(|r| s.mapper.to_hubspot(r).is_valid())
        .unwrap();
    let mut props = s.mapper.to_hubspot(target).properties;
    let email = props["email"].clone().unwrap();
    props.insert("email".into(), Some(email.to_uppercase()));
    props.insert("firstname".into(), Some("A Mano".into()));
    let ids = s.sim.seed_contacts(&[props]).unwrap();
    enqueue(&s.queue, rest, 1).await;
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.done + settled.rejected, 100);
    // The upsert met the existing contact: linked and updated, never duplicated.
    let matching = s
        .sim
        .contacts()
        .iter()
        .filter(|c| c.properties.get("email") == Some(&email))
        .count();
    assert_eq!(matching, 1);
    let outcome: (String, Option<String>, serde_json::Value) =
        sqlx::query_as("SELECT state, outcome, errors FROM sync_queue WHERE record_key = $1")
            .bind(target["numero_asociado"].to_string())
            .fetch_one(s.queue.pool())
            .await
            .unwrap();
    assert_eq!(
        (outcome.0.as_str(), outcome.1.as_deref()),
        ("done", Some("UPDATE")),
        "{outcome:?}"
    );
    let linked: String = sqlx::query_scalar(
        "SELECT hubspot_id FROM record_links WHERE object = 'contacts' AND sql_key = $1",
    )
    .bind(target["numero_asociado"].to_string())
    .fetch_one(s.queue.pool())
    .await
    .unwrap();
    assert_eq!(linked, ids[0]);
    let contact = s.sim.contact(&ids[0]).unwrap();
    assert_eq!(
        Some(&contact.properties["firstname"]),
        s.mapper.to_hubspot(target).properties["firstname"].as_ref()
    );
    assert_eq!(lookups(&s), 0, "still no look-ups");
}

#[tokio::test]
async fn hubspot_refusing_3_records_of_a_batch_of_100_rejects_those_3_with_its_message_once() {
    for version in VERSIONS {
        // This HubSpot account has no "Viudo" option for marital_status; our mapping does.
        let mut properties = hubsync::sim::hubspot::default_properties();
        for p in properties.iter_mut().filter(|p| p.name == "marital_status") {
            p.options.retain(|o| o.value != "Viudo");
        }
        let options = SimOptions {
            properties,
            ..SimOptions::lagging()
        };
        let s = stand_on(version, options.clone(), &contacts_config(), None).await;
        let mut members: Vec<SqlRow> = rows(300)
            .into_iter()
            .filter(|r| s.mapper.to_hubspot(r).is_valid())
            .take(100)
            .collect();
        assert_eq!(members.len(), 100);
        for (i, row) in members.iter_mut().enumerate() {
            let code = if i % 33 == 5 { 4 } else { 1 };
            row.insert("marital_status".into(), code.into());
        }
        let widowed: Vec<String> = members
            .iter()
            .filter(|r| r["marital_status"] == 4)
            .map(|r| r["numero_asociado"].to_string())
            .collect();
        assert_eq!(widowed.len(), 3);

        enqueue(&s.queue, &members, 1).await;
        let settled = s.worker.drain().await.unwrap();
        assert_eq!((settled.done, settled.rejected), (97, 3), "{settled:?}");
        assert_eq!(settled.retried, 0);
        assert_eq!(s.sim.contacts().len(), 97);
        let upserts = s.sim.stats().requests_by_endpoint["batch/upsert"];
        assert_eq!(
            upserts, 1,
            "one call: HubSpot answered with the errors in its body"
        );

        let rejected: Vec<(String, serde_json::Value, i32)> = sqlx::query_as(
        "SELECT record_key, errors, attempts FROM sync_queue WHERE state = 'rejected' ORDER BY id",
    )
    .fetch_all(s.queue.pool())
    .await
    .unwrap();
        let mut keys: Vec<String> = rejected.iter().map(|r| r.0.clone()).collect();
        keys.sort();
        let mut widowed = widowed;
        widowed.sort();
        assert_eq!(keys, widowed);
        for (key, errors, attempts) in &rejected {
            assert_eq!(*attempts, 0, "{key}: no failed attempt, no retry");
            let error = &errors[0];
            assert_eq!(error["kind"], "hubspot", "{errors}");
            assert_eq!(error["field"], "marital_status", "{errors}");
            // API version 2026-09 (the default) folds per-record errors into the upsert's 200;
            // v3 answers 207 Multi-Status.
            let status = if version == ApiVersion::V3 { 207 } else { 200 };
            assert_eq!(error["http_status"], status, "{version}: {errors}");
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains("Viudo was not one of the allowed options"),
                "{message}"
            );
        }

        // Nothing is left to retry: another round does no work and makes no call.
        let calls = s.sim.stats().total_requests;
        assert_eq!(s.worker.drain().await.unwrap(), Default::default());
        assert_eq!(s.sim.stats().total_requests, calls);
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_queue WHERE state IN ('pending', 'running')",
        )
        .fetch_one(s.queue.pool())
        .await
        .unwrap();
        assert_eq!(open, 0);
    }
}

#[tokio::test]
async fn a_unique_value_held_by_another_contact_is_rejected_with_hubspots_message() {
    let s = stand().await;
    let member = rows(1).remove(0);
    // Another contact, another email, but this member's numero_asociado.
    s.sim
        .seed_contacts(&[BTreeMap::from([
            (
                "email".to_string(),
                Some("otra.persona@example.com".to_string()),
            ),
            (
                "numero_asociado".to_string(),
                Some(member["numero_asociado"].to_string()),
            ),
        ])])
        .unwrap();
    enqueue(&s.queue, std::slice::from_ref(&member), 1).await;
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.rejected, 1, "{settled:?}");
    let error: String = sqlx::query_scalar("SELECT last_error FROM sync_queue")
        .fetch_one(s.queue.pool())
        .await
        .unwrap();
    assert!(
        error.contains("numero_asociado") && error.contains("must be unique"),
        "{error}"
    );
    assert_eq!(s.sim.contacts().len(), 1);
    // One upsert, refused for that record; nothing looked up.
    let stats = s.sim.stats().requests_by_endpoint;
    assert_eq!(stats["batch/upsert"], 1);
    assert!(!stats.contains_key("batch/read"), "{stats:?}");
}

#[tokio::test]
async fn a_contact_appearing_while_the_upsert_is_on_its_way_is_linked_not_duplicated() {
    let s = stand().await;
    let member = rows(1).remove(0);
    let mapped = s.mapper.to_hubspot(&member).properties;
    // The contact appears while the upsert is on its way, as when an earlier try of this very
    // write was done but its answer lost.
    s.sim.set_faults(hubsync::sim::hubspot::Faults {
        latency: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    enqueue(&s.queue, std::slice::from_ref(&member), 1).await;
    let appear = async {
        let creates = || {
            let stats = s.sim.stats().requests_by_endpoint;
            stats.get("batch/upsert").copied().unwrap_or(0)
        };
        while creates() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        s.sim.seed_contacts(std::slice::from_ref(&mapped)).unwrap()
    };
    let (settled, seeded) = tokio::join!(s.worker.drain(), appear);
    assert_eq!(settled.unwrap().done, 1);
    let (outcome, hubspot_id): (String, String) =
        sqlx::query_as("SELECT outcome, hubspot_id FROM sync_queue")
            .fetch_one(s.queue.pool())
            .await
            .unwrap();
    assert_eq!(
        (outcome.as_str(), hubspot_id),
        ("UPDATE", seeded[0].clone())
    );
    assert_eq!(s.sim.contacts().len(), 1);
}

#[tokio::test]
async fn batches_with_invalid_records_are_topped_up_so_a_create_carries_a_full_batch() {
    let s = stand().await;
    // Half the members have no usable email: a claim of 100 holds about 45 valid records.
    let mut members = rows(200);
    for m in members.iter_mut().step_by(2) {
        m.insert("email".into(), "sin-correo".into());
    }
    let valid = members
        .iter()
        .filter(|m| s.mapper.to_hubspot(m).is_valid())
        .count();
    assert!(valid <= 100, "{valid}");
    enqueue(&s.queue, &members, 1).await;
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(settled.done as usize, valid);
    assert_eq!(settled.rejected as usize, members.len() - valid);
    let upserts = s.sim.stats().requests_by_endpoint["batch/upsert"];
    assert_eq!(upserts, 1, "every valid member in one upsert");
    assert_eq!(s.sim.contacts().len(), valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserting_1000_of_which_300_exist_links_or_rejects_every_input_and_duplicates_none() {
    for version in VERSIONS {
        let s = stand_on(version, SimOptions::lagging(), &contacts_config(), None).await;
        let members: Vec<_> = rows(1_100)
            .into_iter()
            .filter(|r| s.mapper.to_hubspot(r).is_valid())
            .take(1_000)
            .collect();
        assert_eq!(members.len(), 1_000);
        // 300 are in HubSpot already, under their email in capitals; 20 of those contacts are
        // synced with other SQL Server records.
        let existing: Vec<BTreeMap<String, Option<String>>> = members[..300]
            .iter()
            .map(|m| {
                let mut p = s.mapper.to_hubspot(m).properties;
                let email = p["email"].clone().unwrap().to_uppercase();
                p.insert("email".into(), Some(email));
                p.insert("firstname".into(), Some("Ya Existe".into()));
                p.remove("numero_asociado");
                p
            })
            .collect();
        let ids = s.sim.seed_contacts(&existing).unwrap();
        for (n, id) in ids[..20].iter().enumerate() {
            let email = s.mapper.to_hubspot(&members[n]).properties["email"].clone();
            sqlx::query(
                "INSERT INTO record_links (object, sql_key, hubspot_id, synced) \
             VALUES ('contacts', $1, $2, jsonb_build_object('email', $3::text))",
            )
            .bind(format!("otro-{n}"))
            .bind(id)
            .bind(email)
            .execute(s.queue.pool())
            .await
            .unwrap();
        }
        enqueue(&s.queue, &members, 1).await;
        let settled = s.worker.drain().await.unwrap();
        assert_eq!((settled.done, settled.rejected), (980, 20), "{settled:?}");
        // Exactly 1,000 contacts: 300 found, 700 created, none twice.
        let contacts = s.sim.contacts();
        assert_eq!(contacts.len(), 1_000);
        let emails: std::collections::HashSet<String> = contacts
            .iter()
            .map(|c| c.properties["email"].to_lowercase())
            .collect();
        assert_eq!(emails.len(), 1_000, "no duplicates");
        // The 20 whose contact belongs to another record are rejected naming both, untouched.
        for (n, id) in ids[..20].iter().enumerate() {
            let key = members[n]["numero_asociado"].to_string();
            let error: String = sqlx::query_scalar(
                "SELECT last_error FROM sync_queue WHERE record_key = $1 AND state = 'rejected'",
            )
            .bind(&key)
            .fetch_one(s.queue.pool())
            .await
            .unwrap();
            assert!(
                error.contains(id.as_str()) && error.contains(&format!("otro-{n}")),
                "{error}"
            );
            assert_eq!(
                s.sim.contact(id).unwrap().get("firstname"),
                Some("Ya Existe")
            );
        }
        // Every other input is linked to its own contact, which holds its values.
        let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_links WHERE object = 'contacts' AND sql_key NOT LIKE 'otro-%'",
    )
    .fetch_one(s.queue.pool())
    .await
    .unwrap();
        assert_eq!(linked, 980);
        for (n, id) in ids[20..].iter().enumerate() {
            let want = s.mapper.to_hubspot(&members[20 + n]).properties["firstname"].clone();
            assert_eq!(s.sim.contact(id).unwrap().get("firstname"), want.as_deref());
        }
        let stats = s.sim.stats().requests_by_endpoint;
        assert_eq!(
            stats["batch/upsert"], 10,
            "one request per 100 records: {stats:?}"
        );
    }
}

#[tokio::test]
async fn records_breaking_the_portals_write_rules_are_rejected_before_sending_naming_the_rule() {
    // The portal wants office phones with an explicit country code, and a gross salary whenever
    // the salary is paid monthly. This mapping sends the office phone as SQL Server holds it.
    let mut object = contacts_config();
    for f in object
        .fields
        .iter_mut()
        .filter(|f| f.sql == "telefono_oficina")
    {
        f.transform = vec!["trim".into()];
    }
    let required = serde_json::json!([{"property": "salario_bruto_semanal_o_quincenal",
        "when": {"property": "frecuencia_deposito_de_su_salario", "is": ["mensual"]}}]);
    object.portal_required = serde_json::from_value(required.clone()).unwrap();
    let s = stand_with(SimOptions::lagging(), &object, None).await;
    let http = reqwest::Client::new();
    let base = s.sim.base_url();
    let rule = http
        .put(format!("{base}/crm/property-validations/2026-09/0-1/telefono_oficina/rule-type/PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE"))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"ruleArguments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(rule.status(), 204);
    let set = http
        .put(format!("{base}/_sim/required-rules"))
        .json(&required)
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());

    let mut members: Vec<SqlRow> = rows(400)
        .into_iter()
        .filter(|r| s.mapper.to_hubspot(r).is_valid())
        .take(200)
        .collect();
    let mut breaking = BTreeMap::new();
    for (i, row) in members.iter_mut().enumerate() {
        let key = row["numero_asociado"].to_string();
        row.insert(
            "frecuencia_deposito_de_su_salario".into(),
            "quincenal".into(),
        );
        match i % 10 {
            // A national number: breaks the phone rule.
            3 => {
                row.insert("telefono_oficina".into(), "22223333".into());
                breaking.insert(
                    key,
                    (
                        "telefono_oficina",
                        "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
                    ),
                );
            }
            4 => {
                row.insert("telefono_oficina".into(), "+50622223333".into());
            }
            // Paid monthly without a gross salary: breaks the required rule.
            7 => {
                row.insert("frecuencia_deposito_de_su_salario".into(), "mensual".into());
                row.insert(
                    "salario_bruto_semanal_o_quincenal".into(),
                    serde_json::Value::Null,
                );
                row.insert(
                    "salario_neto_semanal_o_quincenal".into(),
                    serde_json::Value::Null,
                );
                breaking.insert(key, ("salario_bruto_semanal_o_quincenal", "REQUIRED"));
            }
            8 => {
                row.insert("frecuencia_deposito_de_su_salario".into(), "mensual".into());
            }
            _ => {}
        }
    }
    assert_eq!(breaking.len(), 40);
    assert!(
        members.iter().all(|r| s.mapper.to_hubspot(r).is_valid()),
        "hubsync's own rules pass them all"
    );

    enqueue(&s.queue, &members, 1).await;
    let settled = s.worker.drain().await.unwrap();
    assert_eq!(
        (settled.done, settled.rejected, settled.retried),
        (160, 40, 0),
        "{settled:?}"
    );
    let stats = s.sim.stats();
    assert_eq!(
        stats.answers_by_status.get("400"),
        None,
        "no batch failed: {stats:?}"
    );
    assert_eq!(s.sim.contacts().len(), 160);

    let rejected: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT record_key, errors FROM sync_queue WHERE state = 'rejected'")
            .fetch_all(s.queue.pool())
            .await
            .unwrap();
    assert_eq!(rejected.len(), 40);
    for (key, errors) in &rejected {
        let (column, rule) = breaking[key];
        let error = &errors[0];
        assert_eq!(error["kind"], "portal_rule", "{key}: {errors}");
        assert_eq!(error["field"], column, "{key}: {errors}");
        assert_eq!(error["rule"], rule, "{key}: {errors}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("HubSpot portal rule {rule}")),
            "{message}"
        );
        assert!(
            !message.contains("22223333"),
            "the value is not quoted: {message}"
        );
    }
    // The batch-mates are in HubSpot with their values; the international office phone too.
    let phones: Vec<String> = s
        .sim
        .contacts()
        .iter()
        .filter_map(|c| c.properties.get("telefono_oficina").cloned())
        .collect();
    assert_eq!(phones.len(), 20);
    assert!(phones.iter().all(|p| p == "+50622223333"), "{phones:?}");
}

#[tokio::test]
async fn hostile_values_from_sql_server_are_rejected_by_the_worker_and_never_reach_hubspot() {
    let s = stand().await;
    let mut members: Vec<SqlRow> = rows(60)
        .into_iter()
        .filter(|r| s.mapper.to_hubspot(r).is_valid())
        .take(HOSTILE.len() + 2)
        .collect();
    for (row, &(field, value, _)) in members.iter_mut().zip(HOSTILE) {
        row.insert(field.into(), value.into());
    }
    // An internationalised domain is sent in its ASCII form.
    members[HOSTILE.len()].insert("email".into(), "Luis@Correo.Café.cr".into());

    enqueue(&s.queue, &members, 1).await;
    let settled = s.worker.drain().await.unwrap();
    let rejected = HOSTILE.len() as u64;
    assert_eq!(
        (settled.done, settled.rejected),
        (2, rejected),
        "{settled:?}"
    );

    for (row, &(field, value, rule)) in members.iter().zip(HOSTILE) {
        let key = row["numero_asociado"].to_string();
        let (state, errors): (String, serde_json::Value) =
            sqlx::query_as("SELECT state, errors FROM sync_queue WHERE record_key = $1")
                .bind(&key)
                .fetch_one(s.queue.pool())
                .await
                .unwrap();
        assert_eq!(state, "rejected", "{value:?}");
        assert_eq!(errors[0]["field"], field, "{errors}");
        assert_eq!(errors[0]["rule"], rule, "{errors}");
    }
    let contacts = s.sim.contacts();
    assert_eq!(contacts.len(), 2);
    let sent: String = contacts
        .iter()
        .flat_map(|c| c.properties.values())
        .cloned()
        .collect();
    assert!(
        !sent
            .chars()
            .any(|c| hubsync::validation::text::unsafe_kind(c, false).is_some()),
        "{sent:?}"
    );
    assert!(
        contacts
            .iter()
            .any(|c| c.properties.get("email").map(String::as_str)
                == Some("luis@correo.xn--caf-dma.cr")),
        "the ASCII form was sent"
    );
}

#[tokio::test]
async fn at_the_daily_reserve_items_wait_for_hubspots_reset_without_spending_attempts() {
    // Other apps on the portal have used all but 5,000 of the day's 20,000 requests; hubsync
    // keeps a reserve of 10,000.
    let options = SimOptions {
        daily_limit: Some(20_000),
        other_apps_usage: 15_000,
        ..SimOptions::lagging()
    };
    let s = stand_with(options, &contacts_config(), None).await;
    s.worker
        .handler
        .client
        .refresh_daily_budget()
        .await
        .expect("usage read");
    let members: Vec<SqlRow> = rows(200)
        .into_iter()
        .filter(|r| s.mapper.to_hubspot(r).is_valid())
        .take(50)
        .collect();
    enqueue(&s.queue, &members, 1).await;
    let writes = s.sim.stats().write_requests();
    let settled = s.worker.drain().await.unwrap();
    // Deferred items are pending again (counted as retried), none done or dead.
    assert_eq!((settled.done, settled.dead), (0, 0), "{settled:?}");
    assert_eq!(
        s.sim.stats().write_requests(),
        writes,
        "nothing sent at the reserve"
    );
    let waiting: Vec<(i32, String, f64)> = sqlx::query_as(
        "SELECT attempts, state, extract(epoch FROM run_after - now())::float8 \
         FROM sync_queue WHERE direction = 'to_hubspot'",
    )
    .fetch_all(s.queue.pool())
    .await
    .unwrap();
    assert_eq!(waiting.len(), 50);
    // HubSpot's reset is at the next midnight in the account's time zone.
    let reset_in = s.sim.usage().resets_at - chrono::Utc::now();
    for (attempts, state, wait_s) in &waiting {
        assert_eq!(
            (*attempts, state.as_str()),
            (0, "pending"),
            "no attempt charged"
        );
        let off = (wait_s - reset_in.as_seconds_f64()).abs();
        assert!(
            off < 120.0,
            "waits until the reset: {wait_s} s vs {reset_in}"
        );
    }
}
