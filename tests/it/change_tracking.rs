//! Change tracking as an object's change capture, end to end between the simulators: inserts,
//! updates and deletes in SQL Server reach HubSpot; hubsync's own writes come back as no work;
//! a write over an unsynced SQL edit does not hide it; a stored version older than the table's
//! minimum valid one reads every row again; change tracking left off is a clear error.

use std::collections::BTreeMap;

use hubsync::hubspot::types::UpdateInput;
use hubsync::mapping::{ChangeDetection, ChangeMode, ObjectConfig};

use crate::reconcile::both_sides_equal;
use crate::to_hubspot::{contacts_config, rows};
use crate::to_sql::{Both, both_with};

fn tracked_config() -> ObjectConfig {
    let mut config = contacts_config();
    config.change_detection = Some(ChangeDetection {
        mode: ChangeMode::ChangeTracking,
        column: None,
        overlap: std::time::Duration::from_secs(300),
        modified_column: None,
    });
    config
}

/// A stand syncing the test's contact table through change tracking, with `n` members created
/// and synced (both pollers quiet afterwards).
async fn tracked(n: u64) -> Both {
    let b = both_with(tracked_config()).await;
    b.mssql.enable_change_tracking().await;
    b.mssql.insert_rows(&rows(n)).await;
    // Created in HubSpot, then HubSpot's report of those creates (no change) read back.
    b.cycle().await;
    b.cycle().await;
    assert_eq!(
        b.cycle().await,
        (0, 0),
        "a quiet cycle after the first sync"
    );
    b
}

async fn edit_in_hubspot(b: &Both, id: &str, property: &str, value: &str) {
    let edit = UpdateInput {
        id: id.to_string(),
        properties: BTreeMap::from([(property.to_string(), Some(value.to_string()))]),
    };
    b.client.batch_update("contacts", &[edit]).await.unwrap();
}

#[tokio::test]
async fn inserts_updates_and_deletes_reach_hubspot_and_hubsyncs_own_writes_are_no_work() {
    let b = tracked(40).await;
    let links = b.links(40).await;
    assert!(links.len() >= 30, "most members are valid: {}", links.len());
    let synced = both_sides_equal(&b, &[]).await;
    assert_eq!(synced, links.len());

    // SQL Server: 5 renamed, 3 deleted, 2 new members.
    for (key, _) in &links[..5] {
        b.sql_set(key, "firstname", "Cambiada En SQL").await;
    }
    let deleted: Vec<&str> = links[5..8].iter().map(|(k, _)| k.as_str()).collect();
    for key in &deleted {
        b.mssql
            .execute_batch(&format!(
                "DELETE FROM {} WHERE [numero_asociado] = {key}",
                b.mssql.quoted()
            ))
            .await
            .unwrap();
    }
    let new = crate::support::members(1000..1002, 11);
    b.mssql.insert_rows(&new).await;
    let polled = b.sql_poller.poll_once().await.unwrap();
    assert_eq!(polled.items_enqueued, 10, "one item per changed key");
    b.s.worker.drain().await.unwrap();
    for (key, id) in &links[5..8] {
        let contact = b.s.sim.contact(id).unwrap();
        assert!(
            contact.archived(),
            "member {key} deleted in SQL Server: archived"
        );
    }
    let linked = both_sides_equal(&b, &deleted).await;
    assert_eq!(linked, links.len() - 3 + 2, "the new members are linked");
    for (key, id) in &links[..5] {
        assert_eq!(
            b.s.sim.contact(id).unwrap().get("firstname"),
            Some("Cambiada En SQL"),
            "member {key}"
        );
    }
    // HubSpot's report of those 7 writes is no change.
    assert_eq!(b.cycle().await, (0, 7));
    assert_eq!(b.cycle().await, (0, 0));

    // HubSpot: 4 contacts edited. hubsync writes them to SQL Server under its context, and the
    // change reader reads none of them back.
    for (_, id) in &links[10..14] {
        edit_in_hubspot(&b, id, "firstname", "Editada En HubSpot").await;
    }
    let writes = crate::support::hubspot_writes(&b.s.sim);
    assert_eq!(b.poll_hubspot().await.items_enqueued, 4);
    assert_eq!(b.to_sql.drain().await.unwrap().done, 4);
    for (key, _) in &links[10..14] {
        assert_eq!(b.sql_firstname(key).await, "Editada En HubSpot");
    }
    let echo = b.sql_poller.poll_once().await.unwrap();
    assert_eq!(
        (echo.rows_read, echo.items_enqueued),
        (0, 0),
        "hubsync's own writes are skipped by their context"
    );
    assert_eq!(crate::support::hubspot_writes(&b.s.sim), writes);
    both_sides_equal(&b, &deleted).await;
}

