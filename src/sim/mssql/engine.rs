//! The simulator's SQL engine: one SQLite database per instance (WAL, one connection per
//! session), the rowversion counter and MIN_ACTIVE_ROWVERSION bookkeeping, T-SQL transactions
//! emulated over an undo log with row locks (each statement is one short SQLite transaction under
//! the database's statement mutex), readers under locking READ COMMITTED or READ COMMITTED
//! SNAPSHOT, running translated statements into TDS tokens, and SQLite errors mapped to SQL Server
//! error numbers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value as SqliteValue, ValueRef};
use rusqlite::{Connection, ErrorCode};

use super::catalog::{self, Catalog, TableDef};
use super::locks::{Awaited, Cancel, Locks, Wait};
use super::translate::{self, Context, ContextValue, ItemType, SqlError, Statement};
use super::types::{self, Param, SqlType, Value};
use super::wire::{DONE_COUNT, DONE_ERROR, DONE_MORE, DoneKind, Tokens};

/// Errors after which SQL Server goes on with the next statement of the batch.
const STATEMENT_LEVEL: &[u32] = &[
    1222, 2627, 2601, 515, 547, 2628, 245, 241, 8115, 273, 272, 544, 8102, 257, 206, 3902, 3903,
];

#[derive(Debug, Default)]
struct RvState {
    last: i64,
    /// Session id → lowest rowversion it assigned in its open transaction.
    open: HashMap<u64, i64>,
}

/// Change tracking of the database: on or off, the last committed change version, and each
/// tracked table's minimum valid version (the store keeps them in `__sim_ct`).
#[derive(Debug, Default)]
struct CtState {
    enabled: bool,
    committed: i64,
    min_valid: HashMap<String, i64>,
}

/// A session's change-tracking state: the context of the running statement
/// (`WITH CHANGE_TRACKING_CONTEXT`) and whether its open transaction changed a tracked table.
#[derive(Debug, Default)]
struct CtSession {
    context: Mutex<Option<Vec<u8>>>,
    pending: AtomicBool,
}

/// OBJECT_ID of a table: stable for its store name, positive like SQL Server's.
fn object_id(name: &str) -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.to_ascii_lowercase().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    i64::from(h & 0x7fff_ffff).max(1)
}

/// One simulated database: the store file, the catalog, rowversions and fault switches.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub name: String,
    rv: Mutex<RvState>,
    catalog: RwLock<Catalog>,
    next_descriptor: AtomicU64,
    next_session: AtomicU64,
    /// Writes left that fail with deadlock 1205.
    pub deadlocks: AtomicU32,
    settings: Settings,
    /// Row locks of the open transactions.
    pub locks: Locks,
    /// Serializes statements: each runs as one SQLite transaction while holding it.
    statements: Mutex<()>,
    /// Bumped by every catalog change (sessions rebuild their capture triggers).
    generation: AtomicU64,
    ct: Mutex<CtState>,
}

/// How the database treats concurrent sessions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Every session's initial `SET LOCK_TIMEOUT`; `None` waits without bound (SQL Server's -1).
    pub lock_timeout: Option<Duration>,
    /// READ_COMMITTED_SNAPSHOT ON: readers see the last committed rows instead of waiting for
    /// rows other sessions have changed.
    pub read_committed_snapshot: bool,
}

/// Not a SQL Server error: the statement touched a row another session holds and is retried
/// after the wait (`Capture::blocked` says for what).
const BLOCKED: u32 = u32::MAX;
/// Not a SQL Server error: the request was cancelled while the statement waited.
const CANCELLED: u32 = u32::MAX - 1;

/// The undo log: the before-image of every row an open transaction changed (`image` NULL: the
/// row did not exist), written in the same store transaction as the change.
const UNDO_TABLE: &str = "CREATE TABLE IF NOT EXISTS __sim_undo (seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, tbl TEXT NOT NULL, rid INTEGER NOT NULL, image TEXT)";

fn store_error(e: rusqlite::Error) -> anyhow::Error {
    anyhow::anyhow!("SQL Server simulator store: {e}")
}

