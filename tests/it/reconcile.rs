//! Reconciliation end to end, against both simulators and real PostgreSQL: drift made behind
//! hubsync's back (edits the pollers' cursors passed over on both sides, a contact deleted by
//! hand and one erased, a lost link, a member and a contact the pollers never saw) is listed
//! exactly, by kind, by a dry run that queues nothing; the real run queues the fixes, after
//! which every field of every member is equal on both sides; a second run finds nothing. Also
//! a run stopped midway resumes from its stored position, and `hubsync reconcile` and the job
//! API run it with the same results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hubsync::config::{Need, load_str};
use hubsync::hubspot::types::{CreateInput, UpdateInput};
use hubsync::mapping::ObjectConfig;
use hubsync::mssql::ChangeReader;
use hubsync::queue::Direction;
use hubsync::sync::engine::ObjectSync;
use hubsync::sync::poller::{SqlPoller, enqueue_page, load_cursor};
use hubsync::sync::reconcile::{Kind, Reconciler, Summary};
use hubsync::sync::to_sql::HubspotPoller;

use crate::support::example_config;
use crate::to_hubspot::rows;
use crate::to_sql::{Both, both_with};

/// The example configuration, inserting records created in HubSpot (their member number comes
/// with them) and marking archived ones; the office phone is SQL Server's alone.
fn config_text() -> String {
    std::fs::read_to_string(example_config())
        .unwrap()
        .replace(
            "hubspot: numero_asociado, direction: to_hubspot,",
            "hubspot: numero_asociado, direction: both,",
        )
        .replace(
            "hubspot: telefono_oficina, transform",
            "hubspot: telefono_oficina, direction: to_hubspot, transform",
        )
        .replace(
            "on_new_hubspot_record: ignore",
            "on_new_hubspot_record: insert",
        )
        .replace(
            "on_hubspot_archive: { action: ignore }",
            "on_hubspot_archive: { action: set_column, column: activo, value: false }",
        )
}

/// The contacts of [`config_text`].
fn config() -> ObjectConfig {
    let mut config = load_str(&config_text(), Need::Nothing, &|_| None).unwrap();
    config.objects.remove("contacts").unwrap()
}

/// The stand's object as the engine assembles it.
fn object_sync(b: &Both, config: &ObjectConfig) -> ObjectSync {
    let pool = b.s.queue.pool().clone();
    ObjectSync {
        name: "contacts".into(),
        poller: Arc::new(SqlPoller {
            object: "contacts".into(),
            reader: ChangeReader::new(b.sql.clone(), b.sql_object.clone()),
            pool: pool.clone(),
            max_attempts: 10,
        }),
        to_hubspot: b.s.worker.handler.clone(),
        hubspot_poller: Arc::new(HubspotPoller {
            object: "contacts".into(),
            hubspot_object: "contacts".into(),
            client: b.client.clone(),
            properties: b.s.mapper.fields().map(|f| f.hubspot.clone()).collect(),
            pool,
            max_attempts: 10,
            lag: std::time::Duration::from_secs(5),
            archive_scan: config.on_hubspot_archive.scan_interval(),
            last_archive_scan: Default::default(),
        }),
        to_sql: b.to_sql.handler.clone(),
    }
}

fn never_ended(_: &str) -> bool {
    false
}

/// A reconciler of the stand's object, its budget share generous so tests do not wait.
fn reconciler<'a>(object: &'a ObjectSync, b: &'a Both, dry_run: bool) -> Reconciler<'a> {
    Reconciler {
        object,
        pool: b.s.queue.pool(),
        holder: format!("test:{}/reconcile", std::process::id()),
        ended: &never_ended,
        dry_run,
        job_id: None,
        max_attempts: 10,
        budget_share: 1.0,
        requests_per_10s: 10_000,
    }
}

/// Findings by kind: (member key, HubSpot id).
type ByKind = BTreeMap<String, BTreeSet<(Option<String>, Option<String>)>>;

