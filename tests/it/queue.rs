//! The work queue against real PostgreSQL: concurrent draining, coalescing, leases and rescue,
//! retries and backoff, rejection, operator retry/discard, and pruning.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubsync::config::QueueSettings;
use hubsync::queue::{
    ClaimedItem, Direction, ItemError, NewItem, Operation, Outcome, Queue, RetrySelection,
};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::support::{fresh_db, make_due};

const OBJ: &str = "contacts";

fn item(key: &str, version: i64) -> NewItem {
    NewItem {
        record_key: key.to_string(),
        operation: Operation::Upsert,
        payload: json!({ "key": key, "version": version }),
        source_version: version,
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        max_attempts: 4,
        max_rescues: 3,
        retry_initial: Duration::from_secs(10),
        retry_max: Duration::from_secs(3600),
        ..QueueSettings::default()
    }
}

fn done() -> Outcome {
    Outcome::Done {
        operation: "UPDATE".into(),
        hubspot_id: None,
    }
}

async fn states(pool: &PgPool) -> HashMap<String, i64> {
    sqlx::query("SELECT state, count(*) AS n FROM sync_queue GROUP BY state")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("state"), r.get("n")))
        .collect()
}

/// Enqueues to_hubspot changes of the test object.
async fn put(queue: &Queue, items: &[NewItem]) {
    queue
        .enqueue(OBJ, Direction::ToHubspot, items)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_drain_20000_items_exactly_once() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    let records = 20_000;
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<_> = chunk.iter().map(|i| item(&format!("r{i}"), 1)).collect();
        queue
            .enqueue(OBJ, Direction::ToHubspot, &items)
            .await
            .unwrap();
    }

    // Records currently held by some worker, and every (item id) ever claimed.
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let claimed_ids: Arc<Mutex<HashSet<i64>>> = Arc::default();
    // The newest version each record was sent with.
    let synced: Arc<Mutex<HashMap<String, i64>>> = Arc::default();

    // While workers run, newer changes arrive for 2,000 records (some coalesce into pending
    // items, some follow a running or done item).
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for round in 2..=3 {
                let items: Vec<_> = (0..2000)
                    .map(|i| item(&format!("r{}", i * 7), round))
                    .collect();
                for chunk in items.chunks(250) {
                    queue
                        .enqueue(OBJ, Direction::ToHubspot, chunk)
                        .await
                        .unwrap();
                }
            }
        })
    };

    let mut workers = Vec::new();
    for w in 0..8 {
        let (queue, held, claimed_ids, synced) = (
            queue.clone(),
            held.clone(),
            claimed_ids.clone(),
            synced.clone(),
        );
        workers.push(tokio::spawn(async move {
            let name = format!("worker-{w}");
            let mut idle_rounds = 0;
            loop {
                let batch = queue
                    .claim(OBJ, Direction::ToHubspot, 100, &name)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    idle_rounds += 1;
                    if idle_rounds > 3 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                idle_rounds = 0;
                for it in &batch {
                    assert!(
                        claimed_ids.lock().unwrap().insert(it.id),
                        "item {} claimed twice",
                        it.id
                    );
                    assert!(
                        held.lock().unwrap().insert(it.record_key.clone()),
                        "record {} claimed while another worker held it",
                        it.record_key
                    );
                }
                for it in &batch {
                    held.lock().unwrap().remove(&it.record_key);
                    let mut s = synced.lock().unwrap();
                    let v = s.entry(it.record_key.clone()).or_insert(0);
                    *v = (*v).max(it.payload["version"].as_i64().unwrap());
                }
                let results: Vec<_> = batch.iter().map(|i| (i, done())).collect();
                let settled = queue.settle(&name, &results).await.unwrap();
                assert!(settled.lost.is_empty());
                assert_eq!(settled.done as usize, batch.len());
            }
        }));
    }
    producer.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    // Anything the producer added after the workers went idle is drained by one more worker.
    loop {
        let batch = queue
            .claim(OBJ, Direction::ToHubspot, 100, "last")
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        for it in &batch {
            assert!(claimed_ids.lock().unwrap().insert(it.id));
            let mut s = synced.lock().unwrap();
            let v = s.entry(it.record_key.clone()).or_insert(0);
            *v = (*v).max(it.payload["version"].as_i64().unwrap());
        }
        let results: Vec<_> = batch.iter().map(|i| (i, done())).collect();
        queue.settle("last", &results).await.unwrap();
    }

    let counts = states(&pool).await;
    let total: i64 = counts.values().sum();
    assert_eq!(
        counts.get("done").copied().unwrap_or(0),
        total,
        "{counts:?}"
    );
    assert_eq!(
        claimed_ids.lock().unwrap().len() as i64,
        total,
        "every item settled once"
    );
    let synced = synced.lock().unwrap();
    assert_eq!(synced.len(), records, "no record lost");
    for i in 0..2000 {
        assert_eq!(
            synced[&format!("r{}", i * 7)],
            3,
            "record r{} ends at its newest version",
            i * 7
        );
    }
}

