//! The to_hubspot step: SQL Server rows (queue payloads) → mapped and validated → diffed against
//! the record link → HubSpot batch update (linked), or looked up by the match property and
//! linked, or batch created. Every item gets its own outcome; a retried create can never make a
//! second contact (a 409 links the existing one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

use super::diff::{self, Modified, Values};
use super::links::{self, ConflictRecord, Link, LinkUpdate};
use super::worker::{BatchHandler, BatchResult};
use crate::hubspot::types::{CreateInput, ReadBy, UpdateInput, WriteOutcome};
use crate::hubspot::{HubSpotClient, modified_property};
use crate::mapping::{Mapped, Mapper, SqlRow};
use crate::mssql::ChangeReader;
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
}

/// One valid record on its way to HubSpot.
struct Work<'a> {
    item: &'a ClaimedItem,
    mapped: Mapped,
}

/// An update of an existing HubSpot record: only the properties that differ from what HubSpot
/// holds (an edit made in HubSpot to another property is never overwritten).
struct Update<'a> {
    work: Work<'a>,
    id: String,
    changes: Values,
}

impl BatchHandler for ToHubspot {
    async fn handle(&self, batch: &[ClaimedItem]) -> BatchResult {
        let started = Instant::now();
        let mut run = Run {
            this: self,
            started,
            result: BatchResult::default(),
        };
        let work = run.map_and_validate(batch);
        let archives: Vec<&ClaimedItem> = batch
            .iter()
            .filter(|i| i.operation == Operation::Archive)
            .collect();
        let keys: Vec<String> = work
            .iter()
            .map(|w| w.item.record_key.clone())
            .chain(archives.iter().map(|i| i.record_key.clone()))
            .collect();
        let links = match links::by_sql_keys(&self.pool, &self.object, &keys).await {
            Ok(l) => l,
            Err(e) => {
                let error = ItemError::new("postgres", crate::pg::describe(&e));
                for w in &work {
                    run.retry(w.item, error.clone());
                }
                for item in &archives {
                    run.retry(item, error.clone());
                }
                return run.result;
            }
        };
        run.archive(&archives, &links).await;
        let (linked, unlinked): (Vec<Work>, Vec<Work>) = work.into_iter().partition(|w| {
            links
                .get(&w.item.record_key)
                .is_some_and(|l| l.hubspot_id.is_some())
        });
        let mut changed: Vec<(Work, &Link)> = Vec::new();
        for w in linked {
            let link = &links[&w.item.record_key];
            if diff::changes(&w.mapped.properties, &link.synced).is_empty() {
                let id = link.hubspot_id.clone().unwrap_or_default();
                run.done(&w, "SKIP", &id, "no change since the last sync");
            } else {
                changed.push((w, link));
            }
        }
        let mut updates = run.merge(changed).await;
        let creates = run.link_existing(unlinked, &mut updates).await;
        run.update(updates).await;
        run.create(creates).await;
        run.result
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

    fn map_and_validate<'a>(&mut self, batch: &'a [ClaimedItem]) -> Vec<Work<'a>> {
        let mut duplicates = self.this.mapper.duplicate_check();
        let mut work = Vec::new();
        for item in batch.iter().filter(|i| i.operation == Operation::Upsert) {
            let Some(row) = item.payload.as_object() else {
                self.reject(
                    item,
                    vec![ItemError::new(
                        "payload",
                        "the queued payload is not a record",
                    )],
                );
                continue;
            };
            let row: &SqlRow = row;
            let mut mapped = self.this.mapper.to_hubspot(row);
            duplicates.check(&mut mapped);
            if mapped.is_valid() {
                work.push(Work { item, mapped });
            } else {
                let errors = mapped.errors.iter().map(validation_error).collect();
                self.reject(item, errors);
            }
        }
        work
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
        self.log(item, "RETRY", None, "retry", &error.message);
        self.result.outcomes.push((item.id, Outcome::Retry(error)));
    }

    fn done(&mut self, w: &Work, operation: &str, hubspot_id: &str, message: &str) {
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
            hubspot_version: None,
            direction: Direction::ToHubspot,
        });
    }

    /// Settles one write outcome; `Exists` is handled by the caller.
    fn settle_write(&mut self, w: &Work, operation: &str, outcome: &WriteOutcome) {
        match outcome {
            WriteOutcome::Ok { id, .. } => self.done(w, operation, id, "written"),
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

    async fn archive(&mut self, items: &[&ClaimedItem], links: &HashMap<String, Link>) {
        let mut ids = Vec::new();
        let mut targets = Vec::new();
        for item in items {
            match links
                .get(&item.record_key)
                .and_then(|l| l.hubspot_id.clone())
            {
                Some(id) => {
                    ids.push(id);
                    targets.push(*item);
                }
                None => {
                    self.log(
                        item,
                        "SKIP",
                        None,
                        "done",
                        "deleted before it was ever synced",
                    );
                    self.result.outcomes.push((
                        item.id,
                        Outcome::Done {
                            operation: "SKIP".into(),
                            hubspot_id: None,
                        },
                    ));
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        match self
            .this
            .client
            .batch_archive(&self.this.hubspot_object, &ids)
            .await
        {
            Ok(outcomes) => {
                for ((item, id), outcome) in targets.iter().zip(&ids).zip(outcomes) {
                    match outcome {
                        WriteOutcome::Ok { .. } | WriteOutcome::NotFound { .. } => {
                            self.log(item, "ARCHIVE", Some(id), "done", "archived in HubSpot");
                            self.result.outcomes.push((
                                item.id,
                                Outcome::Done {
                                    operation: "ARCHIVE".into(),
                                    hubspot_id: Some(id.clone()),
                                },
                            ));
                        }
                        other => self.retry(item, ItemError::new("hubspot", format!("{other:?}"))),
                    }
                }
            }
            Err(e) => {
                for item in targets {
                    self.retry(item, ItemError::new("hubspot", e.to_string()));
                }
            }
        }
    }

    /// Three-way merge of linked records SQL Server changed: HubSpot's current values are read
    /// (one call per 100), fields changed on both sides are settled by policy and recorded as
    /// conflicts, and only SQL Server's winning changes are returned to be sent. The snapshot
    /// becomes SQL Server's values, so HubSpot-side changes still reach SQL Server through the
    /// HubSpot poller.
    async fn merge<'a>(&mut self, changed: Vec<(Work<'a>, &Link)>) -> Vec<Update<'a>> {
        if changed.is_empty() {
            return Vec::new();
        }
        let mapper = &self.this.mapper;
        let ids: Vec<String> = changed
            .iter()
            .map(|(_, l)| l.hubspot_id.clone().unwrap_or_default())
            .collect();
        let modified = modified_property(&self.this.hubspot_object);
        let fields: Vec<&str> = mapper
            .fields()
            .map(|f| f.hubspot.as_str())
            .chain([modified])
            .collect();
        let hubspot =
            self.this
                .client
                .batch_read(&self.this.hubspot_object, &ReadBy::Id, &ids, &fields);
        let current = match hubspot.await {
            Ok(found) => found,
            Err(e) => {
                for (w, _) in changed {
                    self.retry(w.item, ItemError::new("hubspot", e.to_string()));
                }
                return Vec::new();
            }
        };
        let mut updates = Vec::new();
        for (((w, link), id), record) in changed.into_iter().zip(ids).zip(current) {
            let Some(record) = record else {
                // Gone from HubSpot: the update says so.
                let changes = diff::changes(&w.mapped.properties, &link.synced);
                updates.push(Update {
                    work: w,
                    id,
                    changes,
                });
                continue;
            };
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
                    .this
                    .sql_reader
                    .as_ref()
                    .and_then(|r| r.modified_utc(w.item.payload.as_object()?)),
                hubspot: record.property(modified).and_then(diff::hubspot_time),
            };
            let policy = |f: &str| diff::policy_of(mapper, f);
            let plan = diff::plan(&w.mapped.properties, &hs, &link.synced, times, &policy);
            for conflict in plan.conflicts {
                self.result.conflicts.push(ConflictRecord {
                    sql_key: link.sql_key.clone(),
                    hubspot_id: Some(id.clone()),
                    conflict,
                    sql_modified_at: times.sql,
                    hubspot_modified_at: times.hubspot,
                });
            }
            if plan.to_hubspot.is_empty() {
                self.done(&w, "SKIP", &id, "HubSpot's values stand");
            } else {
                updates.push(Update {
                    work: w,
                    id,
                    changes: plan.to_hubspot,
                });
            }
        }
        updates
    }

    /// Looks unlinked records up by the match property: found ones are linked (and updated
    /// where they differ), the rest are returned to be created.
    async fn link_existing<'a>(
        &mut self,
        unlinked: Vec<Work<'a>>,
        updates: &mut Vec<Update<'a>>,
    ) -> Vec<Work<'a>> {
        let prop = self.this.mapper.match_property().to_string();
        let (with_key, without): (Vec<Work>, Vec<Work>) = unlinked
            .into_iter()
            .partition(|w| w.mapped.properties.get(&prop).is_some_and(|v| v.is_some()));
        let mut creates = without;
        if with_key.is_empty() {
            return creates;
        }
        let values: Vec<String> = with_key
            .iter()
            .map(|w| w.mapped.properties[&prop].clone().unwrap_or_default())
            .collect();
        let fields: Vec<&str> = self
            .this
            .mapper
            .fields()
            .map(|f| f.hubspot.as_str())
            .collect();
        let found = match self
            .this
            .client
            .batch_read(
                &self.this.hubspot_object,
                &ReadBy::Property(prop.clone()),
                &values,
                &fields,
            )
            .await
        {
            Ok(found) => found,
            Err(e) => {
                for w in with_key {
                    self.retry(w.item, ItemError::new("hubspot", e.to_string()));
                }
                return creates;
            }
        };
        let found_ids: Vec<String> = found.iter().flatten().map(|r| r.id.clone()).collect();
        let owners =
            match links::by_hubspot_ids(&self.this.pool, &self.this.object, &found_ids).await {
                Ok(o) => o,
                Err(e) => {
                    for w in with_key {
                        self.retry(w.item, ItemError::new("postgres", crate::pg::describe(&e)));
                    }
                    return creates;
                }
            };
        for (w, record) in with_key.into_iter().zip(found) {
            let Some(record) = record else {
                creates.push(w);
                continue;
            };
            if let Some(owner) = owners
                .get(&record.id)
                .filter(|l| l.sql_key != w.item.record_key)
            {
                let error = ItemError {
                    field: Some(prop.clone()),
                    rule: Some("unique".into()),
                    ..ItemError::new(
                        "duplicate",
                        format!(
                            "HubSpot contact {} with the same {prop} is already synced with record {}",
                            record.id, owner.sql_key
                        ),
                    )
                };
                self.reject(w.item, vec![error]);
                continue;
            }
            let changes = diff::changes(&w.mapped.properties, &record.properties);
            if changes.is_empty() {
                self.done(&w, "LINK", &record.id, "linked to the existing contact");
            } else {
                updates.push(Update {
                    work: w,
                    id: record.id.clone(),
                    changes,
                });
            }
        }
        creates
    }

    async fn update(&mut self, updates: Vec<Update<'_>>) {
        for chunk in updates.chunks(crate::hubspot::BATCH_LIMIT) {
            let inputs: Vec<UpdateInput> = chunk
                .iter()
                .map(|u| UpdateInput {
                    id: u.id.clone(),
                    properties: u.changes.clone(),
                })
                .collect();
            match self
                .this
                .client
                .batch_update(&self.this.hubspot_object, &inputs)
                .await
            {
                Ok(outcomes) => {
                    for (u, outcome) in chunk.iter().zip(&outcomes) {
                        self.settle_write(&u.work, "UPDATE", outcome);
                    }
                }
                Err(e) => {
                    for u in chunk {
                        self.retry(u.work.item, ItemError::new("hubspot", e.to_string()));
                    }
                }
            }
        }
    }

    async fn create(&mut self, creates: Vec<Work<'_>>) {
        let prop = self.this.mapper.match_property().to_string();
        let mut existing: Vec<(Work, String)> = Vec::new();
        let inputs: Vec<CreateInput> = creates
            .iter()
            .map(|w| CreateInput {
                properties: w.mapped.properties.clone(),
            })
            .collect();
        if inputs.is_empty() {
            return;
        }
        match self
            .this
            .client
            .batch_create(&self.this.hubspot_object, &inputs, Some(&prop))
            .await
        {
            Ok(outcomes) => {
                for (w, outcome) in creates.into_iter().zip(outcomes) {
                    match outcome {
                        // Created meanwhile (or by an earlier try of this very item): link and
                        // update it rather than creating a second one.
                        WriteOutcome::Exists { existing_id } => existing.push((w, existing_id)),
                        other => self.settle_write(&w, "CREATE", &other),
                    }
                }
            }
            Err(e) => {
                for w in creates {
                    self.retry(w.item, ItemError::new("hubspot", e.to_string()));
                }
            }
        }
        if !existing.is_empty() {
            let mut updates = Vec::new();
            let unlinked: Vec<Work> = existing.into_iter().map(|(w, _)| w).collect();
            let leftover = self.link_existing(unlinked, &mut updates).await;
            self.update(updates).await;
            for w in leftover {
                self.retry(
                    w.item,
                    ItemError::new(
                        "hubspot",
                        "HubSpot said the contact exists but it could not be read",
                    ),
                );
            }
        }
    }
}

/// A failed rule as a queue item error (field, rule, message).
pub fn validation_error(issue: &Issue) -> ItemError {
    ItemError {
        field: Some(issue.field.clone()),
        rule: Some(issue.rule.clone()),
        ..ItemError::new("validation", issue.message.clone())
    }
}
