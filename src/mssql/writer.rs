//! The writer: applies a batch of HubSpot-side changes to an object's table in one transaction —
//! UPDATE of only the changed columns by key, INSERT for new HubSpot records (per policy),
//! DELETE of records archived in HubSpot (per policy), HubSpot id write-back — reporting
//! failures per row. With change tracking, writes that leave nothing for HubSpot carry
//! hubsync's context, so the change reader skips their echo.
//!
//! Policy: each row is one statement, so a row that fails (constraint, truncation, NULL, bad
//! value) is undone alone by SQL Server's statement atomicity, reported with its error number
//! and message, and the other rows still commit. If the error ended the whole transaction
//! (`@@TRANCOUNT` 0, e.g. `XACT_ABORT ON`), the batch is replayed without the failed rows. A
//! deadlock victim (1205) replays the batch after a backoff, up to `deadlock_retries` times; a
//! lost connection before COMMIT replays it once the server is back (the server rolled it back).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::error::{DEADLOCK, MssqlError};
use super::ident::Ident;
use super::object::{Change, NewRecordPolicy, SqlObject};
use super::pool::{Conn, SqlPool};
use super::sql;
use super::table::TableShape;
use super::value::{Param, SqlRow, key_text, param_for, row_to_json};
use crate::support::retry;

/// One record's change for SQL Server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowWrite {
    /// The record's SQL key; None for a record created in HubSpot (inserted per policy).
    pub key: Option<String>,
    /// Changed columns and their new values, in the contract's JSON encoding.
    pub changes: SqlRow,
    /// Written to the object's `hubspot_id_column`, when one is configured.
    pub hubspot_id: Option<String>,
    /// Delete the row with `key` instead (its record was archived in HubSpot and the object's
    /// policy is `delete`); `changes` and `hubspot_id` are ignored.
    pub delete: bool,
    /// The row's rowversion when it was read (rowversion change detection): the update applies
    /// only if the row still has it, so an edit committed on SQL Server since is never
    /// overwritten unseen ([`RowOutcome::Changed`]).
    pub unchanged_since: Option<u64>,
    /// The row held no change still to go to HubSpot when it was read: with change tracking
    /// (and `unchanged_since`), the update carries hubsync's context, so its echo is not read
    /// back as a change. Never set it when the row had anything unsynced: change tracking keeps
    /// only a row's last change, so a tagged write would hide the earlier one.
    pub quiet: bool,
}

/// What happened to one row of the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    Updated {
        key: String,
    },
    Inserted {
        key: String,
    },
    /// Deleted, or already gone.
    Deleted {
        key: String,
    },
    /// Nothing to write (no changed column and no id to write back).
    Unchanged {
        key: String,
    },
    /// A new HubSpot record while `on_new_hubspot_record` is `ignore`.
    Skipped,
    /// Not written: the row changed (or went) since it was read (`unchanged_since`); decide
    /// again from what it holds now.
    Changed {
        key: String,
    },
    Failed(RowFailure),
}

/// Why one row was not written.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    /// SQL Server's error number (2627 duplicate key, 515 NULL, 2628 truncation, 547 FK…);
    /// None when hubsync refused the row before sending it.
    pub number: Option<u32>,
    pub message: String,
}

/// The outcome of every row, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    pub outcomes: Vec<RowOutcome>,
    /// Transactions started (1 unless deadlocks, lost connections or aborted transactions
    /// forced a replay).
    pub attempts: u32,
}

impl BatchReport {
    pub fn failures(&self) -> impl Iterator<Item = (usize, &RowFailure)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                RowOutcome::Failed(f) => Some((i, f)),
                _ => None,
            })
    }
}

#[derive(Debug, Clone)]
enum Statement {
    Update {
        key: String,
        sql: String,
        params: Vec<Param>,
        /// Only if the row still has the rowversion it was read with.
        guarded: bool,
    },
    Insert {
        sql: String,
        params: Vec<Param>,
    },
    Delete {
        key: String,
        sql: String,
        params: Vec<Param>,
    },
}

