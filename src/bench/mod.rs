//! Benchmarks run from the CLI (`hubsync bench …`): each prints figures and ratios from one run.

pub mod chaos;
mod cluster;
mod hubspot;
mod mssql;
mod queue;
mod reconcile;
mod sync;
pub mod validate;

use std::path::Path;

use clap::Subcommand;

use crate::exit::Failure;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue N items, then drain them with W workers claiming batches of 100.
    Queue(queue::QueueBenchArgs),
    /// Read N changed rows of the default contact table from the SQL Server simulator through
    /// the change reader.
    Mssql(mssql::MssqlBenchArgs),
    /// Update N contacts on the in-process HubSpot simulator through 4 workers sharing one
    /// limiter; prints records/s against the tier's ceiling.
    Hubspot(hubspot::HubspotBenchArgs),
    /// The whole service: backfill N members from the SQL Server simulator into an empty HubSpot
    /// simulator with `hubsync run`; records/s, 429s, peak RSS and change latency.
    Sync(sync::SyncBenchArgs),
    /// N `hubsync run` instances (default 1, 2 and 3 in turn) sharing one HubSpot budget
    /// through the queue database: records/s of all together ÷ the tier's ceiling, 429s, the
    /// busiest 10 s window and the limiter's added latency per grant.
    Cluster(cluster::ClusterBenchArgs),
    /// Kill and compare: N members, the daemon SIGKILLed K times at seeded moments and
    /// restarted, edits on both sides, HubSpot faults; then SQL Server and HubSpot compared
    /// field by field. Prints lost edits per direction, duplicates, conflicts and the recovery
    /// time after the last kill; exits 1 if a target is missed.
    Chaos(chaos::ChaosArgs),
    /// N members in step plus a share of drift of each kind made behind hubsync's back;
    /// `hubsync run` reconciles them as a job: time, HubSpot requests and their share of the
    /// limit, drift made and found per kind, the daemon's peak RSS.
    Reconcile(reconcile::ReconcileBenchArgs),
    /// Map and validate generated member records with the configured mapping on one core.
    Validate(validate::Args),
}

/// HubSpot's batch write ceiling at the default tier: 100 requests/10 s × 100 records.
pub const HUBSPOT_CEILING_PER_S: f64 = 1000.0;

/// Runs one benchmark; `config` is the `--config` file.
pub async fn run(command: BenchCommand, config: &Path) -> Result<u8, Failure> {
    match command {
        BenchCommand::Queue(args) => queue::run(args).await,
        BenchCommand::Mssql(args) => mssql::run(args).await,
        BenchCommand::Hubspot(args) => hubspot::run(args).await,
        BenchCommand::Sync(args) => sync::run(args, config).await,
        BenchCommand::Cluster(args) => cluster::run(args, config).await,
        BenchCommand::Chaos(args) => chaos::run(args, config).await,
        BenchCommand::Reconcile(args) => reconcile::run(args, config).await,
        BenchCommand::Validate(args) => validate::run(config, args),
    }
}

/// Peak resident memory so far of process `pid` (None: this process), in MiB (Linux `VmHWM`).
pub fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let who = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `1234567` → `1,234,567`, for figures people read.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
