//! `hubsync run` under faults, as a real process: a 30 s PostgreSQL outage, dropped SQL Server
//! connections, HubSpot answering 503, SIGTERM in the middle of a slow HubSpot batch, SIGHUP with a configuration
//! HubSpot cannot take and with a new field mapping, and the systemd unit's handling of a
//! configuration error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubsync::mapping::SqlRow;
use hubsync::pg::throwaway::{Cluster, Durability};
use hubsync::sim::hubspot::Faults;
use nix::sys::signal::Signal;
use sqlx::PgPool;

use crate::daemon::{Daemon, Sims, eventually, sims, write_config};
use crate::support::fresh_db;

/// Members `first..first + n` (numero_asociado `first + 1`…), some of them invalid.
fn members(first: u64, n: u64) -> Vec<SqlRow> {
    crate::support::members(first..first + n, first)
}

/// to_hubspot items: (distinct records, done, rejected, waiting or held, dead).
async fn to_hubspot_counts(pool: &PgPool) -> (i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(DISTINCT record_key), \
                count(*) FILTER (WHERE state = 'done'), \
                count(*) FILTER (WHERE state = 'rejected'), \
                count(*) FILTER (WHERE state IN ('pending', 'running')), \
                count(*) FILTER (WHERE state = 'dead') \
         FROM sync_queue WHERE direction = 'to_hubspot'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until `records` members have each been synced or rejected, with nothing left to do.
async fn wait_synced(pool: &PgPool, records: i64, limit: Duration) {
    eventually(&format!("{records} members settled"), limit, || async {
        let (distinct, done, rejected, open, _) = to_hubspot_counts(pool).await;
        distinct == records && open == 0 && done + rejected == records
    })
    .await;
}

/// Every member the queue synced is in HubSpot exactly once; nothing died.
async fn assert_nothing_lost(pool: &PgPool, sims: &Sims, records: i64) {
    let (distinct, done, rejected, open, dead) = to_hubspot_counts(pool).await;
    assert_eq!((distinct, open, dead), (records, 0, 0));
    assert_eq!(done + rejected, records);
    assert!(rejected > 0 && done > 0, "some members are invalid");
    let synced: BTreeSet<String> = sqlx::query_scalar(
        "SELECT record_key FROM sync_queue WHERE direction = 'to_hubspot' AND state = 'done'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let contacts = sims.hubspot.contacts();
    let in_hubspot: BTreeSet<String> = contacts
        .iter()
        .filter_map(|c| c.get("numero_asociado").map(str::to_string))
        .collect();
    assert_eq!(
        contacts.len(),
        in_hubspot.len(),
        "a member is in HubSpot twice"
    );
    assert_eq!(in_hubspot, synced);
}

fn assert_no_secrets(out: &str, sims: &Sims) {
    assert!(!out.contains(&sims.mssql.password()));
    assert!(!out.contains("sim-token"));
}

fn not_ready(component: &str) -> impl Fn(u16, &serde_json::Value) -> bool + '_ {
    move |code, body| {
        code == 503
            && body["not_ready"]
                .as_array()
                .is_some_and(|n| n.iter().any(|c| c == component))
    }
}

fn ready(code: u16, _: &serde_json::Value) -> bool {
    code == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_postgres_outage_is_reported_and_the_sync_resumes_without_losing_changes() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast))
            .await
            .unwrap()
            .unwrap(),
    );
    let url = cluster.create_database("outage").await.unwrap();
    let sims = Arc::new(sims().await);
    // Slow enough that batches are in flight when the database goes away.
    sims.hubspot.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    sims.mssql.insert_rows(&members(0, 200)).await;
    let mut daemon = Daemon::start_with(&url, sims.clone(), |c| {
        // A batch stranded by the outage is taken back soon after it ends.
        c.replace("lease: 2m", "lease: 6s")
            .replace("batch_size: 100", "batch_size: 20")
    })
    .await;
    daemon.expect_notify("READY=1");
    eventually(
        "the first members reach HubSpot",
        Duration::from_secs(30),
        || {
            let sims = sims.clone();
            async move { !sims.hubspot.contacts().is_empty() }
        },
    )
    .await;

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    let body = daemon
        .wait_readyz(
            "postgres down",
            Duration::from_secs(15),
            not_ready("postgres"),
        )
        .await;
    assert_eq!(body["components"]["postgres"]["ready"], false, "{body}");
    // Changes keep arriving in SQL Server during the outage.
    sims.mssql.insert_rows(&members(200, 100)).await;
    let outage_ends = Instant::now() + Duration::from_secs(30);
    while Instant::now() < outage_ends {
        assert!(daemon.running(), "{}", daemon.output());
        let (code, body) = daemon.readyz().await;
        assert!(not_ready("postgres")(code, &body), "{code} {body}");
        let alive = reqwest::get(daemon.url("/healthz")).await.unwrap();
        assert_eq!(alive.status(), 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap()
        .unwrap();

    daemon
        .wait_readyz("recovery", Duration::from_secs(60), ready)
        .await;
    let pool = hubsync::pg::connect_url(&url, 2, Duration::from_secs(10))
        .await
        .unwrap();
    wait_synced(&pool, 300, Duration::from_secs(90)).await;
    assert_nothing_lost(&pool, &sims, 300).await;
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("readiness changed"), "{out}");
    assert_no_secrets(&out, &sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_sql_server_connections_are_reported_and_the_sync_resumes() {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    let Some(sim) = sims.mssql.sim("cutting SQL Server connections") else {
        return;
    };
    sims.mssql.insert_rows(&members(0, 40)).await;
    let daemon = Daemon::start_with(&url, sims.clone(), |c| c).await;
    daemon.expect_notify("READY=1");
    wait_synced(&pool, 40, Duration::from_secs(30)).await;

    // Every connection is cut and the server refuses logins for a while.
    sim.refuse_logins_for(Duration::from_secs(8));
    sim.drop_connections();
    daemon
        .wait_readyz(
            "SQL Server down",
            Duration::from_secs(8),
            not_ready("sql_server"),
        )
        .await;
    sims.mssql.insert_rows(&members(40, 40)).await;
    daemon
        .wait_readyz("recovery", Duration::from_secs(30), ready)
        .await;
    wait_synced(&pool, 80, Duration::from_secs(60)).await;
    assert_nothing_lost(&pool, &sims, 80).await;
    // /metrics counted every outcome this process settled.
    let (_, done, rejected, _, _) = to_hubspot_counts(&pool).await;
    let metrics = daemon.metrics().await;
    for (outcome, n) in [("done", done), ("rejected", rejected)] {
        let line = format!(
            "hubsync_records_total{{object=\"contacts\",direction=\"to_hubspot\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert_no_secrets(&out, &sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_outage_is_reported_and_the_sync_resumes() {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    let daemon = Daemon::start_with(&url, sims.clone(), |c| {
        // Calls give up retrying soon, so the readiness check answers within seconds.
        c.replace("max_retry_elapsed: 2m", "max_retry_elapsed: 1s")
    })
    .await;
    daemon.expect_notify("READY=1");
    sims.hubspot.set_faults(Faults {
        error_rate: 1.0,
        error_statuses: vec![503],
        ..Faults::default()
    });
    let body = daemon
        .wait_readyz(
            "HubSpot down",
            Duration::from_secs(15),
            not_ready("hubspot"),
        )
        .await;
    assert!(
        body["components"]["hubspot"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("503")),
        "{body}"
    );
    sims.hubspot.set_faults(Faults::default());
    daemon
        .wait_readyz("recovery", Duration::from_secs(15), ready)
        .await;
    sims.mssql.insert_rows(&members(0, 20)).await;
    wait_synced(&pool, 20, Duration::from_secs(30)).await;
    assert_nothing_lost(&pool, &sims, 20).await;
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert_no_secrets(&out, &sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_exits_0_within_the_grace_period_and_a_restart_finishes_the_batch() {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    let daemon = Daemon::start_with(&url, sims.clone(), |c| c).await;
    daemon.expect_notify("READY=1");
    // HubSpot answers far slower than the 3 s grace period.
    sims.hubspot.set_faults(Faults {
        latency: Duration::from_secs(20),
        ..Faults::default()
    });
    sims.mssql.insert_rows(&members(0, 30)).await;
    eventually("a batch in flight", Duration::from_secs(20), || async {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot' AND state = 'running'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        running > 0
    })
    .await;

    let asked = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let (code, out) = tokio::task::block_in_place(|| daemon.wait());
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{out}");
    // The 3 s grace, then releasing the batch and closing down.
    assert!(took < Duration::from_secs(7), "took {took:?}: {out}");
    assert!(
        out.contains("shutdown grace ran out: batch released"),
        "{out}"
    );
    let states: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT state, attempts, count(*) FROM sync_queue WHERE direction = 'to_hubspot' \
         GROUP BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [("pending".to_string(), 0, 30)],
        "released, not failed"
    );

    sims.hubspot.set_faults(Faults::default());
    let daemon = Daemon::start_with(&url, sims.clone(), |c| c).await;
    daemon.expect_notify("READY=1");
    wait_synced(&pool, 30, Duration::from_secs(30)).await;
    assert_nothing_lost(&pool, &sims, 30).await;
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
}

/// The contact table and HubSpot properties plus a column/property pair the shipped mapping
/// does not use yet.
async fn sims_with_ocupacion() -> Sims {
    let mut properties = hubsync::sim::hubspot::default_properties();
    properties.push(hubsync::sim::hubspot::PropertyDef::custom(
        "ocupacion",
        "Ocupación",
        hubsync::sim::hubspot::PropertyType::String,
    ));
    let options = hubsync::sim::hubspot::SimOptions {
        properties,
        ..hubsync::sim::hubspot::SimOptions::lagging()
    };
    let hubspot = hubsync::sim::hubspot::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let mssql = crate::sql_target::SqlTarget::start_with(Default::default(), |schema| {
        schema.replace(
            "[hubspot_id] NVARCHAR(20) NULL,",
            "[ocupacion] NVARCHAR(100) NULL,\n    [hubspot_id] NVARCHAR(20) NULL,",
        )
    })
    .await;
    Sims { hubspot, mssql }
}

/// The shipped mapping plus `ocupacion` → `property`.
fn with_ocupacion(property: &str) -> impl Fn(String) -> String + '_ {
    move |c| {
        c.replace(
            "    fields:\n",
            &format!(
                "    fields:\n      - {{ sql: ocupacion, hubspot: {property}, direction: to_hubspot, transform: [collapse_spaces] }}\n"
            ),
        )
    }
}

fn ocupacion_of(sims: &Sims, numero: &str) -> Option<String> {
    sims.hubspot
        .contacts()
        .into_iter()
        .find(|c| c.get("numero_asociado") == Some(numero))
        .and_then(|c| c.get("ocupacion").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_mapping_hubspot_cannot_take_and_applies_a_new_field() {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims_with_ocupacion().await);
    let mut rows = members(0, 20);
    for row in &mut rows {
        row.insert("ocupacion".into(), "Docente".into());
    }
    sims.mssql.insert_rows(&rows).await;
    let daemon = Daemon::start_with(&url, sims.clone(), |c| c).await;
    daemon.expect_notify("READY=1");
    wait_synced(&pool, 20, Duration::from_secs(30)).await;
    assert_eq!(ocupacion_of(&sims, "1"), None, "not mapped yet");

    // A property HubSpot does not have: refused, the running mapping stays.
    write_config(
        &daemon.config,
        &daemon.config_text(with_ocupacion("ocupacion_x")),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");
    let out = daemon
        .wait_output("configuration reload rejected", Duration::from_secs(10))
        .await;
    assert!(
        out.contains("HubSpot property `ocupacion_x` does not exist"),
        "{out}"
    );
    sims.mssql.insert_rows(&members(20, 1)).await;
    wait_synced(&pool, 21, Duration::from_secs(30)).await;

    // The column mapped to the new property: applied, and changes carry it from now on.
    write_config(
        &daemon.config,
        &daemon.config_text(with_ocupacion("ocupacion")),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");
    daemon
        .wait_output("configuration reloaded", Duration::from_secs(10))
        .await;
    sims.mssql
        .execute_batch(&format!(
            "UPDATE {} SET [ocupacion] = N'Ingeniera' WHERE [numero_asociado] = 1",
            sims.mssql.quoted()
        ))
        .await
        .unwrap();
    eventually(
        "the new field reaches HubSpot",
        Duration::from_secs(30),
        || {
            let sims = sims.clone();
            async move { ocupacion_of(&sims, "1").as_deref() == Some("Ingeniera") }
        },
    )
    .await;
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert_no_secrets(&out, &sims);
}

#[test]
fn a_configuration_error_exits_78_and_the_unit_does_not_restart_on_it() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hubsync.service"),
    )
    .unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(get("Restart"), ["on-failure"]);
    assert!(
        get("RestartPreventExitStatus")
            .iter()
            .any(|v| v.split_whitespace().any(|s| s == "78"))
    );
    // systemd applies RestartPreventExitStatus= to the main process only: a failing
    // ExecStartPre= would restart-loop. So the check's failure is ignored (`-`) and `run`,
    // which checks the same file, exits 78 itself.
    let pre = get("ExecStartPre");
    assert!(
        pre.iter()
            .all(|p| !p.contains("check-config") || p.starts_with('-')),
        "{pre:?}"
    );
    assert!(get("ExecStart")[0].ends_with(" run"), "{unit}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.yaml");
    std::fs::write(&bad, "queue:\n  lease: soon\n").unwrap();
    let bad = bad.to_str().unwrap();
    for command in ["check-config", "run"] {
        let out = crate::support::hubsync(&["--config", bad, command], &[], dir.path());
        assert_eq!(out.status.code(), Some(78), "{command}: {out:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("queue.lease"), "{command}: {text}");
    }
}

/// A reload (or shutdown) cancels a poll midway; the poller's election lock must not outlive it,
/// or the next poller — on another connection or in another process — would never be elected.
#[tokio::test]
async fn a_poll_cancelled_midway_leaves_the_election_free() {
    use hubsync::queue::Direction;
    use hubsync::sync::poller::{Polled, elected};
    let (pool, url) = fresh_db().await;
    let midway = elected(&pool, "contacts", Direction::ToHubspot, || {
        std::future::pending::<anyhow::Result<Polled>>()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), midway)
            .await
            .is_err()
    );
    let other = hubsync::pg::connect_url(&url, 1, Duration::from_secs(10))
        .await
        .unwrap();
    eventually(
        "another session is elected",
        Duration::from_secs(5),
        || async {
            let polled = elected(&other, "contacts", Direction::ToHubspot, || async {
                Ok(Polled::default())
            })
            .await
            .unwrap();
            polled.elected
        },
    )
    .await;
}
