//! HubSpot merges end to end, in both id modes (a new id, or the primary's kept), against the
//! simulators and real PostgreSQL: a contact merged while a SQL Server change of its member is
//! pending takes that change and the member's link follows the survivor, nothing duplicated or
//! lost; a merge between hubsync's read and its update is followed in the same batch; the
//! contacts of two members merged into one are rejected on both sides, naming each other, with
//! nothing written anywhere, and show in `hubsync queue stuck`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use hubsync::hubspot::HubSpotSettings;
use hubsync::hubspot::types::UpdateInput;
use hubsync::mapping::SqlRow;
use hubsync::sim::hubspot::{RunningSim, SimSettings};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::hubspot_writes;
use crate::to_hubspot::{client_at, contacts_config, enqueue, rows, stand, worker_with};
use crate::to_sql::{Both, both};

/// The duplicate a HubSpot user made of a member's contact: its own email and first name, and
/// an office phone the member's contact lacks.
const DUPLICATE_EMAIL: &str = "duplicada@example.com";
const DUPLICATE_NAME: &str = "Duplicada";
const DUPLICATE_PHONE: &str = "+50622334455";

thread_local! {
    /// The JSON lines hubsync logged on this thread since [`Logs::capture`].
    static LINES: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::default();
}

/// hubsync's JSON log lines, kept per thread: each test's runtime runs all its tasks on the
/// test's own thread, so a test sees its own lines only. (One process-wide subscriber: tracing
/// caches a callsite's interest globally, so a per-thread subscriber misses the events of a
/// callsite another test's thread reached first.)
struct Logs;

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES.with(|lines| lines.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Starts keeping this thread's lines afresh.
    fn capture() {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("hubsync=info"))
                .with(hubsync::telemetry::json_layer(|| Logs));
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        LINES.with(|lines| lines.borrow_mut().clear());
    }

    /// This thread's lines of one operation.
    fn operations(operation: &str) -> Vec<Value> {
        let text = LINES.with(|lines| String::from_utf8(lines.borrow().clone()).unwrap());
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["operation"] == operation)
            .collect()
    }
}

const READ: &str = "batch/read";
const UPDATE: &str = "batch/update";

