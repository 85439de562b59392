//! The HubSpot → SQL Server direction: the HubSpot poller (search by `lastmodifieddate`, elected
//! like the SQL Server one) and the to_sql step: HubSpot values of fields mapped `both`/`to_sql`
//! are diffed against the record link (our own writes coming back are no change), conflicts with
//! SQL Server-side changes are resolved by policy and recorded, and the winners written to SQL
//! Server in one transaction per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::diff::{self, Modified, Values};
use super::history;
use super::links::{self, ConflictRecord, LinkUpdate};
use super::merges::{self, MERGED_IDS, Merge};
use super::plan::PlannedOp;
use super::poller::{Polled, elected, enqueue_page, load_cursor};
use super::to_hubspot::validation_error;
use super::worker::{BatchHandler, BatchResult};
use super::writes::{self, By};
use crate::hubspot::types::Record;
use crate::hubspot::{HubSpotClient, ModifiedSince, SearchPager, modified_property};
use crate::mapping::{ArchiveAction, Mapper, OnHubspotArchive};
use crate::mssql::{ChangeReader, NewRecordPolicy, RowOutcome, RowWrite, SqlWriter};
use crate::queue::{ClaimedItem, Direction, ItemError, NewItem, Operation, Outcome};
use crate::telemetry::OperationLog;

/// Polls HubSpot for records of one object modified since the stored cursor.
pub struct HubspotPoller {
    pub object: String,
    pub hubspot_object: String,
    pub client: Arc<HubSpotClient>,
    /// Properties to read: the mapped ones.
    pub properties: Vec<String>,
    pub pool: PgPool,
    pub max_attempts: i32,
    /// Re-read this far behind the cursor (HubSpot's search index lags writes).
    pub lag: Duration,
    /// List archived records this often (None: never, `on_hubspot_archive` is `ignore`).
    pub archive_scan: Option<Duration>,
    /// When archived records were last listed.
    pub last_archive_scan: std::sync::Mutex<Option<Instant>>,
}

/// A HubSpot poller pass: records modified in `since_ms..=until_ms` (epoch ms), read in id
/// order; `after_id` is the last id read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pass {
    pub since_ms: i64,
    pub until_ms: i64,
    pub after_id: u64,
}

/// The HubSpot poller's stored position (`sync_cursors.cursor_value`).
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Every change modified at or before this time has been read.
    high: i64,
    /// Archived records up to this archive time have been queued.
    archived_high: i64,
    /// The pass under way, if one was interrupted.
    pass: Option<Pass>,
}

impl Cursor {
    fn to_json(self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "lastmodifieddate_ms": self.high,
            "archived_at_ms": self.archived_high,
        });
        if let Some(pass) = self.pass {
            v["pass"] = serde_json::to_value(pass).unwrap_or_default();
        }
        v
    }
}

/// A HubSpot timestamp in epoch milliseconds.
fn epoch_ms(value: &str) -> Option<i64> {
    diff::hubspot_time(value).map(|t| t.timestamp_millis())
}

impl HubspotPoller {
    /// The properties a poll reads: the mapped ones, the modification date and the ids merged
    /// into the contact (a survivor of a HubSpot merge belongs to the member linked to one).
    pub fn read_properties(&self) -> Vec<String> {
        let mut properties = self.properties.clone();
        properties.push(modified_property(&self.hubspot_object).to_string());
        properties.push(MERGED_IDS.to_string());
        properties
    }

    /// Every change modified at or before this time (epoch ms) has been read, by a stored
    /// cursor; 0 without one.
    pub fn high_water(stored: Option<&serde_json::Value>) -> i64 {
        stored
            .and_then(|v| v["lastmodifieddate_ms"].as_i64())
            .unwrap_or(0)
    }

    /// Where a poll from the stored high-water mark `high` (epoch ms) starts: `lag` behind it,
    /// for HubSpot's search index.
    pub fn since(&self, high: i64) -> DateTime<Utc> {
        let since_ms = (high - self.lag.as_millis() as i64).max(0);
        DateTime::<Utc>::from_timestamp_millis(since_ms).unwrap_or_default()
    }

