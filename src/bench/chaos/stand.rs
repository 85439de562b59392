//! The systems of the kill-and-compare scenario and the daemon's lives: PostgreSQL (a
//! throwaway cluster, or the database given), the SQL Server and HubSpot simulators in this
//! process, the shipped config edited for crashes (short lease, fast retries, more rescues,
//! `search_lag: 2s`), and `hubsync run` as a child process that is started, killed with SIGKILL
//! or stopped with SIGTERM; plus what a dead process left behind in the queue.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::config::{Config, ENV_DATABASE_URL, ENV_HUBSPOT_TOKEN, ENV_SQL_SERVER};
use crate::demo::config::replace_once;
use crate::mapping::SqlRow;
use crate::mssql::ChangeReader;
use crate::pg::throwaway::{Cluster, Durability};
use crate::sim::hubspot::{RunningSim, SimOptions};
use crate::sim::mssql::{MssqlSimOptions, RunningMssqlSim};

/// The HubSpot tier the scenario runs at (requests per rolling 10 s).
pub const TIER: u32 = 250;

/// Everything but the daemon; shared by the scenario's tasks.
pub struct Stand {
    _cluster: Option<Cluster>,
    pub database_url: String,
    pub pool: PgPool,
    pub hubspot: RunningSim,
    pub mssql: RunningMssqlSim,
    /// The daemon's configuration as this process reads it (secrets included).
    pub config: Config,
    /// The SQL Server table, read through the production change reader.
    pub reader: ChangeReader,
    token: String,
    exe: PathBuf,
    pub dir: PathBuf,
    config_path: PathBuf,
    lives: AtomicU32,
}

/// One `hubsync run` process.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    /// Which life of the daemon this is (0, 1, …): its output is `daemon-N.out`.
    pub life: u32,
    pub started: Instant,
}

/// A queue item a process was holding (state `running`, locked by one of its workers).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Held {
    pub id: i64,
    pub direction: String,
    pub record_key: String,
}

/// Items still `running` under a worker of process `pid` (workers are named `<host>:<pid>/…`).
pub async fn held_by(pool: &PgPool, pid: u32) -> anyhow::Result<Vec<Held>> {
    Ok(sqlx::query_as(
        "SELECT id, direction, record_key FROM sync_queue \
         WHERE state = 'running' AND locked_by LIKE '%:' || $1 || '/%' ORDER BY id",
    )
    .bind(pid.to_string())
    .fetch_all(pool)
    .await?)
}