impl Db {
    /// Opens (creating when new) the store in `dir`, or in a fresh temporary directory.
    /// Returns the database and whether it was newly created.
    pub fn open(
        dir: Option<&Path>,
        name: &str,
        settings: Settings,
    ) -> anyhow::Result<(Arc<Db>, bool)> {
        let (path, tmp) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.join(format!("{name}.sqlite")), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("hubsync-mssql-sim")
                    .tempdir()?;
                (t.path().join(format!("{name}.sqlite")), Some(t))
            }
        };
        let created = !path.exists();
        let conn = Connection::open(&path).map_err(store_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_error)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS __sim_catalog (name TEXT PRIMARY KEY, def TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS __sim_ct (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        )
        .map_err(store_error)?;
        conn.execute_batch(UNDO_TABLE).map_err(store_error)?;
        // The change-tracking triggers stay quiet while recovery puts rows back.
        register_collations(&conn).map_err(store_error)?;
        for (name, arity) in [("__ct_on", 0), ("__ct_context", 0), ("__ct_tx", 0)] {
            conn.create_scalar_function(name, arity, FunctionFlags::SQLITE_UTF8, |_| {
                Ok(None::<i64>)
            })
            .map_err(store_error)?;
        }
        // Recovery: transactions open when the simulator stopped are rolled back.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(store_error)?;
        restore(&conn, Undo::All).map_err(store_error)?;
        conn.execute_batch("COMMIT").map_err(store_error)?;
        let mut catalog = Catalog::default();
        {
            let mut stmt = conn
                .prepare("SELECT def FROM __sim_catalog")
                .map_err(store_error)?;
            let defs = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(store_error)?;
            for def in defs {
                let def = def.map_err(store_error)?;
                let json: serde_json::Value = serde_json::from_str(&def)?;
                let table = TableDef::from_json(&json).ok_or_else(|| {
                    anyhow::anyhow!("unreadable catalog entry in {}", path.display())
                })?;
                catalog.insert(table);
            }
        }
        let mut ct = CtState::default();
        {
            let mut stmt = conn
                .prepare("SELECT name, value FROM __sim_ct")
                .map_err(store_error)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(store_error)?;
            for row in rows {
                let (name, value) = row.map_err(store_error)?;
                match name.as_str() {
                    "enabled" => ct.enabled = value != 0,
                    "version" => ct.committed = value,
                    other => {
                        if let Some(table) = other.strip_prefix("min:") {
                            ct.min_valid.insert(table.to_string(), value);
                        }
                    }
                }
            }
        }
        let mut last = 2000i64;
        for t in catalog.tables() {
            if let Some(c) = t.columns.iter().find(|c| c.ty == SqlType::RowVersion) {
                let sql = format!(
                    "SELECT IFNULL(MAX({}), 0) FROM {}",
                    translate::q(&c.name.to_ascii_lowercase()),
                    translate::q(&t.name)
                );
                let max: i64 = conn
                    .query_row(&sql, [], |r| r.get(0))
                    .map_err(store_error)?;
                last = last.max(max);
            }
        }
        let db = Db {
            path,
            _dir: tmp,
            name: name.to_string(),
            rv: Mutex::new(RvState {
                last,
                open: HashMap::new(),
            }),
            catalog: RwLock::new(catalog),
            next_descriptor: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            deadlocks: AtomicU32::new(0),
            settings,
            locks: Locks::default(),
            statements: Mutex::new(()),
            generation: AtomicU64::new(1),
            ct: Mutex::new(ct),
        };
        Ok((Arc::new(db), created))
    }

    fn rv_state(&self) -> std::sync::MutexGuard<'_, RvState> {
        self.rv.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_rv(&self, session: u64) -> i64 {
        let mut s = self.rv_state();
        s.last += 1;
        let v = s.last;
        s.open.entry(session).or_insert(v);
        v
    }

    /// MIN_ACTIVE_ROWVERSION(): the lowest rowversion of a still-open transaction, else the
    /// next value to be assigned.
    pub fn min_active_rowversion(&self) -> i64 {
        let s = self.rv_state();
        s.open.values().copied().min().unwrap_or(s.last + 1)
    }

    /// @@DBTS: the last rowversion assigned.
    pub fn dbts(&self) -> i64 {
        self.rv_state().last
    }

    fn release(&self, session: u64) {
        self.rv_state().open.remove(&session);
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    fn ct_state(&self) -> std::sync::MutexGuard<'_, CtState> {
        self.ct.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CHANGE_TRACKING_CURRENT_VERSION(): the version of the last committed change (NULL while
    /// change tracking is off for the database).
    fn ct_current(&self) -> Option<i64> {
        let s = self.ct_state();
        s.enabled.then_some(s.committed)
    }

    /// CHANGE_TRACKING_MIN_VALID_VERSION(object_id).
    fn ct_min_valid(&self, id: i64) -> Option<i64> {
        let s = self.ct_state();
        if !s.enabled {
            return None;
        }
        s.min_valid
            .iter()
            .find(|(t, _)| object_id(t) == id)
            .map(|(_, v)| *v)
    }

    fn take_deadlock(&self) -> bool {
        self.deadlocks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// How a request is answered: a batch ends statements with DONE, an RPC with DONEINPROC then
/// RETURNSTATUS and DONEPROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Batch,
    Rpc,
}

/// One client session: its store connection and transaction state.
pub struct Session {
    db: Arc<Db>,
    conn: Connection,
    id: u64,
    pub spid: u16,
    pub trancount: u32,
    descriptor: u64,
    nocount: bool,
    xact_abort: bool,
    scope_identity: Option<i64>,
    rowcount: u64,
    /// `SET LOCK_TIMEOUT`: how long a statement waits for another session's row.
    lock_timeout: Option<Duration>,
    /// Set by the connection on ATTENTION or when the client has gone.
    pub cancel: Arc<Cancel>,
    /// The last request stopped at a cancel (answered with DONE_ATTN).
    pub interrupted: bool,
    capture: Arc<Mutex<Capture>>,
    /// Rows this session's open transaction holds.
    held: Vec<(String, i64)>,
    /// The catalog generation the capture triggers were built for.
    triggers: u64,
    ct: Arc<CtSession>,
}

impl Drop for Session {
    /// A session that ends (the client has gone) rolls its transaction back.
    fn drop(&mut self) {
        if self.trancount > 0 {
            self.undo();
        }
        self.db.release(self.id);
    }
}

impl Session {
    pub fn open(db: Arc<Db>) -> anyhow::Result<Session> {
        let id = db.next_session.fetch_add(1, Ordering::SeqCst);
        let conn = Connection::open(&db.path).map_err(store_error)?;
        // Statements are serialized by the database's statement mutex: the store never waits.
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(store_error)?;
        // "x" must name a column, never fall back to a string literal.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)
            .map_err(store_error)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)
            .map_err(store_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(store_error)?;
        let capture = Arc::new(Mutex::new(Capture::default()));
        let ct = Arc::new(CtSession::default());
        register_functions(&conn, &db, id, &capture, &ct).map_err(store_error)?;
        Ok(Session {
            spid: (50 + id % 30000) as u16,
            lock_timeout: db.settings.lock_timeout,
            db,
            conn,
            id,
            trancount: 0,
            descriptor: 0,
            nocount: false,
            xact_abort: false,
            scope_identity: None,
            rowcount: 0,
            cancel: Arc::new(Cancel::default()),
            interrupted: false,
            capture,
            held: Vec::new(),
            triggers: 0,
            ct,
        })
    }

    fn capture(&self) -> MutexGuard<'_, Capture> {
        self.capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (Re)creates the TEMP triggers that lock changed rows and log their before-images, when
    /// the catalog changed since they were made. Runs under the statement mutex.
    fn ensure_triggers(&mut self) -> rusqlite::Result<()> {
        let generation = self.db.generation.load(Ordering::SeqCst);
        if self.triggers == generation {
            return Ok(());
        }
        let old: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT name FROM temp.sqlite_master WHERE type = 'trigger'")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for name in old {
            self.conn.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS temp.{}",
                translate::q(&name)
            ))?;
        }
        let tables: Vec<String> = self.db.catalog().tables().map(|t| t.name.clone()).collect();
        for table in tables {
            let columns = table_columns(&self.conn, &table)?;
            if columns.is_empty() {
                continue;
            }
            let lit = table.replace('\'', "''");
            let t = translate::q(&table);
            let image: Vec<String> = columns
                .iter()
                .map(|(c, _, _)| format!("'{}', OLD.{}", c.replace('\'', "''"), translate::q(c)))
                .collect();
            let image = image.join(", ");
            let id = self.id;
            for (kind, when, row) in [("u", "BEFORE UPDATE", "OLD"), ("d", "BEFORE DELETE", "OLD")]
            {
                self.conn.execute_batch(&format!(
                    "CREATE TEMP TRIGGER {name} {when} ON main.{t} WHEN __capture('{lit}', {row}.rowid) BEGIN INSERT INTO __sim_undo (session, tbl, rid, image) VALUES ({id}, '{lit}', {row}.rowid, __image({image})); END",
                    name = translate::q(&format!("__sim_{kind}_{table}")),
                ))?;
            }
            self.conn.execute_batch(&format!(
                "CREATE TEMP TRIGGER {name} AFTER INSERT ON main.{t} WHEN __capture('{lit}', NEW.rowid) BEGIN INSERT INTO __sim_undo (session, tbl, rid, image) VALUES ({id}, '{lit}', NEW.rowid, NULL); END",
                name = translate::q(&format!("__sim_i_{table}")),
            ))?;
            // A key another session's uncommitted DELETE freed is not free yet: an insert waits
            // for that session (any of its deleted rows in the table: stricter than a key lock),
            // so that its rollback can always put the row back.
            self.conn.execute_batch(&format!(
                "CREATE TEMP TRIGGER {name} AFTER INSERT ON main.{t} BEGIN SELECT __deleted_by(u.tbl, u.rid, u.session) FROM __sim_undo u WHERE u.tbl = '{lit}' AND u.session <> {id} AND u.image IS NOT NULL AND NOT EXISTS (SELECT 1 FROM main.{t} x WHERE x.rowid = u.rid) LIMIT 1; END",
                name = translate::q(&format!("__sim_k_{table}")),
            ))?;
        }
        self.triggers = generation;
        Ok(())
    }

    /// Runs `f` as one store transaction under the statement mutex. `read` is the SQL of a
    /// SELECT: under locking READ COMMITTED it waits for rows other sessions hold in the tables it
    /// reads; under READ COMMITTED SNAPSHOT it runs on the last committed rows (the other
    /// sessions' before-images applied, then rolled back). A statement that touched a row
    /// another session holds fails with [`BLOCKED`] and is undone (its new locks released).
    fn in_store<T>(
        &mut self,
        read: Option<&str>,
        f: impl FnOnce(&mut Session) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let db = Arc::clone(&self.db);
        let _serial = db.statements.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_triggers()
            .map_err(|e| self.map_error(e, "capture triggers"))?;
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.map_error(e, "BEGIN"))?;
        {
            let mut c = self.capture();
            c.enabled = true;
            c.in_transaction = self.trancount > 0;
            c.pending.clear();
            c.blocked = None;
        }
        let mut keep = true;
        let mut result = match read {
            Some(sql) if db.locks.others_hold_any(self.id) => {
                if db.settings.read_committed_snapshot {
                    keep = false;
                    self.capture().enabled = false;
                    let view = restore(&self.conn, Undo::Others(self.id));
                    self.capture().enabled = true;
                    view.map_err(|e| self.map_error(e, "snapshot"))
                } else {
                    match self.held_table_read(sql) {
                        Ok(Some(awaited)) => {
                            self.capture().blocked = Some(awaited);
                            Err(SqlError::new(BLOCKED, 0, 0, "blocked"))
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            }
            _ => Ok(()),
        }
        .and_then(|()| f(self));
        if self.capture().blocked.is_some() {
            result = Err(SqlError::new(BLOCKED, 0, 0, "blocked"));
        }
        let ok = result.is_ok();
        if ok && keep {
            // An autocommit change of a tracked table gets its version as it commits.
            let version = if self.trancount == 0 {
                self.stamp_changes()
            } else {
                Ok(None)
            };
            match version.map(|v| (v, self.conn.execute_batch("COMMIT"))) {
                Ok((version, Ok(()))) => self.publish_version(version),
                Ok((_, Err(e))) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    result = Err(self.map_error(e, "COMMIT"));
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    result = Err(e);
                }
            }
        } else {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let pending = std::mem::take(&mut self.capture().pending);
        self.capture().enabled = false;
        if result.is_ok() {
            self.held.extend(pending);
        } else {
            db.locks.release(self.id, &pending);
        }
        result
    }

    /// The first table a SELECT reads in which another session holds a row (SQL Server's
    /// locking READ COMMITTED would wait there; every table counts as scanned, which is stricter
    /// than a seek on a key would be).
    fn held_table_read(&self, sql: &str) -> Result<Option<Awaited>, SqlError> {
        let roots: HashMap<i64, String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT rootpage, tbl_name FROM main.sqlite_master WHERE type IN ('table', 'index')")
                .map_err(|e| self.map_error(e, sql))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                .map_err(|e| self.map_error(e, sql))?
        };
        let mut stmt = self
            .conn
            .prepare(&format!("EXPLAIN {sql}"))
            .map_err(|e| self.map_error(e, sql))?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(|e| self.map_error(e, sql))? {
            let opcode: String = row.get(1).unwrap_or_default();
            let root: i64 = row.get(3).unwrap_or_default();
            let schema: i64 = row.get(4).unwrap_or(-1);
            if matches!(opcode.as_str(), "OpenRead" | "ReopenIdx")
                && schema == 0
                && let Some(table) = roots.get(&root)
                && let Some(holder) = self.db.locks.table_holder(table, self.id)
            {
                return Ok(Some(Awaited::Table {
                    table: table.clone(),
                    holder,
                }));
            }
        }
        Ok(None)
    }

    /// Rolls the open transaction's changes back (before-images restored, newest first) and
    /// releases its locks.
    fn undo(&mut self) {
        let db = Arc::clone(&self.db);
        {
            let _serial = db.statements.lock().unwrap_or_else(|p| p.into_inner());
            self.capture().enabled = false;
            let done = self
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .and_then(|()| restore(&self.conn, Undo::Session(self.id)))
                .and_then(|()| self.conn.execute_batch("COMMIT"));
            if let Err(e) = done {
                tracing::warn!(error = %e, "SQL Server simulator: rollback failed");
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        let held = std::mem::take(&mut self.held);
        db.locks.release(self.id, &held);
    }

    /// Makes the open transaction's changes permanent: gives its changes of tracked tables
    /// their version, drops its undo log, releases its locks.
    fn forget_undo(&mut self) -> Result<(), SqlError> {
        let db = Arc::clone(&self.db);
        {
            let _serial = db.statements.lock().unwrap_or_else(|p| p.into_inner());
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.map_error(e, "COMMIT TRANSACTION"))?;
            let done = self.stamp_changes().and_then(|version| {
                self.conn
                    .execute(
                        "DELETE FROM __sim_undo WHERE session = ?1",
                        [self.id as i64],
                    )
                    .map_err(|e| self.map_error(e, "COMMIT TRANSACTION"))?;
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(|e| self.map_error(e, "COMMIT TRANSACTION"))?;
                Ok(version)
            });
            match done {
                Ok(version) => self.publish_version(version),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        let held = std::mem::take(&mut self.held);
        db.locks.release(self.id, &held);
        Ok(())
    }

    /// Inside the store transaction that commits them: this session's uncommitted changes of
    /// tracked tables get the next version. Returns it when there were any.
    fn stamp_changes(&mut self) -> Result<Option<i64>, SqlError> {
        if !self.ct.pending.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        let version = self.db.ct_state().committed + 1;
        let sides: Vec<String> = self
            .db
            .catalog()
            .change_tables()
            .map(|t| t.name.clone())
            .collect();
        let mut stamped = 0;
        for side in sides {
            stamped += self
                .conn
                .execute(
                    &format!(
                        "UPDATE {} SET \"SYS_CHANGE_VERSION\" = ?1, \
                         \"SYS_CHANGE_CREATION_VERSION\" = CASE WHEN __insert = 1 THEN ?1 \
                         ELSE \"SYS_CHANGE_CREATION_VERSION\" END, __insert = 0, __tx = NULL \
                         WHERE \"SYS_CHANGE_VERSION\" IS NULL AND __tx = ?2",
                        translate::q(&side)
                    ),
                    rusqlite::params![version, self.id as i64],
                )
                .map_err(|e| self.map_error(e, "COMMIT TRANSACTION"))?;
        }
        if stamped == 0 {
            return Ok(None);
        }
        self.conn
            .execute(
                "INSERT OR REPLACE INTO __sim_ct (name, value) VALUES ('version', ?1)",
                [version],
            )
            .map_err(|e| self.map_error(e, "COMMIT TRANSACTION"))?;
        Ok(Some(version))
    }

    /// A committed version becomes CHANGE_TRACKING_CURRENT_VERSION() once the store commit is
    /// through.
    fn publish_version(&self, version: Option<i64>) {
        if let Some(v) = version {
            self.db.ct_state().committed = v;
        }
    }

    /// The change-tracking cleanup: forgets every committed change up to the current version,
    /// which becomes each tracked table's minimum valid version (as after the retention period).
    pub fn change_tracking_cleanup(&mut self) -> anyhow::Result<()> {
        let db = Arc::clone(&self.db);
        let _serial = db.statements.lock().unwrap_or_else(|p| p.into_inner());
        let current = db.ct_state().committed;
        let tables: Vec<String> = db.ct_state().min_valid.keys().cloned().collect();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(store_error)?;
        for table in &tables {
            self.conn
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE \"SYS_CHANGE_VERSION\" <= ?1",
                        translate::q(&catalog::change_table_name(table))
                    ),
                    [current],
                )
                .map_err(store_error)?;
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO __sim_ct (name, value) VALUES (?1, ?2)",
                    rusqlite::params![format!("min:{table}"), current],
                )
                .map_err(store_error)?;
        }
        self.conn.execute_batch("COMMIT").map_err(store_error)?;
        let mut state = db.ct_state();
        for table in tables {
            state.min_valid.insert(table, current);
        }
        Ok(())
    }

    /// Runs a batch (or the statement of an RPC) and returns the response tokens and the first
    /// error.
    pub fn run(&mut self, sql: &str, params: &[Param], mode: Mode) -> (Tokens, Option<SqlError>) {
        let mut out = Tokens::default();
        let inner = if mode == Mode::Rpc {
            DoneKind::InProc
        } else {
            DoneKind::Done
        };
        let mut first_error = None;
        let statements = match translate::tokenize(sql) {
            Ok(tokens) => translate::split(tokens),
            Err(e) => {
                out.error(e.number, e.state, e.class, &e.message);
                first_error = Some(e);
                Vec::new()
            }
        };
        let declared: Vec<(String, SqlType)> = params
            .iter()
            .map(|p| (p.name.clone(), p.ty.unwrap_or(SqlType::Int)))
            .collect();
        let count = statements.len();
        let mut failed_last = first_error.is_some();
        self.interrupted = false;
        for (i, stmt) in statements.iter().enumerate() {
            let more = if i + 1 < count || mode == Mode::Rpc {
                DONE_MORE
            } else {
                0
            };
            let outcome = if self.cancel.is_set() {
                Err(SqlError::new(CANCELLED, 0, 0, "cancelled"))
            } else {
                self.statement_waiting(stmt, params, &declared, &mut out)
            };
            if let Err(e) = &outcome
                && e.number == CANCELLED
            {
                // ATTENTION: the statement is undone; the transaction stays open unless
                // XACT_ABORT is ON. The connection answers DONE with DONE_ATTN.
                self.interrupted = true;
                if self.trancount > 0 && self.xact_abort {
                    self.end_transaction(false, &mut out);
                }
                if self.trancount == 0 {
                    self.db.release(self.id);
                }
                return (out, first_error);
            }
            match outcome {
                Ok(rows) => {
                    failed_last = false;
                    let (status, n) = match rows {
                        Some(n) if !self.nocount => (DONE_COUNT, n),
                        _ => (0, 0),
                    };
                    out.done(inner, more | status, n);
                }
                Err(e) => {
                    failed_last = true;
                    out.error(e.number, e.state, e.class, &e.message);
                    let abort = !STATEMENT_LEVEL.contains(&e.number);
                    if self.trancount > 0 && self.xact_abort {
                        self.end_transaction(false, &mut out);
                    }
                    first_error.get_or_insert(e);
                    if abort || i + 1 == count {
                        out.done(
                            inner,
                            if mode == Mode::Rpc {
                                DONE_MORE | DONE_ERROR
                            } else {
                                DONE_ERROR
                            },
                            0,
                        );
                        break;
                    }
                    out.done(inner, more | DONE_ERROR, 0);
                }
            }
            if self.trancount == 0 {
                self.db.release(self.id);
            }
        }
        match mode {
            Mode::Batch if count == 0 => {
                out.done(DoneKind::Done, if failed_last { DONE_ERROR } else { 0 }, 0)
            }
            Mode::Batch => {}
            Mode::Rpc => {
                if count == 0 && failed_last {
                    out.done(DoneKind::InProc, DONE_MORE | DONE_ERROR, 0);
                }
                out.return_status(0);
                out.done(DoneKind::Proc, if failed_last { DONE_ERROR } else { 0 }, 0);
            }
        }
        (out, first_error)
    }

    /// Transaction-manager request: begin (true) or end (commit/rollback).
    pub fn transaction_request(&mut self, kind: TmRequest) -> Tokens {
        let mut out = Tokens::default();
        let result = match kind {
            TmRequest::Begin => self.begin(&mut out),
            TmRequest::Commit => self.commit(&mut out),
            TmRequest::Rollback => self.rollback(&mut out),
        };
        match result {
            Ok(()) => out.done(DoneKind::Done, 0, 0),
            Err(e) => {
                out.error(e.number, e.state, e.class, &e.message);
                out.done(DoneKind::Done, DONE_ERROR, 0);
            }
        }
        out
    }

    fn context(&self, declared: &[(String, SqlType)]) -> Context {
        Context {
            trancount: self.trancount,
            min_active_rowversion: self.db.min_active_rowversion(),
            dbts: self.db.dbts(),
            scope_identity: self.scope_identity,
            rowcount: self.rowcount,
            spid: self.spid,
            params: declared.to_vec(),
        }
    }

    /// Runs one statement, waiting for (and then retrying after) rows another session holds;
    /// the wait ends in 1222 at `SET LOCK_TIMEOUT`, in 1205 when it closes a cycle of waiting
    /// sessions (this one's transaction rolled back), or at a cancel.
    fn statement_waiting(
        &mut self,
        tokens: &[translate::Tok],
        params: &[Param],
        declared: &[(String, SqlType)],
        out: &mut Tokens,
    ) -> Result<Option<u64>, SqlError> {
        let mark = out.buf.len();
        loop {
            match self.statement(tokens, params, declared, out) {
                Err(e) if e.number == BLOCKED => {
                    out.buf.truncate(mark);
                    let Some(awaited) = self.capture().blocked.take() else {
                        return Err(SqlError::unsupported("a lost lock wait"));
                    };
                    let db = Arc::clone(&self.db);
                    match db
                        .locks
                        .wait(self.id, &awaited, self.lock_timeout, &self.cancel)
                    {
                        Wait::Released => continue,
                        Wait::TimedOut => {
                            return Err(SqlError::new(
                                1222,
                                51,
                                16,
                                "Lock request time out period exceeded.",
                            ));
                        }
                        Wait::Cancelled => return Err(SqlError::new(CANCELLED, 0, 0, "cancelled")),
                        Wait::Deadlock => {
                            if self.trancount > 0 {
                                self.end_transaction(false, out);
                            }
                            return Err(self.deadlock_victim());
                        }
                    }
                }
                other => return other,
            }
        }
    }

    fn deadlock_victim(&self) -> SqlError {
        SqlError::new(
            1205,
            45,
            13,
            format!(
                "Transaction (Process ID {}) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.",
                self.spid
            ),
        )
    }

    /// Runs one statement; `Ok(Some(n))` when it reports a row count.
    fn statement(
        &mut self,
        tokens: &[translate::Tok],
        params: &[Param],
        declared: &[(String, SqlType)],
        out: &mut Tokens,
    ) -> Result<Option<u64>, SqlError> {
        let ctx = self.context(declared);
        let stmt = translate::translate(tokens, &self.db.catalog(), &ctx)?;
        self.execute(stmt, params, out)
    }

    fn execute(
        &mut self,
        stmt: Statement,
        params: &[Param],
        out: &mut Tokens,
    ) -> Result<Option<u64>, SqlError> {
        match stmt {
            Statement::Begin => self.begin(out).map(|_| None),
            Statement::Commit => self.commit(out).map(|_| None),
            Statement::Rollback => self.rollback(out).map(|_| None),
            Statement::NoCount(v) => {
                self.nocount = v;
                Ok(None)
            }
            Statement::XactAbort(v) => {
                self.xact_abort = v;
                Ok(None)
            }
            Statement::Ignored => Ok(None),
            Statement::Use(name) => {
                if !name.eq_ignore_ascii_case(&self.db.name) {
                    return Err(no_such_database(&name));
                }
                let db = self.db.name.clone();
                out.env_change_text(1, &db, &db);
                out.info(5701, &format!("Changed database context to '{db}'."));
                Ok(None)
            }
            Statement::Query {
                sql,
                items,
                names,
                write,
                dml,
            } => {
                if write {
                    self.deadlock_check(out)?;
                }
                let read = (!write).then_some(sql.as_str());
                let n = self.in_store(read, |s| s.query(&sql, params, &items, &names, out))?;
                self.rowcount = n;
                if dml && sql.starts_with("INSERT") {
                    self.scope_identity = Some(self.conn.last_insert_rowid());
                }
                Ok(Some(n))
            }
            Statement::Dml { sql, table } => {
                self.deadlock_check(out)?;
                let n = self.in_store(None, |s| {
                    let mut stmt = s.conn.prepare(&sql).map_err(|e| s.map_error(e, &sql))?;
                    bind(&mut stmt, params)?;
                    Ok(stmt.raw_execute().map_err(|e| s.map_error(e, &sql))? as u64)
                })?;
                self.rowcount = n;
                if sql.starts_with("INSERT")
                    && self
                        .db
                        .catalog()
                        .table(&table)
                        .is_some_and(|t| t.columns.iter().any(|c| c.identity))
                {
                    self.scope_identity = Some(self.conn.last_insert_rowid());
                }
                Ok(Some(n))
            }
            Statement::CreateTable { sql, table } => {
                self.refuse_ddl_in_transaction("CREATE TABLE")?;
                if self.db.catalog().table(&table.name).is_some() {
                    return Err(SqlError::new(
                        2714,
                        6,
                        16,
                        format!(
                            "There is already an object named '{}' in the database.",
                            table.display
                        ),
                    ));
                }
                self.in_store(None, |s| {
                    for statement in &sql {
                        s.conn
                            .execute_batch(statement)
                            .map_err(|e| s.map_error(e, statement))?;
                    }
                    s.save_table(&table)?;
                    // Under the statement mutex: no session runs a statement on the new table
                    // before its capture triggers can exist.
                    s.db.catalog_mut().insert(table.clone());
                    s.db.generation.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })?;
                Ok(None)
            }
            Statement::CreateIndex {
                sql,
                table,
                name,
                columns,
                unique,
            } => {
                self.refuse_ddl_in_transaction("CREATE INDEX")?;
                let updated = self.db.catalog().table(&table).map(|t| {
                    let mut t = t.clone();
                    t.unique.push((name, columns, true));
                    t
                });
                self.in_store(None, |s| {
                    s.wait_for_table(&table)?;
                    s.conn
                        .execute_batch(&sql)
                        .map_err(|e| s.map_error(e, &sql))?;
                    match &updated {
                        Some(t) if unique => s.save_table(t),
                        _ => Ok(()),
                    }
                })?;
                if unique && let Some(t) = updated {
                    self.db.catalog_mut().insert(t);
                }
                Ok(None)
            }
            Statement::DropTable { sql, table } => {
                self.refuse_ddl_in_transaction("DROP TABLE")?;
                self.in_store(None, |s| {
                    s.wait_for_table(&table)?;
                    s.conn
                        .execute_batch(&sql)
                        .map_err(|e| s.map_error(e, &sql))?;
                    // With change tracking: its change table and minimum valid version too.
                    let side = catalog::change_table_name(&table);
                    if s.db.catalog().table(&side).is_some() {
                        s.conn
                            .execute_batch(&format!("DROP TABLE IF EXISTS {}", translate::q(&side)))
                            .map_err(|e| s.map_error(e, &sql))?;
                        s.conn
                            .execute(
                                "DELETE FROM __sim_ct WHERE name = ?1",
                                [format!("min:{table}")],
                            )
                            .map_err(|e| s.map_error(e, &sql))?;
                        s.db.ct_state().min_valid.remove(&table);
                    }
                    for name in [&table, &side] {
                        s.conn
                            .execute("DELETE FROM __sim_catalog WHERE name = ?1", [name])
                            .map_err(|e| s.map_error(e, &sql))?;
                        s.db.catalog_mut().remove(name);
                    }
                    s.db.generation.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })?;
                Ok(None)
            }
            Statement::EnableDatabaseTracking { database } => {
                if !(database.eq_ignore_ascii_case(&self.db.name)
                    || database.eq_ignore_ascii_case("CURRENT"))
                {
                    return Err(no_such_database(&database));
                }
                self.refuse_ddl_in_transaction("ALTER DATABASE")?;
                if self.db.ct_state().enabled {
                    return Err(SqlError::new(
                        5088,
                        1,
                        16,
                        format!(
                            "Change tracking is already enabled for database '{}'.",
                            self.db.name
                        ),
                    ));
                }
                self.in_store(None, |s| {
                    s.conn
                        .execute(
                            "INSERT OR REPLACE INTO __sim_ct (name, value) VALUES ('enabled', 1)",
                            [],
                        )
                        .map_err(|e| s.map_error(e, "ALTER DATABASE"))?;
                    Ok(())
                })?;
                self.db.ct_state().enabled = true;
                Ok(None)
            }
            Statement::EnableTableTracking { table } => {
                self.refuse_ddl_in_transaction("ALTER TABLE")?;
                self.enable_tracking(&table)?;
                Ok(None)
            }
            Statement::WithContext { context, inner } => {
                let value = match context {
                    ContextValue::Null => None,
                    ContextValue::Bytes(b) => Some(b),
                    ContextValue::Param(name) => {
                        match params.iter().find(|p| p.name.eq_ignore_ascii_case(&name)) {
                            Some(Param {
                                value: Value::Bytes(b),
                                ..
                            }) if b.len() <= 128 => Some(b.clone()),
                            Some(Param {
                                value: Value::Null, ..
                            }) => None,
                            Some(_) => {
                                return Err(SqlError::new(
                                    206,
                                    2,
                                    16,
                                    "Operand type clash: the change tracking context must be varbinary(128).",
                                ));
                            }
                            None => {
                                return Err(SqlError::new(
                                    137,
                                    2,
                                    15,
                                    format!("Must declare the scalar variable \"{name}\"."),
                                ));
                            }
                        }
                    }
                };
                *self.ct.context.lock().unwrap_or_else(|p| p.into_inner()) = value;
                let result = self.execute(*inner, params, out);
                *self.ct.context.lock().unwrap_or_else(|p| p.into_inner()) = None;
                result
            }
            Statement::LockTimeout(ms) => {
                self.lock_timeout = u64::try_from(ms).ok().map(Duration::from_millis);
                Ok(None)
            }
        }
    }

    /// `ALTER TABLE … ENABLE CHANGE_TRACKING`: the change table, the triggers that record each
    /// change as uncommitted (version NULL, this session's `__tx`), and the table's minimum valid
    /// version (the current one).
    fn enable_tracking(&mut self, name: &str) -> Result<(), SqlError> {
        let table =
            self.db.catalog().table(name).cloned().ok_or_else(|| {
                SqlError::new(208, 1, 16, format!("Invalid object name '{name}'."))
            })?;
        let enabled = self.db.ct_state().enabled;
        if !enabled {
            return Err(SqlError::new(
                4996,
                1,
                16,
                format!(
                    "Change tracking must be enabled on database '{}' before it can be enabled on table '{}'.",
                    self.db.name, table.display
                ),
            ));
        }
        if table.primary_key.is_empty() {
            return Err(SqlError::new(
                4997,
                1,
                16,
                format!(
                    "Cannot enable change tracking on table '{}'. Change tracking requires a primary key on the table. Create a primary key on the table before enabling change tracking.",
                    table.display
                ),
            ));
        }
        if self.db.catalog().change_table(&table.name).is_some() {
            return Err(SqlError::new(
                4999,
                1,
                16,
                format!(
                    "Change tracking is already enabled for table '{}'.",
                    table.display
                ),
            ));
        }
        let side = catalog::change_table_def(&table);
        self.in_store(None, |s| {
            s.wait_for_table(&table.name)?;
            for sql in change_tracking_ddl(&table, &side) {
                s.conn
                    .execute_batch(&sql)
                    .map_err(|e| s.map_error(e, &sql))?;
            }
            s.save_table(&side)?;
            let current = s.db.ct_state().committed;
            s.conn
                .execute(
                    "INSERT OR REPLACE INTO __sim_ct (name, value) VALUES (?1, ?2)",
                    rusqlite::params![format!("min:{}", table.name), current],
                )
                .map_err(|e| s.map_error(e, "ALTER TABLE"))?;
            s.db.catalog_mut().insert(side.clone());
            s.db.ct_state()
                .min_valid
                .insert(table.name.clone(), current);
            s.db.generation.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    /// DDL is not logged for undo: inside a user transaction it is refused, never pretended.
    fn refuse_ddl_in_transaction(&self, what: &str) -> Result<(), SqlError> {
        if self.trancount > 0 {
            return Err(SqlError::unsupported(format!(
                "{what} inside a transaction"
            )));
        }
        Ok(())
    }

    /// DDL on a table waits for every other session's rows in it (SQL Server's schema lock).
    fn wait_for_table(&self, table: &str) -> Result<(), SqlError> {
        if let Some(holder) = self.db.locks.table_holder(table, self.id) {
            self.capture().blocked = Some(Awaited::Table {
                table: table.to_string(),
                holder,
            });
            return Err(SqlError::new(BLOCKED, 0, 0, "blocked"));
        }
        Ok(())
    }

    fn save_table(&self, table: &TableDef) -> Result<(), SqlError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO __sim_catalog (name, def) VALUES (?1, ?2)",
                [&table.name, &table.to_json().to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.map_error(e, "catalog"))
    }

    fn deadlock_check(&mut self, out: &mut Tokens) -> Result<(), SqlError> {
        if self.db.take_deadlock() {
            if self.trancount > 0 {
                self.end_transaction(false, out);
            }
            return Err(self.deadlock_victim());
        }
        Ok(())
    }

    fn query(
        &self,
        sql: &str,
        params: &[Param],
        items: &[ItemType],
        names: &[Option<String>],
        out: &mut Tokens,
    ) -> Result<u64, SqlError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.map_error(e, sql))?;
        bind(&mut stmt, params)?;
        let n = stmt.column_count();
        // With one `*` among the items, the columns before and after its expansion keep their
        // items' types.
        let star = items.iter().position(|i| *i == ItemType::Star);
        let stars = items.iter().filter(|i| **i == ItemType::Star).count();
        let item_of = |column: usize| -> Option<usize> {
            match star {
                None => Some(column),
                Some(at) if stars == 1 => {
                    let after = items.len() - at - 1;
                    if column < at {
                        Some(column)
                    } else if column + after >= n {
                        (items.len() + column).checked_sub(n)
                    } else {
                        None
                    }
                }
                Some(_) => None,
            }
        };
        let mut columns = Vec::with_capacity(n);
        {
            let catalog = self.db.catalog();
            for i in 0..n {
                let origin = stmt.column_metadata(i).ok().flatten().map(|m| {
                    (
                        m.1.to_string_lossy().into_owned(),
                        m.2.to_string_lossy().into_owned(),
                    )
                });
                let sqlite_name = stmt.column_name(i).map(str::to_string).unwrap_or_default();
                let index = item_of(i);
                let item = index.and_then(|k| items.get(k));
                let from_catalog = origin.as_ref().and_then(|(t, c)| {
                    catalog
                        .table(t)
                        .and_then(|t| t.column(c))
                        .map(|c| (c.name.clone(), c.ty, c.nullable))
                });
                let (name, ty, nullable) = match (item, from_catalog) {
                    (Some(ItemType::Known(t)), _) => (
                        index
                            .and_then(|k| names.get(k))
                            .cloned()
                            .flatten()
                            .unwrap_or_default(),
                        *t,
                        true,
                    ),
                    // The name as the query spells it (or as declared, for `*`), like SQL Server.
                    (_, Some((_, ty, nullable))) => (sqlite_name, ty, nullable),
                    (Some(ItemType::Unknown(e)), None) => {
                        return Err(SqlError::unsupported(format!(
                            "a result column whose SQL Server type it cannot determine (`{e}`)"
                        )));
                    }
                    _ => {
                        return Err(SqlError::unsupported(format!(
                            "a result column whose SQL Server type it cannot determine (`{sqlite_name}`)"
                        )));
                    }
                };
                columns.push((name, ty, nullable));
            }
        }
        let types_only: Vec<SqlType> = columns.iter().map(|c| c.1).collect();
        let mark = out.buf.len();
        out.col_metadata(&columns);
        let mut rows = stmt.raw_query();
        let mut count = 0u64;
        let mut values = Vec::with_capacity(n);
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    out.buf.truncate(mark);
                    return Err(self.map_error(e, sql));
                }
            };
            values.clear();
            for i in 0..n {
                values.push(match row.get_ref(i) {
                    Ok(v) => from_sqlite(v),
                    Err(e) => return Err(self.map_error(e, sql)),
                });
            }
            if let Err(types::Conversion(message)) = out.row(&types_only, &values) {
                out.buf.truncate(mark);
                return Err(SqlError::new(245, 1, 16, message));
            }
            count += 1;
        }
        Ok(count)
    }

    /// BEGIN TRANSACTION takes no lock: rows are locked as the transaction changes them.
    fn begin(&mut self, out: &mut Tokens) -> Result<(), SqlError> {
        if self.trancount == 0 {
            self.descriptor = self.db.next_descriptor.fetch_add(1, Ordering::SeqCst);
            out.env_change_bytes(8, &self.descriptor.to_le_bytes(), &[]);
        }
        self.trancount += 1;
        Ok(())
    }

    fn commit(&mut self, out: &mut Tokens) -> Result<(), SqlError> {
        match self.trancount {
            0 => Err(SqlError::new(
                3902,
                1,
                16,
                "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            )),
            1 => {
                self.forget_undo()?;
                self.end_transaction(true, out);
                Ok(())
            }
            _ => {
                self.trancount -= 1;
                Ok(())
            }
        }
    }

    fn rollback(&mut self, out: &mut Tokens) -> Result<(), SqlError> {
        if self.trancount == 0 {
            return Err(SqlError::new(
                3903,
                1,
                16,
                "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ));
        }
        self.end_transaction(false, out);
        Ok(())
    }

    /// Ends the open transaction (its undo log already dropped when committed, applied here
    /// otherwise) and tells the client with ENVCHANGE 9/10.
    fn end_transaction(&mut self, committed: bool, out: &mut Tokens) {
        self.ct.pending.store(false, Ordering::SeqCst);
        if !committed {
            self.undo();
        }
        out.env_change_bytes(
            if committed { 9 } else { 10 },
            &[],
            &self.descriptor.to_le_bytes(),
        );
        self.trancount = 0;
        self.descriptor = 0;
        self.db.release(self.id);
    }

    fn map_error(&self, e: rusqlite::Error, sql: &str) -> SqlError {
        map_error(e, &self.db.catalog(), &self.db.name, sql)
    }
}

/// Whose undo log [`restore`] applies.
#[derive(Debug, Clone, Copy)]
enum Undo {
    /// Every session's (recovery at open), deleting the log.
    All,
    /// One session's (its rollback), deleting its log.
    Session(u64),
    /// Every other session's, keeping the log (a snapshot reader's view, rolled back after).
    Others(u64),
}

/// Puts the before-images of the undo log back, newest first.
fn restore(conn: &Connection, undo: Undo) -> rusqlite::Result<()> {
    let (filter, id) = match undo {
        Undo::All => ("1 = 1 OR ?1 IS NULL", 0),
        Undo::Session(id) => ("session = ?1", id as i64),
        Undo::Others(id) => ("session <> ?1", id as i64),
    };
    let entries: Vec<(String, i64, Option<String>)> = {
        let mut stmt = conn.prepare(&format!(
            "SELECT tbl, rid, image FROM __sim_undo WHERE {filter} ORDER BY seq DESC"
        ))?;
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (table, rowid, image) in entries {
        let exists: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = ?1",
            [&table],
            |r| r.get(0),
        )?;
        if !exists {
            continue;
        }
        let t = translate::q(&table);
        let Some(image) = image else {
            conn.execute(&format!("DELETE FROM main.{t} WHERE rowid = ?1"), [rowid])?;
            continue;
        };
        let values = decode_image(&image);
        let names: Vec<String> = values.iter().map(|(n, _)| translate::q(n)).collect();
        let mut bound: Vec<SqliteValue> = values.into_iter().map(|(_, v)| v).collect();
        let sets: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} = ?{}", i + 2))
            .collect();
        let mut args = vec![SqliteValue::Integer(rowid)];
        args.append(&mut bound);
        let changed = if sets.is_empty() {
            0
        } else {
            conn.execute(
                &format!("UPDATE main.{t} SET {} WHERE rowid = ?1", sets.join(", ")),
                rusqlite::params_from_iter(args.iter()),
            )?
        };
        if changed == 0 {
            let marks: Vec<String> = (0..=names.len()).map(|i| format!("?{}", i + 1)).collect();
            let alias = rowid_alias(conn, &table)?;
            let (cols, marks) = match alias {
                // The INTEGER PRIMARY KEY column is the rowid: it carries the value itself.
                Some(_) => (names.join(", "), marks[..names.len()].join(", ")),
                None => (
                    std::iter::once("rowid".to_string())
                        .chain(names.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(", "),
                    marks.join(", "),
                ),
            };
            let args: Vec<&SqliteValue> = match alias {
                Some(_) => args[1..].iter().collect(),
                None => args.iter().collect(),
            };
            conn.execute(
                &format!("INSERT INTO main.{t} ({cols}) VALUES ({marks})"),
                rusqlite::params_from_iter(args),
            )?;
        }
    }
    if !matches!(undo, Undo::Others(_)) {
        conn.execute(&format!("DELETE FROM __sim_undo WHERE {filter}"), [id])?;
    }
    Ok(())
}

/// The column that is the rowid (a lone INTEGER PRIMARY KEY), if any.
fn rowid_alias(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    let columns = table_columns(conn, table)?;
    let keys: Vec<&(String, String, i64)> = columns.iter().filter(|c| c.2 > 0).collect();
    Ok(match keys.as_slice() {
        [(name, ty, _)] if ty.eq_ignore_ascii_case("INTEGER") => Some(name.clone()),
        _ => None,
    })
}

/// The store's columns of a table: name, declared type, position in the primary key.
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare(&format!("PRAGMA main.table_info({})", translate::q(table)))?;
    stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(5)?)))?
        .collect()
}

