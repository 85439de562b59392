//! `run --once --dry-run` and `hubsync backfill` as real processes against a real PostgreSQL and
//! both simulators: the dry run prints exactly what the real run then does and writes nothing;
//! a backfill queues every record again, shows its totals and resumes where it stopped.

use std::collections::BTreeMap;
use std::process::Output;

use hubsync::mapping::{Mapper, SqlRow};
use sqlx::PgPool;

use crate::daemon::{Sims, config_text, sims};
use crate::support::{fresh_db, hubspot_writes};

struct Setup {
    pool: PgPool,
    url: String,
    sims: Sims,
    dir: tempfile::TempDir,
    members: Vec<SqlRow>,
    mapper: Mapper,
}

async fn setup(n: u64) -> Setup {
    let (pool, url) = fresh_db().await;
    let sims = sims().await;
    let members = crate::support::members(0..n, 5);
    sims.mssql.insert_rows(&members).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(0, &sims, &dir.path().join("logs"));
    std::fs::write(dir.path().join("config.yaml"), &text).unwrap();
    let config =
        hubsync::config::load_str(&text, hubsync::config::Need::Nothing, &|_| None).unwrap();
    let mapper = Mapper::new(&config.objects["contacts"]).unwrap();
    Setup {
        pool,
        url,
        sims,
        dir,
        members,
        mapper,
    }
}

impl Setup {
    /// Runs the hubsync binary with this setup's config and secrets.
    fn hubsync(&self, args: &[&str]) -> Output {
        self.run(args, crate::support::hubsync)
    }

    /// [`Setup::hubsync`] with `--unmask` in `args`: stdout may show personal data.
    fn hubsync_unmasked(&self, args: &[&str]) -> Output {
        self.run(args, crate::support::hubsync_unmasked)
    }

    fn run(&self, args: &[&str], hubsync: crate::support::Run) -> Output {
        let config = self.dir.path().join("config.yaml");
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let connection = self.sims.mssql.connection_string();
        let env = [
            ("HUBSYNC_DATABASE_URL", self.url.as_str()),
            ("HUBSYNC_HUBSPOT_TOKEN", "sim-token"),
            ("HUBSYNC_SQL_SERVER", connection.as_str()),
        ];
        // The simulators keep serving on the other runtime threads meanwhile.
        tokio::task::block_in_place(|| hubsync(&all, &env, self.dir.path()))
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Queue items, links and cursors: what a run writes to PostgreSQL.
    async fn rows_written(&self) -> i64 {
        self.count(
            "SELECT (SELECT count(*) FROM sync_queue) + (SELECT count(*) FROM record_links) \
             + (SELECT count(*) FROM sync_cursors) + (SELECT count(*) FROM sync_conflicts)",
        )
        .await
    }

    /// SQL Server rows whose first name is `name`.
    async fn firstnames_like(&self, name: &str) -> i32 {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE [firstname] = N'{name}'",
            self.sims.mssql.quoted()
        );
        self.sims.mssql.first_int(&sql).await
    }

    /// A HubSpot client of the simulator, as a HubSpot user's other integration would use it.
    fn hubspot_client(&self) -> hubsync::hubspot::HubSpotClient {
        let settings = hubsync::hubspot::HubSpotSettings {
            base_url: self.sims.hubspot.base_url().parse().unwrap(),
            token: Some("sim-token".to_string().into()),
            ..Default::default()
        };
        let limiter = std::sync::Arc::new(hubsync::hubspot::Limiter::from_settings(&settings));
        hubsync::hubspot::HubSpotClient::new(&settings, limiter).unwrap()
    }

