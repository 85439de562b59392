//! Both directions end to end: HubSpot edits reach SQL Server, our own writes never come back
//! as work (echo suppression, proven by call counts), and a field edited on both sides is a
//! recorded conflict that the policy settles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hubsync::hubspot::types::UpdateInput;
use hubsync::mssql::{ChangeReader, SqlPool, SqlServerSettings, SqlWriter};
use hubsync::queue::Direction;
use hubsync::sync::poller::{SqlPoller, sql_object_settings};
use hubsync::sync::to_sql::{HubspotPoller, ToSql};
use hubsync::sync::worker::Worker;

use chrono::NaiveDateTime;
use hubsync::mapping::{ChangeDetection, ChangeMode, ObjectConfig};
use hubsync::sim::hubspot::SimOptions;

use crate::to_hubspot::{Stand, contacts_config, rows, stand_with, worker_with};

/// Both directions of one object between the simulators, driven step by step.
pub(crate) struct Both {
    pub(crate) s: Stand,
    pub(crate) mssql: crate::sql_target::SqlTarget,
    pub(crate) sql_poller: SqlPoller,
    pub(crate) hs_poller: HubspotPoller,
    pub(crate) to_sql: Worker<ToSql>,
    pub(crate) reader: Arc<ChangeReader>,
    pub(crate) client: Arc<hubsync::hubspot::HubSpotClient>,
    /// The SQL Server pool and table the stand syncs.
    pub(crate) sql: SqlPool,
    pub(crate) sql_object: hubsync::mssql::SqlObject,
}

pub(crate) async fn both() -> Both {
    both_with(contacts_config()).await
}

/// Both directions of `config` between HubSpot's simulator and the test's SQL Server (its own
/// contact table replaces `config`'s).
pub(crate) async fn both_with(config: ObjectConfig) -> Both {
    let mssql = crate::sql_target::SqlTarget::start().await;
    let config = ObjectConfig {
        sql_table: mssql.table(),
        ..config
    };
    let object = sql_object_settings(&config).validate().unwrap();
    let sql = SqlPool::new(&SqlServerSettings {
        connection: Some(mssql.connection_string().into()),
        ..Default::default()
    })
    .unwrap();
    let reader = Arc::new(ChangeReader::new(sql.clone(), object.clone()));
    let mut s = stand_with(SimOptions::lagging(), &config, Some(reader.clone())).await;
    let pool = s.queue.pool().clone();
    let client = s.worker.handler.client.clone();
    let writer = Arc::new(SqlWriter::new(sql.clone(), object.clone()));
    s.worker = worker_with(
        &s.queue,
        &s.mapper,
        &config,
        client.clone(),
        Some(reader.clone()),
        Some(writer.clone()),
    );
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
        archive_scan: config.on_hubspot_archive.scan_interval(),
        last_archive_scan: Default::default(),
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
            writer,
            pool,
            on_archive: config.on_hubspot_archive.clone(),
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
        sql,
        sql_object: object,
    }
}

impl Both {
    /// One pass of the HubSpot poller once HubSpot has indexed every write made so far.
    pub(crate) async fn poll_hubspot(&self) -> hubsync::sync::poller::Polled {
        self.s.sim.indexed().await;
        self.hs_poller.poll_once().await.unwrap()
    }

    /// One full cycle: both pollers, both directions drained. Returns (rows read from SQL
    /// Server, records read from HubSpot).
    pub(crate) async fn cycle(&self) -> (u64, u64) {
        let hs = self.poll_hubspot().await;
        self.to_sql.drain().await.unwrap();
        let sql = self.sql_poller.poll_once().await.unwrap();
        self.s.worker.drain().await.unwrap();
        (sql.items_enqueued, hs.items_enqueued)
    }

    fn hubspot_writes(&self) -> u64 {
        crate::support::hubspot_writes(&self.s.sim)
    }

    /// Sets one column of one SQL Server row, as an application of the cooperative would.
    pub(crate) async fn sql_set(&self, key: &str, column: &str, value: &str) {
        self.mssql
            .execute_batch(&format!(
                "UPDATE {} SET [{column}] = N'{value}' WHERE [numero_asociado] = {key}",
                self.mssql.quoted()
            ))
            .await
            .unwrap();
    }

