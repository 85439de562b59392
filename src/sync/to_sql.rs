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
use super::links::{self, ConflictRecord, LinkUpdate};
use super::poller::{Polled, elected, enqueue_page, load_cursor};
use super::to_hubspot::validation_error;
use super::worker::{BatchHandler, BatchResult};
use crate::hubspot::{HubSpotClient, ModifiedSince, modified_property};
use crate::mapping::Mapper;
use crate::mssql::{ChangeReader, RowOutcome, RowWrite, SqlWriter};
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
}

/// A HubSpot timestamp (`2026-11-23T10:00:00.123Z` or epoch ms) in epoch milliseconds.
fn epoch_ms(value: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| value.parse().ok())
}

impl HubspotPoller {
    pub async fn poll_once(&self) -> anyhow::Result<Polled> {
        elected(&self.pool, &self.object, Direction::ToSql, || {
            self.read_all()
        })
        .await
    }

    async fn read_all(&self) -> anyhow::Result<Polled> {
        let stored = load_cursor(&self.pool, &self.object, Direction::ToSql).await?;
        let mut high = stored
            .as_ref()
            .and_then(|v| v["lastmodifieddate_ms"].as_i64())
            .unwrap_or(0);
        let since_ms = (high - self.lag.as_millis() as i64).max(0);
        let since = DateTime::<Utc>::from_timestamp_millis(since_ms).unwrap_or_default();
        let modified = modified_property(&self.hubspot_object);
        let mut properties = self.properties.clone();
        properties.push(modified.to_string());
        let mut pager = self.client.search_modified(
            &self.hubspot_object,
            ModifiedSince {
                since,
                until: None,
                properties,
            },
        );
        let mut out = Polled::default();
        while let Some(records) = pager.next_page().await? {
            out.rows_read += records.len() as u64;
            let items: Vec<NewItem> = records
                .iter()
                .filter_map(|r| {
                    let version = r.property(modified).and_then(epoch_ms)?;
                    high = high.max(version);
                    Some(NewItem {
                        record_key: r.id.clone(),
                        operation: Operation::Upsert,
                        payload: serde_json::to_value(&r.properties).ok()?,
                        source_version: version,
                    })
                })
                .collect();
            out.items_enqueued += enqueue_page(
                &self.pool,
                &self.object,
                Direction::ToSql,
                &items,
                serde_json::json!({ "lastmodifieddate_ms": high }),
                self.max_attempts,
            )
            .await?;
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
}

/// A row to write and what to record once it is written.
struct Pending<'a> {
    item: &'a ClaimedItem,
    write: RowWrite,
    /// HubSpot values now agreed on (merged into the link's snapshot).
    synced: Values,
    sql_key: Option<String>,
}

impl ToSql {
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

    fn policy_for(&self, field: &str) -> diff::ConflictPolicy {
        self.mapper
            .fields()
            .find(|f| f.hubspot == field)
            .map(|f| f.conflict_policy)
            .unwrap_or_default()
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
        let ids: Vec<String> = batch.iter().map(|i| i.record_key.clone()).collect();
        let links = match links::by_hubspot_ids(&self.pool, &self.object, &ids).await {
            Ok(l) => l,
            Err(e) => {
                let error = ItemError::new("postgres", crate::pg::describe(&e));
                result.outcomes = batch
                    .iter()
                    .map(|i| (i.id, Outcome::Retry(error.clone())))
                    .collect();
                return result;
            }
        };
        // The SQL rows of the records HubSpot changed, in one query for the batch.
        let changed: Vec<String> = batch
            .iter()
            .filter_map(|item| {
                let link = links.get(&item.record_key)?;
                let changes = diff::changes(&self.writable(item), &link.synced);
                (!changes.is_empty()).then(|| link.sql_key.clone())
            })
            .collect();
        let sql_rows = match changed.is_empty() {
            true => Ok(HashMap::new()),
            false => self.reader.rows_by_keys(&changed).await,
        };
        let mut pending: Vec<Pending> = Vec::new();
        for item in batch {
            let hs = self.writable(item);
            let modified_at = item
                .payload
                .get("lastmodifieddate")
                .and_then(|v| v.as_str())
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc));
            let Some(link) = links.get(&item.record_key) else {
                // A record created in HubSpot: inserted or ignored per on_new_hubspot_record.
                let mapped = self.mapper.to_sql(&hs);
                if !mapped.is_valid() {
                    let errors = mapped.errors.iter().map(validation_error).collect();
                    log(item, "REJECT", "rejected", "invalid values for SQL Server");
                    result.outcomes.push((item.id, Outcome::Reject(errors)));
                    continue;
                }
                pending.push(Pending {
                    item,
                    write: RowWrite {
                        key: None,
                        changes: mapped.columns,
                        hubspot_id: Some(item.record_key.clone()),
                    },
                    synced: hs,
                    sql_key: None,
                });
                continue;
            };
            if diff::changes(&hs, &link.synced).is_empty() {
                skip(&mut result, item, "no change since the last sync");
                continue;
            }
            // Three-way: what SQL Server holds now, what HubSpot holds, what both agreed on.
            let sql_row = match sql_rows.as_ref().map(|rows| rows.get(&link.sql_key)) {
                Ok(Some(row)) => row,
                Ok(None) => {
                    skip(
                        &mut result,
                        item,
                        "the linked SQL Server row no longer exists",
                    );
                    continue;
                }
                Err(e) => {
                    result.outcomes.push((
                        item.id,
                        Outcome::Retry(ItemError::new("sql_server", e.to_string())),
                    ));
                    continue;
                }
            };
            let sql_all = self.mapper.to_hubspot(sql_row).properties;
            let sql: Values = hs
                .keys()
                .filter_map(|k| sql_all.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            let modified = Modified {
                sql: None,
                hubspot: modified_at,
            };
            let plan = diff::plan(&sql, &hs, &link.synced, modified, &|f| self.policy_for(f));
            for conflict in plan.conflicts {
                result.conflicts.push(ConflictRecord {
                    sql_key: link.sql_key.clone(),
                    hubspot_id: Some(item.record_key.clone()),
                    conflict,
                    sql_modified_at: None,
                    hubspot_modified_at: modified_at,
                });
            }
            if plan.to_sql.is_empty() {
                skip(&mut result, item, "SQL Server's values stand");
                continue;
            }
            let mapped = self.mapper.to_sql(&plan.to_sql);
            if !mapped.is_valid() {
                let errors = mapped.errors.iter().map(validation_error).collect();
                log(item, "REJECT", "rejected", "invalid values for SQL Server");
                result.outcomes.push((item.id, Outcome::Reject(errors)));
                continue;
            }
            pending.push(Pending {
                item,
                write: RowWrite {
                    key: Some(link.sql_key.clone()),
                    changes: mapped.columns,
                    hubspot_id: None,
                },
                synced: plan.to_sql,
                sql_key: Some(link.sql_key.clone()),
            });
        }
        if pending.is_empty() {
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
                    | RowOutcome::Unchanged { key },
                ) => key,
                Some(RowOutcome::Skipped) => {
                    skip(
                        &mut result,
                        p.item,
                        "created in HubSpot; on_new_hubspot_record is ignore",
                    );
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
            log(p.item, "WRITE", "done", "written to SQL Server");
            result.outcomes.push((
                p.item.id,
                Outcome::Done {
                    operation: "WRITE".into(),
                    hubspot_id: Some(p.item.record_key.clone()),
                },
            ));
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
