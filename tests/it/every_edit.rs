//! Every edit arrives, whatever happens between reading and settling: the HubSpot poller's
//! cursor never passes a change it has not read however long a pass takes, and hubsync's own
//! writes cut short by a crash (written, never settled) are still known as its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hubsync::hubspot::types::UpdateInput;
use hubsync::queue::{ClaimedItem, Direction};
use hubsync::sync::to_sql::HubspotPoller;
use hubsync::sync::worker::BatchHandler;

use crate::to_hubspot::rows;
use crate::to_sql::{Both, both};

/// One property edit made in HubSpot through its API.
fn edit(id: &str, property: &str, value: &str) -> UpdateInput {
    UpdateInput {
        id: id.to_string(),
        properties: BTreeMap::from([(property.to_string(), Some(value.to_string()))]),
    }
}

impl Both {
    /// A worker that writes a batch of to_hubspot items to HubSpot and dies before settling
    /// them: its items are taken back (as a restart does) and the writes stay unsettled.
    async fn write_and_crash(&self) -> Vec<ClaimedItem> {
        self.crash_after(Direction::ToHubspot).await
    }

    /// A worker of `direction` that writes one batch to the other side and dies before
    /// settling it: its items are taken back (as a restart does); the writes stay unsettled.
    async fn crash_after(&self, direction: Direction) -> Vec<ClaimedItem> {
        let q = &self.s.queue;
        let batch = q
            .claim("contacts", direction, 100, "crashed")
            .await
            .unwrap();
        assert!(!batch.is_empty(), "something to write");
        let _never_settled = match direction {
            Direction::ToHubspot => self.s.worker.handler.handle(&batch).await,
            Direction::ToSql => self.to_sql.handler.handle(&batch).await,
        };
        let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
        q.release("crashed", &ids).await.unwrap();
        batch
    }

    /// 20 members queued; their contacts are created in HubSpot and the worker dies before
    /// linking them. Returns the members, and the SQL key and contact id of one that was
    /// created (the batch's invalid members were not).
    async fn created_then_crashed(&self) -> (Vec<hubsync::mapping::SqlRow>, String, String) {
        let members = rows(20);
        self.mssql.insert_rows(&members).await;
        self.sql_poller.poll_once().await.unwrap();
        let batch = self.write_and_crash().await;
        let contacts = self.s.sim.contacts();
        let (key, id) = batch
            .iter()
            .find_map(|item| {
                let key = item.record_key.as_str();
                contacts
                    .iter()
                    .find(|c| c.get("numero_asociado") == Some(key))
                    .map(|c| (key.to_string(), c.id.to_string()))
            })
            .expect("created");
        (members, key, id)
    }

    /// Someone edits `property` of contact `id` through HubSpot's API.
    async fn edit_in_hubspot(&self, id: &str, property: &str, value: &str) {
        let edits = [edit(id, property, value)];
        self.client.batch_update("contacts", &edits).await.unwrap();
    }

    /// SQL Server and HubSpot both hold these names for the member, and agree on every field.
    async fn assert_both_hold(&self, key: &str, id: &str, firstname: &str, lastname: &str) {
        for (field, value) in [("firstname", firstname), ("lastname", lastname)] {
            assert_eq!(
                self.sql_value(key, field).await,
                value,
                "SQL Server {field}"
            );
            assert_eq!(self.hubspot_value(id, field), value, "HubSpot {field}");
        }
        self.assert_same_on_both(key, id).await;
    }

    async fn sql_value(&self, key: &str, column: &str) -> String {
        let row = self.reader.row_by_key(key).await.unwrap().unwrap();
        row[column].as_str().unwrap().to_string()
    }

    fn hubspot_value(&self, id: &str, property: &str) -> String {
        let contact = self.s.sim.contact(id).unwrap();
        contact.get(property).unwrap_or_default().to_string()
    }

    /// Every field the mapping sends, as SQL Server's row maps, is what the contact holds.
    async fn assert_same_on_both(&self, key: &str, id: &str) {
        let row = self.reader.row_by_key(key).await.unwrap().unwrap();
        let mapped = self.s.mapper.to_hubspot(&row);
        let contact = self.s.sim.contact(id).unwrap();
        for (property, value) in &mapped.properties {
            let value = value.as_deref().filter(|v| !v.is_empty());
            let held = contact.get(property).filter(|v| !v.is_empty());
            assert_eq!(held, value, "{property} of member {key}");
        }
    }

