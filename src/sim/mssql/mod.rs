//! SQL Server simulator: a TDS 7.4 server over an embedded SQLite store that runs hubsync's
//! T-SQL subset with SQL Server's wire types, rowversion semantics and error numbers, so
//! tiberius and the production adapter run unchanged against it, over TLS as in production.
//! In-process (`start`) and as `hubsync sim mssql`.
//!
//! Supported: PRELOGIN with SQL Server's encryption answers (a client's ENCRYPT_ON/ENCRYPT_REQ,
//! `encrypt=true`, gets TLS for the whole session; ENCRYPT_OFF, `encrypt=false`, TLS for LOGIN7
//! only, then plaintext; ENCRYPT_NOT_SUP, `encrypt=DANGER_PLAINTEXT`, none; `Forced` encrypts
//! every session; `PlaintextOnly` answers ENCRYPT_NOT_SUP to all, so a client requiring
//! encryption gives up). The TLS 1.2 handshake travels in PRELOGIN packets, then TLS records flow
//! on the TCP stream; the certificate is generated at start for localhost, 127.0.0.1, ::1 and
//! the listening address, signed by a test CA the simulator exposes (`ca_pem`, `ca_file`, which
//! [`RunningMssqlSim::connection_string`] names in `trustServerCertificateCA`). LOGIN7 as
//! `sa` (18456 otherwise), SQL batches, RPC `sp_executesql` with typed parameters, the
//! transaction manager (begin/commit/rollback), attention, responses split at the negotiated
//! packet size. T-SQL: the statement shapes of `src/mssql/corpus.sql` plus test-setup DDL/DML
//! (CREATE TABLE/INDEX, DROP/TRUNCATE TABLE, INSERT … VALUES, UPDATE, DELETE, SELECT with
//! WHERE/ORDER BY/TOP/GROUP BY/JOIN, OUTPUT INSERTED/DELETED, CAST/CONVERT, BEGIN/COMMIT/ROLLBACK,
//! SET NOCOUNT/XACT_ABORT); anything else is error 102 "the SQL Server simulator does not
//! support …".
//!
//! Locking model: statements are atomic and serialized (each runs as one SQLite transaction
//! under the database's statement mutex); T-SQL transactions are emulated over them, so several
//! are open at once. A row a transaction changes is X-locked (`locks.rs`) and its before-image
//! logged in `__sim_undo` (TEMP capture triggers on every table, in the same store transaction as
//! the change); COMMIT drops the log and releases the locks, ROLLBACK, XACT_ABORT, a deadlock
//! victim, a dropped connection and recovery at start (a data directory left with a transaction
//! open) put the before-images back. `BEGIN TRANSACTION` takes no lock; different rows never
//! block each other; a statement touching another session's row is undone, waits for that
//! session's locks outside the mutex and is retried. The wait has no bound unless `SET
//! LOCK_TIMEOUT n` (then 1222, class 16, state 51, the transaction stays open); a cycle of waits
//! makes the waiter that closes it the deadlock victim (1205). ATTENTION cancels the running
//! statement (its effect undone, answered with DONE_ATTN; the transaction stays open unless
//! XACT_ABORT ON); EOF or a dropped connection cancels it and rolls the session's transaction
//! back. Readers take no locks: with `read_committed_snapshot` (RCSI) they run on the last
//! committed rows (the other sessions' before-images applied, then rolled back); without it (the
//! default) a SELECT waits while another session holds any row of a table it reads, which is
//! stricter than SQL Server's seek on a key. Autocommit statements hold no locks past their end.
//!
//! Not proven by it: locking beyond that model (no shared, update, range or key locks: a write
//! whose predicate matches only a row's uncommitted before-image does not wait for it; a
//! duplicate key against another session's uncommitted insert answers 2627 at once; an insert
//! waits while another session has an uncommitted DELETE in the table, whatever its key (then
//! 2627 if that DELETE rolled back); a key freed by another session's uncommitted UPDATE of the
//! key is not protected; DML reading
//! other tables does not wait for their held rows; DDL inside a transaction is refused, DDL on a
//! table waits for every other session's rows in it; SET TRANSACTION ISOLATION LEVEL is accepted
//! and ignored); T-SQL semantics outside the subset (MERGE, conversion and rounding
//! corner cases, decimal arithmetic and SUM (refused: decimals are exact text, compared by value),
//! Latin1_General_CI_AS beyond its approximation here (case folding, accents as a second level,
//! hyphens and apostrophes ignored, ß/æ/œ expanded; a literal compared with a parameter compares
//! in binary)); plans, performance and timeouts; TDS 8.0 (`encrypt=strict`) and TLS 1.3, client
//! certificates, authentication other than one SQL login, permissions; MARS, bulk load, TVPs,
//! output parameters.

