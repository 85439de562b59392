//! The worker loop on real PostgreSQL: outcomes and links settle together; a batch still in
//! the handler when the shutdown grace runs out is released, not failed.

use std::sync::Arc;

use hubsync::queue::{ClaimedItem, Direction, NewItem, Operation, Outcome, Queue};
use hubsync::sync::links::LinkUpdate;
use hubsync::sync::worker::{BatchHandler, BatchResult, Round, Worker};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::fresh_db;

/// Links every record to a HubSpot id derived from its key; leaves item 0's outcome out.
struct LinkEverything;

impl BatchHandler for LinkEverything {
    async fn handle(&self, batch: &[ClaimedItem]) -> BatchResult {
        let mut result = BatchResult::default();
        for item in batch.iter().filter(|i| i.record_key != "k0") {
            let id = format!("9{}", &item.record_key[1..]);
            result.outcomes.push((
                item.id,
                Outcome::Done {
                    operation: "CREATE".into(),
                    hubspot_id: Some(id.clone()),
                },
            ));
            result.links.push(LinkUpdate {
                sql_key: item.record_key.clone(),
                hubspot_id: Some(id),
                synced: Default::default(),
                sql_version: Some(item.source_version),
                hubspot_version: None,
                direction: Direction::ToHubspot,
            });
        }
        result
    }
}

/// Never finishes; says when it has started.
struct Hangs(Arc<Notify>);

impl BatchHandler for Hangs {
    async fn handle(&self, _batch: &[ClaimedItem]) -> BatchResult {
        self.0.notify_one();
        std::future::pending().await
    }
}

async fn seeded(n: usize) -> Queue {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool, Default::default());
    let items: Vec<_> = (0..n)
        .map(|i| NewItem {
            record_key: format!("k{i}"),
            operation: Operation::Upsert,
            payload: serde_json::json!({}),
            source_version: 1,
        })
        .collect();
    queue
        .enqueue("contacts", Direction::ToHubspot, &items)
        .await
        .unwrap();
    queue
}

fn worker<H>(queue: &Queue, handler: H) -> Worker<H> {
    Worker {
        queue: queue.clone(),
        name: "w1".into(),
        object: "contacts".into(),
        direction: Direction::ToHubspot,
        handler: Arc::new(handler),
    }
}

#[tokio::test]
async fn outcomes_and_links_settle_together_and_a_missing_outcome_is_retried() {
    let queue = seeded(250).await;
    let w = worker(&queue, LinkEverything);
    let settled = w.drain().await.unwrap();
    assert_eq!(settled.done, 249);
    assert_eq!(settled.retried, 1);
    let links: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_links WHERE hubspot_id = '9' || substr(sql_key, 2)",
    )
    .fetch_one(queue.pool())
    .await
    .unwrap();
    assert_eq!(links, 249);
    let last_error: String =
        sqlx::query_scalar("SELECT last_error FROM sync_queue WHERE record_key = 'k0'")
            .fetch_one(queue.pool())
            .await
            .unwrap();
    assert!(last_error.contains("no outcome"), "{last_error}");
}

#[tokio::test]
async fn a_batch_in_flight_when_grace_runs_out_is_released_without_an_attempt() {
    let queue = seeded(10).await;
    let started = Arc::new(Notify::new());
    let w = worker(&queue, Hangs(started.clone()));
    let abandon = CancellationToken::new();
    let round = {
        let abandon = abandon.clone();
        tokio::spawn(async move { w.round(&abandon).await.unwrap() })
    };
    started.notified().await;
    abandon.cancel();
    assert_eq!(round.await.unwrap(), Round::Released(10));
    let rows: Vec<(String, i32)> = sqlx::query_as("SELECT state, attempts FROM sync_queue")
        .fetch_all(queue.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter().all(|(s, a)| s == "pending" && *a == 0),
        "{rows:?}"
    );
}