    /// The pass a poll makes: the one a stored cursor left unfinished, or a new one over every
    /// change since the high-water mark (less the lag) up to `now`.
    pub fn pass(&self, stored: Option<&serde_json::Value>, now: DateTime<Utc>) -> Pass {
        if let Some(pass) = stored
            .and_then(|v| v.get("pass"))
            .and_then(|p| serde_json::from_value::<Pass>(p.clone()).ok())
        {
            return pass;
        }
        Pass {
            since_ms: self.since(Self::high_water(stored)).timestamp_millis(),
            until_ms: now.timestamp_millis(),
            after_id: 0,
        }
    }

    /// A search over records modified since `since`, returning the properties a poll reads.
    pub fn pager(&self, since: DateTime<Utc>) -> SearchPager<'_> {
        self.pager_until(since, None)
    }

    fn pager_until(&self, since: DateTime<Utc>, until: Option<DateTime<Utc>>) -> SearchPager<'_> {
        self.client.search_modified(
            &self.hubspot_object,
            ModifiedSince {
                since,
                until,
                properties: self.read_properties(),
            },
        )
    }

    /// Queue items for HubSpot records, versioned by their modification time.
    pub fn queue_items(&self, records: &[Record]) -> Vec<NewItem> {
        let modified = modified_property(&self.hubspot_object);
        records
            .iter()
            .filter_map(|r| {
                let version = r.property(modified).and_then(epoch_ms)?;
                Some(NewItem {
                    record_key: r.id.clone(),
                    operation: Operation::Upsert,
                    payload: serde_json::to_value(&r.properties).ok()?,
                    source_version: version,
                })
            })
            .collect()
    }

    pub async fn poll_once(&self) -> anyhow::Result<Polled> {
        elected(&self.pool, &self.object, Direction::ToSql, || {
            self.read_all()
        })
        .await
    }

    /// One pass over the changes since the cursor. The cursor never moves past a time it has
    /// not fully read: a pass covers a fixed window (the high-water mark less the lag, up to the
    /// pass's start), stores its position (the last record id) with every page it enqueues, and
    /// only when it is complete does the high-water mark become the pass's start. A record
    /// modified behind the pass while it runs is past its window and is read by the next one;
    /// an interrupted pass is resumed where it stopped.
    async fn read_all(&self) -> anyhow::Result<Polled> {
        let stored = load_cursor(&self.pool, &self.object, Direction::ToSql).await?;
        let high = Self::high_water(stored.as_ref());
        let archived_high = stored
            .as_ref()
            .and_then(|v| v["archived_at_ms"].as_i64())
            .unwrap_or(0);
        let pass = self.pass(stored.as_ref(), Utc::now());
        let time = |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        let mut pager = self
            .pager_until(time(pass.since_ms), Some(time(pass.until_ms)))
            .after_id(pass.after_id);
        let mut out = Polled::default();
        while let Some(records) = pager.next_page().await? {
            out.rows_read += records.len() as u64;
            let items = self.queue_items(&records);
            let position = Pass {
                after_id: pager.position(),
                ..pass
            };
            let cursor = Cursor {
                high,
                archived_high,
                pass: Some(position),
            };
            out.items_enqueued += enqueue_page(
                &self.pool,
                &self.object,
                Direction::ToSql,
                &items,
                cursor.to_json(),
                self.max_attempts,
            )
            .await?;
        }
        let complete = Cursor {
            high: high.max(pass.until_ms),
            archived_high,
            pass: None,
        };
        let (pool, object, attempts) = (&self.pool, &self.object, self.max_attempts);
        enqueue_page(
            pool,
            object,
            Direction::ToSql,
            &[],
            complete.to_json(),
            attempts,
        )
        .await?;
        if self.archive_scan_due() {
            let cursor = |a| {
                Cursor {
                    archived_high: a,
                    ..complete
                }
                .to_json()
            };
            let archived = self.read_archived(archived_high, &cursor).await?;
            out.rows_read += archived.rows_read;
            out.items_enqueued += archived.items_enqueued;
        }
        Ok(out)
    }

    /// Whether archived records should be listed now (and, if so, notes the time).
    fn archive_scan_due(&self) -> bool {
        let Some(every) = self.archive_scan else {
            return false;
        };
        let mut last = self
            .last_archive_scan
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Lists HubSpot's archived records (search never returns them) and enqueues, as archive
    /// items, those archived since the stored cursor (minus the lag).
    async fn read_archived(
        &self,
        stored: i64,
        cursor: &(dyn Fn(i64) -> serde_json::Value + Sync),
    ) -> anyhow::Result<Polled> {
        let mut high = stored;
        let since = (stored - self.lag.as_millis() as i64).max(0);
        let properties: Vec<&str> = self.properties.iter().map(String::as_str).collect();
        let mut out = Polled::default();
        let mut after: Option<String> = None;
        loop {
            let (records, next) = self
                .client
                .list_archived_page(&self.hubspot_object, &properties, after.as_deref())
                .await?;
            out.rows_read += records.len() as u64;
            let items: Vec<NewItem> = records
                .iter()
                .filter_map(|r| {
                    let at = r.archived_at.as_deref().and_then(epoch_ms)?;
                    high = high.max(at);
                    (at >= since).then(|| NewItem {
                        record_key: r.id.clone(),
                        operation: Operation::Archive,
                        payload: serde_json::to_value(&r.properties).unwrap_or_default(),
                        source_version: at,
                    })
                })
                .collect();
            // Pages come in id order, not archive order: the cursor moves once all are queued.
            out.items_enqueued += enqueue_page(
                &self.pool,
                &self.object,
                Direction::ToSql,
                &items,
                cursor(stored),
                self.max_attempts,
            )
            .await?;
            match next {
                Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                _ => break,
            }
        }
        if high > stored {
            let (pool, object) = (&self.pool, &self.object);
            let attempts = self.max_attempts;
            enqueue_page(pool, object, Direction::ToSql, &[], cursor(high), attempts).await?;
        }
        Ok(out)
    }
}