mod catalog;
mod engine;
mod locks;
pub mod setup;
mod tls;
mod translate;
mod types;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};
use engine::{Db, Mode, Session, TmRequest};
use types::{Param, Value};
use wire::{DONE_ATTN, DONE_ERROR, DoneKind, Reader, Tokens};

pub use tls::MssqlSimCertificate;
pub use translate::SqlError;

/// The default contact table (`dbo.hb_contacts`), loaded by `hubsync sim mssql` when no
/// `--schema` is given.
pub const SEED_SCHEMA: &str = include_str!("seed_schema.sql");

/// Password of `sa` when none is configured (the simulator only).
pub const DEFAULT_PASSWORD: &str = "Sim-Passw0rd!";

/// How to start a simulator.
#[derive(Clone)]
pub struct MssqlSimOptions {
    /// Password of the `sa` login.
    pub password: String,
    /// Database name reported to clients.
    pub database: String,
    /// T-SQL run once when the database is created (CREATE TABLE …; `GO` lines allowed).
    pub schema: Option<String>,
    /// Directory keeping the store across restarts; a fresh temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Every session's initial `SET LOCK_TIMEOUT`: how long a statement waits for a row another
    /// session's transaction holds before error 1222. `None` (SQL Server's default, -1) waits
    /// until the client's own command timeout gives up.
    pub lock_timeout: Option<Duration>,
    /// The database's READ_COMMITTED_SNAPSHOT: ON, readers see the last committed version of a
    /// row another transaction changed; OFF (the default, as a new on-premises database), they
    /// wait for that transaction to end.
    pub read_committed_snapshot: bool,
    /// What PRELOGIN offers: TLS as SQL Server with a certificate does (the default), TLS
    /// forced for every session, or plaintext only.
    pub encryption: MssqlSimEncryption,
    /// The server certificate; `None` generates a test CA and a certificate it signs for
    /// `localhost`, 127.0.0.1, ::1, the listening address and [`Self::tls_names`].
    pub certificate: Option<MssqlSimCertificate>,
    /// More DNS names or IP addresses for the generated certificate.
    pub tls_names: Vec<String>,
}

/// What the simulator answers to a client's PRELOGIN ENCRYPTION value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MssqlSimEncryption {
    /// SQL Server with a certificate, encryption not forced: a client asking for encryption
    /// (`encrypt=true`) gets TLS for the whole session, `encrypt=false` TLS for the login only,
    /// `encrypt=DANGER_PLAINTEXT` none.
    #[default]
    Available,
    /// SQL Server's "Force Encryption": every session is encrypted (answers ENCRYPT_REQ).
    Forced,
    /// No certificate: answers ENCRYPT_NOT_SUP, so a client that requires encryption fails.
    PlaintextOnly,
}

impl std::fmt::Debug for MssqlSimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlSimOptions")
            .field("password", &"[redacted]")
            .field("database", &self.database)
            .field("schema", &self.schema.as_ref().map(String::len))
            .field("data_dir", &self.data_dir)
            .field("lock_timeout", &self.lock_timeout)
            .field("read_committed_snapshot", &self.read_committed_snapshot)
            .field("encryption", &self.encryption)
            .field("certificate", &self.certificate)
            .field("tls_names", &self.tls_names)
            .finish()
    }
}

impl Default for MssqlSimOptions {
    fn default() -> Self {
        Self {
            password: DEFAULT_PASSWORD.into(),
            database: "hubsync".into(),
            schema: None,
            data_dir: None,
            lock_timeout: None,
            read_committed_snapshot: false,
            encryption: MssqlSimEncryption::default(),
            certificate: None,
            tls_names: Vec::new(),
        }
    }
}

impl MssqlSimOptions {
    /// The defaults with the seed contact table `dbo.hb_contacts` ([`SEED_SCHEMA`]).
    pub fn seeded() -> Self {
        Self {
            schema: Some(SEED_SCHEMA.into()),
            ..Self::default()
        }
    }
}

/// Counters for tests and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MssqlSimStats {
    pub connections: u64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    pub requests: u64,
    pub open_sessions: u64,
    /// Logins (successful or not) in a session encrypted throughout.
    pub tls_sessions: u64,
    /// Logins encrypted with the session continuing in plaintext (`encrypt=false`).
    pub login_only_tls_sessions: u64,
    /// Logins without any encryption.
    pub plaintext_sessions: u64,
    /// TLS handshakes that failed (e.g. the client refused the certificate).
    pub tls_handshake_failures: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    requests: AtomicU64,
    open_sessions: AtomicU64,
    tls_sessions: AtomicU64,
    login_only_tls_sessions: AtomicU64,
    plaintext_sessions: AtomicU64,
    tls_handshake_failures: AtomicU64,
}

