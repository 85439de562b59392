//! The SQL Server a test talks to: a simulator of its own, or the real server that
//! `HUBSYNC_TEST_MSSQL` names (an ADO.NET connection string), each test with its own copy of the
//! seed contact table under a unique name. Tests that need fault injection ask for the simulator
//! and are skipped, with a notice, on a real server.

use std::sync::atomic::{AtomicU32, Ordering};

use hubsync::mapping::SqlRow;
use hubsync::mssql::{SqlPool, SqlServerSettings};
use hubsync::sim::mssql::{MssqlSimOptions, RunningMssqlSim, SEED_SCHEMA};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use crate::mssql_sim::Conn;

static NEXT_TABLE: AtomicU32 = AtomicU32::new(0);

/// The seed schema's table, as the shipped configuration names it.
const SEED_TABLE: &str = "[dbo].[hb_contacts]";

/// The real server's connection string, when the environment names one (else a notice, once,
/// that the simulator stands in).
pub fn real_server() -> Option<String> {
    let real = std::env::var("HUBSYNC_TEST_MSSQL")
        .ok()
        .filter(|c| !c.trim().is_empty());
    if real.is_none() {
        static NOTICE: std::sync::Once = std::sync::Once::new();
        NOTICE.call_once(|| {
            eprintln!(
                "notice: HUBSYNC_TEST_MSSQL is not set; the SQL Server tests run against the \
                 simulator only (the real-server run is skipped)"
            )
        });
    }
    real
}

