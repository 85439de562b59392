//! The SQL Server poller of one object: elected across hubsync instances with a PostgreSQL
//! advisory lock, it reads changes since the stored cursor and, page by page, enqueues them and
//! advances the cursor in one PostgreSQL transaction. A crash between read and commit only means
//! the same rows are read again (enqueueing is idempotent); it never skips a row.

use sqlx::PgPool;

use crate::mapping::{ChangeMode, ObjectConfig};
use crate::mssql::{ChangeCursor, ChangeKind, ChangeReader, RowChange};
use crate::queue::{Direction, NewItem, Operation, enqueue_on};

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// False when another instance holds this poller's lock (it polls instead).
    pub elected: bool,
    pub rows_read: u64,
    pub items_enqueued: u64,
    /// Change tracking: the stored version was older than the minimum valid one, so every row
    /// was read again.
    pub resynced: bool,
}

pub struct SqlPoller {
    pub object: String,
    pub reader: ChangeReader,
    pub pool: PgPool,
    pub max_attempts: i32,
}

/// The SQL Server side settings of an object from its `objects.<name>` configuration.
pub fn sql_object_settings(config: &ObjectConfig) -> crate::mssql::SqlObjectSettings {
    use crate::mssql::ChangeDetection as Detection;
    // A missing column is reported by the object's own check; "" is refused as an identifier.
    let detection = match &config.change_detection {
        Some(d) if d.mode == ChangeMode::ModifiedAt => Detection::ModifiedAt {
            column: d.column.clone().unwrap_or_default(),
            overlap: d.overlap,
        },
        Some(d) if d.mode == ChangeMode::ChangeTracking => Detection::ChangeTracking,
        Some(d) => Detection::Rowversion {
            column: d.column.clone().unwrap_or_default(),
        },
        None => Detection::Rowversion {
            column: "rv".into(),
        },
    };
    let mut settings =
        crate::mssql::SqlObjectSettings::new(&config.sql_table, &config.sql_key, detection);
    // Only the mapped columns (and those an archive or erasure in HubSpot sets) are read; the
    // key and change-tracking columns are added.
    let archive_column = config.on_hubspot_archive.column.iter();
    let erasure_column = config.on_hubspot_erasure.column.iter();
    let columns = config.fields.iter().map(|f| &f.sql);
    for column in columns.chain(archive_column).chain(erasure_column) {
        if !settings.columns.contains(column) {
            settings.columns.push(column.clone());
        }
    }
    settings.modified_column = config
        .change_detection
        .as_ref()
        .and_then(|d| d.modified_column.clone());
    settings.on_new_hubspot_record = match config.on_new_hubspot_record {
        crate::mapping::OnNewHubspotRecord::Insert => crate::mssql::NewRecordPolicy::Insert,
        crate::mapping::OnNewHubspotRecord::Ignore => crate::mssql::NewRecordPolicy::Ignore,
    };
    settings
}

/// A change's version as the queue's `source_version`: the rowversion as a number, or the
/// modification time in epoch microseconds.
pub fn source_version(change: &RowChange) -> Option<i64> {
    if let Some(hex) = change.version.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as i64);
    }
    change.modified_utc.map(|t| t.timestamp_micros())
}

/// Queue items for changed SQL Server rows (the rows move into the payloads).
pub fn queue_items(changes: Vec<RowChange>) -> Vec<NewItem> {
    changes
        .into_iter()
        .filter_map(|c| {
            Some(NewItem {
                source_version: source_version(&c)?,
                record_key: c.key,
                operation: match c.kind {
                    ChangeKind::Upsert => Operation::Upsert,
                    ChangeKind::Archive => Operation::Archive,
                },
                payload: serde_json::Value::Object(c.row),
            })
        })
        .collect()
}

/// Runs `poll` only while holding the poller's advisory lock, so that of several hubsync
/// instances on one database exactly one polls each object and direction.
pub async fn elected<F, Fut>(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    poll: F,
) -> anyhow::Result<Polled>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Polled>>,
{
    let name = format!("hubsync:poll:{object}:{direction}");
    let mut holder = LockHolder(Some(pool.acquire().await?));
    let lock = holder.0.as_mut().expect("just acquired");
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&name)
        .fetch_one(&mut **lock)
        .await?;
    if !got {
        drop(holder.0.take());
        return Ok(Polled::default());
    }
    // Operators (and tests) can see which instance polled when: at debug level, one line as
    // the lock is taken and one before it is given back.
    tracing::debug!(poller = %name, "elected: polling");
    let result = poll().await;
    tracing::debug!(poller = %name, ok = result.is_ok(), "poll finished: releasing the lock");
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&name)
        .execute(&mut **lock)
        .await;
    if unlocked.is_ok() {
        drop(holder.0.take());
    }
    result.map(|p| Polled { elected: true, ..p })
}

/// The connection holding a poller's advisory lock: returned to the pool once the lock is
/// released, closed when the poll is dropped midway (cancelled by a reload or shutdown) so the
/// session's lock ends with it instead of living on in the pool.
struct LockHolder(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>);

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// The stored position of a poller, if any.
pub async fn load_cursor(
    pool: &PgPool,
    object: &str,
    direction: Direction,
) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar(
        "SELECT cursor_value FROM sync_cursors WHERE object = $1 AND direction = $2",
    )
    .bind(object)
    .bind(direction.as_str())
    .fetch_optional(pool)
    .await?)
}

/// Enqueues one page of changes and stores the position after it, in one transaction.
pub async fn enqueue_page(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    items: &[NewItem],
    cursor: serde_json::Value,
    max_attempts: i32,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = enqueue_on(&mut tx, object, direction, items, max_attempts).await?;
    sqlx::query(
        "INSERT INTO sync_cursors (object, direction, cursor_value, last_change_at) \
         VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END) \
         ON CONFLICT (object, direction) DO UPDATE SET cursor_value = EXCLUDED.cursor_value, \
           updated_at = now(), \
           last_change_at = coalesce(EXCLUDED.last_change_at, sync_cursors.last_change_at)",
    )
    .bind(object)
    .bind(direction.as_str())
    .bind(cursor)
    .bind(!items.is_empty())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}

impl SqlPoller {
    /// Polls once if elected: reads every change since the stored cursor.
    pub async fn poll_once(&self) -> anyhow::Result<Polled> {
        elected(&self.pool, &self.object, Direction::ToHubspot, || {
            self.read_all()
        })
        .await
    }

    async fn read_all(&self) -> anyhow::Result<Polled> {
        let stored = load_cursor(&self.pool, &self.object, Direction::ToHubspot).await?;
        let cursor = stored.and_then(|v| ChangeCursor::from_json(&v).ok());
        let mut poll = self.reader.poll(cursor);
        let mut out = Polled::default();
        while let Some(page) = poll.next_page().await? {
            out.resynced |= poll.resynced;
            out.rows_read += page.changes.len() as u64;
            let items = queue_items(page.changes);
            out.items_enqueued += enqueue_page(
                &self.pool,
                &self.object,
                Direction::ToHubspot,
                &items,
                page.cursor.to_json(),
                self.max_attempts,
            )
            .await?;
        }
        Ok(out)
    }
}