struct Shared {
    db: Arc<Db>,
    password: String,
    encryption: MssqlSimEncryption,
    /// `None` when plaintext only.
    tls: Option<tls::ServerTls>,
    /// Cancelled to drop every open connection; replaced by a fresh token.
    drop_all: Mutex<CancellationToken>,
    refuse_until: Mutex<Option<Instant>>,
    delay: Mutex<Duration>,
    counters: Counters,
}

impl Shared {
    fn drop_token(&self) -> CancellationToken {
        self.drop_all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn refusing(&self) -> bool {
        self.refuse_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }
    fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator.
pub struct RunningMssqlSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    admin: Arc<Mutex<Option<Session>>>,
}

impl Drop for RunningMssqlSim {
    /// A simulator dropped without `shutdown` (e.g. by a failing test) stops all the same.
    fn drop(&mut self) {
        self.stop.cancel();
        self.drop_connections();
    }
}

/// Starts a simulator listening on `addr` (port 0 picks a free port).
pub async fn start(addr: SocketAddr, options: MssqlSimOptions) -> anyhow::Result<RunningMssqlSim> {
    let data_dir = options.data_dir.clone();
    let name = options.database.clone();
    let settings = engine::Settings {
        lock_timeout: options.lock_timeout,
        read_committed_snapshot: options.read_committed_snapshot,
    };
    let (db, created) =
        tokio::task::spawn_blocking(move || Db::open(data_dir.as_deref(), &name, settings))
            .await??;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let tls = match (options.encryption, &options.certificate) {
        (MssqlSimEncryption::PlaintextOnly, _) => None,
        (_, Some(certificate)) => Some(tls::ServerTls::from_pem(certificate)?),
        (_, None) => {
            let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
            for name in &options.tls_names {
                names.push(name.clone());
            }
            let mut unique: Vec<String> = Vec::new();
            for name in names {
                if !unique.contains(&name) {
                    unique.push(name);
                }
            }
            Some(tls::ServerTls::generate(&unique)?)
        }
    };
    let shared = Arc::new(Shared {
        db,
        password: options.password.clone(),
        encryption: options.encryption,
        tls,
        drop_all: Mutex::new(CancellationToken::new()),
        refuse_until: Mutex::new(None),
        delay: Mutex::new(Duration::ZERO),
        counters: Counters::default(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop.clone()));
    let sim = RunningMssqlSim {
        addr,
        shared,
        stop,
        task: Some(task),
        admin: Arc::new(Mutex::new(None)),
    };
    if created && let Some(schema) = &options.schema {
        sim.execute_batch(&strip_go(schema))
            .await
            .context("the schema could not be applied")?;
    }
    Ok(sim)
}

/// Removes `GO` separator lines (a client-tool convention, not T-SQL).
fn strip_go(sql: &str) -> String {
    sql.lines()
        .map(|l| {
            if l.trim().eq_ignore_ascii_case("go") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl RunningMssqlSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// ADO.NET connection string for `crate::mssql` and tiberius, as production connects:
    /// `encrypt=true` with the certificate checked against the generated CA
    /// (`trustServerCertificateCA`; the system's CAs for a given certificate), or
    /// `encrypt=DANGER_PLAINTEXT` for a plaintext-only simulator.
    pub fn connection_string(&self) -> String {
        let base = self.connection_string_base();
        match (&self.shared.tls, self.ca_file()) {
            (None, _) => format!("{base};encrypt=DANGER_PLAINTEXT"),
            (Some(_), Some(ca)) => {
                format!(
                    "{base};encrypt=true;trustServerCertificateCA={}",
                    ca.display()
                )
            }
            (Some(_), None) => format!("{base};encrypt=true"),
        }
    }

    /// Server, database, user and password, without any TLS keyword (tests add their own).
    pub fn connection_string_base(&self) -> String {
        format!(
            "server=tcp:{},{};database={};user=sa;password={}",
            self.addr.ip(),
            self.addr.port(),
            self.shared.db.name,
            self.shared.password
        )
    }

    /// The generated test CA's certificate (PEM); `None` for a given certificate or plaintext.
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.tls.as_ref().and_then(|t| t.ca_pem())
    }

    /// A file holding [`Self::ca_pem`] while the simulator runs.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.shared.tls.as_ref().and_then(|t| t.ca_file())
    }

    /// Runs T-SQL through the simulator's engine, as a client batch would (one session kept
    /// across calls); fails with the first SQL Server error.
    pub async fn execute_batch(&self, sql: &str) -> anyhow::Result<()> {
        let admin = Arc::clone(&self.admin);
        let db = Arc::clone(&self.shared.db);
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut guard = admin.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                *guard = Some(Session::open(db)?);
            }
            let session = guard
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("no admin session"))?;
            match session.run(&sql, &[], Mode::Batch).1 {
                None => Ok(()),
                Some(e) => Err(anyhow::Error::new(e)),
            }
        })
        .await?
    }

    /// Runs change tracking's cleanup as if the retention period had passed: every committed
    /// change so far is forgotten and the current version becomes each tracked table's
    /// CHANGE_TRACKING_MIN_VALID_VERSION, so a reader with an older version must resynchronise.
    pub async fn change_tracking_cleanup(&self) -> anyhow::Result<()> {
        let db = Arc::clone(&self.shared.db);
        tokio::task::spawn_blocking(move || Session::open(db)?.change_tracking_cleanup()).await?
    }

    /// Inserts rows (column name → value in the contracts' JSON encoding; every row with the
    /// first row's columns) into `table` (`dbo.hb_contacts` or `[dbo].[hb_contacts]`) with
    /// multi-row INSERT batches, as test setup, benchmarks and the demo do.
    pub async fn insert_rows(
        &self,
        table: &str,
        rows: &[crate::mapping::SqlRow],
    ) -> anyhow::Result<()> {
        for statement in setup::insert_statements(table, rows) {
            self.execute_batch(&statement).await?;
        }
        Ok(())
    }

    /// Closes every open client connection (their open transactions roll back).
    pub fn drop_connections(&self) {
        let mut token = self
            .shared
            .drop_all
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        token.cancel();
        *token = CancellationToken::new();
    }

    /// New connections are closed at once, before PRELOGIN, for `duration`.
    pub fn refuse_logins_for(&self, duration: Duration) {
        *self
            .shared
            .refuse_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + duration);
    }

    /// Every response waits `delay` before it is sent (zero turns it off).
    pub fn set_response_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// The next `n` writes (INSERT/UPDATE/DELETE) fail with deadlock 1205, rolling back their
    /// transaction.
    pub fn deadlock_next_writes(&self, n: u32) {
        self.shared.db.deadlocks.store(n, Ordering::SeqCst);
    }

    /// MIN_ACTIVE_ROWVERSION() as SQL Server would answer it now.
    pub fn min_active_rowversion(&self) -> i64 {
        self.shared.db.min_active_rowversion()
    }

    pub fn stats(&self) -> MssqlSimStats {
        let c = &self.shared.counters;
        MssqlSimStats {
            connections: c.connections.load(Ordering::SeqCst),
            logins_ok: c.logins_ok.load(Ordering::SeqCst),
            logins_failed: c.logins_failed.load(Ordering::SeqCst),
            requests: c.requests.load(Ordering::SeqCst),
            open_sessions: c.open_sessions.load(Ordering::SeqCst),
            tls_sessions: c.tls_sessions.load(Ordering::SeqCst),
            login_only_tls_sessions: c.login_only_tls_sessions.load(Ordering::SeqCst),
            plaintext_sessions: c.plaintext_sessions.load(Ordering::SeqCst),
            tls_handshake_failures: c.tls_handshake_failures.load(Ordering::SeqCst),
        }
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.drop_connections();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        if shared.refusing() {
            drop(stream);
            continue;
        }
        let shared = Arc::clone(&shared);
        let token = shared.drop_token();
        tokio::spawn(async move {
            tokio::select! {
                // A dropped connection must not answer a request that raced the drop.
                biased;
                _ = token.cancelled() => {}
                result = serve(stream, Arc::clone(&shared)) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "SQL Server simulator connection ended");
                    }
                }
            }
        });
    }
}

