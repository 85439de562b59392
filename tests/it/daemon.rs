//! `hubsync run` as a real process: systemd notifications over a real NOTIFY_SOCKET, the HTTP
//! health and metrics endpoints, SIGHUP reloads, SIGTERM stops, and PostgreSQL outages.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hubsync::pg::throwaway::{Cluster, Durability};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::fresh_db;

struct Daemon {
    child: Child,
    notify: UnixDatagram,
    port: u16,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    sims: Sims,
}

/// The outside systems the daemon talks to, run in this test process.
pub struct Sims {
    pub hubspot: hubsync::sim::hubspot::RunningSim,
    pub mssql: hubsync::sim::mssql::RunningMssqlSim,
}

pub async fn sims() -> Sims {
    let hubspot = hubsync::sim::hubspot::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let mssql = crate::support::mssql_sim().await;
    Sims { hubspot, mssql }
}

/// The shipped config.yaml, pointed at the simulators, a free port and a temp log directory.
pub fn config_text(port: u16, sims: &Sims, logs: &Path) -> String {
    let example = std::fs::read_to_string(crate::support::example_config()).unwrap();
    example
        .replace(
            "http_listen: 127.0.0.1:9187",
            &format!("http_listen: 127.0.0.1:{port}"),
        )
        .replace("health_interval: 5s", "health_interval: 200ms")
        .replace("shutdown_grace: 30s", "shutdown_grace: 3s")
        .replace("poll_interval: 5s", "poll_interval: 200ms")
        .replace("connect_timeout: 5s", "connect_timeout: 1s")
        .replace("https://api.hubapi.com", &sims.hubspot.base_url())
        .replace(
            "directory: /var/log/hubsync",
            &format!("directory: {}", logs.display()),
        )
}

impl Daemon {
    async fn start(database_url: &str) -> Daemon {
        let sims = sims().await;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_text(port, &sims, &dir.path().join("logs"))).unwrap();
        let socket = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hubsync"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("NOTIFY_SOCKET", &socket)
            .env("HUBSYNC_DATABASE_URL", database_url)
            .env("HUBSYNC_HUBSPOT_TOKEN", "sim-token")
            .env("HUBSYNC_SQL_SERVER", sims.mssql.connection_string())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon {
            child,
            notify,
            port,
            dir,
            config,
            sims,
        }
    }

    /// Waits for a notification containing `needle`; returns it.
    fn expect_notify(&self, needle: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no systemd notification with {needle:?}: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains(needle) {
                return msg;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Stops with SIGTERM; returns (exit code, stdout + stderr).
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal(Signal::SIGTERM);
        self.expect_notify("STOPPING=1");
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status.code(), out)
    }
}

impl Drop for Daemon {
    /// A failed test must not leave the daemon running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// Multi-threaded: the simulators in this process keep serving while the test blocks on the
// notification socket and on the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_systemd_serves_health_reloads_and_stops_cleanly() {
    let (pool, url) = fresh_db().await;
    let daemon = Daemon::start(&url).await;
    daemon.expect_notify("READY=1");
    let queue = hubsync::queue::Queue::new(pool, Default::default());
    let item = hubsync::queue::NewItem {
        record_key: "10045".into(),
        operation: hubsync::queue::Operation::Upsert,
        payload: serde_json::json!({}),
        source_version: 1,
    };
    queue
        .enqueue("contacts", hubsync::queue::Direction::ToHubspot, &[item])
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let health = http.get(daemon.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(daemon.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["components"]["postgres"]["ready"], true, "{body}");
    let metrics = http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hubsync_ready 1"), "{metrics}");
    // The one queued item, in whatever state the worker has it now.
    let item_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("hubsync_queue_items{object=\"contacts\",direction=\"to_hubspot\"")
        })
        .collect();
    assert_eq!(item_lines.len(), 1, "{metrics}");
    assert!(item_lines[0].ends_with(" 1"), "{metrics}");

    // A broken config on SIGHUP is refused; the service keeps running on the old one.
    write_config(&daemon.config, "queue:\n  lease: soon\n");
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");
    assert_eq!(
        http.get(daemon.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A valid one is applied.
    write_config(
        &daemon.config,
        &config_text(daemon.port, &daemon.sims, &daemon.dir.path().join("logs")),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");

    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration reload rejected"), "{out}");
    assert!(
        out.contains("queue.lease"),
        "the rejected reload names the problem: {out}"
    );
    assert!(out.contains("configuration reloaded"), "{out}");
    assert!(out.contains("hubsync stopped"), "{out}");
    assert!(!out.contains(hubsync::sim::mssql::DEFAULT_PASSWORD));
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_postgres_outage() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_database("outage").await.unwrap();
    let daemon = Daemon::start(&url).await;
    daemon.expect_notify("READY=1");

    drop(cluster); // PostgreSQL stops.
    let status = daemon.expect_notify("not ready: postgres");
    assert!(status.starts_with("STATUS="), "{status}");
    let http = reqwest::Client::new();
    let ready = http.get(daemon.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["components"]["postgres"]["ready"], false, "{body}");
    // Still alive, and still stops cleanly.
    assert_eq!(
        http.get(daemon.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_syncs_sql_server_members_to_hubspot_and_exits_1_on_rejections() {
    let (pool, url) = fresh_db().await;
    let sims = sims().await;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let members: Vec<hubsync::mapping::SqlRow> = (0..300)
        .map(|i| hubsync::bench::validate::member_row(i, &mut rng))
        .collect();
    crate::to_hubspot::insert_members(&sims.mssql, &members).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text(0, &sims, &dir.path().join("logs"))).unwrap();
    let connection = sims.mssql.connection_string();
    let run = || {
        crate::support::hubsync(
            &["--config", config.to_str().unwrap(), "run", "--once"],
            &[
                ("HUBSYNC_DATABASE_URL", url.as_str()),
                ("HUBSYNC_HUBSPOT_TOKEN", "sim-token"),
                ("HUBSYNC_SQL_SERVER", connection.as_str()),
            ],
            dir.path(),
        )
    };
    // The simulators keep serving on the other runtime threads meanwhile.
    let out = tokio::task::block_in_place(run);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some members are invalid: {text}"
    );
    let (done, rejected): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'rejected') \
         FROM sync_queue WHERE direction = 'to_hubspot'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(done + rejected, 300);
    assert!(rejected > 0);
    assert_eq!(sims.hubspot.contacts().len() as i64, done);
    // HubSpot's poller saw our creates come back; they are echoes, never written to SQL Server.
    let to_sql: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(outcome, state), count(*) FROM sync_queue WHERE direction = 'to_sql' GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(to_sql, [("SKIP".to_string(), done)]);
    assert!(!text.contains(hubsync::sim::mssql::DEFAULT_PASSWORD));
    assert!(!text.contains("sim-token"));

    // A second run finds nothing new: no HubSpot writes; still exit 1 only if new rejections.
    let writes = |s: &Sims| crate::support::hubspot_writes(&s.hubspot);
    let before = writes(&sims);
    let out = tokio::task::block_in_place(run);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(writes(&sims), before);
}