enum Interrupted {
    /// The transaction is gone after a row error: replay without the failed rows.
    Replay,
    Fail(MssqlError),
}

/// Writes HubSpot-side changes into one object's table; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlWriter {
    pool: SqlPool,
    obj: SqlObject,
    shape: std::sync::Arc<OnceCell<TableShape>>,
}

impl SqlWriter {
    pub fn new(pool: SqlPool, obj: SqlObject) -> Self {
        Self {
            pool,
            obj,
            shape: Default::default(),
        }
    }

    async fn shape(&self) -> Result<&TableShape, MssqlError> {
        self.shape
            .get_or_try_init(|| TableShape::load(&self.pool, &self.obj))
            .await
    }

    /// Writes the HubSpot id of an existing row into `hubspot_id_column`.
    pub async fn write_hubspot_id(
        &self,
        key: &str,
        hubspot_id: &str,
    ) -> Result<RowOutcome, MssqlError> {
        let report = self
            .apply(&[RowWrite {
                key: Some(key.to_string()),
                changes: SqlRow::new(),
                hubspot_id: Some(hubspot_id.to_string()),
                ..RowWrite::default()
            }])
            .await?;
        Ok(report
            .outcomes
            .into_iter()
            .next()
            .unwrap_or(RowOutcome::Skipped))
    }

