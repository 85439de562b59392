//! The change reader: pages of rows changed since a cursor (rowversion, `(modified_at, key)`
//! with overlap, or Change Tracking's version with its minimum-valid check and full re-read),
//! soft and tracked deletes as archive changes, rows by key (a batch in one query), and key
//! reconciliation for hard deletes. Streams page by page; never loads the whole table.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use tiberius::{ColumnData, FromSql, Row};
use tokio::sync::OnceCell;

use super::cursor::{
    ChangeCursor, Position, Rowversion, beginning_of_time, local_to_utc, overlap_start,
};
use super::error::MssqlError;
use super::object::{Change as Mode, DeletedWhen, SqlObject};
use super::pool::{Rows, SqlPool};
use super::sql;
use super::table::TableShape;
use super::value::{
    Param, SqlRow, format_binary, format_datetime, key_text, parse_datetime, row_to_json,
};

/// Keys per `rows_by_keys` statement (SQL Server takes at most 2,100 parameters).
pub const KEYS_PER_QUERY: usize = 1000;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created or updated: send it to HubSpot.
    Upsert,
    /// Soft-deleted (or, from reconciliation, gone): archive it in HubSpot.
    Archive,
}

/// One changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The SQL key as text (`record_key`).
    pub key: String,
    pub kind: ChangeKind,
    /// The row's version (`source_version`): rowversion or change-tracking version `0x…`, or
    /// local modified_at.
    pub version: String,
    /// The row's modification time in UTC, when the object has a modification-time column.
    pub modified_utc: Option<DateTime<Utc>>,
    /// The row, in the contract's JSON encoding.
    pub row: SqlRow,
}

/// One page of changes and the cursor to store once they are enqueued.
#[derive(Debug, Clone)]
pub struct ChangePage {
    pub changes: Vec<RowChange>,
    pub cursor: ChangeCursor,
}

/// Reads one object's changes; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeReader {
    pool: SqlPool,
    obj: SqlObject,
    first_page: String,
    next_page: String,
    shape: std::sync::Arc<OnceCell<TableShape>>,
}

impl ChangeReader {
    pub fn new(pool: SqlPool, obj: SqlObject) -> Self {
        let (first_page, next_page) = sql::change_reads(&obj);
        Self {
            pool,
            obj,
            first_page,
            next_page,
            shape: Default::default(),
        }
    }

    pub fn object(&self) -> &SqlObject {
        &self.obj
    }

