//! Jobs: the job API over HTTP against running daemons (every status code with and without the
//! token), a backfill job surviving `kill -9` of its daemon, two instances never running one job
//! twice, the claim and lease against real PostgreSQL, and schedules firing on a moved clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::daemon::{Daemon, Sims, eventually, sims};
use crate::support::{Logs, fresh_db};

const API_TOKEN: &str = "job-api-token-7f3a9c1e5b2d4086";

/// A daemon with the job API on, and a schedule.
async fn start(url: &str, sims: Arc<Sims>) -> Daemon {
    Daemon::start_env(
        url,
        sims,
        "sim-token",
        &[("HUBSYNC_API_TOKEN", API_TOKEN)],
        |c| {
            c + "\nschedules:\n  - { name: nightly, kind: backfill, object: contacts, cron: \"0 2 * * *\" }\n"
        },
    )
    .await
}

struct Api<'a> {
    daemon: &'a Daemon,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(daemon: &'a Daemon) -> Self {
        Self {
            daemon,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self.http.request(method, self.daemon.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (code, text) = self
            .call(reqwest::Method::GET, path, Some(API_TOKEN), None)
            .await;
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (code, text) = self
            .call(reqwest::Method::POST, path, Some(API_TOKEN), Some(body))
            .await;
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Starts a job (202); returns its id.
    async fn start_job(&self, body: Value) -> i64 {
        let (code, answer) = self.post("/api/v1/jobs", body).await;
        assert_eq!(code, 202, "{answer}");
        assert_eq!(answer["status"], "queued", "{answer}");
        answer["job_id"].as_i64().unwrap()
    }

    /// Waits until job `id` has finished; returns it.
    async fn finished(&self, id: i64, limit: Duration) -> Value {
        let job = Mutex::new(Value::Null);
        eventually(&format!("job {id} finished"), limit, || async {
            let (_, body) = self.get(&format!("/api/v1/jobs/{id}")).await;
            let done = matches!(
                body["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            );
            *job.lock().unwrap() = body;
            done
        })
        .await;
        job.into_inner().unwrap()
    }
}

fn fields(body: &Value) -> Vec<&str> {
    body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect()
}

/// Every HubSpot search takes `latency` longer: a backfill from HubSpot runs for seconds.
fn slow_search(sims: &Sims, latency: Duration) {
    sims.hubspot.set_faults(hubsync::sim::hubspot::Faults {
        search_latency: latency,
        ..Default::default()
    });
}

/// `n` HubSpot contacts (no personal data), indexed for search.
async fn seed_hubspot(sims: &Sims, n: usize) {
    let contacts: Vec<BTreeMap<String, Option<String>>> = (0..n)
        .map(|i| {
            BTreeMap::from([
                ("firstname".to_string(), Some("Socio".to_string())),
                ("lastname".to_string(), Some(format!("Numero{i}"))),
            ])
        })
        .collect();
    sims.hubspot.seed_contacts(&contacts).unwrap();
    sims.hubspot.indexed().await;
}

/// The routes that need the token.
const GUARDED: [(reqwest::Method, &str); 5] = [
    (reqwest::Method::GET, "/api/v1/jobs"),
    (reqwest::Method::POST, "/api/v1/jobs"),
    (reqwest::Method::GET, "/api/v1/jobs/1"),
    (reqwest::Method::POST, "/api/v1/jobs/1/cancel"),
    (reqwest::Method::GET, "/api/v1/schedules"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_api_answers_every_status_code_and_refuses_a_wrong_token_without_a_hint() {
    use reqwest::Method;
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    // Without a token the job API is off.
    let off = Daemon::start_with(&url, sims.clone(), |c| c).await;
    off.expect_notify("READY=1");
    let api = Api::new(&off);
    let document = [(Method::GET, "/api/v1/openapi.yaml")];
    for (method, path) in GUARDED.iter().chain(&document) {
        for token in [None, Some(API_TOKEN)] {
            let (code, _) = api.call(method.clone(), path, token, None).await;
            assert_eq!(code, 404, "{method} {path} with the API off");
        }
    }
    let (code, out) = off.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("job API off"), "{out}");

    seed_hubspot(&sims, 400).await;
    let daemon = start(&url, sims.clone()).await;
    daemon.expect_notify("READY=1");
    let api = Api::new(&daemon);
    // Open routes stay open.
    for path in ["/healthz", "/metrics", "/readyz", "/api/v1/openapi.yaml"] {
        let (code, _) = api.call(Method::GET, path, None, None).await;
        assert_eq!(code, 200, "{path}");
    }
    let (_, readyz) = daemon.readyz().await;
    for (name, c) in readyz["components"].as_object().unwrap() {
        assert_eq!(c["detail"], "ok", "{name}: {readyz}");
    }
    // Missing, wrong, other-scheme and near-miss tokens: one answer, no hint.
    let mut refusals = Vec::new();
    for (method, path) in &GUARDED {
        let near = &API_TOKEN[..API_TOKEN.len() - 1];
        for token in [None, Some("wrong"), Some(near), Some("")] {
            refusals.push(api.call(method.clone(), path, token, None).await);
        }
        let basic = api
            .http
            .request(method.clone(), daemon.url(path))
            .header("Authorization", format!("Basic {API_TOKEN}"))
            .send()
            .await
            .unwrap();
        refusals.push((basic.status().as_u16(), basic.text().await.unwrap()));
    }
    for (code, body) in &refusals {
        assert_eq!((*code, body.as_str()), (401, r#"{"error":"UNAUTHORIZED"}"#));
    }

    // 422 naming each bad field.
    let (code, body) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "reconcile", "object": "contacts", "members": ["1"]}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "members", "{body}");
    assert_eq!(
        body["fields"][0]["message"],
        "only kind resync names members"
    );
    let (code, body) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "backfill", "object": "cars", "direction": "up", "dry_run": 1, "extra": true}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        fields(&body),
        ["extra", "object", "direction", "dry_run"],
        "{body}"
    );
    let (code, text) = api
        .call(Method::POST, "/api/v1/jobs", Some(API_TOKEN), None::<Value>)
        .await;
    assert_eq!(code, 422, "{text}");
    let (code, body) = api.get("/api/v1/jobs?limit=0").await;
    assert_eq!((code, fields(&body)), (422, vec!["limit"]));
    let (code, _) = api.get("/api/v1/jobs?limit=101").await;
    assert_eq!(code, 422);

    // 202, then 409 while it runs (HubSpot's search is slow: the backfill takes seconds).
    slow_search(&sims, Duration::from_secs(2));
    let first = api
        .start_job(json!({"kind": "backfill", "object": "contacts", "direction": "to_sql"}))
        .await;
    let (code, body) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "backfill", "object": "contacts", "dry_run": true}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "JOB_ALREADY_RUNNING");
    assert_eq!(body["job_id"], first);
    // Another kind of the same object may run meanwhile.
    let resync = api
        .start_job(json!({"kind": "resync", "object": "contacts", "members": ["999001"]}))
        .await;

    // GET one, 404s, the list and its limit.
    let (code, job) = api.get(&format!("/api/v1/jobs/{first}")).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["kind"], "backfill");
    assert!(job["created_at"].is_string(), "{job}");
    for path in ["/api/v1/jobs/987654", "/api/v1/jobs/abc", "/api/v1/jobs/0"] {
        let (code, body) = api.get(path).await;
        assert_eq!(
            (code, &body["error"]),
            (404, &json!("JOB_NOT_FOUND")),
            "{path}"
        );
    }
    let (code, body) = api.post("/api/v1/jobs/987654/cancel", json!({})).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = api.get("/api/v1/jobs").await;
    assert_eq!(code, 200);
    let ids: Vec<i64> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [resync, first], "newest first");
    let (_, body) = api.get("/api/v1/jobs?limit=1").await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1);

    // Cancel the running backfill: it stops, and a finished job cannot be cancelled again.
    // (One instance runs one job at a time: the resync waits for it.)
    let (code, body) = api
        .post(&format!("/api/v1/jobs/{first}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cancel_requested"], true);
    let job = api.finished(first, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
    let (code, body) = api
        .post(&format!("/api/v1/jobs/{first}/cancel"), json!({}))
        .await;
    assert_eq!((code, &body["error"]), (409, &json!("JOB_FINISHED")));
    // The resync finishes (its member has no row: counted as missing).
    let job = api.finished(resync, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["counts"], json!({"queued": 0, "missing": 1}), "{job}");

    sims.hubspot.set_faults(Default::default());

    // A dry run counts the planned actions and writes nothing.
    let dry = api
        .start_job(json!({"kind": "backfill", "object": "contacts", "direction": "to_sql", "dry_run": true}))
        .await;
    let dry = api.finished(dry, Duration::from_secs(60)).await;
    assert_eq!(dry["status"], "completed", "{dry}");
    let planned: u64 = dry["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(planned, 400, "{dry}");

    // A reconcile's dry run compares both sides; its counts are its run's.
    let dry = api
        .start_job(json!({"kind": "reconcile", "object": "contacts", "dry_run": true}))
        .await;
    let dry = api.finished(dry, Duration::from_secs(60)).await;
    assert_eq!(dry["status"], "completed", "{dry}");
    let run_id = dry["counts"]["run_id"].as_i64().unwrap();
    let (dry_run, found): (bool, i64) = sqlx::query_as(
        "SELECT r.dry_run, (SELECT count(*) FROM reconcile_findings f WHERE f.run_id = r.run_id \
           AND f.kind <> 'left_by_policy') FROM reconcile_runs r WHERE r.run_id = $1 AND r.status = 'completed'",
    )
    .bind(run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(dry_run);
    assert_eq!(dry["counts"]["drift"], found, "{dry}");
    assert!(
        dry["counts"]["hubspot_records"].as_i64().unwrap() > 0,
        "{dry}"
    );
    assert_eq!(
        dry["errors"][0]["message"], "dry run: nothing was queued or changed",
        "{dry}"
    );

    // Jobs the API would refuse but the table holds (the object left the configuration) fail,
    // with the reason.
    for (kind, object, reason) in [(
        "backfill",
        "cars",
        "object cars is not in the configuration",
    )] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_jobs (kind, object, requested_by) VALUES ($1, $2, 'cli') RETURNING id",
        )
        .bind(kind)
        .bind(object)
        .fetch_one(&pool)
        .await
        .unwrap();
        let job = api.finished(id, Duration::from_secs(30)).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["errors"][0]["message"], reason, "{job}");
    }

    // The schedules with their next run.
    let (code, body) = api.get("/api/v1/schedules").await;
    assert_eq!(code, 200, "{body}");
    let nightly = &body["schedules"][0];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["time_zone"], "America/Costa_Rica");
    let next: DateTime<Utc> = nightly["next_run"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() && next <= Utc::now() + chrono::Duration::days(1));
    // 02:00 in Costa Rica is 08:00 UTC.
    assert_eq!(next.format("%H:%M").to_string(), "08:00", "{body}");

    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("job API on"), "{out}");
    assert!(!out.contains(API_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_job_survives_kill_9_of_its_daemon_and_finishes_with_the_counts_of_an_uninterrupted_one()
 {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    seed_hubspot(&sims, 1000).await;
    // Five pages of 200, each search taking 600 ms: the backfill runs for seconds.
    slow_search(&sims, Duration::from_millis(600));
    let mut daemon = start(&url, sims.clone()).await;
    daemon.expect_notify("READY=1");
    let backfill = json!({"kind": "backfill", "object": "contacts", "direction": "to_sql"});
    let started = Api::new(&daemon).start_job(backfill.clone()).await;
    // Killed once some pages are queued and others are not.
    eventually("some pages queued", Duration::from_secs(60), || async {
        let done: i64 = sqlx::query_scalar("SELECT done FROM sync_jobs WHERE id = $1")
            .bind(started)
            .fetch_one(&pool)
            .await
            .unwrap();
        done >= 200
    })
    .await;
    daemon.signal(Signal::SIGKILL);
    let _ = daemon.process.child.wait();
    assert!(!daemon.running());
    let (status, done): (String, i64) =
        sqlx::query_as("SELECT status, done FROM sync_jobs WHERE id = $1")
            .bind(started)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "running", "the killed daemon held it");
    assert!(done < 1000, "killed mid-backfill: {done}");
    drop(daemon);

    // The restarted daemon takes the job back at once and resumes it.
    let daemon = start(&url, sims.clone()).await;
    daemon.expect_notify("READY=1");
    let api = Api::new(&daemon);
    let resumed = api.finished(started, Duration::from_secs(90)).await;
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(resumed["claims"], 2, "{resumed}");
    assert_eq!(resumed["resumes"], 1, "{resumed}");
    assert!(
        resumed["errors"].to_string().contains("resumed"),
        "{resumed}"
    );

    // An uninterrupted backfill of the same records gives the same figures.
    let again = api.start_job(backfill).await;
    let again = api.finished(again, Duration::from_secs(90)).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["claims"], 1, "{again}");
    assert_eq!(resumed["counts"], json!({"read": 1000, "queued": 1000}));
    assert_eq!(resumed["counts"], again["counts"]);
    assert_eq!(resumed["progress"], again["progress"]);
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_run_the_same_job_twice() {
    let (pool, url) = fresh_db().await;
    let sims = Arc::new(sims().await);
    seed_hubspot(&sims, 300).await;
    let members = crate::support::members(0..50, 14);
    sims.mssql.insert_rows(&members).await;
    let a = start(&url, sims.clone()).await;
    let b = start(&url, sims.clone()).await;
    a.expect_notify("READY=1");
    b.expect_notify("READY=1");
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let mut ids = Vec::new();
    for (api, job) in [
        (
            &api_a,
            json!({"kind": "backfill", "object": "contacts", "direction": "to_sql"}),
        ),
        (
            &api_b,
            json!({"kind": "resync", "object": "contacts", "members": ["1", "2", "3"]}),
        ),
    ] {
        ids.push(api.start_job(job).await);
    }
    for id in &ids {
        // Either instance shows any job.
        let job = api_b.finished(*id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["claims"], 1, "{job}");
    }
    let resync = api_a.finished(ids[1], Duration::from_secs(5)).await;
    assert_eq!(resync["counts"], json!({"queued": 3, "missing": 0}));
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT record_key) FROM sync_queue WHERE direction = 'to_hubspot' \
         AND record_key IN ('1', '2', '3')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(queued, 3);
    let (code_a, out_a) = a.stop();
    let (code_b, out_b) = b.stop();
    assert_eq!((code_a, code_b), (Some(0), Some(0)));
    for id in ids {
        let runs = format!("{out_a}{out_b}")
            .lines()
            .filter(|l| l.contains("job running") && l.contains(&format!("\"job_id\":{id},")))
            .count();
        // Each line is in the output and in the log file.
        assert_eq!(runs, 2, "job {id} ran once");
    }
}