struct OpenSession<'a> {
    counters: &'a Counters,
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.counters.open_sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How much of a connection TLS protects, as the PRELOGIN exchange decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    None,
    /// TLS for LOGIN7 only (the client sent ENCRYPT_OFF), then plaintext.
    LoginOnly,
    Session,
}

/// SQL Server's answer to the client's PRELOGIN ENCRYPTION value, and what it commits both
/// sides to (MS-TDS 2.2.6.5).
fn negotiate(offer: MssqlSimEncryption, client: u8) -> Result<(u8, Protection), String> {
    use MssqlSimEncryption as Offer;
    use wire::{ENCRYPT_NOT_SUP, ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_REQ};
    if client > ENCRYPT_REQ {
        return Err(format!("unsupported PRELOGIN encryption value {client:#x}"));
    }
    Ok(match (offer, client) {
        // A client that asks for encryption gives up when it reads NOT_SUP.
        (Offer::PlaintextOnly, _) => (ENCRYPT_NOT_SUP, Protection::None),
        (_, ENCRYPT_ON | ENCRYPT_REQ) => (ENCRYPT_ON, Protection::Session),
        (Offer::Available, ENCRYPT_OFF) => (ENCRYPT_OFF, Protection::LoginOnly),
        (Offer::Available, _) => (ENCRYPT_NOT_SUP, Protection::None),
        // Force Encryption: even a client that offered none must encrypt (or give up).
        (Offer::Forced, _) => (ENCRYPT_REQ, Protection::Session),
    })
}