/// Writes one object's HubSpot changes to SQL Server.
pub struct ToSql {
    pub object: String,
    pub mapper: Arc<Mapper>,
    pub reader: Arc<ChangeReader>,
    pub writer: Arc<SqlWriter>,
    pub pool: PgPool,
    /// What a record archived in HubSpot does to its SQL row.
    pub on_archive: OnHubspotArchive,
}

/// A row to write and what to record once it is written.
pub struct Pending<'a> {
    item: &'a ClaimedItem,
    write: RowWrite,
    /// HubSpot values now agreed on (merged into the link's snapshot).
    synced: Values,
    sql_key: Option<String>,
    /// `WRITE`, or `ARCHIVE` for a record archived in HubSpot.
    operation: &'static str,
    /// The HubSpot values written (recorded in `sync_writes` before the write).
    sent: Values,
}

impl ToSql {
    /// The SQL key an unlinked HubSpot record carries in the key column's property, if any.
    fn carried_key(&self, item: &ClaimedItem) -> Option<String> {
        let key = self.reader.object().key.as_str();
        let field = self.mapper.fields().find(|f| f.sql == key)?;
        let value = item.payload.get(&field.hubspot)?.as_str()?.trim();
        (!value.is_empty()).then(|| value.to_string())
    }

    fn inserts_new_records(&self) -> bool {
        self.reader.object().on_new_hubspot_record == NewRecordPolicy::Insert
    }

    /// The HubSpot values of the fields HubSpot may write to SQL Server.
    fn writable(&self, item: &ClaimedItem) -> Values {
        let props = item.payload.as_object();
        self.mapper
            .fields()
            .filter(|f| f.direction.to_sql())
            .map(|f| {
                let v = props
                    .and_then(|p| p.get(&f.hubspot))
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string);
                (f.hubspot.clone(), v)
            })
            .collect()
    }

    /// The SQL write a record archived in HubSpot calls for, or why there is none.
    fn archive_write(&self, link: Option<&links::Link>) -> Result<RowWrite, &'static str> {
        let link = link.ok_or("archived in HubSpot; it was never synced with SQL Server")?;
        let key = Some(link.sql_key.clone());
        match (&self.on_archive.action, &self.on_archive.column) {
            (ArchiveAction::Delete, _) => Ok(RowWrite {
                key,
                delete: true,
                ..RowWrite::default()
            }),
            (ArchiveAction::SetColumn, Some(column)) => {
                let value = self.on_archive.value.clone().unwrap_or_default();
                Ok(RowWrite {
                    key,
                    changes: [(column.clone(), value)].into_iter().collect(),
                    ..RowWrite::default()
                })
            }
            _ => Err("archived in HubSpot; on_hubspot_archive is ignore"),
        }
    }
}