/// Asks for a backfill of contacts.
async fn create_backfill(
    pool: &PgPool,
    by: hubsync::jobs::store::Requester<'_>,
) -> hubsync::jobs::store::Created {
    let request = hubsync::jobs::JobRequest {
        kind: hubsync::jobs::JobKind::Backfill,
        object: "contacts".into(),
        direction: hubsync::queue::Direction::ToHubspot,
        members: vec![],
        dry_run: false,
    };
    hubsync::jobs::store::create(pool, &request, by)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_is_claimed_once_and_a_holder_that_lost_its_lease_changes_nothing() {
    use hubsync::jobs::store::{self, Beat, Created, Requester, Snapshot};
    let (pool, _) = fresh_db().await;
    let created = create_backfill(&pool, Requester::Cli).await;
    let Created::Job(id) = created else {
        panic!("{created:?}")
    };
    assert_eq!(
        create_backfill(&pool, Requester::Api).await,
        Created::Busy(id)
    );
    // Eight claimers at once: one gets it.
    let lease = Duration::from_secs(30);
    let claims = futures::future::join_all((0..8).map(|i| {
        let pool = pool.clone();
        async move {
            store::claim(&pool, &format!("h:{i}/jobs"), lease, &[])
                .await
                .unwrap()
        }
    }))
    .await;
    let holders: Vec<String> = claims
        .iter()
        .flatten()
        .filter_map(|j| j.holder().map(str::to_string))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    let holder = &holders[0];
    let none = store::claim(&pool, "other:1/jobs", lease, &[])
        .await
        .unwrap();
    assert!(none.is_none());
    let progress = Snapshot {
        done: 5,
        total: Some(10),
        counts: json!({"read": 5}),
    };
    assert_eq!(
        store::beat(&pool, id, holder, lease, &progress)
            .await
            .unwrap(),
        Beat::Held
    );
    // Its lease passes: another instance claims it, and the first one can neither renew nor
    // settle it.
    sqlx::query("UPDATE sync_jobs SET locked_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let taken = store::claim(&pool, "other:1/jobs", lease, &[])
        .await
        .unwrap();
    let taken = taken.expect("an expired lease is claimed");
    assert_eq!((taken.claims, taken.resumes), (2, 1));
    assert_eq!(taken.progress.done, 5, "progress kept");
    assert_eq!(
        store::beat(&pool, id, holder, lease, &progress)
            .await
            .unwrap(),
        Beat::Lost
    );
    let status = hubsync::jobs::JobStatus::Completed;
    assert!(
        !store::settle(&pool, id, holder, status, &progress, None)
            .await
            .unwrap()
    );
    // A holder known to have ended is taken over at once, without waiting for its lease.
    let gone = vec!["other:1/jobs".to_string()];
    let third = store::claim(&pool, "third:1/jobs", lease, &gone)
        .await
        .unwrap();
    assert_eq!(third.map(|j| j.claims), Some(3));
    // A cancel reaches the holder at its next beat.
    assert!(matches!(
        store::cancel(&pool, id).await.unwrap(),
        store::Cancelled::Done(_)
    ));
    assert_eq!(
        store::beat(&pool, id, "third:1/jobs", lease, &progress)
            .await
            .unwrap(),
        Beat::CancelRequested
    );
    let cancelled = hubsync::jobs::JobStatus::Cancelled;
    assert!(
        store::settle(&pool, id, "third:1/jobs", cancelled, &progress, None)
            .await
            .unwrap()
    );
    let job = store::get(&pool, id).await.unwrap().unwrap();
    assert_eq!(job.status, cancelled);
    assert!(job.finished_at.is_some());
    // Finished: a new job of that kind and object may start.
    let again = create_backfill(&pool, Requester::Api).await;
    assert!(matches!(again, Created::Job(n) if n > id));
}

async fn jobs_of(pool: &PgPool) -> Vec<(i64, String, Option<DateTime<Utc>>)> {
    sqlx::query_as("SELECT id, status, scheduled_for FROM sync_jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

// One thread: the scheduler runs on the test's thread, where its log lines are captured.
#[tokio::test(flavor = "current_thread")]
async fn a_schedule_fires_on_a_moved_clock_and_an_overlapping_run_is_skipped_and_logged() {
    use hubsync::jobs::schedule::{Clock, ManualClock, ScheduleConfig, check};
    let (pool, _) = fresh_db().await;
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let schedules = check(
        &[ScheduleConfig {
            name: "every-five".into(),
            kind: hubsync::jobs::JobKind::Backfill,
            object: "contacts".into(),
            cron: "*/5 * * * *".into(),
            direction: None,
            dry_run: false,
        }],
        &["contacts"],
    )
    .unwrap();
    let at = |s: &str| -> DateTime<Utc> { s.parse().unwrap() };
    let clock = ManualClock::new(at("2026-12-02T10:01:00Z"));
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let started = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(hubsync::jobs::scheduler::run(
        pool.clone(),
        schedules.clone(),
        chrono_tz::America::Costa_Rica,
        dyn_clock,
        started.clone(),
        stop.clone(),
    ));

    // Moves the clock to `t` and waits for the job the schedule starts then.
    let fire_at = |t: &str| {
        let fired = started.notified();
        clock.set(at(t));
        async move {
            tokio::time::timeout(Duration::from_secs(10), fired)
                .await
                .expect("the schedule fired");
        }
    };
    // 10:05: the job starts (and stays queued: no runner here).
    fire_at("2026-12-02T10:05:00Z").await;
    let jobs = jobs_of(&pool).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].1, "queued");
    assert_eq!(jobs[0].2, Some(at("2026-12-02T10:05:00Z")));
    // 10:10: the job is still queued, so the run is skipped, and logged.
    clock.set(at("2026-12-02T10:10:00Z"));
    eventually("the skip is logged", Duration::from_secs(10), || async {
        logs.text().contains("schedule run skipped")
    })
    .await;
    assert_eq!(jobs_of(&pool).await.len(), 1);
    let skipped = logs
        .text()
        .lines()
        .find(|l| l.contains("schedule run skipped"))
        .unwrap()
        .to_string();
    assert!(skipped.contains("\"schedule\":\"every-five\""), "{skipped}");
    assert!(
        skipped.contains(&format!("\"running_job_id\":{}", jobs[0].0)),
        "{skipped}"
    );
    // Once it has finished, the next run starts a new job.
    sqlx::query("UPDATE sync_jobs SET status = 'completed', finished_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    fire_at("2026-12-02T10:15:00Z").await;
    let jobs = jobs_of(&pool).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[1].2, Some(at("2026-12-02T10:15:00Z")));
    // Another instance firing the same run starts nothing more.
    let again = hubsync::jobs::scheduler::fire(&pool, &schedules[0], at("2026-12-02T10:15:00Z"))
        .await
        .unwrap();
    assert_eq!(again, hubsync::jobs::scheduler::Fired::Elsewhere);
    assert_eq!(jobs_of(&pool).await.len(), 2);
    stop.cancel();
    scheduler.await.unwrap();
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn hubsync_jobs_starts_shows_lists_and_cancels_against_the_database() {
    let (_pool, url) = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::example_config();
    let env = [("HUBSYNC_DATABASE_URL", url.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap(), "jobs"];
        all.extend_from_slice(args);
        crate::support::hubsync(&all, &env, dir.path())
    };
    let json = |out: &std::process::Output| -> Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output(out)))
    };
    let start = ["start", "--kind", "backfill", "--object", "contacts"];
    let out = run(&start);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    let id = json(&out)["job_id"].as_i64().unwrap();
    let out = run(&start);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert_eq!(json(&out)["error"], "JOB_ALREADY_RUNNING");
    let out = run(&["start", "--kind", "resync", "--object", "cars"]);
    assert_eq!(out.status.code(), Some(65));
    let text = output(&out);
    assert!(
        text.contains("object: ") && text.contains("members: "),
        "{text}"
    );
    let out = run(&["show", &id.to_string()]);
    assert_eq!(out.status.code(), Some(0));
    let job = json(&out);
    assert_eq!(
        (job["status"].as_str(), job["requested_by"].as_str()),
        (Some("queued"), Some("cli"))
    );
    let out = run(&["list", "--limit", "5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert_eq!(run(&["list", "--limit", "0"]).status.code(), Some(65));
    let out = run(&["cancel", &id.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert_eq!(json(&out)["status"], "cancelled");
    assert_eq!(run(&["cancel", &id.to_string()]).status.code(), Some(1));
    assert_eq!(run(&["show", "999999"]).status.code(), Some(1));
}
