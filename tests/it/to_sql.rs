//! Both directions end to end: HubSpot edits reach SQL Server, our own writes never come back
//! as work (echo suppression, proven by call counts), and a field edited on both sides is a
//! recorded conflict that the policy settles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hubsync::config::{Need, load_str};
use hubsync::hubspot::types::UpdateInput;
use hubsync::mssql::{ChangeReader, SqlPool, SqlServerSettings, SqlWriter};
use hubsync::queue::Direction;
use hubsync::sync::poller::{SqlPoller, sql_object_settings};
use hubsync::sync::to_sql::{HubspotPoller, ToSql};
use hubsync::sync::worker::Worker;

use crate::support::example_config;
use crate::to_hubspot::{Stand, insert_members, rows, stand};

struct Both {
    s: Stand,
    mssql: hubsync::sim::mssql::RunningMssqlSim,
    sql_poller: SqlPoller,
    hs_poller: HubspotPoller,
    to_sql: Worker<ToSql>,
    reader: Arc<ChangeReader>,
    client: Arc<hubsync::hubspot::HubSpotClient>,
}

async fn both() -> Both {
    let s = stand().await;
    let mssql = crate::support::mssql_sim().await;
    let text = std::fs::read_to_string(example_config()).unwrap();
    let config = load_str(&text, Need::Nothing, &|_| None).unwrap();
    let object = sql_object_settings(&config.objects["contacts"])
        .validate()
        .unwrap();
    let sql = SqlPool::new(&SqlServerSettings {
        connection: Some(mssql.connection_string().into()),
        ..Default::default()
    })
    .unwrap();
    let reader = Arc::new(ChangeReader::new(sql.clone(), object.clone()));
    let pool = s.queue.pool().clone();
    let client = s.worker.handler.client.clone();
    let sql_poller = SqlPoller {
        object: "contacts".into(),
        reader: ChangeReader::new(sql.clone(), object.clone()),
        pool: pool.clone(),
        max_attempts: 10,
    };
    let hs_poller = HubspotPoller {
        object: "contacts".into(),
        hubspot_object: "contacts".into(),
        client: client.clone(),
        properties: s.mapper.fields().map(|f| f.hubspot.clone()).collect(),
        pool: pool.clone(),
        max_attempts: 10,
        lag: Duration::from_secs(5),
    };
    let to_sql = Worker {
        queue: s.queue.clone(),
        name: "w-sql".into(),
        object: "contacts".into(),
        direction: Direction::ToSql,
        handler: Arc::new(ToSql {
            object: "contacts".into(),
            mapper: s.mapper.clone(),
            reader: reader.clone(),
            writer: Arc::new(SqlWriter::new(sql, object)),
            pool,
        }),
    };
    Both {
        s,
        mssql,
        sql_poller,
        hs_poller,
        to_sql,
        reader,
        client,
    }
}

impl Both {
    /// One full cycle: both pollers, both directions drained. Returns (rows read from SQL
    /// Server, records read from HubSpot).
    async fn cycle(&self) -> (u64, u64) {
        let hs = self.hs_poller.poll_once().await.unwrap();
        self.to_sql.drain().await.unwrap();
        let sql = self.sql_poller.poll_once().await.unwrap();
        self.s.worker.drain().await.unwrap();
        (sql.items_enqueued, hs.items_enqueued)
    }

    fn hubspot_writes(&self) -> u64 {
        crate::support::hubspot_writes(&self.s.sim)
    }

