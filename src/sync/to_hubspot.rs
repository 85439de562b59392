//! The to_hubspot step: SQL Server rows (queue payloads) → mapped and validated → diffed against
//! the record link → HubSpot batch update (linked), or looked up by the match property and
//! linked, or batch created. Every item gets its own outcome; a retried create can never make a
//! second contact (a 409 links the existing one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

use super::diff::{self, Modified, Values};
use super::erasure::{self, Erasure, ErasurePolicy};
use super::history::{self, Note};
use super::links::{self, ConflictRecord, Link, LinkUpdate};
use super::merges::{self, Follow, MERGED_IDS, Merge};
use super::plan::PlannedOp;
use super::worker::{BatchHandler, BatchResult};
use super::writes::{self, By};
use crate::hubspot::portal::{PortalRules, PropertyRules, RequiredProperty};
use crate::hubspot::types::{CreateInput, ReadBy, Record, UpdateInput, WriteOutcome};
use crate::hubspot::{HubSpotClient, modified_property};
use crate::mapping::{Mapped, Mapper, SqlRow};
use crate::mssql::{ChangeReader, RowOutcome, SqlWriter};
use crate::queue::{ClaimedItem, Direction, ItemError, Operation, Outcome};
use crate::telemetry::OperationLog;
use crate::validation::Issue;

/// Sends one object's SQL Server changes to HubSpot.
pub struct ToHubspot {
    /// The object's name in config.yaml (`contacts`).
    pub object: String,
    /// HubSpot object type (`contacts`).
    pub hubspot_object: String,
    pub mapper: Arc<Mapper>,
    pub client: Arc<HubSpotClient>,
    pub pool: PgPool,
    /// This object's SQL Server reader, for rows' modification times (`newest_wins`); None when
    /// they are unknown.
    pub sql_reader: Option<Arc<ChangeReader>>,
    /// Whether unlinked records are looked up before they are created (adapts to HubSpot).
    pub lookup: LookupFirst,
    /// The portal's write rules, checked before sending.
    pub portal: PortalCache,
    /// What becomes of the SQL Server row of a member whose contact is gone for good.
    pub erasure: ErasurePolicy,
    /// Writes that policy's changes (None: no SQL Server; only `ignore` can be applied).
    pub sql_writer: Option<Arc<SqlWriter>>,
}

/// The portal's rules compiled for one object: the published validation rules (re-read with
/// the property definitions) and the required properties declared in config.
pub struct PortalCache {
    required: Vec<RequiredProperty>,
    compiled: std::sync::Mutex<Option<Compiled>>,
}

/// The published rules last read, and the rules compiled from them.
type Compiled = (Arc<Vec<PropertyRules>>, Arc<PortalRules>);

impl PortalCache {
    pub fn new(required: Vec<RequiredProperty>) -> Self {
        Self {
            required,
            compiled: std::sync::Mutex::new(None),
        }
    }

    /// The rules in force: recompiled only when the published rules were read again. A portal
    /// that does not publish them (an old API version, a missing scope) leaves the declared ones.
    async fn rules(&self, client: &HubSpotClient, object: &str) -> Arc<PortalRules> {
        let published = match client.validation_rules(object).await {
            Ok(published) => published,
            Err(e) => {
                tracing::warn!(object, error = %e, "cannot read the portal's property validation rules; only the declared required properties are checked");
                Arc::new(Vec::new())
            }
        };
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((source, rules)) = compiled.as_ref()
            && (Arc::ptr_eq(source, &published) || (source.is_empty() && published.is_empty()))
        {
            return rules.clone();
        }
        let rules = Arc::new(PortalRules::new(
            published.as_ref().clone(),
            self.required.clone(),
        ));
        *compiled = Some((published, rules.clone()));
        rules
    }
}

/// Whether to look unlinked records up by the match property before creating them. A lookup
/// costs one request per batch; creating directly costs nothing extra when the contacts are new
/// (an initial load into an empty HubSpot) and, when one exists after all, HubSpot's 409 leads to
/// the same link and update. So: look up while lookups find contacts; after a few batches in a
/// row whose lookups found none, create directly, until a create meets an existing contact.
#[derive(Debug, Default)]
pub struct LookupFirst {
    /// Consecutive lookups that found nothing.
    empty_streak: std::sync::atomic::AtomicU32,
}

/// Empty lookups in a row after which records are created without one.
const EMPTY_LOOKUPS_BEFORE_CREATING_DIRECTLY: u32 = 3;

impl LookupFirst {
    fn wanted(&self) -> bool {
        self.empty_streak.load(std::sync::atomic::Ordering::Relaxed)
            < EMPTY_LOOKUPS_BEFORE_CREATING_DIRECTLY
    }

    fn found(&self, any: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if any {
            self.empty_streak.store(0, Relaxed);
        } else {
            self.empty_streak.fetch_add(1, Relaxed);
        }
    }
}

/// How a plan treats unlinked records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// As the workers do ([`LookupFirst`]).
    Adaptive,
    /// Always look up (dry runs: the plan then names the contacts that will be linked).
    Always,
}

/// One valid record on its way to HubSpot.
pub struct Work<'a> {
    pub item: &'a ClaimedItem,
    /// The row mapped: SQL Server's current row, or the queued payload.
    pub row: SqlRow,
    pub mapped: Mapped,
}

/// What to do with one record, decided from reads only: workers carry the steps out, dry runs
/// print them.
pub enum Step<'a> {
    /// Invalid (our rules, or a duplicate of another record): rejected with every reason.
    Reject {
        item: &'a ClaimedItem,
        errors: Vec<ItemError>,
    },
    /// A read failed: try again later.
    Retry {
        item: &'a ClaimedItem,
        error: ItemError,
    },
    /// Nothing to send: unchanged since the last sync (`SKIP`), or an existing contact that
    /// already holds these values (`LINK`).
    Settle {
        work: Work<'a>,
        operation: &'static str,
        hubspot_id: String,
        message: &'static str,
    },
    /// Deleted in SQL Server before it was ever synced: nothing to archive.
    ArchiveUnsynced {
        item: &'a ClaimedItem,
    },
    Archive {
        item: &'a ClaimedItem,
        hubspot_id: String,
    },
    /// Send `changes` (only the properties that differ) to the linked or found contact.
    Update {
        work: Work<'a>,
        hubspot_id: String,
        changes: Values,
    },
    Create {
        work: Work<'a>,
    },
    /// Create or update by the match property HubSpot keeps unique (`batch/upsert`).
    Upsert {
        work: Work<'a>,
    },
    /// A field changed on both sides since the last sync, settled by policy (recorded with the
    /// batch; the record's own step follows).
    Conflict(ConflictRecord),
    /// The linked contact was merged in HubSpot: the link follows the survivor once the
    /// record's own step (which writes to the survivor) is done.
    Merge(Merge),
    /// HubSpot answers no contact for the linked id and it shows no merge: gone for good (GDPR
    /// delete) unless HubSpot holds it archived, which the step asks first.
    Gone {
        work: Work<'a>,
        hubspot_id: String,
    },
    /// A member whose contact HubSpot erased (a GDPR delete) changed in SQL Server: not sent
    /// again, and its payload is not kept.
    Erased {
        item: &'a ClaimedItem,
    },
}