/// A row image as the undo log keeps it: `[[column, value], …]`, values tagged by store type.
fn encode_image(pairs: &[(String, SqliteValue)]) -> String {
    let items: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(name, v)| {
            let value = match v {
                SqliteValue::Null => serde_json::Value::Null,
                SqliteValue::Integer(n) => serde_json::json!({ "i": n }),
                SqliteValue::Real(f) => serde_json::json!({ "r": f }),
                SqliteValue::Text(t) => serde_json::json!({ "t": t }),
                SqliteValue::Blob(b) => serde_json::json!({ "b": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
            };
            serde_json::json!([name, value])
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn decode_image(text: &str) -> Vec<(String, SqliteValue)> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let name = item.get(0)?.as_str()?.to_string();
            let v = item.get(1)?;
            let value = if let Some(n) = v.get("i").and_then(serde_json::Value::as_i64) {
                SqliteValue::Integer(n)
            } else if let Some(f) = v.get("r").and_then(serde_json::Value::as_f64) {
                SqliteValue::Real(f)
            } else if let Some(t) = v.get("t").and_then(serde_json::Value::as_str) {
                SqliteValue::Text(t.to_string())
            } else if let Some(b) = v.get("b").and_then(serde_json::Value::as_str) {
                SqliteValue::Blob(
                    (0..b.len() / 2)
                        .filter_map(|i| u8::from_str_radix(b.get(2 * i..2 * i + 2)?, 16).ok())
                        .collect(),
                )
            } else {
                SqliteValue::Null
            };
            Some((name, value))
        })
        .collect()
}

/// What a session's capture triggers share with it: whether changes are captured, the rows the
/// running statement locked, and the row it found held by another session.
#[derive(Debug, Default)]
struct Capture {
    enabled: bool,
    /// @@TRANCOUNT > 0: changed rows are locked and their before-images logged.
    in_transaction: bool,
    pending: Vec<(String, i64)>,
    blocked: Option<Awaited>,
}

/// Transaction-manager request kinds the simulator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmRequest {
    Begin,
    Commit,
    Rollback,
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Param]) -> Result<(), SqlError> {
    for p in params {
        if let Ok(Some(index)) = stmt.parameter_index(&p.name) {
            let value = match &p.value {
                Value::Null => SqliteValue::Null,
                Value::Int(n) => SqliteValue::Integer(*n),
                Value::Float(f) => SqliteValue::Real(*f),
                Value::Text(t) => SqliteValue::Text(t.clone()),
                Value::Bytes(b) => SqliteValue::Blob(b.clone()),
            };
            stmt.raw_bind_parameter(index, value).map_err(|_| {
                SqlError::new(
                    8178,
                    1,
                    16,
                    format!(
                        "The parameterized query expects the parameter '{}', which was not supplied.",
                        p.name
                    ),
                )
            })?;
        }
    }
    Ok(())
}

fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

fn to_sqlite(v: Value) -> SqliteValue {
    match v {
        Value::Null => SqliteValue::Null,
        Value::Int(n) => SqliteValue::Integer(n),
        Value::Float(f) => SqliteValue::Real(f),
        Value::Text(t) => SqliteValue::Text(t),
        Value::Bytes(b) => SqliteValue::Blob(b),
    }
}

/// SQLite passes a function's error back as text only: the SQL Server error travels encoded in
/// it and `map_error` decodes it.
const UDF_ERROR_PREFIX: &str = "\u{1}sim-error:";

#[derive(Debug)]
struct UdfError(SqlError);

impl std::fmt::Display for UdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{UDF_ERROR_PREFIX}{}:{}:{}:{}",
            self.0.number, self.0.state, self.0.class, self.0.message
        )
    }
}

impl std::error::Error for UdfError {}

fn decode_udf_error(text: &str) -> Option<SqlError> {
    let rest = &text[text.find(UDF_ERROR_PREFIX)? + UDF_ERROR_PREFIX.len()..];
    let mut parts = rest.splitn(4, ':');
    let number = parts.next()?.parse().ok()?;
    let state = parts.next()?.parse().ok()?;
    let class = parts.next()?.parse().ok()?;
    Some(SqlError::new(number, state, class, parts.next()?))
}