/// What to do with one HubSpot change, decided from reads only: workers carry the steps out,
/// dry runs print them.
pub enum SqlStep<'a> {
    /// Nothing to write; `link` moves the snapshot when SQL Server won a conflict.
    Skip {
        item: &'a ClaimedItem,
        message: &'static str,
        link: Option<LinkUpdate>,
    },
    Reject {
        item: &'a ClaimedItem,
        errors: Vec<ItemError>,
    },
    Retry {
        item: &'a ClaimedItem,
        error: ItemError,
    },
    /// Not yet: another item of the same record must settle first.
    Defer {
        item: &'a ClaimedItem,
        reason: &'static str,
    },
    /// Write (update, insert, mark or delete) one SQL Server row.
    Write(Pending<'a>),
    /// A field changed on both sides since the last sync, settled by policy.
    Conflict(ConflictRecord),
    /// The contact survives a HubSpot merge of the member's linked one: the link follows once
    /// the record's own step is done.
    Merge(Merge),
}

impl SqlStep<'_> {
    /// The step as a dry run prints it.
    pub fn describe(&self, object: &str) -> PlannedOp {
        let op = |item: &ClaimedItem, action: &'static str| PlannedOp {
            hubspot_id: Some(item.record_key.clone()),
            ..PlannedOp::new(object, Direction::ToSql, &item.record_key, action)
        };
        match self {
            SqlStep::Skip { item, message, .. } => PlannedOp {
                message: Some((*message).into()),
                ..op(item, "SKIP")
            },
            SqlStep::Reject { item, errors } => PlannedOp {
                errors: errors.clone(),
                ..op(item, "REJECT")
            },
            SqlStep::Retry { item, error } => PlannedOp {
                errors: vec![error.clone()],
                ..op(item, "RETRY")
            },
            SqlStep::Defer { item, reason } => PlannedOp {
                message: Some((*reason).into()),
                ..op(item, "DEFER")
            },
            SqlStep::Write(p) => {
                let action = match (p.operation, p.write.key.is_none()) {
                    ("WRITE", true) => "INSERT",
                    (operation, _) => operation,
                };
                PlannedOp {
                    properties: p
                        .write
                        .changes
                        .iter()
                        .map(|(column, v)| {
                            let text = match v {
                                serde_json::Value::Null => None,
                                serde_json::Value::String(s) => Some(s.clone()),
                                other => Some(other.to_string()),
                            };
                            (column.clone(), text)
                        })
                        .collect(),
                    message: p.write.delete.then(|| "delete the SQL Server row".into()),
                    ..op(p.item, action)
                }
            }
            SqlStep::Conflict(c) => PlannedOp::conflict(object, Direction::ToSql, c),
            SqlStep::Merge(m) => PlannedOp::merge(object, Direction::ToSql, m),
        }
    }
}

const NEW_IGNORED: &str = "created in HubSpot; on_new_hubspot_record is ignore";

/// How long a deferred item waits before it is taken up again.
const DEFER_DELAY: Duration = Duration::from_secs(1);

impl ToSql {
    /// What a batch would do, as a dry run prints it.
    pub async fn plan_ops(&self, batch: &[ClaimedItem]) -> Vec<PlannedOp> {
        let steps = self.plan(batch).await;
        steps.iter().map(|s| s.describe(&self.object)).collect()
    }

    /// The links each record belongs to (one query): those held on its id or on an id merged
    /// into it, one per member, in key order. Empty for a record created in HubSpot.
    async fn owners(&self, batch: &[ClaimedItem]) -> Result<Vec<Vec<links::Link>>, sqlx::Error> {
        let ids: Vec<Vec<String>> = batch
            .iter()
            .map(|item| {
                let merged = item.payload.get(MERGED_IDS).and_then(|v| v.as_str());
                merges::ids_of(&item.record_key, merged)
            })
            .collect();
        let all: Vec<String> = ids.iter().flatten().cloned().collect();
        let held = links::by_hubspot_ids(&self.pool, &self.object, &all).await?;
        Ok(ids
            .iter()
            .map(|ids| merges::owners(ids, &held).into_iter().cloned().collect())
            .collect())
    }