    /// Starts a poll from the stored cursor (None: from the beginning). In modified_at mode the
    /// poll re-reads the overlap window before the stored high-water mark. A cursor of the other
    /// mode (the config changed) restarts from the beginning, which only re-reads rows.
    pub fn poll(&self, stored: Option<ChangeCursor>) -> Poll<'_> {
        let position = match (&self.obj.change, &stored) {
            (Mode::Rowversion(_), Some(ChangeCursor::Rowversion { rowversion })) => {
                Position::Rowversion(rowversion.0)
            }
            (Mode::Rowversion(_), _) => Position::Rowversion(0),
            // No overlap: resume exactly after the stored (modified_at, key).
            (Mode::ModifiedAt { overlap, .. }, Some(c @ ChangeCursor::ModifiedAt { .. }))
                if overlap.is_zero() =>
            {
                Position::of(c)
            }
            (
                Mode::ModifiedAt { overlap, .. },
                Some(ChangeCursor::ModifiedAt { modified_at, .. }),
            ) => Position::From(overlap_start(*modified_at, *overlap, self.pool.zone())),
            (Mode::ModifiedAt { .. }, _) => Position::From(beginning_of_time()),
            (Mode::Tracking, Some(c @ ChangeCursor::ChangeTracking { .. })) => Position::of(c),
            // Settled by the first page against the server's versions.
            (Mode::Tracking, _) => Position::Scan {
                version: -1,
                after: None,
            },
        };
        let stored = match (&self.obj.change, stored) {
            (Mode::Rowversion(_), s @ Some(ChangeCursor::Rowversion { .. }))
            | (Mode::ModifiedAt { .. }, s @ Some(ChangeCursor::ModifiedAt { .. }))
            | (Mode::Tracking, s @ Some(ChangeCursor::ChangeTracking { .. })) => s,
            (_, Some(other)) => {
                tracing::warn!(table = %self.obj.table, cursor = %other.to_json(), "stored cursor is for another change detection mode; reading from the beginning");
                None
            }
            (_, None) => None,
        };
        Poll {
            reader: self,
            position,
            stored,
            finished: false,
            tracking: None,
            resynced: false,
        }
    }

    /// Change tracking: the current version and the table's minimum valid version; an error
    /// naming what to do when change tracking is off for the database or the table (or the
    /// login may not see it).
    async fn tracking_versions(&self) -> Result<(i64, i64), MssqlError> {
        let table = self.obj.table.quoted();
        let rows = self
            .fetch(sql::ct_versions(), vec![Param::Str(Some(table.clone()))])
            .await?;
        let row = rows
            .rows
            .first()
            .ok_or_else(|| MssqlError::Protocol("change tracking versions: no row".into()))?;
        let current = row.try_get::<i64, _>(0).ok().flatten();
        let min_valid = row.try_get::<i64, _>(1).ok().flatten();
        match (current, min_valid) {
            (None, _) => Err(MssqlError::Config(format!(
                "change tracking is off for the database of {table}: ALTER DATABASE CURRENT SET \
                 CHANGE_TRACKING = ON, or choose another change_detection mode"
            ))),
            (Some(_), None) => Err(MssqlError::Config(format!(
                "change tracking is not enabled on {table} (ALTER TABLE {table} ENABLE \
                 CHANGE_TRACKING), or hubsync's login lacks VIEW CHANGE TRACKING on it"
            ))),
            (Some(c), Some(m)) => Ok((c, m)),
        }
    }

    async fn fetch(&self, statement: &str, params: Vec<Param>) -> Result<Rows, MssqlError> {
        self.pool
            .retrying("read changes", |conn| {
                let (statement, params) = (statement.to_string(), params.clone());
                Box::pin(async move { conn.query(&statement, &params).await })
            })
            .await
    }

    async fn shape(&self) -> Result<&TableShape, MssqlError> {
        self.shape
            .get_or_try_init(|| TableShape::load(&self.pool, &self.obj))
            .await
    }

    /// The current row of one record, or None when no row has that key.
    pub async fn row_by_key(&self, key: &str) -> Result<Option<SqlRow>, MssqlError> {
        let mut rows = self.rows_by_keys(&[key.to_string()]).await?;
        Ok(rows.remove(key))
    }

    /// The current rows of several records in one query per [`KEYS_PER_QUERY`] keys, by key text
    /// (`record_key`); keys without a row are absent.
    pub async fn rows_by_keys(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, SqlRow>, MssqlError> {
        let shape = self.shape().await?;
        let table = self.obj.table.to_string();
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let params = chunk
                .iter()
                .map(|k| shape.key_param(&self.obj, k))
                .collect::<Result<Vec<Param>, String>>()
                .map_err(MssqlError::Config)?;
            let statement = sql::rows_by_keys(&self.obj, params.len());
            for row in &self.fetch(&statement, params).await?.rows {
                let json = row_to_json(&table, row)?;
                let key = json
                    .iter()
                    .find(|(c, _)| c.eq_ignore_ascii_case(self.obj.key.as_str()))
                    .and_then(|(_, v)| key_text(v));
                if let Some(key) = key {
                    out.insert(key, json);
                }
            }
        }
        Ok(out)
    }

    /// When the row was last modified, in UTC: its modification-time column (see
    /// [`SqlObject::modified_column`]) read as local time in the configured zone; None when the
    /// object has no such column or the value is NULL or not a datetime.
    pub fn modified_utc(&self, row: &SqlRow) -> Option<DateTime<Utc>> {
        let column = self.obj.modified_column()?;
        let value = row
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column.as_str()))
            .and_then(|(_, v)| v.as_str())?;
        local_to_utc(parse_datetime(value)?, self.pool.zone())
    }

    /// The version of a row this reader read by key: its rowversion, or with change tracking
    /// the current version when it was read (no change of the row read is newer); None in
    /// modified_at mode.
    pub fn rowversion_of(&self, row: &SqlRow) -> Option<u64> {
        match &self.obj.change {
            Mode::Rowversion(rv) => row
                .get(rv.as_str())?
                .as_str()
                .and_then(Rowversion::parse)
                .map(|v| v.0),
            Mode::ModifiedAt { .. } => None,
            Mode::Tracking => row.get(sql::CT_VERSION)?.as_u64(),
        }
    }

    /// A change cursor's position as a queue `source_version` (rowversion as a number, or the
    /// modification time in epoch microseconds): rows changed after it are still to be read.
    pub fn cursor_version(&self, cursor: &ChangeCursor) -> Option<i64> {
        match cursor {
            ChangeCursor::Rowversion { rowversion } => Some(rowversion.0 as i64),
            ChangeCursor::ModifiedAt { modified_at, .. } => {
                local_to_utc(*modified_at, self.pool.zone()).map(|t| t.timestamp_micros())
            }
            ChangeCursor::ChangeTracking {
                scanning: false,
                version,
                ..
            } => Some(*version),
            // A full read is under way: every row may still be read.
            ChangeCursor::ChangeTracking { .. } => Some(0),
        }
    }

    /// Whether a row this reader read is deleted softly (the object's `soft_delete` column).
    pub fn is_deleted_row(&self, row: &SqlRow) -> bool {
        let Some((column, when)) = &self.obj.soft_delete else {
            return false;
        };
        row.iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column.as_str()))
            .is_some_and(|(_, v)| is_deleted(*when, v))
    }

    /// The number of rows in the table.
    pub async fn count(&self) -> Result<u64, MssqlError> {
        let rows = self.fetch(&sql::count_rows(&self.obj), Vec::new()).await?;
        let first = rows
            .rows
            .first()
            .ok_or_else(|| self.type_error("rows", "bigint", "COUNT_BIG(*) returned no row"))?;
        let row = row_to_json(&self.obj.table.to_string(), first)?;
        Ok(row.get("rows").and_then(Value::as_u64).unwrap_or(0))
    }

    /// One page of keys in key order, after `after` (None: from the first key).
    pub async fn keys_page(&self, after: Option<&Value>) -> Result<Vec<Value>, MssqlError> {
        let size = Param::I64(Some(i64::from(self.obj.page_size)));
        let rows = match after {
            None => {
                self.fetch(&sql::keys_first_page(&self.obj), vec![size])
                    .await?
            }
            Some(k) => {
                let key = Param::key(k).ok_or_else(|| self.bad_key(k))?;
                self.fetch(&sql::keys_after(&self.obj), vec![size, key])
                    .await?
            }
        };
        let table = self.obj.table.to_string();
        rows.rows
            .iter()
            .map(|r| {
                row_to_json(&table, r)
                    .map(|m| m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// Key reconciliation: which of the `known` keys (e.g. every linked record) no longer exist
    /// in the table — hard deletes. Pages through the keys; memory grows with `known` only.
    pub async fn missing_keys(&self, known: &BTreeSet<String>) -> Result<Vec<String>, MssqlError> {
        let mut missing = known.clone();
        let mut after: Option<Value> = None;
        loop {
            let page = self.keys_page(after.as_ref()).await?;
            for k in &page {
                if let Some(text) = key_text(k) {
                    missing.remove(&text);
                }
            }
            if page.len() < self.obj.page_size as usize || missing.is_empty() {
                return Ok(missing.into_iter().collect());
            }
            after = page.last().cloned();
        }
    }

    fn bad_key(&self, key: &Value) -> MssqlError {
        self.obj.type_error(
            self.obj.key.as_str(),
            "key",
            format!("key value {key} is neither a number nor text"),
        )
    }

    fn type_error(&self, column: &str, sql_type: &str, message: impl Into<String>) -> MssqlError {
        self.obj.type_error(column, sql_type, message)
    }

    /// A row's change kind: archive when its soft-delete column says deleted.
    fn kind_of(&self, row: &SqlRow) -> ChangeKind {
        if self.is_deleted_row(row) {
            ChangeKind::Archive
        } else {
            ChangeKind::Upsert
        }
    }

    /// The key of a row read, as JSON and as text.
    fn key_of(&self, row: &SqlRow, column: &str) -> Result<(Value, String), MssqlError> {
        let value = row
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null);
        let text = key_text(&value).ok_or_else(|| {
            self.type_error(column, "key", "the key is NULL or not a number/text")
        })?;
        Ok((value, text))
    }

    /// A present row as a change at a change-tracking version.
    fn tracked_row(&self, key: String, version: i64, row: SqlRow) -> RowChange {
        RowChange {
            key,
            kind: self.kind_of(&row),
            version: Rowversion(version as u64).hex(),
            modified_utc: self.modified_utc(&row),
            row,
        }
    }

    /// A row of change tracking's full read, as a change at the read's version.
    fn scanned_change(&self, row: &Row, version: i64) -> Result<(RowChange, Value), MssqlError> {
        let json = row_to_json(&self.obj.table.to_string(), row)?;
        let (key_value, key) = self.key_of(&json, self.obj.key.as_str())?;
        Ok((self.tracked_row(key, version, json), key_value))
    }

    /// A row of CHANGETABLE joined with the table: the change (None when it is hubsync's own
    /// write, known by its context), its version and key. A deleted row is an archive change
    /// carrying only its key.
    fn tracked_change(&self, row: &Row) -> Result<(Option<RowChange>, i64, Value), MssqlError> {
        let mut json = row_to_json(&self.obj.table.to_string(), row)?;
        let (key_value, key) = self.key_of(&json, sql::CT_KEY)?;
        let version = json
            .get(sql::CT_VERSION)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.type_error(sql::CT_VERSION, "bigint", "no change version"))?;
        let operation = json
            .get(sql::CT_OPERATION)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let context = json.get(sql::CT_CONTEXT_COLUMN).cloned();
        for c in [
            sql::CT_KEY,
            sql::CT_VERSION,
            sql::CT_OPERATION,
            sql::CT_CONTEXT_COLUMN,
        ] {
            json.remove(c);
        }
        let ours = context.and_then(|c| c.as_str().map(str::to_string))
            == Some(format_binary(sql::CT_CONTEXT));
        if ours {
            return Ok((None, version, key_value));
        }
        let gone = operation == "D" || self.key_of(&json, self.obj.key.as_str()).is_err();
        let change = if gone {
            let mut row = SqlRow::new();
            row.insert(self.obj.key.as_str().to_string(), key_value.clone());
            RowChange {
                key,
                kind: ChangeKind::Archive,
                version: Rowversion(version as u64).hex(),
                modified_utc: None,
                row,
            }
        } else {
            self.tracked_row(key, version, json)
        };
        Ok((Some(change), version, key_value))
    }

    /// Turns one result row into a change and its position.
    fn change_of(&self, row: &Row) -> Result<(RowChange, ChangeCursor), MssqlError> {
        let table = self.obj.table.to_string();
        let json = row_to_json(&table, row)?;
        let cell = |name: &str| -> Result<(&ColumnData<'static>, &str), MssqlError> {
            row.cells()
                .find(|(c, _)| c.name().eq_ignore_ascii_case(name))
                .map(|(c, d)| (d, c.name()))
                .ok_or_else(|| self.type_error(name, "missing", "column not in the result"))
        };
        let (_, key_name) = cell(self.obj.key.as_str())?;
        let (key_value, key) = self.key_of(&json, key_name)?;
        let (version, modified_utc, position) = match &self.obj.change {
            Mode::Rowversion(rv) => {
                let (data, name) = cell(rv.as_str())?;
                let value = match data {
                    ColumnData::Binary(Some(b)) if b.len() == 8 => {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(b);
                        u64::from_be_bytes(bytes)
                    }
                    ColumnData::I64(Some(v)) if *v >= 0 => *v as u64,
                    _ => {
                        return Err(self.type_error(
                            name,
                            "rowversion",
                            "expected a non-NULL rowversion (binary(8))",
                        ));
                    }
                };
                (
                    Rowversion(value).hex(),
                    self.modified_utc(&json),
                    ChangeCursor::Rowversion {
                        rowversion: Rowversion(value),
                    },
                )
            }
            Mode::ModifiedAt { column, .. } => {
                let (data, name) = cell(column.as_str())?;
                let at: NaiveDateTime =
                    NaiveDateTime::from_sql(data)
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            self.type_error(
                                name,
                                "modified_at",
                                "expected a non-NULL datetime/datetime2",
                            )
                        })?;
                (
                    format_datetime(at),
                    local_to_utc(at, self.pool.zone()),
                    ChangeCursor::ModifiedAt {
                        modified_at: at,
                        key: key_value,
                    },
                )
            }
            Mode::Tracking => {
                return Err(MssqlError::Protocol(
                    "change tracking rows are read by their own path".into(),
                ));
            }
        };
        // The soft-delete column must be in the result for its verdict to count.
        if let Some((column, _)) = &self.obj.soft_delete {
            cell(column.as_str())?;
        }
        let kind = self.kind_of(&json);
        Ok((
            RowChange {
                key,
                kind,
                version,
                modified_utc,
                row: json,
            },
            position,
        ))
    }
}