fn udf_error(e: SqlError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(UdfError(e)))
}

/// The store's collations: SQL Server's Latin1_General_CI_AS for text, and decimals kept as
/// canonical text compared by value, never as floats.
fn register_collations(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_collation("TSQL_CI", types::compare_ci_as)?;
    conn.create_collation("TSQL_DECIMAL", |a, b| {
        types::compare_decimal(a, b).unwrap_or_else(|| types::compare_ci_as(a, b))
    })
}

/// Error 911 for a database this instance does not have.
fn no_such_database(name: &str) -> SqlError {
    SqlError::new(
        911,
        1,
        16,
        format!("Database '{name}' does not exist. Make sure that the name is entered correctly."),
    )
}

/// The change table and triggers of a table with change tracking: each insert, update and
/// delete of a statement records the key's last change as uncommitted (version NULL) for the
/// session (`__ct_on()`: not while a rollback or a snapshot read puts rows back); a key update
/// is a delete of the old key and an insert of the new one, as in SQL Server.
fn change_tracking_ddl(table: &TableDef, side: &TableDef) -> Vec<String> {
    let q = translate::q;
    let key_columns: Vec<_> = table
        .primary_key
        .iter()
        .filter_map(|k| table.column(k))
        .collect();
    let keys: Vec<String> = key_columns.iter().map(|c| q(&c.name)).collect();
    let key_defs: Vec<String> = key_columns
        .iter()
        .map(|c| format!("{} {} NOT NULL", q(&c.name), translate::store_type(c.ty)))
        .collect();
    let side_name = q(&side.name);
    let main = q(&table.name);
    let record = |row: &str, op: &str| {
        let values: Vec<String> = keys.iter().map(|k| format!("{row}.{k}")).collect();
        let (flag, set_flag) = match op {
            "I" => (1, ", __insert = 1"),
            "D" => (0, ", __insert = 0"),
            _ => (0, ""),
        };
        format!(
            "INSERT INTO {side_name} ({keys}, \"SYS_CHANGE_VERSION\", \"SYS_CHANGE_OPERATION\", \
             \"SYS_CHANGE_CONTEXT\", __tx, __insert) VALUES ({values}, NULL, '{op}', __ct_context(), \
             __ct_tx(), {flag}) ON CONFLICT ({keys}) DO UPDATE SET \"SYS_CHANGE_VERSION\" = NULL, \
             \"SYS_CHANGE_OPERATION\" = '{op}', \"SYS_CHANGE_CONTEXT\" = excluded.\"SYS_CHANGE_CONTEXT\", \
             __tx = excluded.__tx{set_flag};",
            keys = keys.join(", "),
            values = values.join(", "),
        )
    };
    let same_key: Vec<String> = keys.iter().map(|k| format!("OLD.{k} IS NEW.{k}")).collect();
    let same_key = same_key.join(" AND ");
    let trigger = |suffix: &str| q(&format!("{}_{suffix}", side.name));
    vec![
        format!(
            "CREATE TABLE {side_name} ({}, \"SYS_CHANGE_VERSION\" BIGINT, \
             \"SYS_CHANGE_CREATION_VERSION\" BIGINT, \"SYS_CHANGE_OPERATION\" NCHAR(1) NOT NULL, \
             \"SYS_CHANGE_COLUMNS\" VARBINARY(4100), \"SYS_CHANGE_CONTEXT\" VARBINARY(128), \
             __tx BIGINT, __insert BIT NOT NULL DEFAULT 0, PRIMARY KEY ({}))",
            key_defs.join(", "),
            keys.join(", ")
        ),
        format!(
            "CREATE TRIGGER {} AFTER INSERT ON {main} WHEN __ct_on() BEGIN {} END",
            trigger("i"),
            record("NEW", "I")
        ),
        format!(
            "CREATE TRIGGER {} AFTER UPDATE ON {main} WHEN __ct_on() AND ({same_key}) BEGIN {} END",
            trigger("u"),
            record("NEW", "U")
        ),
        format!(
            "CREATE TRIGGER {} AFTER UPDATE ON {main} WHEN __ct_on() AND NOT ({same_key}) BEGIN {} {} END",
            trigger("k"),
            record("OLD", "D"),
            record("NEW", "I")
        ),
        format!(
            "CREATE TRIGGER {} AFTER DELETE ON {main} WHEN __ct_on() BEGIN {} END",
            trigger("d"),
            record("OLD", "D")
        ),
    ]
}

