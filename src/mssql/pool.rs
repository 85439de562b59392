//! Connections: the ADO.NET connection string (a secret), TLS, a small deadpool pool of tiberius
//! clients, reconnect with exponential backoff, and the readiness probe.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tiberius::{Client, Column, Config, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::error::MssqlError;
use super::settings::SqlServerSettings;
use super::sql;
use super::value::Param;
use crate::support::retry;

type TdsClient = Client<Compat<TcpStream>>;

/// The last value of a connection-string keyword (any of `keys`, lower case), unquoted.
fn keyword_value(conn: &str, keys: &[&str]) -> Option<String> {
    conn.split(';').rev().find_map(|part| {
        let (k, v) = part.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        keys.contains(&k.as_str())
            .then(|| v.trim().trim_matches(['\'', '"']).to_string())
    })
}

/// [`keyword_value`] in lower case.
fn keyword(conn: &str, keys: &[&str]) -> Option<String> {
    keyword_value(conn, keys).map(|v| v.to_ascii_lowercase())
}

/// Checks `trustServerCertificateCA=<file>` (the CA the server certificate is verified
/// against, on top of the system's): not combined with `trustServerCertificate=true`, a `pem`,
/// `crt` or `der` file that holds a certificate.
fn check_ca_file(conn: &str) -> Result<(), String> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let Some(path) = keyword_value(conn, &["trustservercertificateca"]) else {
        return Ok(());
    };
    if keyword(conn, &["trustservercertificate"])
        .is_some_and(|v| matches!(v.as_str(), "true" | "yes"))
    {
        return Err(
            "trustServerCertificateCA and trustServerCertificate=true cannot be combined: \
             drop trustServerCertificate so the certificate is checked against the CA"
                .into(),
        );
    }
    let path = std::path::Path::new(&path);
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "trustServerCertificateCA: cannot read {}: {e}",
            path.display()
        )
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let certificates = match extension.as_deref() {
        Some("pem" | "crt") => CertificateDer::pem_slice_iter(&bytes)
            .filter(Result::is_ok)
            .count(),
        Some("der") => usize::from(!bytes.is_empty()),
        _ => {
            return Err(format!(
                "trustServerCertificateCA: {} must be a .pem, .crt or .der file",
                path.display()
            ));
        }
    };
    if certificates == 0 {
        return Err(format!(
            "trustServerCertificateCA: {} holds no certificate",
            path.display()
        ));
    }
    Ok(())
}

/// True when the string asks for Windows/Kerberos integrated authentication.
fn wants_integrated_auth(conn: &str) -> bool {
    keyword(
        conn,
        &[
            "integratedsecurity",
            "integrated security",
            "trusted_connection",
        ],
    )
    .is_some_and(|v| matches!(v.as_str(), "true" | "yes" | "sspi"))
}

/// What the connection string gives up of TLS: encryption off (`encrypt=false` encrypts the
/// login only; `DANGER_PLAINTEXT` nothing) or a server certificate that is not checked
/// (`trustServerCertificate=true`). Empty for a verified, encrypted connection (the default).
pub fn tls_weaknesses(conn: &SecretString) -> Vec<&'static str> {
    let text = conn.expose_secret();
    let mut weak = Vec::new();
    match keyword(text, &["encrypt"]).as_deref() {
        Some("false" | "no") => weak.push(
            "encrypt=false: only the login is encrypted, queries and rows cross the network in \
             clear",
        ),
        Some("danger_plaintext") => weak.push(
            "encrypt=DANGER_PLAINTEXT: nothing is encrypted, not even the password (for the \
             simulator only)",
        ),
        _ => {}
    }
    if keyword(
        text,
        &["trustservercertificate", "trust server certificate"],
    )
    .is_some_and(|v| matches!(v.as_str(), "true" | "yes"))
    {
        weak.push(
            "trustServerCertificate=true: the server certificate is not checked, so anyone on \
             the path can pose as the server",
        );
    }
    weak
}

/// Parses the connection string into a tiberius configuration. The message of a failure never
/// contains the string itself (it holds the password).
pub fn parse_connection(conn: &SecretString) -> Result<Config, String> {
    let text = conn.expose_secret();
    if wants_integrated_auth(text) {
        return Err(
            "integrated (Windows/Kerberos) authentication is not supported by hubsync on \
             Linux; use SQL Server authentication (user=…;password=…)"
                .into(),
        );
    }
    check_ca_file(text)?;
    let mut config = Config::from_ado_string(text).map_err(|_| {
        "not a valid ADO.NET connection string (key=value pairs separated by `;`; quote values \
         that contain `;`, e.g. password='p;w' or password={p;w})"
            .to_string()
    })?;
    config.application_name("hubsync");
    Ok(config)
}

/// One pooled connection; marked broken after an I/O or protocol failure so the pool drops it.
pub struct Conn {
    client: TdsClient,
    broken: bool,
    addr: String,
}

/// Result columns and rows of one statement.
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

impl Conn {
    fn fail(&mut self, e: tiberius::error::Error) -> MssqlError {
        let e = MssqlError::from_tiberius(e, &self.addr);
        if e.breaks_connection() {
            self.broken = true;
        }
        e
    }