    /// Writes `values` (HubSpot properties) to the row with `key`, or inserts a row for a new
    /// HubSpot record (`key` None); rejected when they are invalid for SQL Server.
    fn write_step<'a>(
        &self,
        item: &'a ClaimedItem,
        values: &Values,
        key: Option<String>,
        synced: Values,
        unchanged_since: Option<u64>,
        quiet: bool,
    ) -> SqlStep<'a> {
        let mapped = self.mapper.to_sql(values);
        if !mapped.is_valid() {
            let errors = mapped.errors.iter().map(validation_error).collect();
            return SqlStep::Reject { item, errors };
        }
        SqlStep::Write(Pending {
            item,
            write: RowWrite {
                hubspot_id: key.is_none().then(|| item.record_key.clone()),
                key: key.clone(),
                changes: mapped.columns,
                delete: false,
                unchanged_since,
                quiet,
            },
            synced,
            sql_key: key,
            operation: "WRITE",
            sent: values.clone(),
        })
    }

    /// Decides every item's step: diff against the record link, read the linked SQL rows (one
    /// query), settle fields changed on both sides by policy, map to columns. Reads only.
    pub async fn plan<'a>(&self, batch: &'a [ClaimedItem]) -> Vec<SqlStep<'a>> {
        let mut steps = Vec::new();
        let skip = |item, message| SqlStep::Skip {
            item,
            message,
            link: None,
        };
        // PostgreSQL failing a read: every item is retried.
        let retry_all = |e: sqlx::Error| -> Vec<SqlStep<'a>> {
            let error = ItemError::postgres(&e);
            batch
                .iter()
                .map(|item| SqlStep::Retry {
                    item,
                    error: error.clone(),
                })
                .collect()
        };
        let ids: Vec<String> = batch.iter().map(|i| i.record_key.clone()).collect();
        let owners = match self.owners(batch).await {
            Ok(o) => o,
            Err(e) => return retry_all(e),
        };
        // Each record's link, by its id: the link of the member it belongs to, perhaps through
        // an id merged into it (the link then follows). A contact merging several members'
        // contacts is a data problem: rejected, naming them, and nothing written. A member
        // takes one record a batch: a change of its merged-away contact read before the merge
        // waits for the survivor's to settle.
        let mut links = HashMap::new();
        let mut members = std::collections::HashSet::new();
        let mut kept: Vec<&'a ClaimedItem> = Vec::new();
        for (item, owners) in batch.iter().zip(owners) {
            match &owners[..] {
                [] => {}
                [link] if !members.insert(link.sql_key.clone()) => {
                    steps.push(SqlStep::Defer {
                        item,
                        reason: "another HubSpot change of this member is in the batch",
                    });
                    continue;
                }
                [link] => {
                    let linked = link.hubspot_id.clone().unwrap_or_default();
                    if linked != item.record_key {
                        steps.push(SqlStep::Merge(Merge {
                            item_id: item.id,
                            sql_key: link.sql_key.clone(),
                            from: linked,
                            to: item.record_key.clone(),
                        }));
                    }
                    links.insert(item.record_key.clone(), link.clone());
                }
                many => {
                    let error = merges::merged_members_error(&item.record_key, many);
                    steps.push(SqlStep::Reject {
                        item,
                        errors: vec![error],
                    });
                    continue;
                }
            }
            kept.push(item);
        }
        let batch = kept;
        // hubsync's own writes to HubSpot not settled yet (in flight, or cut short by a crash):
        // by contact id, and by the SQL key a contact created but not linked yet carries.
        let carried: Vec<String> = batch
            .iter()
            .filter(|i| !links.contains_key(&i.record_key))
            .filter_map(|i| self.carried_key(i))
            .collect();
        let (pool, object) = (&self.pool, &self.object);
        let in_flight = match (
            writes::load(pool, object, Direction::ToHubspot, By::HubspotId, &ids).await,
            writes::load(pool, object, Direction::ToHubspot, By::SqlKey, &carried).await,
        ) {
            (Ok(by_id), Ok(by_key)) => (by_id, by_key),
            (Err(e), _) | (_, Err(e)) => return retry_all(e),
        };
        // The SQL rows of the records HubSpot changed, and of new ones to insert that name a
        // SQL key, in one query for the batch.
        let changed: Vec<String> = batch
            .iter()
            .filter(|item| item.operation == Operation::Upsert)
            .filter_map(|item| match links.get(&item.record_key) {
                Some(link) => {
                    let changes = diff::changes(&self.writable(item), &link.synced);
                    (!changes.is_empty()).then(|| link.sql_key.clone())
                }
                None if self.inserts_new_records() => self.carried_key(item),
                None => None,
            })
            .collect();
        let sql_rows = match changed.is_empty() {
            true => Ok(HashMap::new()),
            false => self.reader.rows_by_keys(&changed).await,
        };
        for item in batch {
            if item.operation == Operation::Archive {
                steps.push(match self.archive_write(links.get(&item.record_key)) {
                    Ok(write) => SqlStep::Write(Pending {
                        item,
                        sql_key: write.key.clone(),
                        write,
                        synced: Values::new(),
                        operation: "ARCHIVE",
                        sent: Values::new(),
                    }),
                    Err(why) => skip(item, why),
                });
                continue;
            }
            let hs = self.writable(item);
            let modified_at = item
                .payload
                .get("lastmodifieddate")
                .and_then(|v| v.as_str())
                .and_then(diff::hubspot_time);
            let Some(link) = links.get(&item.record_key) else {
                // A contact hubsync is creating (or created, then crashed before linking it):
                // taken up again once its link is stored, so that edits made to it in HubSpot
                // meanwhile are diffed against the values it was created with.
                let creating = in_flight.0.contains_key(&item.record_key)
                    || self
                        .carried_key(item)
                        .is_some_and(|k| in_flight.1.contains_key(&k));
                if creating {
                    steps.push(SqlStep::Defer {
                        item,
                        reason: "hubsync created this contact and has not linked it yet",
                    });
                    continue;
                }
                // A record created in HubSpot: inserted or ignored per on_new_hubspot_record.
                if !self.inserts_new_records() {
                    steps.push(skip(item, NEW_IGNORED));
                    continue;
                }
                // Naming a record SQL Server has, it is not new: most likely one synced from
                // there whose link is not stored yet (its to_hubspot item, rescued after a
                // crash or still settling, stores it).
                if let Some(key) = self.carried_key(item) {
                    match sql_rows.as_ref().map(|rows| rows.contains_key(&key)) {
                        Ok(true) => {
                            steps.push(skip(item, "SQL Server already has this record"));
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let error = ItemError::new("sql_server", e.to_string());
                            steps.push(SqlStep::Retry { item, error });
                            continue;
                        }
                    }
                }
                steps.push(self.write_step(item, &hs, None, hs.clone(), None, false));
                continue;
            };
            if link
                .hubspot_version
                .is_some_and(|seen| item.source_version < seen)
            {
                // Read before a state of the contact hubsync has synced since (its own write,
                // or a newer change already written): that state's read carries every change.
                steps.push(skip(item, "older than a HubSpot state already synced"));
                continue;
            }
            // hubsync's own unsettled write coming back is no change.
            // (copied only for a record with such a write)
            let recognised;
            let link = match in_flight.0.get(&item.record_key) {
                Some(write) => {
                    let synced = diff::recognise(&link.synced, &write.sent, &hs);
                    recognised = links::Link {
                        synced,
                        ..link.clone()
                    };
                    &recognised
                }
                None => link,
            };
            if diff::changes(&hs, &link.synced).is_empty() {
                steps.push(skip(item, "no change since the last sync"));
                continue;
            }
            // Three-way: what SQL Server holds now, what HubSpot holds, what both agreed on.
            let sql_row = match sql_rows.as_ref().map(|rows| rows.get(&link.sql_key)) {
                Ok(Some(row)) => row,
                Ok(None) => {
                    steps.push(skip(item, "the linked SQL Server row no longer exists"));
                    continue;
                }
                Err(e) => {
                    let error = ItemError::new("sql_server", e.to_string());
                    steps.push(SqlStep::Retry { item, error });
                    continue;
                }
            };
            let sql_all = self.mapper.to_hubspot(sql_row).properties;
            let sql: Values = hs
                .keys()
                .filter_map(|k| sql_all.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            let sql_modified_at = self.reader.modified_utc(sql_row);
            let modified = Modified {
                sql: sql_modified_at,
                hubspot: modified_at,
            };
            let policy = |f: &str| diff::policy_of(&self.mapper, f);
            let plan = diff::plan(&sql, &hs, &link.synced, modified, &policy);
            steps.extend(plan.conflicts.into_iter().map(|conflict| {
                SqlStep::Conflict(ConflictRecord {
                    item_id: Some(item.id),
                    sql_key: link.sql_key.clone(),
                    hubspot_id: Some(item.record_key.clone()),
                    conflict,
                    sql_modified_at,
                    hubspot_modified_at: modified_at,
                })
            }));
            if plan.to_sql.is_empty() {
                // Every HubSpot change is one SQL Server already holds (hubsync's own write
                // cut short by a crash, or the same edit made on both sides), or SQL Server won
                // it: the snapshot takes HubSpot's values, so an agreed value is no change for
                // either side later, and SQL Server's winning change goes to HubSpot next
                // without being seen as a second conflict.
                let link = Some(LinkUpdate {
                    sql_key: link.sql_key.clone(),
                    hubspot_id: Some(item.record_key.clone()),
                    synced: hs,
                    sql_version: None,
                    hubspot_version: Some(item.source_version),
                    direction: Direction::ToSql,
                });
                steps.push(SqlStep::Skip {
                    item,
                    message: "SQL Server's values stand",
                    link,
                });
                continue;
            }
            // HubSpot's values are synced: written where they won; where SQL Server won a
            // conflict its value goes to HubSpot next, as a plain change.
            let key = Some(link.sql_key.clone());
            let read_at = self.reader.rowversion_of(sql_row);
            // Nothing of the row still to go to HubSpot once this write is made: every field
            // SQL Server holds differently from the snapshot is one HubSpot's value overwrites.
            let quiet = diff::changes(&sql_all, &link.synced)
                .keys()
                .all(|field| plan.to_sql.contains_key(field))
                && !self.reader.is_deleted_row(sql_row);
            steps.push(self.write_step(item, &plan.to_sql, key, hs, read_at, quiet));
        }
        steps
    }
}

