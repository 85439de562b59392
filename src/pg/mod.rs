//! PostgreSQL: connecting the pool (TLS verified unless the server is on this host), embedded
//! migrations, and throwaway clusters for tests, benchmarks and the demo.

pub mod throwaway;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

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
    let options = connect_options(url).map_err(|e| PgError::Unreachable(describe(&e)))?;
    if let Some(warning) = tls_warning(&options) {
        tracing::warn!(
            host = options.get_host(),
            sslmode = ssl_mode_name(options.get_ssl_mode()),
            "{warning}"
        );
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|e| PgError::Unreachable(describe(&e)))
}

/// The options hubsync connects with. Without an `sslmode` in the URL (or `PGSSLMODE`), a
/// server on another host is reached with `verify-full`: TLS, a certificate signed by a trusted
/// authority, for the host named. A server on this host (127.0.0.0/8, ::1, localhost, a Unix
/// socket) keeps sqlx's `prefer`.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let explicit = std::env::var_os("PGSSLMODE").is_some() || url_sets_ssl_mode(url);
    resolve(url.parse()?, explicit)
}

fn resolve(options: PgConnectOptions, explicit: bool) -> Result<PgConnectOptions, sqlx::Error> {
    let options = options.application_name("hubsync");
    Ok(if explicit || is_local(&options) {
        options
    } else {
        options.ssl_mode(PgSslMode::VerifyFull)
    })
}

fn url_sets_ssl_mode(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(k, _)| matches!(k.as_ref(), "sslmode" | "ssl-mode"))
    })
}

/// True for a Unix socket or a loopback host, where nothing crosses a network.
fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What an operator should know when the URL asks for less than `verify-full` to a server on
/// another host (names the host and the mode, never the password); `None` otherwise.
pub fn tls_warning(options: &PgConnectOptions) -> Option<String> {
    let mode = options.get_ssl_mode();
    if is_local(options) || matches!(mode, PgSslMode::VerifyFull) {
        return None;
    }
    let risk = match mode {
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => {
            "the connection may go unencrypted and the server is not authenticated"
        }
        PgSslMode::Require => "the server certificate is not checked",
        _ => "the certificate is not checked against the host name",
    };
    Some(format!(
        "PostgreSQL at {} with sslmode={}: {risk} (sslmode=verify-full is the default)",
        options.get_host(),
        ssl_mode_name(mode)
    ))
}

fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, explicit: bool) -> PgSslMode {
        resolve(url.parse().unwrap(), explicit)
            .unwrap()
            .get_ssl_mode()
    }

    #[test]
    fn another_host_is_verified_unless_the_url_says_otherwise() {
        let remote = "postgres://hubsync:pw-secret@db.coop.internal/hubsync";
        assert!(matches!(mode(remote, false), PgSslMode::VerifyFull));
        assert!(matches!(
            mode("postgres://u@10.0.0.5:5432/q", false),
            PgSslMode::VerifyFull
        ));
        for local in [
            "postgres://u:p@127.0.0.1:5433/q",
            "postgres://u:p@127.8.9.10/q",
            "postgres://u:p@localhost/q",
            "postgres://u:p@[::1]:5432/q",
            "postgres:///q?host=/var/run/postgresql",
        ] {
            assert!(matches!(mode(local, false), PgSslMode::Prefer), "{local}");
            assert_eq!(
                tls_warning(&resolve(local.parse().unwrap(), false).unwrap()),
                None
            );
        }
        let weak = format!("{remote}?sslmode=require");
        assert!(url_sets_ssl_mode(&weak) && !url_sets_ssl_mode(remote));
        let options = resolve(weak.parse().unwrap(), true).unwrap();
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        let warning = tls_warning(&options).unwrap();
        assert!(
            warning.contains("db.coop.internal") && warning.contains("sslmode=require"),
            "{warning}"
        );
        assert!(!warning.contains("pw-secret"));
        let verified = resolve(remote.parse().unwrap(), false).unwrap();
        assert_eq!(tls_warning(&verified), None);
    }
}