/// Findings of a run: kind → set of (member key, HubSpot id).
async fn findings(b: &Both, run_id: i64) -> ByKind {
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT kind, sql_key, hubspot_id FROM reconcile_findings WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(b.s.queue.pool())
    .await
    .unwrap();
    let mut out: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for (kind, key, id) in rows {
        out.entry(kind).or_default().insert((key, id));
    }
    out
}

/// Items waiting in the queue.
async fn open_items(b: &Both) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync_queue WHERE state IN ('pending', 'running')")
        .fetch_one(b.s.queue.pool())
        .await
        .unwrap()
}

/// The SQL Server poller reads every change so far and loses them: its cursor moves past them
/// and nothing is queued (a poll that failed at the wrong moment).
async fn sql_poller_skips(b: &Both) {
    let pool = b.s.queue.pool();
    let stored = load_cursor(pool, "contacts", Direction::ToHubspot)
        .await
        .unwrap()
        .and_then(|v| hubsync::mssql::ChangeCursor::from_json(&v).ok());
    let mut poll = b.reader.poll(stored);
    let mut last = None;
    while let Some(page) = poll.next_page().await.unwrap() {
        last = Some(page.cursor);
    }
    let cursor = last.expect("changes to skip").to_json();
    enqueue_page(pool, "contacts", Direction::ToHubspot, &[], cursor, 10)
        .await
        .unwrap();
}

/// The HubSpot poller's cursors move past every change and archive so far, queueing nothing.
async fn hubspot_poller_skips(b: &Both) {
    b.s.sim.indexed().await;
    let now = chrono::Utc::now().timestamp_millis() + 1;
    let cursor = serde_json::json!({"lastmodifieddate_ms": now, "archived_at_ms": now});
    enqueue_page(
        b.s.queue.pool(),
        "contacts",
        Direction::ToSql,
        &[],
        cursor,
        10,
    )
    .await
    .unwrap();
}

/// Every linked member but those `except` names (whose contact is archived): its SQL Server
/// row mapped against its HubSpot record, field by field. Returns the members compared; panics
/// naming the first difference.
pub(crate) async fn both_sides_equal(b: &Both, except: &[&str]) -> usize {
    let except: Vec<String> = except.iter().map(|s| s.to_string()).collect();
    let links: Vec<(String, String)> = sqlx::query_as(
        "SELECT sql_key, hubspot_id FROM record_links WHERE hubspot_id IS NOT NULL \
         AND sql_key <> ALL($1) ORDER BY sql_key",
    )
    .bind(&except)
    .fetch_all(b.s.queue.pool())
    .await
    .unwrap();
    let keys: Vec<String> = links.iter().map(|l| l.0.clone()).collect();
    let ids: Vec<String> = links.iter().map(|l| l.1.clone()).collect();
    let rows = b.reader.rows_by_keys(&keys).await.unwrap();
    let props: Vec<String> = b.s.mapper.fields().map(|f| f.hubspot.clone()).collect();
    let props: Vec<&str> = props.iter().map(String::as_str).collect();
    let mut records = Vec::new();
    for chunk in ids.chunks(100) {
        records.extend(
            b.client
                .batch_read("contacts", &hubsync::hubspot::ReadBy::Id, chunk, &props)
                .await
                .unwrap(),
        );
    }
    for ((key, id), record) in links.iter().zip(records) {
        let record = record.unwrap_or_else(|| panic!("member {key}: no HubSpot record {id}"));
        let row = rows
            .get(key)
            .unwrap_or_else(|| panic!("member {key}: no SQL Server row"));
        let mapped = b.s.mapper.to_hubspot(row).properties;
        for (name, value) in &mapped {
            let theirs = record.property(name);
            let ours = value.as_deref().filter(|v| !v.is_empty());
            assert_eq!(ours, theirs, "member {key}, contact {id}: field {name}");
        }
    }
    links.len()
}

