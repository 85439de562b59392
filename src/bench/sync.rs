//! `hubsync bench sync`: the whole service end to end. N generated members in the SQL Server
//! simulator, an empty HubSpot simulator at tier 100, a throwaway PostgreSQL and the shipped
//! config: `hubsync backfill`, then `hubsync run` (a child process, as in production) drains the
//! queue with its workers. Prints records/s and the ratio to the limiter's ceiling, 429s, the
//! daemon's peak RSS, and p50/p95 change-to-HubSpot latency of single-row updates made during
//! steady polling.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use rand::SeedableRng;
use sqlx::PgPool;

use super::{peak_rss_mib, thousands};
use crate::exit::{self, Failure};
use crate::mapping::{Mapper, SqlRow};
use crate::pg::throwaway::{Cluster, Durability};
use crate::sim::hubspot::{RunningSim, SimOptions};
use crate::sim::mssql::{MssqlSimOptions, RunningMssqlSim};

#[derive(Debug, Args)]
pub struct SyncBenchArgs {
    /// Members in the SQL Server simulator (about 1 in 20 invalid).
    #[arg(long, default_value_t = 100_000)]
    members: u64,
    /// Worker tasks of the daemon (`queue.workers`).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Single-row updates made during steady polling, for the latency figures.
    #[arg(long, default_value_t = 1_000)]
    updates: usize,
    /// Updates made per second during the latency phase.
    #[arg(long, default_value_t = 20)]
    updates_per_s: u32,
}