/// Reads the LOGIN7 message that follows PRELOGIN (and the TLS handshake, if any).
async fn read_login<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<Option<Vec<u8>>> {
    let Some((ty, body)) = wire::read_message(stream).await? else {
        return Ok(None);
    };
    anyhow::ensure!(
        ty == wire::LOGIN7,
        "expected LOGIN7, got packet type {ty:#x}"
    );
    Ok(Some(body))
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let Some((ty, body)) = wire::read_message(&mut stream).await? else {
        return Ok(());
    };
    anyhow::ensure!(
        ty == wire::PRELOGIN,
        "expected PRELOGIN, got packet type {ty:#x}"
    );
    let client = wire::prelogin_encryption(&body).map_err(anyhow::Error::msg)?;
    let (answer, protection) = negotiate(shared.encryption, client).map_err(anyhow::Error::msg)?;
    wire::write_message(&mut stream, &wire::prelogin_response(answer), 4096, 0).await?;
    let counters = &shared.counters;
    let tls = match (protection, &shared.tls) {
        (Protection::None, _) => {
            let Some(login) = read_login(&mut stream).await? else {
                return Ok(());
            };
            counters.plaintext_sessions.fetch_add(1, Ordering::SeqCst);
            return session(stream, &login, &shared).await;
        }
        (_, Some(tls)) => tls,
        (_, None) => anyhow::bail!("encryption negotiated without a certificate"),
    };
    let mut encrypted = match tls.accept(stream).await {
        Ok(s) => s,
        Err(e) => {
            counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::SeqCst);
            return Err(anyhow::Error::new(e).context("TLS handshake failed"));
        }
    };
    let Some(login) = read_login(&mut encrypted).await? else {
        return Ok(());
    };
    if protection == Protection::LoginOnly {
        counters
            .login_only_tls_sessions
            .fetch_add(1, Ordering::SeqCst);
        tracing::debug!("login encrypted, the session continues in plaintext (ENCRYPT_OFF)");
        session(tls::into_plaintext(encrypted), &login, &shared).await
    } else {
        counters.tls_sessions.fetch_add(1, Ordering::SeqCst);
        session(encrypted, &login, &shared).await
    }
}