#[tokio::test]
async fn coalescing_keeps_one_pending_item_with_the_newest_payload() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    put(&queue, &[item("a", 1)]).await;
    put(&queue, &[item("a", 3)]).await;
    // An older change never replaces a newer one, in another batch or in the same batch.
    put(&queue, &[item("a", 2)]).await;
    put(&queue, &[item("b", 5), item("b", 4)]).await;
    // The other direction is a separate item.
    queue
        .enqueue(OBJ, Direction::ToSql, &[item("a", 1)])
        .await
        .unwrap();

    let rows = sqlx::query(
        "SELECT record_key, direction, source_version, payload FROM sync_queue \
         WHERE state = 'pending' ORDER BY record_key, direction",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.get("record_key"),
                r.get("direction"),
                r.get("source_version"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), "to_hubspot".into(), 3),
            ("a".into(), "to_sql".into(), 1),
            ("b".into(), "to_hubspot".into(), 5)
        ]
    );
    let payload: serde_json::Value = rows[0].get("payload");
    assert_eq!(payload["version"], 3);

    // While "a" runs, a newer change queues behind it and is not claimable until it settles.
    let first = queue
        .claim(OBJ, Direction::ToHubspot, 10, "w1")
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    put(&queue, &[item("a", 4)]).await;
    // A re-read of a version already running is ignored.
    put(&queue, &[item("b", 5)]).await;
    assert!(
        queue
            .claim(OBJ, Direction::ToHubspot, 10, "w2")
            .await
            .unwrap()
            .is_empty()
    );
    let results: Vec<_> = first.iter().map(|i| (i, done())).collect();
    queue.settle("w1", &results).await.unwrap();
    let next = queue
        .claim(OBJ, Direction::ToHubspot, 10, "w2")
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].record_key.as_str(), next[0].source_version),
        ("a", 4)
    );
    // Re-reading a version that is already done enqueues nothing.
    assert_eq!(
        queue
            .enqueue(OBJ, Direction::ToHubspot, &[item("b", 5)])
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_dead_workers_items_are_rescued_without_charging_attempts() {
    // A zero lease expires as soon as the claim commits: no waiting for a clock.
    let (pool, queue) = queue_with(QueueSettings {
        lease: Duration::ZERO,
        ..settings()
    })
    .await;
    let keys: Vec<_> = (0..10).map(|i| item(&format!("k{i}"), 1)).collect();
    queue
        .enqueue(OBJ, Direction::ToHubspot, &keys)
        .await
        .unwrap();

    // Worker "crashy" claims and dies (its task is dropped without settling).
    let crashy = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .claim(OBJ, Direction::ToHubspot, 10, "crashy")
                .await
                .unwrap()
        })
    };
    let held: Vec<ClaimedItem> = crashy.await.unwrap();
    assert_eq!(held.len(), 10);

    let rescued = queue.rescue_expired().await.unwrap();
    assert_eq!(rescued.returned.len(), 10);
    let row = sqlx::query(
        "SELECT min(attempts) AS a, max(attempts) AS b, min(rescues) AS r FROM sync_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (row.get::<i32, _>("a"), row.get::<i32, _>("b")),
        (0, 0),
        "attempts unchanged"
    );
    assert_eq!(row.get::<i32, _>("r"), 1);

    // The dead worker coming back cannot settle what it no longer holds.
    let late: Vec<_> = held.iter().map(|i| (i, done())).collect();
    let settled = queue.settle("crashy", &late).await.unwrap();
    assert_eq!(settled.lost.len(), 10);
    assert_eq!(settled.done, 0);

    // An item that keeps killing its workers ends dead with the reason.
    for _ in 0..2 {
        assert_eq!(
            queue
                .claim(OBJ, Direction::ToHubspot, 10, "crashy")
                .await
                .unwrap()
                .len(),
            10
        );
        queue.rescue_expired().await.unwrap();
    }
    let counts = states(&pool).await;
    assert_eq!(counts.get("dead"), Some(&10), "{counts:?}");
    let last: String = sqlx::query_scalar("SELECT last_error FROM sync_queue LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        last.contains("3 rescues") && last.contains("crashy"),
        "{last}"
    );
    // Each member's history records the death, with why.
    let died: Vec<(String, Option<String>, Value)> =
        sqlx::query_as("SELECT operation, sql_key, reasons FROM sync_history ORDER BY sql_key")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(died.len(), 10, "{died:?}");
    for (operation, key, reasons) in &died {
        assert_eq!(operation, "DEAD");
        assert!(key.is_some());
        assert_eq!(reasons[0]["kind"], "lease_expired", "{reasons}");
    }
}