    pub(crate) async fn sql_firstname(&self, key: &str) -> String {
        let row = self.reader.row_by_key(key).await.unwrap().unwrap();
        row["firstname"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn hubspot_edits_reach_sql_server_and_nothing_echoes_back() {
    let b = both().await;
    b.mssql.insert_rows(&rows(300)).await;
    b.sql_poller.poll_once().await.unwrap();
    let first = b.s.worker.drain().await.unwrap();
    assert!(first.done > 250, "{first:?}");

    // HubSpot reports every contact we just created; all of them are our own writes.
    let writes = b.hubspot_writes();
    let hs = b.poll_hubspot().await;
    assert_eq!(hs.items_enqueued, first.done);
    let echo = b.to_sql.drain().await.unwrap();
    assert_eq!(echo.done, first.done);
    let sql_writes = b.outcomes("to_sql", "WRITE").await;
    assert_eq!(sql_writes, 0, "nothing written back to SQL Server");
    assert_eq!(b.cycle().await, (0, 0), "a quiet cycle reads nothing new");
    assert_eq!(b.hubspot_writes(), writes);

    // A HubSpot user edits 40 contacts.
    let links = b.links(40).await;
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

    let hs = b.poll_hubspot().await;
    assert_eq!(hs.items_enqueued, 40);
    let requests = || {
        b.mssql
            .sim("counting SQL Server requests")
            .map(|s| s.stats().requests)
    };
    let before = requests();
    let settled = b.to_sql.drain().await.unwrap();
    assert_eq!(settled.done, 40);
    // 40 UPDATEs in one transaction plus one read of the batch's rows (a read per record
    // would make it 80 and more).
    if let (Some(before), Some(after)) = (before, requests()) {
        let requests = after - before;
        assert!(
            (42..60).contains(&requests),
            "{requests} SQL Server requests"
        );
    }
    for (key, _) in &links {
        assert_eq!(b.sql_firstname(key).await, "Editada En HubSpot");
    }
    // Our 40 SQL writes come back through the SQL Server poller and are no change.
    let sql = b.sql_poller.poll_once().await.unwrap();
    assert_eq!(sql.items_enqueued, 40);
    let back = b.s.worker.drain().await.unwrap();
    assert_eq!(back.done, 40);
    let skipped = b.outcomes("to_hubspot", "SKIP").await;
    assert_eq!(skipped, 40);
    assert_eq!(b.hubspot_writes(), writes, "0 HubSpot writes: no ping-pong");
    assert_eq!(b.cycle().await, (0, 0));
    assert_eq!(b.hubspot_writes(), writes);
}

impl Both {
    /// The first `n` links: (SQL key, HubSpot id).
    pub(crate) async fn links(&self, n: i64) -> Vec<(String, String)> {
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links ORDER BY sql_key LIMIT $1")
            .bind(n)
            .fetch_all(self.s.queue.pool())
            .await
            .unwrap()
    }

    /// Sets `firstname` of one record on both sides: in SQL Server (with `modified_at`, local
    /// time, when given) and then in HubSpot.
    pub(crate) async fn edit_both(
        &self,
        (key, id): &(String, String),
        sql: &str,
        hubspot: &str,
        at: Option<NaiveDateTime>,
    ) {
        let modified = at
            .map(|t| format!(", [modified_at] = '{}'", t.format("%Y-%m-%dT%H:%M:%S")))
            .unwrap_or_default();
        self.mssql
            .execute_batch(&format!(
                "UPDATE {} SET [firstname] = N'{sql}'{modified} WHERE [numero_asociado] = {key}",
                self.mssql.quoted()
            ))
            .await
            .unwrap();
        let edit = UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("firstname".to_string(), Some(hubspot.to_string()))]),
        };
        self.client.batch_update("contacts", &[edit]).await.unwrap();
    }

    /// The recorded conflict of one record: (field, sql value, hubspot value, policy, winner,
    /// whether SQL Server's modification time was known).
    async fn conflict(&self, key: &str) -> (String, String, String, String, String, bool) {
        sqlx::query_as(
            "SELECT field, sql_value, hubspot_value, policy, winner, sql_modified_at IS NOT NULL \
             FROM sync_conflicts WHERE sql_key = $1",
        )
        .bind(key)
        .fetch_one(self.s.queue.pool())
        .await
        .unwrap()
    }