    /// Applies the batch in one transaction (see the module policy). `Err` means nothing was
    /// applied (server unreachable past the retry window, deadlocks past the limit) — or, for
    /// `CommitUnknown`, that the outcome is unknown.
    pub async fn apply(&self, batch: &[RowWrite]) -> Result<BatchReport, MssqlError> {
        let shape = self.shape().await?;
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; batch.len()];
        let mut statements: Vec<Option<Statement>> = Vec::with_capacity(batch.len());
        for (i, w) in batch.iter().enumerate() {
            match self.prepare(shape, w) {
                Ok(Ok(s)) => statements.push(Some(s)),
                Ok(Err(outcome)) => {
                    outcomes[i] = Some(outcome);
                    statements.push(None);
                }
                Err(message) => {
                    outcomes[i] = Some(RowOutcome::Failed(RowFailure {
                        number: None,
                        message,
                    }));
                    statements.push(None);
                }
            }
        }
        let started = tokio::time::Instant::now();
        let (mut attempts, mut deadlocks, mut outages) = (0u32, 0u32, 0u32);
        loop {
            attempts += 1;
            let mut run = outcomes.clone();
            match self.transaction(&statements, &mut run).await {
                Ok(()) => {
                    let outcomes = run
                        .into_iter()
                        .map(|o| o.unwrap_or(RowOutcome::Skipped))
                        .collect();
                    let report = BatchReport { outcomes, attempts };
                    tracing::debug!(table = %self.obj.table, rows = batch.len(), failed = report.failures().count(), attempts, "SQL Server write batch committed");
                    return Ok(report);
                }
                Err(Interrupted::Replay) => {
                    // Keep the row failures found so far; replay the rest.
                    for (i, o) in run.into_iter().enumerate() {
                        if let Some(f @ RowOutcome::Failed(_)) = o {
                            outcomes[i] = Some(f);
                            statements[i] = None;
                        }
                    }
                }
                Err(Interrupted::Fail(e)) if e.number() == Some(DEADLOCK) => {
                    deadlocks += 1;
                    if deadlocks > self.pool.deadlock_retries() {
                        return Err(e);
                    }
                    let wait =
                        retry::delay(deadlocks, Duration::from_millis(20), Duration::from_secs(2));
                    tracing::warn!(table = %self.obj.table, attempt = deadlocks, "SQL Server chose the write batch as deadlock victim; replaying");
                    tokio::time::sleep(wait).await;
                }
                Err(Interrupted::Fail(e @ MssqlError::Unavailable { .. })) => {
                    outages += 1;
                    let wait =
                        retry::delay(outages, Duration::from_millis(50), Duration::from_secs(5));
                    if started.elapsed() + wait > self.pool.retry_max_elapsed() {
                        return Err(e);
                    }
                    tracing::warn!(table = %self.obj.table, error = %e, "SQL Server connection lost before COMMIT; replaying the batch");
                    tokio::time::sleep(wait).await;
                }
                Err(Interrupted::Fail(e)) => return Err(e),
            }
        }
    }

    /// One transaction over the prepared statements; row failures go into `outcomes`.
    async fn transaction(
        &self,
        statements: &[Option<Statement>],
        outcomes: &mut [Option<RowOutcome>],
    ) -> Result<(), Interrupted> {
        if statements.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut conn = self.pool.get_once().await.map_err(Interrupted::Fail)?;
        let conn: &mut Conn = &mut conn;
        conn.batch(sql::BEGIN).await.map_err(Interrupted::Fail)?;
        for (i, statement) in statements.iter().enumerate() {
            let Some(statement) = statement else { continue };
            match self.run(conn, statement).await {
                Ok(outcome) => outcomes[i] = Some(outcome),
                Err(e @ MssqlError::Server { .. }) if e.number() != Some(DEADLOCK) => {
                    let (number, message) = match e {
                        MssqlError::Server { number, message } => (Some(number), message),
                        other => (None, other.to_string()),
                    };
                    outcomes[i] = Some(RowOutcome::Failed(RowFailure { number, message }));
                    if !self
                        .transaction_open(conn)
                        .await
                        .map_err(Interrupted::Fail)?
                    {
                        return Err(Interrupted::Replay);
                    }
                }
                Err(e) => {
                    if !e.breaks_connection() {
                        // Deadlock or other: make sure nothing stays open on this connection.
                        if self.transaction_open(conn).await.unwrap_or(false) {
                            let _ = conn.batch(sql::ROLLBACK).await;
                        }
                    }
                    return Err(Interrupted::Fail(e));
                }
            }
        }
        match conn.batch(sql::COMMIT).await {
            Ok(()) => Ok(()),
            Err(e) if e.breaks_connection() => {
                Err(Interrupted::Fail(MssqlError::CommitUnknown(e.to_string())))
            }
            Err(e) => Err(Interrupted::Fail(e)),
        }
    }

    async fn transaction_open(&self, conn: &mut Conn) -> Result<bool, MssqlError> {
        let rows = conn.query(sql::TRANCOUNT, &[]).await?;
        let count = rows
            .rows
            .first()
            .and_then(|r| r.try_get::<i32, _>(0).ok().flatten())
            .unwrap_or(0);
        Ok(count > 0)
    }

    async fn run(&self, conn: &mut Conn, statement: &Statement) -> Result<RowOutcome, MssqlError> {
        match statement {
            Statement::Update {
                key,
                sql,
                params,
                guarded,
            } => {
                let affected = conn.execute(sql, params).await?;
                if affected == 0 && *guarded {
                    Ok(RowOutcome::Changed { key: key.clone() })
                } else if affected == 0 {
                    Ok(RowOutcome::Failed(RowFailure {
                        number: None,
                        message: format!(
                            "no row in {} with {} = {key}",
                            self.obj.table, self.obj.key
                        ),
                    }))
                } else {
                    Ok(RowOutcome::Updated { key: key.clone() })
                }
            }
            Statement::Delete { key, sql, params } => {
                conn.execute(sql, params).await?;
                Ok(RowOutcome::Deleted { key: key.clone() })
            }
            Statement::Insert { sql, params } => {
                let rows = conn.query(sql, params).await?;
                let table = self.obj.table.to_string();
                let key = match rows.rows.first() {
                    Some(row) => row_to_json(&table, row)?
                        .into_iter()
                        .next()
                        .and_then(|(_, v)| key_text(&v)),
                    None => None,
                };
                Ok(RowOutcome::Inserted {
                    key: key.unwrap_or_default(),
                })
            }
        }
    }

    /// The statement for one row, an outcome needing no statement, or why the row is refused.
    fn prepare(
        &self,
        shape: &TableShape,
        w: &RowWrite,
    ) -> Result<Result<Statement, RowOutcome>, String> {
        if w.delete {
            let key = w.key.as_ref().ok_or("a row to delete needs its key")?;
            let mut params = vec![shape.key_param(&self.obj, key)?];
            let mut sql = sql::delete_by_key(&self.obj);
            if self.tracked() {
                // The record is archived in HubSpot already.
                sql = tag(&sql, &mut params);
            }
            return Ok(Ok(Statement::Delete {
                key: key.clone(),
                sql,
                params,
            }));
        }
        let mut values: Vec<(Ident, Param)> = Vec::new();
        for (name, value) in &w.changes {
            values.push(self.column_value(shape, name, value)?);
        }
        if let (Some(id), Some(col)) = (&w.hubspot_id, &self.obj.hubspot_id_column)
            && !values
                .iter()
                .any(|(c, _)| c.as_str().eq_ignore_ascii_case(col.as_str()))
        {
            values.push(self.column_value(shape, col.as_str(), &Value::String(id.clone()))?);
        }
        let (columns, mut params): (Vec<Ident>, Vec<Param>) = values.into_iter().unzip();
        let refs: Vec<&Ident> = columns.iter().collect();
        match &w.key {
            Some(key) => {
                if refs
                    .iter()
                    .any(|c| c.as_str().eq_ignore_ascii_case(self.obj.key.as_str()))
                {
                    return Err(format!("the key column {} cannot be changed", self.obj.key));
                }
                if refs.is_empty() {
                    return Ok(Err(RowOutcome::Unchanged { key: key.clone() }));
                }
                params.push(shape.key_param(&self.obj, key)?);
                let version = w
                    .unchanged_since
                    .map(|v| Param::I64(Some(i64::try_from(v).unwrap_or(i64::MAX))));
                let (sql, guarded) = match (&self.obj.change, version) {
                    (Change::Rowversion(rv), Some(version)) => {
                        params.push(version);
                        (sql::update_by_key_if_unchanged(&self.obj, &refs, rv), true)
                    }
                    (Change::Tracking, Some(version)) => {
                        params.push(version);
                        let sql = sql::update_by_key_if_untracked(&self.obj, &refs);
                        let sql = if w.quiet { tag(&sql, &mut params) } else { sql };
                        (sql, true)
                    }
                    _ => (sql::update_by_key(&self.obj, &refs), false),
                };
                Ok(Ok(Statement::Update {
                    key: key.clone(),
                    sql,
                    params,
                    guarded,
                }))
            }
            None if self.obj.on_new_hubspot_record == NewRecordPolicy::Ignore => {
                Ok(Err(RowOutcome::Skipped))
            }
            None if refs.is_empty() => Err("a new record needs at least one column value".into()),
            None => {
                let mut sql = sql::insert_returning_key(&self.obj, &refs);
                if self.tracked() {
                    // A new row holds only what HubSpot has.
                    sql = tag(&sql, &mut params);
                }
                Ok(Ok(Statement::Insert { sql, params }))
            }
        }
    }

    /// Whether the object's table is read through change tracking.
    fn tracked(&self) -> bool {
        matches!(self.obj.change, Change::Tracking)
    }

    fn column_value(
        &self,
        shape: &TableShape,
        name: &str,
        value: &Value,
    ) -> Result<(Ident, Param), String> {
        let ident = Ident::parse(name).map_err(|e| format!("column {e}"))?;
        let ty = shape
            .column_type(name)
            .ok_or_else(|| format!("table {} has no column {name}", self.obj.table))?;
        let param = param_for(ty, value).map_err(|e| format!("column {name} {e}"))?;
        Ok((ident, param))
    }
}

/// Marks a statement as hubsync's own write for change tracking: its context as one more
/// parameter, named in the `WITH CHANGE_TRACKING_CONTEXT` prefix.
fn tag(statement: &str, params: &mut Vec<Param>) -> String {
    params.push(Param::Binary(Some(sql::CT_CONTEXT.to_vec())));
    sql::tagged(statement, params.len())
}
