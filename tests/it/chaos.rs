//! Issue #18's kill-and-compare at CI size: the scenario `hubsync bench chaos` runs (the daemon
//! SIGKILLed at seeded moments, edits on both sides, HubSpot faults, one HubSpot poller pass
//! slower than `search_lag`), then SQL Server and HubSpot compared field by field: every edit
//! on both sides, every member once, a conflict only where both sides changed a field.

use hubsync::bench::chaos::{ChaosOptions, scenario};

use crate::support::{example_config, fresh_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_faults_and_edits_on_both_sides_lose_no_edit_in_either_direction() {
    let (_pool, url) = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    // The scenario's members, as it generates them: their cédulas are looked for below.
    crate::support::members(0..2_500, 18);
    let report = scenario(ChaosOptions {
        members: 2_500,
        kills: 5,
        seed: 18,
        exe: env!("CARGO_BIN_EXE_hubsync").into(),
        config: std::fs::read_to_string(example_config()).unwrap(),
        database_url: Some(url),
        dir: Some(dir.path().to_path_buf()),
    })
    .await
    .unwrap();
    let lines = report.lines(10).join("\n");
    eprintln!("{lines}");
    // Every daemon life's stdout and stderr (`daemon-N.out`) and log files, and the report.
    let watch = crate::outputs::watch(&[]);
    let mut findings = crate::outputs::Findings::default();
    findings.scan_dir(dir.path(), &watch);
    findings.scan("the report", &lines, &watch);
    findings.assert_clean("`hubsync run` of the chaos scenario", &watch);
    let f = &report.findings;
    assert!(
        report.sql_edits > 0 && report.hubspot_edits > 0 && f.conflicts > 0,
        "{lines}"
    );
    assert_eq!(report.lost_to_sql(), 0, "{lines}");
    assert_eq!(report.lost_to_hubspot(), 0, "{lines}");
    assert_eq!(f.duplicates, 0, "{lines}");
    assert_eq!(report.false_conflicts(), 0, "{lines}");
    assert_eq!(
        f.settled, f.conflicts,
        "every conflict recorded and settled: {lines}"
    );
    assert!(
        f.missing.is_empty() && f.unexpected.is_empty() && f.differing.is_empty(),
        "{lines}"
    );
    assert_eq!(report.exit_code, Some(0), "{lines}");
    assert!(
        report.kills.iter().any(|k| !k.held.is_empty()),
        "some kills came mid-batch: {lines}"
    );
}
