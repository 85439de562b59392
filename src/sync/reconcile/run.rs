//! One reconciliation run over an object: SQL Server's rows page by page against their links,
//! then the links whose row is gone, then HubSpot's list page by page beside the links in id
//! order. Each page's findings, fixes (queue items, unless a dry run) and the run's position
//! are stored in one transaction, so a run resumes where it stopped. HubSpot requests are paced
//! to a share of the rate limit, so live changes keep flowing.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use governor::{Quota, RateLimiter};
use serde_json::json;
use sqlx::PgPool;

use super::store::{self, Claim, Phase, Queued, Run};
use super::{Finding, Kind};
use crate::hubspot::modified_property;
use crate::hubspot::types::Record;
use crate::mssql::{ChangeCursor, ChangeKind};
use crate::queue::{Direction, NewItem, Operation, Seen, enqueue_with};
use crate::sync::diff;
use crate::sync::engine::ObjectSync;
use crate::sync::links::{self, Link};
use crate::sync::poller::source_version;

/// A run not renewed this long may be taken over.
pub const RUN_LEASE: Duration = Duration::from_secs(60);
/// Links checked against SQL Server per query in the links phase.
const LINKS_PAGE: i64 = 500;
/// Records read by id per HubSpot request.
const READ_BATCH: usize = 100;

/// Where a run is, for a progress bar or a job's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    /// Records compared in this phase, and how many there are (when known).
    pub done: u64,
    pub total: Option<u64>,
    /// Findings of drift so far.
    pub found: u64,
    pub requests: i64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_id: i64,
    pub object: String,
    pub dry_run: bool,
    pub resumed: bool,
    /// Findings by kind, rows and records read, items queued.
    pub counts: std::collections::BTreeMap<String, i64>,
    pub requests: i64,
    pub elapsed: Duration,
}

impl Summary {
    /// Drift found, over every kind.
    pub fn drift(&self) -> i64 {
        Kind::DRIFT
            .iter()
            .map(|k| self.counts.get(k.as_str()).copied().unwrap_or(0))
            .sum()
    }
}

/// Runs reconciliations of one object.
pub struct Reconciler<'a> {
    pub object: &'a ObjectSync,
    pub pool: &'a PgPool,
    /// `[instance@]host:pid/…`: who holds the run.
    pub holder: String,
    /// Whether a holder is a process that ended on this host.
    pub ended: &'a (dyn Fn(&str) -> bool + Sync),
    pub dry_run: bool,
    pub job_id: Option<i64>,
    pub max_attempts: i32,
    /// Share of HubSpot's 10-second limit the run may spend (0 < share ≤ 1).
    pub budget_share: f64,
    pub requests_per_10s: u32,
}