#[tokio::test]
async fn heartbeat_keeps_a_lease_and_reports_lost_items() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    put(&queue, &[item("h", 1)]).await;
    let batch = queue
        .claim(OBJ, Direction::ToHubspot, 1, "w")
        .await
        .unwrap();
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT locked_until FROM sync_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(queue.heartbeat("w", &[batch[0].id]).await.unwrap(), 1);
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT locked_until FROM sync_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(after >= before);
    // Nothing expired, so nothing is rescued; another worker cannot extend it.
    assert!(queue.rescue_expired().await.unwrap().returned.is_empty());
    assert_eq!(queue.heartbeat("other", &[batch[0].id]).await.unwrap(), 0);
}

#[tokio::test]
async fn retries_back_off_then_die_and_rejections_keep_every_reason() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    put(&queue, &[item("t", 1), item("p", 1)]).await;

    let mut delays = Vec::new();
    for attempt in 1..=4 {
        let batch = queue
            .claim(OBJ, Direction::ToHubspot, 10, "w")
            .await
            .unwrap();
        let t = batch
            .iter()
            .find(|i| i.record_key == "t")
            .expect("t is due");
        assert_eq!(t.attempts, attempt - 1);
        let mut results = vec![(
            t,
            Outcome::Retry(ItemError::new("transient", "HubSpot answered 503")),
        )];
        if let Some(p) = batch.iter().find(|i| i.record_key == "p") {
            let reasons = vec![
                ItemError {
                    field: Some("email".into()),
                    rule: Some("email".into()),
                    ..ItemError::new("validation", "not a valid email address")
                },
                ItemError {
                    field: Some("no__de_cedula".into()),
                    rule: Some("cedula_cr".into()),
                    ..ItemError::new("validation", "cédula must have 9 digits")
                },
            ];
            results.push((p, Outcome::Reject(reasons)));
        }
        queue.settle("w", &results).await.unwrap();
        if attempt < 4 {
            let delay: f64 = sqlx::query_scalar(
                "SELECT extract(epoch FROM run_after - updated_at)::float8 FROM sync_queue \
                 WHERE record_key = 't'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            // Not due yet: no worker can take it before its backoff ends.
            assert!(
                queue
                    .claim(OBJ, Direction::ToHubspot, 10, "w")
                    .await
                    .unwrap()
                    .is_empty()
            );
            delays.push(delay);
            make_due(&pool).await;
        }
    }
    for (i, d) in delays.iter().enumerate() {
        let base = 10.0 * 2f64.powi(i as i32);
        assert!(
            *d >= base * 0.5 - 0.5 && *d <= base * 1.5 + 0.5,
            "attempt {}: {d} s",
            i + 1
        );
    }
    let row = sqlx::query("SELECT state, attempts, last_error, jsonb_array_length(errors) AS n FROM sync_queue WHERE record_key = 't'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("state"), "dead");
    assert_eq!(row.get::<i32, _>("attempts"), 4);
    assert_eq!(row.get::<i32, _>("n"), 4, "one error entry per attempt");
    assert!(
        row.get::<String, _>("last_error")
            .contains("gave up after 4 attempts")
    );

    let row =
        sqlx::query("SELECT state, errors, last_error FROM sync_queue WHERE record_key = 'p'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(row.get::<String, _>("state"), "rejected");
    let errors: serde_json::Value = row.get("errors");
    let fields: Vec<_> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "no__de_cedula"]);
    assert!(
        row.get::<String, _>("last_error")
            .contains("cédula must have 9 digits")
    );

    // Operators bring them back.
    let r = queue
        .retry(&RetrySelection::Rejected { object: None })
        .await
        .unwrap();
    assert_eq!(r.changed.len(), 1);
    let r = queue
        .retry(&RetrySelection::Dead {
            object: Some(OBJ.into()),
        })
        .await
        .unwrap();
    assert_eq!(r.changed.len(), 1);
    let batch = queue
        .claim(OBJ, Direction::ToHubspot, 10, "w")
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch.iter().all(|i| i.attempts == 0));
}

