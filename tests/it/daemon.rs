//! `hubsync run` as a real process: systemd notifications over a real NOTIFY_SOCKET, the HTTP
//! health and metrics endpoints, SIGHUP reloads, SIGTERM stops, and PostgreSQL outages.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Process, fresh_db};

/// A `hubsync run` child process with a real NOTIFY_SOCKET, its stdout and stderr collected
/// and, with its log files, scanned for leaks (see [`crate::support::Process`]).
pub struct Daemon {
    pub process: Process,
    notify: UnixDatagram,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub sims: Arc<Sims>,
}

/// The outside systems the daemon talks to, run in this test process.
pub struct Sims {
    pub hubspot: hubsync::sim::hubspot::RunningSim,
    pub mssql: crate::sql_target::SqlTarget,
}

pub async fn sims() -> Sims {
    let hubspot = hubsync::sim::hubspot::start(
        "127.0.0.1:0".parse().unwrap(),
        hubsync::sim::hubspot::SimOptions::lagging(),
    )
    .await
    .unwrap();
    let mssql = crate::sql_target::SqlTarget::start().await;
    Sims { hubspot, mssql }
}

/// The shipped config.yaml, pointed at the simulators (the test's own contact table), a free
/// port and a temp log directory.
pub fn config_text(port: u16, sims: &Sims, logs: &Path) -> String {
    let example = std::fs::read_to_string(crate::support::example_config()).unwrap();
    sims.mssql
        .in_config(&example)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts the daemon with fresh simulators and the shipped configuration.
    pub async fn start(database_url: &str) -> Daemon {
        Daemon::start_with(database_url, Arc::new(sims().await), |c| c).await
    }

    /// Starts the daemon against `sims` with the shipped configuration as changed by `edit`.
    pub async fn start_with(
        database_url: &str,
        sims: Arc<Sims>,
        edit: impl Fn(String) -> String,
    ) -> Daemon {
        Daemon::start_as(database_url, sims, "sim-token", edit).await
    }

    /// Like [`Daemon::start_with`], with `token` as the HubSpot token.
    pub async fn start_as(
        database_url: &str,
        sims: Arc<Sims>,
        token: &str,
        edit: impl Fn(String) -> String,
    ) -> Daemon {
        Daemon::start_env(database_url, sims, token, &[], edit).await
    }

    /// Like [`Daemon::start_as`], with more environment variables.
    pub async fn start_env(
        database_url: &str,
        sims: Arc<Sims>,
        token: &str,
        env: &[(&str, &str)],
        edit: impl Fn(String) -> String,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yaml");
        let text = edit(config_text(port, &sims, &dir.path().join("logs")));
        std::fs::write(&config, text).unwrap();
        let socket = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let connection = sims.mssql.connection_string();
        let mut vars = vec![
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            ("HUBSYNC_DATABASE_URL", database_url),
            ("HUBSYNC_HUBSPOT_TOKEN", token),
            ("HUBSYNC_SQL_SERVER", &connection),
        ];
        vars.extend_from_slice(env);
        let mut process = Process::start(
            &["--config", config.to_str().unwrap(), "run"],
            &vars,
            dir.path(),
        );
        // Whatever a test's reload points the log directory at, the first one is scanned too.
        process.scan_at_end(dir.path().join("logs"));
        Daemon {
            process,
            notify,
            port,
            dir,
            config,
            sims,
        }
    }

    /// The configuration text this daemon would get from the shipped file, changed by `edit`.
    pub fn config_text(&self, edit: impl Fn(String) -> String) -> String {
        edit(config_text(
            self.port,
            &self.sims,
            &self.dir.path().join("logs"),
        ))
    }

    /// Waits for a notification containing `needle`; returns it.
    pub fn expect_notify(&self, needle: &str) -> String {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Waits (up to `limit`) until the output contains `needle` (lines arrive through pipes,
    /// possibly after a notification sent later).
    pub async fn wait_output(&self, needle: &str, limit: Duration) -> String {
        eventually(&format!("output with {needle:?}"), limit, || async {
            self.output().contains(needle)
        })
        .await;
        self.output()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }

    /// `/readyz`: status code and JSON body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let answer = reqwest::get(self.url("/readyz")).await.unwrap();
        let code = answer.status().as_u16();
        (code, answer.json().await.unwrap())
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let answer = reqwest::get(self.url("/metrics")).await.unwrap();
        answer.text().await.unwrap()
    }

    /// Waits (up to `limit`) until `/readyz` satisfies `check`; returns its body.
    pub async fn wait_readyz(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (code, body) = self.readyz().await;
            if check(code, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never showed {what} within {limit:?}: {code} {body}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to end; returns (exit code, stdout + stderr + its log files),
    /// failing the test if any of them leaks.
    pub fn wait(self) -> (Option<i32>, String) {
        self.process.wait()
    }

    /// Stops with SIGTERM; returns (exit code, stdout + stderr + its log files).
    pub fn stop(self) -> (Option<i32>, String) {
        self.signal(Signal::SIGTERM);
        self.expect_notify("STOPPING=1");
        self.wait()
    }
}

/// Waits (up to `limit`) until `check` holds, re-checking every 100 ms.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_every(what, limit, Duration::from_millis(100), check).await
}

/// Like [`eventually`], re-checking every `every`.
pub async fn eventually_every<F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(every).await;
    }
}

