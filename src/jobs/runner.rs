//! The job runner each instance has: claims the oldest job no live instance holds, runs it
//! under a lease renewed every second (with its progress), and settles it; a cancel stops it, a
//! stop gives it back to the queue, and a lost lease stops it without another write. Each kind
//! is one arm of [`Runner::execute`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::store::{self, Beat, Job, Snapshot};
use super::{JobKind, JobStatus};
use crate::queue::Queue;
use crate::sync::engine::{Engine, ObjectSync};

/// A held job is claimable by another instance this long after its last renewal.
pub const JOB_LEASE: Duration = Duration::from_secs(30);
/// A job taken over this often from an instance that stopped while running it fails instead of
/// being run again: it may be what stops them.
pub const MAX_RESUMES: i32 = 5;
/// How often a running job's lease is renewed and its progress stored.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Runs jobs for one instance.
pub struct Runner {
    pub queue: Queue,
    pub engine: Arc<Engine>,
    /// This runner's name in `sync_jobs.locked_by`: `[instance@]host:pid/jobs`.
    pub holder: String,
    /// This host's name, and whether a process of it still runs: jobs held by an ended
    /// process of this host are taken back at once.
    pub host: String,
    pub alive: fn(u32) -> bool,
    /// Idle runners look for jobs at least this often.
    pub poll: Duration,
    /// Woken when this process queues a job.
    pub wake: Arc<tokio::sync::Notify>,
    /// What a reconcile job may spend.
    pub reconcile: ReconcileBudget,
}

/// A reconcile job's share of the HubSpot limit.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileBudget {
    pub budget_share: f64,
    pub requests_per_10s: u32,
}

/// How a job's run ended.
enum Ended {
    Done(anyhow::Result<Option<String>>),
    Beat(Beat),
    Stopping,
    /// Resumed more than [`MAX_RESUMES`] times.
    TooManyResumes,
}

