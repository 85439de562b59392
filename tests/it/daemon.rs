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

const TOKEN: &str = "pat-na1-99999999-8888-7777-6666-555555555555";

struct Daemon {
    child: Child,
    notify: UnixDatagram,
    port: u16,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn config_text(port: u16) -> String {
    format!(
        "service:\n  http_listen: 127.0.0.1:{port}\n  health_interval: 200ms\n  shutdown_grace: 10s\n\
         postgres:\n  connect_timeout: 1s\n\
         sql_server:\n  connection: server=tcp:127.0.0.1,1;user=sa;password=x\n\
         objects:\n  contacts:\n    sql_table: dbo.hb_contacts\n    sql_key: numero_asociado\n"
    )
}

impl Daemon {
    fn start(database_url: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_text(port)).unwrap();
        let socket = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hubsync"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("NOTIFY_SOCKET", &socket)
            .env("HUBSYNC_DATABASE_URL", database_url)
            .env("HUBSYNC_HUBSPOT_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon {
            child,
            notify,
            port,
            _dir: dir,
            config,
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

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn run_notifies_systemd_serves_health_reloads_and_stops_cleanly() {
    let (pool, url) = fresh_db().await;
    let daemon = Daemon::start(&url);
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
    assert!(
        metrics.contains(
            "hubsync_queue_items{object=\"contacts\",direction=\"to_hubspot\",state=\"pending\"} 1"
        ),
        "{metrics}"
    );

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
    write_config(&daemon.config, &config_text(daemon.port));
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
    assert!(!out.contains(TOKEN));
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test]
async fn readyz_reports_a_postgres_outage() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_database("outage").await.unwrap();
    let daemon = Daemon::start(&url);
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