fn register_functions(
    conn: &Connection,
    db: &Arc<Db>,
    session: u64,
    capture: &Arc<Mutex<Capture>>,
    ct: &Arc<CtSession>,
) -> rusqlite::Result<()> {
    let ct_db = Arc::clone(db);
    conn.create_scalar_function("__ct_current", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(ct_db.ct_current())
    })?;
    let ct_db = Arc::clone(db);
    conn.create_scalar_function(
        "__ct_min_valid",
        1,
        FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(id) => ct_db.ct_min_valid(id),
                _ => None,
            })
        },
    )?;
    let ct_db = Arc::clone(db);
    conn.create_scalar_function("__object_id", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let ValueRef::Text(text) = ctx.get_raw(0) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(text);
        let parts: Vec<String> = text
            .split('.')
            .map(|p| {
                p.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .collect();
        Ok(translate::table_name(&parts)
            .ok()
            .filter(|name| ct_db.catalog().table(name).is_some())
            .map(|name| object_id(&name)))
    })?;
    // Change tracking records a statement's changes, not a rollback's or a snapshot's.
    let state = Arc::clone(capture);
    conn.create_scalar_function("__ct_on", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(state.lock().unwrap_or_else(|p| p.into_inner()).enabled)
    })?;
    let context = Arc::clone(ct);
    conn.create_scalar_function("__ct_context", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(context
            .context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    })?;
    let pending = Arc::clone(ct);
    conn.create_scalar_function("__ct_tx", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        pending.pending.store(true, Ordering::SeqCst);
        Ok(session as i64)
    })?;
    // The capture triggers' gate: a row another session holds fails the statement (the engine
    // waits and retries); in a transaction, a row changed for the first time is locked and its
    // before-image logged (1).
    let lock_db = Arc::clone(db);
    let state = Arc::clone(capture);
    conn.create_scalar_function("__capture", 2, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let table: String = ctx.get(0)?;
        let rowid: i64 = ctx.get(1)?;
        let mut c = state.lock().unwrap_or_else(|p| p.into_inner());
        if !c.enabled {
            return Ok(0);
        }
        let locked = if c.in_transaction {
            lock_db.locks.lock(&table, rowid, session)
        } else {
            lock_db
                .locks
                .holder(&table, rowid, session)
                .map_or(Ok(false), Err)
        };
        match locked {
            Ok(true) => {
                c.pending.push((table, rowid));
                Ok(1)
            }
            Ok(false) => Ok(0),
            Err(holder) => {
                c.blocked = Some(Awaited::Row {
                    table,
                    rowid,
                    holder,
                });
                Err(udf_error(SqlError::new(BLOCKED, 0, 0, "blocked")))
            }
        }
    })?;
    let state = Arc::clone(capture);
    conn.create_scalar_function("__deleted_by", 3, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let mut c = state.lock().unwrap_or_else(|p| p.into_inner());
        if !c.enabled {
            return Ok(0);
        }
        c.blocked = Some(Awaited::Row {
            table: ctx.get(0)?,
            rowid: ctx.get(1)?,
            holder: ctx.get::<i64>(2)? as u64,
        });
        Err(udf_error(SqlError::new(BLOCKED, 0, 0, "blocked")))
    })?;
    conn.create_scalar_function("__image", -1, FunctionFlags::SQLITE_UTF8, |ctx| {
        let mut pairs = Vec::with_capacity(ctx.len() / 2);
        for i in (0..ctx.len().saturating_sub(1)).step_by(2) {
            let name: String = ctx.get(i)?;
            pairs.push((name, ctx.get::<SqliteValue>(i + 1)?));
        }
        Ok(encode_image(&pairs))
    })?;
    register_collations(conn)?;
    let rv_db = Arc::clone(db);
    conn.create_scalar_function("__next_rv", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(rv_db.next_rv(session))
    })?;
    let deterministic = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let db_name = db.name.clone();
    conn.create_scalar_function("__store", 4, deterministic, move |ctx| {
        let value = from_sqlite(ctx.get_raw(0));
        let ty: String = ctx.get(1)?;
        let table: String = ctx.get(2)?;
        let column: String = ctx.get(3)?;
        let ty = SqlType::parse(&ty).ok_or_else(|| udf_error(SqlError::unsupported(ty)))?;
        convert(value, &ty, Some((&format!("{db_name}.{table}"), &column)))
            .map(to_sqlite)
            .map_err(udf_error)
    })?;
    conn.create_scalar_function("__cast", 2, deterministic, |ctx| {
        let value = from_sqlite(ctx.get_raw(0));
        let ty: String = ctx.get(1)?;
        let ty = SqlType::parse(&ty).ok_or_else(|| udf_error(SqlError::unsupported(ty)))?;
        convert(value, &ty, None).map(to_sqlite).map_err(udf_error)
    })?;
    // T-SQL LIKE under the column collation (SQLite's own is ASCII-only and has no `[…]`).
    for arity in [2, 3] {
        conn.create_scalar_function("like", arity, deterministic, |ctx| {
            let pattern = from_sqlite(ctx.get_raw(0));
            let value = from_sqlite(ctx.get_raw(1));
            if pattern == Value::Null || value == Value::Null {
                return Ok(None);
            }
            let escape = if ctx.len() == 3 {
                match from_sqlite(ctx.get_raw(2)) {
                    Value::Null => return Ok(None),
                    v => {
                        let text = types::as_text(&v);
                        let mut chars = text.chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) => Some(c),
                            _ => {
                                return Err(udf_error(SqlError::new(
                                    506,
                                    1,
                                    16,
                                    format!(
                                        "The invalid escape character \"{text}\" was specified in a LIKE predicate."
                                    ),
                                )));
                            }
                        }
                    }
                }
            } else {
                None
            };
            Ok(Some(types::like(
                &types::as_text(&value),
                &types::as_text(&pattern),
                escape,
            )))
        })?;
    }
    for (name, upper) in [("upper", true), ("lower", false)] {
        conn.create_scalar_function(name, 1, deterministic, move |ctx| {
            Ok(match from_sqlite(ctx.get_raw(0)) {
                Value::Null => None,
                v => Some(types::change_case(&types::as_text(&v), upper)),
            })
        })?;
    }
    // A binary operand compared with a rowversion (kept as an integer): its 8 big-endian bytes
    // (shorter values padded with zeros on the right, as SQL Server pads binary).
    conn.create_scalar_function("__rv", 1, deterministic, |ctx| {
        match from_sqlite(ctx.get_raw(0)) {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(n)),
            Value::Bytes(b) => rowversion_of(&b).map(Some).map_err(udf_error),
            other => Err(udf_error(SqlError::new(
                402,
                1,
                16,
                format!(
                    "The data types timestamp and {} are incompatible in the comparison operator.",
                    match other {
                        Value::Float(_) => "float",
                        _ => "nvarchar",
                    }
                ),
            ))),
        }
    })?;
    conn.create_scalar_function("__len", 1, deterministic, |ctx| {
        Ok(match from_sqlite(ctx.get_raw(0)) {
            Value::Null => None,
            v => Some(types::as_text(&v).trim_end_matches(' ').chars().count() as i64),
        })
    })?;
    conn.create_scalar_function("__sysutcdatetime", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(types::format_datetime(chrono::Utc::now().naive_utc()))
    })?;
    conn.create_scalar_function("__sysdatetime", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(types::format_datetime(chrono::Local::now().naive_local()))
    })?;
    Ok(())
}