impl Step<'_> {
    /// The step as a dry run prints it.
    pub fn describe(&self, object: &str) -> PlannedOp {
        let op = |item: &ClaimedItem, action: &'static str| {
            PlannedOp::new(object, Direction::ToHubspot, &item.record_key, action)
        };
        match self {
            Step::Reject { item, errors } => PlannedOp {
                errors: errors.clone(),
                ..op(item, "REJECT")
            },
            Step::Retry { item, error } => PlannedOp {
                errors: vec![error.clone()],
                ..op(item, "RETRY")
            },
            Step::Settle {
                work,
                operation,
                hubspot_id,
                message,
            } => PlannedOp {
                hubspot_id: Some(hubspot_id.clone()),
                message: Some((*message).into()),
                ..op(work.item, operation)
            },
            Step::ArchiveUnsynced { item } => PlannedOp {
                message: Some("deleted before it was ever synced".into()),
                ..op(item, "SKIP")
            },
            Step::Archive { item, hubspot_id } => PlannedOp {
                hubspot_id: Some(hubspot_id.clone()),
                ..op(item, "ARCHIVE")
            },
            Step::Update {
                work,
                hubspot_id,
                changes,
            } => PlannedOp {
                hubspot_id: Some(hubspot_id.clone()),
                properties: changes.clone(),
                ..op(work.item, "UPDATE")
            },
            Step::Upsert { work } => PlannedOp {
                properties: work.mapped.properties.clone(),
                ..op(work.item, "UPSERT")
            },
            Step::Create { work } => PlannedOp {
                properties: work.mapped.properties.clone(),
                ..op(work.item, "CREATE")
            },
            Step::Conflict(c) => PlannedOp::conflict(object, Direction::ToHubspot, c),
            Step::Merge(m) => PlannedOp::merge(object, Direction::ToHubspot, m),
            Step::Gone { work, hubspot_id } => PlannedOp {
                hubspot_id: Some(hubspot_id.clone()),
                message: Some(format!(
                    "HubSpot has no contact {hubspot_id}: unless it is archived, it is gone for                      good and on_hubspot_erasure applies"
                )),
                ..op(work.item, "ERASE")
            },
            Step::Erased { item } => PlannedOp {
                message: Some(ERASED.into()),
                ..op(item, "SKIP")
            },
        }
    }
}

impl BatchHandler for ToHubspot {
    /// Records our own rules reject never reach HubSpot.
    fn takes_a_place(&self, item: &ClaimedItem) -> bool {
        match (item.operation, item.payload.as_object()) {
            (Operation::Upsert, Some(row)) => self.mapper.to_hubspot(row).is_valid(),
            (Operation::Upsert, None) => false,
            (Operation::Archive, _) => true,
        }
    }

    async fn handle(&self, batch: &[ClaimedItem]) -> BatchResult {
        let started = Instant::now();
        let steps = self.plan(batch, Lookup::Adaptive).await;
        let mut run = Run {
            this: self,
            started,
            result: BatchResult::default(),
        };
        let (mut archives, mut updates, mut creates) = (Vec::new(), Vec::new(), Vec::new());
        let (mut upserts, mut gone) = (Vec::new(), Vec::new());
        for step in steps {
            match step {
                Step::Reject { item, errors } => run.reject(item, errors),
                Step::Retry { item, error } => run.retry(item, error),
                Step::Settle {
                    work,
                    operation,
                    hubspot_id,
                    message,
                } => run.done(&work, operation, &hubspot_id, message),
                Step::ArchiveUnsynced { item } => {
                    run.log(
                        item,
                        "SKIP",
                        None,
                        "done",
                        "deleted before it was ever synced",
                    );
                    run.result.outcomes.push((
                        item.id,
                        Outcome::Done {
                            operation: "SKIP".into(),
                            hubspot_id: None,
                        },
                    ));
                }
                Step::Archive { item, hubspot_id } => archives.push((item, hubspot_id)),
                Step::Update {
                    work,
                    hubspot_id,
                    changes,
                } => updates.push((work, hubspot_id, changes)),
                Step::Create { work } => creates.push(work),
                Step::Upsert { work } => upserts.push(work),
                Step::Conflict(c) => run.result.conflicts.push(c),
                Step::Merge(m) => run.result.merges.push(m),
                Step::Gone { work, hubspot_id } => gone.push((work, hubspot_id)),
                Step::Erased { item } => {
                    run.log(item, "SKIP", None, "done", ERASED);
                    let done = Outcome::Done {
                        operation: "SKIP".into(),
                        hubspot_id: None,
                    };
                    run.result.outcomes.push((item.id, done));
                    run.result.scrub.push(item.id);
                }
            }
        }
        let conflicts = &run.result.conflicts;
        if let Err(e) = links::record_conflicts_now(&self.pool, &self.object, conflicts).await {
            // Nothing is written whose conflict could not be recorded first.
            let error = ItemError::postgres(&e);
            let items = (archives.iter().map(|(item, _)| *item))
                .chain(updates.iter().map(|(w, _, _)| w.item))
                .chain(creates.iter().chain(&upserts).map(|w| w.item));
            for item in items.collect::<Vec<_>>() {
                run.retry(item, error.clone());
            }
            return run.result;
        }
        run.archive(archives).await;
        run.update(updates).await;
        run.create(creates).await;
        run.upsert(upserts).await;
        run.erase(gone).await;
        run.result
    }
}