#[tokio::test]
async fn retry_and_discard_leave_superseded_and_running_items_alone() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    put(&queue, &[item("x", 1), item("y", 1)]).await;
    let batch = queue
        .claim(OBJ, Direction::ToHubspot, 10, "w")
        .await
        .unwrap();
    let results: Vec<_> = batch
        .iter()
        .map(|i| {
            (
                i,
                Outcome::Reject(vec![ItemError::new("validation", "bad")]),
            )
        })
        .collect();
    queue.settle("w", &results).await.unwrap();
    let old_x = batch.iter().find(|i| i.record_key == "x").unwrap().id;
    let y = batch.iter().find(|i| i.record_key == "y").unwrap().id;
    // x changed again at the source: its old rejected item must not be resent.
    put(&queue, &[item("x", 2)]).await;
    let report = queue
        .retry(&RetrySelection::Ids(vec![old_x, y, 999_999]))
        .await
        .unwrap();
    assert_eq!(report.changed, vec![y]);
    let reasons: HashMap<i64, String> = report.skipped.into_iter().collect();
    assert!(reasons[&old_x].contains("superseded"), "{reasons:?}");
    assert!(reasons[&999_999].contains("no such item"));

    let running = queue
        .claim(OBJ, Direction::ToHubspot, 10, "w")
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    let report = queue.discard(&[running[0].id]).await.unwrap();
    assert!(report.changed.is_empty());
    assert!(report.skipped[0].1.contains("running"));
    queue
        .settle(
            "w",
            &running
                .iter()
                .map(|i| (i, Outcome::Reject(vec![ItemError::new("hubspot", "400")])))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let report = queue.discard(&[running[0].id]).await.unwrap();
    assert_eq!(report.changed, vec![running[0].id]);
}