    fn valid_keys(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| self.mapper.to_hubspot(m).is_valid())
            .map(|m| m["numero_asociado"].to_string())
            .collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The planned operations printed on stdout, by record key.
fn plan(out: &Output) -> BTreeMap<(String, String), serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let op: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                op["direction"].as_str().unwrap().to_string(),
                op["record_key"].as_str().unwrap().to_string(),
            );
            (key, op)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_exactly_what_the_run_then_does_and_writes_nothing() {
    let s = setup(200).await;
    // 20 members already exist in HubSpot (email in capitals, another first name).
    let valid = s.valid_keys();
    let existing: Vec<&SqlRow> = s
        .members
        .iter()
        .filter(|m| valid.contains(&m["numero_asociado"].to_string()))
        .take(20)
        .collect();
    let seeds: Vec<BTreeMap<String, Option<String>>> = existing
        .iter()
        .map(|m| {
            let mut props = s.mapper.to_hubspot(m).properties;
            let email = props["email"].clone().unwrap().to_uppercase();
            props.insert("email".into(), Some(email));
            props.insert("firstname".into(), Some("Otro".into()));
            props.into_iter().collect()
        })
        .collect();
    s.sims.hubspot.seed_contacts(&seeds).unwrap();
    let sql_rows = || async {
        let sql = format!("SELECT COUNT(*) FROM {}", s.sims.mssql.quoted());
        s.sims.mssql.first_int(&sql).await
    };
    let sql_before = sql_rows().await;

    // By default the plan hides every value it would send.
    let out = s.hubsync(&["run", "--once", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for m in &existing {
        let op = &plan(&out)[&("to_hubspot".into(), m["numero_asociado"].to_string())];
        assert_eq!(op["properties"]["firstname"], "***", "{op}");
        let email = m["email"].as_str().unwrap();
        assert!(!stdout.contains(email), "{email} shown: {op}");
        let cedula = s.mapper.to_hubspot(m).properties["no__de_cedula"]
            .clone()
            .unwrap();
        assert!(!stdout.contains(&cedula), "{cedula} shown: {op}");
    }

    let out = s.hubsync_unmasked(&["run", "--once", "--dry-run", "--unmask"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some are rejected: {}",
        text(&out)
    );
    let planned = plan(&out);
    // Nothing was written anywhere.
    assert_eq!(hubspot_writes(&s.sims.hubspot), 0);
    assert_eq!(s.sims.hubspot.contacts().len(), 20);
    assert_eq!(sql_rows().await, sql_before);
    assert_eq!(s.rows_written().await, 0);

    let actions = |action: &str| {
        planned
            .values()
            .filter(|op| op["direction"] == "to_hubspot" && op["action"] == action)
            .count()
    };
    assert_eq!(actions("CREATE"), valid.len() - 20);
    assert_eq!(actions("UPDATE"), 20);
    assert_eq!(actions("REJECT"), s.members.len() - valid.len());
    for m in &existing {
        let op = &planned[&("to_hubspot".into(), m["numero_asociado"].to_string())];
        assert_eq!(op["properties"]["firstname"], m["firstname"], "{op}");
        assert!(op["hubspot_id"].is_string());
    }
    for op in planned.values().filter(|op| op["action"] == "REJECT") {
        let first = &op["errors"][0];
        assert_eq!(
            (&first["field"], &first["rule"]),
            (&"email".into(), &"email".into()),
            "{op}"
        );
    }
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("nothing was written"), "{summary}");

    // The real run does exactly what was planned, record by record.
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let outcomes: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT record_key, state, outcome FROM sync_queue WHERE direction = 'to_hubspot'",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(outcomes.len(), s.members.len());
    for (key, state, outcome) in outcomes {
        let op = &planned[&("to_hubspot".into(), key)];
        let did = if state == "rejected" {
            "REJECT".to_string()
        } else {
            outcome.unwrap()
        };
        assert_eq!(op["action"], did.as_str(), "{op}");
    }
    assert_eq!(s.sims.hubspot.contacts().len(), valid.len());

    // HubSpot users edit 5 contacts and add one SQL Server does not have: the dry run plans the
    // 5 SQL Server writes (the new one is ignored, as configured) and writes nothing.
    let client = s.hubspot_client();
    let edited: Vec<(String, String)> =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links ORDER BY sql_key LIMIT 5")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    let edits: Vec<hubsync::hubspot::types::UpdateInput> = edited
        .iter()
        .map(|(_, id)| hubsync::hubspot::types::UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("firstname".into(), Some("Desde HubSpot".into()))]),
        })
        .collect();
    client.batch_update("contacts", &edits).await.unwrap();
    let stranger = BTreeMap::from([("email".to_string(), Some("nuevo@example.com".to_string()))]);
    s.sims.hubspot.seed_contacts(&[stranger]).unwrap();
    s.sims.hubspot.indexed().await;
    let (writes, rows) = (hubspot_writes(&s.sims.hubspot), s.rows_written().await);
    let out = s.hubsync_unmasked(&["run", "--once", "--dry-run", "--unmask"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        (hubspot_writes(&s.sims.hubspot), s.rows_written().await),
        (writes, rows)
    );
    let planned = plan(&out);
    let to_sql: Vec<&serde_json::Value> = planned
        .values()
        .filter(|op| op["direction"] == "to_sql" && op["action"] == "WRITE")
        .collect();
    assert_eq!(to_sql.len(), 5, "{}", text(&out));
    for op in &to_sql {
        assert_eq!(op["properties"]["firstname"], "Desde HubSpot", "{op}");
        assert!(edited.iter().any(|(_, id)| op["record_key"] == id.as_str()));
    }
    let ignored = planned
        .values()
        .filter(|op| op["direction"] == "to_sql" && op["action"] == "SKIP")
        .filter(|op| {
            op["message"]
                .as_str()
                .unwrap()
                .contains("on_new_hubspot_record")
        })
        .count();
    assert_eq!(ignored, 1);
    // SQL Server still holds the old names; the real run writes exactly the 5 planned.
    assert_eq!(s.firstnames_like("Desde HubSpot").await, 0);
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written: i64 = s
        .count("SELECT count(*) FROM sync_queue WHERE direction = 'to_sql' AND outcome = 'WRITE'")
        .await;
    assert_eq!(written, 5);
    assert_eq!(s.firstnames_like("Desde HubSpot").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_queues_every_record_again_and_resumes_where_it_stopped() {
    let mut s = setup(150).await;
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let synced = s.valid_keys();
    let writes = hubspot_writes(&s.sims.hubspot);

    // A full resync queues every row again, even versions already synced or rejected.
    let out = s.hubsync(&["backfill", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("150 records read, 150 items queued"),
        "{}",
        text(&out)
    );
    let pending =
        "SELECT count(*) FROM sync_queue WHERE state = 'pending' AND direction = 'to_hubspot'";
    assert_eq!(s.count(pending).await, 150);
    // Nothing changed since: the run skips the valid ones and writes nothing to HubSpot.
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(hubspot_writes(&s.sims.hubspot), writes);
    let skipped =
        "SELECT count(*) FROM sync_queue WHERE outcome = 'SKIP' AND direction = 'to_hubspot'";
    assert_eq!(s.count(skipped).await, synced.len() as i64);

    // A backfill interrupted after the first 150 rows, with 100 rows added since, resumes there:
    // it reads only the 100 (the totals are cumulative).
    let more = crate::support::members(150..250, 6);
    s.sims.mssql.insert_rows(&more).await;
    s.members.extend(more);
    sqlx::query(
        "UPDATE sync_backfills SET finished_at = NULL, rows_read = 150, cursor_value = \
         (SELECT cursor_value FROM sync_cursors WHERE direction = 'to_hubspot')",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    let out = s.hubsync(&["backfill", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("250 records read, 250 items queued (resumed)"),
        "{}",
        text(&out)
    );
    let finished =
        "SELECT count(*) FROM sync_backfills WHERE finished_at IS NOT NULL AND rows_read = 250";
    assert_eq!(s.count(finished).await, 1);

    // A backfill dry run plans every record and queues nothing: the synced ones are skipped,
    // the new valid ones created.
    let before = s.count("SELECT count(*) FROM sync_queue").await;
    let out = s.hubsync(&["backfill", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let planned = plan(&out);
    assert_eq!(planned.len(), 250);
    let count = |action: &str| planned.values().filter(|op| op["action"] == action).count();
    assert_eq!(count("SKIP"), synced.len());
    assert_eq!(count("CREATE"), s.valid_keys().len() - synced.len());
    assert_eq!(count("REJECT"), 250 - s.valid_keys().len());
    assert_eq!(s.count("SELECT count(*) FROM sync_queue").await, before);

    let out = s.hubsync(&["backfill", "--object", "nope"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).contains("--object nope"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_after_an_initial_backfill_polls_from_where_the_backfill_ended() {
    let s = setup(120).await;
    let out = s.hubsync(&["backfill", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The SQL Server poller, never run, takes the backfill's end as its position.
    let (poller, backfill): (Option<serde_json::Value>, Option<serde_json::Value>) =
        sqlx::query_as(
            "SELECT (SELECT cursor_value FROM sync_cursors WHERE object = 'contacts' \
                     AND direction = 'to_hubspot'), \
                    (SELECT cursor_value FROM sync_backfills WHERE object = 'contacts' \
                     AND direction = 'to_hubspot')",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert!(backfill.is_some());
    assert_eq!(poller, backfill);
    // A row changed after the backfill is still read by the service's first poll.
    let key = s.valid_keys().remove(0);
    let mut c = s.sims.mssql.client().await;
    c.execute(
        format!(
            "UPDATE {} SET [firstname] = @P1 WHERE [numero_asociado] = @P2",
            s.sims.mssql.quoted()
        ),
        &[&"Cambiada", &key.as_str()],
    )
    .await
    .unwrap();
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let contact = s
        .sims
        .hubspot
        .contacts()
        .into_iter()
        .find(|c| c.properties.get("numero_asociado") == Some(&key))
        .unwrap();
    assert_eq!(contact.properties["firstname"], "Cambiada");
    // One item per row: the change replaced its row's still pending backfill item.
    let items = s
        .count("SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot'")
        .await;
    assert_eq!(items, 120);
}

/// Pending to_hubspot items of member `key`.
async fn pending_for_hubspot(pool: &PgPool, key: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot' AND state = 'pending' \
         AND record_key = $1",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_queues_exactly_the_members_named() {
    let s = setup(40).await;
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let before = s
        .count("SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot'")
        .await;
    let keys: Vec<String> = s.valid_keys().into_iter().take(3).collect();
    let mut args = vec!["resync", "--object", "contacts"];
    for k in &keys {
        args.extend(["--member", k.as_str()]);
    }
    let out = s.hubsync(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("queued 3 of 3 member(s) of contacts"),
        "{}",
        text(&out)
    );
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT record_key FROM sync_queue WHERE direction = 'to_hubspot' AND state = 'pending' \
         ORDER BY record_key",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(pending, want, "exactly those 3, though none changed");
    let after = s
        .count("SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot'")
        .await;
    assert_eq!(after, before + 3);
    // Unchanged since their sync: the run skips them without a HubSpot write.
    let writes = hubspot_writes(&s.sims.hubspot);
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hubspot_writes(&s.sims.hubspot), writes);
    // A member named by the email it was synced with.
    let fourth = s.valid_keys().remove(3);
    let row = s
        .members
        .iter()
        .find(|m| {
            let id = m["numero_asociado"].to_string();
            id == fourth
        })
        .unwrap();
    let email = s.mapper.to_hubspot(row).properties["email"]
        .clone()
        .unwrap();
    let shouted = email.to_uppercase();
    let out = s.hubsync(&["resync", "--object", "contacts", "--email", &shouted]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(pending_for_hubspot(&s.pool, &fourth).await, 1);
    let out = s.hubsync(&[
        "resync",
        "--object",
        "contacts",
        "--email",
        "nadie@example.com",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no synced member with email: n***@example.com"),
        "{}",
        text(&out)
    );
    // A member named by the cédula as SQL Server holds it (the mapping normalises it).
    let fifth = s.valid_keys().remove(4);
    let row = s
        .members
        .iter()
        .find(|m| {
            let id = m["numero_asociado"].to_string();
            id == fifth
        })
        .unwrap();
    let cedula = row["no__de_cedula"].as_str().unwrap().to_string();
    let out = s.hubsync(&["resync", "--object", "contacts", "--cedula", &cedula]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("queued 1 of 1"), "{}", text(&out));
    assert_eq!(pending_for_hubspot(&s.pool, &fifth).await, 1);
    let out = s.hubsync(&["resync", "--object", "contacts", "--cedula", "1-0999-0999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no synced member with cédula: 1-****-**99"),
        "{}",
        text(&out)
    );
    // A key without a row is named, exit 1.
    let out = s.hubsync(&["resync", "--object", "contacts", "--member", "999999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no SQL Server row for: 999999"),
        "{}",
        text(&out)
    );
}

/// Tables of the queue database whose rows, as text, contain `needle` (every table and column;
/// the server quotes the names itself).
pub(crate) async fn tables_holding(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(tables >= 7, "{tables} tables");
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' \
           AND (xpath('/row/n/text()', query_to_xml(format( \
                 'SELECT count(*) AS n FROM %I x WHERE x::text ILIKE %L', \
                 c.relname, '%' || $1 || '%'), false, true, '')))[1]::text::bigint > 0 \
         ORDER BY 1",
    )
    .bind(needle)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_erases_every_copy_of_a_member_from_hubsyncs_tables_and_from_hubspot() {
    let s = setup(30).await;
    let key = s.valid_keys().remove(0);
    let other = s.valid_keys().remove(1);
    // A name no other member has.
    let mut c = s.sims.mssql.client().await;
    c.execute(
        format!(
            "UPDATE {} SET [firstname] = @P1, [lastname] = @P2 WHERE [numero_asociado] = @P3",
            s.sims.mssql.quoted()
        ),
        &[&"Zelmira", &"Quirós Olvido", &key.as_str()],
    )
    .await
    .unwrap();
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let member = |k: &str| {
        let row = s
            .members
            .iter()
            .find(|m| {
                let id = m["numero_asociado"].to_string();
                id == k
            })
            .unwrap();
        s.mapper.to_hubspot(row).properties
    };
    let props = member(&key);
    let email = props["email"].clone().unwrap();
    let cedula = props["no__de_cedula"].clone().unwrap();
    let linked: String = sqlx::query_scalar(
        "SELECT hubspot_id FROM record_links WHERE object = 'contacts' AND sql_key = $1",
    )
    .bind(&key)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    // A HubSpot user edits the contact: its change comes back through the HubSpot poller.
    let client = s.hubspot_client();
    let edit = hubsync::hubspot::types::UpdateInput {
        id: linked.clone(),
        properties: BTreeMap::from([("lastname".into(), Some("Quirós Olvido Segunda".into()))]),
    };
    client.batch_update("contacts", &[edit]).await.unwrap();
    s.sims.hubspot.indexed().await;
    let out = s.hubsync(&["run", "--once"]);
    assert!(out.status.code().is_some(), "{}", text(&out));
    for needle in [email.as_str(), cedula.as_str(), "Zelmira", "Quirós Olvido"] {
        assert!(
            !tables_holding(&s.pool, needle).await.is_empty(),
            "held before: {needle}"
        );
    }

    let out = s.hubsync(&[
        "forget",
        "--object",
        "contacts",
        "--member",
        &key,
        "--hubspot",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("HubSpot contact {linked} deleted for good")),
        "{}",
        text(&out)
    );
    for needle in [email.as_str(), cedula.as_str(), "Zelmira", "Quirós Olvido"] {
        assert_eq!(
            tables_holding(&s.pool, needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
    // Its history is one ERASE row, made by forget (no direction), with ids and counts only.
    let history: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT operation, direction, hubspot_id FROM sync_history WHERE sql_key = $1",
    )
    .bind(&key)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(history, [("ERASE".to_string(), None, Some(linked.clone()))]);
    // Only that member: another's data is still there.
    let other_email = member(&other)["email"].clone().unwrap();
    assert!(!tables_holding(&s.pool, &other_email).await.is_empty());
    // In HubSpot the contact is gone for good.
    assert!(s.sims.hubspot.contact(&linked).is_none());
    assert!(
        s.sims
            .hubspot
            .contacts()
            .iter()
            .all(|c| c.properties.get("email") != Some(&email))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_synced_accepts_what_both_sides_agree_on_after_a_bulk_fix() {
    let s = setup(30).await;
    let out = s.hubsync(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    s.sims.hubspot.indexed().await;
    let links: Vec<(String, String)> =
        sqlx::query_as("SELECT sql_key, hubspot_id FROM record_links ORDER BY sql_key LIMIT 3")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    // A bulk fix made the first two members' first names "Corregido" on both sides; the third
    // only in SQL Server.
    let mut c = s.sims.mssql.client().await;
    for (key, _) in &links {
        c.execute(
            format!(
                "UPDATE {} SET [firstname] = @P1 WHERE [numero_asociado] = @P2",
                s.sims.mssql.quoted()
            ),
            &[&"Corregido", &key.as_str()],
        )
        .await
        .unwrap();
    }
    let edits: Vec<hubsync::hubspot::types::UpdateInput> = links[..2]
        .iter()
        .map(|(_, id)| hubsync::hubspot::types::UpdateInput {
            id: id.clone(),
            properties: BTreeMap::from([("firstname".into(), Some("Corregido".into()))]),
        })
        .collect();
    s.hubspot_client()
        .batch_update("contacts", &edits)
        .await
        .unwrap();
    let snapshot = |key: String| {
        let pool = s.pool.clone();
        async move {
            let name: Option<String> = sqlx::query_scalar(
                "SELECT synced->>'firstname' FROM record_links WHERE sql_key = $1",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap();
            name
        }
    };
    let report = |out: &Output| -> BTreeMap<String, serde_json::Value> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["record_key"].as_str().unwrap().to_string(), v))
            .collect()
    };
    // The dry run says what would change, and changes nothing.
    let out = s.hubsync(&["mark-synced", "--object", "contacts", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let planned = report(&out);
    for (key, _) in &links[..2] {
        assert_eq!(
            planned[key]["fields"],
            serde_json::json!(["firstname"]),
            "{planned:?}"
        );
    }
    assert_eq!(
        planned[&links[2].0]["differ"],
        serde_json::json!(["firstname"])
    );
    assert_eq!(planned[&links[2].0]["fields"], serde_json::json!([]));
    assert!(
        text(&out).contains("dry run: nothing was written"),
        "{}",
        text(&out)
    );
    assert_ne!(
        snapshot(links[0].0.clone()).await.as_deref(),
        Some("Corregido")
    );
    // For real: the agreed values become the baseline; the differing field keeps its snapshot.
    let out = s.hubsync(&["mark-synced", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out), planned);
    for (key, _) in &links[..2] {
        assert_eq!(snapshot(key.clone()).await.as_deref(), Some("Corregido"));
    }
    assert_ne!(
        snapshot(links[2].0.clone()).await.as_deref(),
        Some("Corregido")
    );
    // The next sync sends only the member the fix reached on one side.
    let writes = hubspot_writes(&s.sims.hubspot);
    let out = s.hubsync(&["run", "--once"]);
    assert!(out.status.code().is_some(), "{}", text(&out));
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT record_key FROM sync_queue WHERE direction = 'to_hubspot' AND outcome = 'UPDATE'",
    )
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(sent, [links[2].0.clone()]);
    assert!(hubspot_writes(&s.sims.hubspot) > writes);
}