/// A binary value as the integer the store keeps rowversions as: big-endian, padded with zeros
/// on the right to 8 bytes; above every rowversion when its top bit is set.
fn rowversion_of(b: &[u8]) -> Result<i64, SqlError> {
    if b.len() > 8 {
        return Err(SqlError::unsupported(
            "comparing a rowversion with a binary value longer than 8 bytes",
        ));
    }
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    let n = u64::from_be_bytes(a);
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Converts a value to a SQL Server type's stored form. `target` is (`db.schema.table`,
/// column) when assigning to a column (length overflow is error 2628 there; CAST truncates).
pub fn convert(
    value: Value,
    ty: &SqlType,
    target: Option<(&str, &str)>,
) -> Result<Value, SqlError> {
    if value == Value::Null {
        return Ok(Value::Null);
    }
    let type_name = ty.name().to_lowercase();
    let source_name = match &value {
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Text(_) => "nvarchar",
        Value::Bytes(_) => "varbinary",
        Value::Null => "NULL",
    };
    let conversion = |v: &Value| {
        SqlError::new(
            245,
            1,
            16,
            format!(
                "Conversion failed when converting the {source_name} value '{}' to data type {type_name}.",
                types::as_text(v)
            ),
        )
    };
    let clash = || {
        SqlError::new(
            206,
            2,
            16,
            format!("Operand type clash: {source_name} is incompatible with {type_name}"),
        )
    };
    let overflow = || {
        SqlError::new(
            8115,
            2,
            16,
            format!("Arithmetic overflow error converting {source_name} to data type {type_name}."),
        )
    };
    match ty {
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt | SqlType::Bit => {
            let n = match &value {
                Value::Int(n) => *n,
                Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => f.trunc() as i64,
                Value::Text(t) if *ty == SqlType::Bit && t.trim().eq_ignore_ascii_case("true") => 1,
                Value::Text(t) if *ty == SqlType::Bit && t.trim().eq_ignore_ascii_case("false") => {
                    0
                }
                Value::Text(t) => t.trim().parse::<i64>().map_err(|_| conversion(&value))?,
                // Binary to an integer: its low-order bytes, big-endian, as SQL Server reads them.
                Value::Bytes(b) if target.is_none() && *ty != SqlType::Bit => {
                    let size = match ty {
                        SqlType::TinyInt => 1,
                        SqlType::SmallInt => 2,
                        SqlType::Int => 4,
                        _ => 8,
                    };
                    let low = &b[b.len().saturating_sub(size)..];
                    let mut a = [0u8; 8];
                    a[8 - low.len()..].copy_from_slice(low);
                    let n = u64::from_be_bytes(a);
                    match size {
                        1 => i64::from(n as u8),
                        2 => i64::from(n as u16 as i16),
                        4 => i64::from(n as u32 as i32),
                        _ => n as i64,
                    }
                }
                _ => return Err(clash()),
            };
            let ok = match ty {
                SqlType::TinyInt => (0..=255).contains(&n),
                SqlType::SmallInt => i16::try_from(n).is_ok(),
                SqlType::Int => i32::try_from(n).is_ok(),
                _ => true,
            };
            if !ok {
                return Err(overflow());
            }
            Ok(Value::Int(if *ty == SqlType::Bit {
                i64::from(n != 0)
            } else {
                n
            }))
        }
        SqlType::Float | SqlType::Real => match &value {
            Value::Int(n) => Ok(Value::Float(*n as f64)),
            Value::Float(_) => Ok(value),
            Value::Text(t) => t
                .trim()
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| conversion(&value)),
            _ => Err(clash()),
        },
        SqlType::Decimal {
            precision, scale, ..
        } => {
            let text = match &value {
                Value::Int(n) => n.to_string(),
                // The shortest text that reads back as the same float (SQL Server converts
                // float to decimal from its 17 significant digits).
                Value::Float(f) if f.is_finite() => format!("{f:e}"),
                Value::Float(_) => return Err(conversion(&value)),
                Value::Text(t) => t.clone(),
                _ => return Err(clash()),
            };
            // A number too long for any decimal overflows rather than failing to convert.
            let scaled = match types::parse_decimal(&text, *scale) {
                Some(v) => v,
                None if types::compare_decimal(&text, "0").is_some() => {
                    return Err(decimal_overflow(&value));
                }
                None => return Err(conversion(&value)),
            };
            if scaled.unsigned_abs() >= 10u128.pow(u32::from(*precision)) {
                return Err(decimal_overflow(&value));
            }
            Ok(Value::Text(types::format_decimal(scaled, *scale)))
        }
        SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::NChar(_) | SqlType::Char(_) => {
            let mut text = match &value {
                Value::Bytes(_) => return Err(clash()),
                v => types::as_text(v),
            };
            if matches!(ty, SqlType::VarChar(_) | SqlType::Char(_)) {
                text = text
                    .chars()
                    .map(|c| if u32::from(c) < 256 { c } else { '?' })
                    .collect();
            }
            if let Some(max) = ty.max_len() {
                let len = text.trim_end_matches(' ').chars().count();
                if len > max {
                    match target {
                        Some((table, column)) => {
                            let shown: String = text.chars().take(max).collect();
                            return Err(SqlError::new(
                                2628,
                                1,
                                16,
                                format!(
                                    "String or binary data would be truncated in table '{table}', column '{column}'. Truncated value: '{shown}'."
                                ),
                            ));
                        }
                        None => text = text.chars().take(max).collect(),
                    }
                }
            }
            Ok(Value::Text(text))
        }
        SqlType::Date => match &value {
            Value::Text(t) => types::parse_date(t)
                .map(|d| Value::Text(types::format_date(d)))
                .ok_or_else(date_conversion_failed),
            _ => Err(clash()),
        },
        SqlType::DateTime2(scale) => match &value {
            Value::Text(t) => {
                let dt = types::parse_datetime(t).ok_or_else(date_conversion_failed)?;
                let unit = 10i64.pow(9 - u32::from(*scale));
                let nanos = i64::from(chrono::Timelike::nanosecond(&dt.time()) % 1_000_000_000);
                let rounded = (nanos + unit / 2) / unit * unit;
                let dt = dt - chrono::Duration::nanoseconds(nanos)
                    + chrono::Duration::nanoseconds(rounded);
                Ok(Value::Text(types::format_datetime(dt)))
            }
            _ => Err(clash()),
        },
        SqlType::DateTime => match &value {
            Value::Text(t) => types::parse_datetime(t)
                .map(|d| Value::Text(types::format_datetime(d)))
                .ok_or_else(date_conversion_failed),
            _ => Err(clash()),
        },
        SqlType::RowVersion if target.is_none() => match &value {
            Value::Int(n) => Ok(Value::Int(*n)),
            Value::Bytes(b) if b.len() <= 8 => rowversion_of(b).map(Value::Int),
            _ => Err(clash()),
        },
        SqlType::VarBinary(_) | SqlType::Binary(_) | SqlType::RowVersion => {
            let bytes = match &value {
                Value::Bytes(b) => b.clone(),
                Value::Int(n) => n.to_be_bytes().to_vec(),
                _ => {
                    return Err(SqlError::new(
                        257,
                        3,
                        16,
                        format!(
                            "Implicit conversion from data type {source_name} to {type_name} is not allowed. Use the CONVERT function to run this query."
                        ),
                    ));
                }
            };
            let number = matches!(value, Value::Int(_));
            if let Some(max) = ty.max_len()
                && bytes.len() > max
            {
                if number && target.is_none() {
                    // A number keeps its low-order bytes, as SQL Server truncates it.
                    return Ok(Value::Bytes(bytes[bytes.len() - max..].to_vec()));
                }
                if let Some((table, column)) = target {
                    return Err(SqlError::new(
                        2628,
                        1,
                        16,
                        format!(
                            "String or binary data would be truncated in table '{table}', column '{column}'. Truncated value: ''."
                        ),
                    ));
                }
                return Ok(Value::Bytes(bytes[..max].to_vec()));
            }
            // binary(n) is fixed length: padded with zeros (on the left for a number).
            if let SqlType::Binary(n) = ty
                && bytes.len() < usize::from(*n)
            {
                let pad = vec![0u8; usize::from(*n) - bytes.len()];
                return Ok(Value::Bytes(if number {
                    [pad, bytes].concat()
                } else {
                    [bytes, pad].concat()
                }));
            }
            Ok(Value::Bytes(bytes))
        }
        SqlType::UniqueIdentifier => match &value {
            Value::Text(t) => {
                let hex: String = t
                    .trim()
                    .trim_matches(['{', '}'])
                    .chars()
                    .filter(|c| *c != '-')
                    .collect();
                if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    let h = hex.to_ascii_uppercase();
                    Ok(Value::Text(format!(
                        "{}-{}-{}-{}-{}",
                        &h[0..8],
                        &h[8..12],
                        &h[12..16],
                        &h[16..20],
                        &h[20..]
                    )))
                } else {
                    Err(SqlError::new(
                        8169,
                        2,
                        16,
                        "Conversion failed when converting from a character string to uniqueidentifier.",
                    ))
                }
            }
            _ => Err(clash()),
        },
    }
}