/// Answers LOGIN7 (`body`), then serves requests until the client leaves.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    body: &[u8],
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let login = wire::parse_login(body).map_err(anyhow::Error::msg)?;
    let failed = format!("Login failed for user '{}'.", login.user);
    if !(login.user.eq_ignore_ascii_case("sa") && login.password == shared.password) {
        let mut t = Tokens::default();
        t.error(18456, 1, 14, &failed);
        return refuse_login(shared, &mut stream, t).await;
    }
    // The one database of this instance (an empty name stands for the login's default).
    if !login.database.is_empty() && !login.database.eq_ignore_ascii_case(&shared.db.name) {
        let mut t = Tokens::default();
        let message = format!(
            "Cannot open database \"{}\" requested by the login. The login failed.",
            login.database
        );
        t.error(4060, 1, 11, &message);
        t.error(18456, 1, 14, &failed);
        return refuse_login(shared, &mut stream, t).await;
    }
    let db = Arc::clone(&shared.db);
    let mut session = Some(tokio::task::spawn_blocking(move || Session::open(db)).await??);
    shared.counters.logins_ok.fetch_add(1, Ordering::SeqCst);
    shared.counters.open_sessions.fetch_add(1, Ordering::SeqCst);
    let _open = OpenSession {
        counters: &shared.counters,
    };
    let spid = session.as_ref().map_or(0, |s| s.spid);
    let packet_size = match login.packet_size {
        0 => 4096,
        n => n.clamp(512, 32767),
    } as usize;
    let mut t = Tokens::default();
    let database = shared.db.name.clone();
    t.env_change_text(1, &database, "master");
    t.info(5701, &format!("Changed database context to '{database}'."));
    t.env_change_bytes(7, &types::COLLATION, &[]);
    t.env_change_text(2, "us_english", "");
    t.env_change_text(4, &packet_size.to_string(), "4096");
    t.login_ack();
    t.done(DoneKind::Done, 0, 0);
    wire::write_message(&mut stream, &t.buf, 4096, spid).await?;

    let cancel = session
        .as_ref()
        .map(|s| Arc::clone(&s.cancel))
        .ok_or_else(|| anyhow::anyhow!("session lost"))?;
    // However the connection ends (EOF, an error, `drop_connections`), a statement still running
    // for it stops; the session then rolls its transaction back.
    let _stop = CancelOnDrop {
        cancel: Arc::clone(&cancel),
        db: Arc::clone(&shared.db),
    };
    let mut incoming = wire::Incoming::default();
    while let Some((ty, body)) = incoming.next(&mut stream).await? {
        shared.counters.requests.fetch_add(1, Ordering::SeqCst);
        let request = match ty {
            wire::SQL_BATCH => parse_batch(&body),
            wire::RPC => parse_rpc(&body),
            wire::TRANSACTION_MANAGER => parse_tm(&body),
            wire::ATTENTION => Ok(Request::Attention),
            other => Err(format!("unsupported packet type {other:#x}")),
        };
        let request = request.map_err(|e| anyhow::anyhow!("malformed request: {e}"))?;
        if matches!(request, Request::Attention) {
            // Nothing is running: the attention is acknowledged at once.
            let mut t = Tokens::default();
            t.done(DoneKind::Done, DONE_ATTN, 0);
            wire::write_message(&mut stream, &t.buf, packet_size, spid).await?;
            continue;
        }
        let mut current = session
            .take()
            .ok_or_else(|| anyhow::anyhow!("session lost"))?;
        let mut task = tokio::task::spawn_blocking(move || {
            let tokens = match request {
                Request::Batch(sql) => current.run(&sql, &[], Mode::Batch).0,
                Request::Rpc { sql, params } => current.run(&sql, &params, Mode::Rpc).0,
                Request::RpcError(e) => {
                    let mut t = Tokens::default();
                    t.error(e.number, e.state, e.class, &e.message);
                    t.done(DoneKind::Proc, DONE_ERROR, 0);
                    t
                }
                Request::Tm(kind) => current.transaction_request(kind),
                Request::Attention => Tokens::default(),
            };
            (current, tokens)
        });
        // While the request runs, the socket is still read: an ATTENTION cancels the running
        // statement, EOF (the client gave up and closed) cancels it and ends the session.
        let mut attention = false;
        let mut gone = false;
        let (back, response) = loop {
            tokio::select! {
                done = &mut task => break done?,
                next = incoming.next(&mut stream), if !gone => match next {
                    Ok(Some((wire::ATTENTION, _))) => {
                        attention = true;
                        cancel.set(locks::ATTENTION);
                        shared.db.locks.wake();
                    }
                    Ok(Some((other, _))) => {
                        tracing::debug!(packet = other, "SQL Server simulator: a request while one runs");
                        gone = true;
                        cancel.set(locks::DROPPED);
                        shared.db.locks.wake();
                    }
                    Ok(None) | Err(_) => {
                        gone = true;
                        cancel.set(locks::DROPPED);
                        shared.db.locks.wake();
                    }
                },
            }
        };
        if gone {
            // The session (and its open transaction) ends with the connection.
            let _ = tokio::task::spawn_blocking(move || drop(back)).await;
            return Ok(());
        }
        let interrupted = back.interrupted;
        session = Some(back);
        cancel.clear_attention();
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if interrupted {
            // The cancelled request's answer is the attention acknowledgement.
            let mut t = Tokens::default();
            t.done(DoneKind::Done, DONE_ATTN, 0);
            wire::write_message(&mut stream, &t.buf, packet_size, spid).await?;
            continue;
        }
        wire::write_message(&mut stream, &response.buf, packet_size, spid).await?;
        if attention {
            // The attention came too late to stop anything: acknowledged after the answer.
            let mut t = Tokens::default();
            t.done(DoneKind::Done, DONE_ATTN, 0);
            wire::write_message(&mut stream, &t.buf, packet_size, spid).await?;
        }
    }
    if let Some(s) = session.take() {
        let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    }
    Ok(())
}

/// Cancels the session's running statement when the connection's task ends or is dropped.
struct CancelOnDrop {
    cancel: Arc<locks::Cancel>,
    db: Arc<Db>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel.set(locks::DROPPED);
        self.db.locks.wake();
    }
}

/// Ends a login with the given error tokens.
async fn refuse_login<W: AsyncWrite + Unpin>(
    shared: &Shared,
    wr: &mut W,
    mut tokens: Tokens,
) -> anyhow::Result<()> {
    shared.counters.logins_failed.fetch_add(1, Ordering::SeqCst);
    tokens.done(DoneKind::Done, DONE_ERROR, 0);
    wire::write_message(wr, &tokens.buf, 4096, 0).await?;
    Ok(())
}

enum Request {
    Batch(String),
    Rpc { sql: String, params: Vec<Param> },
    RpcError(SqlError),
    Tm(TmRequest),
    Attention,
}

fn parse_batch(body: &[u8]) -> Result<Request, String> {
    let mut r = Reader::new(body);
    r.all_headers()?;
    Ok(Request::Batch(types::utf16(r.rest())?))
}

