//! `hubsync bench queue`: enqueue N items, then W workers claim batches of 100 and settle them,
//! with M finished rows already in the table; prints items/s and the ratio to HubSpot's write
//! ceiling (1,000 records/s).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::thousands;
use crate::config::QueueSettings;
use crate::exit::{self, Failure};
use crate::pg::throwaway::{Cluster, Durability};
use crate::queue::{Direction, NewItem, Operation, Outcome, Queue};

/// HubSpot's batch write ceiling at the default tier: 100 requests/10 s × 100 records.
const HUBSPOT_CEILING_PER_S: f64 = 1000.0;

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Items to enqueue and drain.
    #[arg(long, default_value_t = 100_000)]
    items: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Finished rows put in the table first (claims must stay fast at millions).
    #[arg(long, default_value_t = 1_000_000)]
    finished: u64,
    /// Use this database instead of a throwaway cluster (it must be one you can write to).
    #[arg(long, env = "HUBSYNC_BENCH_DATABASE_URL")]
    database_url: Option<String>,
}

pub async fn run(args: QueueBenchArgs) -> Result<u8, Failure> {
    bench(args)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

async fn bench(args: QueueBenchArgs) -> anyhow::Result<()> {
    let (_cluster, url, place) = match args.database_url {
        Some(url) => (None, url, "given database".to_string()),
        None => {
            let cluster =
                tokio::task::spawn_blocking(|| Cluster::start(Durability::Durable)).await??;
            let url = cluster.create_database("bench").await?;
            (
                Some(cluster),
                url,
                "throwaway cluster, default durability (fsync on)".into(),
            )
        }
    };
    let pool = crate::pg::connect_url(&url, (args.workers + 4) as u32, Duration::from_secs(10))
        .await
        .context("cannot connect")?;
    crate::pg::migrate(&pool).await?;
    let object = format!("bench{:x}", rand::random::<u32>());
    let queue = Queue::new(pool.clone(), QueueSettings::default());

    let t = Instant::now();
    sqlx::query(
        "INSERT INTO sync_queue (object, direction, record_key, payload, source_version, state, \
                                 outcome, finished_at) \
         SELECT $1, 'to_hubspot', 'old-' || g, jsonb_build_object('n', g), g, 'done', 'UPDATE', \
                now() - interval '1 day' \
         FROM generate_series(1, $2) g",
    )
    .bind(&object)
    .bind(args.finished as i64)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE sync_queue").execute(&pool).await?;
    let seeded = t.elapsed();

    let payload = serde_json::json!({
        "numero_asociado": 1, "firstname": "María José", "lastname": "Rodríguez Solís",
        "email": "maria@example.com", "provincia": "San José", "canton": "Escazú"
    });
    let t = Instant::now();
    let mut next = 0u64;
    while next < args.items {
        let end = (next + 1000).min(args.items);
        let items: Vec<NewItem> = (next..end)
            .map(|i| NewItem {
                record_key: i.to_string(),
                operation: Operation::Upsert,
                payload: payload.clone(),
                source_version: i as i64,
            })
            .collect();
        queue.enqueue(&object, Direction::ToHubspot, &items).await?;
        next = end;
    }
    let enqueue = t.elapsed();

    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let queue = queue.clone();
        let object = object.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench-{w}");
            let mut settled = 0u64;
            loop {
                let batch = queue
                    .claim(&object, Direction::ToHubspot, 100, &worker)
                    .await?;
                if batch.is_empty() {
                    return anyhow::Ok(settled);
                }
                let results: Vec<_> = batch
                    .iter()
                    .map(|item| {
                        (
                            item,
                            Outcome::Done {
                                operation: "UPDATE".into(),
                                hubspot_id: Some(item.record_key.clone()),
                            },
                        )
                    })
                    .collect();
                settled += queue.settle(&worker, &results).await?.done;
            }
        }));
    }
    let mut settled = 0;
    for task in tasks {
        settled += task.await??;
    }
    let drain = t.elapsed();
    anyhow::ensure!(
        settled == args.items,
        "settled {settled} of {} items",
        args.items
    );

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    println!("hubsync bench queue — PostgreSQL {version}, {place}");
    println!(
        "finished rows present: {} (seeded in {:.1} s)",
        thousands(args.finished),
        seeded.as_secs_f64()
    );
    println!(
        "enqueue:       {} items in {:.2} s = {} items/s (batches of 1,000, coalescing)",
        thousands(args.items),
        enqueue.as_secs_f64(),
        thousands(rate(args.items, enqueue) as u64)
    );
    let drain_rate = rate(settled, drain);
    println!(
        "claim+settle:  {} items in {:.2} s = {} items/s ({} workers, batches of 100)",
        thousands(settled),
        drain.as_secs_f64(),
        thousands(drain_rate as u64),
        args.workers
    );
    println!(
        "ratio claim+settle / HubSpot write ceiling (1,000 records/s): {:.1}",
        drain_rate / HUBSPOT_CEILING_PER_S
    );
    sqlx::query("DELETE FROM sync_queue WHERE object = $1")
        .bind(&object)
        .execute(&pool)
        .await?;
    Ok(())
}