    async fn sql_firstname(&self, key: &str) -> String {
        let row = self.reader.row_by_key(key).await.unwrap().unwrap();
        row["firstname"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn hubspot_edits_reach_sql_server_and_nothing_echoes_back() {
    let b = both().await;
    insert_members(&b.mssql, &rows(300)).await;
    b.sql_poller.poll_once().await.unwrap();
    let first = b.s.worker.drain().await.unwrap();
    assert!(first.done > 250, "{first:?}");

    // HubSpot reports every contact we just created; all of them are our own writes.
    let writes = b.hubspot_writes();
    let hs = b.hs_poller.poll_once().await.unwrap();
    assert_eq!(hs.items_enqueued, first.done);
    let echo = b.to_sql.drain().await.unwrap();
    assert_eq!(echo.done, first.done);
    let sql_writes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_queue WHERE outcome = 'WRITE'")
            .fetch_one(b.s.queue.pool())
            .await
            .unwrap();
    assert_eq!(sql_writes, 0, "nothing written back to SQL Server");
    assert_eq!(b.cycle().await, (0, 0), "a quiet cycle reads nothing new");
    assert_eq!(b.hubspot_writes(), writes);

    // A HubSpot user edits 40 contacts.
    let links: Vec<(String, String)> =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links ORDER BY sql_key LIMIT 40")
            .fetch_all(b.s.queue.pool())
            .await
            .unwrap();
    let edits: Vec<UpdateInput> = links
        .iter()
        .map(|(_, id)| UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([(
                "firstname".to_string(),
                Some("Editada En HubSpot".to_string()),
            )]),
        })
        .collect();
    b.client.batch_update("contacts", &edits).await.unwrap();
    let writes = b.hubspot_writes();

    let hs = b.hs_poller.poll_once().await.unwrap();
    assert_eq!(hs.items_enqueued, 40);
    let requests = b.mssql.stats().requests;
    let settled = b.to_sql.drain().await.unwrap();
    assert_eq!(settled.done, 40);
    // 40 UPDATEs in one transaction plus one read of the batch's rows (a read per record
    // would make it 80 and more).
    let requests = b.mssql.stats().requests - requests;
    assert!(
        (42..60).contains(&requests),
        "{requests} SQL Server requests"
    );
    for (key, _) in &links {
        assert_eq!(b.sql_firstname(key).await, "Editada En HubSpot");
    }
    // Our 40 SQL writes come back through the SQL Server poller and are no change.
    let sql = b.sql_poller.poll_once().await.unwrap();
    assert_eq!(sql.items_enqueued, 40);
    let back = b.s.worker.drain().await.unwrap();
    assert_eq!(back.done, 40);
    let skipped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot' AND outcome = 'SKIP'",
    )
    .fetch_one(b.s.queue.pool())
    .await
    .unwrap();
    assert_eq!(skipped, 40);
    assert_eq!(b.hubspot_writes(), writes, "0 HubSpot writes: no ping-pong");
    assert_eq!(b.cycle().await, (0, 0));
    assert_eq!(b.hubspot_writes(), writes);
}

#[tokio::test]
async fn a_field_edited_on_both_sides_is_a_recorded_conflict_and_both_sides_agree_after() {
    let b = both().await;
    insert_members(&b.mssql, &rows(20)).await;
    b.cycle().await;
    b.cycle().await;
    let (key, id): (String, String) =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links ORDER BY sql_key LIMIT 1")
            .fetch_one(b.s.queue.pool())
            .await
            .unwrap();
    b.mssql
        .execute_batch(&format!("UPDATE [dbo].[hb_contacts] SET [firstname] = N'Desde SQL' WHERE [numero_asociado] = {key}"))
        .await
        .unwrap();
    let edit = UpdateInput {
        id: id.clone(),
        properties: BTreeMap::from([("firstname".to_string(), Some("Desde HubSpot".to_string()))]),
    };
    b.client.batch_update("contacts", &[edit]).await.unwrap();

    b.cycle().await;
    b.cycle().await;
    let conflict: (String, Option<String>, Option<String>, String, String) = sqlx::query_as(
        "SELECT field, sql_value, hubspot_value, policy, winner FROM sync_conflicts",
    )
    .fetch_one(b.s.queue.pool())
    .await
    .unwrap();
    assert_eq!(conflict.0, "firstname");
    assert_eq!(conflict.1.as_deref(), Some("Desde SQL"));
    assert_eq!(conflict.2.as_deref(), Some("Desde HubSpot"));
    assert_eq!(conflict.3, "newest_wins");
    let winner = if conflict.4 == "hubspot" {
        "Desde HubSpot"
    } else {
        "Desde SQL"
    };
    assert_eq!(b.sql_firstname(&key).await, winner);
    let contact = b.s.sim.contact(&id).unwrap();
    assert_eq!(
        contact.properties.get("firstname").map(String::as_str),
        Some(winner)
    );
}
