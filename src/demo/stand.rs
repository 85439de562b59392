//! Everything the demo runs: a throwaway PostgreSQL (or the database the user names), the SQL
//! Server simulator seeded with the sample members, the HubSpot simulator, the demo config file,
//! and the real daemon (`hubsync run`) as a child process, started and stopped in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use super::config::{SHIPPED, Targets, demo_config};
use crate::config::{Config, ENV_DATABASE_URL, ENV_HUBSPOT_TOKEN, ENV_SQL_SERVER, Need};
use crate::mapping::SqlRow;
use crate::pg::throwaway::{Cluster, Durability};
use crate::sim::hubspot::{RunningSim, SimOptions};
use crate::sim::mssql::{MssqlSimOptions, RunningMssqlSim};

/// The object the demo syncs (the shipped config's only one).
pub const OBJECT: &str = "contacts";

/// What to start.
pub struct Plan<'a> {
    pub members: &'a [SqlRow],
    /// Config file and logs go here.
    pub dir: &'a Path,
    /// Use this database instead of a throwaway cluster.
    pub database_url: Option<&'a str>,
}

/// The running demo.
pub struct Stand {
    /// None when the user named a database.
    cluster: Option<Cluster>,
    pub database_url: String,
    pub pool: PgPool,
    pub mssql: RunningMssqlSim,
    pub hubspot: RunningSim,
    pub config: Config,
    pub config_path: PathBuf,
    pub log_dir: PathBuf,
    pub http: SocketAddr,
    daemon: Child,
    /// The daemon's stdout and stderr (it logs to `log_dir`; this catches anything else).
    pub daemon_output: PathBuf,
}

impl Stand {
    /// Starts every part and waits until the daemon tells systemd (us) it is ready.
    pub async fn start(plan: Plan<'_>, say: &dyn Fn(&str)) -> anyhow::Result<Stand> {
        let shipped = crate::config::load_str(SHIPPED, Need::Nothing, &|_| None)
            .map_err(|e| anyhow::anyhow!("the built-in config.yaml: {e}"))?;
        let table = shipped
            .objects
            .get(OBJECT)
            .map(|o| o.sql_table.clone())
            .context("the built-in config.yaml has no contacts object")?;

        let (cluster, database_url) = match plan.database_url {
            Some(url) => (None, url.to_string()),
            None => {
                say("starting a throwaway PostgreSQL…");
                let cluster =
                    tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast)).await??;
                let url = cluster.create_database("hubsync_demo").await?;
                (Some(cluster), url)
            }
        };
        let pool = crate::pg::connect_url(&database_url, 5, Duration::from_secs(10))
            .await
            .context("cannot connect to the queue database")?;
        crate::pg::migrate(&pool).await?;

        say(&format!(
            "starting the SQL Server simulator with {} members…",
            plan.members.len()
        ));
        let mssql = crate::sim::mssql::start(loopback(), MssqlSimOptions::seeded()).await?;
        mssql
            .insert_rows(&table, plan.members)
            .await
            .context("cannot load the members into the SQL Server simulator")?;
        let sim_options = SimOptions::lagging();
        let token = secrecy::ExposeSecret::expose_secret(&sim_options.token).to_string();
        let hubspot = crate::sim::hubspot::start(loopback(), sim_options).await?;

        let log_dir = plan.dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let http = SocketAddr::from(([127, 0, 0, 1], crate::pg::throwaway::free_port()?));
        let base_url = hubspot.base_url();
        let text = demo_config(
            SHIPPED,
            &Targets {
                http_listen: http,
                hubspot_base_url: &base_url,
                log_dir: &log_dir,
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot adapt config.yaml for the demo: {e}"))?;
        let config_path = plan.dir.join("config.yaml");
        std::fs::write(&config_path, &text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let secrets = [
            (ENV_DATABASE_URL, database_url.clone()),
            (ENV_HUBSPOT_TOKEN, token),
            (ENV_SQL_SERVER, mssql.connection_string()),
        ];
        let config = super::config::load_with_secrets(&text, &secrets)
            .map_err(|e| anyhow::anyhow!("the demo config: {e}"))?;

        say("starting the hubsync daemon (hubsync run)…");
        let socket_path = plan.dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let notify = UnixDatagram::bind(&socket_path)
            .with_context(|| format!("cannot bind {}", socket_path.display()))?;
        let daemon_output = plan.dir.join("daemon.out");
        let out = std::fs::File::create(&daemon_output)?;
        let exe = std::env::current_exe().context("cannot find the hubsync binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("HUBSYNC_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        for (k, v) in &secrets {
            cmd.env(k, v);
        }
        let mut daemon = cmd.spawn().context("cannot start hubsync run")?;
        enum Start {
            Ready(anyhow::Result<()>),
            Exited(std::io::Result<std::process::ExitStatus>),
            TimedOut,
        }
        let start = tokio::select! {
            ready = wait_ready(&notify) => Start::Ready(ready),
            exit = daemon.wait() => Start::Exited(exit),
            _ = tokio::time::sleep(Duration::from_secs(120)) => Start::TimedOut,
        };
        let stand = Stand {
            cluster,
            database_url,
            pool,
            mssql,
            hubspot,
            config,
            config_path,
            log_dir,
            http,
            daemon,
            daemon_output,
        };
        match start {
            Start::Ready(ready) => ready?,
            Start::Exited(exit) => bail!(
                "the daemon exited with {} before it was ready: {}",
                exit?,
                stand.daemon_tail()
            ),
            Start::TimedOut => bail!("the daemon was not ready within 120 s"),
        }
        drop(notify);
        let _ = std::fs::remove_file(&socket_path);
        Ok(stand)
    }

    /// `http://127.0.0.1:PORT/metrics` of the daemon.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.http)
    }

    /// The daemon's process id while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.id()
    }

    /// The daemon's exit status if it has stopped.
    pub fn daemon_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.try_wait().ok().flatten()
    }

    /// Resolves when the daemon process ends.
    pub async fn daemon_ended(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.daemon.wait().await
    }

    /// The last lines of the daemon's own output, for an error message.
    pub fn daemon_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.daemon_output).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!(
            "{} (more in {} and {})",
            tail.join(" | "),
            self.daemon_output.display(),
            self.log_dir.display()
        )
    }

    /// SIGTERM to the daemon (it finishes in-flight work and exits 0), then stops the
    /// simulators and PostgreSQL. Returns the daemon's exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        let code = match self.daemon.try_wait()? {
            Some(status) => status.code(),
            None => {
                if let Some(pid) = self.daemon.id() {
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    )?;
                }
                let grace = self.config.service.shutdown_grace + Duration::from_secs(10);
                match tokio::time::timeout(grace, self.daemon.wait()).await {
                    Ok(status) => status?.code(),
                    Err(_) => {
                        self.daemon.kill().await?;
                        bail!("the daemon did not stop within {grace:?} of SIGTERM; killed it");
                    }
                }
            }
        };
        self.pool.close().await;
        self.hubspot.shutdown().await;
        self.mssql.shutdown().await;
        if let Some(cluster) = self.cluster.take() {
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
        }
        Ok(code)
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits for `READY=1` on the notification socket.
async fn wait_ready(socket: &UnixDatagram) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return Ok(());
        }
    }
}
