//! The supervisor: runs named tasks under one cancellation token, restarts a failed task with
//! backoff (logging its cause chain), and on shutdown waits for them within a grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::health::Health;

pub struct Supervisor {
    token: CancellationToken,
    tasks: JoinSet<()>,
    health: Arc<Health>,
    names: Vec<String>,
}

impl Supervisor {
    pub fn new(token: CancellationToken, health: Arc<Health>) -> Self {
        Self {
            token,
            tasks: JoinSet::new(),
            health,
            names: Vec::new(),
        }
    }

    /// Runs `task` until the token is cancelled; an error restarts it after a backoff
    /// (1 s doubling to 60 s, reset after a run that lasted a minute).
    pub fn spawn<F, Fut>(&mut self, name: &str, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        let health = self.health.clone();
        let name = name.to_string();
        self.names.push(name.clone());
        self.tasks.spawn(async move {
            let mut failures = 0u32;
            while !token.is_cancelled() {
                health.beat(&name);
                let started = tokio::time::Instant::now();
                match task(token.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        if started.elapsed() > Duration::from_secs(60) {
                            failures = 0;
                        }
                        failures += 1;
                        let delay = crate::support::retry::delay(
                            failures,
                            Duration::from_secs(1),
                            Duration::from_secs(60),
                        );
                        tracing::error!(
                            task = %name,
                            error = %format!("{e:#}"),
                            restart_in_ms = delay.as_millis() as u64,
                            "task failed; restarting"
                        );
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            health.forget(&name);
            tracing::debug!(task = %name, "task stopped");
        });
    }

    /// Cancels every task and waits up to `grace` for them; then cancels `abandon` (workers
    /// release their batches) and waits a little more before aborting what is left. True when
    /// all ended within the grace period.
    pub async fn shutdown(mut self, grace: Duration, abandon: &CancellationToken) -> bool {
        self.token.cancel();
        if tokio::time::timeout(grace, join_all(&mut self.tasks))
            .await
            .is_ok()
        {
            return true;
        }
        abandon.cancel();
        if tokio::time::timeout(Duration::from_secs(10), join_all(&mut self.tasks))
            .await
            .is_err()
        {
            self.tasks.abort_all();
            // Aborted tasks cannot say they ended; they must not count as stalled.
            for name in &self.names {
                self.health.forget(name);
            }
        }
        false
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Awaits `fut`, beating `name` in the health record meanwhile: a task busy with a long step
/// (a large first poll, a slow batch) is alive, not stalled.
pub async fn beating<F: Future>(fut: F, health: &Health, name: &str) -> F::Output {
    let period = Duration::from_secs(1);
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tokio::time::sleep(period) => health.beat(name),
        }
    }
}

/// Runs `step` every `every` until cancelled, beating the health record each round; a failed
/// step is logged and retried next round (the loop itself never dies of it).
pub async fn every<F, Fut>(
    name: &str,
    every: Duration,
    health: &Health,
    token: &CancellationToken,
    mut step: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        health.beat(name);
        // A round stuck on an unresponsive server must not hold up shutdown.
        let result = tokio::select! {
            r = beating(step(), health, name) => r,
            _ = token.cancelled() => return Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(task = name, error = %format!("{e:#}"), "round failed");
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}
