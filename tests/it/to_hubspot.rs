//! SQL Server changes to HubSpot end to end: queue → map and validate → diff → HubSpot batch
//! calls on the simulator → record links, with real PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use hubsync::config::{Need, load_str};
use hubsync::hubspot::{HubSpotClient, HubSpotSettings, Limiter};
use hubsync::mapping::{Mapper, SqlRow};
use hubsync::queue::{Direction, NewItem, Operation, Queue};
use hubsync::sim::hubspot::{RunningSim, SimOptions};
use hubsync::sync::to_hubspot::ToHubspot;
use hubsync::sync::worker::Worker;
use rand::SeedableRng;
use sqlx::Row;

use crate::support::{example_config, fresh_db};

pub struct Stand {
    pub sim: RunningSim,
    pub queue: Queue,
    pub worker: Worker<ToHubspot>,
    pub mapper: Arc<Mapper>,
}

pub async fn stand() -> Stand {
    let (pool, _) = fresh_db().await;
    let sim = hubsync::sim::hubspot::start(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            tier: 5000,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(example_config()).unwrap();
    let config = load_str(&text, Need::Nothing, &|name| {
        (name == "SQL_SERVER").then(|| "server=tcp:127.0.0.1,1;user=sa;password=x".into())
    })
    .unwrap();
    let mapper = Arc::new(Mapper::new(&config.objects["contacts"]).unwrap());
    let settings = HubSpotSettings {
        base_url: sim.base_url().parse().unwrap(),
        token: Some("sim-token".to_string().into()),
        requests_per_10s: 5000,
        ..HubSpotSettings::default()
    };
    let client = Arc::new(
        HubSpotClient::new(&settings, Arc::new(Limiter::from_settings(&settings))).unwrap(),
    );
    let queue = Queue::new(pool.clone(), Default::default());
    let worker = Worker {
        queue: queue.clone(),
        name: "w1".into(),
        object: "contacts".into(),
        direction: Direction::ToHubspot,
        handler: Arc::new(ToHubspot {
            object: "contacts".into(),
            hubspot_object: "contacts".into(),
            mapper: mapper.clone(),
            client,
            pool,
        }),
    };
    Stand {
        sim,
        queue,
        worker,
        mapper,
    }
}

pub fn rows(n: u64) -> Vec<SqlRow> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    (0..n)
        .map(|i| hubsync::bench::validate::member_row(i, &mut rng))
        .collect()
}

async fn enqueue(queue: &Queue, rows: &[SqlRow], version: i64) {
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
    let s = stand().await;
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
    let renamed = s
        .sim
        .contacts()
        .iter()
        .filter(|c| c.properties.get("firstname").map(String::as_str) == Some("Renombrada"))
        .count();
    assert_eq!(renamed, 10);
}

/// Inserts member rows into the simulator's contact table as a client's INSERT would.
pub async fn insert_members(sim: &hubsync::sim::mssql::RunningMssqlSim, rows: &[SqlRow]) {
    hubsync::demo::members::insert(sim, "dbo.hb_contacts", rows)
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_server_members_flow_to_hubspot_through_the_poller_and_only_changes_follow() {
    let s = stand().await;
    let mssql = crate::support::mssql_sim().await;
    let members = rows(5000);
    insert_members(&mssql, &members).await;

    let sql_settings = hubsync::mssql::SqlServerSettings {
        connection: Some(mssql.connection_string().into()),
        ..Default::default()
    };
    let text = std::fs::read_to_string(example_config()).unwrap();
    let config = load_str(&text, Need::Nothing, &|_| None).unwrap();
    let object = hubsync::sync::poller::sql_object_settings(&config.objects["contacts"])
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

    // HubSpot holds exactly the valid members, with the mapped values of the rows as read.
    let done = sqlx::query("SELECT payload FROM sync_queue WHERE state = 'done'")
        .fetch_all(s.queue.pool())
        .await
        .unwrap();
    assert_eq!(s.sim.contacts().len(), done.len());
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
    mssql
        .execute_batch(&format!(
            "UPDATE [dbo].[hb_contacts] SET [firstname] = N'Nuevo Nombre' WHERE [numero_asociado] IN ({})",
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
    let renamed = s
        .sim
        .contacts()
        .iter()
        .filter(|c| c.properties.get("firstname").map(String::as_str) == Some("Nuevo Nombre"))
        .count();
    assert_eq!(renamed, 50);

    // Nothing changed: the next cycle reads nothing and writes nothing.
    let polled = poller.poll_once().await.unwrap();
    assert_eq!((polled.rows_read, polled.items_enqueued), (0, 0));
    assert_eq!(s.worker.drain().await.unwrap().done, 0);
    assert_eq!(writes(&s) - before, 1);
}