pub fn write_config(path: &Path, text: &str) {
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
    // Every dependency was checked before READY=1.
    for component in ["postgres", "sql_server", "hubspot", "pollers"] {
        assert_eq!(body["components"][component]["ready"], true, "{body}");
    }
    assert_eq!(body["not_ready"], serde_json::json!([]), "{body}");
    let metrics = http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hubsync_ready 1"), "{metrics}");
    for name in [
        "hubsync_queue_items",
        "hubsync_queue_oldest_pending_seconds",
        "hubsync_records",
        "hubsync_hubspot_requests",
        "hubsync_hubspot_throttled",
        "hubsync_limiter_wait_seconds",
        "hubsync_hubspot_daily_budget_remaining",
        "hubsync_poll_lag_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing: {metrics}"
        );
    }
    for direction in ["to_hubspot", "to_sql"] {
        let lag =
            format!("hubsync_poll_lag_seconds{{object=\"contacts\",direction=\"{direction}\"}} ");
        assert!(metrics.contains(&lag), "{lag} missing: {metrics}");
    }
    // The one queued item, in whatever state the worker has it now.
    let item_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("hubsync_queue_items{object=\"contacts\",direction=\"to_hubspot\"")
        })
        .collect();
    assert_eq!(item_lines.len(), 1, "{metrics}");
    assert!(item_lines[0].ends_with(" 1"), "{metrics}");
    // A paused direction shows in /readyz (still ready) and /metrics.
    queue
        .pause("contacts", hubsync::queue::Direction::ToSql, "ops")
        .await
        .unwrap();
    let (code, body) = daemon.readyz().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["paused"][0]["object"], "contacts", "{body}");
    assert_eq!(body["paused"][0]["direction"], "to_sql", "{body}");
    let metrics = daemon.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "hubsync_paused{object=\"contacts\",direction=\"to_sql\"} 1"),
        "{metrics}"
    );
    queue
        .resume("contacts", hubsync::queue::Direction::ToSql)
        .await
        .unwrap();
    assert!(!daemon.metrics().await.contains("hubsync_paused{"));

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
    write_config(&daemon.config, &daemon.config_text(|c| c));
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify("RELOADING=1");
    daemon.expect_notify("READY=1");

    let password = daemon.sims.mssql.password();
    let (code, out) = daemon.stop();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration reload rejected"), "{out}");
    assert!(
        out.contains("queue.lease"),
        "the rejected reload names the problem: {out}"
    );
    assert!(out.contains("configuration reloaded"), "{out}");
    assert!(out.contains("hubsync stopped"), "{out}");
    assert!(!out.contains(&password));
    assert!(
        out.matches("hubsync is ready").count() == 2,
        "in the output and in the log file: {out}"
    );
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_syncs_sql_server_members_to_hubspot_and_exits_1_on_rejections() {
    let (pool, url) = fresh_db().await;
    let sims = sims().await;
    let members = crate::support::members(0..300, 3);
    sims.mssql.insert_rows(&members).await;
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
    let to_sql = || async {
        let outcomes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT coalesce(outcome, state), count(*) FROM sync_queue WHERE direction = 'to_sql' GROUP BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        outcomes
    };
    // Whatever HubSpot's poller saw of our creates (its search trails writes) is an echo.
    assert!(
        to_sql().await.iter().all(|(o, _)| o == "SKIP"),
        "{:?}",
        to_sql().await
    );
    assert!(!text.contains(&sims.mssql.password()));
    assert!(!text.contains("sim-token"));

    // A second run, once HubSpot has indexed the creates, finds nothing new: no HubSpot writes,
    // exit 0 (1 only for new rejections), and every create came back as an echo.
    sims.hubspot.indexed().await;
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
    assert_eq!(to_sql().await, [("SKIP".to_string(), done)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_holding_a_partial_request_never_lock_the_probes_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_pool, url) = fresh_db().await;
    let daemon = Daemon::start(&url).await;
    daemon.expect_notify("READY=1");
    let addr = format!("127.0.0.1:{}", daemon.port);
    // 500 clients send the start of a request and then nothing.
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: hubsync\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let ready = http.get(daemon.url("/readyz")).send().await;
    assert_eq!(
        ready.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "/readyz answers within 1 s"
    );
    // The oldest were closed to make room; the newest is closed once the header timeout passes.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            hubsync::daemon::http::HEADER_READ_TIMEOUT + Duration::from_secs(10),
            s.read(&mut buf),
        )
        .await;
        // Closed: end of file, a reset, or a 408 answer before the close.
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
            || matches!(read, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 408"))
    };
    let newest = slow.pop().unwrap();
    let oldest = slow.remove(0);
    assert!(
        closed(oldest).await,
        "the oldest partial connection was closed"
    );
    assert!(
        closed(newest).await,
        "an idle partial connection is closed after the timeout"
    );
    drop(slow);
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}
