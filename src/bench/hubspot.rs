//! `hubsync bench hubspot`: starts the HubSpot simulator in-process (no faults), seeds N contacts
//! and updates them in batches of 100 through 4 workers sharing one limiter; prints records/s,
//! the ratio to the tier's ceiling (limit × 100 / 10 s), 429s served and the busiest 10 s window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::thousands;
use crate::exit::{self, Failure};
use crate::hubspot::{
    BATCH_LIMIT, HubSpotClient, HubSpotSettings, Limiter, UpdateInput, update_concurrently,
};
use crate::sim::hubspot::{SimOptions, start};

#[derive(Debug, Args)]
pub struct HubspotBenchArgs {
    /// Requests per rolling 10 s window, for the simulator and the client (100, 190 or 250).
    #[arg(long, default_value_t = 100)]
    tier: u32,
    /// Contacts to seed and update.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Concurrent workers sharing the limiter.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

pub async fn run(args: HubspotBenchArgs) -> Result<u8, Failure> {
    bench(args)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

async fn bench(args: HubspotBenchArgs) -> anyhow::Result<()> {
    let options = SimOptions {
        tier: args.tier,
        ..SimOptions::default()
    };
    let token = options.token.clone();
    let sim = start("127.0.0.1:0".parse()?, options)
        .await
        .context("cannot start the HubSpot simulator")?;
    let seed: Vec<BTreeMap<String, Option<String>>> = (0..args.records)
        .map(|i| BTreeMap::from([("email".to_owned(), Some(format!("bench{i}@example.com")))]))
        .collect();
    let ids = sim.seed_contacts(&seed)?;

    let settings = HubSpotSettings {
        base_url: sim.base_url().parse()?,
        token: Some(token),
        requests_per_10s: args.tier,
        ..HubSpotSettings::default()
    };
    let limiter = Arc::new(Limiter::from_settings(&settings));
    let client = Arc::new(HubSpotClient::new(&settings, limiter)?);
    let batches: Vec<Vec<UpdateInput>> = ids
        .chunks(BATCH_LIMIT)
        .rev()
        .map(|chunk| {
            chunk
                .iter()
                .map(|id| UpdateInput {
                    id: id.clone(),
                    properties: BTreeMap::from([("city".to_owned(), Some(format!("Bench {id}")))]),
                })
                .collect()
        })
        .collect();

    println!(
        "hubspot bench: {} contacts, batches of {BATCH_LIMIT}, {} workers, tier {} requests/10 s \
         (simulator in-process, no faults)",
        thousands(args.records as u64),
        args.workers,
        args.tier
    );
    let started = Instant::now();
    let done = update_concurrently(&client, "contacts", batches, args.workers).await?;
    let elapsed = started.elapsed();
    let ok = done.iter().filter(|(_, o)| o.is_ok()).count();

    let stats = sim.stats();
    let limiter = client.limiter().stats();
    let rate = ok as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let ceiling = f64::from(args.tier) * BATCH_LIMIT as f64 / 10.0;
    println!(
        "updated {} of {} in {:.1} s: {:.0} records/s",
        thousands(ok as u64),
        thousands(args.records as u64),
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "ceiling {ceiling:.0} records/s (tier × 100 / 10 s); ratio {:.3} (target ≥ 0.95)",
        rate / ceiling
    );
    println!(
        "429s served: {}; largest 10 s window: {} requests (limit {}); requests: {}",
        stats.throttled_429,
        stats.max_requests_in_10s_window,
        args.tier,
        thousands(stats.total_requests)
    );
    println!(
        "limiter: {} grants, callers waited {:.1} s in total",
        thousands(limiter.granted),
        limiter.waited.as_secs_f64()
    );
    sim.shutdown().await;
    if ok != args.records {
        anyhow::bail!("{} updates did not succeed", args.records - ok);
    }
    Ok(())
}
