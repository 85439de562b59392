//! A member's lifecycle end to end, against both simulators and real PostgreSQL: a contact
//! GDPR-deleted in HubSpot under each `on_hubspot_erasure` policy (the SQL Server row left,
//! deleted, anonymized or marked, and every copy hubsync held of the member erased, checked over
//! every table and column), an archived contact told apart from an erased one, and
//! `hubsync history` showing the timeline of a member created, updated on both sides, in a
//! conflict, merged and erased.

use std::collections::BTreeMap;

use hubsync::config::{Need, load_str};
use hubsync::hubspot::types::UpdateInput;
use hubsync::mapping::ObjectConfig;
use serde_json::Value;

use crate::backfill::tables_holding;
use crate::support::example_config;
use crate::to_hubspot::rows;
use crate::to_sql::{Both, both_with};

/// The example configuration's contacts with `on_hubspot_erasure: policy`.
fn erasing(policy: &str) -> ObjectConfig {
    let text = std::fs::read_to_string(example_config()).unwrap().replace(
        "on_hubspot_erasure: { action: ignore }",
        &format!("on_hubspot_erasure: {policy}"),
    );
    let mut config = load_str(&text, Need::Nothing, &|_| None).unwrap();
    config.objects.remove("contacts").unwrap()
}

/// Sets one property of one contact, as a HubSpot user would.
async fn hubspot_set(b: &Both, id: &str, property: &str, value: &str) {
    let edit = UpdateInput {
        id: id.to_string(),
        properties: BTreeMap::from([(property.to_string(), Some(value.to_string()))]),
    };
    b.client.batch_update("contacts", &[edit]).await.unwrap();
}

/// Six members synced both ways, the first with names no other member has, edited once on each
/// side so that queue payloads, the link and HubSpot hold its data. Returns the member's key,
/// its contact's id, and what identifies it: email, cédula (as mapped and as SQL Server holds
/// it) and names.
async fn member(b: &Both) -> (String, String, Vec<String>) {
    b.mssql.insert_rows(&rows(6)).await;
    b.cycle().await;
    b.cycle().await;
    let (key, id) = b.links(1).await.remove(0);
    b.sql_set(&key, "firstname", "Zelmira").await;
    b.sql_set(&key, "lastname", "Quirós Olvido").await;
    b.cycle().await;
    hubspot_set(b, &id, "lastname", "Quirós Olvido Segunda").await;
    b.cycle().await;
    let row = b.reader.row_by_key(&key).await.unwrap().unwrap();
    let props = b.s.mapper.to_hubspot(&row).properties;
    let mut needles = vec![
        props["email"].clone().unwrap(),
        props["no__de_cedula"].clone().unwrap(),
        row["no__de_cedula"].as_str().unwrap().to_string(),
        "Zelmira".into(),
        "Quirós Olvido".into(),
    ];
    needles.dedup();
    (key, id, needles)
}

/// Tables of the queue database holding any of `needles`, with the needle.
async fn holding(b: &Both, needles: &[String]) -> Vec<(String, String)> {
    let mut held = Vec::new();
    for needle in needles {
        for table in tables_holding(b.s.queue.pool(), needle).await {
            held.push((needle.clone(), table));
        }
    }
    held
}

