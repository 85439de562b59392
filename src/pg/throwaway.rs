//! Throwaway PostgreSQL clusters started from the machine's own binaries (`initdb`, `postgres`)
//! in a temp dir on a free loopback port — for tests, `hubsync bench` and `hubsync demo`.
//!
//! `initdb` and `postgres` refuse to run as root; as root they run as the `postgres` user (or the
//! user named by `HUBSYNC_PG_USER`). The server is a child process that gets SIGINT (fast
//! shutdown) when the thread that started it ends, so a test binary that exits without running
//! destructors does not leave servers behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running throwaway cluster; dropping it stops the server and deletes its files.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    child: Arc<Mutex<Option<Child>>>,
    bin: PathBuf,
    durability: Durability,
    owner: Option<(u32, u32)>,
}

/// How the throwaway server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: for tests, where a power loss does not matter.
    Fast,
    /// Default settings: for benchmarks, so figures mean what they would in production.
    Durable,
}

impl Cluster {
    /// Finds the binaries, runs `initdb` and starts `postgres`, waiting until it accepts
    /// connections.
    pub fn start(durability: Durability) -> anyhow::Result<Cluster> {
        let bin = find_bin_dir()?;
        let owner = server_user()?;
        sweep_stale(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix("hubsync-pg-")
            .tempdir()
            .context("cannot create a temp dir for PostgreSQL")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        if let Some((uid, gid)) = owner {
            for p in [dir.path(), data.as_path()] {
                nix::unistd::chown(p, Some(uid.into()), Some(gid.into()))
                    .with_context(|| format!("cannot hand {} to the postgres user", p.display()))?;
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, owner);
        let out = initdb.output().context("cannot run initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }

        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match spawn_server(&bin, &data, dir.path(), port, durability, owner) {
                Ok(child) => {
                    let child = Arc::new(Mutex::new(Some(child)));
                    match wait_ready(&child, port, dir.path()) {
                        Ok(()) => {
                            return Ok(Cluster {
                                dir,
                                port,
                                child,
                                bin,
                                durability,
                                owner,
                            });
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            stop(&child);
                        }
                    }
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!("PostgreSQL did not start: {last_error}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the superuser `postgres` (trust auth, loopback only).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        use sqlx::Connection;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name `{name}` must be letters, digits and underscores");
        }
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(self.url(name))
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping its data, to simulate
    /// an outage; [`Cluster::restart`] brings it back.
    pub fn stop(&self) {
        stop(&self.child);
    }

    /// Starts the stopped server again on the same port and data, waiting until it accepts
    /// connections.
    pub fn restart(&self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let child = spawn_server(
            &self.bin,
            &data,
            self.dir.path(),
            self.port,
            self.durability,
            self.owner,
        )?;
        *self.child.lock().expect("child lock") = Some(child);
        wait_ready(&self.child, self.port, self.dir.path())
    }

    /// The server's log file, for diagnosing a failed start.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop(&self.child);
    }
}

fn stop(child: &Arc<Mutex<Option<Child>>>) {
    if let Some(mut c) = child.lock().ok().and_then(|mut g| g.take()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = c.wait();
    }
}

/// Removes the directories of earlier throwaway clusters whose server is gone: a process that
/// exits without running destructors (a test binary's shared cluster, a killed bench) stops
/// its server through the parent-death signal but cannot delete the files. A directory without
/// a server is left alone for 10 minutes (it may be one being set up right now).
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("hubsync-pg-"));
        if !is_ours {
            continue;
        }
        let running = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            .map(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let stale = match running {
            Some(running) => !running,
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// `HUBSYNC_PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin`, else `initdb` on PATH.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("HUBSYNC_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    bail!(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and PATH); \
         install them (apt-get install postgresql) or set HUBSYNC_PG_BIN"
    )
}

/// As root: the uid/gid to run the server as. Otherwise none (run as ourselves).
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let name = std::env::var("HUBSYNC_PG_USER").unwrap_or_else(|_| "postgres".into());
    let user = nix::unistd::User::from_name(&name)?.with_context(|| {
        format!("running as root and there is no `{name}` user to run PostgreSQL as")
    })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_user(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn spawn_server(
    bin: &Path,
    data: &Path,
    socket_dir: &Path,
    port: u16,
    durability: Durability,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(socket_dir.join("server.log"))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            &socket_dir.join("server.log"),
            Some(uid.into()),
            Some(gid.into()),
        )?;
    }
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(socket_dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
        ])
        .args(["-c", "shared_buffers=256MB"]);
    if durability == Durability::Fast {
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    as_user(&mut cmd, owner);
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)
                .map_err(std::io::Error::from)
        });
    }
    // The parent-death signal fires when the *thread* that forked exits, so fork from a thread
    // that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    keeper()
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .map_err(|_| anyhow::anyhow!("the pg-keeper thread is gone"))?;
    Ok(rx.recv()??)
}

type Job = Box<dyn FnOnce() + Send>;

fn keeper() -> std::sync::mpsc::Sender<Job> {
    static KEEPER: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    KEEPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("pg-keeper".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                    // Keep the thread (and so the servers it started) alive until process exit.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawn pg-keeper thread");
            Mutex::new(tx)
        })
        .lock()
        .expect("pg-keeper lock")
        .clone()
}

fn wait_ready(child: &Arc<Mutex<Option<Child>>>, port: u16, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(c) = child.lock().expect("child lock").as_mut()
            && let Some(status) = c.try_wait()?
        {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            bail!("postgres exited with {status}: {}", log.trim());
        }
        // Ready when the server has written its pid file's "ready" status line.
        let pid_file = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
        if pid_file.lines().nth(7).map(str::trim) == Some("ready")
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("postgres did not become ready within 60 s on port {port}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