impl ToHubspot {
    /// Decides every item's step: map and validate, diff against the record link, and look
    /// unlinked records up in HubSpot by the match property. Reads only; writes nothing.
    pub async fn plan<'a>(&self, batch: &'a [ClaimedItem], lookup: Lookup) -> Vec<Step<'a>> {
        let mut steps = Vec::new();
        let portal = self.portal.rules(&self.client, &self.hubspot_object).await;
        // Members whose contact HubSpot erased are not sent again, valid or not.
        let keys: Vec<String> = batch.iter().map(|i| i.record_key.clone()).collect();
        let erased = match history::erased(&self.pool, &self.object, &keys).await {
            Ok(erased) => erased,
            Err(e) => return retried(steps, batch, ItemError::postgres(&e)),
        };
        let (gone, batch): (Vec<&ClaimedItem>, Vec<&ClaimedItem>) = batch
            .iter()
            .partition(|i| i.operation == Operation::Upsert && erased.contains(&i.record_key));
        steps.extend(gone.into_iter().map(|item| Step::Erased { item }));
        let keys: Vec<String> = batch.iter().map(|i| i.record_key.clone()).collect();
        // Links and hubsync's unsettled writes to SQL Server are read before the rows: a
        // HubSpot change written to SQL Server in between is then in the row and the snapshot
        // agrees with it or is older, never newer than the row.
        let links = match links::by_sql_keys(&self.pool, &self.object, &keys).await {
            Ok(l) => l,
            Err(e) => return retried(steps, batch.iter().copied(), ItemError::postgres(&e)),
        };
        // hubsync's own writes to SQL Server not settled yet (a crash): SQL Server's echo of
        // them is no change.
        let linked_keys: Vec<String> = keys
            .iter()
            .filter(|k| links.contains_key(*k))
            .cloned()
            .collect();
        let in_flight = match writes::load(
            &self.pool,
            &self.object,
            Direction::ToSql,
            By::SqlKey,
            &linked_keys,
        )
        .await
        {
            Ok(w) => w,
            Err(e) => return retried(steps, batch.iter().copied(), ItemError::postgres(&e)),
        };
        let rows = match self.current_rows(&batch).await {
            Ok(rows) => rows,
            Err(e) => {
                let error = ItemError::new("sql_server", e.to_string());
                return retried(steps, batch.iter().copied(), error);
            }
        };
        let work = self.map_and_validate(&batch, &rows, &portal, &mut steps);
        for item in batch.iter().filter(|i| i.operation == Operation::Archive) {
            steps.push(
                match links
                    .get(&item.record_key)
                    .and_then(|l| l.hubspot_id.clone())
                {
                    Some(hubspot_id) => Step::Archive { item, hubspot_id },
                    None => Step::ArchiveUnsynced { item },
                },
            );
        }
        let mut unlinked = Vec::new();
        let mut linked = Vec::new();
        for w in work {
            let link = links.get(&w.item.record_key);
            match link.and_then(|l| l.hubspot_id.clone().map(|id| (l, id))) {
                Some((link, hubspot_id)) => {
                    let mut link = link.clone();
                    if let Some(write) = in_flight.get(&link.sql_key) {
                        link.synced =
                            diff::recognise(&link.synced, &write.sent, &w.mapped.properties);
                    }
                    match changed(w, hubspot_id, &link.synced, "SKIP") {
                        Step::Update { work, .. } => linked.push((work, link)),
                        unchanged => steps.push(unchanged),
                    }
                }
                None => unlinked.push(w),
            }
        }
        self.three_way_linked(linked, &mut steps).await;
        let unlinked = match self.upsert_property(lookup).await {
            Some(prop) => self.upsert_fresh(unlinked, &prop, &mut steps).await,
            None => unlinked,
        };
        if unlinked.is_empty() {
            return steps;
        }
        if lookup == Lookup::Always || self.lookup.wanted() {
            let found = self.link_existing(unlinked, &mut steps).await;
            self.lookup.found(found);
        } else {
            steps.extend(unlinked.into_iter().map(|work| Step::Create { work }));
        }
        steps
    }

    /// The match property unlinked records are upserted by: `email` on contacts, or a property
    /// HubSpot keeps unique (`hasUniqueValue`). None for dry runs (they look records up, to
    /// show which exist) and when the property is not unique or its definition is unknown.
    async fn upsert_property(&self, lookup: Lookup) -> Option<String> {
        if lookup == Lookup::Always {
            return None;
        }
        let prop = self.mapper.match_property();
        if prop == "email" && matches!(self.hubspot_object.as_str(), "contacts" | "0-1") {
            return Some(prop.to_string());
        }
        let defs = self.client.properties(&self.hubspot_object).await.ok()?;
        defs.get(prop)
            .filter(|d| d.has_unique_value)
            .map(|_| prop.to_string())
    }

    /// Unlinked records to upsert by `prop`, each after two checks made without a HubSpot call:
    /// a record whose earlier create may have landed (a write on record in `sync_writes`) is
    /// left to the look-up path, which merges against what that create sent; and one whose
    /// value a link of another SQL Server record holds is rejected, naming both records, so an
    /// upsert never overwrites another member's contact. Returns the records left.
    async fn upsert_fresh<'a>(
        &self,
        unlinked: Vec<Work<'a>>,
        prop: &str,
        steps: &mut Vec<Step<'a>>,
    ) -> Vec<Work<'a>> {
        if unlinked.is_empty() {
            return unlinked;
        }
        let keys: Vec<String> = unlinked.iter().map(|w| w.item.record_key.clone()).collect();
        // As mapped, and lowercased as HubSpot compares them.
        let values: Vec<String> = unlinked
            .iter()
            .filter_map(|w| w.mapped.properties.get(prop).cloned().flatten())
            .flat_map(|v| [v.trim().to_string(), v.trim().to_lowercase()])
            .collect();
        let (pool, object) = (&self.pool, &self.object);
        let checks = tokio::try_join!(
            writes::load(pool, object, Direction::ToHubspot, By::SqlKey, &keys),
            links::holders_of(pool, object, prop, &values),
        );
        let (earlier, holders) = match checks {
            Ok(c) => c,
            Err(e) => {
                retry_each(
                    steps,
                    unlinked.iter().map(|w| w.item),
                    ItemError::postgres(&e),
                );
                return Vec::new();
            }
        };
        let mut rest = Vec::new();
        for work in unlinked {
            let value = work
                .mapped
                .properties
                .get(prop)
                .cloned()
                .flatten()
                .map(|v| v.trim().to_lowercase());
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                rest.push(work);
                continue;
            };
            if earlier.contains_key(&work.item.record_key) {
                rest.push(work);
                continue;
            }
            match holders
                .get(&value)
                .filter(|h| h.sql_key != work.item.record_key)
            {
                Some(holder) => {
                    let error = duplicate_of(prop, holder.hubspot_id.as_deref(), &holder.sql_key);
                    steps.push(Step::Reject {
                        item: work.item,
                        errors: vec![error],
                    });
                }
                None => steps.push(Step::Upsert { work }),
            }
        }
        rest
    }

    /// Three-way merge of linked records SQL Server changed: HubSpot's current values are read
    /// (one call per 100), fields changed on both sides are settled by policy and recorded as
    /// conflicts, and only SQL Server's winning changes are sent. The snapshot becomes SQL
    /// Server's values, so HubSpot-side changes still reach SQL Server through the HubSpot poller.
    /// A contact merged in HubSpot answers with its survivor: the change goes there and the
    /// link follows; one merged with another member's contact is rejected, naming that member.
    async fn three_way_linked<'a>(
        &self,
        changed: Vec<(Work<'a>, Link)>,
        steps: &mut Vec<Step<'a>>,
    ) {
        if changed.is_empty() {
            return;
        }
        let mapper = &self.mapper;
        let ids: Vec<String> = changed
            .iter()
            .map(|(_, l)| l.hubspot_id.clone().unwrap_or_default())
            .collect();
        let modified = modified_property(&self.hubspot_object);
        let fields: Vec<&str> = mapper
            .fields()
            .map(|f| f.hubspot.as_str())
            .chain([modified, MERGED_IDS])
            .collect();
        let hubspot = self
            .client
            .batch_read(&self.hubspot_object, &ReadBy::Id, &ids, &fields);
        let current = match hubspot.await {
            Ok(found) => found,
            Err(e) => {
                retry_each(
                    steps,
                    changed.iter().map(|(w, _)| w.item),
                    ItemError::hubspot(&e),
                );
                return;
            }
        };
        // hubsync's own writes to HubSpot not settled yet (cut short by a crash): HubSpot
        // holding them is no HubSpot edit.
        let keys: Vec<String> = changed.iter().map(|(_, l)| l.sql_key.clone()).collect();
        let members: Vec<(&str, &str)> = changed
            .iter()
            .zip(&ids)
            .map(|((w, _), id)| (w.item.record_key.as_str(), id.as_str()))
            .collect();
        let (pool, object) = (&self.pool, &self.object);
        let reads = tokio::try_join!(
            writes::load(pool, object, Direction::ToHubspot, By::SqlKey, &keys),
            self.follow_all(&members, &current),
        );
        let (ours, follows) = match reads {
            Ok(r) => r,
            Err(e) => {
                retry_each(
                    steps,
                    changed.iter().map(|(w, _)| w.item),
                    ItemError::postgres(&e),
                );
                return;
            }
        };
        let answers = changed.into_iter().zip(ids).zip(current).zip(follows);
        for ((((work, mut link), hubspot_id), record), follow) in answers {
            if let (Some(write), Some(record)) = (ours.get(&link.sql_key), &record) {
                link.synced = diff::recognise(&link.synced, &write.sent, &record.properties);
            }
            let (record, hubspot_id) = match (record, follow) {
                (Some(record), Follow::Same) => (record, hubspot_id),
                (Some(record), Follow::Moved { from, to }) => {
                    steps.push(Step::Merge(Merge {
                        item_id: work.item.id,
                        sql_key: link.sql_key.clone(),
                        from,
                        to: to.clone(),
                    }));
                    (record, to)
                }
                (_, Follow::Shared { survivor, others }) => {
                    let error = merges::shared_error(&link.sql_key, &survivor, &others);
                    steps.push(Step::Reject {
                        item: work.item,
                        errors: vec![error],
                    });
                    continue;
                }
                (None, _) | (_, Follow::Gone) => {
                    steps.push(Step::Gone { work, hubspot_id });
                    continue;
                }
            };
            self.three_way(work, &link, hubspot_id, &record, "SKIP", steps);
        }
    }

    /// Where each member's link leads (`members`: SQL key and the id its link holds), after
    /// reads by those ids answered `answers`: the links of every id an answer showing a merge
    /// carries are read (one query, none when no answer shows one).
    async fn follow_all(
        &self,
        members: &[(&str, &str)],
        answers: &[Option<Record>],
    ) -> Result<Vec<Follow>, sqlx::Error> {
        let pairs = members.iter().zip(answers);
        let ids = merges::ids_to_check(pairs.clone().map(|((_, id), r)| (*id, r.as_ref())));
        let links = match ids.is_empty() {
            true => HashMap::new(),
            false => links::by_hubspot_ids(&self.pool, &self.object, &ids).await?,
        };
        Ok(pairs
            .map(|((key, id), record)| merges::follow(key, id, record.as_ref(), &links))
            .collect())
    }

    /// One record's three-way merge: SQL Server's values (`work`), HubSpot's (`record`) and
    /// the snapshot both agreed on (`link.synced`). Fields changed on both sides are settled by
    /// policy and recorded as conflicts; only SQL Server's winning changes are sent. With
    /// nothing to send the record settles as `unchanged` (SKIP, or LINK for a contact found).
    fn three_way<'a>(
        &self,
        work: Work<'a>,
        link: &Link,
        hubspot_id: String,
        record: &crate::hubspot::types::Record,
        unchanged: &'static str,
        steps: &mut Vec<Step<'a>>,
    ) {
        let mapper = &self.mapper;
        let modified = modified_property(&self.hubspot_object);
        // Only fields HubSpot may write count as HubSpot-side changes.
        let hs: Values = mapper
            .fields()
            .filter(|f| f.direction.to_sql())
            .map(|f| {
                (
                    f.hubspot.clone(),
                    record.property(&f.hubspot).map(str::to_string),
                )
            })
            .collect();
        let times = Modified {
            sql: self
                .sql_reader
                .as_ref()
                .and_then(|r| r.modified_utc(&work.row)),
            hubspot: record.property(modified).and_then(diff::hubspot_time),
        };
        let policy = |f: &str| diff::policy_of(mapper, f);
        let plan = diff::plan(&work.mapped.properties, &hs, &link.synced, times, &policy);
        steps.extend(plan.conflicts.into_iter().map(|conflict| {
            Step::Conflict(ConflictRecord {
                item_id: Some(work.item.id),
                sql_key: link.sql_key.clone(),
                hubspot_id: Some(hubspot_id.clone()),
                conflict,
                sql_modified_at: times.sql,
                hubspot_modified_at: times.hubspot,
            })
        }));
        steps.push(if plan.to_hubspot.is_empty() {
            Step::Settle {
                work,
                operation: unchanged,
                hubspot_id,
                message: "HubSpot's values stand",
            }
        } else {
            Step::Update {
                work,
                hubspot_id,
                changes: plan.to_hubspot,
            }
        });
    }

    /// The rows SQL Server holds now for the batch's upserts, by key (one query): an item
    /// queued earlier may carry a payload older than a HubSpot change hubsync has since written
    /// to SQL Server, and sending that payload would undo the change. Rows gone or soft-deleted
    /// since are left out (their payload stands; the deletion follows as its own item). Empty
    /// without a reader (the payload stands).
    async fn current_rows(
        &self,
        batch: &[&ClaimedItem],
    ) -> Result<HashMap<String, SqlRow>, crate::mssql::MssqlError> {
        let Some(reader) = &self.sql_reader else {
            return Ok(HashMap::new());
        };
        let keys: Vec<String> = batch
            .iter()
            .filter(|i| i.operation == Operation::Upsert)
            .map(|i| i.record_key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut rows = reader.rows_by_keys(&keys).await?;
        rows.retain(|_, row| !reader.is_deleted_row(row));
        Ok(rows)
    }

    /// Maps and validates each upsert: the row SQL Server holds now (`rows`), else the queued
    /// payload.
    fn map_and_validate<'a>(
        &self,
        batch: &[&'a ClaimedItem],
        rows: &HashMap<String, SqlRow>,
        portal: &PortalRules,
        steps: &mut Vec<Step<'a>>,
    ) -> Vec<Work<'a>> {
        let mut duplicates = self.mapper.duplicate_check();
        let mut work = Vec::new();
        for item in batch.iter().filter(|i| i.operation == Operation::Upsert) {
            let row = match rows.get(&item.record_key) {
                Some(row) => row.clone(),
                None => match item.payload.as_object() {
                    Some(row) => row.clone(),
                    None => {
                        let error = ItemError::new("payload", "the queued payload is not a record");
                        steps.push(Step::Reject {
                            item,
                            errors: vec![error],
                        });
                        continue;
                    }
                },
            };
            let mut mapped = self.mapper.to_hubspot(&row);
            duplicates.check(&mut mapped);
            if !mapped.is_valid() {
                let errors = mapped.errors.iter().map(validation_error).collect();
                steps.push(Step::Reject { item, errors });
                continue;
            }
            let broken = portal.check(&mapped.properties);
            if broken.is_empty() {
                work.push(Work { item, row, mapped });
            } else {
                let errors = broken.iter().map(|v| self.portal_error(v)).collect();
                steps.push(Step::Reject { item, errors });
            }
        }
        work
    }

    /// A portal rule the record breaks, as its queue error: the SQL column, the portal's rule
    /// and why (never the value).
    fn portal_error(&self, v: &crate::hubspot::portal::Violation) -> ItemError {
        let column = self
            .mapper
            .fields()
            .find(|f| f.hubspot == v.property)
            .map(|f| f.sql.clone());
        ItemError {
            field: Some(column.clone().unwrap_or_else(|| v.property.clone())),
            rule: Some(v.rule.clone()),
            ..ItemError::new(
                "portal_rule",
                format!(
                    "HubSpot portal rule {} on property {}{}: {}",
                    v.rule,
                    v.property,
                    column.map(|c| format!(" (column {c})")).unwrap_or_default(),
                    v.message
                ),
            )
        }
    }

    /// Looks unlinked records up by the match property: found ones are linked (and updated
    /// where they differ), the rest are to be created. True when any was found.
    async fn link_existing<'a>(&self, unlinked: Vec<Work<'a>>, steps: &mut Vec<Step<'a>>) -> bool {
        let prop = self.mapper.match_property().to_string();
        let (with_key, without): (Vec<Work>, Vec<Work>) = unlinked
            .into_iter()
            .partition(|w| w.mapped.properties.get(&prop).is_some_and(|v| v.is_some()));
        steps.extend(without.into_iter().map(|work| Step::Create { work }));
        if with_key.is_empty() {
            return false;
        }
        let retry_all = |with_key: Vec<Work<'a>>, steps: &mut Vec<Step<'a>>, error: ItemError| {
            retry_each(steps, with_key.iter().map(|w| w.item), error);
            // Unknown: keep looking up.
            true
        };
        let values: Vec<String> = with_key
            .iter()
            .map(|w| w.mapped.properties[&prop].clone().unwrap_or_default())
            .collect();
        let modified = modified_property(&self.hubspot_object);
        let fields: Vec<&str> = self
            .mapper
            .fields()
            .map(|f| f.hubspot.as_str())
            .chain([modified, "createdate", MERGED_IDS])
            .collect();
        let read_by = ReadBy::Property(prop.clone());
        let found = match self
            .client
            .batch_read(&self.hubspot_object, &read_by, &values, &fields)
            .await
        {
            Ok(found) => found,
            Err(e) => return retry_all(with_key, steps, ItemError::hubspot(&e)),
        };
        // With the ids merged into them: a member linked to one of those has the contact.
        let found_ids: Vec<String> = found
            .iter()
            .flatten()
            .flat_map(merges::record_ids)
            .collect();
        if found_ids.is_empty() {
            steps.extend(with_key.into_iter().map(|work| Step::Create { work }));
            return false;
        }
        let owners = match links::by_hubspot_ids(&self.pool, &self.object, &found_ids).await {
            Ok(o) => o,
            Err(e) => {
                let error = ItemError::postgres(&e);
                return retry_all(with_key, steps, error);
            }
        };
        // Contacts hubsync itself created and had not linked (it crashed before settling):
        // the values they were created with are the base for the conflict policy.
        let keys: Vec<String> = with_key.iter().map(|w| w.item.record_key.clone()).collect();
        let created = match writes::load(
            &self.pool,
            &self.object,
            Direction::ToHubspot,
            By::SqlKey,
            &keys,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let error = ItemError::postgres(&e);
                return retry_all(with_key, steps, error);
            }
        };
        for (work, record) in with_key.into_iter().zip(found) {
            let Some(record) = record else {
                steps.push(Step::Create { work });
                continue;
            };
            if let Some(owner) = merges::owners(&merges::record_ids(&record), &owners)
                .into_iter()
                .find(|l| l.sql_key != work.item.record_key)
            {
                let error = duplicate_of(&prop, Some(&record.id), &owner.sql_key);
                steps.push(Step::Reject {
                    item: work.item,
                    errors: vec![error],
                });
                continue;
            }
            if let Some(write) = created
                .get(&work.item.record_key)
                .filter(|w| w.created(&record))
            {
                let base = Link {
                    sql_key: work.item.record_key.clone(),
                    hubspot_id: Some(record.id.clone()),
                    synced: write.created_base(&record.properties),
                    sql_version: None,
                    hubspot_version: None,
                };
                self.three_way(work, &base, record.id.clone(), &record, "LINK", steps);
                continue;
            }
            steps.push(changed(work, record.id.clone(), &record.properties, "LINK"));
        }
        true
    }
}