fn parse_rpc(body: &[u8]) -> Result<Request, String> {
    let mut r = Reader::new(body);
    r.all_headers()?;
    let name_len = r.u16()?;
    let proc_name = if name_len == 0xFFFF {
        match r.u16()? {
            10 => "sp_executesql".to_string(),
            id => {
                return Ok(Request::RpcError(SqlError::unsupported(format!(
                    "the RPC procedure id {id} (only sp_executesql)"
                ))));
            }
        }
    } else {
        types::utf16(r.bytes(usize::from(name_len) * 2)?)?
    };
    if !proc_name.eq_ignore_ascii_case("sp_executesql") {
        return Ok(Request::RpcError(SqlError::new(
            2812,
            62,
            16,
            format!("Could not find stored procedure '{proc_name}'."),
        )));
    }
    let _flags = r.u16()?;
    let mut raw = Vec::new();
    while !r.at_end() {
        let name = r.b_varchar()?;
        let _status = r.u8()?;
        let (ty, value) = types::decode_param_value(&mut r)?;
        raw.push((name, ty, value));
    }
    let mut raw = raw.into_iter();
    let sql = match raw.next() {
        Some((_, _, Value::Text(sql))) => sql,
        _ => return Err("sp_executesql without a statement".into()),
    };
    let declarations = match raw.next() {
        Some((_, _, Value::Text(d))) => d,
        Some((_, _, Value::Null)) | None => String::new(),
        Some(_) => return Err("sp_executesql parameter declarations are not text".into()),
    };
    let declared = match types::parse_declarations(&declarations) {
        Ok(d) => d,
        Err(e) => return Ok(Request::RpcError(SqlError::unsupported(e))),
    };
    if raw.len() > 2100 {
        return Ok(Request::RpcError(SqlError::new(
            8003,
            1,
            16,
            "The incoming request has too many parameters. The server supports a maximum of 2100 parameters. Reduce the number of parameters and resend the request.",
        )));
    }
    let mut params = Vec::new();
    for (i, (name, ty, value)) in raw.enumerate() {
        let (decl_name, decl_ty) = match declared.get(i) {
            Some((n, t)) => (n.clone(), Some(*t)),
            None => (name.clone(), ty),
        };
        let name = if name.is_empty() { decl_name } else { name };
        params.push(Param {
            name,
            ty: decl_ty.or(ty),
            value,
        });
    }
    if params.len() < declared.len() {
        let missing = &declared[params.len()].0;
        return Ok(Request::RpcError(SqlError::new(
            8178,
            1,
            16,
            format!(
                "The parameterized query expects the parameter '{missing}', which was not supplied."
            ),
        )));
    }
    Ok(Request::Rpc { sql, params })
}

fn parse_tm(body: &[u8]) -> Result<Request, String> {
    let mut r = Reader::new(body);
    r.all_headers()?;
    Ok(match r.u16()? {
        5 => Request::Tm(TmRequest::Begin),
        7 => Request::Tm(TmRequest::Commit),
        8 => Request::Tm(TmRequest::Rollback),
        other => Request::RpcError(SqlError::unsupported(format!(
            "transaction-manager request {other}"
        ))),
    })
}

/// `hubsync sim mssql` arguments.
#[derive(clap::Args)]
pub struct MssqlArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1433")]
    pub listen: SocketAddr,
    /// T-SQL run when the database is created (default: the built-in dbo.hb_contacts table).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Directory keeping the database across restarts (default: a temporary one).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Password of the `sa` login.
    #[arg(long, env = "HUBSYNC_SIM_MSSQL_PASSWORD", default_value = DEFAULT_PASSWORD, hide_default_value = true, hide_env_values = true)]
    pub password: String,
    /// Database name.
    #[arg(long, default_value = "hubsync")]
    pub database: String,
    /// What PRELOGIN offers: TLS when the client asks for it (as SQL Server does), TLS forced
    /// for every session, or plaintext only (ENCRYPT_NOT_SUP).
    #[arg(long, value_enum, default_value_t = MssqlSimEncryption::Available)]
    pub encryption: MssqlSimEncryption,
    /// The database's READ_COMMITTED_SNAPSHOT: `on`, readers see the last committed version of
    /// rows other transactions changed; `off` (a new on-premises database's default), they wait
    /// for those transactions to end.
    #[arg(long, value_enum, default_value_t = Switch::Off)]
    pub read_committed_snapshot: Switch,
    /// Writes the generated test CA's certificate (PEM) to this file, for clients'
    /// `trustServerCertificateCA=`.
    #[arg(long, value_name = "PATH", conflicts_with = "tls_cert")]
    pub ca_file: Option<PathBuf>,
    /// Serves this certificate chain (PEM) instead of a generated one.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Another DNS name or IP address for the generated certificate (repeatable; localhost,
    /// 127.0.0.1, ::1 and the listening address are always in it).
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
}

/// A database option's `on`/`off`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    #[default]
    Off,
}