#[tokio::test]
async fn pruning_deletes_only_old_finished_items_and_never_blocks_claims() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    // done/old, done/recent, rejected/old current, rejected/old superseded, pending.
    sqlx::query(
        "INSERT INTO sync_queue (object, direction, record_key, payload, source_version, state, finished_at) VALUES
         ('contacts','to_hubspot','old-done','{}',1,'done', now() - interval '40 days'),
         ('contacts','to_hubspot','new-done','{}',1,'done', now() - interval '1 day'),
         ('contacts','to_hubspot','rej','{}',1,'rejected', now() - interval '40 days'),
         ('contacts','to_hubspot','sup','{}',1,'rejected', now() - interval '40 days'),
         ('contacts','to_hubspot','sup','{}',2,'done', now() - interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();
    put(&queue, &[item("p1", 1), item("p2", 1)]).await;

    // A claim in progress elsewhere holds row locks on pending items while pruning runs…
    let mut claim_tx = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM sync_queue WHERE record_key = 'p1' FOR UPDATE")
        .execute(&mut *claim_tx)
        .await
        .unwrap();
    let deleted = tokio::time::timeout(
        Duration::from_secs(10),
        queue.prune(Duration::from_secs(30 * 86400), 1),
    )
    .await
    .expect("pruning did not wait for a claim")
    .unwrap();
    assert_eq!(deleted, 2);
    claim_tx.rollback().await.unwrap();

    // …and a claim runs while a pruning transaction is still open.
    sqlx::query("UPDATE sync_queue SET finished_at = now() - interval '40 days' WHERE record_key = 'new-done'")
        .execute(&pool)
        .await
        .unwrap();
    let mut prune_tx = pool.begin().await.unwrap();
    let n = hubsync::queue::prune_once(&mut *prune_tx, Duration::from_secs(30 * 86400), 100)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let claimed = tokio::time::timeout(
        Duration::from_secs(10),
        queue.claim(OBJ, Direction::ToHubspot, 10, "w"),
    )
    .await
    .expect("claim did not wait for pruning")
    .unwrap();
    assert_eq!(claimed.len(), 2);
    prune_tx.commit().await.unwrap();

    let left: Vec<String> = sqlx::query_scalar(
        "SELECT record_key || ':' || state FROM sync_queue ORDER BY record_key, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        ["p1:running", "p2:running", "rej:rejected", "sup:done"]
    );
}

#[tokio::test]
async fn operator_views_show_counts_and_stuck_items() {
    let (_, queue) = queue_with(QueueSettings {
        lease: Duration::ZERO,
        ..settings()
    })
    .await;
    put(&queue, &[item("a", 1), item("b", 1)]).await;
    queue
        .enqueue(OBJ, Direction::ToSql, &[item("123", 1)])
        .await
        .unwrap();
    let batch = queue
        .claim(OBJ, Direction::ToHubspot, 1, "gone-worker")
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);

    let summary = queue.summary().await.unwrap();
    let cell = |dir: &str, state: &str| {
        summary
            .iter()
            .find(|r| r.direction == dir && r.state == state)
            .map(|r| r.items)
    };
    assert_eq!(cell("to_hubspot", "pending"), Some(1));
    assert_eq!(cell("to_hubspot", "running"), Some(1));
    assert_eq!(cell("to_sql", "pending"), Some(1));
    assert!(
        summary
            .iter()
            .filter(|r| r.state == "pending")
            .all(|r| r.oldest_pending_age_s.is_some())
    );

    let stuck = queue.stuck(Duration::from_secs(900), 10).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert!(
        stuck[0].problem.contains("gone-worker"),
        "{}",
        stuck[0].problem
    );
}

#[tokio::test]
async fn an_idle_worker_wakes_on_enqueue_without_waiting_for_its_poll() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    let mut waker = hubsync::queue::Waker::new(pool.clone(), Duration::from_secs(3600)).await;
    let wait = tokio::spawn(async move {
        waker.wait().await;
    });
    // The listener is registered before `new` returns, so this NOTIFY cannot be missed.
    put(&queue, &[item("w", 1)]).await;
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("woken by NOTIFY, long before the one-hour poll")
        .unwrap();
}

/// A fresh database and a queue on it with `settings`.
async fn queue_with(settings: QueueSettings) -> (PgPool, Queue) {
    let (pool, _) = fresh_db().await;
    (pool.clone(), Queue::new(pool, settings))
}

/// Settles every claimed item of `keys` with its outcome, then backdates it `days` finished.
async fn finish(queue: &Queue, pool: &PgPool, outcomes: Vec<(&str, Outcome, i32)>) {
    let claimed = queue
        .claim(OBJ, Direction::ToHubspot, 100, "w")
        .await
        .unwrap();
    let mut results = Vec::new();
    for (key, outcome, _) in &outcomes {
        let item = claimed.iter().find(|i| i.record_key == *key).unwrap();
        results.push((item, outcome.clone()));
    }
    queue.settle("w", &results).await.unwrap();
    for (key, _, days) in outcomes {
        sqlx::query(
            "UPDATE sync_queue SET finished_at = now() - make_interval(days => $2) \
             WHERE record_key = $1",
        )
        .bind(key)
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
    }
}

fn invalid_email() -> ItemError {
    ItemError {
        field: Some("email".into()),
        rule: Some("email".into()),
        ..ItemError::new(
            "validation",
            "\"ana.rojas@example\" is not a valid email address",
        )
    }
}