impl Runner {
    /// Claims and runs jobs until `stop` is cancelled; `beat` is called while alive.
    pub async fn run(&self, stop: &CancellationToken, beat: &(dyn Fn() + Sync)) {
        while !stop.is_cancelled() {
            beat();
            let claimed = tokio::select! {
                claimed = self.claim() => claimed,
                _ = stop.cancelled() => return,
            };
            match claimed {
                Ok(Some(job)) => {
                    let run = self.run_job(job, stop);
                    tokio::pin!(run);
                    loop {
                        tokio::select! {
                            _ = &mut run => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => beat(),
                        }
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot claim a job");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(self.poll.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
    }

    async fn claim(&self) -> anyhow::Result<Option<Job>> {
        let pool = self.queue.pool();
        let gone: Vec<String> = store::holders(pool)
            .await?
            .into_iter()
            .filter(|h| {
                crate::queue::process_of(h).is_some_and(|(_, host, pid)| {
                    host == self.host && pid != std::process::id() && !(self.alive)(pid)
                })
            })
            .collect();
        Ok(store::claim(pool, &self.holder, JOB_LEASE, &gone).await?)
    }

    /// Runs one claimed job to its end, a cancel, a lost lease or `stop`.
    async fn run_job(&self, job: Job, stop: &CancellationToken) {
        let snapshot = Mutex::new(Snapshot {
            done: job.progress.done,
            total: job.progress.total,
            counts: job.counts.clone(),
        });
        let resumed = job.claims > 1;
        tracing::info!(operation = "JOB", job_id = job.job_id, kind = %job.kind,
            object = %job.object, direction = %job.direction, dry_run = job.dry_run,
            status = if resumed { "resumed" } else { "started" }, claims = job.claims,
            "job running");
        let ended = if job.cancel_requested {
            Ended::Beat(Beat::CancelRequested)
        } else if job.resumes > MAX_RESUMES {
            Ended::TooManyResumes
        } else {
            tokio::select! {
                biased;
                _ = stop.cancelled() => Ended::Stopping,
                why = self.keep_lease(&job, &snapshot) => Ended::Beat(why),
                out = self.execute(&job, &snapshot) => Ended::Done(out),
            }
        };
        let progress = snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (status, error) = match ended {
            Ended::Done(Ok(note)) => (JobStatus::Completed, note),
            Ended::Done(Err(e)) => (
                JobStatus::Failed,
                // Stored and shown by the API: no secret and no personal data in it.
                Some(
                    crate::telemetry::mask::stored(&crate::config::scrub::mask_secret_shapes(
                        &format!("{e:#}"),
                    ))
                    .into_owned(),
                ),
            ),
            Ended::Beat(Beat::CancelRequested) => (JobStatus::Cancelled, None),
            Ended::TooManyResumes => (
                JobStatus::Failed,
                Some(format!(
                    "the instance running it stopped {MAX_RESUMES} times: not run again"
                )),
            ),
            Ended::Beat(_) => {
                tracing::warn!(
                    operation = "JOB",
                    job_id = job.job_id,
                    "job stopped: this instance no longer holds its lease (another may run it)"
                );
                return;
            }
            Ended::Stopping => {
                let released =
                    store::release(self.queue.pool(), job.job_id, &self.holder, &progress).await;
                tracing::info!(
                    operation = "JOB",
                    job_id = job.job_id,
                    status = "released",
                    released = matches!(released, Ok(true)),
                    "stopping: job given back to the queue; an instance resumes it"
                );
                return;
            }
        };
        let mut tries = 0;
        let settled = loop {
            tries += 1;
            let settled = store::settle(
                self.queue.pool(),
                job.job_id,
                &self.holder,
                status,
                &progress,
                error.as_deref(),
            )
            .await;
            match settled {
                Ok(held) => break Ok(held),
                Err(e) if tries >= 3 => break Err(e),
                Err(_) => tokio::time::sleep(BEAT_EVERY * tries).await,
            }
        };
        match settled {
            Ok(true) => tracing::info!(operation = "JOB", job_id = job.job_id,
                kind = %job.kind, object = %job.object, status = status.as_str(),
                done = progress.done, counts = %progress.counts,
                error = error.as_deref().unwrap_or(""), "job finished"),
            Ok(false) => tracing::warn!(
                operation = "JOB",
                job_id = job.job_id,
                "job finished, but another instance holds it now: its result is not stored"
            ),
            Err(e) => tracing::warn!(operation = "JOB", job_id = job.job_id,
                error = %crate::pg::describe(&e), "job finished; its result could not be stored"),
        }
    }

    /// Renews the lease every [`BEAT_EVERY`] with the progress so far; ends on a cancel or
    /// when the lease is lost (or could not be renewed for half of it: another instance may
    /// claim it soon, so this one stops first).
    async fn keep_lease(&self, job: &Job, snapshot: &Mutex<Snapshot>) -> Beat {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(BEAT_EVERY).await;
            let progress = snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let beat = store::beat(
                self.queue.pool(),
                job.job_id,
                &self.holder,
                JOB_LEASE,
                &progress,
            );
            match tokio::time::timeout(JOB_LEASE / 4, beat).await {
                Ok(Ok(Beat::Held)) => renewed = Instant::now(),
                Ok(Ok(other)) => return other,
                Ok(Err(_)) | Err(_) if renewed.elapsed() > JOB_LEASE / 2 => return Beat::Lost,
                Ok(Err(_)) | Err(_) => {}
            }
        }
    }

    /// Runs the job's work, keeping `snapshot` up to date; Ok with an optional note.
    async fn execute(
        &self,
        job: &Job,
        snapshot: &Mutex<Snapshot>,
    ) -> anyhow::Result<Option<String>> {
        let object = self
            .engine
            .objects
            .iter()
            .find(|o| o.name == job.object)
            .with_context(|| format!("object {} is not in the configuration", job.object))?;
        let set = |s: Snapshot| *snapshot.lock().unwrap_or_else(|p| p.into_inner()) = s;
        match job.kind {
            JobKind::Backfill if job.dry_run => self.dry_backfill(object, job, set).await,
            JobKind::Backfill => self.backfill(object, job, set).await,
            JobKind::Resync => self.resync(object, job, set).await,
            JobKind::Reconcile => self.reconcile(object, job, set).await,
        }
    }

    /// Queues every record again; a resumed job continues its backfill where it stopped.
    async fn backfill(
        &self,
        object: &ObjectSync,
        job: &Job,
        set: impl Fn(Snapshot),
    ) -> anyhow::Result<Option<String>> {
        let progress = |p: &crate::sync::backfill::Progress| Snapshot {
            done: p.rows_read as i64,
            total: p.total.map(|t| t.max(p.rows_read) as i64),
            counts: json!({"read": p.rows_read, "queued": p.enqueued}),
        };
        let restart = job.claims <= 1;
        let done = crate::sync::backfill::run(
            object,
            self.queue.pool(),
            job.direction,
            restart,
            self.queue.settings().max_attempts,
            |p| set(progress(p)),
        )
        .await?;
        set(progress(&done));
        Ok(None)
    }

    /// Plans a backfill without writing: counts by planned action.
    async fn dry_backfill(
        &self,
        object: &ObjectSync,
        job: &Job,
        set: impl Fn(Snapshot),
    ) -> anyhow::Result<Option<String>> {
        let mut report = crate::sync::plan::Report::default();
        crate::sync::dry_run::plan_object(
            object,
            &self.queue,
            job.direction,
            crate::sync::dry_run::Scope::Everything,
            &mut report,
            &mut std::io::sink(),
        )
        .await?;
        let counts = report.counts();
        let done: u64 = counts.values().sum();
        set(Snapshot {
            done: done as i64,
            total: Some(done as i64),
            counts: json!(counts),
        });
        Ok(Some("dry run: nothing was written".into()))
    }

    /// Reconciles the object (a resumed job resumes its run).
    async fn reconcile(
        &self,
        object: &ObjectSync,
        job: &Job,
        set: impl Fn(Snapshot),
    ) -> anyhow::Result<Option<String>> {
        let reconciler = crate::sync::reconcile::Reconciler {
            object,
            pool: self.queue.pool(),
            holder: self.holder.clone(),
            ended: &crate::cli::reconcile::ended_here,
            dry_run: job.dry_run,
            job_id: Some(job.job_id),
            max_attempts: self.queue.settings().max_attempts,
            budget_share: self.reconcile.budget_share,
            requests_per_10s: self.reconcile.requests_per_10s,
        };
        let summary = reconciler
            .run(|p| {
                set(Snapshot {
                    done: p.done as i64,
                    total: p.total.map(|t| t.max(p.done) as i64),
                    counts: json!({"phase": p.phase, "found": p.found, "requests": p.requests}),
                })
            })
            .await?;
        let done = summary.counts.get("sql_rows").copied().unwrap_or(0)
            + summary.counts.get("hubspot_records").copied().unwrap_or(0);
        let mut counts = serde_json::Map::new();
        counts.insert("run_id".into(), json!(summary.run_id));
        counts.insert("drift".into(), json!(summary.drift()));
        counts.insert("requests".into(), json!(summary.requests));
        for (k, v) in &summary.counts {
            counts.insert(k.clone(), json!(v));
        }
        set(Snapshot {
            done,
            total: Some(done),
            counts: serde_json::Value::Object(counts),
        });
        Ok(job
            .dry_run
            .then(|| "dry run: nothing was queued or changed".into()))
    }

    /// Queues the named members' current rows for HubSpot.
    async fn resync(
        &self,
        object: &ObjectSync,
        job: &Job,
        set: impl Fn(Snapshot),
    ) -> anyhow::Result<Option<String>> {
        let done = crate::sync::resync::queue_members(
            object,
            self.queue.pool(),
            &job.members,
            self.queue.settings().max_attempts,
        )
        .await?;
        let n = job.members.len() as i64;
        set(Snapshot {
            done: n,
            total: Some(n),
            counts: json!({"queued": done.queued, "missing": done.missing.len()}),
        });
        Ok((!done.missing.is_empty())
            .then(|| format!("no SQL Server row for: {}", done.missing.join(", "))))
    }
}