impl std::fmt::Debug for MssqlArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlArgs")
            .field("listen", &self.listen)
            .field("schema", &self.schema)
            .field("data", &self.data)
            .field("password", &"[redacted]")
            .field("database", &self.database)
            .field("encryption", &self.encryption)
            .field("read_committed_snapshot", &self.read_committed_snapshot)
            .field("ca_file", &self.ca_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_names", &self.tls_names)
            .finish()
    }
}

/// Reads a file named by a command-line option (a configuration problem when it cannot be).
fn read_option_file(option: &str, path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::CONFIG,
            format!("cannot read {option} {}: {e}", path.display()),
        )
    })
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(args: MssqlArgs) -> Result<u8, Failure> {
    let schema = match &args.schema {
        Some(path) => read_option_file("--schema", path)?,
        None => SEED_SCHEMA.to_string(),
    };
    let plaintext = args.encryption == MssqlSimEncryption::PlaintextOnly;
    if plaintext && (args.ca_file.is_some() || args.tls_cert.is_some()) {
        return Err(Failure::new(
            exit::CONFIG,
            "--encryption plaintext-only has no certificate: drop --ca-file and --tls-cert",
        ));
    }
    let certificate = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(MssqlSimCertificate {
            chain_pem: read_option_file("--tls-cert", cert)?,
            key_pem: read_option_file("--tls-key", key)?.into(),
        }),
        _ => None,
    };
    let options = MssqlSimOptions {
        password: args.password.clone(),
        database: args.database.clone(),
        schema: Some(schema),
        data_dir: args.data.clone(),
        encryption: args.encryption,
        read_committed_snapshot: args.read_committed_snapshot == Switch::On,
        certificate,
        tls_names: args.tls_names.clone(),
        ..MssqlSimOptions::default()
    };
    let sim = start(args.listen, options).await.map_err(|e| {
        // A schema the simulator refuses is a configuration problem, not an outage.
        let code = if e.chain().any(|c| c.downcast_ref::<SqlError>().is_some()) {
            exit::CONFIG
        } else {
            exit::UNAVAILABLE
        };
        Failure::new(code, format!("{e:#}"))
    })?;
    if let (Some(path), Some(pem)) = (&args.ca_file, sim.ca_pem()) {
        std::fs::write(path, pem).map_err(|e| {
            Failure::new(
                exit::CONFIG,
                format!("cannot write --ca-file {}: {e}", path.display()),
            )
        })?;
    }
    let tls = match (plaintext, &args.ca_file) {
        (true, _) => "encrypt=DANGER_PLAINTEXT".to_string(),
        (false, Some(path)) => format!("encrypt=true;trustServerCertificateCA={}", path.display()),
        (false, None) => match sim.ca_file() {
            Some(path) => format!("encrypt=true;trustServerCertificateCA={}", path.display()),
            None => "encrypt=true".to_string(),
        },
    };
    println!(
        "SQL Server simulator listening on {} (database {}, user sa, {tls})",
        sim.addr(),
        args.database
    );
    let stop = crate::sim::stop_signal()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot wait for signals: {e}")))?;
    stop.await;
    sim.shutdown().await;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let options = MssqlSimOptions {
            password: "Top-Secret-1".into(),
            ..MssqlSimOptions::default()
        };
        assert!(!format!("{options:?}").contains("Top-Secret-1"));
    }

    #[test]
    fn prelogin_answers_follow_sql_servers_encryption_table() {
        use MssqlSimEncryption::{Available, Forced, PlaintextOnly};
        use Protection::{LoginOnly, None, Session};
        use wire::{
            ENCRYPT_NOT_SUP as NS, ENCRYPT_OFF as OFF, ENCRYPT_ON as ON, ENCRYPT_REQ as REQ,
        };
        for (offer, client, answer) in [
            (Available, OFF, (OFF, LoginOnly)),
            (Available, ON, (ON, Session)),
            (Available, REQ, (ON, Session)),
            (Available, NS, (NS, None)),
            (Forced, OFF, (REQ, Session)),
            (Forced, ON, (ON, Session)),
            (Forced, NS, (REQ, Session)),
            (PlaintextOnly, ON, (NS, None)),
            (PlaintextOnly, OFF, (NS, None)),
        ] {
            assert_eq!(negotiate(offer, client), Ok(answer), "{offer:?} {client}");
        }
        assert!(negotiate(Available, 0x80).is_err());
    }

    #[test]
    fn seed_schema_translates() {
        let tokens = translate::tokenize(&strip_go(SEED_SCHEMA)).unwrap();
        let statements = translate::split(tokens);
        assert!(!statements.is_empty());
        let catalog = catalog::Catalog::default();
        for s in &statements {
            translate::translate(s, &catalog, &translate::Context::default()).unwrap();
        }
    }
}
