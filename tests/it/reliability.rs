//! `hubsync run` under crashes and faults, as real processes against real PostgreSQL and the
//! simulators: SIGKILL at random moments, a HubSpot fault storm, two daemons on one database,
//! and the secrets kept out of every log file and output line of all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use hubsync::mapping::{Mapper, SqlRow};
use hubsync::sim::hubspot::{Faults, SimOptions};
use hubsync::sim::mssql::MssqlSimOptions;
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::daemon::{Daemon, Sims, eventually, eventually_every};
use crate::support::fresh_db;

/// Distinctive secrets: neither may show up in any output of any run.
const TOKEN: &str = "pat-na1-R3liab1lity-T0ken-7c41e9";
/// The simulator's SQL Server password (a real server's comes with `HUBSYNC_TEST_MSSQL`).
const SQL_PASSWORD: &str = "Rel1ab-SQL-Passw0rd-5d83";

/// PostgreSQL, both simulators seeded with members, what the members should become in
/// HubSpot, and everything the daemons wrote (for the secrets check).
pub(crate) struct Stand {
    pub pool: PgPool,
    pub url: String,
    pub sims: Arc<Sims>,
    mapper: Mapper,
    pub members: Vec<SqlRow>,
    /// Keys (`numero_asociado`) of the members the mapper accepts.
    pub valid: HashSet<String>,
    /// The simulator's requests per 10 s; the daemons are configured for the same.
    tier: u32,
    /// stdout, stderr and log files of every daemon that has ended.
    outputs: std::sync::Mutex<Vec<String>>,
}

/// Queue figures of the to_hubspot direction.
#[derive(Debug, Default)]
struct QueueFigures {
    /// Distinct records with an item.
    records: i64,
    /// Items not final yet (pending or running).
    open: i64,
    dead: i64,
    attempts: i64,
    rescues: i64,
}

/// Panics with the daemon's output if it has exited on its own.
pub(crate) fn assert_running(daemon: &mut Daemon) {
    if !daemon.running() {
        panic!("the daemon exited by itself: {}", daemon.output());
    }
}

impl Stand {
    pub async fn new(members: u64, hubspot: SimOptions) -> Stand {
        let (pool, url) = fresh_db().await;
        Stand::on(pool, url, members, hubspot).await
    }

    /// A stand on the queue database `url` (a cluster of the test's own, to stop and restart).
    pub async fn on(pool: PgPool, url: String, members: u64, hubspot: SimOptions) -> Stand {
        let tier = hubspot.tier;
        let sims = Sims {
            hubspot: hubsync::sim::hubspot::start(
                "127.0.0.1:0".parse().unwrap(),
                SimOptions {
                    token: TOKEN.to_string().into(),
                    ..hubspot
                },
            )
            .await
            .unwrap(),
            mssql: crate::sql_target::SqlTarget::start_with(
                MssqlSimOptions {
                    password: SQL_PASSWORD.into(),
                    ..Default::default()
                },
                |schema| schema,
            )
            .await,
        };
        let mapper = Mapper::new(&crate::to_hubspot::contacts_config()).unwrap();
        let members = crate::to_hubspot::rows(members);
        let valid = members
            .iter()
            .filter(|r| mapper.to_hubspot(r).is_valid())
            .map(|r| r["numero_asociado"].to_string())
            .collect();
        Stand {
            pool,
            url,
            sims: Arc::new(sims),
            mapper,
            members,
            valid,
            tier,
            outputs: Default::default(),
        }
    }

    pub async fn insert_members(&self) {
        self.sims.mssql.insert_rows(&self.members).await;
    }

    /// Starts `hubsync run` with the daemon test configuration at the simulator's tier, a 5 s
    /// lease (the shortest allowed), fast retries, poll elections logged, and `edits` applied.
    pub async fn spawn(&self, edits: &[(&str, &str)]) -> Daemon {
        let tier = format!("requests_per_10s: {}", self.tier);
        let daily = format!("daily_limit: {}", u64::from(self.tier) * 5_000);
        let edit = |text: String| {
            let mut text = text
                .replace("lease: 2m", "lease: 5s")
                .replace("retry_initial: 5s", "retry_initial: 200ms")
                .replace("requests_per_10s: 100", &tier)
                .replace("daily_limit: 250000", &daily)
                .replace("level: info", "level: \"info,hubsync::sync::poller=debug\"");
            for (from, to) in edits {
                assert!(text.contains(from), "config has no {from:?}");
                text = text.replace(from, to);
            }
            text
        };
        Daemon::start_as(&self.url, self.sims.clone(), TOKEN, edit).await
    }