    /// Conflicts recorded so far.
    pub(crate) async fn conflicts(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sync_conflicts")
            .fetch_one(self.s.queue.pool())
            .await
            .unwrap()
    }

    /// Both sides hold `firstname` for the record.
    async fn assert_agree(&self, (key, id): &(String, String), firstname: &str) {
        assert_eq!(
            self.sql_firstname(key).await,
            firstname,
            "SQL Server, {key}"
        );
        let contact = self.s.sim.contact(id).unwrap();
        assert_eq!(contact.get("firstname"), Some(firstname), "HubSpot, {id}");
    }
}

/// Costa Rica's local time now, plus `minutes`.
fn local_now(minutes: i64) -> NaiveDateTime {
    let now = chrono::Utc::now() + chrono::Duration::minutes(minutes);
    now.with_timezone(&chrono_tz::America::Costa_Rica)
        .naive_local()
}

#[tokio::test]
async fn newest_wins_without_a_sql_modification_time_lets_hubspot_win_whichever_side_is_polled_first()
 {
    for sql_first in [false, true] {
        let b = both().await;
        b.mssql.insert_rows(&rows(20)).await;
        b.cycle().await;
        b.cycle().await;
        let link = b.links(1).await.remove(0);
        b.edit_both(&link, "Desde SQL", "Desde HubSpot", None).await;
        if sql_first {
            // The to_hubspot step meets the conflict: it reads HubSpot's values first.
            assert_eq!(b.sql_poller.poll_once().await.unwrap().items_enqueued, 1);
            let writes = b.hubspot_writes();
            b.s.worker.drain().await.unwrap();
            assert_eq!(b.hubspot_writes(), writes, "HubSpot's value stands");
        }
        b.cycle().await;
        b.cycle().await;
        let conflict = b.conflict(&link.0).await;
        let expected = (
            "firstname",
            "Desde SQL",
            "Desde HubSpot",
            "newest_wins",
            "hubspot",
            false,
        );
        assert_eq!(
            (
                conflict.0.as_str(),
                conflict.1.as_str(),
                conflict.2.as_str(),
                conflict.3.as_str(),
                conflict.4.as_str(),
                conflict.5
            ),
            expected,
            "SQL Server polled first: {sql_first}"
        );
        assert_eq!(b.conflicts().await, 1, "recorded once");
        b.assert_agree(&link, "Desde HubSpot").await;
    }
}

#[tokio::test]
async fn newest_wins_compares_the_configured_sql_modification_time_with_hubspots() {
    let mut config = contacts_config();
    config.change_detection = Some(ChangeDetection {
        mode: ChangeMode::Rowversion,
        column: Some("rv".into()),
        overlap: Duration::from_secs(300),
        modified_column: Some("modified_at".into()),
    });
    for sql_first in [false, true] {
        let b = both_with(config.clone()).await;
        b.mssql.insert_rows(&rows(20)).await;
        b.cycle().await;
        b.cycle().await;
        let links = b.links(2).await;
        // SQL Server's edit is an hour newer than HubSpot's for the first record, an hour older
        // for the second.
        let (newer, older) = (Some(local_now(60)), Some(local_now(-60)));
        b.edit_both(&links[0], "Nuevo En SQL", "Viejo En HubSpot", newer)
            .await;
        b.edit_both(&links[1], "Viejo En SQL", "Nuevo En HubSpot", older)
            .await;
        if sql_first {
            b.sql_poller.poll_once().await.unwrap();
            b.s.worker.drain().await.unwrap();
        }
        b.cycle().await;
        b.cycle().await;
        for (link, winner, value) in [
            (&links[0], "sql", "Nuevo En SQL"),
            (&links[1], "hubspot", "Nuevo En HubSpot"),
        ] {
            let conflict = b.conflict(&link.0).await;
            assert_eq!(
                (conflict.3.as_str(), conflict.4.as_str()),
                ("newest_wins", winner),
                "SQL Server polled first: {sql_first}; {conflict:?}"
            );
            assert!(conflict.5, "SQL Server's time is recorded");
            b.assert_agree(link, value).await;
        }
        assert_eq!(b.conflicts().await, 2, "each recorded once");
    }
}

impl Both {
    /// Rows in the SQL Server table.
    async fn sql_rows(&self) -> usize {
        self.reader.keys_page(None).await.unwrap().len()
    }