pub async fn run(args: SyncBenchArgs, config: &Path) -> Result<u8, Failure> {
    bench(args, config)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

/// The shipped config with the bench's addresses; each replaced setting must be present.
pub(super) fn bench_config(
    text: &str,
    hubspot: &RunningSim,
    logs: &Path,
    workers: usize,
) -> anyhow::Result<(String, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut out = text.to_string();
    for (from, to) in [
        (
            "http_listen: 127.0.0.1:9187",
            format!("http_listen: 127.0.0.1:{port}"),
        ),
        ("https://api.hubapi.com", hubspot.base_url()),
        (
            "directory: /var/log/hubsync",
            format!("directory: {}", logs.display()),
        ),
        ("workers: 4 ", format!("workers: {workers} ")),
    ] {
        if !out.contains(from) {
            bail!("the config has no `{from}` to point at the bench's systems");
        }
        out = out.replace(from, &to);
    }
    Ok((out, port))
}

/// One figure from the daemon's `/metrics`, if it answers.
pub(super) async fn metric(port: u16, name: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub(super) struct Stand {
    pub(super) _cluster: Cluster,
    pub(super) url: String,
    pub(super) pool: PgPool,
    pub(super) hubspot: RunningSim,
    pub(super) mssql: RunningMssqlSim,
    pub(super) dir: tempfile::TempDir,
}

impl Stand {
    /// A throwaway PostgreSQL with an empty database, an empty HubSpot simulator at tier 100
    /// with its search-index lag, the seeded SQL Server simulator and a temp directory.
    pub(super) async fn start() -> anyhow::Result<Stand> {
        let cluster = tokio::task::spawn_blocking(|| Cluster::start(Durability::Durable)).await??;
        let url = cluster.create_database("bench").await?;
        let pool = crate::pg::connect_url(&url, 2, Duration::from_secs(10)).await?;
        let hubspot = crate::sim::hubspot::start(
            "127.0.0.1:0".parse()?,
            SimOptions {
                tier: 100,
                ..SimOptions::lagging()
            },
        )
        .await?;
        let mssql =
            crate::sim::mssql::start("127.0.0.1:0".parse()?, MssqlSimOptions::seeded()).await?;
        Ok(Stand {
            _cluster: cluster,
            url,
            pool,
            hubspot,
            mssql,
            dir: tempfile::tempdir()?,
        })
    }

    /// Writes the stand's config.yaml (`text` pointed at the stand's systems with `workers`
    /// workers) and loads it: the configuration, the contacts' mapper and the listener's port.
    pub(super) fn configure(
        &self,
        text: &str,
        workers: usize,
    ) -> anyhow::Result<(crate::config::Config, Mapper, u16)> {
        let logs = self.dir.path().join("logs");
        let (config_text, port) = bench_config(text, &self.hubspot, &logs, workers)?;
        std::fs::write(self.dir.path().join("config.yaml"), &config_text)?;
        let config = crate::config::load_str(&config_text, crate::config::Need::Nothing, &|_| None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let contacts = config
            .objects
            .get("contacts")
            .context("the config maps no `contacts` object")?;
        let mapper = Mapper::new(contacts)?;
        Ok((config, mapper, port))
    }

    pub(super) fn hubsync(&self, args: &[&str]) -> Command {
        self.hubsync_with(&self.dir.path().join("config.yaml"), args)
    }

    /// `hubsync --config config args`, pointed at the stand's systems, output discarded.
    pub(super) fn hubsync_with(&self, config: &Path, args: &[&str]) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| "hubsync".into());
        let mut cmd = Command::new(exe);
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .env("HUBSYNC_DATABASE_URL", &self.url)
            .env("HUBSYNC_HUBSPOT_TOKEN", "sim-token")
            .env("HUBSYNC_SQL_SERVER", self.mssql.connection_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Now and the number of contacts, once HubSpot holds any: where a load's steady rate
    /// starts.
    pub(super) fn first_contact(&self) -> Option<(Instant, usize)> {
        let made = self.hubspot.stats().contacts as usize;
        (made > 0).then(|| (Instant::now(), made))
    }

    /// Whether the load is over: HubSpot holds the `valid` contacts and every one of the
    /// `members` to_hubspot items is done or rejected. The queue is read only once HubSpot
    /// holds them all: counting a 100,000-row queue ten times a second would take a core's
    /// quarter from the service being measured on this 2-core machine.
    pub(super) async fn drained(&self, valid: usize, members: u64) -> anyhow::Result<bool> {
        if (self.hubspot.stats().contacts as usize) < valid {
            return Ok(false);
        }
        let (open, finished) = self.progress().await?;
        Ok(open == 0 && finished >= members as i64)
    }

    /// to_hubspot items not finished yet, and items done or rejected.
    async fn progress(&self) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('pending', 'running')), \
                    count(*) FILTER (WHERE state IN ('done', 'rejected')) \
             FROM sync_queue WHERE direction = 'to_hubspot'",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

async fn bench(args: SyncBenchArgs, config_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let stand = Stand::start().await?;
    let (config, mapper, port) = stand.configure(&text, args.workers)?;
    let (ceiling, poll) = (
        f64::from(config.hubspot.requests_per_10s) / 10.0 * crate::hubspot::BATCH_LIMIT as f64,
        config.queue.poll_interval,
    );

    let t = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let members: Vec<SqlRow> = (0..args.members)
        .map(|i| super::validate::member_row(i, &mut rng))
        .collect();
    stand
        .mssql
        .insert_rows("[dbo].[hb_contacts]", &members)
        .await?;
    let valid: Vec<&SqlRow> = members
        .iter()
        .filter(|m| mapper.to_hubspot(m).is_valid())
        .collect();
    println!(
        "bench sync: {} members in the SQL Server simulator ({} valid) in {:.1} s",
        thousands(args.members),
        thousands(valid.len() as u64),
        t.elapsed().as_secs_f64()
    );

    // Backfill: every member queued for HubSpot.
    let t = Instant::now();
    let mut backfill = stand
        .hubsync(&["backfill", "--object", "contacts"])
        .spawn()?;
    let backfill_pid = backfill.id();
    let mut backfill_rss = 0.0f64;
    let status = loop {
        if let Some(status) = backfill.try_wait()? {
            break status;
        }
        backfill_rss = backfill_rss.max(peak_rss_mib(Some(backfill_pid)).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !status.success() {
        bail!("hubsync backfill failed: {status}");
    }
    let backfill_s = t.elapsed().as_secs_f64();

    // The service drains the queue.
    let t = Instant::now();
    // As deployed: with the allocator settings of deploy/hubsync.service.
    let mut run = stand.hubsync(&["run"]);
    run.envs(crate::daemon::SERVICE_ALLOCATOR_ENV);
    let mut daemon = Daemon(run.spawn()?);
    let mut rss = 0.0f64;
    // The steady rate runs from the first contact in HubSpot to the last.
    let mut first_contact: Option<(Instant, usize)> = None;
    loop {
        rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
        if let Some(status) = daemon.0.try_wait()? {
            bail!("hubsync run exited early: {status}");
        }
        if first_contact.is_none() {
            first_contact = stand.first_contact();
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if stand.drained(valid.len(), args.members).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = Instant::now();
    let drain_s = (end - t).as_secs_f64();
    let stats = stand.hubspot.stats();
    let synced = stand.hubspot.contacts().len();
    let per_s = synced as f64 / drain_s;
    let (start, first) = first_contact.unwrap_or((t, 0));
    let steady_s = (end - start).as_secs_f64();
    let steady = (synced - first) as f64 / steady_s;

    // Steady polling: single-row updates, each timed until HubSpot holds it.
    let latencies = latency_phase(&stand, &valid, &args, &mut rss, &mut daemon).await?;
    let stats_after = stand.hubspot.stats();
    let paused = metric(port, "hubsync_hubspot_throttled").await;
    let waited = metric(port, "hubsync_limiter_wait_seconds").await;
    let late = metric(port, "hubsync_limiter_late_grants").await;
    rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
    daemon.stop();

    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or(f64::NAN)
    };
    println!(
        "backfill: {} records queued in {backfill_s:.1} s (peak RSS {backfill_rss:.1} MiB)",
        thousands(args.members)
    );
    println!(
        "sync: {} contacts created in {drain_s:.1} s by {} workers, from the daemon's start: \
         {per_s:.0} records/s, ratio {:.3} of the limiter's ceiling ({ceiling:.0} records/s)",
        thousands(synced as u64),
        args.workers,
        per_s / ceiling
    );
    println!(
        "steady rate, first contact to last ({steady_s:.1} s; the first after {:.1} s): \
         {steady:.0} records/s, ratio {:.3}",
        drain_s - steady_s,
        steady / ceiling
    );
    // What the shared budget grants at most: the tier's requests per window plus its margin.
    let span = crate::budget::shared::spans()[0];
    let granted_ceiling =
        ceiling * crate::hubspot::limiter::TEN_SECONDS.as_secs_f64() / span.as_secs_f64();
    println!(
        "of what the limiter grants at most ({} requests per {:.1} s, the window plus its margin \
         for the time between a slot and the request's arrival: {granted_ceiling:.0} records/s): \
         {:.3} from the daemon's start, {:.3} steady",
        config.hubspot.requests_per_10s,
        span.as_secs_f64(),
        per_s / granted_ceiling,
        steady / granted_ceiling
    );
    println!(
        "HubSpot: {} requests during the load, {} × 429 in all (rolling-window 429s that paused \
         the daemon: {}), busiest 10 s window {} requests; the daemon's calls waited {:.0} s for \
         the limiter in all",
        thousands(stats.total_requests),
        stats_after.throttled_429,
        paused.map_or("?".into(), |p| p.to_string()),
        stats_after.max_requests_in_10s_window,
        waited.unwrap_or(f64::NAN)
    );
    // Batch calls (reads, creates, upserts, updates) the load took per 100 contacts made, and
    // the other requests by endpoint.
    let (batch, others): (Vec<_>, Vec<_>) = stats
        .requests_by_endpoint
        .iter()
        .partition(|(endpoint, _)| endpoint.starts_with("batch/"));
    let batch_calls: u64 = batch.iter().map(|(_, n)| **n).sum();
    println!(
        "requests per 100 records: {:.2} (minimum 1.00; {} batch calls for {} contacts)",
        batch_calls as f64 * 100.0 / synced.max(1) as f64,
        thousands(batch_calls),
        thousands(synced as u64)
    );
    let others: Vec<String> = others
        .iter()
        .map(|(endpoint, n)| format!("{endpoint} {n}"))
        .collect();
    println!(
        "other requests during the load: {}; slots the limiter left unused (late grants or \
         wake-ups): {}",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        },
        late.map_or("?".into(), |n| n.to_string())
    );
    println!("daemon peak RSS: {rss:.1} MiB (target ≤ 64)");
    println!(
        "change-to-HubSpot latency over {} single-row updates: p50 {:.2} s, p95 {:.2} s, max {:.2} s \
         (poll interval {:.1} s; target p95 ≤ {:.1} s)",
        latencies.len(),
        pct(0.5),
        pct(0.95),
        latencies.last().copied().unwrap_or(f64::NAN),
        poll.as_secs_f64(),
        poll.as_secs_f64() + 2.0
    );
    Ok(())
}

/// The daemon child; SIGTERM on drop so a failed bench leaves nothing running.
pub(super) struct Daemon(pub(super) Child);

impl Daemon {
    pub(super) fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Updates `args.updates` valid members one at a time at `args.updates_per_s` and returns each
/// change's latency (SQL Server commit to HubSpot's modification time), sorted, in seconds.
async fn latency_phase(
    stand: &Stand,
    valid: &[&SqlRow],
    args: &SyncBenchArgs,
    rss: &mut f64,
    daemon: &mut Daemon,
) -> anyhow::Result<Vec<f64>> {
    let step = Duration::from_secs_f64(1.0 / f64::from(args.updates_per_s.max(1)));
    let picked: Vec<&SqlRow> = valid
        .iter()
        .step_by((valid.len() / args.updates.max(1)).max(1))
        .take(args.updates)
        .copied()
        .collect();
    let mut sent = Vec::with_capacity(picked.len());
    let mut tick = tokio::time::interval(step);
    for (i, member) in picked.iter().enumerate() {
        tick.tick().await;
        let key = &member["numero_asociado"];
        let name = format!("Latencia {i}");
        stand
            .mssql
            .execute_batch(&format!(
                "UPDATE [dbo].[hb_contacts] SET [firstname] = N'{name}' WHERE [numero_asociado] = {key}"
            ))
            .await?;
        let email = member["email"].as_str().unwrap_or_default().to_lowercase();
        sent.push((email, name, epoch_ms()));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut latencies = Vec::with_capacity(sent.len());
    let mut waiting = sent;
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            bail!("{} updates never reached HubSpot", waiting.len());
        }
        *rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
        waiting.retain(|(email, name, at)| {
            let Some(contact) = stand.hubspot.contact_by_email(email) else {
                return true;
            };
            if contact.properties.get("firstname") != Some(name) {
                return true;
            }
            let modified = contact
                .properties
                .get("lastmodifieddate")
                .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(epoch_ms);
            latencies.push((modified - at).max(0) as f64 / 1000.0);
            false
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}
