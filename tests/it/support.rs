//! Shared test helpers: one throwaway PostgreSQL cluster per test run (or the server named by
//! `HUBSYNC_TEST_DATABASE_URL`), a fresh migrated database per test, and running the binary.

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hubsync::pg::throwaway::{Cluster, Durability};
use sqlx::PgPool;

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
        .get_or_init(|| Cluster::start(Durability::Fast).expect("start throwaway PostgreSQL"))
        .url(db)
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

/// Runs the hubsync binary with `args`, extra environment, and no inherited secrets.
pub fn hubsync(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    hubsync_command(args, env, cwd)
        .output()
        .expect("run hubsync")
}

/// The hubsync binary with `args`, extra environment, and no inherited secrets, not started.
pub fn hubsync_command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubsync"));
    cmd.args(args).current_dir(cwd);
    for var in [
        "HUBSYNC_DATABASE_URL",
        "HUBSYNC_HUBSPOT_TOKEN",
        "HUBSYNC_SQL_SERVER",
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

/// The repository's example `config.yaml`.
pub fn example_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")
}

/// A SQL Server simulator with the seed contact table `dbo.hb_contacts`.
pub async fn mssql_sim() -> hubsync::sim::mssql::RunningMssqlSim {
    mssql_sim_with(Default::default()).await
}

/// Like [`mssql_sim`], with other options (the seed schema is always added).
pub async fn mssql_sim_with(
    options: hubsync::sim::mssql::MssqlSimOptions,
) -> hubsync::sim::mssql::RunningMssqlSim {
    let options = hubsync::sim::mssql::MssqlSimOptions {
        schema: Some(hubsync::sim::mssql::SEED_SCHEMA.into()),
        ..options
    };
    hubsync::sim::mssql::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("start the SQL Server simulator")
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