/// One poll over an object's changes, page by page.
pub struct Poll<'r> {
    reader: &'r ChangeReader,
    position: Position,
    stored: Option<ChangeCursor>,
    finished: bool,
    /// Change tracking: the current version when the poll started.
    tracking: Option<i64>,
    /// Change tracking: the stored version was older than the table's minimum valid version
    /// (changes were cleaned up unread), so this poll reads every row again.
    pub resynced: bool,
}

impl Poll<'_> {
    /// The next page of changes, or None when the poll has caught up. Store `page.cursor` after
    /// enqueueing `page.changes`; a crash before that only re-reads the page.
    pub async fn next_page(&mut self) -> Result<Option<ChangePage>, MssqlError> {
        if self.finished {
            return Ok(None);
        }
        let r = self.reader;
        if matches!(r.obj.change, Mode::Tracking) {
            return self.next_tracked_page().await;
        }
        let size = Param::I64(Some(i64::from(r.obj.page_size)));
        let rows = match &self.position {
            Position::Rowversion(rv) => {
                let rv = i64::try_from(*rv).unwrap_or(i64::MAX);
                r.fetch(&r.first_page, vec![size, Param::I64(Some(rv))])
                    .await?
            }
            Position::From(at) => {
                r.fetch(&r.first_page, vec![size, Param::DateTime(Some(*at))])
                    .await?
            }
            Position::After(at, key) => {
                let key = Param::key(key).ok_or_else(|| r.bad_key(key))?;
                r.fetch(&r.next_page, vec![size, Param::DateTime(Some(*at)), key])
                    .await?
            }
            Position::Changes { .. } | Position::Scan { .. } => {
                return Err(MssqlError::Protocol(
                    "a change tracking position outside change tracking mode".into(),
                ));
            }
        };
        if rows.rows.len() < r.obj.page_size as usize {
            self.finished = true;
        }
        if rows.rows.is_empty() {
            return Ok(None);
        }
        let mut changes = Vec::with_capacity(rows.rows.len());
        let mut reached = None;
        for row in &rows.rows {
            let (change, cursor) = r.change_of(row)?;
            changes.push(change);
            reached = Some(cursor);
        }
        let Some(reached) = reached else {
            return Ok(None);
        };
        self.position = Position::of(&reached);
        // The overlap re-reads rows below the stored high-water mark: never move it back.
        let cursor = match (&self.stored, reached) {
            (
                Some(
                    old @ ChangeCursor::ModifiedAt {
                        modified_at: old_at,
                        ..
                    },
                ),
                ChangeCursor::ModifiedAt { modified_at, .. },
            ) if modified_at < *old_at => old.clone(),
            (_, reached) => reached,
        };
        self.stored = Some(cursor.clone());
        Ok(Some(ChangePage { changes, cursor }))
    }
}

