//! The dry-run driver: reads what `run --once` (pending items and changes since the stored
//! cursors) or a backfill (every record) would process, plans it in batches with the workers'
//! own planning code, and prints each record's planned operation. Reads only.

use std::collections::BTreeMap;
use std::io::Write;

use super::backfill::{Pages, pages};
use super::engine::ObjectSync;
use super::plan::{PlannedOp, Report, dry_items};
use super::poller::load_cursor;
use super::to_hubspot::Lookup;
use crate::mssql::ChangeCursor;
use crate::queue::{Direction, NewItem, Operation, Queue};

/// Which records a dry run plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What `run --once` would process: pending items and changes since the stored cursor.
    SinceCursor,
    /// What a backfill would queue: every record.
    Everything,
}

/// Plans one object in one direction, printing each planned operation to `out`.
pub async fn plan_object(
    object: &ObjectSync,
    queue: &Queue,
    direction: Direction,
    scope: Scope,
    report: &mut Report,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let batch = queue.settings().batch_size.max(1) as usize;
    let mut pages = match scope {
        Scope::Everything => pages(object, direction, None),
        Scope::SinceCursor => {
            let stored = load_cursor(queue.pool(), &object.name, direction).await?;
            match direction {
                Direction::ToHubspot => Pages::sql(
                    &object.poller.reader,
                    stored.and_then(|c| ChangeCursor::from_json(&c).ok()),
                ),
                Direction::ToSql => {
                    let poller = &object.hubspot_poller;
                    let pass = poller.pass(stored.as_ref(), chrono::Utc::now());
                    let since = chrono::DateTime::from_timestamp_millis(pass.since_ms);
                    Pages::hubspot(poller, since.unwrap_or_default(), None)
                }
            }
        }
    };
    // Pending items first; a newer change read now replaces an item, as enqueueing would.
    let mut records: BTreeMap<String, NewItem> = BTreeMap::new();
    if scope == Scope::SinceCursor {
        for item in pending(queue, &object.name, direction).await? {
            records.insert(item.record_key.clone(), item);
        }
    }
    while let Some((items, _, _)) = pages.next().await? {
        if scope == Scope::Everything {
            plan_items(object, direction, batch, items, report, out).await?;
            continue;
        }
        for item in items {
            let newer = records
                .get(&item.record_key)
                .is_none_or(|cur| item.source_version > cur.source_version);
            if newer {
                records.insert(item.record_key.clone(), item);
            }
        }
    }
    if !records.is_empty() {
        let items = records.into_values().collect();
        plan_items(object, direction, batch, items, report, out).await?;
    }
    Ok(())
}

/// Plans `items` in batches of `batch` and prints each record's operation.
async fn plan_items(
    object: &ObjectSync,
    direction: Direction,
    batch: usize,
    items: Vec<NewItem>,
    report: &mut Report,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let claimed = dry_items(&object.name, direction, items);
    for chunk in claimed.chunks(batch) {
        let ops: Vec<PlannedOp> = match direction {
            Direction::ToHubspot => {
                let steps = object.to_hubspot.plan(chunk, Lookup::Always).await;
                steps.iter().map(|s| s.describe(&object.name)).collect()
            }
            Direction::ToSql => object.to_sql.plan_ops(chunk).await,
        };
        for op in &ops {
            report.print(op, out)?;
        }
    }
    Ok(())
}

/// Pending queue items of one object and direction, as they were queued.
async fn pending(
    queue: &Queue,
    object: &str,
    direction: Direction,
) -> anyhow::Result<Vec<NewItem>> {
    let rows: Vec<(String, String, serde_json::Value, i64)> = sqlx::query_as(
        "SELECT record_key, operation, payload, source_version FROM sync_queue \
         WHERE object = $1 AND direction = $2 AND state = 'pending' ORDER BY id",
    )
    .bind(object)
    .bind(direction.as_str())
    .fetch_all(queue.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(record_key, operation, payload, source_version)| NewItem {
            record_key,
            operation: if operation == "archive" {
                Operation::Archive
            } else {
                Operation::Upsert
            },
            payload,
            source_version,
        })
        .collect())
}
