//! Shared test helpers: one throwaway PostgreSQL cluster per test run (or the server named by
//! `HUBSYNC_TEST_DATABASE_URL`), a fresh migrated database per test, and running the binary:
//! every hubsync process the suite starts goes through [`hubsync`], [`hubsync_unmasked`],
//! [`hubsync_within`] or [`Process`], which scan all it writes (see [`crate::outputs`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use hubsync::pg::throwaway::{Cluster, Durability};
use hubsync::telemetry::leaks::{Leak, Watch, leaks};
use sqlx::PgPool;

use crate::outputs::{self, Findings};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// URL of the server's maintenance database: the throwaway cluster, started on first use.
fn server_url(db: &str) -> String {
    if let Ok(url) = std::env::var("HUBSYNC_TEST_DATABASE_URL") {
        let mut u = url::Url::parse(&url).expect("HUBSYNC_TEST_DATABASE_URL is a URL");
        u.set_path(db);
        return u.to_string();
    }
    CLUSTER
        .get_or_init(|| {
            let cluster = Cluster::start(Durability::Fast).expect("start throwaway PostgreSQL");
            // SAFETY: registers a plain function with no arguments.
            unsafe { atexit(scan_server_log) };
            cluster
        })
        .url(db)
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    /// Ends the process at once, without running the other exit handlers again.
    fn _exit(status: std::os::raw::c_int) -> !;
}

/// When the test binary exits, after every test: the throwaway server's own log (its errors
/// quote the values a statement refused) is scanned like every output; a hit is printed and
/// the binary exits 101, failing the run. Never panics (it runs inside `exit`).
extern "C" fn scan_server_log() {
    let Some(cluster) = CLUSTER.get() else {
        return;
    };
    let path = cluster.log_path();
    let text = std::fs::read(&path).unwrap_or_default();
    let Ok(watch) = std::panic::catch_unwind(|| outputs::watch(&[])) else {
        return;
    };
    let found = leaks(&String::from_utf8_lossy(&text), &watch);
    if !found.is_empty() {
        eprintln!(
            "the PostgreSQL server log {} holds what must never be in any output:",
            path.display()
        );
        for leak in found.iter().take(10) {
            eprintln!("  {leak}");
        }
        // SAFETY: ends the process; nothing runs after it.
        unsafe { _exit(101) };
    }
}

/// A fresh database with hubsync's migrations applied; returns its pool and URL.
pub async fn fresh_db() -> (PgPool, String) {
    let admin_url = tokio::task::spawn_blocking(|| server_url("postgres"))
        .await
        .expect("cluster start");
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
    }
    let url = server_url(&name);
    let pool = hubsync::pg::connect_url(&url, 20, Duration::from_secs(10))
        .await
        .expect("connect test database");
    hubsync::pg::migrate(&pool).await.expect("migrate");
    (pool, url)
}

/// Runs the hubsync binary with `args`, extra environment, and no inherited secrets; fails the
/// test if its stdout, stderr or log files leak anything (see [`crate::outputs`]).
pub fn hubsync(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    assert!(
        !args.contains(&"--unmask"),
        "a run asking for unmasked output goes through hubsync_unmasked"
    );
    let out = hubsync_command(args, env, cwd)
        .output()
        .expect("run hubsync");
    scanned(args, env, cwd, out, Stdout::Masked)
}

/// A way to run the binary: [`hubsync`] or [`hubsync_unmasked`].
pub type Run = fn(&[&str], &[(&str, &str)], &Path) -> Output;

/// Like [`hubsync`] for a run with `--unmask`: its stdout, which the user asked to show
/// personal data, is scanned for secrets only; stderr and log files for everything.
pub fn hubsync_unmasked(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    assert!(
        args.contains(&"--unmask"),
        "{args:?} asks for no unmasked output"
    );
    let out = hubsync_command(args, env, cwd)
        .output()
        .expect("run hubsync");
    scanned(args, env, cwd, out, Stdout::Unmasked)
}

