//! Simulators of the outside systems for tests, benchmarks and the demo: HubSpot over HTTP and
//! SQL Server over TDS, so production client code runs unchanged against them.

pub mod hubspot;

use crate::exit::Failure;

/// `hubsync sim …`: which simulator to run.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Run the HubSpot simulator until SIGINT/SIGTERM; prints its base URL.
    Hubspot(hubspot::HubspotArgs),
}

/// Runs the chosen simulator until it is told to stop.
pub async fn run(command: SimCommand) -> Result<u8, Failure> {
    match command {
        SimCommand::Hubspot(args) => hubspot::run(args).await,
    }
}

/// Registers SIGINT and SIGTERM handlers now; the returned future resolves on either. Register
/// before announcing readiness so an early signal is not lost.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
