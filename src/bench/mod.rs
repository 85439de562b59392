//! Benchmarks run from the CLI (`hubsync bench …`): each prints figures and ratios from one run.

mod hubspot;
mod queue;
pub mod validate;

use std::path::Path;

use clap::Subcommand;

use crate::exit::Failure;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue N items, then drain them with W workers claiming batches of 100.
    Queue(queue::QueueBenchArgs),
    /// Update N contacts on the in-process HubSpot simulator through 4 workers sharing one
    /// limiter; prints records/s against the tier's ceiling.
    Hubspot(hubspot::HubspotBenchArgs),
    /// Map and validate generated member records with the configured mapping on one core.
    Validate(validate::Args),
}

/// Runs one benchmark; `config` is the `--config` file.
pub async fn run(command: BenchCommand, config: &Path) -> Result<u8, Failure> {
    match command {
        BenchCommand::Queue(args) => queue::run(args).await,
        BenchCommand::Hubspot(args) => hubspot::run(args).await,
        BenchCommand::Validate(args) => validate::run(config, args),
    }
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