/// Like [`hubsync`], with nothing on stdin, killing the process after `limit`: a command that
/// hangs fails the test instead of stalling it.
pub fn hubsync_within(args: &[&str], env: &[(&str, &str)], cwd: &Path, limit: Duration) -> Output {
    let mut cmd = hubsync_command(args, env, cwd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start hubsync");
    // Read both pipes meanwhile, so a chatty child never blocks on a full pipe.
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            pipe.read_to_end(&mut b).map(|_| b).unwrap_or_default()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("hubsync {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    scanned(args, env, cwd, out, Stdout::Masked)
}

/// Whether a run's stdout may show personal data (`--unmask`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stdout {
    Masked,
    Unmasked,
}

/// `out`, once its streams and the command's log directories are found clean.
fn scanned(args: &[&str], env: &[(&str, &str)], cwd: &Path, out: Output, stdout: Stdout) -> Output {
    let watch = outputs::watch(&outputs::secrets_of(args, env, cwd));
    let mut findings = Findings::default();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let stdout_watch = match stdout {
        Stdout::Masked => watch.clone(),
        Stdout::Unmasked => watch.secrets_only(),
    };
    findings.scan("stdout", &text(&out.stdout), &stdout_watch);
    findings.scan("stderr", &text(&out.stderr), &watch);
    for dir in outputs::log_dirs(args, cwd) {
        findings.scan_dir(&dir, &watch);
    }
    findings.assert_clean(&command_line(args), &watch);
    out
}

fn command_line(args: &[&str]) -> String {
    format!("`hubsync {}`", args.join(" "))
}

/// The hubsync binary with `args`, extra environment, and no inherited secrets, not started.
fn hubsync_command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubsync"));
    cmd.args(args).current_dir(cwd);
    for var in [
        "HUBSYNC_DATABASE_URL",
        "HUBSYNC_HUBSPOT_TOKEN",
        "HUBSYNC_SQL_SERVER",
        "HUBSYNC_API_TOKEN",
        "HUBSYNC_CONFIG",
        "SQL_SERVER",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A hubsync process running beside the test (the daemon, a simulator), its stdout and stderr
/// collected and scanned line by line as they come, its log directories scanned when it ends:
/// by [`Process::wait`], or when it is dropped (killed first if it still runs).
pub struct Process {
    pub child: Child,
    what: String,
    watch: Watch,
    log_dirs: Vec<PathBuf>,
    output: Arc<Mutex<String>>,
    findings: Arc<Mutex<Findings>>,
    first_line: Mutex<mpsc::Receiver<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    ended: bool,
}

impl Process {
    /// Starts `hubsync args` with extra environment `env` in `cwd`, nothing on stdin.
    pub fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Process {
        let mut child = hubsync_command(args, env, cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hubsync");
        let watch = outputs::watch(&outputs::secrets_of(args, env, cwd));
        let output = Arc::new(Mutex::new(String::new()));
        let findings = Arc::new(Mutex::new(Findings::default()));
        let (first, first_line) = mpsc::channel();
        let collect = |name: &'static str, stream: Box<dyn Read + Send>, first| {
            let (output, findings, watch) = (output.clone(), findings.clone(), watch.clone());
            std::thread::spawn(move || collect(name, stream, &output, &findings, &watch, first))
        };
        let readers = vec![
            collect(
                "stdout",
                Box::new(child.stdout.take().unwrap()),
                Some(first),
            ),
            collect("stderr", Box::new(child.stderr.take().unwrap()), None),
        ];
        Process {
            child,
            what: command_line(args),
            watch,
            log_dirs: outputs::log_dirs(args, cwd),
            output,
            findings,
            first_line: Mutex::new(first_line),
            readers,
            ended: false,
        }
    }

    /// Also scans `dir` (every file in it) when the process ends.
    pub fn scan_at_end(&mut self, dir: PathBuf) {
        if !self.log_dirs.contains(&dir) {
            self.log_dirs.push(dir);
        }
    }

    /// The first line the process writes to stdout (waiting up to `limit` for it).
    pub fn first_line(&self, limit: Duration) -> String {
        self.first_line
            .lock()
            .unwrap()
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("{}: no first line within {limit:?}: {e}", self.what))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the process to end, then fails the test if anything it wrote leaks; returns
    /// its exit code and its stdout, stderr and log files.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut out = self.end();
        for dir in &self.log_dirs {
            let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
            for file in files {
                out.push_str(&std::fs::read_to_string(file.path()).unwrap_or_default());
            }
        }
        (status.code(), out)
    }

    /// Joins the readers and scans the log directories, failing the test on any hit; returns
    /// the output.
    fn end(&mut self) -> String {
        self.ended = true;
        for r in std::mem::take(&mut self.readers) {
            r.join().unwrap();
        }
        let mut findings = std::mem::take(&mut *self.findings.lock().unwrap());
        for dir in &self.log_dirs {
            findings.scan_dir(dir, &self.watch);
        }
        findings.assert_clean(&self.what, &self.watch);
        self.output()
    }
}

impl Drop for Process {
    /// A failed test must not leave the process running; a passing one still has its output
    /// scanned.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.ended && !std::thread::panicking() {
            self.end();
        }
    }
}