/// The shipped config for the scenario: pointed at the simulators, a free port and `logs`;
/// polls every second, HubSpot's index lag 2 s, a 5 s lease (the shortest allowed), fast
/// retries, `max_rescues` above the number of kills, tier [`TIER`].
pub fn scenario_config(
    shipped: &str,
    hubspot: &RunningSim,
    logs: &Path,
    kills: usize,
) -> anyhow::Result<String> {
    let (text, _port) = super::super::sync::bench_config(shipped, hubspot, logs, 4)?;
    let base_url = format!("base_url: {}", hubspot.base_url());
    let edits = [
        (base_url.as_str(), format!("{base_url}\n  search_lag: 2s")),
        ("poll_interval: 5s", "poll_interval: 1s".into()),
        ("shutdown_grace: 30s", "shutdown_grace: 5s".into()),
        ("health_interval: 5s", "health_interval: 1s".into()),
        ("lease: 2m", "lease: 5s".into()),
        ("retry_initial: 5s", "retry_initial: 200ms".into()),
        ("max_rescues: 3 ", format!("max_rescues: {} ", kills + 3)),
        ("requests_per_10s: 100", format!("requests_per_10s: {TIER}")),
        ("daily_limit: 250000", "daily_limit: 1250000".into()),
        ("stdout: true", "stdout: false".into()),
    ];
    let mut text = text;
    for (from, to) in edits {
        text = replace_once(&text, from, &to).map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(text)
}

impl Stand {
    /// Starts PostgreSQL (unless `database_url` names one), both simulators (HubSpot at
    /// [`TIER`], fault draws seeded with `seed`), loads `members` into SQL Server and writes the
    /// daemon's config into `dir`.
    pub async fn start(
        shipped: &str,
        database_url: Option<&str>,
        members: &[SqlRow],
        kills: usize,
        seed: u64,
        exe: PathBuf,
        dir: &Path,
    ) -> anyhow::Result<Stand> {
        let (cluster, database_url) = match database_url {
            Some(url) => (None, url.to_string()),
            None => {
                let cluster =
                    tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast)).await??;
                let url = cluster.create_database("hubsync_chaos").await?;
                (Some(cluster), url)
            }
        };
        let pool = crate::pg::connect_url(&database_url, 5, Duration::from_secs(10)).await?;
        crate::pg::migrate(&pool).await?;
        let sim_options = SimOptions {
            tier: TIER,
            seed,
            ..SimOptions::default()
        };
        let token = secrecy::ExposeSecret::expose_secret(&sim_options.token).to_string();
        let hubspot = crate::sim::hubspot::start(loopback(), sim_options).await?;
        // What each edit and each of hubsync's writes gave a contact, for the report on a
        // lost edit.
        hubspot.keep_history(true);
        let mssql = crate::sim::mssql::start(loopback(), MssqlSimOptions::seeded()).await?;
        let text = scenario_config(shipped, &hubspot, &dir.join("logs"), kills)?;
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, &text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let secrets = [
            (ENV_DATABASE_URL, database_url.clone()),
            (ENV_HUBSPOT_TOKEN, token.clone()),
            (ENV_SQL_SERVER, mssql.connection_string()),
        ];
        let config = crate::demo::config::load_with_secrets(&text, &secrets)
            .map_err(|e| anyhow::anyhow!("the scenario's config: {e}"))?;
        let table = config
            .objects
            .get(crate::demo::stand::OBJECT)
            .map(|o| o.sql_table.clone())
            .context("the config maps no contacts object")?;
        mssql
            .insert_rows(&table, members)
            .await
            .context("cannot load the members into the SQL Server simulator")?;
        let reader = crate::demo::watch::sql_reader(&config)?;
        Ok(Stand {
            _cluster: cluster,
            database_url,
            pool,
            hubspot,
            mssql,
            config,
            reader,
            token,
            exe,
            dir: dir.to_path_buf(),
            config_path,
            lives: AtomicU32::new(0),
        })
    }

    /// Starts `hubsync run`; its stdout and stderr go to `daemon-N.out` in the scenario's
    /// directory (its JSON logs to `logs/`).
    pub fn spawn(&self) -> anyhow::Result<Daemon> {
        let life = self.lives.fetch_add(1, Ordering::Relaxed);
        let out = std::fs::File::create(self.dir.join(format!("daemon-{life}.out")))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env(ENV_DATABASE_URL, &self.database_url)
            .env(ENV_HUBSPOT_TOKEN, &self.token)
            .env(ENV_SQL_SERVER, self.mssql.connection_string())
            .env_remove("HUBSYNC_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} run", self.exe.display()))?;
        let pid = child.id().context("the daemon has no pid")?;
        Ok(Daemon {
            child,
            pid,
            life,
            started: Instant::now(),
        })
    }

    /// The last lines a daemon life wrote outside its log files, for an error message.
    pub fn output_tail(&self, life: u32) -> String {
        let path = self.dir.join(format!("daemon-{life}.out"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("{} (in {})", tail.join(" | "), path.display())
    }
}

impl Daemon {
    /// Fails if the process has ended by itself.
    pub fn check_running(&mut self, stand: &Stand) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "daemon life {} exited by itself with {status}: {}",
                self.life,
                stand.output_tail(self.life)
            );
        }
        Ok(())
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM; waits up to `grace` for the exit. None: it did not exit in time (then killed).
    pub async fn terminate(mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                self.child.kill().await?;
                Ok(None)
            }
        }
    }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_scenario_config_is_the_shipped_one_edited_for_crashes() {
        let sim = crate::sim::hubspot::start("127.0.0.1:0".parse().unwrap(), Default::default())
            .await
            .unwrap();
        let text = super::scenario_config(
            crate::demo::config::SHIPPED,
            &sim,
            std::path::Path::new("/tmp/chaos/logs"),
            10,
        )
        .unwrap();
        let env = |name: &str| match name {
            "HUBSYNC_DATABASE_URL" => Some("postgres://postgres@127.0.0.1:5/chaos".to_string()),
            "HUBSYNC_HUBSPOT_TOKEN" => Some("t".to_string()),
            "HUBSYNC_SQL_SERVER" => Some("server=tcp:127.0.0.1,6;user=sa;password=p".to_string()),
            _ => None,
        };
        let config = crate::config::load_str(&text, crate::config::Need::All, &env).unwrap();
        assert_eq!(config.queue.lease.as_secs(), 5);
        assert_eq!(config.queue.max_rescues, 13);
        assert_eq!(config.queue.poll_interval.as_secs(), 1);
        assert_eq!(config.hubspot.search_lag.as_secs(), 2);
        assert_eq!(config.hubspot.requests_per_10s, super::TIER);
        assert_eq!(config.service.instance, None, "workers named after the pid");
    }
}