    /// Keeps what an ended daemon wrote, for the secrets check.
    pub fn keep_output(&self, daemon: Daemon) -> Option<i32> {
        let (code, output) = daemon.wait();
        self.outputs.lock().unwrap().push(output);
        code
    }

    /// Stops a daemon with SIGTERM; returns its exit code.
    pub fn stop(&self, daemon: Daemon) -> Option<i32> {
        daemon.signal(Signal::SIGTERM);
        daemon.expect_notify("STOPPING=1");
        self.keep_output(daemon)
    }

    async fn figures(&self) -> QueueFigures {
        let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(DISTINCT record_key), \
                    count(*) FILTER (WHERE state IN ('pending', 'running')), \
                    count(*) FILTER (WHERE state = 'dead'), \
                    coalesce(sum(attempts), 0), coalesce(sum(rescues), 0) \
             FROM sync_queue WHERE direction = 'to_hubspot'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        QueueFigures {
            records: row.0,
            open: row.1,
            dead: row.2,
            attempts: row.3,
            rescues: row.4,
        }
    }

    /// Keys of the to_hubspot items the process `pid` holds.
    async fn held_by(&self, pid: u32) -> Vec<String> {
        hubsync::bench::chaos::stand::held_by(&self.pool, pid)
            .await
            .unwrap()
            .into_iter()
            .filter(|h| h.direction == "to_hubspot")
            .map(|h| h.record_key)
            .collect()
    }

    /// Records linked to a HubSpot contact.
    async fn linked(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM record_links WHERE hubspot_id IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Every member queued and every item final.
    pub async fn settled(&self) -> bool {
        let f = self.figures().await;
        f.records == self.members.len() as i64 && f.open == 0
    }

    /// The HubSpot poller has read every HubSpot change (its cursor has reached the newest
    /// modification) and nothing it queued is still open.
    async fn to_sql_idle(&self) -> bool {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_queue \
             WHERE direction = 'to_sql' AND state IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        open == 0
            && hubsync::demo::watch::hubspot_read_all(&self.pool, &self.sims.hubspot)
                .await
                .unwrap()
    }

    /// Every valid member is in HubSpot exactly once with its mapped values, nothing else is;
    /// every record's newest item is done (valid) or rejected (invalid), none dead or open.
    /// Returns the number of contacts checked.
    pub async fn check(&self) -> usize {
        let contacts = self.sims.hubspot.contacts();
        let mut by_key: HashMap<String, Vec<&hubsync::sim::hubspot::SimContact>> = HashMap::new();
        for c in &contacts {
            let key = c.get("numero_asociado").unwrap_or("").to_string();
            by_key.entry(key).or_default().push(c);
        }
        let duplicates: Vec<(&String, usize)> = by_key
            .iter()
            .filter(|(_, cs)| cs.len() > 1)
            .map(|(k, cs)| (k, cs.len()))
            .collect();
        assert!(duplicates.is_empty(), "duplicate contacts: {duplicates:?}");
        assert_eq!(
            contacts.len(),
            self.valid.len(),
            "contacts vs valid members"
        );
        for row in &self.members {
            let key = row["numero_asociado"].to_string();
            let mapped = self.mapper.to_hubspot(row);
            if !mapped.is_valid() {
                assert!(
                    !by_key.contains_key(&key),
                    "invalid member {key} in HubSpot"
                );
                continue;
            }
            let contact = by_key
                .get(&key)
                .unwrap_or_else(|| panic!("member {key} missing from HubSpot"))[0];
            assert!(!contact.archived(), "member {key} archived");
            for (prop, value) in &mapped.properties {
                let got = contact.get(prop).filter(|v| !v.is_empty());
                assert_eq!(got, value.as_deref(), "member {key}: {prop}");
            }
        }
        let newest: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (record_key) record_key, state, last_error FROM sync_queue \
             WHERE direction = 'to_hubspot' ORDER BY record_key, id DESC",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        assert_eq!(newest.len(), self.members.len(), "every member queued");
        for (key, state, error) in &newest {
            let want = if self.valid.contains(key) {
                "done"
            } else {
                "rejected"
            };
            assert_eq!(state, want, "member {key}: {error:?}");
        }
        let f = self.figures().await;
        assert_eq!((f.open, f.dead), (0, 0), "{f:?}");
        assert_eq!(self.linked().await as usize, self.valid.len());
        contacts.len()
    }

    /// Lines the daemons wrote (stdout, stderr, log files): [`Daemon::wait`] has scanned them
    /// all for the secrets (`TOKEN`, the SQL Server password: the daemons' environment) and
    /// personal data. Returns how many.
    pub fn assert_no_secrets(&self) -> usize {
        let lines: usize = self
            .outputs
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.lines().count())
            .sum();
        assert!(lines > 0, "the runs wrote nothing to check");
        lines
    }
}

