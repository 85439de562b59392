//! Backfills (`hubsync backfill`): every record of an object read from one side and queued
//! again — the initial load, or a full resync after a mapping change — page by page, each page
//! queued together with the backfill's position (`sync_backfills`) so an interrupted backfill
//! resumes where it stopped. Also the page readers that dry runs share.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::engine::ObjectSync;
use super::poller::queue_items;
use super::to_sql::HubspotPoller;
use crate::hubspot::SearchPager;
use crate::mssql::{ChangeCursor, ChangeReader};
use crate::queue::{Direction, NewItem, Seen, enqueue_with};

/// Pages of one object's records read from one side, as queue items with the position after
/// each page.
pub enum Pages<'a> {
    Sql(crate::mssql::Poll<'a>),
    Hubspot {
        pager: SearchPager<'a>,
        poller: &'a HubspotPoller,
    },
}

impl<'a> Pages<'a> {
    /// SQL Server rows changed after `cursor` (None: every row).
    pub fn sql(reader: &'a ChangeReader, cursor: Option<ChangeCursor>) -> Self {
        Pages::Sql(reader.poll(cursor))
    }

    /// HubSpot records modified since `since`, after record id `after_id` when resuming.
    pub fn hubspot(poller: &'a HubspotPoller, since: DateTime<Utc>, after_id: Option<u64>) -> Self {
        let mut pager = poller.pager(since);
        if let Some(id) = after_id {
            pager = pager.after_id(id);
        }
        Pages::Hubspot { pager, poller }
    }

    /// The next page's items and the position after it; None at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Vec<NewItem>, u64, Value)>> {
        match self {
            Pages::Sql(poll) => Ok(poll.next_page().await?.map(|page| {
                let read = page.changes.len() as u64;
                let cursor = page.cursor.to_json();
                (queue_items(page.changes), read, cursor)
            })),
            Pages::Hubspot { pager, poller } => {
                let Some(records) = pager.next_page().await? else {
                    return Ok(None);
                };
                let items = poller.queue_items(&records);
                Ok(Some((
                    items,
                    records.len() as u64,
                    json!({ "after_id": pager.position() }),
                )))
            }
        }
    }
}

/// A backfill's stored progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub cursor: Option<Value>,
    pub total: Option<u64>,
    pub rows_read: u64,
    pub enqueued: u64,
    /// True when this run continues an interrupted one.
    pub resumed: bool,
}

/// cursor, total, rows read, enqueued, finished.
type StoredBackfill = (Option<Value>, Option<i64>, i64, i64, bool);

/// Starts a backfill of `object` in `direction`, or resumes an unfinished one (unless
/// `restart`).
pub async fn start(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    total: Option<u64>,
    restart: bool,
) -> anyhow::Result<Progress> {
    let row: Option<StoredBackfill> = sqlx::query_as(
        "SELECT cursor_value, total, rows_read, enqueued, finished_at IS NOT NULL \
         FROM sync_backfills WHERE object = $1 AND direction = $2",
    )
    .bind(object)
    .bind(direction.as_str())
    .fetch_optional(pool)
    .await?;
    if let Some((cursor, stored_total, read, enqueued, false)) = row
        && !restart
    {
        return Ok(Progress {
            cursor,
            total: stored_total.map(|t| t as u64).or(total),
            rows_read: read as u64,
            enqueued: enqueued as u64,
            resumed: true,
        });
    }
    sqlx::query(
        "INSERT INTO sync_backfills (object, direction, total) VALUES ($1, $2, $3) \
         ON CONFLICT (object, direction) DO UPDATE SET cursor_value = NULL, total = $3, \
           rows_read = 0, enqueued = 0, started_at = now(), updated_at = now(), finished_at = NULL",
    )
    .bind(object)
    .bind(direction.as_str())
    .bind(total.map(|t| t as i64))
    .execute(pool)
    .await?;
    Ok(Progress {
        total,
        ..Progress::default()
    })
}

/// Queues one page again (even versions already synced) and stores the position after it, in
/// one transaction.
pub async fn queue_page(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    items: &[NewItem],
    read: u64,
    cursor: &Value,
    max_attempts: i32,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    let n = enqueue_with(
        &mut tx,
        object,
        direction,
        items,
        max_attempts,
        Seen::Requeue,
    )
    .await?;
    sqlx::query(
        "UPDATE sync_backfills SET cursor_value = $3, rows_read = rows_read + $4, \
         enqueued = enqueued + $5, updated_at = now() WHERE object = $1 AND direction = $2",
    )
    .bind(object)
    .bind(direction.as_str())
    .bind(cursor)
    .bind(read as i64)
    .bind(n as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Marks the backfill finished. A SQL Server poller that has never run starts from where the
/// backfill ended: the backfill read (and queued) every row up to that position, which is all
/// the poller's first pass would read, so the service's first start does not read the whole
/// table again.
pub async fn finish(pool: &PgPool, object: &str, direction: Direction) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE sync_backfills SET finished_at = now(), updated_at = now() \
         WHERE object = $1 AND direction = $2",
    )
    .bind(object)
    .bind(direction.as_str())
    .execute(&mut *tx)
    .await?;
    if direction == Direction::ToHubspot {
        sqlx::query(
            "INSERT INTO sync_cursors (object, direction, cursor_value) \
             SELECT object, direction, cursor_value FROM sync_backfills \
             WHERE object = $1 AND direction = $2 AND cursor_value IS NOT NULL \
             ON CONFLICT (object, direction) DO NOTHING",
        )
        .bind(object)
        .bind(direction.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Every record of the object on the source side of `direction`, from `cursor` (a backfill's
/// stored position) on.
pub fn pages<'a>(
    object: &'a ObjectSync,
    direction: Direction,
    cursor: Option<&Value>,
) -> Pages<'a> {
    match direction {
        Direction::ToHubspot => Pages::sql(
            &object.poller.reader,
            cursor.and_then(|c| ChangeCursor::from_json(c).ok()),
        ),
        Direction::ToSql => Pages::hubspot(
            &object.hubspot_poller,
            DateTime::<Utc>::UNIX_EPOCH,
            cursor.and_then(|c| c["after_id"].as_u64()),
        ),
    }
}

/// Queues every record of `object` in `direction`, resuming an unfinished backfill; `tick` is
/// called after each page with the progress so far.
pub async fn run(
    object: &ObjectSync,
    pool: &PgPool,
    direction: Direction,
    restart: bool,
    max_attempts: i32,
    mut tick: impl FnMut(&Progress),
) -> anyhow::Result<Progress> {
    let total = match direction {
        Direction::ToHubspot => Some(object.poller.reader.count().await?),
        Direction::ToSql => None,
    };
    let mut progress = start(pool, &object.name, direction, total, restart).await?;
    tick(&progress);
    let mut pages = pages(object, direction, progress.cursor.as_ref());
    while let Some((items, read, cursor)) = pages.next().await? {
        progress.enqueued += queue_page(
            pool,
            &object.name,
            direction,
            &items,
            read,
            &cursor,
            max_attempts,
        )
        .await?;
        progress.rows_read += read;
        progress.cursor = Some(cursor);
        tick(&progress);
    }
    finish(pool, &object.name, direction).await?;
    Ok(progress)
}