/// `Update` with the properties that differ from `current`, or `Settle` as `unchanged` when
/// none do.
fn changed<'a>(
    work: Work<'a>,
    hubspot_id: String,
    current: &Values,
    unchanged: &'static str,
) -> Step<'a> {
    let changes = diff::changes(&work.mapped.properties, current);
    if changes.is_empty() {
        let message = if unchanged == "LINK" {
            "linked to the existing contact"
        } else {
            "no change since the last sync"
        };
        Step::Settle {
            work,
            operation: unchanged,
            hubspot_id,
            message,
        }
    } else {
        Step::Update {
            work,
            hubspot_id,
            changes,
        }
    }
}

/// One batch's bookkeeping.
struct Run<'h> {
    this: &'h ToHubspot,
    started: Instant,
    result: BatchResult,
}

impl Run<'_> {
    fn log(
        &self,
        item: &ClaimedItem,
        operation: &str,
        hubspot_id: Option<&str>,
        status: &str,
        message: &str,
    ) {
        OperationLog {
            operation,
            object: &self.this.object,
            direction: Direction::ToHubspot.as_str(),
            record_key: &item.record_key,
            hubspot_id,
            batch_id: &item.batch_id,
            status,
            message,
            started: self.started,
        }
        .emit();
    }

    fn reject(&mut self, item: &ClaimedItem, errors: Vec<ItemError>) {
        let rules: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}[{}]",
                    e.field.as_deref().unwrap_or("-"),
                    e.rule.as_deref().unwrap_or(&e.kind)
                )
            })
            .collect();
        self.log(
            item,
            "REJECT",
            item.hubspot_id.as_deref(),
            "rejected",
            &rules.join(", "),
        );
        self.result
            .outcomes
            .push((item.id, Outcome::Reject(errors)));
    }

    fn retry(&mut self, item: &ClaimedItem, error: ItemError) {
        if let Some(delay) = error.wait {
            // Not the record's fault and not worth an attempt: it waits for HubSpot.
            self.log(item, "DEFER", None, "deferred", &error.message);
            let reason = error.summary();
            self.result
                .outcomes
                .push((item.id, Outcome::Defer { reason, delay }));
            return;
        }
        self.log(item, "RETRY", None, "retry", &error.message);
        self.result.outcomes.push((item.id, Outcome::Retry(error)));
    }

    /// A HubSpot call failed as a whole: every item it carried is retried.
    fn call_failed<'i>(
        &mut self,
        items: impl Iterator<Item = &'i ClaimedItem>,
        e: &crate::hubspot::HubSpotError,
    ) {
        for item in items {
            self.retry(item, ItemError::hubspot(e));
        }
    }

    fn done(&mut self, w: &Work, operation: &str, hubspot_id: &str, message: &str) {
        self.done_at(w, operation, hubspot_id, message, None);
    }

    /// Settles a record synced; `modified` is the contact's modification time after hubsync's
    /// write (epoch ms), when it made one: HubSpot changes read before it are then known to be
    /// older than a state hubsync has reconciled.
    fn done_at(
        &mut self,
        w: &Work,
        operation: &str,
        hubspot_id: &str,
        message: &str,
        modified: Option<i64>,
    ) {
        self.log(w.item, operation, Some(hubspot_id), "done", message);
        self.result.outcomes.push((
            w.item.id,
            Outcome::Done {
                operation: operation.into(),
                hubspot_id: Some(hubspot_id.into()),
            },
        ));
        self.result.links.push(LinkUpdate {
            sql_key: w.item.record_key.clone(),
            hubspot_id: Some(hubspot_id.into()),
            synced: w.mapped.properties.clone(),
            sql_version: Some(w.item.source_version),
            hubspot_version: modified,
            direction: Direction::ToHubspot,
        });
    }

    /// Settles one write outcome; `Exists` is handled by the caller.
    fn settle_write(&mut self, w: &Work, operation: &str, outcome: &WriteOutcome) {
        match outcome {
            WriteOutcome::Ok { id, updated_at, .. } => {
                let modified = updated_at
                    .as_deref()
                    .and_then(diff::hubspot_time)
                    .map(|t| t.timestamp_millis());
                self.done_at(w, operation, id, "written", modified)
            }
            WriteOutcome::Rejected {
                status,
                message,
                property,
                ..
            } => {
                let error = ItemError {
                    field: property.clone(),
                    http_status: Some(*status),
                    ..ItemError::new("hubspot", message.clone())
                };
                self.reject(w.item, vec![error]);
            }
            WriteOutcome::NotFound { id } => self.retry(
                w.item,
                ItemError::new("hubspot", format!("HubSpot record {id} no longer exists")),
            ),
            WriteOutcome::Transient { status, message } => self.retry(
                w.item,
                ItemError {
                    http_status: *status,
                    ..ItemError::new("transient", message.clone())
                },
            ),
            WriteOutcome::Exists { existing_id } => self.retry(
                w.item,
                ItemError::new("hubspot", format!("record {existing_id} already exists")),
            ),
        }
    }

    async fn archive(&mut self, targets: Vec<(&ClaimedItem, String)>) {
        if targets.is_empty() {
            return;
        }
        let ids: Vec<String> = targets.iter().map(|(_, id)| id.clone()).collect();
        match self
            .this
            .client
            .batch_archive(&self.this.hubspot_object, &ids)
            .await
        {
            Ok(outcomes) => {
                for ((item, id), outcome) in targets.into_iter().zip(outcomes) {
                    match outcome {
                        WriteOutcome::Ok { .. } | WriteOutcome::NotFound { .. } => {
                            self.log(item, "ARCHIVE", Some(&id), "done", "archived in HubSpot");
                            self.result.outcomes.push((
                                item.id,
                                Outcome::Done {
                                    operation: "ARCHIVE".into(),
                                    hubspot_id: Some(id),
                                },
                            ));
                        }
                        other => self.retry(item, ItemError::new("hubspot", format!("{other:?}"))),
                    }
                }
            }
            Err(e) => self.call_failed(targets.into_iter().map(|(item, _)| item), &e),
        }
    }

    /// Records the writes about to be sent; false (every item retried) when PostgreSQL
    /// cannot store them, so that nothing is sent unrecorded.
    async fn record_writes<'i>(
        &mut self,
        items: impl Iterator<Item = (&'i ClaimedItem, Option<&'i str>, &'i Values)> + Clone,
    ) -> bool {
        let sent: Vec<writes::Write> = items
            .clone()
            .map(|(item, hubspot_id, values)| writes::Write {
                record_key: item.record_key.clone(),
                item_id: item.id,
                sql_key: Some(item.record_key.clone()),
                hubspot_id: hubspot_id.map(str::to_string),
                sent: values.clone(),
                first_sent_at: None,
                created_with: None,
            })
            .collect();
        let (pool, object) = (&self.this.pool, &self.this.object);
        match writes::record(pool, object, Direction::ToHubspot, &sent).await {
            Ok(()) => true,
            Err(e) => {
                let error = ItemError::postgres(&e);
                for (item, _, _) in items {
                    self.retry(item, error.clone());
                }
                false
            }
        }
    }

    /// Sends each record's changed properties to its contact, 100 records a request. Contacts
    /// HubSpot leaves out of the answer (merged away, or gone) are read again by id: a merged
    /// one's change goes to its survivor in this same batch, and its link follows.
    async fn update(&mut self, updates: Vec<(Work<'_>, String, Values)>) {
        let left_out = self.send_updates(updates).await;
        let (survivors, gone) = self.follow_merges(left_out).await;
        for (w, id, _) in self.send_updates(survivors).await {
            self.settle_write(&w, "UPDATE", &WriteOutcome::NotFound { id });
        }
        self.erase(gone).await;
    }

    /// Sends updates, 100 a request, and settles every item but those HubSpot left out, which
    /// are returned.
    async fn send_updates<'w>(
        &mut self,
        updates: Vec<(Work<'w>, String, Values)>,
    ) -> Vec<(Work<'w>, String, Values)> {
        let mut left_out = Vec::new();
        let mut rest = updates.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(crate::hubspot::BATCH_LIMIT).collect();
            let sent = chunk
                .iter()
                .map(|(w, id, changes)| (w.item, Some(id.as_str()), changes));
            if !self.record_writes(sent).await {
                continue;
            }
            for (w, _, changes) in &chunk {
                self.note(w.item, changes.keys());
            }
            let inputs: Vec<UpdateInput> = chunk
                .iter()
                .map(|(_, id, changes)| UpdateInput {
                    id: id.clone(),
                    properties: changes.clone(),
                })
                .collect();
            let (client, object) = (&self.this.client, &self.this.hubspot_object);
            // Not sent again when it may have landed: the items are decided again, against
            // what HubSpot holds then (a repeat would overwrite an edit made in between).
            let repeat = crate::hubspot::Repeat::OnlyIfUnsent;
            match client.batch_update_with(object, &inputs, repeat).await {
                Ok(outcomes) => {
                    for (update, outcome) in chunk.into_iter().zip(outcomes) {
                        match outcome {
                            WriteOutcome::NotFound { .. } => left_out.push(update),
                            other => self.settle_write(&update.0, "UPDATE", &other),
                        }
                    }
                }
                Err(e) => self.call_failed(chunk.iter().map(|(w, _, _)| w.item), &e),
            }
        }
        left_out
    }

    /// Contacts HubSpot left out of an update, read again by id (one call): a merged one's
    /// change is returned addressed to its survivor, with its link to follow once done; one
    /// merged with another member's contact is rejected naming that member; one gone is
    /// returned apart, for [`Run::erase`].
    async fn follow_merges<'w>(
        &mut self,
        left_out: Vec<(Work<'w>, String, Values)>,
    ) -> (Vec<(Work<'w>, String, Values)>, Vec<(Work<'w>, String)>) {
        if left_out.is_empty() {
            return (left_out, Vec::new());
        }
        let ids: Vec<String> = left_out.iter().map(|(_, id, _)| id.clone()).collect();
        let (client, object) = (&self.this.client, &self.this.hubspot_object);
        let answers = match client
            .batch_read(object, &ReadBy::Id, &ids, &[MERGED_IDS])
            .await
        {
            Ok(answers) => answers,
            Err(e) => {
                self.call_failed(left_out.iter().map(|(w, _, _)| w.item), &e);
                return (Vec::new(), Vec::new());
            }
        };
        let members: Vec<(&str, &str)> = left_out
            .iter()
            .map(|(w, id, _)| (w.item.record_key.as_str(), id.as_str()))
            .collect();
        let follows = match self.this.follow_all(&members, &answers).await {
            Ok(follows) => follows,
            Err(e) => {
                let error = ItemError::postgres(&e);
                for (w, _, _) in &left_out {
                    self.retry(w.item, error.clone());
                }
                return (Vec::new(), Vec::new());
            }
        };
        let (mut survivors, mut gone) = (Vec::new(), Vec::new());
        for ((w, id, changes), follow) in left_out.into_iter().zip(follows) {
            match follow {
                Follow::Moved { from, to } => {
                    self.follow_link(w.item, from, &to);
                    survivors.push((w, to, changes));
                }
                Follow::Shared { survivor, others } => {
                    let error = merges::shared_error(&w.item.record_key, &survivor, &others);
                    self.reject(w.item, vec![error]);
                }
                Follow::Same => {
                    let message = format!("HubSpot left contact {id} out of the update's answer");
                    self.retry(w.item, ItemError::new("hubspot", message));
                }
                Follow::Gone => gone.push((w, id)),
            }
        }
        (survivors, gone)
    }

    /// Members whose linked contact HubSpot answers none for and shows no merge. HubSpot is
    /// asked whether it holds each archived (one read): such a member is rejected (restoring
    /// the contact syncs it again). The others are gone for good: the object's
    /// `on_hubspot_erasure` is applied to their SQL Server rows (one transaction), and each
    /// item is done with an erasure that purges hubsync's copies of the member as it settles.
    async fn erase(&mut self, gone: Vec<(Work<'_>, String)>) {
        if gone.is_empty() {
            return;
        }
        let ids: Vec<String> = gone.iter().map(|(_, id)| id.clone()).collect();
        let (client, object) = (&self.this.client, &self.this.hubspot_object);
        let archived = match client.batch_read_archived(object, &ids).await {
            Ok(archived) => archived,
            Err(e) => return self.call_failed(gone.iter().map(|(w, _)| w.item), &e),
        };
        let mut erased = Vec::new();
        for ((w, id), archived) in gone.into_iter().zip(archived) {
            match archived {
                Some(_) => self.reject(w.item, vec![erasure::archived_error(&id)]),
                None => erased.push((w, id)),
            }
        }
        let policy = &self.this.erasure;
        let writes: Vec<_> = erased
            .iter()
            .filter_map(|(w, _)| policy.write(&w.item.record_key))
            .collect();
        let mut refused: HashMap<String, ItemError> = HashMap::new();
        if !writes.is_empty() {
            let applied = match &self.this.sql_writer {
                Some(writer) => writer.apply(&writes).await.map_err(|e| e.to_string()),
                None => Err("no SQL Server writer for this object".to_string()),
            };
            let report = match applied {
                Ok(report) => report,
                Err(e) => {
                    for (w, _) in &erased {
                        self.retry(w.item, ItemError::new("sql_server", e.clone()));
                    }
                    return;
                }
            };
            for (write, outcome) in writes.iter().zip(report.outcomes) {
                if let RowOutcome::Failed(f) = outcome {
                    let message = match f.number {
                        Some(n) => format!("SQL Server error {n}: {}", f.message),
                        None => f.message,
                    };
                    let key = write.key.clone().unwrap_or_default();
                    refused.insert(key, ItemError::new("sql_server", message));
                }
            }
        }
        for (w, id) in erased {
            if let Some(error) = refused.remove(&w.item.record_key) {
                self.reject(w.item, vec![error]);
                continue;
            }
            self.result.outcomes.push((
                w.item.id,
                Outcome::Done {
                    operation: "ERASE".into(),
                    hubspot_id: Some(id.clone()),
                },
            ));
            self.result.erasures.push(Erasure {
                item_id: w.item.id,
                sql_key: w.item.record_key.clone(),
                message: erasure::cause_message(policy, &id),
                hubspot_id: id,
            });
        }
    }

    /// Notes the properties an item sends, for its history.
    fn note<'p>(&mut self, item: &ClaimedItem, properties: impl Iterator<Item = &'p String>) {
        self.result.notes.insert(
            item.id,
            Note {
                properties: properties.cloned().collect(),
                ..Note::default()
            },
        );
    }

    /// Notes that `item`'s link follows a merge from `from` to `to`; after a merge found earlier
    /// in the batch, the link goes from where it was straight to the newest survivor.
    fn follow_link(&mut self, item: &ClaimedItem, from: String, to: &str) {
        match self.result.merges.iter_mut().find(|m| m.item_id == item.id) {
            Some(merge) => merge.to = to.to_string(),
            None => self.result.merges.push(Merge {
                item_id: item.id,
                sql_key: item.record_key.clone(),
                from,
                to: to.to_string(),
            }),
        }
    }

    /// Upserts records by the match property, 100 a request: created or updated, never twice.
    async fn upsert(&mut self, upserts: Vec<Work<'_>>) {
        let prop = self.this.mapper.match_property().to_string();
        for chunk in upserts.chunks(crate::hubspot::BATCH_LIMIT) {
            let sent = chunk.iter().map(|w| (w.item, None, &w.mapped.properties));
            if !self.record_writes(sent).await {
                continue;
            }
            for w in chunk {
                self.note(w.item, set_properties(&w.mapped.properties));
            }
            let inputs: Vec<CreateInput> = chunk
                .iter()
                .map(|w| CreateInput {
                    properties: w.mapped.properties.clone(),
                })
                .collect();
            let (client, object) = (&self.this.client, &self.this.hubspot_object);
            let outcomes = match client.batch_upsert(object, &prop, &inputs).await {
                Ok(o) => o,
                Err(e) => {
                    self.call_failed(chunk.iter().map(|w| w.item), &e);
                    continue;
                }
            };
            let written: Vec<(String, String)> = chunk
                .iter()
                .zip(&outcomes)
                .filter_map(|(w, o)| match o {
                    WriteOutcome::Ok { id, .. } => Some((w.item.record_key.clone(), id.clone())),
                    _ => None,
                })
                .collect();
            let (pool, name) = (&self.this.pool, &self.this.object);
            if let Err(e) = writes::set_hubspot_ids(pool, name, &written).await {
                tracing::warn!(error = %crate::pg::describe(&e),
                    "could not note the ids of contacts just upserted");
            }
            // A contact another SQL Server record is linked to (its snapshot had an older
            // value): never linked twice.
            let ids: Vec<String> = written.iter().map(|(_, id)| id.clone()).collect();
            let owners = links::by_hubspot_ids(pool, name, &ids).await;
            for (w, outcome) in chunk.iter().zip(&outcomes) {
                let owner = match (&owners, outcome) {
                    (Ok(owners), WriteOutcome::Ok { id, .. }) => owners
                        .get(id)
                        .filter(|l| l.sql_key != w.item.record_key)
                        .map(|l| (id.clone(), l.sql_key.clone())),
                    _ => None,
                };
                if let Some((id, owner)) = owner {
                    tracing::error!(operation = "UPSERT", record_key = %w.item.record_key,
                        hubspot_id = %id, other_record = %owner,
                        "the upsert landed on a contact linked to another record");
                    self.reject(w.item, vec![duplicate_of(&prop, Some(&id), &owner)]);
                    continue;
                }
                if let Err(e) = &owners {
                    let error = ItemError::postgres(e);
                    self.retry(w.item, error);
                    continue;
                }
                let operation = match outcome {
                    WriteOutcome::Ok {
                        created: Some(false),
                        ..
                    } => "UPDATE",
                    _ => "CREATE",
                };
                self.settle_write(w, operation, outcome);
            }
        }
    }

    async fn create(&mut self, creates: Vec<Work<'_>>) {
        let prop = self.this.mapper.match_property().to_string();
        // Inputs that met an existing contact, with HubSpot's refusal when it gave one.
        let mut existing: Vec<(Work, Option<WriteOutcome>)> = Vec::new();
        let inputs: Vec<CreateInput> = creates
            .iter()
            .map(|w| CreateInput {
                properties: w.mapped.properties.clone(),
            })
            .collect();
        if inputs.is_empty() {
            return;
        }
        let sent = creates.iter().map(|w| (w.item, None, &w.mapped.properties));
        if !self.record_writes(sent).await {
            return;
        }
        for w in &creates {
            self.note(w.item, set_properties(&w.mapped.properties));
        }
        match self
            .this
            .client
            .batch_create(&self.this.hubspot_object, &inputs, Some(&prop))
            .await
        {
            Ok(outcomes) => {
                // The new contacts' ids, stored as soon as HubSpot names them.
                let created: Vec<(String, String)> = creates
                    .iter()
                    .zip(&outcomes)
                    .filter_map(|(w, o)| match o {
                        WriteOutcome::Ok { id, .. } => {
                            Some((w.item.record_key.clone(), id.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let (pool, object) = (&self.this.pool, &self.this.object);
                if let Err(e) = writes::set_hubspot_ids(pool, object, &created).await {
                    tracing::warn!(error = %crate::pg::describe(&e),
                        "could not note the ids of contacts just created");
                }
                for (w, outcome) in creates.into_iter().zip(outcomes) {
                    match outcome {
                        // Created meanwhile (or by an earlier try of this very item): link and
                        // update it rather than creating a second one.
                        WriteOutcome::Exists { .. } => existing.push((w, None)),
                        // Another unique property of the record is taken: most likely by the
                        // same contact, which the match property then finds.
                        refused @ WriteOutcome::Rejected { .. } if unique_taken(&refused) => {
                            existing.push((w, Some(refused)))
                        }
                        other => self.settle_write(&w, "CREATE", &other),
                    }
                }
            }
            Err(e) => self.call_failed(creates.iter().map(|w| w.item), &e),
        }
        if existing.is_empty() {
            return;
        }
        // A contact existed after all: look up first again for the next batches.
        self.this.lookup.found(true);
        let mut refusals: HashMap<i64, WriteOutcome> = HashMap::new();
        let mut unlinked = Vec::new();
        for (w, refused) in existing {
            if let Some(refused) = refused {
                refusals.insert(w.item.id, refused);
            }
            unlinked.push(w);
        }
        let mut steps = Vec::new();
        self.this.link_existing(unlinked, &mut steps).await;
        let mut updates = Vec::new();
        for step in steps {
            match step {
                Step::Settle {
                    work,
                    operation,
                    hubspot_id,
                    message,
                } => self.done(&work, operation, &hubspot_id, message),
                Step::Update {
                    work,
                    hubspot_id,
                    changes,
                } => updates.push((work, hubspot_id, changes)),
                Step::Reject { item, errors } => self.reject(item, errors),
                Step::Retry { item, error } => self.retry(item, error),
                Step::Create { work } => match refusals.remove(&work.item.id) {
                    // Not found by the match property: the value belongs to another contact.
                    Some(refused) => self.settle_write(&work, "CREATE", &refused),
                    None => self.retry(
                        work.item,
                        ItemError::new(
                            "hubspot",
                            "HubSpot said the contact exists but it could not be read",
                        ),
                    ),
                },
                Step::Upsert { work } => self.retry(
                    work.item,
                    ItemError::new("internal", "unexpected upsert step after a create"),
                ),
                Step::Archive { item, .. } | Step::ArchiveUnsynced { item } => self.retry(
                    item,
                    ItemError::new("internal", "unexpected archive step after a create"),
                ),
                Step::Gone {
                    work: Work { item, .. },
                    ..
                }
                | Step::Erased { item } => self.retry(
                    item,
                    ItemError::new("internal", "unexpected erasure step after a create"),
                ),
                Step::Conflict(c) => self.result.conflicts.push(c),
                Step::Merge(m) => self.result.merges.push(m),
            }
        }
        self.update(updates).await;
    }
}

/// Every one of `items` to retry after `error`, after the steps decided so far.
fn retry_each<'a>(
    steps: &mut Vec<Step<'a>>,
    items: impl IntoIterator<Item = &'a ClaimedItem>,
    error: ItemError,
) {
    steps.extend(items.into_iter().map(|item| Step::Retry {
        item,
        error: error.clone(),
    }));
}

/// `steps` with every one of `items` to retry after `error` added: a plan cut short by a
/// failed read.
fn retried<'a>(
    mut steps: Vec<Step<'a>>,
    items: impl IntoIterator<Item = &'a ClaimedItem>,
    error: ItemError,
) -> Vec<Step<'a>> {
    retry_each(&mut steps, items, error);
    steps
}

/// The error of a record whose match value belongs to the HubSpot contact of another SQL Server
/// record (`owner`).
fn duplicate_of(prop: &str, hubspot_id: Option<&str>, owner: &str) -> ItemError {
    ItemError {
        field: Some(prop.to_string()),
        rule: Some("unique".into()),
        ..ItemError::new(
            "duplicate",
            format!(
                "HubSpot contact {} with the same {prop} is already synced with record {owner}",
                hubspot_id.unwrap_or("?")
            ),
        )
    }
}

/// Why a change of a member erased in HubSpot is not sent.
const ERASED: &str = "the member's HubSpot contact was erased for good (GDPR delete): not sent \
    again (`hubsync forget` clears hubsync's record of the erasure)";

/// The properties a create sends a value for.
fn set_properties(properties: &Values) -> impl Iterator<Item = &String> {
    properties
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
}

/// HubSpot refused a create because a unique property's value is already taken.
fn unique_taken(outcome: &WriteOutcome) -> bool {
    matches!(outcome, WriteOutcome::Rejected { category, message, .. }
        if category.contains("INVALID_UNIQUE_VALUE") || message.contains("INVALID_UNIQUE_VALUE"))
}

/// A failed rule as a queue item error (field, rule, message).
pub fn validation_error(issue: &Issue) -> ItemError {
    ItemError {
        field: Some(issue.field.clone()),
        rule: Some(issue.rule.clone()),
        ..ItemError::new("validation", issue.message.clone())
    }
}
