//! Resyncs (`hubsync resync`, resync jobs): named members' current SQL Server rows queued for
//! HubSpot now, even when nothing changed since their last sync, each at its row's own version
//! so that a newer change is never replaced by it.

use sqlx::PgPool;

use super::engine::ObjectSync;
use crate::mssql::{ChangeReader, SqlRow};
use crate::queue::{Direction, NewItem, Operation, Seen, enqueue_with};

/// What a resync queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resynced {
    /// Items queued or refreshed.
    pub queued: u64,
    /// Keys with no SQL Server row.
    pub missing: Vec<String>,
}

/// A member's current row as an item for HubSpot, at the row's own version (its rowversion,
/// or its modification time in epoch microseconds).
pub fn row_item(reader: &ChangeReader, key: &str, row: &SqlRow) -> NewItem {
    let version = reader
        .rowversion_of(row)
        .map(|v| v as i64)
        .or_else(|| reader.modified_utc(row).map(|t| t.timestamp_micros()))
        .unwrap_or(0);
    NewItem {
        record_key: key.to_string(),
        operation: Operation::Upsert,
        payload: serde_json::Value::Object(row.clone()),
        source_version: version,
    }
}

/// Queues the current rows of `members` (keys) of `object` for HubSpot in one transaction.
pub async fn queue_members(
    object: &ObjectSync,
    pool: &PgPool,
    members: &[String],
    max_attempts: i32,
) -> anyhow::Result<Resynced> {
    let reader = &object.poller.reader;
    let rows = reader.rows_by_keys(members).await?;
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for key in members {
        let Some(row) = rows.get(key) else {
            missing.push(key.clone());
            continue;
        };
        items.push(row_item(reader, key, row));
    }
    let mut tx = pool.begin().await?;
    let queued = enqueue_with(
        &mut tx,
        &object.name,
        Direction::ToHubspot,
        &items,
        max_attempts,
        Seen::Requeue,
    )
    .await?;
    tx.commit().await?;
    Ok(Resynced { queued, missing })
}