/// Maps a store error to SQL Server's error number and message.
pub fn map_error(e: rusqlite::Error, catalog: &Catalog, db_name: &str, sql: &str) -> SqlError {
    if let rusqlite::Error::UserFunctionError(inner) = &e
        && let Some(s) = inner.downcast_ref::<UdfError>()
    {
        return s.0.clone();
    }
    if let Some(decoded) = decode_udf_error(&e.to_string()) {
        return decoded;
    }
    let verb = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let (code, extended, msg) = match &e {
        rusqlite::Error::SqliteFailure(f, m) => {
            (Some(f.code), f.extended_code, m.clone().unwrap_or_default())
        }
        rusqlite::Error::SqlInputError { error, msg, .. } => {
            (Some(error.code), error.extended_code, msg.clone())
        }
        other => (None, 0, other.to_string()),
    };
    let table_of = |name: &str| -> (String, Option<&TableDef>) {
        let t = catalog.table(name);
        (t.map_or(format!("dbo.{name}"), |t| t.display.clone()), t)
    };
    match extended {
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
        1555 | 2067 => {
            let list = msg.trim_start_matches("UNIQUE constraint failed: ");
            let mut table = String::new();
            let mut cols = Vec::new();
            let mut index = None;
            if let Some(name) = list.strip_prefix("index '") {
                // An expression index is named `table.index`.
                let name = name.trim_end_matches('\'');
                if let Some((t, i)) = catalog
                    .tables()
                    .map(|t| t.name.clone())
                    .filter(|t| name.starts_with(&format!("{t}.")))
                    .max_by_key(String::len)
                    .map(|t| (t.clone(), name[t.len() + 1..].to_string()))
                {
                    table = t;
                    index = Some(i);
                }
            } else {
                for part in list.split(", ") {
                    if let Some((t, c)) = part.rsplit_once('.') {
                        table = t.to_string();
                        cols.push(c.to_ascii_lowercase());
                    }
                }
            }
            let (display, def) = table_of(&table);
            if let Some(def) = def {
                if let Some((_, c, _)) = index.as_ref().and_then(|i| {
                    def.unique
                        .iter()
                        .find(|(n, _, _)| n.eq_ignore_ascii_case(i))
                }) {
                    cols = c.clone();
                }
                if def.primary_key == cols {
                    let name = def
                        .primary_key_name
                        .clone()
                        .unwrap_or_else(|| format!("PK_{}", def.name));
                    return SqlError::new(
                        2627,
                        1,
                        14,
                        format!(
                            "Violation of PRIMARY KEY constraint '{name}'. Cannot insert duplicate key in object '{display}'."
                        ),
                    );
                }
                if let Some((name, _, index)) = def.unique.iter().find(|(_, c, _)| *c == cols) {
                    if *index {
                        return SqlError::new(
                            2601,
                            1,
                            14,
                            format!(
                                "Cannot insert duplicate key row in object '{display}' with unique index '{name}'."
                            ),
                        );
                    }
                    return SqlError::new(
                        2627,
                        1,
                        14,
                        format!(
                            "Violation of UNIQUE KEY constraint '{name}'. Cannot insert duplicate key in object '{display}'."
                        ),
                    );
                }
            }
            SqlError::new(
                2627,
                1,
                14,
                format!(
                    "Violation of UNIQUE KEY constraint. Cannot insert duplicate key in object '{display}'."
                ),
            )
        }
        // SQLITE_CONSTRAINT_NOTNULL
        1299 => {
            let (t, c) = msg
                .trim_start_matches("NOT NULL constraint failed: ")
                .rsplit_once('.')
                .map_or((String::new(), String::new()), |(t, c)| {
                    (t.to_string(), c.to_string())
                });
            let (display, def) = table_of(&t);
            let column = def
                .and_then(|d| d.column(&c))
                .map_or(c.clone(), |c| c.name.clone());
            let fails = if verb == "UPDATE" { "UPDATE" } else { "INSERT" };
            SqlError::new(
                515,
                2,
                16,
                format!(
                    "Cannot insert the value NULL into column '{column}', table '{db_name}.{display}'; column does not allow nulls. {fails} fails."
                ),
            )
        }
        // SQLITE_CONSTRAINT_FOREIGNKEY
        787 => {
            let message = if verb == "DELETE" {
                "The DELETE statement conflicted with the REFERENCE constraint. The conflict occurred in database '{db}'.".replace("{db}", db_name)
            } else {
                format!(
                    "The {verb} statement conflicted with the FOREIGN KEY constraint. The conflict occurred in database '{db_name}'."
                )
            };
            SqlError::new(547, 0, 16, message)
        }
        // SQLITE_CONSTRAINT_CHECK
        275 => SqlError::new(
            547,
            0,
            16,
            format!(
                "The {verb} statement conflicted with the CHECK constraint. The conflict occurred in database '{db_name}'."
            ),
        ),
        _ => {
            if matches!(
                code,
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ) {
                return SqlError::new(1222, 51, 16, "Lock request time out period exceeded.");
            }
            if let Some(t) = msg.strip_prefix("no such table: ") {
                let t = store_name(t);
                let (display, def) = table_of(&t);
                let shown = if def.is_some() { display } else { t };
                return SqlError::new(208, 1, 16, format!("Invalid object name '{shown}'."));
            }
            if let Some(c) = msg.strip_prefix("no such column: ") {
                return translate::invalid_column(&store_name(c));
            }
            if let Some(c) = msg.strip_prefix("ambiguous column name: ") {
                return SqlError::new(
                    209,
                    1,
                    16,
                    format!("Ambiguous column name '{}'.", store_name(c)),
                );
            }
            if let Some(f) = msg.strip_prefix("no such function: ") {
                return SqlError::new(
                    195,
                    10,
                    15,
                    format!("'{}' is not a recognized built-in function name.", f.trim()),
                );
            }
            if let Some(rest) = msg.strip_prefix("near \"") {
                let near = rest.split('"').next().unwrap_or("");
                return SqlError::syntax(near);
            }
            // Never SQLite's own wording: SQL Server's generic refusal, with the detail logged.
            tracing::debug!(store_error = %msg, sql, "SQL Server simulator: unmapped store error");
            SqlError::unsupported("this statement")
        }
    }
}

/// The name in a store message as T-SQL spelled it: the last part of `t."c"`, unquoted, without
/// the hint SQLite adds ("- should this be a string literal in single-quotes?").
fn store_name(text: &str) -> String {
    let text = text.split(" - ").next().unwrap_or(text).trim();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts.pop().unwrap_or_default()
}

/// SQL Server's error 8115 for a value beyond a decimal's precision ("converting numeric to data
/// type numeric" for decimal values, which the store keeps as text).
fn decimal_overflow(value: &Value) -> SqlError {
    let source = match value {
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        _ => "numeric",
    };
    SqlError::new(
        8115,
        8,
        16,
        format!("Arithmetic overflow error converting {source} to data type numeric."),
    )
}

/// SQL Server's error 241 for a string that is not a date or time.
fn date_conversion_failed() -> SqlError {
    SqlError::new(
        241,
        1,
        16,
        "Conversion failed when converting date and/or time from character string.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_answers_envchange_database_or_911() {
        let (db, _) = Db::open(None, "hubsync", Settings::default()).unwrap();
        let mut session = Session::open(db).unwrap();
        let (tokens, error) = session.run("USE [HubSync]", &[], Mode::Batch);
        assert_eq!(error, None);
        let name: Vec<u8> = "hubsync"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut body = vec![1, 7];
        body.extend_from_slice(&name);
        body.push(7);
        body.extend_from_slice(&name);
        let mut expected = vec![0xE3];
        expected.extend_from_slice(&(body.len() as u16).to_le_bytes());
        expected.extend_from_slice(&body);
        assert_eq!(tokens.buf[..expected.len()], expected[..]);
        assert_eq!(tokens.buf[expected.len()], 0xAB, "INFO 5701 follows");
        let (_, error) = session.run("USE [other]", &[], Mode::Batch);
        assert_eq!(error.map(|e| e.number), Some(911));
    }

    fn run_ok(session: &mut Session, sql: &str) {
        let (_, error) = session.run(sql, &[], Mode::Batch);
        assert_eq!(error, None, "{sql}");
    }

    fn dump(session: &Session) -> String {
        session
            .conn
            .query_row(
                "SELECT group_concat(id || ':' || name || ':' || ifnull(hex(b), '-') || ':' || rv, ' ') FROM (SELECT * FROM t ORDER BY id)",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn rollback_and_recovery_put_the_before_images_back() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(Some(dir.path()), "hubsync", Settings::default()).unwrap();
        let mut s = Session::open(Arc::clone(&db)).unwrap();
        run_ok(
            &mut s,
            "CREATE TABLE [dbo].[t] ([id] INT IDENTITY(1,1) PRIMARY KEY, [name] NVARCHAR(10) NOT NULL, [b] VARBINARY(8) NULL, [rv] ROWVERSION)",
        );
        run_ok(
            &mut s,
            "INSERT INTO [dbo].[t] ([name], [b]) VALUES (N'a', 0x0102), (N'b', NULL), (N'c', 0x03)",
        );
        let before = dump(&s);
        run_ok(
            &mut s,
            "BEGIN TRANSACTION; UPDATE [dbo].[t] SET [name] = N'x', [b] = NULL WHERE [id] = 1; DELETE FROM [dbo].[t] WHERE [id] = 2; INSERT INTO [dbo].[t] ([name]) VALUES (N'd'); UPDATE [dbo].[t] SET [name] = N'y' WHERE [id] = 1",
        );
        assert_ne!(dump(&s), before);
        let logged: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM __sim_undo", [], |r| r.get(0))
            .unwrap();
        assert_eq!(logged, 3, "one before-image per row changed");
        run_ok(&mut s, "ROLLBACK TRANSACTION");
        assert_eq!(dump(&s), before, "rolled back, rowversions included");
        assert!(!db.locks.others_hold_any(0), "locks released");
        run_ok(
            &mut s,
            "BEGIN TRANSACTION; DELETE FROM [dbo].[t] WHERE [id] = 3; UPDATE [dbo].[t] SET [name] = N'z' WHERE [id] = 1",
        );
        // The simulator stops with the transaction open (no rollback ran).
        std::mem::forget(s);
        drop(db);
        let (db, created) = Db::open(Some(dir.path()), "hubsync", Settings::default()).unwrap();
        assert!(!created);
        let s = Session::open(db).unwrap();
        assert_eq!(
            dump(&s),
            before,
            "recovery rolled the open transaction back"
        );
    }

    #[test]
    fn ddl_inside_a_transaction_is_refused() {
        let (db, _) = Db::open(None, "hubsync", Settings::default()).unwrap();
        let mut s = Session::open(db).unwrap();
        let (_, error) = s.run(
            "BEGIN TRANSACTION; CREATE TABLE [dbo].[u] ([id] INT NOT NULL PRIMARY KEY)",
            &[],
            Mode::Batch,
        );
        assert_eq!(error.map(|e| e.number), Some(102));
    }

    #[test]
    fn assignments_check_lengths_and_ranges() {
        let e = convert(
            Value::Text("abcdef".into()),
            &SqlType::NVarChar(Some(3)),
            Some(("db.dbo.t", "c")),
        )
        .unwrap_err();
        assert_eq!(e.number, 2628);
        assert_eq!(
            convert(
                Value::Text("abcdef".into()),
                &SqlType::NVarChar(Some(3)),
                None
            )
            .unwrap(),
            Value::Text("abc".into())
        );
        assert_eq!(
            convert(Value::Int(1 << 40), &SqlType::Int, None)
                .unwrap_err()
                .number,
            8115
        );
        assert_eq!(
            convert(Value::Text("x".into()), &SqlType::Int, None)
                .unwrap_err()
                .number,
            245
        );
        assert_eq!(
            convert(Value::Text("2024-13-01".into()), &SqlType::Date, None)
                .unwrap_err()
                .number,
            241
        );
        assert_eq!(
            convert(
                Value::Text("12.345".into()),
                &SqlType::Decimal {
                    precision: 18,
                    scale: 2,
                    numeric: false
                },
                None
            )
            .unwrap(),
            Value::Text("12.35".into())
        );
        assert_eq!(
            convert(
                Value::Bytes(vec![0, 0, 0, 0, 0, 0, 1, 0]),
                &SqlType::RowVersion,
                None
            )
            .unwrap(),
            Value::Int(256)
        );
        // CAST(… AS BINARY(8)) is bytes: numbers big-endian, binary padded on the right.
        assert_eq!(
            convert(Value::Int(258), &SqlType::Binary(8), None).unwrap(),
            Value::Bytes(vec![0, 0, 0, 0, 0, 0, 1, 2])
        );
        assert_eq!(
            convert(Value::Bytes(vec![1]), &SqlType::Binary(4), None).unwrap(),
            Value::Bytes(vec![1, 0, 0, 0])
        );
        assert_eq!(
            convert(Value::Bytes(vec![9, 1, 2]), &SqlType::SmallInt, None).unwrap(),
            Value::Int(258)
        );
    }
}
