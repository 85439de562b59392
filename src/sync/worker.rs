//! The worker loop: claim a batch of one object and direction, keep its lease alive while the
//! handler works (no transaction or lock is held meanwhile), then store record links,
//! conflicts and the members' history, erase members found erased in HubSpot, and settle every
//! item in one PostgreSQL transaction. On shutdown it stops claiming; a batch that cannot finish
//! within the grace period is released, not failed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::erasure::Erasure;
use super::forget::{self, Forgotten};
use super::history;
use super::links::{self, ConflictRecord, LinkUpdate};
use super::merges::Merge;
use super::writes;
use crate::queue::{ClaimedItem, Direction, ItemError, Outcome, Queue, Settled, Waker};

/// What a handler decided for one batch.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Outcome per item id; an item left out is retried ("no outcome").
    pub outcomes: Vec<(i64, Outcome)>,
    pub links: Vec<LinkUpdate>,
    /// SQL keys whose link ends (the SQL row was deleted because HubSpot archived the record).
    pub unlinks: Vec<String>,
    pub conflicts: Vec<ConflictRecord>,
    /// Links to re-point to a merged contact's survivor, each applied if its item is done.
    pub merges: Vec<Merge>,
    /// Members whose contact is gone for good in HubSpot: hubsync's copies of each are erased
    /// when its item is done.
    pub erasures: Vec<Erasure>,
    /// What the history records of an item beyond its outcome (properties, operation, key).
    pub notes: HashMap<i64, history::Note>,
    /// Items whose payload is not kept once settled (changes of an erased member).
    pub scrub: Vec<i64>,
}

/// Turns a claimed batch into outcomes (the to_hubspot and to_sql sync steps implement it).
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(&self, batch: &[ClaimedItem]) -> impl Future<Output = BatchResult> + Send;

    /// Whether the item will take a place in an outside call (a record about to be rejected by
    /// validation does not). Lets a worker top a batch up so that each call carries a full one.
    fn takes_a_place(&self, _item: &ClaimedItem) -> bool {
        true
    }
}

/// Extra claims a worker makes to fill a batch whose items partly need no outside call.
const TOP_UPS: usize = 4;

/// Tokens that stop a worker: first `stop_claiming`, then, after the grace period, `abandon`.
#[derive(Clone, Default)]
pub struct Stop {
    pub stop_claiming: CancellationToken,
    pub abandon: CancellationToken,
}

pub struct Worker<H> {
    pub queue: Queue,
    pub name: String,
    pub object: String,
    pub direction: Direction,
    pub handler: Arc<H>,
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Nothing was due.
    Idle,
    /// A batch was processed and settled.
    Settled(Settled),
    /// The batch was given back unprocessed (shutdown).
    Released(usize),
}

impl<H: BatchHandler> Worker<H> {
    /// Claims and processes one batch.
    pub async fn round(&self, abandon: &CancellationToken) -> anyhow::Result<Round> {
        let s = self.queue.settings();
        let mut batch = self
            .queue
            .claim(&self.object, self.direction, s.batch_size, &self.name)
            .await?;
        if batch.is_empty() {
            return Ok(Round::Idle);
        }
        // A full claim whose items partly need no call (invalid records) is topped up, so the
        // outside call carries a full batch: the rate limit counts calls, not records.
        let wanted = s.batch_size as usize;
        let mut places = batch
            .iter()
            .filter(|i| self.handler.takes_a_place(i))
            .count();
        let mut drained = batch.len() < wanted;
        for _ in 0..TOP_UPS {
            if drained || places >= wanted {
                break;
            }
            let ask = (wanted - places) as u32;
            let more = self
                .queue
                .claim(&self.object, self.direction, ask, &self.name)
                .await?;
            drained = more.len() < ask as usize;
            places += more
                .iter()
                .filter(|i| self.handler.takes_a_place(i))
                .count();
            batch.extend(more);
        }
        let started = std::time::Instant::now();
        let ids: Vec<i64> = batch.iter().map(|i| i.id).collect();
        let beat_every = (s.lease / 3).max(Duration::from_millis(100));
        let heartbeat = async {
            loop {
                tokio::time::sleep(beat_every).await;
                if let Err(e) = self.queue.heartbeat(&self.name, &ids).await {
                    tracing::warn!(worker = %self.name, error = %e, "lease renewal failed");
                }
            }
        };
        let result = tokio::select! {
            r = self.handler.handle(&batch) => r,
            _ = heartbeat => unreachable!("the heartbeat loop never ends"),
            _ = abandon.cancelled() => {
                let n = self.queue.release(&self.name, &ids).await?;
                tracing::warn!(worker = %self.name, released = n, batch_id = %batch[0].batch_id,
                    "shutdown grace ran out: batch released to the queue");
                return Ok(Round::Released(batch.len()));
            }
        };
        let settled = self.store(&batch, result).await?;
        tracing::info!(
            operation = "BATCH",
            object = %self.object,
            direction = %self.direction,
            batch_id = %batch[0].batch_id,
            worker = %self.name,
            items = batch.len(),
            done = settled.done,
            rejected = settled.rejected,
            retried = settled.retried,
            dead = settled.dead,
            execution_time_ms = started.elapsed().as_millis() as u64,
            "batch settled"
        );
        Ok(Round::Settled(settled))
    }