#[tokio::test]
async fn rejected_and_dead_payloads_lose_their_values_after_retention_and_keep_their_reasons() {
    let (pool, queue) = queue_with(QueueSettings {
        rejected_payload_retention: Duration::from_secs(30 * 86400),
        ..settings()
    })
    .await;
    let member = |key: &str| NewItem {
        payload: json!({"email": "ana.rojas@example", "firstname": "Ana", "salario": 1250000.5}),
        ..item(key, 1)
    };
    put(
        &queue,
        &[member("old-rej"), member("old-dead"), member("new-rej")],
    )
    .await;
    let dead = ItemError::new(
        "hubspot",
        "HubSpot refused \"Ana\" for ana.rojas@example.com",
    );
    finish(
        &queue,
        &pool,
        vec![
            ("old-rej", Outcome::Reject(vec![invalid_email()]), 40),
            ("old-dead", Outcome::Dead(dead), 40),
            ("new-rej", Outcome::Reject(vec![invalid_email()]), 1),
        ],
    )
    .await;

    let done = queue.enforce_retention().await.unwrap();
    assert_eq!(done.payloads_dropped, 2);
    assert_eq!(
        done.items, 0,
        "a record's newest rejected item is never deleted"
    );

    let rows = sqlx::query(
        "SELECT record_key, state, payload, errors, last_error, payload_dropped_at IS NOT NULL AS dropped \
         FROM sync_queue ORDER BY record_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let row = |key: &str| {
        rows.iter()
            .find(|r| r.get::<String, _>("record_key") == key)
            .unwrap()
    };
    for key in ["old-rej", "old-dead"] {
        let r = row(key);
        assert!(r.get::<bool, _>("dropped"), "{key}");
        assert_eq!(
            r.get::<serde_json::Value, _>("payload"),
            json!({"email": null, "firstname": null, "salario": null}),
            "{key}: keys kept, values gone"
        );
        let stored = format!(
            "{} {}",
            r.get::<serde_json::Value, _>("errors"),
            r.get::<Option<String>, _>("last_error").unwrap()
        );
        for value in ["ana.rojas@example", "\"Ana\""] {
            assert!(
                !stored.contains(value),
                "{key} still quotes {value}: {stored}"
            );
        }
    }
    let rejected = row("old-rej");
    assert_eq!(rejected.get::<String, _>("state"), "rejected");
    let errors: serde_json::Value = rejected.get("errors");
    assert_eq!(errors[0]["field"], "email");
    assert_eq!(errors[0]["rule"], "email");
    assert_eq!(errors[0]["kind"], "validation");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("is not a valid email address"),
        "{errors}"
    );
    assert!(
        rejected
            .get::<Option<String>, _>("last_error")
            .unwrap()
            .starts_with("email [email]: "),
        "the reason names field and rule"
    );
    assert_eq!(row("old-dead").get::<String, _>("state"), "dead");

    let recent = row("new-rej");
    assert!(!recent.get::<bool, _>("dropped"));
    assert_eq!(
        recent.get::<serde_json::Value, _>("payload")["email"],
        "ana.rojas@example"
    );
    assert!(
        recent
            .get::<serde_json::Value, _>("errors")
            .to_string()
            .contains("ana.rojas@example")
    );

    // A second pass finds nothing more, and an item without values cannot be retried.
    assert_eq!(queue.enforce_retention().await.unwrap().payloads_dropped, 0);
    let old_id: i64 = sqlx::query_scalar("SELECT id FROM sync_queue WHERE record_key = 'old-rej'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let report = queue
        .retry(&RetrySelection::Ids(vec![old_id]))
        .await
        .unwrap();
    assert!(report.changed.is_empty());
    assert!(
        report.skipped[0].1.contains("rejected_payload_retention"),
        "{:?}",
        report.skipped
    );
    let report = queue
        .retry(&RetrySelection::Rejected { object: None })
        .await
        .unwrap();
    assert_eq!(
        report.changed.len(),
        1,
        "only the recent rejected item is retried"
    );
}

