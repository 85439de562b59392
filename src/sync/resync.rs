//! Resyncs (`hubsync resync`, resync jobs): named members' current SQL Server rows queued for
//! HubSpot now, even when nothing changed since their last sync, each at its row's own version
//! so that a newer change is never replaced by it.

use sqlx::PgPool;

use super::engine::ObjectSync;
use crate::queue::{Direction, NewItem, Operation, Seen, enqueue_with};

/// What a resync queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resynced {
    /// Items queued or refreshed.
    pub queued: u64,
    /// Keys with no SQL Server row.
    pub missing: Vec<String>,
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
        let version = reader
            .rowversion_of(row)
            .map(|v| v as i64)
            .or_else(|| reader.modified_utc(row).map(|t| t.timestamp_micros()))
            .unwrap_or(0);
        items.push(NewItem {
            record_key: key.clone(),
            operation: Operation::Upsert,
            payload: serde_json::Value::Object(row.clone()),
            source_version: version,
        });
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