impl BatchHandler for ToSql {
    async fn handle(&self, batch: &[ClaimedItem]) -> BatchResult {
        let started = Instant::now();
        let mut result = BatchResult::default();
        let log = |item: &ClaimedItem, op: &str, status: &str, message: &str| {
            OperationLog {
                operation: op,
                object: &self.object,
                direction: Direction::ToSql.as_str(),
                record_key: &item.record_key,
                hubspot_id: Some(&item.record_key),
                batch_id: &item.batch_id,
                status,
                message,
                started,
            }
            .emit()
        };
        let skip = |result: &mut BatchResult, item: &ClaimedItem, message: &str| {
            log(item, "SKIP", "done", message);
            let hubspot_id = Some(item.record_key.clone());
            let done = Outcome::Done {
                operation: "SKIP".into(),
                hubspot_id,
            };
            result.outcomes.push((item.id, done));
        };
        let mut pending: Vec<Pending> = Vec::new();
        for step in self.plan(batch).await {
            match step {
                SqlStep::Skip {
                    item,
                    message,
                    link,
                } => {
                    result.links.extend(link);
                    skip(&mut result, item, message);
                }
                SqlStep::Reject { item, errors } => {
                    log(item, "REJECT", "rejected", "invalid values for SQL Server");
                    result.outcomes.push((item.id, Outcome::Reject(errors)));
                }
                SqlStep::Retry { item, error } => {
                    result.outcomes.push((item.id, Outcome::Retry(error)));
                }
                SqlStep::Defer { item, reason } => {
                    log(item, "DEFER", "pending", reason);
                    let delay = DEFER_DELAY;
                    let reason = reason.to_string();
                    result
                        .outcomes
                        .push((item.id, Outcome::Defer { reason, delay }));
                }
                SqlStep::Write(p) => pending.push(p),
                SqlStep::Conflict(c) => result.conflicts.push(c),
                SqlStep::Merge(m) => result.merges.push(m),
            }
        }
        if pending.is_empty() {
            return result;
        }
        // What is about to be written is recorded first: after a crash before settling, SQL
        // Server's echo of it is still known as hubsync's own.
        let sent: Vec<writes::Write> = pending
            .iter()
            .filter(|p| !p.sent.is_empty())
            .map(|p| writes::Write {
                record_key: p.item.record_key.clone(),
                item_id: p.item.id,
                sql_key: p.sql_key.clone(),
                hubspot_id: Some(p.item.record_key.clone()),
                sent: p.sent.clone(),
                first_sent_at: None,
                created_with: None,
            })
            .collect();
        let (pool, object) = (&self.pool, &self.object);
        let recorded = match writes::record(pool, object, Direction::ToSql, &sent).await {
            Ok(()) => links::record_conflicts_now(pool, object, &result.conflicts).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            let error = ItemError::postgres(&e);
            for p in &pending {
                result
                    .outcomes
                    .push((p.item.id, Outcome::Retry(error.clone())));
            }
            return result;
        }
        let writes: Vec<RowWrite> = pending.iter().map(|p| p.write.clone()).collect();
        let report = match self.writer.apply(&writes).await {
            Ok(r) => r,
            Err(e) => {
                for p in &pending {
                    result.outcomes.push((
                        p.item.id,
                        Outcome::Retry(ItemError::new("sql_server", e.to_string())),
                    ));
                }
                return result;
            }
        };
        let mut by_input: HashMap<usize, RowOutcome> =
            report.outcomes.into_iter().enumerate().collect();
        for (i, p) in pending.into_iter().enumerate() {
            let key = match by_input.remove(&i) {
                Some(
                    RowOutcome::Updated { key }
                    | RowOutcome::Inserted { key }
                    | RowOutcome::Deleted { key }
                    | RowOutcome::Unchanged { key },
                ) => key,
                Some(RowOutcome::Skipped) => {
                    skip(&mut result, p.item, NEW_IGNORED);
                    continue;
                }
                Some(RowOutcome::Changed { key }) => {
                    let error = ItemError::new(
                        "sql_server",
                        format!(
                            "row {key} changed in SQL Server since it was read; deciding again"
                        ),
                    );
                    log(p.item, "RETRY", "retry", &error.message);
                    result.outcomes.push((p.item.id, Outcome::Retry(error)));
                    continue;
                }
                Some(RowOutcome::Failed(f)) => {
                    let message = match f.number {
                        Some(n) => format!("SQL Server error {n}: {}", f.message),
                        None => f.message.clone(),
                    };
                    log(
                        p.item,
                        "REJECT",
                        "rejected",
                        &format!("SQL Server refused the row (error {:?})", f.number),
                    );
                    result.outcomes.push((
                        p.item.id,
                        Outcome::Reject(vec![ItemError::new("sql_server", message)]),
                    ));
                    continue;
                }
                None => p.sql_key.clone().unwrap_or_default(),
            };
            let message = match (p.operation, p.write.delete) {
                ("ARCHIVE", true) => "archived in HubSpot: SQL Server row deleted",
                ("ARCHIVE", false) => "archived in HubSpot: SQL Server row marked",
                _ => "written to SQL Server",
            };
            log(p.item, p.operation, "done", message);
            let note = history::Note {
                properties: p.sent.keys().cloned().collect(),
                operation: (p.write.key.is_none() && p.operation == "WRITE").then_some("INSERT"),
                sql_key: Some(key.clone()),
            };
            result.notes.insert(p.item.id, note);
            result.outcomes.push((
                p.item.id,
                Outcome::Done {
                    operation: p.operation.into(),
                    hubspot_id: Some(p.item.record_key.clone()),
                },
            ));
            if p.write.delete {
                // Both records are gone: a later record with this key or id starts afresh.
                result.unlinks.push(key);
                continue;
            }
            result.links.push(LinkUpdate {
                sql_key: key,
                hubspot_id: Some(p.item.record_key.clone()),
                synced: p.synced,
                sql_version: None,
                hubspot_version: Some(p.item.source_version),
                direction: Direction::ToSql,
            });
        }
        result
    }
}