/// A queue with `settings` whose table holds rows made by `insert` (`$1` a key, `$2` an age
/// in days) for each of `aged`; then one retention pass, and the keys left in `table`.
async fn retention_pass(
    settings: QueueSettings,
    insert: &'static str,
    aged: &[(&str, i32)],
    table: &'static str,
) -> (hubsync::queue::Enforced, Vec<String>) {
    let (pool, queue) = queue_with(QueueSettings {
        prune_batch: 1,
        ..settings
    })
    .await;
    for (key, days) in aged {
        sqlx::query(insert)
            .bind(key)
            .bind(days)
            .execute(&pool)
            .await
            .unwrap();
    }
    let done = queue.enforce_retention().await.unwrap();
    let left = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT sql_key FROM {table} ORDER BY sql_key"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    (done, left)
}

#[tokio::test]
async fn conflicts_are_deleted_after_their_retention() {
    let (done, left) = retention_pass(
        QueueSettings {
            conflict_retention: Duration::from_secs(90 * 86400),
            ..settings()
        },
        "INSERT INTO sync_conflicts (object, sql_key, field, sql_value, hubspot_value, \
             synced_value, policy, winner, detected_at) \
         VALUES ('contacts', $1, 'firstname', 'Ana', 'Anabel', 'Ana M', 'newest_wins', 'sql', \
                 now() - make_interval(days => $2))",
        &[("old-1", 100), ("old-2", 91), ("recent", 89)],
        "sync_conflicts",
    )
    .await;
    assert_eq!(done.conflicts, 2);
    assert_eq!(left, ["recent"]);
}

#[tokio::test]
async fn history_is_deleted_after_the_queue_retention() {
    let (done, left) = retention_pass(
        QueueSettings {
            retention: Duration::from_secs(30 * 86400),
            ..settings()
        },
        "INSERT INTO sync_history (object, direction, operation, sql_key, at) \
         VALUES ('contacts', 'to_hubspot', 'UPDATE', $1, now() - make_interval(days => $2))",
        &[("old-1", 40), ("old-2", 31), ("recent", 29)],
        "sync_history",
    )
    .await;
    assert_eq!(done.history, 2);
    assert_eq!(left, ["recent"]);
}

#[tokio::test]
async fn a_paused_direction_is_claimed_by_no_worker_until_resumed_and_loses_nothing() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), settings());
    assert!(
        queue
            .pause(OBJ, Direction::ToHubspot, "ops@host:1")
            .await
            .unwrap()
    );
    assert!(
        !queue
            .pause(OBJ, Direction::ToHubspot, "again")
            .await
            .unwrap(),
        "already paused"
    );
    // Changes keep arriving while paused.
    put(&queue, &[item("a", 1), item("b", 1)]).await;
    queue
        .enqueue(OBJ, Direction::ToSql, &[item("c", 1)])
        .await
        .unwrap();
    // Another instance on the same database honours the pause too.
    let other = Queue::new(pool.clone(), settings());
    assert!(
        other
            .claim(OBJ, Direction::ToHubspot, 100, "w2")
            .await
            .unwrap()
            .is_empty()
    );
    let pauses = other.pauses().await.unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(
        (pauses[0].object.as_str(), pauses[0].direction.as_str()),
        (OBJ, "to_hubspot")
    );
    assert_eq!(pauses[0].paused_by, "ops@host:1");
    // The other direction goes on.
    assert_eq!(
        other
            .claim(OBJ, Direction::ToSql, 100, "w2")
            .await
            .unwrap()
            .len(),
        1
    );
    // A newer change of a paused record still replaces the older pending one.
    put(&queue, &[item("a", 2)]).await;

    assert!(queue.resume(OBJ, Direction::ToHubspot).await.unwrap());
    assert!(
        !queue.resume(OBJ, Direction::ToHubspot).await.unwrap(),
        "not paused any more"
    );
    let claimed = queue
        .claim(OBJ, Direction::ToHubspot, 100, "w1")
        .await
        .unwrap();
    let mut got: Vec<(String, i64)> = claimed
        .iter()
        .map(|i| (i.record_key.clone(), i.source_version))
        .collect();
    got.sort();
    assert_eq!(got, [("a".to_string(), 2), ("b".to_string(), 1)]);
}
