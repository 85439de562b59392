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
    let detection = match &config.change_detection {
        Some(d) if d.mode == ChangeMode::ModifiedAt => Detection::ModifiedAt {
            column: d.column.clone(),
            overlap: d.overlap,
        },
        Some(d) => Detection::Rowversion {
            column: d.column.clone(),
        },
        None => Detection::Rowversion {
            column: "rv".into(),
        },
    };
    let mut settings =
        crate::mssql::SqlObjectSettings::new(&config.sql_table, &config.sql_key, detection);
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

impl SqlPoller {
    fn lock_name(&self) -> String {
        format!("hubsync:poll:{}:{}", self.object, Direction::ToHubspot)
    }

    /// Polls once if elected: reads every change since the stored cursor.
    pub async fn poll_once(&self) -> anyhow::Result<Polled> {
        let mut lock = self.pool.acquire().await?;
        let elected: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(self.lock_name())
                .fetch_one(&mut *lock)
                .await?;
        if !elected {
            return Ok(Polled::default());
        }
        let result = self.read_all().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(self.lock_name())
            .execute(&mut *lock)
            .await;
        result
    }

    async fn read_all(&self) -> anyhow::Result<Polled> {
        let stored: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT cursor_value FROM sync_cursors WHERE object = $1 AND direction = $2",
        )
        .bind(&self.object)
        .bind(Direction::ToHubspot.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let cursor = stored.and_then(|v| ChangeCursor::from_json(&v).ok());
        let mut poll = self.reader.poll(cursor);
        let mut out = Polled {
            elected: true,
            ..Polled::default()
        };
        while let Some(page) = poll.next_page().await? {
            out.rows_read += page.changes.len() as u64;
            let items: Vec<NewItem> = page
                .changes
                .iter()
                .filter_map(|c| {
                    Some(NewItem {
                        record_key: c.key.clone(),
                        operation: match c.kind {
                            ChangeKind::Upsert => Operation::Upsert,
                            ChangeKind::Archive => Operation::Archive,
                        },
                        payload: serde_json::Value::Object(c.row.clone()),
                        source_version: source_version(c)?,
                    })
                })
                .collect();
            let mut tx = self.pool.begin().await?;
            out.items_enqueued += enqueue_on(
                &mut tx,
                &self.object,
                Direction::ToHubspot,
                &items,
                self.max_attempts,
            )
            .await?;
            sqlx::query(
                "INSERT INTO sync_cursors (object, direction, cursor_value, last_change_at) \
                 VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END) \
                 ON CONFLICT (object, direction) DO UPDATE SET cursor_value = EXCLUDED.cursor_value, \
                   updated_at = now(), \
                   last_change_at = coalesce(EXCLUDED.last_change_at, sync_cursors.last_change_at)",
            )
            .bind(&self.object)
            .bind(Direction::ToHubspot.as_str())
            .bind(page.cursor.to_json())
            .bind(!items.is_empty())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(out)
    }
}