    async fn store(
        &self,
        batch: &[ClaimedItem],
        mut result: BatchResult,
    ) -> anyhow::Result<Settled> {
        let mut outcomes: HashMap<i64, Outcome> =
            std::mem::take(&mut result.outcomes).into_iter().collect();
        let pairs: Vec<(&ClaimedItem, Outcome)> = batch
            .iter()
            .map(|item| {
                let outcome = outcomes.remove(&item.id).unwrap_or_else(|| {
                    Outcome::Retry(ItemError::new(
                        "internal",
                        "the batch handler gave no outcome",
                    ))
                });
                (item, outcome)
            })
            .collect();
        let done = |id: i64| {
            pairs
                .iter()
                .any(|(item, o)| item.id == id && matches!(o, Outcome::Done { .. }))
        };
        let mut merges: Vec<&Merge> = result.merges.iter().filter(|m| done(m.item_id)).collect();
        let erasures: Vec<&Erasure> = result.erasures.iter().filter(|e| done(e.item_id)).collect();
        let mut tx = self.queue.pool().begin().await?;
        let repointed = links::repoint(&mut tx, &self.object, &merges).await?;
        merges.retain(|m| repointed.contains(&m.sql_key));
        links::upsert(&mut tx, &self.object, &result.links).await?;
        links::remove(&mut tx, &self.object, &result.unlinks).await?;
        links::record_conflicts(&mut tx, &self.object, &result.conflicts).await?;
        let mut settled = self.queue.settle_on(&mut tx, &self.name, &pairs).await?;
        // The writes of finished items are settled with them; an item retried keeps its write
        // on record (it may have landed), and one rescued meanwhile belongs to its new holder.
        let held: Vec<i64> = batch
            .iter()
            .map(|i| i.id)
            .filter(|id| !settled.lost.contains(id))
            .collect();
        writes::clear(&mut tx, &held).await?;
        forget::drop_payloads(&mut tx, &result.scrub).await?;
        let entries = self.history(&pairs, &held, &settled.died, &merges, &result);
        history::record(&mut tx, &self.object, &entries).await?;
        // An erased member's copies go last, its item's own history with them.
        let batch_id = &batch[0].batch_id;
        let mut erased: Vec<(&Erasure, Forgotten)> = Vec::new();
        for erasure in erasures.into_iter().filter(|e| held.contains(&e.item_id)) {
            let cause = forget::Cause {
                direction: Some(self.direction),
                item_id: Some(erasure.item_id),
                batch_id: Some(batch_id.clone()),
                message: erasure.message.clone(),
            };
            let gone = forget::forget_on(&mut tx, &self.object, &erasure.sql_key, &cause).await?;
            erased.push((erasure, gone));
        }
        tx.commit().await?;
        for merge in &merges {
            merge.log(&self.object, self.direction.as_str(), batch_id);
        }
        for (erasure, gone) in &erased {
            erasure.log(&self.object, self.direction.as_str(), batch_id, gone);
        }
        settled.merges = merges.len() as u64;
        settled.erasures = erased.len() as u64;
        if !settled.lost.is_empty() {
            tracing::warn!(worker = %self.name, lost = ?settled.lost,
                "items were rescued from this worker before it settled them");
        }
        Ok(settled)
    }

    /// The history of a settled batch: merges followed, conflicts and each item's outcome, for
    /// the items this worker still held.
    fn history(
        &self,
        pairs: &[(&ClaimedItem, Outcome)],
        held: &[i64],
        died: &[i64],
        merges: &[&Merge],
        result: &BatchResult,
    ) -> Vec<history::Entry> {
        let Some((first, _)) = pairs.first() else {
            return Vec::new();
        };
        let batch_id = first.batch_id.as_str();
        let settled = |id: Option<i64>| id.is_some_and(|id| held.contains(&id));
        let merged = merges
            .iter()
            .map(|m| history::of_merge(m, self.direction, batch_id));
        let conflicted = result
            .conflicts
            .iter()
            .filter(|c| settled(c.item_id))
            .map(|c| history::of_conflict(c, self.direction, batch_id));
        // An erased member's item leaves its ERASE row when its copies are erased.
        let erased = |id: i64| result.erasures.iter().any(|e| e.item_id == id);
        let outcomes = pairs
            .iter()
            .filter(|(item, _)| settled(Some(item.id)) && !erased(item.id))
            .filter_map(|(item, o)| {
                let died = died.contains(&item.id);
                history::of_outcome(item, o, result.notes.get(&item.id), died)
            });
        merged.chain(conflicted).chain(outcomes).collect()
    }

    /// Runs rounds until told to stop claiming; waits for work with `waker` when idle.
    pub async fn run(&self, stop: Stop, mut waker: Waker) -> anyhow::Result<()> {
        while !stop.stop_claiming.is_cancelled() {
            match self.round(&stop.abandon).await? {
                Round::Idle => tokio::select! {
                    _ = stop.stop_claiming.cancelled() => {}
                    _ = waker.wait() => {}
                },
                Round::Released(_) => return Ok(()),
                Round::Settled(_) => {}
            }
        }
        Ok(())
    }

    /// Processes batches until nothing is due (for `run --once` and tests).
    pub async fn drain(&self) -> anyhow::Result<Settled> {
        let never = CancellationToken::new();
        let mut total = Settled::default();
        while let Round::Settled(s) = self.round(&never).await? {
            total.done += s.done;
            total.retried += s.retried;
            total.rejected += s.rejected;
            total.dead += s.dead;
            total.superseded += s.superseded;
            total.merges += s.merges;
            total.erasures += s.erasures;
            total.lost.extend(s.lost);
        }
        Ok(total)
    }
}