/// The JSON lines of the log files in `dir`.
fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    out
}

/// When to SIGKILL the daemon.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Once this many records are queued (the SQL Server poller mid-way).
    Queued(i64),
    /// Once HubSpot has received this many write calls: with the simulator's latency the last
    /// one is still in flight.
    InFlight(u64),
    /// Once HubSpot holds this many contacts: the batch just written is not settled yet.
    Written(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_ten_random_moments_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let stand = Stand::new(
        20_000,
        SimOptions {
            tier: 250,
            seed: 8,
            faults: Faults {
                latency: Duration::from_millis(60),
                ..Faults::default()
            },
            ..SimOptions::lagging()
        },
    )
    .await;
    stand.insert_members().await;
    eprintln!(
        "kill -9: members inserted after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Ten crashes are expected here: an item held at every one of them must not end dead.
    // New HubSpot records are inserted into SQL Server: a contact hubsync created but had no
    // time to link must not come back as a new member.
    let edits = [
        ("max_rescues: 3", "max_rescues: 11"),
        (
            "on_new_hubspot_record: ignore",
            "on_new_hubspot_record: insert",
        ),
    ];
    let (s, sim) = (&stand, &stand.sims.hubspot);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_123);
    let mut unsettled_kills = 0;
    let mut mid_batch_kills = 0;
    for n in 0..10 {
        let moment = match n {
            0 => Moment::Queued(rng.random_range(2_000..15_000)),
            n if n % 2 == 1 => {
                Moment::InFlight(crate::support::hubspot_writes(sim) + rng.random_range(1..=8))
            }
            _ => Moment::Written(sim.stats().contacts + rng.random_range(150..=1_200)),
        };
        let mut daemon = stand.spawn(&edits).await;
        eventually_every(
            &format!("kill moment {n}: {moment:?}"),
            Duration::from_secs(60),
            // Often: a write may be settled a few milliseconds after HubSpot has it.
            Duration::from_millis(2),
            || {
                assert_running(&mut daemon);
                async move {
                    match moment {
                        Moment::Queued(at) => s.figures().await.records >= at,
                        Moment::InFlight(at) => crate::support::hubspot_writes(sim) >= at,
                        Moment::Written(at) => sim.stats().contacts >= at,
                    }
                }
            },
        )
        .await;
        let pid = daemon.pid();
        daemon.process.child.kill().unwrap(); // SIGKILL
        stand.keep_output(daemon);
        // What the dead process left behind: the items it held, and among them those HubSpot
        // already has a contact for (written, never settled).
        let held = stand.held_by(pid).await;
        let in_hubspot: HashSet<String> = sim
            .contacts()
            .iter()
            .filter_map(|c| c.get("numero_asociado").map(str::to_string))
            .collect();
        let unsettled = held.iter().filter(|k| in_hubspot.contains(*k)).count();
        eprintln!(
            "kill {n} at {moment:?}: {} items held, {unsettled} of them written to HubSpot",
            held.len()
        );
        mid_batch_kills += usize::from(!held.is_empty());
        unsettled_kills += usize::from(unsettled > 0);
    }
    assert!(
        stand.figures().await.open > 0,
        "work must be left for the last run"
    );
    eprintln!(
        "kill -9: last kill after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut daemon = stand.spawn(&edits).await;
    // A bound, not a wait: on a loaded 2-core machine the last run needs about a minute.
    eventually("every member is synced", Duration::from_secs(180), || {
        assert_running(&mut daemon);
        async move { s.settled().await && s.to_sql_idle().await }
    })
    .await;
    assert_eq!(stand.stop(daemon), Some(0));

    eprintln!(
        "kill -9: synced after {:.1} s; HubSpot: {:?}",
        started.elapsed().as_secs_f64(),
        sim.stats()
    );
    let checked = stand.check().await;
    let f = stand.figures().await;
    // Crashes are rescues, never attempts; and some did land mid-batch and between a HubSpot
    // write and its settling.
    assert_eq!(f.attempts, 0, "{f:?}");
    assert!(f.rescues > 0, "{f:?}");
    assert!(mid_batch_kills >= 5, "{mid_batch_kills} kills mid-batch");
    assert!(
        unsettled_kills >= 1,
        "{unsettled_kills} kills before settling"
    );
    // Both directions: besides the invalid members' rejections, the only errors any item
    // recorded are the crashes' expired leases.
    let (attempts, kinds): (i64, Vec<String>) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(attempts), 0) FROM sync_queue), \
                (SELECT coalesce(array_agg(DISTINCT e->>'kind'), '{}') \
                 FROM sync_queue, jsonb_array_elements(errors) e WHERE state <> 'rejected')",
    )
    .fetch_one(&stand.pool)
    .await
    .unwrap();
    // (A restart takes back what its killed predecessor held at once: `worker_gone`; a lease
    // can still expire first under load.)
    assert_eq!(attempts, 0);
    assert!(
        kinds
            .iter()
            .all(|k| k == "lease_expired" || k == "worker_gone"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"worker_gone".to_string()), "{kinds:?}");
    // HubSpot's side: every contact came back as our own write; nothing written to SQL Server.
    // (An item a killed worker held is superseded when the restart's poller read the contact
    // again before it was taken back: it writes nothing.)
    let to_sql: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT state || ' ' || coalesce(outcome, ''), count(*) FROM sync_queue \
         WHERE direction = 'to_sql' GROUP BY 1",
    )
    .fetch_all(&stand.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        to_sql.contains_key("done SKIP")
            && to_sql
                .keys()
                .all(|k| k == "done SKIP" || k == "superseded "),
        "{to_sql:?}"
    );
    let lines = stand.assert_no_secrets();
    eprintln!(
        "kill -9: 10 kills survived ({mid_batch_kills} mid-batch, {unsettled_kills} between a \
         HubSpot write and settling), {checked} contacts checked of {} members, 0 duplicates, \
         {} items rescued, 0 attempts charged, {lines} output lines free of secrets, {:.1} s",
        stand.members.len(),
        f.rescues,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_takes_back_at_once_what_its_killed_predecessor_held() {
    let stand = Stand::new(
        3_000,
        SimOptions {
            tier: 250,
            seed: 5,
            faults: Faults {
                latency: Duration::from_millis(300),
                ..Faults::default()
            },
            ..SimOptions::lagging()
        },
    )
    .await;
    stand.insert_members().await;
    // The shipped two-minute lease: only the restart's own rescue can take the items back
    // before it runs out.
    let edits = [("lease: 5s", "lease: 2m")];
    let mut daemon = stand.spawn(&edits).await;
    let pid = daemon.pid();
    let (s, sim) = (&stand, &stand.sims.hubspot);
    eventually("a batch in flight", Duration::from_secs(60), || {
        assert_running(&mut daemon);
        async move { crate::support::hubspot_writes(sim) >= 1 && !s.held_by(pid).await.is_empty() }
    })
    .await;
    daemon.process.child.kill().unwrap(); // SIGKILL
    stand.keep_output(daemon);
    let held = stand.held_by(pid).await;
    assert!(!held.is_empty());
    let restarted = Instant::now();
    let mut daemon = stand.spawn(&edits).await;
    eventually("every member synced", Duration::from_secs(60), || {
        assert_running(&mut daemon);
        async move { s.settled().await }
    })
    .await;
    let recovery = restarted.elapsed();
    assert_eq!(stand.stop(daemon), Some(0));
    stand.check().await;
    // Every item the killed process held was taken back because its process was gone, none
    // because its lease ran out.
    let (gone, expired): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE errors @> '[{\"kind\": \"worker_gone\"}]'), \
                count(*) FILTER (WHERE errors @> '[{\"kind\": \"lease_expired\"}]') \
         FROM sync_queue WHERE direction = 'to_hubspot' AND record_key = ANY($1)",
    )
    .bind(&held)
    .fetch_one(&stand.pool)
    .await
    .unwrap();
    assert_eq!((gone, expired), (held.len() as i64, 0));
    eprintln!(
        "restart: {} items of the killed process taken back at once; all synced {:.1} s after the restart (lease 120 s)",
        held.len(),
        recovery.as_secs_f64()
    );
    stand.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_fault_storm_syncs_everyone_once_and_nothing_dies_of_429() {
    let started = Instant::now();
    let stand = Stand::new(
        10_000,
        SimOptions {
            tier: 250,
            seed: 30,
            faults: Faults {
                error_rate: 0.3,
                drop_rate: 0.03,
                lost_response_rate: 0.05,
                timeout_hang: Duration::from_millis(1_500),
                ..Faults::default()
            },
            ..SimOptions::lagging()
        },
    )
    .await;
    stand.insert_members().await;
    eprintln!(
        "storm: members inserted after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // More workers than the default, so that retry waits overlap.
    let mut daemon = stand.spawn(&[("workers: 4 ", "workers: 8 ")]).await;
    let (s, sim) = (&stand, &stand.sims.hubspot);
    let valid = stand.valid.len() as u64;
    // At 20 % HubSpot has a bad moment: latency jumps, requests hang, and a burst of 429s comes
    // (answered after the latency, so together: each 429 holds every call for HubSpot's 10 s
    // window). At 40 % it is over. The 5xx, dropped connections and lost answers go on all along.
    let mut events = 0;
    eventually(
        "every member is synced through the storm",
        Duration::from_secs(150),
        || {
            assert_running(&mut daemon);
            let contacts = sim.stats().contacts;
            if events < 2 && contacts >= valid * (events + 1) / 5 {
                events += 1;
                let mut faults = sim.faults();
                if events == 1 {
                    faults.latency = Duration::from_millis(400);
                    faults.timeout_next = 2;
                    faults.burst_429 = 2;
                } else {
                    faults.latency = Duration::ZERO;
                }
                sim.set_faults(faults);
                eprintln!(
                    "storm: event {events} at {contacts} contacts, {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            async move { s.settled().await }
        },
    )
    .await;
    assert_eq!(events, 2, "the storm ran its course");
    assert_eq!(stand.stop(daemon), Some(0));

    let stats = sim.stats();
    let checked = stand.check().await;
    let f = stand.figures().await;
    let throttled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue, jsonb_array_elements(errors) e \
         WHERE e->>'http_status' = '429' OR e->>'message' LIKE '%429%'",
    )
    .fetch_one(&stand.pool)
    .await
    .unwrap();
    assert_eq!(throttled, 0, "no item was charged for a 429");
    // Upserts whose answer was lost: retried, and the retry updated the contact the first try
    // had made (HubSpot was empty, so an UPDATE is exactly that), never a second one.
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_queue WHERE direction = 'to_hubspot' \
         AND outcome IN ('UPDATE', 'LINK')",
    )
    .fetch_one(&stand.pool)
    .await
    .unwrap();
    assert!(linked > 0, "no upsert lost its answer");
    assert!(stats.throttled_429 >= 2, "{stats:?}");
    assert!(
        stats.faults_injected * 4 > stats.total_requests,
        "a storm: {stats:?}"
    );
    let lines = stand.assert_no_secrets();
    eprintln!(
        "storm: {checked} contacts checked of {} members, 0 duplicates, {linked} linked after a \
         lost answer, {} dead, {} attempts charged; HubSpot served {} requests, {} faults injected, {} × 429; {lines} output \
         lines free of secrets; {:.1} s",
        stand.members.len(),
        f.dead,
        f.attempts,
        stats.total_requests,
        stats.faults_injected,
        stats.throttled_429,
        started.elapsed().as_secs_f64()
    );
}

/// A poll round one daemon ran while holding the poller's lock.
#[derive(Debug)]
struct PollRound {
    daemon: usize,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
}

fn timestamp(line: &serde_json::Value) -> DateTime<FixedOffset> {
    let text = line["timestamp"].as_str().unwrap_or_default();
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_sync_each_member_once_and_take_turns_polling() {
    let started = Instant::now();
    let stand = Stand::new(
        3_000,
        SimOptions {
            tier: 250,
            ..SimOptions::lagging()
        },
    )
    .await;
    let names = ["a", "b"];
    let mut daemons = Vec::new();
    for n in names {
        let instance = format!("instance: hubsync-{n}");
        daemons.push(stand.spawn(&[("# instance: hubsync-1", &instance)]).await);
    }
    for d in &daemons {
        d.expect_notify("READY=1");
    }
    // Both are up and polling; now the members arrive.
    stand.insert_members().await;
    let s = &stand;
    // A bound, not a wait: on a loaded 2-core machine the last run needs about a minute.
    eventually("every member is synced", Duration::from_secs(180), || {
        for d in daemons.iter_mut() {
            assert_running(d);
        }
        async move { s.settled().await }
    })
    .await;
    // Stopped one after the other; each one's log files read once it has ended.
    let mut logs = Vec::new();
    for mut d in daemons {
        d.signal(Signal::SIGTERM);
        d.expect_notify("STOPPING=1");
        eventually("the daemon exits", Duration::from_secs(30), || {
            let ended = !d.running();
            async move { ended }
        })
        .await;
        logs.push(log_lines(&d.dir.path().join("logs")));
        assert_eq!(stand.keep_output(d), Some(0));
    }
    let checked = stand.check().await;

    // Processed once: one CREATE per valid member, nothing found already there (LINK) or
    // retried, across both daemons' logs each record's CREATE line exactly once.
    let outcomes: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT coalesce(outcome, state), count(*) FROM sync_queue \
         WHERE direction = 'to_hubspot' GROUP BY 1",
    )
    .fetch_all(&stand.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let invalid = (stand.members.len() - stand.valid.len()) as i64;
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("CREATE".to_string(), stand.valid.len() as i64),
            ("REJECT".to_string(), invalid)
        ])
    );
    assert_eq!(stand.figures().await.attempts, 0);
    let mut created: HashMap<String, usize> = HashMap::new();
    let mut per_daemon = [0; 2];
    let mut rounds: BTreeMap<String, Vec<PollRound>> = BTreeMap::new();
    for (d, (name, lines)) in names.iter().zip(&logs).enumerate() {
        let mut open: HashMap<String, DateTime<FixedOffset>> = HashMap::new();
        for line in lines {
            if line["operation"] == "CREATE" {
                let key = line["record_key"].as_str().unwrap_or_default().to_string();
                *created.entry(key).or_default() += 1;
                per_daemon[d] += 1;
            }
            let Some(poller) = line["poller"].as_str() else {
                continue;
            };
            let message = line["message"].as_str().unwrap_or_default();
            if message.starts_with("elected") {
                let previous = open.insert(poller.to_string(), timestamp(line));
                assert!(previous.is_none(), "{name}: {poller} polled twice at once");
            } else if let Some(start) = open.remove(poller) {
                rounds
                    .entry(poller.to_string())
                    .or_default()
                    .push(PollRound {
                        daemon: d,
                        start,
                        end: timestamp(line),
                    });
            }
        }
    }
    assert_eq!(created.len(), stand.valid.len());
    assert!(created.values().all(|n| *n == 1), "a record created twice");
    assert!(
        per_daemon.iter().all(|n| *n > 0),
        "both daemons worked: {per_daemon:?}"
    );
    // Each poller: rounds never overlap, whichever daemon ran them.
    assert_eq!(rounds.len(), 2, "{:?}", rounds.keys());
    let mut turns = Vec::new();
    for (poller, list) in &mut rounds {
        list.sort_by_key(|r| r.start);
        for pair in list.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{poller}: {pair:?} overlap");
        }
        let by = |d: usize| list.iter().filter(|r| r.daemon == d).count();
        turns.push(format!("{poller}: {} + {} rounds", by(0), by(1)));
    }
    let lines = stand.assert_no_secrets();
    eprintln!(
        "two daemons: {checked} contacts checked, 0 duplicates, CREATE lines per daemon \
         {per_daemon:?}; {}; {lines} output lines free of secrets; {:.1} s",
        turns.join(", "),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_poll_abandoned_midway_gives_the_pollers_lock_back() {
    use hubsync::queue::Direction;
    use hubsync::sync::poller::{Polled, elected};
    let (pool, url) = fresh_db().await;
    let held = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        n > 0
    };
    // A poll that never ends, abandoned once it holds the lock (as when its task is stopped).
    let stuck = elected(&pool, "contacts", Direction::ToHubspot, || {
        std::future::pending::<anyhow::Result<Polled>>()
    });
    tokio::select! {
        _ = stuck => unreachable!("the poll never ends"),
        _ = eventually("the poll holds the lock", Duration::from_secs(10), held) => {}
    }
    // Another instance (its own connections) is elected next.
    let other = hubsync::pg::connect_url(&url, 2, Duration::from_secs(5))
        .await
        .unwrap();
    eventually(
        "another instance is elected",
        Duration::from_secs(10),
        || {
            let other = other.clone();
            async move {
                elected(&other, "contacts", Direction::ToHubspot, || async {
                    Ok(Polled::default())
                })
                .await
                .unwrap()
                .elected
            }
        },
    )
    .await;
}