/// Collects the lines of one stream into `output`, scanning each; the first goes to `first`.
fn collect(
    name: &str,
    stream: Box<dyn Read + Send>,
    output: &Mutex<String>,
    findings: &Mutex<Findings>,
    watch: &Watch,
    mut first: Option<mpsc::Sender<String>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut number = 0;
    while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
        number += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches('\n');
        let found: Vec<Leak> = leaks(line, watch)
            .into_iter()
            .map(|l| Leak { line: number, ..l })
            .collect();
        if !found.is_empty() {
            findings.lock().unwrap().add(name, found);
        }
        if let Some(first) = first.take() {
            let _ = first.send(line.to_string());
        }
        let mut out = output.lock().unwrap();
        out.push_str(line);
        out.push('\n');
        buf.clear();
    }
}

/// Generated members `range` (numero_asociado from `range.start + 1`, some invalid) from
/// `seed`; every scan looks for their identity numbers from now on.
pub fn members(range: std::ops::Range<u64>, seed: u64) -> Vec<hubsync::mapping::SqlRow> {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let rows: Vec<_> = range
        .map(|i| hubsync::bench::validate::member_row(i, &mut rng))
        .collect();
    outputs::watch_members(&rows);
    rows
}

/// The repository's example `config.yaml`.
pub fn example_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")
}

/// HubSpot write calls (batch create, update, upsert, archive) the simulator has served.
pub fn hubspot_writes(sim: &hubsync::sim::hubspot::RunningSim) -> u64 {
    sim.stats().write_requests()
}

/// Hostile values for a member's fields, and the rule each must be rejected with (the field
/// named): control, bidi and zero-width characters, numbers too large for their SQL column, a
/// non-ASCII local part of an email.
pub const HOSTILE: &[(&str, &str, &str)] = &[
    ("firstname", "Ana\u{0}", "text"),
    ("lastname", "\u{1b}[31mRuiz\u{1b}[0m", "text"),
    ("firstname", "Ana\u{202e}zíuR", "text"),
    ("lastname", "Ru\u{2067}iz\u{2069}", "text"),
    ("firstname", "Ana\u{200b}", "text"),
    ("lastname", "\u{feff}Ruiz", "text"),
    ("firstname", "Ana\tMaría", "text"),
    ("lastname", "Ruiz\u{9b}2J", "text"),
    ("email", "ana\u{200d}@example.com", "text"),
    (
        "salario_bruto_semanal_o_quincenal",
        "99999999999999999999999999999999999999999999999999",
        "sql_type",
    ),
    ("porcentaje__beneficiario_1_", "1000", "sql_type"),
    ("email", "josé@example.com", "email_local_part"),
];

/// Lets a test make items waiting for a retry or a deferral due now without waiting: the clock
/// moves, not the test.
pub async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE sync_queue SET run_after = now() WHERE state = 'pending'")
        .execute(pool)
        .await
        .unwrap();
}

/// Log lines written while it is the thread's tracing subscriber (the test runs on one thread).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