/// Kinds with their members, as a run's findings should read.
fn expected(pairs: &[(Kind, Option<&str>, Option<&str>)]) -> ByKind {
    let mut out: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for (kind, key, id) in pairs {
        out.entry(kind.as_str().to_string())
            .or_default()
            .insert((key.map(str::to_string), id.map(str::to_string)));
    }
    out
}

fn count(s: &Summary, kind: Kind) -> i64 {
    s.counts.get(kind.as_str()).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_hubsyncs_back_is_listed_by_kind_fixed_and_gone_on_the_next_run() {
    let config = config();
    let b = both_with(config.clone()).await;
    let object = object_sync(&b, &config);
    b.mssql.insert_rows(&rows(40)).await;
    b.cycle().await;
    b.cycle().await;
    // A few generated members break a rule: rejected, they are the queue's, not drift.
    let linked = both_sides_equal(&b, &[]).await;
    assert!((30..40).contains(&linked), "{linked}");

    // In step: nothing found.
    let clean = reconciler(&object, &b, true).run(|_| {}).await.unwrap();
    assert_eq!(clean.drift(), 0, "{:?}", clean.counts);
    assert_eq!(clean.counts["sql_rows"], 40);
    assert_eq!(clean.counts["hubspot_records"], linked as i64);

    let links = b.links(40).await;
    let (sql_edit, hs_edit, hs_owned, unlinked, archived, erased) = (
        &links[1], &links[2], &links[3], &links[4], &links[5], &links[6],
    );
    // SQL Server: an edit the poller passes over, and a member it never queues.
    b.sql_set(&sql_edit.0, "firstname", "Cambio Perdido").await;
    let newcomer = crate::support::members(40..41, 11);
    b.mssql.insert_rows(&newcomer).await;
    let new_key = newcomer[0]["numero_asociado"].to_string();
    sql_poller_skips(&b).await;
    // HubSpot: edits of a field both sides write and of one only SQL Server writes, a contact
    // archived by hand, one GDPR-deleted, and one created there; the poller passes over them.
    let set = |id: &str, name: &str, value: &str| UpdateInput {
        id: id.to_string(),
        properties: BTreeMap::from([(name.to_string(), Some(value.to_string()))]),
    };
    b.client
        .batch_update(
            "contacts",
            &[
                set(&hs_edit.1, "lastname", "Editado Sin Aviso"),
                set(&hs_owned.1, "telefono_oficina", "+506 2222-3333"),
            ],
        )
        .await
        .unwrap();
    b.client
        .batch_archive("contacts", std::slice::from_ref(&archived.1))
        .await
        .unwrap();
    b.client.gdpr_delete("contacts", &erased.1).await.unwrap();
    let outsider_row = crate::support::members(41..42, 11).remove(0);
    let outsider_key = outsider_row["numero_asociado"].to_string();
    let outsider = b.s.mapper.to_hubspot(&outsider_row).properties;
    let made = b
        .client
        .batch_create(
            "contacts",
            &[CreateInput {
                properties: outsider,
            }],
            None,
        )
        .await
        .unwrap();
    let outsider_id = match &made[0] {
        hubsync::hubspot::WriteOutcome::Ok { id, .. } => id.clone(),
        other => panic!("{other:?}"),
    };
    hubspot_poller_skips(&b).await;
    // hubsync's own table: a link lost.
    sqlx::query("DELETE FROM record_links WHERE sql_key = $1")
        .bind(&unlinked.0)
        .execute(b.s.queue.pool())
        .await
        .unwrap();

    let want = expected(&[
        (Kind::SqlDrift, Some(&sql_edit.0), Some(&sql_edit.1)),
        (Kind::MissingInHubspot, Some(&new_key), None),
        (Kind::HubspotDrift, Some(&hs_edit.0), Some(&hs_edit.1)),
        (Kind::HubspotDrift, Some(&hs_owned.0), Some(&hs_owned.1)),
        (
            Kind::UnlinkedMatchable,
            Some(&unlinked.0),
            Some(&unlinked.1),
        ),
        (Kind::OrphanLink, Some(&archived.0), Some(&archived.1)),
        (Kind::OrphanLink, Some(&erased.0), Some(&erased.1)),
        (Kind::OrphanContact, None, Some(&outsider_id)),
    ]);
    // A dry run lists exactly those, by kind, and queues nothing.
    let dry = reconciler(&object, &b, true).run(|_| {}).await.unwrap();
    assert_eq!(findings(&b, dry.run_id).await, want);
    assert_eq!(dry.drift(), 8, "{:?}", dry.counts);
    assert_eq!(open_items(&b).await, 0, "a dry run queues nothing");
    // `hubsync reconcile --dry-run` prints the same, one line each, and exits 1.
    let (code, stdout, stderr) = cli_dry_run(&b);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let mut printed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    printed.sort();
    let mut kinds: Vec<&str> = want
        .iter()
        .flat_map(|(k, members)| std::iter::repeat_n(k.as_str(), members.len()))
        .collect();
    kinds.sort();
    assert_eq!(printed, kinds, "{stdout}");
    assert!(stderr.contains("drift found: 8"), "{stderr}");
    assert!(stderr.contains("dry run: nothing was queued"), "{stderr}");
    assert!(
        stdout.contains(&format!("member={} ", sql_edit.0)),
        "{stdout}"
    );
    assert_eq!(open_items(&b).await, 0, "a dry run queues nothing");

    // The real run finds the same and queues the fixes; the sync carries them out.
    let real = reconciler(&object, &b, false).run(|_| {}).await.unwrap();
    assert_eq!(findings(&b, real.run_id).await, want);
    assert!(open_items(&b).await >= 8);
    for _ in 0..3 {
        b.to_sql.drain().await.unwrap();
        b.s.worker.drain().await.unwrap();
        b.cycle().await;
    }
    // Each fix as its kind asks: the SQL Server edit and the HubSpot edit crossed over, the
    // field only SQL Server writes is SQL Server's again, the newcomer and the outsider exist
    // on both sides, the lost link is back on the same contact, the archived contact's row is
    // marked, the erased member's link ended (its row kept, per on_hubspot_erasure: ignore).
    let link_of = async |key: &str| -> Option<String> {
        sqlx::query_scalar("SELECT hubspot_id FROM record_links WHERE sql_key = $1")
            .bind(key)
            .fetch_optional(b.s.queue.pool())
            .await
            .unwrap()
            .flatten()
    };
    assert_eq!(
        link_of(&unlinked.0).await.as_deref(),
        Some(unlinked.1.as_str())
    );
    assert!(link_of(&new_key).await.is_some(), "newcomer linked");
    let items: Vec<(String, String, Option<String>, serde_json::Value)> = sqlx::query_as(
        "SELECT direction, state, outcome, errors FROM sync_queue WHERE record_key = $1 OR record_key = $2",
    )
    .bind(&outsider_id)
    .bind(&outsider_key)
    .fetch_all(b.s.queue.pool())
    .await
    .unwrap();
    assert_eq!(
        link_of(&outsider_key).await.as_deref(),
        Some(outsider_id.as_str()),
        "{items:?}"
    );
    assert_eq!(link_of(&erased.0).await, None);
    let row = b.reader.row_by_key(&hs_edit.0).await.unwrap().unwrap();
    assert_eq!(row["lastname"], "Editado Sin Aviso");
    let row = b.reader.row_by_key(&archived.0).await.unwrap().unwrap();
    assert_eq!(row["activo"], false, "{row:?}");
    assert!(b.reader.row_by_key(&outsider_key).await.unwrap().is_some());
    // Every other field of every member that is still linked: equal on both sides.
    let compared = both_sides_equal(&b, &[&archived.0]).await;
    assert_eq!(
        compared, linked,
        "members + newcomer + outsider - erased - archived"
    );

    // Nothing left to find.
    let again = reconciler(&object, &b, false).run(|_| {}).await.unwrap();
    assert_eq!(again.drift(), 0, "{:?}", findings(&b, again.run_id).await);
    assert_eq!(count(&again, Kind::LeftByPolicy), 0);
}

/// `hubsync reconcile --object contacts --dry-run` against the stand: (exit code, stdout,
/// stderr).
fn cli_dry_run(b: &Both) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let text = b
        .mssql
        .in_config(&config_text())
        .replace("https://api.hubapi.com", &b.s.sim.base_url())
        .replace(
            "directory: /var/log/hubsync",
            &format!("directory: {}", dir.path().join("logs").display()),
        );
    std::fs::write(&config, text).unwrap();
    let connection = b.mssql.connection_string();
    let env = [
        ("HUBSYNC_DATABASE_URL", b.s.url.as_str()),
        ("HUBSYNC_HUBSPOT_TOKEN", "sim-token"),
        ("HUBSYNC_SQL_SERVER", connection.as_str()),
    ];
    let args = [
        "--config",
        config.to_str().unwrap(),
        "reconcile",
        "--object",
        "contacts",
        "--dry-run",
    ];
    let out = tokio::task::block_in_place(|| crate::support::hubsync(&args, &env, dir.path()));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_midway_resumes_where_it_stopped_and_finds_what_an_uninterrupted_one_finds() {
    let config = config();
    let b = both_with(config.clone()).await;
    let object = object_sync(&b, &config);
    b.mssql.insert_rows(&rows(260)).await;
    b.cycle().await;
    b.cycle().await;
    // Drift on both sides, spread over the HubSpot list's pages.
    let links = b.links(300).await;
    for (key, _) in links.iter().step_by(40) {
        b.sql_set(key, "firstname", "Perdido").await;
    }
    sql_poller_skips(&b).await;
    let edits: Vec<UpdateInput> = links
        .iter()
        .skip(20)
        .step_by(40)
        .map(|(_, id)| UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("lastname".to_string(), Some("Oculto".to_string()))]),
        })
        .collect();
    b.client.batch_update("contacts", &edits).await.unwrap();
    hubspot_poller_skips(&b).await;

    let whole = reconciler(&object, &b, true).run(|_| {}).await.unwrap();
    let want = findings(&b, whole.run_id).await;
    assert!(whole.drift() >= 10, "{:?}", whole.counts);

    // Stopped after its first HubSpot page (the process dies: the future is dropped).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stopped = reconciler(&object, &b, true);
    tokio::select! {
        done = stopped.run(|p| { let _ = tx.send(p.phase); }) => panic!("finished: {done:?}"),
        _ = async { while rx.recv().await != Some("hubspot") {} } => {}
    }
    let (run_id, phase, position): (i64, String, Option<serde_json::Value>) = sqlx::query_as(
        "SELECT run_id, phase, position FROM reconcile_runs WHERE status = 'running'",
    )
    .fetch_one(b.s.queue.pool())
    .await
    .unwrap();
    assert_eq!(phase, "hubspot");
    assert!(position.is_some_and(|p| p["last_id"].as_u64() > Some(0)));

    // Another process cannot take it while its lease runs; its holder resumes it.
    let other = Reconciler {
        holder: "elsewhere:1/reconcile".into(),
        ..reconciler(&object, &b, true)
    };
    let busy = other.run(|_| {}).await.unwrap_err();
    assert!(busy.to_string().contains("is running"), "{busy:#}");
    let resumed = reconciler(&object, &b, true).run(|_| {}).await.unwrap();
    assert_eq!(resumed.run_id, run_id);
    assert!(resumed.resumed);
    assert_eq!(findings(&b, run_id).await, want);
    for counted in ["sql_rows", "hubspot_records", "links"] {
        assert_eq!(resumed.counts[counted], whole.counts[counted], "{counted}");
    }
    assert_eq!(resumed.drift(), whole.drift());
}
