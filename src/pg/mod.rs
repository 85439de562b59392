//! PostgreSQL: connecting the pool, embedded migrations, and throwaway clusters for tests,
//! benchmarks and the demo.

pub mod throwaway;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::PostgresSettings;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the queue database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    #[error("PostgreSQL migration failed: {0}")]
    Migrate(String),
    #[error("postgres.url is not set")]
    NoUrl,
}

/// Opens a pool from settings. Errors name the cause but never the URL (it holds a password).
pub async fn connect(settings: &PostgresSettings) -> Result<PgPool, PgError> {
    let url = settings.url.as_ref().ok_or(PgError::NoUrl)?;
    connect_url(
        url.expose_secret(),
        settings.max_connections,
        settings.connect_timeout,
    )
    .await
}

pub async fn connect_url(
    url: &str,
    max_connections: u32,
    timeout: Duration,
) -> Result<PgPool, PgError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| PgError::Unreachable(describe(&e)))?;
    let options = options.application_name("hubsync");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|e| PgError::Unreachable(describe(&e)))
}

/// Applies pending migrations; safe to run from several processes at once (sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| PgError::Migrate(e.to_string()))
}

/// A one-line description of a connection error that never contains the connection URL.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(_) => "TLS handshake failed".into(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
        sqlx::Error::Configuration(_) => "invalid connection settings in postgres.url".into(),
        sqlx::Error::Database(db) => format!("server said: {}", db.message()),
        other => other.to_string(),
    }
}
