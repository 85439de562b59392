//! The operator's command line, run as the real binary: check-config, migrate, queue commands,
//! exit codes, and secrets that never reach any output.

use std::path::Path;

use hubsync::queue::{Direction, ItemError, NewItem, Operation, Outcome, Queue};

use crate::support::{example_config, fresh_db, hubsync};

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";
const PASSWORD: &str = "s3cr3t-Pa55word";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Queues `items` for contacts in `direction` and claims them as worker `w`.
async fn enqueue_and_claim(
    queue: &Queue,
    direction: Direction,
    items: &[NewItem],
) -> Vec<hubsync::queue::ClaimedItem> {
    queue.enqueue("contacts", direction, items).await.unwrap();
    queue.claim("contacts", direction, 10, "w").await.unwrap()
}

/// `check-config --offline` of `config` with every secret it needs set, and `more`.
fn check_offline(config: &Path, more: &[(&str, &str)], dir: &Path) -> std::process::Output {
    let mut env = vec![
        (
            "HUBSYNC_DATABASE_URL",
            "postgres://hubsync@db.internal/hubsync",
        ),
        ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
        (
            "SQL_SERVER",
            "server=tcp:sql.internal,1433;database=coop;user=hubsync;password=x",
        ),
    ];
    env.extend_from_slice(more);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "check-config",
        "--offline",
    ];
    hubsync(&args, &env, dir)
}

#[test]
fn the_example_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    // Offline: the portal's rules are checked against a simulator in hubspot_client.
    let out = check_offline(&example_config(), &[], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // newest_wins without a SQL Server modification time: check-config says HubSpot wins.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "note: objects.contacts.conflict_policy: newest_wins has no SQL Server modification \
             time to compare (rowversion or change_tracking mode without \
             change_detection.modified_column): HubSpot's edit wins every conflict, and each \
             conflict records that reason",
            "ok"
        ]
    );
}

#[test]
fn check_config_refuses_a_bad_schedule_or_api_token_naming_it_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(example_config()).unwrap();
    let yaml = example
        + "\nschedules:\n  - { name: nightly, kind: backfill, object: contacts, cron: \"0 25 * * *\" }\n";
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let short = "short-token";
    let out = check_offline(&config, &[("HUBSYNC_API_TOKEN", short)], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(78), "{shown}");
    assert!(
        shown.contains("schedules[0].cron: schedule `nightly`: not a cron expression"),
        "{shown}"
    );
    assert!(shown.contains("service.api_token: too short"), "{shown}");
    assert!(!shown.contains(short), "{shown}");
}

#[test]
fn check_config_names_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "broken.yaml",
        "queue:\n  workers: 4\n  lease: two minutes\n  wokers: 3\nlogging:\n  retention_days: many\n\
         hubspot:\n  base_url: 'not a url'\nsql_server:\n  connection: ${SQL_SERVER}\n\
         objects:\n  contacts:\n    sql_table: dbo.hb_contacts\n    sql_key: numero_asociado\n",
    );
    let out = hubsync(
        &["--config", &config, "check-config"],
        &[("HUBSYNC_HUBSPOT_TOKEN", TOKEN)],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for (path, what) in [
        ("queue.lease", "duration"),
        ("queue.wokers", "unknown field"),
        ("logging.retention_days", "invalid type"),
        ("hubspot.base_url", "URL"),
        ("sql_server.connection", "SQL_SERVER is not set"),
        ("postgres.url", "HUBSYNC_DATABASE_URL"),
    ] {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(path))
            .unwrap_or_else(|| panic!("no problem reported for {path}:\n{err}"));
        assert!(
            line.to_lowercase().contains(&what.to_lowercase()),
            "{path}: {line}"
        );
    }
    assert!(
        err.contains("line 3"),
        "the first problem carries its line: {err}"
    );
    assert!(!text(&out).contains(TOKEN));
}

#[test]
fn an_unreadable_or_malformed_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let out = hubsync(
        &["--config", "missing.yaml", "check-config"],
        &[],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
    let bad = write(dir.path(), "bad.yaml", "queue: [\n  workers: 1\n");
    let out = hubsync(&["--config", &bad, "check-config"], &[], dir.path());
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line"));
}

#[test]
fn postgres_unreachable_exits_69_with_one_line_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write(dir.path(), "c.yaml", "postgres:\n  connect_timeout: 2s\n");
    let url = format!("postgres://hubsync:{PASSWORD}@127.0.0.1:{closed}/hubsync");
    for args in [
        &["queue", "stats"][..],
        &["migrate"],
        &["queue", "stuck"],
        &["queue", "retry", "--dead"],
    ] {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        let out = hubsync(&all, &[("HUBSYNC_DATABASE_URL", &url)], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {}", text(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("unreachable"), "{stderr}");
        assert!(!text(&out).contains(PASSWORD));
        assert!(!stderr.contains("panicked"));
    }
}