/// The password of an ADO.NET connection string (its `password` or `pwd` key).
pub fn password_of(connection: &str) -> String {
    connection
        .split(';')
        .filter_map(|part| part.split_once('='))
        .find(|(k, _)| is_password_key(k))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// Whether a connection string key names the password.
pub fn is_password_key(key: &str) -> bool {
    matches!(key.trim().to_ascii_lowercase().as_str(), "password" | "pwd")
}

/// Says that a step needing the simulator (`what`) is skipped on a real server.
pub fn skipped_on_real_server(what: &str) {
    eprintln!(
        "notice: {what} needs the simulator's fault injection or counters; skipped on a real \
         SQL Server"
    );
}

pub struct SqlTarget {
    sim: Option<RunningMssqlSim>,
    connection: String,
    /// The unqualified name of this test's contact table (in `dbo`).
    name: String,
    pool: SqlPool,
}

impl SqlTarget {
    /// The seed contact table on a fresh simulator or on the real server.
    pub async fn start() -> SqlTarget {
        SqlTarget::start_with(MssqlSimOptions::default(), |s| s).await
    }

    /// Like [`SqlTarget::start`]: the simulator started with `options`, the seed schema changed
    /// by `schema` (it receives `CREATE TABLE [dbo].[hb_contacts] …` and keeps that name).
    pub async fn start_with(
        options: MssqlSimOptions,
        schema: impl FnOnce(String) -> String,
    ) -> SqlTarget {
        let name = format!(
            "hb_contacts_{}_{}",
            std::process::id(),
            NEXT_TABLE.fetch_add(1, Ordering::Relaxed)
        );
        let create =
            schema(SEED_SCHEMA.to_string()).replace(SEED_TABLE, &format!("[dbo].[{name}]"));
        let (sim, connection) = match real_server() {
            Some(connection) => (None, connection),
            None => {
                let sim = hubsync::sim::mssql::start(
                    "127.0.0.1:0".parse().expect("address"),
                    MssqlSimOptions {
                        schema: Some(create.clone()),
                        ..options
                    },
                )
                .await
                .expect("start the SQL Server simulator");
                let connection = sim.connection_string();
                (Some(sim), connection)
            }
        };
        let pool = SqlPool::new(&SqlServerSettings {
            connection: Some(connection.clone().into()),
            ..Default::default()
        })
        .expect("SQL Server pool");
        let target = SqlTarget {
            sim,
            connection,
            name,
            pool,
        };
        if target.sim.is_none() {
            target
                .execute_batch(&create)
                .await
                .expect("create the test's contact table");
        }
        target
    }

    pub fn is_sim(&self) -> bool {
        self.sim.is_some()
    }

    /// The simulator, for a test step that needs its fault injection or counters; `None` on a
    /// real server, with a notice that `what` is skipped.
    pub fn sim(&self, what: &str) -> Option<&RunningMssqlSim> {
        if self.sim.is_none() {
            skipped_on_real_server(what);
        }
        self.sim.as_ref()
    }

    /// The ADO.NET connection string hubsync gets.
    pub fn connection_string(&self) -> String {
        self.connection.clone()
    }

    /// The password inside the connection string (what an output must never show).
    pub fn password(&self) -> String {
        password_of(&self.connection)
    }

    /// The test's contact table as config names it: `dbo.hb_contacts_<pid>_<n>`.
    pub fn table(&self) -> String {
        format!("dbo.{}", self.name)
    }

    /// The test's contact table quoted for T-SQL.
    pub fn quoted(&self) -> String {
        format!("[dbo].[{}]", self.name)
    }

    /// `config` (YAML text) with the shipped contact table replaced by the test's own.
    pub fn in_config(&self, config: &str) -> String {
        config.replace(
            "sql_table: dbo.hb_contacts\n",
            &format!("sql_table: {}\n", self.table()),
        )
    }

    /// Runs T-SQL as a client batch would; fails with the first SQL Server error.
    pub async fn execute_batch(&self, sql: &str) -> anyhow::Result<()> {
        match &self.sim {
            Some(sim) => sim.execute_batch(sql).await,
            None => {
                let mut conn = self.pool.get_once().await?;
                Ok(conn.batch(sql).await?)
            }
        }
    }

    /// Inserts rows (column name → value in the contracts' JSON encoding, every row with the
    /// first row's columns) into the test's contact table with multi-row INSERT batches.
    pub async fn insert_rows(&self, rows: &[SqlRow]) {
        for statement in hubsync::sim::mssql::setup::insert_statements(&self.quoted(), rows) {
            self.execute_batch(&statement)
                .await
                .unwrap_or_else(|e| panic!("insert members: {e}"));
        }
    }

    /// Turns change tracking on for the database (where it is off) and for the test's table.
    pub async fn enable_change_tracking(&self) {
        self.enable_change_tracking_on_database().await;
        self.execute_batch(&format!(
            "ALTER TABLE {} ENABLE CHANGE_TRACKING",
            self.quoted()
        ))
        .await
        .unwrap();
    }

    /// Turns change tracking on for the database, unless it is on already (SQL Server's 5088,
    /// as on a real server that other tests share).
    pub async fn enable_change_tracking_on_database(&self) {
        let enable = "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON \
                      (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)";
        if let Err(e) = self.execute_batch(enable).await {
            let text = format!("{e:#}");
            assert!(
                text.contains("Change tracking is already enabled for database"),
                "{enable}: {text}"
            );
        }
    }

    /// A tiberius client logged in with the test's connection string.
    pub async fn client(&self) -> Conn {
        let config = tiberius::Config::from_ado_string(&self.connection).expect("connection");
        let tcp = TcpStream::connect(config.get_addr())
            .await
            .expect("connect to SQL Server");
        tcp.set_nodelay(true).expect("nodelay");
        tiberius::Client::connect(config, tcp.compat_write())
            .await
            .expect("login succeeds")
    }

    /// The first column of the first row of `sql`, as an integer.
    pub async fn first_int(&self, sql: &str) -> i32 {
        let mut c = self.client().await;
        crate::mssql_sim::first_int(&mut c, sql).await
    }
}

impl Drop for SqlTarget {
    /// A real server keeps nothing of the test: its table is dropped.
    fn drop(&mut self) {
        if self.sim.is_none() {
            drop_tables(&self.connection, &[self.quoted()]);
        }
    }
}

/// Drops `tables` (quoted names) on the server of `connection`, from a thread and runtime of
/// its own since a `Drop` cannot await; a failure is a notice (the test's result stands).
pub fn drop_tables(connection: &str, tables: &[String]) {
    let connection = connection.to_string();
    let sql: Vec<String> = tables
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {t}"))
        .collect();
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let pool = SqlPool::new(&SqlServerSettings {
                connection: Some(connection.into()),
                ..Default::default()
            })?;
            let mut conn = pool.get_once().await?;
            for statement in &sql {
                conn.batch(statement).await?;
            }
            anyhow::Ok(())
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("notice: test tables {tables:?} were not dropped: {e:#}"),
        Err(_) => eprintln!("notice: dropping test tables {tables:?} panicked"),
    }
}