/// The operations of a member's history rows, oldest first.
async fn operations(b: &Both, key: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT operation FROM sync_history WHERE sql_key = $1 ORDER BY at, id")
        .bind(key)
        .fetch_all(b.s.queue.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_gdpr_deleted_in_hubspot_follows_each_erasure_policy_and_no_copy_is_left() {
    let anonymize =
        "{ action: anonymize, neutral: { no__de_cedula: '', firstname: '', lastname: '' } }";
    for policy in [
        "{ action: ignore }",
        "{ action: delete }",
        anonymize,
        "{ action: set_column, column: activo, value: false }",
    ] {
        let b = both_with(erasing(policy)).await;
        let (key, id, needles) = member(&b).await;
        let (other, other_id) = b.links(2).await.remove(1);
        let held = holding(&b, &needles).await;
        for needle in &needles {
            assert!(
                held.iter().any(|(n, _)| n == needle),
                "{policy}: {needle} held before"
            );
        }
        let contacts = b.s.sim.stats().contacts;

        // A HubSpot user GDPR-deletes the member's contact and archives another member's; both
        // members then change in SQL Server.
        b.client.gdpr_delete("contacts", &id).await.unwrap();
        b.client
            .batch_archive("contacts", std::slice::from_ref(&other_id))
            .await
            .unwrap();
        b.sql_set(&key, "lastname", "Quirós Olvido Tercera").await;
        b.sql_set(&other, "lastname", "Cambiada").await;
        assert_eq!(b.sql_poller.poll_once().await.unwrap().items_enqueued, 2);
        let settled = b.s.worker.drain().await.unwrap();
        assert_eq!(
            (settled.erasures, settled.done, settled.rejected),
            (1, 1, 1),
            "{policy}: {settled:?}"
        );
        // Whatever the policy's write of the row brings back is not sent again.
        b.cycle().await;
        b.cycle().await;

        // The SQL Server row, per policy.
        let row = b.reader.row_by_key(&key).await.unwrap();
        match policy {
            "{ action: delete }" => assert!(row.is_none(), "{policy}: {row:?}"),
            "{ action: ignore }" => {
                let row = row.unwrap();
                assert_eq!(row["lastname"], "Quirós Olvido Tercera", "{policy}");
            }
            p if p == anonymize => {
                let row = row.unwrap();
                for cleared in ["email", "telefono_habitacion", "date_of_birth"] {
                    assert_eq!(row[cleared], Value::Null, "{policy}: {cleared}");
                }
                for neutral in ["no__de_cedula", "firstname", "lastname"] {
                    assert_eq!(row[neutral], "", "{policy}: {neutral}");
                }
                assert_ne!(row["salario_bruto_semanal_o_quincenal"], Value::Null);
            }
            _ => {
                let row = row.unwrap();
                assert!(
                    row["activo"] == Value::Bool(false) || row["activo"] == 0,
                    "{policy}: {:?}",
                    row["activo"]
                );
                assert_eq!(row["lastname"], "Quirós Olvido Tercera", "{policy}");
            }
        }

        // hubsync holds nothing of the member: no link, no row of any table with its email,
        // cédula or names; its history is one ERASE row (and the skipped echo of the policy's
        // own write, if it made one).
        let links = b.links(100).await;
        assert!(links.iter().all(|(k, _)| *k != key), "{policy}: {links:?}");
        assert_eq!(holding(&b, &needles).await, [], "{policy}");
        let ops = operations(&b, &key).await;
        assert_eq!(ops[0], "ERASE", "{policy}: {ops:?}");
        assert!(ops[1..].iter().all(|o| o == "SKIP"), "{policy}: {ops:?}");
        // Nothing was created again in HubSpot (which counts live contacts: the erased and the
        // archived one are not).
        assert_eq!(b.s.sim.stats().contacts, contacts - 2, "{policy}");

        // The archived contact is no erasure: its member is rejected saying so, its link
        // stays, its data too.
        assert!(links.iter().any(|(k, _)| *k == other), "{policy}");
        let reason: String = sqlx::query_scalar(
            "SELECT last_error FROM sync_queue WHERE record_key = $1 AND state = 'rejected'",
        )
        .bind(&other)
        .fetch_one(b.s.queue.pool())
        .await
        .unwrap();
        assert!(reason.contains("recycle bin"), "{policy}: {reason}");
        assert!(b.reader.row_by_key(&other).await.unwrap().is_some());
    }
}

/// `hubsync history --object contacts ARGS` against `b`'s queue database: (exit code, stdout).
fn history(b: &Both, dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let config = dir.join("config.yaml");
    std::fs::copy(example_config(), &config).unwrap();
    let mut all = vec![
        "--config",
        config.to_str().unwrap(),
        "history",
        "--object",
        "contacts",
    ];
    all.extend_from_slice(args);
    let env = [("HUBSYNC_DATABASE_URL", b.s.url.as_str())];
    let out = tokio::task::block_in_place(|| crate::support::hubsync(&all, &env, dir));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty() || out.status.success(),
        "{stdout}{stderr}"
    );
    (out.status.code(), stdout)
}

/// The operations of `hubsync history --json` output.
fn json_operations(stdout: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(stdout).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_members_whole_timeline_from_creation_to_erasure() {
    let b = both_with(erasing("{ action: delete }")).await;
    let dir = tempfile::tempdir().unwrap();
    b.mssql.insert_rows(&rows(6)).await;
    b.cycle().await;
    b.cycle().await;
    let (key, old) = b.links(1).await.remove(0);
    let email = {
        let row = b.reader.row_by_key(&key).await.unwrap().unwrap();
        b.s.mapper.to_hubspot(&row).properties["email"]
            .clone()
            .unwrap()
    };

    // Updated in SQL Server, then in HubSpot, then the same field on both sides (a conflict).
    b.sql_set(&key, "lastname", "Cambiada En SQL").await;
    b.cycle().await;
    hubspot_set(&b, &old, "lastname", "Cambiada En HubSpot").await;
    b.cycle().await;
    b.edit_both(
        &(key.clone(), old.clone()),
        "Nombre SQL",
        "Nombre HubSpot",
        None,
    )
    .await;
    b.cycle().await;
    b.cycle().await;
    assert_eq!(b.conflicts().await, 1);
    let (_, by_email) = history(
        &b,
        dir.path(),
        &["--email", &email.to_uppercase(), "--json"],
    );
    assert!(
        json_operations(&by_email).contains(&"CONFLICT".to_string()),
        "by email: {by_email}"
    );

    // A HubSpot user merges the member's contact into a duplicate: the link follows.
    let duplicate =
        b.s.sim
            .seed_contacts(&[BTreeMap::from([
                (
                    "email".to_string(),
                    Some("duplicada@example.com".to_string()),
                ),
                ("firstname".to_string(), Some("Duplicada".to_string())),
            ])])
            .unwrap()
            .remove(0);
    let survivor = b.s.sim.merge_contacts(&duplicate, &old).unwrap();
    b.cycle().await;
    b.cycle().await;
    assert_eq!(b.links(1).await.remove(0), (key.clone(), survivor.clone()));

    // The timeline, by member key, by an id the member had, and by email.
    let (code, table) = history(&b, dir.path(), &["--member", &key]);
    assert_eq!(code, Some(0), "{table}");
    for shown in [
        "CREATE",
        "UPDATE",
        "WRITE",
        "CONFLICT",
        "MERGE",
        "lastname",
        "firstname",
        &old,
        &survivor,
    ] {
        assert!(table.contains(shown), "{shown}: {table}");
    }
    assert!(
        table.contains("to_hubspot") && table.contains("to_sql"),
        "{table}"
    );
    let (_, json) = history(&b, dir.path(), &["--member", &key, "--json"]);
    let ops = json_operations(&json);
    let at = |op: &str| {
        ops.iter()
            .position(|o| o == op)
            .unwrap_or_else(|| panic!("{op}: {ops:?}"))
    };
    assert!(at("CREATE") < at("UPDATE"), "{ops:?}");
    assert!(at("UPDATE") < at("WRITE"), "{ops:?}");
    assert!(at("WRITE") < at("CONFLICT"), "{ops:?}");
    assert!(at("CONFLICT") < at("MERGE"), "{ops:?}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let update = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "UPDATE")
        .unwrap();
    assert_eq!(
        update["properties"],
        serde_json::json!(["lastname"]),
        "{json}"
    );
    assert_eq!(update["direction"], "to_hubspot");
    assert!(update["batch_id"].as_str().is_some_and(|b| !b.is_empty()));
    let (_, by_old_id) = history(&b, dir.path(), &["--hubspot-id", &old, "--json"]);
    assert_eq!(json_operations(&by_old_id), ops, "by the merged-away id");
    let (code, unknown) = history(&b, dir.path(), &["--email", "nadie@example.com"]);
    assert_eq!(code, Some(1), "{unknown}");
    assert!(unknown.contains("n***@example.com"), "{unknown}");

    // The contact is GDPR-deleted in HubSpot; the member's next change finds it gone.
    b.client.gdpr_delete("contacts", &survivor).await.unwrap();
    b.sql_set(&key, "lastname", "Otra Vez").await;
    b.cycle().await;
    assert!(b.reader.row_by_key(&key).await.unwrap().is_none());

    // What is left is one ERASE row, counting what the timeline held.
    let (code, table) = history(&b, dir.path(), &["--member", &key]);
    assert_eq!(code, Some(0), "{table}");
    let (_, json) = history(&b, dir.path(), &["--member", &key, "--json"]);
    assert_eq!(json_operations(&json), ["ERASE"], "{json}");
    for counted in [
        "CREATE 1",
        "CONFLICT 1",
        "MERGE 1",
        "gone for good",
        "deleted",
    ] {
        assert!(table.contains(counted), "{counted}: {table}");
    }
}