#[tokio::test]
async fn queue_commands_work_against_a_live_database() {
    let (pool, url) = fresh_db().await;
    let queue = Queue::new(pool.clone(), Default::default());
    let items: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| NewItem {
            record_key: k.to_string(),
            operation: Operation::Upsert,
            payload: serde_json::json!({ "email": format!("{k}@example.com") }),
            source_version: 1,
        })
        .collect();
    let batch = enqueue_and_claim(&queue, Direction::ToHubspot, &items).await;
    let results: Vec<_> = batch
        .iter()
        .map(|i| {
            (
                i,
                Outcome::Reject(vec![ItemError {
                    field: Some("email".into()),
                    rule: Some("email".into()),
                    ..ItemError::new("validation", "duplicate email")
                }]),
            )
        })
        .collect();
    queue.settle("w", &results).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.yaml", "queue:\n  workers: 2\n");
    let env = [("HUBSYNC_DATABASE_URL", url.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        hubsync(&all, &env, dir.path())
    };

    let out = run(&["queue", "stats", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["state"], "rejected");
    assert_eq!(rows[0]["items"], 3);

    let out = run(&["queue", "stats"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rejected"));

    let out = run(&["queue", "stuck"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("duplicate email"), "{stdout}");

    let first = batch[0].id.to_string();
    let out = run(&["queue", "discard", &first]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&["queue", "retry", "--rejected", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("retried 2 item(s)"));
    // Retrying the discarded item by id is refused with the reason, exit 1.
    let out = run(&["queue", "retry", &first]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("discarded"));

    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM sync_queue ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(states, ["discarded", "pending", "pending"]);
}

/// Rejected items whose stored errors quote personal data: `queue stuck` masks them unless
/// asked with `--unmask`.
#[tokio::test]
async fn queue_stuck_masks_stored_values_unless_unmasked() {
    let (pool, url) = fresh_db().await;
    let queue = Queue::new(pool.clone(), Default::default());
    let item = NewItem {
        record_key: "112345678".into(),
        operation: Operation::Upsert,
        payload: serde_json::json!({ "email": "ana.rojas@example.com" }),
        source_version: 1,
    };
    let batch = enqueue_and_claim(&queue, Direction::ToSql, &[item]).await;
    let errors = vec![
        ItemError {
            field: Some("firstname".into()),
            ..ItemError::new("validation", "\"Ana María Rojas Villalobos\" is too long")
        },
        ItemError::new(
            "sql_server",
            "SQL Server error 2627: The duplicate key value is (1-0234-0567). \
             Truncated value: 'ana.rojas.longname@examp'.",
        ),
    ];
    queue
        .settle("w", &[(&batch[0], Outcome::Reject(errors))])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.yaml", "queue:\n  workers: 2\n");
    let env = [("HUBSYNC_DATABASE_URL", url.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str(), "queue", "stuck"];
        all.extend_from_slice(args);
        // Asked for with --unmask, stdout shows the stored values: it is scanned for secrets only.
        let out = if args.contains(&"--unmask") {
            crate::support::hubsync_unmasked(&all, &env, dir.path())
        } else {
            hubsync(&all, &env, dir.path())
        };
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let clear = ["Ana María", "ana.rojas", "0234", "112345678"];
    for masked in [run(&[]), run(&["--json"])] {
        for value in clear {
            assert!(!masked.contains(value), "shows {value}: {masked}");
        }
        assert!(masked.contains("1-****-**78"), "{masked}");
        assert!(masked.contains("is too long"), "{masked}");
    }
    let unmasked = run(&["--json", "--unmask"]);
    for value in clear {
        assert!(unmasked.contains(value), "hides {value}: {unmasked}");
    }
}

#[tokio::test]
async fn migrate_is_idempotent_and_logs_json_lines_without_secrets() {
    let (_pool, url) = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = write(
        dir.path(),
        "c.yaml",
        &format!(
            "logging:\n  directory: {}\n  level: debug\n",
            logs.display()
        ),
    );
    let env = [
        ("HUBSYNC_DATABASE_URL", url.as_str()),
        ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
    ];
    let mut everything = String::new();
    for _ in 0..2 {
        let out = hubsync(&["--config", &config, "migrate"], &env, dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        everything.push_str(&text(&out));
    }
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one daily file: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("hubsync.") && name.ends_with(".log"),
        "{name}"
    );
    let file = std::fs::read_to_string(&files[0]).unwrap();
    everything.push_str(&file);
    let mut migrate_lines = 0;
    for line in file
        .lines()
        .chain(everything.lines().filter(|l| l.starts_with('{')))
    {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["operation"] == "MIGRATE" {
            migrate_lines += 1;
        }
    }
    assert!(migrate_lines >= 2, "{file}");
    assert!(!everything.contains(TOKEN));
}

#[tokio::test]
async fn pause_and_resume_stop_and_restart_a_direction_for_every_instance() {
    let (pool, url) = fresh_db().await;
    let queue = Queue::new(pool.clone(), Default::default());
    let item = NewItem {
        record_key: "10045".into(),
        operation: Operation::Upsert,
        payload: serde_json::json!({}),
        source_version: 1,
    };
    queue
        .enqueue("contacts", Direction::ToHubspot, &[item])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = example_config();
    let env = [("HUBSYNC_DATABASE_URL", url.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        hubsync(&all, &env, dir.path())
    };
    let out = run(&["pause", "--object", "contacts", "--direction", "to_hubspot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused contacts to_hubspot"));
    // Nobody claims the paused direction.
    assert!(
        queue
            .claim("contacts", Direction::ToHubspot, 10, "w")
            .await
            .unwrap()
            .is_empty()
    );
    let out = run(&["queue", "stats"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("paused: contacts to_hubspot since"),
        "{stdout}"
    );
    let out = run(&["queue", "stats", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["paused"], true, "{rows}");

    let out = run(&["resume", "--object", "contacts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("resumed contacts to_hubspot"), "{stdout}");
    assert!(
        stdout.contains("contacts to_sql was not paused"),
        "{stdout}"
    );
    assert_eq!(
        queue
            .claim("contacts", Direction::ToHubspot, 10, "w")
            .await
            .unwrap()
            .len(),
        1
    );
    let out = run(&["pause", "--object", "nope"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).contains("--object nope"), "{}", text(&out));
}