impl Poll<'_> {
    /// Change tracking: where the poll starts, against the server's versions. The first poll,
    /// and one whose stored version the cleanup has passed (changes lost unread), read every row
    /// as of the current version; that version then starts the change feed.
    async fn start_tracking(&mut self) -> Result<(), MssqlError> {
        let r = self.reader;
        let (current, min_valid) = r.tracking_versions().await?;
        self.tracking = Some(current);
        let behind = match &self.position {
            Position::Scan { version, .. } if *version < 0 => {
                self.position = Position::Scan {
                    version: current,
                    after: None,
                };
                return Ok(());
            }
            Position::Scan { version, .. } => *version < min_valid,
            Position::Changes { base, .. } => *base < min_valid,
            _ => false,
        };
        if behind {
            tracing::warn!(
                table = %r.obj.table,
                cursor = %self.stored.as_ref().map(ChangeCursor::to_json).unwrap_or_default(),
                min_valid_version = min_valid,
                current_version = current,
                "change tracking cleaned up changes hubsync had not read yet (the stored version \
                 is older than CHANGE_TRACKING_MIN_VALID_VERSION): reading every row again"
            );
            self.resynced = true;
            self.position = Position::Scan {
                version: current,
                after: None,
            };
        }
        Ok(())
    }

    async fn next_tracked_page(&mut self) -> Result<Option<ChangePage>, MssqlError> {
        if self.tracking.is_none() {
            self.start_tracking().await?;
        }
        let r = self.reader;
        let current = self.tracking.unwrap_or(0);
        let page_size = r.obj.page_size as usize;
        let size = Param::I64(Some(i64::from(r.obj.page_size)));
        let (changes, cursor) = match self.position.clone() {
            Position::Scan { version, after } => {
                let rows = match &after {
                    None => {
                        r.fetch(&sql::rows_in_key_order(&r.obj, false), vec![size])
                            .await?
                    }
                    Some(k) => {
                        let key = Param::key(k).ok_or_else(|| r.bad_key(k))?;
                        r.fetch(&sql::rows_in_key_order(&r.obj, true), vec![size, key])
                            .await?
                    }
                };
                let mut changes = Vec::with_capacity(rows.rows.len());
                let mut last = after;
                for row in &rows.rows {
                    let (change, key) = r.scanned_change(row, version)?;
                    changes.push(change);
                    last = Some(key);
                }
                let cursor = if rows.rows.len() < page_size {
                    self.finished = true;
                    ChangeCursor::tracked(version)
                } else {
                    self.position = Position::Scan {
                        version,
                        after: last.clone(),
                    };
                    ChangeCursor::scanning(version, last)
                };
                (changes, cursor)
            }
            Position::Changes { base, after } => {
                let base_param = Param::I64(Some(base));
                let rows = match &after {
                    None => r.fetch(&r.first_page, vec![size, base_param]).await?,
                    Some((v, k)) => {
                        let key = Param::key(k).ok_or_else(|| r.bad_key(k))?;
                        r.fetch(
                            &r.next_page,
                            vec![size, base_param, Param::I64(Some(*v)), key],
                        )
                        .await?
                    }
                };
                let mut changes = Vec::with_capacity(rows.rows.len());
                let mut last = after;
                for row in &rows.rows {
                    let (change, version, key) = r.tracked_change(row)?;
                    changes.extend(change);
                    last = Some((version, key));
                }
                let cursor = if rows.rows.len() < page_size {
                    // Caught up: every change up to the version current at the start has been
                    // read (versions are given at commit), and so has every one read since.
                    self.finished = true;
                    let reached = last.as_ref().map_or(base, |(v, _)| *v);
                    ChangeCursor::tracked(base.max(current).max(reached))
                } else {
                    self.position = Position::Changes {
                        base,
                        after: last.clone(),
                    };
                    match last {
                        Some(last) => ChangeCursor::tracked_after(base, last),
                        None => ChangeCursor::tracked(base),
                    }
                };
                (changes, cursor)
            }
            _ => {
                return Err(MssqlError::Protocol(
                    "a non-change-tracking position in change tracking mode".into(),
                ));
            }
        };
        if changes.is_empty() && self.stored.as_ref() == Some(&cursor) {
            return Ok(None);
        }
        self.stored = Some(cursor.clone());
        Ok(Some(ChangePage { changes, cursor }))
    }
}

/// Whether a soft-delete column's value marks the row deleted.
pub fn is_deleted(when: DeletedWhen, value: &Value) -> bool {
    match when {
        DeletedWhen::NotNull => !value.is_null(),
        DeletedWhen::False => value == &Value::Bool(false) || value.as_f64() == Some(0.0),
        DeletedWhen::True => {
            value == &Value::Bool(true) || value.as_f64().is_some_and(|n| n != 0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn soft_delete_rules() {
        assert!(is_deleted(DeletedWhen::False, &json!(false)));
        assert!(is_deleted(DeletedWhen::False, &json!(0)));
        assert!(!is_deleted(DeletedWhen::False, &json!(true)));
        assert!(!is_deleted(DeletedWhen::False, &Value::Null));
        assert!(is_deleted(DeletedWhen::True, &json!(1)));
        assert!(!is_deleted(DeletedWhen::True, &json!(false)));
        assert!(is_deleted(
            DeletedWhen::NotNull,
            &json!("2024-03-09T10:00:00")
        ));
        assert!(!is_deleted(DeletedWhen::NotNull, &Value::Null));
    }
}