/// Requests the simulator has served at `endpoint`.
fn calls(sim: &RunningSim, endpoint: &str) -> u64 {
    let stats = sim.stats();
    stats
        .requests_by_endpoint
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

/// The first member by SQL key, and the id its link holds.
fn first(links: &BTreeMap<String, String>) -> (String, String) {
    let (key, id) = links.iter().next().unwrap();
    (key.clone(), id.clone())
}

/// A queue item: direction, record key, last error.
type Item = (String, String, Option<String>);

/// Contacts' properties by id.
type Contacts = BTreeMap<String, BTreeMap<String, String>>;

impl Both {
    /// Members synced, as in production: both directions settled twice.
    async fn synced(&self, keep_id: bool) -> BTreeMap<String, String> {
        self.s.sim.set_settings(&SimSettings {
            preserve_primary_id: keep_id,
        });
        self.mssql.insert_rows(&rows(20)).await;
        self.cycle().await;
        self.cycle().await;
        self.linked().await
    }

    /// The HubSpot id each member's link holds, by SQL key.
    async fn linked(&self) -> BTreeMap<String, String> {
        self.links(1000).await.into_iter().collect()
    }

    /// Merges `other` into `primary` as a HubSpot user would; the survivor's id.
    fn merge(&self, primary: &str, other: &str) -> String {
        self.s.sim.merge_contacts(primary, other).unwrap()
    }

    fn duplicate(&self) -> String {
        let properties = BTreeMap::from([
            ("email".to_string(), Some(DUPLICATE_EMAIL.to_string())),
            ("firstname".to_string(), Some(DUPLICATE_NAME.to_string())),
            (
                "telefono_oficina".to_string(),
                Some(DUPLICATE_PHONE.to_string()),
            ),
        ]);
        self.s.sim.seed_contacts(&[properties]).unwrap().remove(0)
    }

    /// The SQL Server row of every member in `links`, by key.
    async fn rows_of(&self, links: &BTreeMap<String, String>) -> BTreeMap<String, SqlRow> {
        let mut rows = BTreeMap::new();
        for key in links.keys() {
            let row = self.reader.row_by_key(key).await.unwrap().unwrap();
            rows.insert(key.clone(), row);
        }
        rows
    }

    /// Every contact HubSpot holds, archived ones included.
    fn contacts(&self) -> Contacts {
        self.s
            .sim
            .contacts()
            .into_iter()
            .map(|c| (c.id.to_string(), c.properties))
            .collect()
    }

    /// One cycle of both pollers and both directions; the links that followed a merge.
    async fn cycle_counting_merges(&self) -> u64 {
        self.poll_hubspot().await;
        let to_sql = self.to_sql.drain().await.unwrap();
        self.sql_poller.poll_once().await.unwrap();
        let to_hubspot = self.s.worker.drain().await.unwrap();
        to_sql.merges + to_hubspot.merges
    }

    /// Every member in `links`: its SQL Server row and its HubSpot contact hold the same value
    /// in every mapped field.
    async fn assert_in_step(&self, links: &BTreeMap<String, String>, case: &str) {
        for (key, row) in self.rows_of(links).await {
            let contact = self.s.sim.contact(&links[&key]).unwrap();
            for (property, value) in self.s.mapper.to_hubspot(&row).properties {
                let held = contact.get(&property).filter(|v| !v.is_empty());
                assert_eq!(held, value.as_deref(), "{case}: member {key}, {property}");
            }
        }
    }

    /// Every item settled: none pending or dead, and none rejected but `rejected`.
    async fn assert_settled(&self, rejected: &[Item], case: &str) {
        assert_eq!(self.items("rejected").await, rejected, "{case}");
        assert_eq!(self.items("dead").await, [], "{case}");
        assert_eq!(self.items("pending").await, [], "{case}");
    }

    /// Queue items in `state`: (direction, record key, last error).
    async fn items(&self, state: &str) -> Vec<Item> {
        sqlx::query_as(
            "SELECT direction, record_key, last_error FROM sync_queue WHERE state = $1 \
             ORDER BY direction, record_key",
        )
        .bind(state)
        .fetch_all(self.s.queue.pool())
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_contact_merged_in_hubspot_takes_the_pending_sql_change_and_its_link_follows() {
    // (the primary keeps its id, the member's contact is the merge's primary, SQL Server's
    // change is sent before HubSpot is polled)
    for (keep_id, member_primary, sql_first) in [
        (false, true, true),
        (false, false, false),
        (false, true, false),
        (false, false, true),
        (true, false, true),
        (true, false, false),
        (true, true, true),
        (true, true, false),
    ] {
        let case =
            format!("keep id {keep_id}, member primary {member_primary}, SQL first {sql_first}");
        Logs::capture();
        let b = both().await;
        let before = b.synced(keep_id).await;
        let (key, old) = first(&before);
        let member =
            b.s.mapper
                .to_hubspot(&b.rows_of(&before).await[&key])
                .properties;
        let contacts = b.s.sim.stats().contacts;
        let rejected = b.items("rejected").await;

        // SQL Server changes the member; before it is sent, a HubSpot user merges the member's
        // contact with a duplicate.
        b.sql_set(&key, "lastname", "Cambiada En SQL").await;
        assert_eq!(b.sql_poller.poll_once().await.unwrap().items_enqueued, 1);
        let rows_before = b.rows_of(&before).await;
        let contacts_before = b.contacts();
        let duplicate = b.duplicate();
        let survivor = match member_primary {
            true => b.merge(&old, &duplicate),
            false => b.merge(&duplicate, &old),
        };
        let moved = survivor != old;
        assert_eq!(moved, !(keep_id && member_primary), "{case}");

        // Whichever side meets the merge first moves the link: SQL Server's change reads the
        // old id and HubSpot answers with the survivor, or HubSpot's poller reads the
        // survivor, which lists the old id among those merged into it.
        let mut expected = before.clone();
        expected.insert(key.clone(), survivor.clone());
        let mut merges = match sql_first {
            true => {
                let (reads, updates) = (calls(&b.s.sim, READ), calls(&b.s.sim, UPDATE));
                let merges = b.s.worker.drain().await.unwrap().merges;
                let made = (
                    calls(&b.s.sim, READ) - reads,
                    calls(&b.s.sim, UPDATE) - updates,
                );
                assert_eq!(made, (1, 1), "{case}: one read, one update of the survivor");
                merges
            }
            false => {
                b.poll_hubspot().await;
                b.to_sql.drain().await.unwrap().merges
            }
        };
        assert_eq!(
            b.linked().await,
            expected,
            "{case}: the link follows at once"
        );
        for _ in 0..2 {
            merges += b.cycle_counting_merges().await;
        }

        // The link follows the survivor (only when it is not the member's own contact);
        // nothing else moves.
        let after = b.linked().await;
        assert_eq!(after, expected, "{case}");
        assert_eq!(merges, u64::from(moved), "{case}: merges counted");
        let lines = Logs::operations("MERGE");
        match moved {
            true => {
                assert_eq!(lines.len(), 1, "{case}: {lines:?}");
                let line = &lines[0];
                assert_eq!(line["record_key"], key.as_str(), "{case}");
                assert_eq!(line["old_hubspot_id"], old.as_str(), "{case}");
                assert_eq!(line["hubspot_id"], survivor.as_str(), "{case}");
                assert_eq!(line["status"], "done", "{case}");
            }
            false => assert_eq!(lines, Vec::<Value>::new(), "{case}"),
        }
        // Nothing duplicated or lost: one contact for the two, no SQL Server row added, every
        // item settled.
        assert_eq!(b.s.sim.stats().contacts, contacts, "{case}");
        assert_eq!(b.rows_of(&after).await.len(), before.len(), "{case}");
        b.assert_settled(&rejected, &case).await;

        // SQL Server's change is on the survivor, the duplicate's values (the primary's where
        // both had one, the duplicate's phone the member lacked) reached SQL Server, and both
        // sides agree on every field of every member.
        let contact = b.s.sim.contact(&survivor).unwrap();
        assert_eq!(contact.get("lastname"), Some("Cambiada En SQL"), "{case}");
        let (email, firstname) = match member_primary {
            true => (member["email"].as_deref(), member["firstname"].as_deref()),
            false => (Some(DUPLICATE_EMAIL), Some(DUPLICATE_NAME)),
        };
        assert_eq!(contact.get("email"), email, "{case}");
        assert_eq!(contact.get("firstname"), firstname, "{case}");
        assert_eq!(
            contact.get("telefono_oficina"),
            Some(DUPLICATE_PHONE),
            "{case}"
        );
        b.assert_in_step(&after, &case).await;
        let rows_after = b.rows_of(&after).await;
        let contacts_after = b.contacts();
        for (other, id) in after.iter().filter(|(k, _)| **k != key) {
            assert_eq!(rows_after[other], rows_before[other], "{case}: row {other}");
            assert_eq!(
                contacts_after[id], contacts_before[id],
                "{case}: contact {id}"
            );
        }

        // Settled: a quiet cycle reads and writes nothing.
        let writes = hubspot_writes(&b.s.sim);
        assert_eq!(b.cycle().await, (0, 0), "{case}");
        assert_eq!(hubspot_writes(&b.s.sim), writes, "{case}");
    }
}

#[tokio::test]
async fn two_members_whose_contacts_hubspot_merged_are_rejected_naming_each_other_and_nothing_is_written()
 {
    for (keep_id, sql_first) in [(false, true), (false, false), (true, true), (true, false)] {
        let case = format!("keep id {keep_id}, SQL first {sql_first}");
        let b = both().await;
        let before = b.synced(keep_id).await;
        let mut linked = before.iter();
        let (a, a_id) = linked.next().unwrap();
        let (z, z_id) = linked.next().unwrap();

        // Both members change in SQL Server; a HubSpot user merges their contacts.
        b.sql_set(a, "lastname", "Cambiada A").await;
        b.sql_set(z, "lastname", "Cambiada Z").await;
        assert_eq!(b.sql_poller.poll_once().await.unwrap().items_enqueued, 2);
        let survivor = b.merge(a_id, z_id);
        assert_eq!(survivor == *a_id, keep_id, "{case}");
        let rows_before = b.rows_of(&before).await;
        let contacts_before = b.contacts();
        let writes = hubspot_writes(&b.s.sim);

        if sql_first {
            let settled = b.s.worker.drain().await.unwrap();
            assert_eq!((settled.rejected, settled.done), (2, 0), "{case}");
        }
        for _ in 0..2 {
            assert_eq!(b.cycle_counting_merges().await, 0, "{case}");
        }

        // Nothing written to either side, no link moved.
        assert_eq!(hubspot_writes(&b.s.sim), writes, "{case}");
        assert_eq!(b.contacts(), contacts_before, "{case}");
        assert_eq!(b.rows_of(&before).await, rows_before, "{case}");
        assert_eq!(b.linked().await, before, "{case}");

        // Both members' changes and HubSpot's change of the survivor are rejected, each naming
        // the other member (or both), and show in `hubsync queue stuck`.
        let rejected = b.items("rejected").await;
        let mine: Vec<_> = rejected
            .iter()
            .filter(|(_, key, _)| [a, z, &survivor].contains(&key))
            .collect();
        assert_eq!(mine.len(), 3, "{case}: {rejected:?}");
        let stuck = queue_stuck(&b.s.url);
        let shown = |direction: &str, key: &str| -> String {
            let item = stuck
                .iter()
                .find(|i| i["direction"] == direction && i["record_key"] == key)
                .unwrap_or_else(|| panic!("{case}: {direction} {key} not in {stuck:?}"));
            assert_eq!(item["state"], "rejected", "{case}");
            item["last_error"].as_str().unwrap().to_string()
        };
        for (member, other) in [(a, z), (z, a)] {
            let error = shown("to_hubspot", member);
            assert!(
                error.contains(&format!("member {member} with that of member {other} "))
                    && error.contains(&format!("contact {survivor}")),
                "{case}: {error}"
            );
        }
        let error = shown("to_sql", &survivor);
        assert!(
            error.contains(&format!("members {a} and {z}")),
            "{case}: {error}"
        );
    }
}

#[tokio::test]
async fn a_change_of_the_merged_away_contact_read_before_the_merge_settles_before_the_survivor() {
    for keep_id in [false, true] {
        let case = format!("keep id {keep_id}");
        let b = both().await;
        let before = b.synced(keep_id).await;
        let (key, old) = first(&before);
        let rejected = b.items("rejected").await;

        // A HubSpot user edits the member's contact and the poller reads the edit; then the
        // user merges the contact into a duplicate, and the poller reads the survivor.
        let edit = UpdateInput {
            id: old.clone(),
            properties: BTreeMap::from([(
                "lastname".to_string(),
                Some("Antes De Fusionar".to_string()),
            )]),
        };
        b.client.batch_update("contacts", &[edit]).await.unwrap();
        assert_eq!(b.poll_hubspot().await.items_enqueued, 1, "{case}");
        let duplicate = b.duplicate();
        let survivor = b.merge(&duplicate, &old);
        assert_eq!(b.poll_hubspot().await.items_enqueued, 1, "{case}");

        // Both changes are claimed together: the older one settles first, the survivor's once
        // it has (a member takes one change a batch).
        let first = b.to_sql.drain().await.unwrap();
        assert_eq!((first.done, first.merges), (1, 0), "{case}: {first:?}");
        let attempts: i64 = sqlx::query_scalar("SELECT coalesce(sum(attempts), 0) FROM sync_queue")
            .fetch_one(b.s.queue.pool())
            .await
            .unwrap();
        assert_eq!(
            attempts, 0,
            "{case}: the survivor's change waited, charged nothing"
        );
        assert_eq!(b.linked().await[&key], old, "{case}");
        crate::support::make_due(b.s.queue.pool()).await;
        let second = b.to_sql.drain().await.unwrap();
        assert_eq!((second.done, second.merges), (1, 1), "{case}: {second:?}");
        let mut expected = before.clone();
        expected.insert(key.clone(), survivor.clone());
        assert_eq!(b.linked().await, expected, "{case}");

        for _ in 0..2 {
            b.cycle().await;
        }
        let row = b.reader.row_by_key(&key).await.unwrap().unwrap();
        assert_eq!(row["lastname"], "Antes De Fusionar", "{case}");
        assert_eq!(
            row["firstname"], DUPLICATE_NAME,
            "{case}: the primary's name"
        );
        b.assert_in_step(&expected, &case).await;
        assert_eq!(b.s.sim.contacts().len(), before.len(), "{case}");
        b.assert_settled(&rejected, &case).await;
    }
}

/// What `hubsync queue stuck --json` shows for the database at `url`.
fn queue_stuck(url: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "queue:\n  workers: 2\n").unwrap();
    let out = crate::support::hubsync(
        &[
            "--config",
            config.to_str().unwrap(),
            "queue",
            "stuck",
            "--json",
        ],
        &[("HUBSYNC_DATABASE_URL", url)],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_merge_between_the_read_and_the_update_is_followed_in_the_same_batch() {
    for keep_id in [false, true] {
        let s = stand().await;
        s.sim.set_settings(&SimSettings {
            preserve_primary_id: keep_id,
        });
        let members: Vec<SqlRow> = rows(20)
            .into_iter()
            .filter(|r| s.mapper.to_hubspot(r).is_valid())
            .collect();
        enqueue(&s.queue, &members, 1).await;
        s.worker.drain().await.unwrap();
        let mut changed = members[0].clone();
        let key = changed["numero_asociado"].to_string();
        let old: String =
            sqlx::query_scalar("SELECT hubspot_id FROM record_links WHERE sql_key = $1")
                .bind(&key)
                .fetch_one(s.queue.pool())
                .await
                .unwrap();
        let duplicate = s
            .sim
            .seed_contacts(&[BTreeMap::from([(
                "email".to_string(),
                Some(DUPLICATE_EMAIL.to_string()),
            )])])
            .unwrap()
            .remove(0);

        // HubSpot answers hubsync's read with the member's contact, then a HubSpot user merges
        // it into the duplicate before hubsync's update arrives.
        let merge = json!({"primaryObjectId": duplicate, "objectIdToMerge": old});
        let proxy = merge_before_first_update(s.sim.base_url(), merge).await;
        let worker = worker_with(
            &s.queue,
            &s.mapper,
            &contacts_config(),
            client_at(&proxy, Default::default()),
            None,
            None,
        );
        changed.insert("lastname".into(), "Cambiada En SQL".into());
        enqueue(&s.queue, &[changed], 2).await;
        let (reads, updates) = (calls(&s.sim, READ), calls(&s.sim, UPDATE));
        let settled = worker.drain().await.unwrap();

        assert_eq!(
            (settled.done, settled.retried, settled.merges),
            (1, 0, 1),
            "keep id {keep_id}: {settled:?}"
        );
        // The read, the update HubSpot left the merged-away id out of, the read by that id
        // that names the survivor, and the update of the survivor.
        assert_eq!(calls(&s.sim, READ) - reads, 2, "keep id {keep_id}");
        assert_eq!(calls(&s.sim, UPDATE) - updates, 2, "keep id {keep_id}");
        let survivor = s.sim.contact_by_email(DUPLICATE_EMAIL).unwrap();
        let survivor_id = survivor.id.to_string();
        assert_eq!(survivor_id == duplicate, keep_id);
        assert_eq!(survivor.get("lastname"), Some("Cambiada En SQL"));
        let (link, outcome, item_id): (String, String, String) = sqlx::query_as(
            "SELECT l.hubspot_id, q.outcome, q.hubspot_id FROM record_links l \
             JOIN sync_queue q ON q.record_key = l.sql_key AND q.source_version = 2 \
             WHERE l.sql_key = $1",
        )
        .bind(&key)
        .fetch_one(s.queue.pool())
        .await
        .unwrap();
        assert_eq!(
            (link.as_str(), outcome.as_str(), item_id.as_str()),
            (survivor_id.as_str(), "UPDATE", survivor_id.as_str())
        );
        assert_eq!(s.sim.stats().contacts as usize, members.len());
    }
}

/// A stand-in for HubSpot at `target` that forwards every request, and once, just before the
/// first batch update, sends `merge` to `target`'s merge endpoint. Returns its base URL.
async fn merge_before_first_update(target: String, merge: Value) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use axum::response::{IntoResponse, Response};

    struct Proxy {
        target: String,
        http: reqwest::Client,
        merge: tokio::sync::Mutex<Option<Value>>,
    }
    async fn forward(
        State(p): State<Arc<Proxy>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if uri.path().ends_with("/batch/update")
            && let Some(merge) = p.merge.lock().await.take()
        {
            let path = hubsync::hubspot::Paths::new(HubSpotSettings::default().api_version)
                .objects("contacts")
                .unwrap();
            let merged = p
                .http
                .post(format!("{}{path}/merge", p.target))
                .bearer_auth("sim-token")
                .json(&merge)
                .send()
                .await
                .unwrap();
            assert!(merged.status().is_success(), "{merged:?}");
        }
        let path = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let mut request = p.http.request(method, format!("{}{path}", p.target));
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let answer = request.body(body).send().await.unwrap();
        let (status, headers) = (answer.status(), answer.headers().clone());
        let mut response = (status, answer.bytes().await.unwrap()).into_response();
        for (name, value) in &headers {
            if name != "content-length" && name != "transfer-encoding" {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }
    let proxy = Arc::new(Proxy {
        target,
        http: reqwest::Client::new(),
        merge: tokio::sync::Mutex::new(Some(merge)),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
