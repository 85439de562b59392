//! `hubsync bench cluster`: N `hubsync run` processes on one queue database and one HubSpot
//! simulator at tier 100, sharing its budget through PostgreSQL. For each N: records/s of all
//! instances together ÷ the tier's ceiling, 429s, the busiest 10 s window, and the limiter's
//! added latency per grant (one grant's round trip to PostgreSQL; median and p99, the worst
//! instance's).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::SeedableRng;

use super::sync::{Daemon, Stand, bench_config, metric};
use super::thousands;
use crate::exit::{self, Failure};
use crate::mapping::{Mapper, SqlRow};

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Instances run together; one run per count.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    instances: Vec<usize>,
    /// Members in the SQL Server simulator (about 1 in 20 invalid).
    #[arg(long, default_value_t = 30_000)]
    members: u64,
    /// Worker tasks of each instance (`queue.workers`).
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

pub async fn run(args: ClusterBenchArgs, config: &Path) -> Result<u8, Failure> {
    bench(args, config)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

/// What one run measured.
struct Figures {
    instances: usize,
    synced: usize,
    drain_s: f64,
    steady_s: f64,
    steady_records: usize,
    /// Contacts made after the first window (the budget starts full: HubSpot lets a whole
    /// window's requests through at once), and the time they took.
    sustained: (usize, f64),
    throttled: u64,
    busiest: u64,
    grant_p50: f64,
    grant_p99: f64,
    parts: Vec<f64>,
    late: u64,
}

async fn bench(args: ClusterBenchArgs, config_path: &Path) -> anyhow::Result<()> {
    if args.instances.contains(&0) {
        bail!("--instances: each count must be at least 1");
    }
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let ceiling = 100.0 / 10.0 * crate::hubspot::BATCH_LIMIT as f64;
    println!(
        "bench cluster: {} members per run, {} workers per instance, HubSpot tier 100 \
         (ceiling {ceiling:.0} records/s)",
        thousands(args.members),
        args.workers
    );
    for &n in &args.instances {
        let f = one_run(n, &args, &text).await?;
        let rate = f.synced as f64 / f.drain_s;
        let steady = f.steady_records as f64 / f.steady_s;
        let sustained = f.sustained.0 as f64 / f.sustained.1;
        let parts: Vec<String> = f.parts.iter().map(|p| format!("{:.2}", p)).collect();
        println!(
            "instances {}: {} contacts in {:.1} s, {rate:.0} records/s, ratio {:.3} \
             (first contact to last: {:.3}; after the first window: {:.3}); 429s: {}; \
             busiest window {} of 100; late grants {}; \
             limiter's added latency per grant: median {:.2} ms, p99 {:.2} ms; parts of the \
             budget [{}]",
            f.instances,
            thousands(f.synced as u64),
            f.drain_s,
            rate / ceiling,
            steady / ceiling,
            sustained / ceiling,
            f.throttled,
            f.busiest,
            f.late,
            f.grant_p50 * 1000.0,
            f.grant_p99 * 1000.0,
            parts.join(", ")
        );
    }
    Ok(())
}

async fn one_run(n: usize, args: &ClusterBenchArgs, text: &str) -> anyhow::Result<Figures> {
    let stand = Stand::start().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let members: Vec<SqlRow> = (0..args.members)
        .map(|i| super::validate::member_row(i, &mut rng))
        .collect();
    stand
        .mssql
        .insert_rows("[dbo].[hb_contacts]", &members)
        .await?;
    let mut configs = Vec::new();
    for i in 0..n {
        let logs = stand.dir.path().join(format!("logs-{i}"));
        let (config, port) = bench_config(text, &stand.hubspot, &logs, args.workers)?;
        let name = "# instance: hubsync-1";
        if !config.contains(name) {
            bail!("the config has no `{name}` line to name each instance");
        }
        let config = config.replace(name, &format!("instance: bench-{i}"));
        let path = stand.dir.path().join(format!("config-{i}.yaml"));
        std::fs::write(&path, config)?;
        configs.push((path, port));
    }
    let config = crate::config::load_str(
        &std::fs::read_to_string(&configs[0].0)?,
        crate::config::Need::Nothing,
        &|_| None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mapper = Mapper::new(
        config
            .objects
            .get("contacts")
            .context("the config maps no `contacts` object")?,
    )?;
    let valid = members
        .iter()
        .filter(|m| mapper.to_hubspot(m).is_valid())
        .count();

    let status = stand
        .hubsync_with(&configs[0].0, &["backfill", "--object", "contacts"])
        .status()?;
    if !status.success() {
        bail!("hubsync backfill failed: {status}");
    }
    let t = Instant::now();
    let mut daemons = Vec::new();
    for (path, _) in &configs {
        let mut run = stand.hubsync_with(path, &["run"]);
        run.envs(crate::daemon::SERVICE_ALLOCATOR_ENV);
        daemons.push(Daemon(run.spawn()?));
    }
    let mut first_contact: Option<(Instant, usize)> = None;
    let mut after_first_window: Option<(Instant, usize)> = None;
    let mut figures: Vec<(f64, f64, f64, f64)> = vec![(0.0, 0.0, 0.0, 0.0); n];
    loop {
        for d in &mut daemons {
            if let Some(status) = d.0.try_wait()? {
                bail!("hubsync run exited early: {status}");
            }
        }
        if first_contact.is_none() {
            first_contact = stand.first_contact();
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if let (None, Some((at, _))) = (after_first_window, first_contact)
            && at.elapsed() >= crate::hubspot::limiter::TEN_SECONDS
        {
            after_first_window = Some((Instant::now(), stand.hubspot.stats().contacts as usize));
        }
        if stand.drained(valid, args.members).await? {
            break;
        }
        // The figures of a running instance (its grant samples are its recent ones).
        for (i, (_, port)) in configs.iter().enumerate() {
            figures[i] = instance_figures(*port).await.unwrap_or(figures[i]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = Instant::now();
    for (i, (_, port)) in configs.iter().enumerate() {
        figures[i] = instance_figures(*port).await.unwrap_or(figures[i]);
    }
    for d in &mut daemons {
        d.stop();
    }
    let stats = stand.hubspot.stats();
    let synced = stand.hubspot.contacts().len();
    if synced != valid {
        bail!("{synced} contacts in HubSpot for {valid} valid members");
    }
    let (start, first) = first_contact.unwrap_or((t, 0));
    let (window_end, by_then) = after_first_window.unwrap_or((start, first));
    Ok(Figures {
        sustained: (synced - by_then, (end - window_end).as_secs_f64()),
        instances: n,
        synced,
        drain_s: (end - t).as_secs_f64(),
        steady_s: (end - start).as_secs_f64(),
        steady_records: synced - first,
        throttled: stats.throttled_429,
        busiest: stats.max_requests_in_10s_window,
        grant_p50: figures.iter().map(|f| f.0).fold(0.0, f64::max),
        grant_p99: figures.iter().map(|f| f.1).fold(0.0, f64::max),
        parts: figures.iter().map(|f| f.2).collect(),
        late: figures.iter().map(|f| f.3 as u64).sum(),
    })
}

/// An instance's grant round trip (median, p99), its part of the budget and its late grants,
/// from `/metrics`.
async fn instance_figures(port: u16) -> Option<(f64, f64, f64, f64)> {
    Some((
        metric(port, "hubsync_limiter_grant_seconds{quantile=\"0.5\"}").await?,
        metric(port, "hubsync_limiter_grant_seconds{quantile=\"0.99\"}").await?,
        metric(port, "hubsync_limiter_part").await?,
        metric(port, "hubsync_limiter_late_grants").await?,
    ))
}