type Pacer = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// Evenly spaced requests at `share` of `per_10s` (at least one per 10 s).
fn pacer(share: f64, per_10s: u32) -> Pacer {
    let allowed = ((f64::from(per_10s) * share).floor() as u32).max(1);
    let period = Duration::from_secs(10) / allowed;
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

/// Fixes and findings of one page, stored in one transaction.
#[derive(Default)]
struct Page {
    findings: Vec<Finding>,
    to_hubspot: Vec<NewItem>,
    to_sql: Vec<NewItem>,
    /// Unlinked HubSpot records to pair with an unlinked member (hash), else their finding.
    unpaired: Vec<(Vec<u8>, Finding, Option<NewItem>)>,
    /// Linked records that existed before the run: a member this run found unlinked and whose
    /// fix has linked it to one of them since was matchable.
    linked: Vec<(String, String)>,
    /// Noted findings this page settles (they are replaced by its findings).
    settled: Vec<i64>,
}

impl Reconciler<'_> {
    fn name(&self) -> &str {
        &self.object.name
    }

    /// The pollers' positions now: changes after them are theirs to queue, not drift.
    async fn highs(&self) -> anyhow::Result<(Option<i64>, Option<i64>)> {
        let sql = crate::sync::poller::load_cursor(self.pool, self.name(), Direction::ToHubspot)
            .await?
            .and_then(|v| ChangeCursor::from_json(&v).ok())
            .and_then(|c| self.object.poller.reader.cursor_version(&c));
        let hubspot = crate::sync::poller::load_cursor(self.pool, self.name(), Direction::ToSql)
            .await?
            .map(|v| crate::sync::to_sql::HubspotPoller::high_water(Some(&v)))
            .filter(|&h| h > 0);
        Ok((sql, hubspot))
    }

    /// Runs (or resumes) the object's reconciliation to its end; `each` sees the progress.
    pub async fn run(&self, mut each: impl FnMut(&Progress)) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let (sql_high, hubspot_high) = self.highs().await?;
        let mut run = store::start(
            self.pool,
            &Claim {
                object: self.name(),
                dry_run: self.dry_run,
                job_id: self.job_id,
                holder: &self.holder,
                lease: RUN_LEASE,
                ended: self.ended,
                sql_high,
                hubspot_high,
            },
        )
        .await?;
        tracing::info!(operation = "RECONCILE", object = %self.name(), run_id = run.run_id,
            dry_run = self.dry_run, resumed = run.resumed, phase = run.phase.as_str(),
            "reconcile started");
        let outcome = self.phases(&mut run, &mut each).await;
        match outcome {
            Ok(()) => {
                store::finish(self.pool, &mut run, &self.holder, "completed", None).await?;
                let summary = Summary {
                    run_id: run.run_id,
                    object: run.object.clone(),
                    dry_run: run.dry_run,
                    resumed: run.resumed,
                    counts: run.counts.clone(),
                    requests: run.requests,
                    elapsed: started.elapsed(),
                };
                let by_kind: Vec<String> = Kind::DRIFT
                    .iter()
                    .map(|k| format!("{k}={}", summary.counts.get(k.as_str()).unwrap_or(&0)))
                    .collect();
                tracing::info!(operation = "RECONCILE", object = %self.name(),
                    run_id = run.run_id, dry_run = self.dry_run, drift = summary.drift(),
                    by_kind = %by_kind.join(" "), requests = run.requests,
                    "reconcile finished");
                Ok(summary)
            }
            Err(e) => {
                // A lost lease means another process runs it now: leave it alone.
                let lost = e
                    .downcast_ref::<store::StoreError>()
                    .is_some_and(|s| matches!(s, store::StoreError::LostLease(_)));
                if !lost {
                    let text = crate::telemetry::mask::stored(
                        &crate::config::scrub::mask_secret_shapes(&format!("{e:#}")),
                    )
                    .into_owned();
                    // Left running, its lease runs out and the next run resumes it; a failure
                    // of the database itself cannot be stored anyway.
                    tracing::warn!(operation = "RECONCILE", object = %self.name(),
                        run_id = run.run_id, error = %text,
                        "reconcile stopped; the next run resumes it");
                }
                Err(e)
            }
        }
    }

    async fn phases(&self, run: &mut Run, each: &mut impl FnMut(&Progress)) -> anyhow::Result<()> {
        let pace = Arc::new(pacer(self.budget_share, self.requests_per_10s));
        if run.phase == Phase::Sql {
            self.sql_phase(run, each).await?;
        }
        if run.phase == Phase::Links {
            self.links_phase(run, each).await?;
        }
        if run.phase == Phase::Hubspot {
            self.hubspot_phase(run, &pace, each).await?;
        }
        Ok(())
    }

    fn progress(run: &Run, phase: &'static str, done: u64, total: Option<u64>) -> Progress {
        let found = Kind::DRIFT
            .iter()
            .chain([Kind::Unlinked, Kind::MissingRecord].iter())
            .map(|k| run.counts.get(k.as_str()).copied().unwrap_or(0))
            .sum::<i64>()
            .max(0) as u64;
        Progress {
            phase,
            done,
            total,
            found,
            requests: run.requests,
        }
    }

    /// Stores one page: its fixes (unless a dry run), findings and the run's position.
    async fn store_page(&self, run: &mut Run, mut page: Page) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        store::delete_findings(&mut tx, &page.settled).await?;
        let paired = store::pair_linked(&mut tx, run.run_id, &page.linked).await?;
        run.add(Kind::Unlinked.as_str(), -(paired as i64));
        run.add(Kind::UnlinkedMatchable.as_str(), paired as i64);
        for (hash, finding, item) in std::mem::take(&mut page.unpaired) {
            let id = finding.hubspot_id.clone().unwrap_or_default();
            match store::pair(&mut tx, run.run_id, &hash, &id).await? {
                Some(_) => {
                    run.add(Kind::Unlinked.as_str(), -1);
                    run.add(Kind::UnlinkedMatchable.as_str(), 1);
                }
                None => {
                    run.add(finding.kind.as_str(), 1);
                    page.to_sql.extend(item);
                    page.findings.push(finding);
                }
            }
        }
        if !self.dry_run {
            for f in &page.findings {
                if let (false, Some(key)) = (f.rebase.is_empty(), f.sql_key.as_deref()) {
                    links::merge_synced_on(&mut tx, self.name(), key, &f.rebase).await?;
                }
            }
            let queued_h = enqueue_with(
                &mut tx,
                self.name(),
                Direction::ToHubspot,
                &page.to_hubspot,
                self.max_attempts,
                Seen::Requeue,
            )
            .await?;
            let queued_s = enqueue_with(
                &mut tx,
                self.name(),
                Direction::ToSql,
                &page.to_sql,
                self.max_attempts,
                Seen::Requeue,
            )
            .await?;
            run.add("queued_to_hubspot", queued_h as i64);
            run.add("queued_to_sql", queued_s as i64);
        }
        store::insert_findings(&mut tx, run, &page.findings).await?;
        store::advance(&mut tx, run, &self.holder, RUN_LEASE).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What the queue holds for the keys of one direction.
    async fn queued(
        &self,
        direction: Direction,
        keys: &[String],
    ) -> anyhow::Result<HashMap<String, Queued>> {
        Ok(store::queued(self.pool, self.name(), direction, keys).await?)
    }

    /// A member's current row as an item for HubSpot, at the row's own version.
    fn row_item(&self, key: &str, row: &crate::mssql::SqlRow) -> NewItem {
        crate::sync::resync::row_item(&self.object.poller.reader, key, row)
    }

    /// SQL Server's rows (every one, in change order) against their links.
    async fn sql_phase(
        &self,
        run: &mut Run,
        each: &mut impl FnMut(&Progress),
    ) -> anyhow::Result<()> {
        let reader = &self.object.poller.reader;
        let mapper = &self.object.to_hubspot.mapper;
        let total = reader.count().await.ok();
        let cursor = run
            .position
            .as_ref()
            .and_then(|p| ChangeCursor::from_json(p).ok());
        let mut poll = reader.poll(cursor);
        let mut done = run.counts.get("sql_rows").copied().unwrap_or(0) as u64;
        while let Some(changes) = poll.next_page().await? {
            let keys: Vec<String> = changes.changes.iter().map(|c| c.key.clone()).collect();
            let links = links::by_sql_keys(self.pool, self.name(), &keys).await?;
            let erased = crate::sync::history::erased(self.pool, self.name(), &keys).await?;
            let ids: Vec<String> = links
                .values()
                .filter_map(|l| l.hubspot_id.clone())
                .collect();
            let (to_h, to_s) = (
                self.queued(Direction::ToHubspot, &keys).await?,
                self.queued(Direction::ToSql, &ids).await?,
            );
            let mut page = Page::default();
            for change in &changes.changes {
                // A row deleted softly is the poller's: it queues the archive as it reads it.
                if change.kind == ChangeKind::Archive {
                    continue;
                }
                let Some(version) = source_version(change) else {
                    continue;
                };
                let link = links.get(&change.key);
                let waiting = run.sql_high.is_none_or(|high| version > high)
                    || link
                        .and_then(|l| l.sql_version)
                        .is_some_and(|v| v > version);
                let in_queue = to_h
                    .get(&change.key)
                    .is_some_and(|q| q.open || q.refused.is_some_and(|r| r >= version))
                    || link
                        .and_then(|l| l.hubspot_id.as_ref())
                        .and_then(|id| to_s.get(id))
                        .is_some_and(|q| q.open);
                if waiting || in_queue || erased.contains(&change.key) {
                    run.add("skipped_in_flight", 1);
                    continue;
                }
                let mapped = mapper.to_hubspot(&change.row);
                if !mapped.is_valid() {
                    // Its rejection (with the reasons) is the queue's to keep.
                    run.add("skipped_invalid", 1);
                    continue;
                }
                let finding = super::classify_sql(
                    run.run_id,
                    &change.key,
                    &mapped,
                    link,
                    mapper.match_property(),
                );
                if let Some(finding) = finding {
                    run.add(finding.kind.as_str(), 1);
                    page.to_hubspot
                        .push(self.row_item(&change.key, &change.row));
                    page.findings.push(finding);
                }
            }
            done += changes.changes.len() as u64;
            run.add("sql_rows", changes.changes.len() as i64);
            run.position = Some(changes.cursor.to_json());
            self.store_page(run, page).await?;
            each(&Self::progress(run, "sql", done, total));
        }
        self.begin_phase(run, Phase::Links).await
    }

    /// Links (in key order) whose SQL Server row is gone.
    async fn links_phase(
        &self,
        run: &mut Run,
        each: &mut impl FnMut(&Progress),
    ) -> anyhow::Result<()> {
        let reader = &self.object.poller.reader;
        let mut after: Option<String> = run
            .position
            .as_ref()
            .and_then(|p| p["after_key"].as_str().map(str::to_string));
        let mut done = run.counts.get("links").copied().unwrap_or(0) as u64;
        loop {
            let page_links =
                links::page(self.pool, self.name(), after.as_deref(), LINKS_PAGE).await?;
            let Some(last) = page_links.last().map(|l| l.sql_key.clone()) else {
                break;
            };
            let keys: Vec<String> = page_links.iter().map(|l| l.sql_key.clone()).collect();
            let rows = reader.rows_by_keys(&keys).await?;
            let gone: Vec<&Link> = page_links
                .iter()
                .filter(|l| !rows.contains_key(&l.sql_key))
                .collect();
            let gone_keys: Vec<String> = gone.iter().map(|l| l.sql_key.clone()).collect();
            let to_h = self.queued(Direction::ToHubspot, &gone_keys).await?;
            let mut page = Page::default();
            for link in gone {
                if to_h
                    .get(&link.sql_key)
                    .is_some_and(|q| q.open || q.archived)
                {
                    continue;
                }
                if let Some(finding) = super::classify_missing_row(link) {
                    run.add(finding.kind.as_str(), 1);
                    page.to_hubspot.push(NewItem {
                        record_key: link.sql_key.clone(),
                        operation: Operation::Archive,
                        payload: json!({}),
                        source_version: link.sql_version.unwrap_or(0),
                    });
                    page.findings.push(finding);
                }
            }
            done += page_links.len() as u64;
            run.add("links", page_links.len() as i64);
            run.position = Some(json!({ "after_key": last }));
            after = Some(last);
            self.store_page(run, page).await?;
            each(&Self::progress(run, "links", done, None));
        }
        self.begin_phase(run, Phase::Hubspot).await
    }

    /// Moves the run on to `phase`, from its start.
    async fn begin_phase(&self, run: &mut Run, phase: Phase) -> anyhow::Result<()> {
        run.phase = phase;
        run.position = None;
        self.store_page(run, Page::default()).await
    }

    /// HubSpot's list (in id order) beside the links in the same id range.
    async fn hubspot_phase(
        &self,
        run: &mut Run,
        pace: &Pacer,
        each: &mut impl FnMut(&Progress),
    ) -> anyhow::Result<()> {
        let client = &self.object.to_hubspot.client;
        let hubspot_object = &self.object.to_hubspot.hubspot_object;
        let mapper = &self.object.to_hubspot.mapper;
        let fields: Vec<crate::mapping::FieldInfo> = mapper.fields().cloned().collect();
        let mut properties = self.object.hubspot_poller.read_properties();
        if !properties.iter().any(|p| p == mapper.match_property()) {
            properties.push(mapper.match_property().to_string());
        }
        let props: Vec<&str> = properties.iter().map(String::as_str).collect();
        let modified = modified_property(hubspot_object);
        let inserts = self.object.to_sql.reader.object().on_new_hubspot_record
            == crate::mssql::NewRecordPolicy::Insert;
        let archive_policy = self.object.to_sql.on_archive.does_something();
        let total = links::count(self.pool, self.name()).await.ok();
        let (mut after, mut last_id) = match &run.position {
            Some(p) => (
                p["after"].as_str().map(str::to_string),
                p["last_id"].as_u64().unwrap_or(0),
            ),
            None => (None, 0),
        };
        let mut done = run.counts.get("hubspot_records").copied().unwrap_or(0) as u64;
        loop {
            pace.until_ready().await;
            let (records, next) = client
                .list_page(hubspot_object, &props, after.as_deref(), false)
                .await
                .with_context(|| format!("reconcile of {}: HubSpot list", self.name()))?;
            run.requests += 1;
            let page_last = records
                .iter()
                .filter_map(|r| r.id.parse::<u64>().ok())
                .max()
                .unwrap_or(last_id);
            // The last page's range is open: links above every listed id are gone too.
            let upto = next.as_ref().map(|_| page_last);
            let range =
                links::in_id_range(self.pool, self.name(), last_id, upto, run.started_at).await?;
            let mut page = self
                .compare_records(run, &records, &range, &fields, modified, inserts)
                .await?;
            let listed: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let missing: Vec<&Link> = range
                .iter()
                .filter(|l| {
                    l.hubspot_id
                        .as_deref()
                        .is_some_and(|id| !listed.contains(id))
                })
                .collect();
            // Noted now, asked of HubSpot a hundred at a time (one read per 100, not per page).
            for link in &missing {
                page.findings.push(Finding::new(
                    Kind::MissingRecord,
                    Some(&link.sql_key),
                    link.hubspot_id.as_deref(),
                ));
            }
            run.add(Kind::MissingRecord.as_str(), missing.len() as i64);
            done += records.len() as u64;
            run.add("hubspot_records", records.len() as i64);
            last_id = page_last;
            run.position = Some(json!({ "after": next, "last_id": last_id }));
            self.store_page(run, page).await?;
            let end = !matches!(&next, Some(n) if Some(n) != after.as_ref());
            self.settle_missing(run, pace, archive_policy, end).await?;
            each(&Self::progress(run, "hubspot", done, total));
            match next {
                Some(n) if !end => after = Some(n),
                _ => break,
            }
        }
        Ok(())
    }

    /// Classifies the noted links whose record the list did not show, a hundred at a time
    /// (all that are left when `all`), each batch in one transaction with its findings.
    async fn settle_missing(
        &self,
        run: &mut Run,
        pace: &Pacer,
        archive_policy: bool,
        all: bool,
    ) -> anyhow::Result<()> {
        loop {
            let noted = run
                .counts
                .get(Kind::MissingRecord.as_str())
                .copied()
                .unwrap_or(0);
            if noted == 0 || (!all && noted < READ_BATCH as i64) {
                return Ok(());
            }
            let batch = store::noted_missing(self.pool, run.run_id, READ_BATCH as i64).await?;
            if batch.is_empty() {
                run.counts.remove(Kind::MissingRecord.as_str());
                return Ok(());
            }
            let ids: Vec<String> = batch.iter().map(|(_, id)| id.clone()).collect();
            let links = links::by_hubspot_ids(self.pool, self.name(), &ids).await?;
            let still: Vec<&Link> = ids.iter().filter_map(|id| links.get(id)).collect();
            let mut page = Page::default();
            if !still.is_empty() {
                self.missing_records(run, pace, &still, archive_policy, &mut page)
                    .await?;
            }
            page.settled = batch.iter().map(|(finding, _)| *finding).collect();
            run.add(Kind::MissingRecord.as_str(), -(batch.len() as i64));
            self.store_page(run, page).await?;
        }
    }

    /// Linked records against their snapshot; unlinked ones to pair or report.
    async fn compare_records(
        &self,
        run: &mut Run,
        records: &[Record],
        range: &[Link],
        fields: &[crate::mapping::FieldInfo],
        modified: &str,
        inserts: bool,
    ) -> anyhow::Result<Page> {
        let mut by_id: HashMap<String, Link> = range
            .iter()
            .filter_map(|l| Some((l.hubspot_id.clone()?, l.clone())))
            .collect();
        // A listed record linked outside the range (ids out of order) is still compared.
        let outside: Vec<String> = records
            .iter()
            .filter(|r| !by_id.contains_key(&r.id))
            .map(|r| r.id.clone())
            .collect();
        by_id.extend(links::by_hubspot_ids(self.pool, self.name(), &outside).await?);
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let keys: Vec<String> = by_id.values().map(|l| l.sql_key.clone()).collect();
        let to_s = self.queued(Direction::ToSql, &ids).await?;
        let to_h = self.queued(Direction::ToHubspot, &keys).await?;
        // Ids merged into unlinked records: the link on such an id is the merge's to follow.
        let merged: Vec<String> = records
            .iter()
            .filter(|r| !by_id.contains_key(&r.id))
            .flat_map(|r| crate::sync::merges::record_ids(r).into_iter().skip(1))
            .collect();
        let merged_linked = links::by_hubspot_ids(self.pool, self.name(), &merged).await?;
        let mut page = Page::default();
        let mut rows_wanted = Vec::new();
        for record in records {
            let created = record.created_at.as_deref().and_then(diff::hubspot_time);
            if let Some(link) = by_id.get(&record.id)
                && created.is_some_and(|c| c < run.started_at)
            {
                page.linked.push((link.sql_key.clone(), record.id.clone()));
            }
            let changed_at = record
                .property(modified)
                .and_then(diff::hubspot_time)
                .map(|t| t.timestamp_millis());
            // Changed after the poller's position: the poller's to queue. (A record without a
            // modification date is compared.)
            if run
                .hubspot_high
                .is_none_or(|high| changed_at.is_some_and(|c| c > high))
            {
                run.add("skipped_in_flight", 1);
                continue;
            }
            if to_s.get(&record.id).is_some_and(|q| q.open) {
                run.add("skipped_in_flight", 1);
                continue;
            }
            let item = || {
                self.object
                    .hubspot_poller
                    .queue_items(std::slice::from_ref(record))
                    .into_iter()
                    .next()
            };
            match by_id.get(&record.id) {
                Some(link) => {
                    if to_h.get(&link.sql_key).is_some_and(|q| q.open)
                        || link
                            .hubspot_version
                            .zip(changed_at)
                            .is_some_and(|(s, c)| s > c)
                    {
                        run.add("skipped_in_flight", 1);
                        continue;
                    }
                    let Some(finding) = super::classify_hubspot(fields, record, link) else {
                        continue;
                    };
                    run.add(finding.kind.as_str(), 1);
                    if finding.fix.to_sql {
                        page.to_sql.extend(item());
                    }
                    if finding.fix.to_hubspot {
                        rows_wanted.push(link.sql_key.clone());
                    }
                    page.findings.push(finding);
                }
                None => {
                    let ids = crate::sync::merges::record_ids(record);
                    if ids.iter().skip(1).any(|id| merged_linked.contains_key(id)) {
                        continue;
                    }
                    let finding = super::classify_unlinked_record(record, inserts);
                    let fix = finding.fix.to_sql.then(item).flatten();
                    let hash = record
                        .property(self.object.to_hubspot.mapper.match_property())
                        .and_then(|v| super::match_hash(run.run_id, v));
                    match hash {
                        Some(hash) => page.unpaired.push((hash, finding, fix)),
                        None => {
                            run.add(finding.kind.as_str(), 1);
                            page.to_sql.extend(fix);
                            page.findings.push(finding);
                        }
                    }
                }
            }
        }
        self.queue_rows(&rows_wanted, &mut page).await?;
        Ok(page)
    }

    /// Queues the current rows of `keys` for HubSpot.
    async fn queue_rows(&self, keys: &[String], page: &mut Page) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = self.object.poller.reader.rows_by_keys(keys).await?;
        for key in keys {
            if let Some(row) = rows.get(key) {
                page.to_hubspot.push(self.row_item(key, row));
            }
        }
        Ok(())
    }

    /// Links in the page's id range whose record the list did not show: archived (asked of
    /// HubSpot), or merged away or erased.
    async fn missing_records(
        &self,
        run: &mut Run,
        pace: &Pacer,
        missing: &[&Link],
        archive_policy: bool,
        page: &mut Page,
    ) -> anyhow::Result<()> {
        let client = &self.object.to_hubspot.client;
        let hubspot_object = &self.object.to_hubspot.hubspot_object;
        let ids: Vec<String> = missing
            .iter()
            .filter_map(|l| l.hubspot_id.clone())
            .collect();
        let keys: Vec<String> = missing.iter().map(|l| l.sql_key.clone()).collect();
        let to_h = self.queued(Direction::ToHubspot, &keys).await?;
        let to_s = self.queued(Direction::ToSql, &ids).await?;
        let erased = crate::sync::history::erased(self.pool, self.name(), &keys).await?;
        let mut archived: HashMap<String, Record> = HashMap::new();
        for chunk in ids.chunks(READ_BATCH) {
            pace.until_ready().await;
            let found = client
                .batch_read_archived(hubspot_object, chunk)
                .await
                .with_context(|| format!("reconcile of {}: archived records", self.name()))?;
            run.requests += 1;
            archived.extend(found.into_iter().flatten().map(|r| (r.id.clone(), r)));
        }
        let reader = &self.object.poller.reader;
        let rows = reader.rows_by_keys(&keys).await?;
        for link in missing {
            let Some(id) = link.hubspot_id.as_deref() else {
                continue;
            };
            let (q_h, q_s) = (to_h.get(&link.sql_key), to_s.get(id));
            if q_h.is_some_and(|q| q.open) || q_s.is_some_and(|q| q.open) {
                continue;
            }
            if erased.contains(&link.sql_key) {
                continue;
            }
            let row = rows.get(&link.sql_key);
            let live_row = row.is_some_and(|r| !reader.is_deleted_row(r));
            let settled = q_s.is_some_and(|q| q.archived) || q_h.is_some_and(|q| q.archived);
            let record = archived.get(id);
            let Some(finding) = super::classify_missing_record(
                link,
                record.is_some(),
                live_row,
                settled,
                archive_policy,
            ) else {
                continue;
            };
            run.add(finding.kind.as_str(), 1);
            if finding.fix.archive_to_sql
                && let Some(record) = record
            {
                let at = record
                    .archived_at
                    .as_deref()
                    .and_then(diff::hubspot_time)
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0);
                page.to_sql.push(NewItem {
                    record_key: id.to_string(),
                    operation: Operation::Archive,
                    payload: serde_json::to_value(&record.properties).unwrap_or_default(),
                    source_version: at,
                });
            }
            if finding.fix.to_hubspot
                && let Some(row) = row
            {
                page.to_hubspot.push(self.row_item(&link.sql_key, row));
            }
            page.findings.push(finding);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_requests_at_the_share_of_the_limit() {
        let p = pacer(0.3, 100);
        assert!(p.check().is_ok());
        assert!(p.check().is_err(), "burst of one");
        let tiny = pacer(0.001, 100);
        assert!(tiny.check().is_ok());
    }
}