    /// Queue items of `direction` settled with `outcome`.
    async fn outcomes(&self, direction: &str, outcome: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sync_queue WHERE direction = $1 AND outcome = $2")
            .bind(direction)
            .bind(outcome)
            .fetch_one(self.s.queue.pool())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn contacts_archived_in_hubspot_are_ignored_mark_or_delete_their_sql_row_per_config() {
    for action in ["ignore", "set_column", "delete"] {
        let mut config = contacts_config();
        config.on_hubspot_archive = serde_yaml::from_str(&format!(
            "{{ action: {action}, scan_every: 0s{} }}",
            if action == "set_column" {
                ", column: activo, value: false"
            } else {
                ""
            }
        ))
        .unwrap();
        let b = both_with(config).await;
        b.mssql.insert_rows(&rows(20)).await;
        b.cycle().await;
        b.cycle().await;
        let links = b.links(3).await;
        let archived: Vec<String> = links[..2].iter().map(|(_, id)| id.clone()).collect();
        b.client.batch_archive("contacts", &archived).await.unwrap();
        let writes = b.hubspot_writes();
        let linked = b.links(100).await.len() as i64;

        b.cycle().await;
        // Each row's `activo` (a column the mapping does not read), or None when it is gone.
        let mut c = b.mssql.client().await;
        let mut left = Vec::new();
        for (key, _) in &links {
            let count = |filter: &str| {
                format!(
                    "SELECT COUNT(*) FROM {} WHERE [numero_asociado] = {key}{filter}",
                    b.mssql.quoted()
                )
            };
            let exists = crate::mssql_sim::first_int(&mut c, &count("")).await == 1;
            let active =
                crate::mssql_sim::first_int(&mut c, &count(" AND [activo] = 1")).await == 1;
            left.push(exists.then(|| serde_json::json!(active)));
        }
        let (yes, no) = (
            Some(serde_json::json!(true)),
            Some(serde_json::json!(false)),
        );
        let list_calls = b.s.sim.stats().requests_by_endpoint.get("list").copied();
        match action {
            "ignore" => {
                assert_eq!(left, [yes.clone(), yes.clone(), yes], "{action}");
                assert_eq!(list_calls, None, "archived records are not even listed");
                assert_eq!(b.sql_rows().await, 20);
            }
            "set_column" => {
                assert_eq!(left, [no.clone(), no, yes], "{action}");
                assert_eq!(b.sql_rows().await, 20);
            }
            _ => {
                assert_eq!(left, [None, None, yes], "{action}");
                assert_eq!(b.sql_rows().await, 18);
            }
        }
        let expected = if action == "ignore" { 0 } else { 2 };
        assert_eq!(b.outcomes("to_sql", "ARCHIVE").await, expected, "{action}");
        // Nothing comes back to HubSpot, and a quiet cycle does nothing.
        assert_eq!(b.hubspot_writes(), writes, "{action}");
        assert_eq!(b.cycle().await, (0, 0), "{action}");
        assert_eq!(b.hubspot_writes(), writes, "{action}");
        // A deleted row's link ends with it.
        let unlinked = if action == "delete" { 2 } else { 0 };
        assert_eq!(b.links(100).await.len() as i64, linked - unlinked);
    }
}

#[tokio::test]
async fn a_contact_created_in_hubspot_becomes_a_sql_row_when_configured_and_never_echoes() {
    let mut config = contacts_config();
    config.on_new_hubspot_record = hubsync::mapping::OnNewHubspotRecord::Insert;
    // HubSpot users type the member number, so HubSpot may write it.
    config.fields[0].direction = hubsync::mapping::Direction::Both;
    let b = both_with(config).await;
    let members = rows(30);
    b.mssql.insert_rows(&members[..20]).await;
    b.cycle().await;
    b.cycle().await;
    let new = members[20..]
        .iter()
        .find(|r| b.s.mapper.to_hubspot(r).is_valid())
        .unwrap();
    let properties = b.s.mapper.to_hubspot(new).properties;
    let input = hubsync::hubspot::types::CreateInput {
        properties: properties.clone(),
    };
    let created = b
        .client
        .batch_create("contacts", &[input], None)
        .await
        .unwrap();
    let Some(hubsync::hubspot::types::WriteOutcome::Ok { id, .. }) = created.first() else {
        panic!("{created:?}");
    };
    let writes = b.hubspot_writes();
    let contacts = b.s.sim.contacts().len();

    b.cycle().await;
    let key = new["numero_asociado"].to_string();
    let row = b.reader.row_by_key(&key).await.unwrap().expect("inserted");
    assert_eq!(b.s.mapper.to_hubspot(&row).properties, properties);
    assert_eq!(b.sql_rows().await, 21);
    let link: (String, String) =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links WHERE hubspot_id = $1")
            .bind(id)
            .fetch_one(b.s.queue.pool())
            .await
            .unwrap();
    assert_eq!(link, (key, id.clone()));
    assert_eq!(b.outcomes("to_sql", "WRITE").await, 1);
    // The new row comes back through the SQL Server poller as no change.
    assert_eq!(
        b.hubspot_writes(),
        writes,
        "no HubSpot write for our own insert"
    );
    assert_eq!(b.s.sim.contacts().len(), contacts, "no second contact");
    assert_eq!(b.cycle().await, (0, 0));
    assert_eq!(b.hubspot_writes(), writes);
}

#[tokio::test]
async fn edits_of_different_fields_on_both_sides_both_survive_whichever_side_is_polled_first() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.cycle().await;
    b.cycle().await;
    let (key, id) = b.links(1).await.remove(0);
    b.mssql
        .execute_batch(&format!(
            "UPDATE {} SET [firstname] = N'Nombre Desde SQL' WHERE [numero_asociado] = {key}",
            b.mssql.quoted()
        ))
        .await
        .unwrap();
    let edit = UpdateInput {
        id: id.clone(),
        properties: BTreeMap::from([(
            "lastname".to_string(),
            Some("Apellido Desde HubSpot".to_string()),
        )]),
    };
    b.client.batch_update("contacts", &[edit]).await.unwrap();

    // SQL Server's change is sent first: only the property it changed.
    assert_eq!(b.sql_poller.poll_once().await.unwrap().items_enqueued, 1);
    assert_eq!(b.s.worker.drain().await.unwrap().done, 1);
    let contact = b.s.sim.contact(&id).unwrap();
    assert_eq!(contact.get("firstname"), Some("Nombre Desde SQL"));
    assert_eq!(contact.get("lastname"), Some("Apellido Desde HubSpot"));
    // Then HubSpot's change reaches SQL Server.
    b.cycle().await;
    b.cycle().await;
    let row = b.reader.row_by_key(&key).await.unwrap().unwrap();
    assert_eq!(row["firstname"], "Nombre Desde SQL");
    assert_eq!(row["lastname"], "Apellido Desde HubSpot");
    let contact = b.s.sim.contact(&id).unwrap();
    assert_eq!(contact.get("lastname"), Some("Apellido Desde HubSpot"));
    assert_eq!(b.conflicts().await, 0, "different fields never conflict");
}

#[tokio::test]
async fn contacts_hubsync_created_but_had_not_linked_are_not_inserted_again() {
    let mut config = contacts_config();
    config.on_new_hubspot_record = hubsync::mapping::OnNewHubspotRecord::Insert;
    config.fields[0].direction = hubsync::mapping::Direction::Both;
    let b = both_with(config).await;
    let members: Vec<_> = rows(20)
        .into_iter()
        .filter(|r| b.s.mapper.to_hubspot(r).is_valid())
        .collect();
    b.mssql.insert_rows(&members).await;
    // Created in HubSpot from SQL Server by a run that crashed before storing the links.
    let created: Vec<_> = members[..5]
        .iter()
        .map(|r| b.s.mapper.to_hubspot(r).properties)
        .collect();
    b.s.sim.seed_contacts(&created).unwrap();

    // HubSpot's poller runs first: the five name members SQL Server has, so none is new.
    b.cycle().await;
    assert_eq!(b.sql_rows().await, members.len());
    let rejected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_queue WHERE state = 'rejected'")
            .fetch_one(b.s.queue.pool())
            .await
            .unwrap();
    assert_eq!(rejected, 0);
    assert_eq!(b.outcomes("to_sql", "WRITE").await, 0);
    // The SQL Server side then links them, and creates the rest.
    // (upserted by email: the five are updated with the values they hold, and linked)
    assert_eq!(b.outcomes("to_hubspot", "UPDATE").await, 5);
    assert_eq!(b.s.sim.contacts().len(), members.len());
    assert_eq!(b.links(100).await.len(), members.len());
}