    /// Both pollers and both directions, until a whole cycle reads nothing new.
    async fn settle_all(&self) {
        for _ in 0..10 {
            if self.cycle().await == (0, 0) {
                return;
            }
        }
        panic!("the two sides never came to rest");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_pass_slower_than_the_search_lag_misses_no_edit_made_behind_it() {
    let b = both().await;
    // 4,000 contacts: at HubSpot's 5 searches a second a pass of 20 pages takes 4 s, four
    // times the lag.
    let contacts: Vec<BTreeMap<String, Option<String>>> = (0..4_000)
        .map(|i| {
            BTreeMap::from([
                ("email".to_string(), Some(format!("socio{i}@coop.cr"))),
                ("firstname".to_string(), Some("Antes".to_string())),
                (
                    "lastmodifieddate".to_string(),
                    Some("2026-11-01T08:00:00.000Z".to_string()),
                ),
            ])
        })
        .collect();
    let ids = b.s.sim.seed_contacts(&contacts).unwrap();
    b.s.sim.indexed().await;
    let poller = Arc::new(HubspotPoller {
        lag: Duration::from_secs(1),
        properties: vec!["email".into(), "firstname".into()],
        client: b.client.clone(),
        pool: b.s.queue.pool().clone(),
        last_archive_scan: Default::default(),
        archive_scan: None,
        object: "contacts".into(),
        hubspot_object: "contacts".into(),
        max_attempts: 10,
    });
    let pass = tokio::spawn({
        let poller = poller.clone();
        async move { poller.poll_once().await.unwrap() }
    });
    // Once the pass has queued its first page, a contact it has gone past is edited, and then
    // one far ahead of it, more than the lag later.
    let pool = b.s.queue.pool().clone();
    crate::daemon::eventually("the first page queued", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_queue")
                .fetch_one(&pool)
                .await
                .unwrap();
            n >= 200
        }
    })
    .await;
    let (behind, ahead) = (&ids[10], &ids[3_990]);
    b.client
        .batch_update("contacts", &[edit(behind, "firstname", "Detrás")])
        .await
        .unwrap();
    let behind_at = b.s.sim.contact(behind).unwrap().updated_ms;
    let mut ahead_at = 0;
    while ahead_at <= behind_at + 1_000 {
        b.client
            .batch_update("contacts", &[edit(ahead, "firstname", "Delante")])
            .await
            .unwrap();
        ahead_at = b.s.sim.contact(ahead).unwrap().updated_ms;
    }
    assert!(
        !pass.is_finished(),
        "the edits were made while the pass ran"
    );
    pass.await.unwrap();
    b.s.sim.indexed().await;
    poller.poll_once().await.unwrap();
    // Both edits are queued at their new versions: nothing was passed over.
    for (id, at) in [(behind, behind_at), (ahead, ahead_at)] {
        let version: i64 = sqlx::query_scalar(
            "SELECT max(source_version) FROM sync_queue WHERE direction = 'to_sql' \
             AND record_key = $1",
        )
        .bind(id)
        .fetch_one(b.s.queue.pool())
        .await
        .unwrap();
        assert_eq!(version, at, "contact {id}: its edit was read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_write_coming_back_after_a_crash_is_no_conflict_and_overwrites_nothing() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.settle_all().await;
    let (key, id) = b.links(1).await.remove(0);
    // SQL Server's change is written to HubSpot; the worker dies before settling it.
    b.sql_set(&key, "lastname", "Uno Primero").await;
    b.sql_poller.poll_once().await.unwrap();
    b.write_and_crash().await;
    assert_eq!(b.hubspot_value(&id, "lastname"), "Uno Primero");
    // Meanwhile the member's surname changes again in SQL Server.
    b.sql_set(&key, "lastname", "Dos Segundo").await;
    // HubSpot's poller reads the contact first: hubsync's own write, not an edit.
    b.poll_hubspot().await;
    b.to_sql.drain().await.unwrap();
    assert_eq!(b.sql_value(&key, "lastname").await, "Dos Segundo");
    b.settle_all().await;
    assert_eq!(b.sql_value(&key, "lastname").await, "Dos Segundo");
    assert_eq!(b.hubspot_value(&id, "lastname"), "Dos Segundo");
    assert_eq!(b.conflicts().await, 0, "no one else changed the surname");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_created_before_a_crash_keeps_the_hubspot_edits_made_before_it_was_linked() {
    let b = both().await;
    let (members, key, id) = b.created_then_crashed().await;
    // Before hubsync links it, someone edits the contact's first name in HubSpot and the
    // member's surname changes in SQL Server.
    b.edit_in_hubspot(&id, "firstname", "Editada Enhubspot")
        .await;
    b.sql_set(&key, "lastname", "Nueva Ensql").await;
    b.settle_all().await;
    // Both edits stand on both sides: neither side's was taken back to the creation values.
    b.assert_both_hold(&key, &id, "Editada Enhubspot", "Nueva Ensql")
        .await;
    assert_eq!(b.conflicts().await, 0, "different fields changed");
    let valid = members
        .iter()
        .filter(|r| b.s.mapper.to_hubspot(r).is_valid())
        .count();
    assert_eq!(b.s.sim.contacts().len(), valid, "each member created once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_sql_server_write_coming_back_after_a_crash_is_no_conflict() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.settle_all().await;
    let (key, id) = b.links(1).await.remove(0);
    // A HubSpot edit is written to SQL Server; the worker dies before settling it.
    b.edit_in_hubspot(&id, "firstname", "Uno Primera").await;
    b.poll_hubspot().await;
    b.crash_after(Direction::ToSql).await;
    assert_eq!(b.sql_value(&key, "firstname").await, "Uno Primera");
    // Meanwhile the first name changes again in HubSpot.
    b.edit_in_hubspot(&id, "firstname", "Dos Segunda").await;
    // SQL Server's poller reads the row first: hubsync's own write, not a SQL Server edit.
    b.sql_poller.poll_once().await.unwrap();
    b.s.worker.drain().await.unwrap();
    assert_eq!(b.hubspot_value(&id, "firstname"), "Dos Segunda");
    b.settle_all().await;
    assert_eq!(b.sql_value(&key, "firstname").await, "Dos Segunda");
    assert_eq!(b.hubspot_value(&id, "firstname"), "Dos Segunda");
    assert_eq!(
        b.conflicts().await,
        0,
        "no one changed the first name in SQL Server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_settled_just_before_a_crash_is_recorded_once() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.settle_all().await;
    let (key, id) = b.links(1).await.remove(0);
    // The same field edited on both sides; HubSpot's poller sees it first.
    b.sql_set(&key, "firstname", "Desde Sql").await;
    b.edit_in_hubspot(&id, "firstname", "Desde Hubspot").await;
    b.poll_hubspot().await;
    // The winner is written to SQL Server; the worker dies before settling.
    b.crash_after(Direction::ToSql).await;
    b.settle_all().await;
    // Both sides hold the winner, and the conflict is on record, once.
    let (sql, hubspot) = (
        b.sql_value(&key, "firstname").await,
        b.hubspot_value(&id, "firstname"),
    );
    assert_eq!(sql, hubspot);
    let recorded: Vec<(String, String, String)> =
        sqlx::query_as("SELECT field, winner, decided_by FROM sync_conflicts WHERE sql_key = $1")
            .bind(&key)
            .fetch_all(b.s.queue.pool())
            .await
            .unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].0, "firstname");
    let winner = if recorded[0].1 == "hubspot" {
        "Desde Hubspot"
    } else {
        "Desde Sql"
    };
    assert_eq!(sql, winner, "{recorded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_server_change_queued_before_a_hubspot_edit_reached_sql_server_does_not_undo_it() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.settle_all().await;
    let (key, id) = b.links(1).await.remove(0);
    // The member's surname changes in SQL Server: queued with the row as it was then.
    b.sql_set(&key, "lastname", "Nueva Ensql").await;
    b.sql_poller.poll_once().await.unwrap();
    // Before that item is sent, the first name is edited in HubSpot and written to SQL Server.
    b.edit_in_hubspot(&id, "firstname", "Editada Enhubspot")
        .await;
    b.poll_hubspot().await;
    b.to_sql.drain().await.unwrap();
    assert_eq!(b.sql_value(&key, "firstname").await, "Editada Enhubspot");
    // The surname goes to HubSpot; the first name queued with it is older than both sides.
    b.s.worker.drain().await.unwrap();
    assert_eq!(b.hubspot_value(&id, "firstname"), "Editada Enhubspot");
    assert_eq!(b.hubspot_value(&id, "lastname"), "Nueva Ensql");
    b.settle_all().await;
    b.assert_both_hold(&key, &id, "Editada Enhubspot", "Nueva Ensql")
        .await;
    assert_eq!(b.conflicts().await, 0, "different fields changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_contact_whose_update_never_landed_before_a_second_crash_keeps_every_edit() {
    let b = both().await;
    let (_, key, id) = b.created_then_crashed().await;
    let created_surname = b.hubspot_value(&id, "lastname");
    // The member's surname changes in SQL Server and its first name in HubSpot. The item is
    // taken up again and its update to the new surname is sent, but the worker dies before
    // HubSpot takes it (HubSpot refuses the write here, as a kill in flight leaves it).
    b.sql_set(&key, "lastname", "Nueva Ensql").await;
    b.sql_poller.poll_once().await.unwrap();
    b.edit_in_hubspot(&id, "firstname", "Editada Enhubspot")
        .await;
    b.s.sim.set_faults(hubsync::sim::hubspot::Faults {
        missing_write_scope: true,
        ..Default::default()
    });
    b.write_and_crash().await;
    b.s.sim.set_faults(Default::default());
    assert_eq!(
        b.hubspot_value(&id, "lastname"),
        created_surname,
        "the update did not land"
    );
    b.settle_all().await;
    // Neither edit was taken back: not the surname to the one the contact was created with.
    b.assert_both_hold(&key, &id, "Editada Enhubspot", "Nueva Ensql")
        .await;
    assert_eq!(b.conflicts().await, 0, "different fields changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_answer_is_lost_is_decided_again_so_a_hubspot_edit_made_since_wins() {
    let b = both().await;
    b.mssql.insert_rows(&rows(20)).await;
    b.settle_all().await;
    let (key, id) = b.links(1).await.remove(0);
    let updates = || {
        let stats = b.s.sim.stats();
        stats.requests_by_endpoint.get("batch/update").copied()
    };
    let before = updates().unwrap_or(0);
    // The surname changes in SQL Server; HubSpot takes the update, but its answer is lost.
    b.sql_set(&key, "lastname", "Nueva Ensql").await;
    b.sql_poller.poll_once().await.unwrap();
    b.s.sim.set_faults(hubsync::sim::hubspot::Faults {
        lost_response_rate: 1.0,
        writes_only: true,
        ..Default::default()
    });
    let q = &b.s.queue;
    let batch = q
        .claim("contacts", Direction::ToHubspot, 100, "lost")
        .await
        .unwrap();
    let result = b.s.worker.handler.handle(&batch).await;
    b.s.sim.set_faults(Default::default());
    assert_eq!(updates(), Some(before + 1), "sent once, not repeated");
    assert_eq!(b.hubspot_value(&id, "lastname"), "Nueva Ensql", "it landed");
    let item = batch.iter().find(|i| i.record_key == key).unwrap();
    assert!(
        result.outcomes.iter().any(|(i, o)| *i == item.id
            && matches!(o, hubsync::queue::Outcome::Retry(e) if e.message.contains("not sent again"))),
        "left to be decided again: {:?}",
        result.outcomes
    );
    let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
    q.release("lost", &ids).await.unwrap();
    // Before it is decided again, someone edits the same surname in HubSpot.
    b.edit_in_hubspot(&id, "lastname", "Editado Enhubspot")
        .await;
    b.settle_all().await;
    // Both sides changed it: a conflict, which newest_wins without a SQL Server time gives to
    // HubSpot's edit (a repeat of the update would have overwritten it unseen).
    assert_eq!(b.hubspot_value(&id, "lastname"), "Editado Enhubspot");
    assert_eq!(b.sql_value(&key, "lastname").await, "Editado Enhubspot");
    b.assert_same_on_both(&key, &id).await;
    assert_eq!(b.conflicts().await, 1, "the surname, recorded once");
}
