//! `hubsync demo` as a user runs it: the real binary starts the simulators and the daemon, syncs
//! a small sample, edits both sides, prints a final report and stops everything. The report's
//! figures are checked against the queue database it leaves behind and against the rules.

use hubsync::config::{Need, load_str};
use hubsync::mapping::Mapper;
use regex::Regex;

use crate::support::{example_config, fresh_db, hubsync};

/// The number after `label` in the report, e.g. `synced to HubSpot: 1,234`.
fn figure(report: &str, label: &str) -> i64 {
    let re = Regex::new(&format!(r"{}: ([\d,]+)", regex::escape(label))).unwrap();
    let caps = re
        .captures(report)
        .unwrap_or_else(|| panic!("no `{label}` in the report:\n{report}"));
    caps[1].replace(',', "").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_a_sample_both_ways_reports_true_figures_and_stops_cleanly() {
    let (pool, url) = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let args = [
        "demo",
        "--members",
        "300",
        "--database-url",
        url.as_str(),
        "--dir",
        demo_dir.to_str().unwrap(),
        "--timeout",
        "2m",
    ];
    // The sample the demo loads (its default seed): its cédulas are looked for in everything
    // the demo and its daemon write (stdout, stderr, `daemon.out`, the log files in `--dir`).
    let sample = hubsync::demo::members::sample(300, 1);
    crate::outputs::watch_members(&sample);
    let out = tokio::task::block_in_place(|| hubsync(&args, &[], dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    // What the rules say about the same sample.
    let text = std::fs::read_to_string(example_config()).unwrap();
    let config = load_str(&text, Need::Nothing, &|_| None).unwrap();
    let mapper = Mapper::new(&config.objects["contacts"]).unwrap();
    let valid = sample
        .iter()
        .filter(|r| mapper.to_hubspot(r).is_valid())
        .count() as i64;
    assert!(valid > 200 && valid < 300, "{valid}");

    let report = &stdout[stdout
        .find("hubsync demo: final report")
        .unwrap_or_else(|| panic!("no final report:\n{stdout}"))..];
    assert_eq!(figure(report, "members in SQL Server"), 300);
    assert_eq!(figure(report, "synced to HubSpot"), valid, "{report}");
    assert!(report.contains("(no duplicates)"), "{report}");
    let rejected = figure(report, "rejected");
    assert_eq!(rejected, 300 - valid, "{report}");
    assert_eq!(figure(report, "dead"), 0);

    // The queue database agrees with the report.
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_links WHERE object = 'contacts' AND hubspot_id IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(linked, valid);
    let reasons: Vec<(String, String, i64)> = sqlx::query_as(
        "WITH newest AS (SELECT DISTINCT ON (record_key) record_key, state, errors \
           FROM sync_queue WHERE direction = 'to_hubspot' ORDER BY record_key, id DESC) \
         SELECT e->>'field', e->>'rule', count(DISTINCT record_key) \
         FROM newest, jsonb_array_elements(errors) e WHERE state = 'rejected' GROUP BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(reasons.len() >= 4, "varied reasons: {reasons:?}");
    for (field, rule, n) in reasons.iter().filter(|r| r.2 >= 5) {
        assert!(
            report.contains(&format!("{n:>6}  {field} ({rule})")),
            "{field}/{rule} × {n} missing from:\n{report}"
        );
    }
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sync_queue WHERE state IN ('pending', 'running')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(open, 0, "the queue is idle at the end");

    // Changes on both sides arrived, and at least one field edited on both is a conflict.
    let sql_edits = Regex::new(r"SQL Server edits in HubSpot: (\d+) of (\d+)").unwrap();
    let c = sql_edits.captures(report).unwrap();
    assert_eq!(&c[1], &c[2], "{report}");
    assert!(c[2].parse::<u32>().unwrap() >= 3);
    let hs_edits = Regex::new(r"HubSpot edits in SQL Server: (\d+) of (\d+)").unwrap();
    let c = hs_edits.captures(report).unwrap();
    assert_eq!(&c[1], &c[2], "{report}");
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue WHERE direction = 'to_sql' AND outcome = 'WRITE'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(written >= c[2].parse::<i64>().unwrap(), "{written}");
    let conflicts: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_conflicts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(conflicts >= 1);
    assert_eq!(figure(report, "conflicts"), conflicts, "{report}");

    // HubSpot's rate limit held.
    let api = Regex::new(r"busiest 10 s window (\d+) of (\d+) allowed").unwrap();
    let c = api.captures(report).unwrap();
    assert!(
        c[1].parse::<u32>().unwrap() <= c[2].parse::<u32>().unwrap(),
        "{report}"
    );
    assert!(figure(report, "HubSpot API") > valid / 100, "{report}");

    // Where to look, and a clean stop.
    assert!(stdout.contains("/metrics"), "{stdout}");
    assert!(
        stdout.contains("SELECT * FROM sync_queue_summary"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped cleanly"), "{stdout}");
    let logs: Vec<_> = std::fs::read_dir(demo_dir.join("logs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!logs.is_empty(), "the daemon logged to the demo's log dir");

    // No secret anywhere: output, daemon logs, config file.
    let mut everything = format!("{stdout}{stderr}");
    for entry in logs {
        everything.push_str(&std::fs::read_to_string(entry.path()).unwrap());
    }
    everything.push_str(&std::fs::read_to_string(demo_dir.join("config.yaml")).unwrap());
    everything.push_str(&std::fs::read_to_string(demo_dir.join("daemon.out")).unwrap());
    for secret in [hubsync::sim::mssql::DEFAULT_PASSWORD, "sim-token"] {
        let leak = everything.lines().find(|l| l.contains(secret));
        assert!(leak.is_none(), "{leak:?}");
    }
}