    fn query_of<'a>(sql: &'a str, params: &[Param]) -> Query<'a> {
        let mut q = Query::new(sql);
        for p in params {
            p.bind(&mut q);
        }
        q
    }

    /// Runs a statement through sp_executesql and returns its first result set.
    pub async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Rows, MssqlError> {
        let q = Self::query_of(sql, params);
        let client = &mut self.client;
        let result = async move {
            let mut stream = q.query(client).await?;
            let columns = stream
                .columns()
                .await?
                .map(<[Column]>::to_vec)
                .unwrap_or_default();
            let rows = stream.into_first_result().await?;
            Ok::<_, tiberius::error::Error>(Rows { columns, rows })
        };
        // Boxed: tiberius futures are large, and callers nest them.
        let result = Box::pin(result).await;
        result.map_err(|e| self.fail(e))
    }

    /// Runs a statement through sp_executesql and returns the rows it affected.
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, MssqlError> {
        let q = Self::query_of(sql, params);
        match Box::pin(q.execute(&mut self.client)).await {
            Ok(r) => Ok(r.total()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Sends a plain SQL batch (transaction control).
    pub async fn batch(&mut self, sql: &str) -> Result<(), MssqlError> {
        let result = match self.client.simple_query(sql).await {
            Ok(stream) => stream.into_results().await.map(drop),
            Err(e) => Err(e),
        };
        result.map_err(|e| self.fail(e))
    }
}

/// bb8 manager creating tiberius connections.
pub struct Manager {
    config: Config,
    addr: String,
    connect_timeout: Duration,
}

impl Manager {
    async fn open(&self) -> Result<Conn, MssqlError> {
        let unavailable = |reason: String| MssqlError::Unavailable {
            addr: self.addr.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no TCP connection within {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|e| unavailable(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| unavailable(e.to_string()))?;
        let client = Client::connect(self.config.clone(), tcp.compat_write())
            .await
            .map_err(|e| match MssqlError::from_tiberius(e, &self.addr) {
                // A refused login is reported as the server reports it (18456), not as an outage.
                MssqlError::Protocol(m) => unavailable(m),
                other => other,
            })?;
        Ok(Conn {
            client,
            broken: false,
            addr: self.addr.clone(),
        })
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = Conn;
    type Error = MssqlError;

    async fn create(&self) -> Result<Conn, MssqlError> {
        Box::pin(self.open()).await
    }

    /// A connection is reused only when it is not marked broken and still answers the probe.
    async fn recycle(
        &self,
        conn: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<MssqlError> {
        if conn.broken {
            return Err(deadpool::managed::RecycleError::message(
                "connection broken",
            ));
        }
        Box::pin(conn.query(sql::PROBE, &[])).await.map(drop)?;
        Ok(())
    }
}

/// A checked-out connection; returns to the pool when dropped.
pub type PooledConn = deadpool::managed::Object<Manager>;

/// A small pool of SQL Server connections shared by readers and writers.
#[derive(Clone)]
pub struct SqlPool {
    pool: deadpool::managed::Pool<Manager>,
    addr: String,
    retry_max_elapsed: Duration,
    deadlock_retries: u32,
    zone: chrono_tz::Tz,
}

impl std::fmt::Debug for SqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPool").field("addr", &self.addr).finish()
    }
}

impl SqlPool {
    /// Builds the pool from `sql_server:` settings without connecting yet (connections open on
    /// first use; `probe` checks reachability).
    pub fn new(settings: &SqlServerSettings) -> Result<Self, MssqlError> {
        let conn = settings
            .connection
            .as_ref()
            .ok_or_else(|| MssqlError::Config("no connection string configured".into()))?;
        let mut config = parse_connection(conn).map_err(MssqlError::Config)?;
        config.handshake_timeout(Some(settings.connect_timeout));
        config.command_timeout(Some(settings.command_timeout));
        let addr = config.get_addr();
        for weakness in tls_weaknesses(conn) {
            tracing::warn!(server = %addr, "SQL Server connection: {weakness}");
        }
        let manager = Manager {
            config,
            addr: addr.clone(),
            connect_timeout: settings.connect_timeout,
        };
        let pool = deadpool::managed::Pool::builder(manager)
            .max_size(settings.pool_size.max(1) as usize)
            .wait_timeout(Some(settings.connect_timeout + settings.command_timeout))
            .create_timeout(Some(settings.connect_timeout + Duration::from_secs(1)))
            .recycle_timeout(Some(settings.command_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| MssqlError::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Self {
            pool,
            addr,
            retry_max_elapsed: settings.retry_max_elapsed,
            deadlock_retries: settings.deadlock_retries,
            zone: settings.zone(),
        })
    }

    /// `host:port` of the server (no credentials).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn zone(&self) -> chrono_tz::Tz {
        self.zone
    }

    pub(crate) fn retry_max_elapsed(&self) -> Duration {
        self.retry_max_elapsed
    }

    pub(crate) fn deadlock_retries(&self) -> u32 {
        self.deadlock_retries
    }

    /// One checkout attempt, no retry.
    pub async fn get_once(&self) -> Result<PooledConn, MssqlError> {
        use deadpool::managed::{PoolError, TimeoutType};
        let unavailable = |reason: &str| MssqlError::Unavailable {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        };
        Box::pin(self.pool.get()).await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(TimeoutType::Wait) => {
                unavailable("every pooled connection stayed busy past the timeout")
            }
            PoolError::Timeout(TimeoutType::Create) => unavailable("connecting timed out"),
            PoolError::Timeout(TimeoutType::Recycle) => {
                unavailable("checking an idle connection timed out")
            }
            PoolError::Closed => unavailable("the connection pool is closed"),
            other => MssqlError::Protocol(other.to_string()),
        })
    }

    /// Readiness probe: one connection answers `SELECT 1` now (no retries).
    pub async fn probe(&self) -> Result<(), MssqlError> {
        let mut conn = self.get_once().await?;
        conn.query(sql::PROBE, &[]).await.map(drop)
    }

    /// Runs `op` with a pooled connection, retrying with exponential backoff (up to
    /// `retry_max_elapsed`) while the failure is a lost or unreachable server. For idempotent
    /// work only.
    pub async fn retrying<'p, T>(
        &'p self,
        what: &str,
        mut op: impl for<'c> FnMut(
            &'c mut Conn,
        )
            -> Pin<Box<dyn Future<Output = Result<T, MssqlError>> + Send + 'c>>,
    ) -> Result<T, MssqlError> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            let result = match self.get_once().await {
                Ok(mut conn) => op(&mut conn).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e @ MssqlError::Unavailable { .. }) => {
                    attempt += 1;
                    let wait =
                        retry::delay(attempt, Duration::from_millis(50), Duration::from_secs(5));
                    if started.elapsed() + wait > self.retry_max_elapsed {
                        return Err(e);
                    }
                    tracing::warn!(server = %self.addr, operation = what, error = %e, retry_in_ms = wait.as_millis() as u64, "SQL Server unavailable; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrated_auth_is_refused_with_a_clear_message() {
        let s = SecretString::from("server=tcp:db,1433;Integrated Security=SSPI;database=coop");
        let err = parse_connection(&s).unwrap_err();
        assert!(err.contains("integrated"), "{err}");
        let s = SecretString::from("server=tcp:db,1433;trusted_connection=yes");
        assert!(parse_connection(&s).is_err());
    }

    #[test]
    fn parse_errors_never_contain_the_password() {
        let s = SecretString::from("server=tcp:db,1433;user=sa;password=S3cr3t;x;y=\"");
        let err = parse_connection(&s).unwrap_err();
        assert!(!err.contains("S3cr3t"), "{err}");
    }

    #[test]
    fn a_good_string_parses_with_tls_by_default() {
        let s = SecretString::from(
            "server=tcp:db.coop.local,1433;database=coop;user=hubsync;password=S3cr3t;encrypt=true",
        );
        let config = parse_connection(&s).unwrap();
        assert_eq!(config.get_addr(), "db.coop.local:1433");
        assert!(tls_weaknesses(&s).is_empty());
    }

    #[test]
    fn encryption_off_or_an_unchecked_certificate_is_named() {
        let weak = |s: &str| tls_weaknesses(&SecretString::from(s.to_owned()));
        assert!(weak("server=tcp:db,1433;user=u;password=p").is_empty());
        let both = weak("server=tcp:db,1433;Encrypt=False;TrustServerCertificate=True");
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(
            both[0].starts_with("encrypt=false") && both[1].starts_with("trustServerCertificate")
        );
        assert!(weak("server=db;encrypt=DANGER_PLAINTEXT")[0].contains("nothing is encrypted"));
        assert!(weak("server=db;encrypt=true;trust server certificate=no").is_empty());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate_and_is_not_combined_with_trusting_any() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["db".to_string()]).unwrap();
        std::fs::write(&pem, cert.cert.pem()).unwrap();
        let conn = |extra: &str| {
            SecretString::from(format!(
                "server=tcp:db,1433;user=u;password=p;encrypt=true;{extra}"
            ))
        };
        let ca = format!("TrustServerCertificateCA={}", pem.display());
        assert!(parse_connection(&conn(&ca)).is_ok());
        assert!(tls_weaknesses(&conn(&ca)).is_empty());
        let both = parse_connection(&conn(&format!("{ca};trustServerCertificate=true")));
        assert!(both.unwrap_err().contains("cannot be combined"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = parse_connection(&conn(&format!(
            "trustServerCertificateCA={}",
            empty.display()
        )));
        assert!(err.unwrap_err().contains("holds no certificate"));
        let missing = parse_connection(&conn("trustServerCertificateCA=/nonexistent/ca.pem"));
        assert!(
            missing
                .unwrap_err()
                .contains("cannot read /nonexistent/ca.pem")
        );
        let txt = dir.path().join("ca.txt");
        std::fs::write(&txt, cert.cert.pem()).unwrap();
        let err = parse_connection(&conn(&format!(
            "trustServerCertificateCA={}",
            txt.display()
        )));
        assert!(err.unwrap_err().contains(".pem, .crt or .der"));
    }
}
