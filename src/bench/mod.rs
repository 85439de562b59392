//! Benchmarks run from the CLI (`hubsync bench …`): they print figures and ratios from one run.

pub mod validate;

use std::path::Path;

use clap::Subcommand;

use crate::exit::Failure;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Map and validate generated member records with the configured mapping on one core.
    Validate(validate::Args),
}

/// Runs one benchmark; `config` is the `--config` file.
pub async fn run(command: BenchCommand, config: &Path) -> Result<u8, Failure> {
    match command {
        BenchCommand::Validate(args) => validate::run(config, args),
    }
}