#[tokio::test]
async fn a_hubspot_edit_written_over_an_unsynced_sql_edit_does_not_hide_it() {
    let b = tracked(10).await;
    let (key, id) = b.links(1).await.remove(0);
    // An application changes the member's last name; before the SQL Server poller reads it, a
    // HubSpot user changes the first name and hubsync writes that to the row.
    b.sql_set(&key, "lastname", "Apellido Nuevo").await;
    edit_in_hubspot(&b, &id, "firstname", "Nombre Nuevo").await;
    assert_eq!(b.poll_hubspot().await.items_enqueued, 1);
    assert_eq!(b.to_sql.drain().await.unwrap().done, 1);
    assert_eq!(b.sql_firstname(&key).await, "Nombre Nuevo");
    // Change tracking keeps only the row's last change (hubsync's): it was written without
    // hubsync's context, so the last name still goes to HubSpot.
    let polled = b.sql_poller.poll_once().await.unwrap();
    assert_eq!(polled.items_enqueued, 1);
    b.s.worker.drain().await.unwrap();
    let contact = b.s.sim.contact(&id).unwrap();
    assert_eq!(contact.get("lastname"), Some("Apellido Nuevo"));
    assert_eq!(contact.get("firstname"), Some("Nombre Nuevo"));
    both_sides_equal(&b, &[]).await;
}

#[tokio::test]
async fn a_version_older_than_the_minimum_valid_one_reads_every_row_again() {
    let b = tracked(20).await;
    let links = b.links(20).await;
    for (key, _) in &links[..3] {
        b.sql_set(key, "firstname", "Perdida En La Limpieza").await;
    }
    // Change tracking's cleanup forgets those changes before hubsync read them.
    let Some(sim) = b.mssql.sim("forcing change tracking's cleanup") else {
        return;
    };
    sim.change_tracking_cleanup().await.unwrap();
    let polled = b.sql_poller.poll_once().await.unwrap();
    assert!(polled.resynced, "the poll noticed the lost changes");
    assert_eq!(polled.rows_read, 20, "every row read again");
    b.s.worker.drain().await.unwrap();
    for (key, id) in &links[..3] {
        assert_eq!(
            b.s.sim.contact(id).unwrap().get("firstname"),
            Some("Perdida En La Limpieza"),
            "member {key}"
        );
    }
    both_sides_equal(&b, &[]).await;
    let again = b.sql_poller.poll_once().await.unwrap();
    assert!(!again.resynced);
    assert_eq!(
        again.rows_read, 0,
        "the feed goes on from the full read's version"
    );
}

#[tokio::test]
async fn change_tracking_left_off_is_an_error_saying_what_to_enable() {
    let b = both_with(tracked_config()).await;
    // A real server's database may have it on already, for other tables.
    if b.mssql.is_sim() {
        let err = b.sql_poller.poll_once().await.unwrap_err().to_string();
        assert!(
            err.contains("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON"),
            "{err}"
        );
    }
    b.mssql.enable_change_tracking_on_database().await;
    let err = b.sql_poller.poll_once().await.unwrap_err().to_string();
    let enable = format!("ALTER TABLE {} ENABLE CHANGE_TRACKING", b.mssql.quoted());
    assert!(err.contains(&enable), "{err}");
}
