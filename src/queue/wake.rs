//! Wake-ups for idle workers: one LISTEN connection per process (shared by every worker) as a
//! hint, with a polling fallback so a lost notification or a dropped listener connection only
//! delays work by `poll_interval`.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::WAKE_CHANNEL;

/// A worker's handle on the shared listener. Clone it for each worker.
#[derive(Clone)]
pub struct Waker {
    wakeups: watch::Receiver<u64>,
    poll_interval: Duration,
}

impl Waker {
    /// Starts the process's listener (listening before this returns, so a NOTIFY sent right
    /// after cannot be missed). It ends, returning its connection to the pool, when every
    /// `Waker` is dropped.
    pub async fn new(pool: PgPool, poll_interval: Duration) -> Self {
        let (tx, wakeups) = watch::channel(0u64);
        let first = listen(&pool).await;
        tokio::spawn(async move {
            let mut listener = first;
            loop {
                match listener.as_mut() {
                    Some(l) => {
                        let received = tokio::select! {
                            r = l.try_recv() => r,
                            // Every Waker is gone: give the connection back to the pool.
                            _ = tx.closed() => return,
                        };
                        match received {
                            Ok(Some(_)) => {
                                tx.send_modify(|n| *n += 1);
                            }
                            // The connection dropped: poll until it can listen again.
                            Ok(None) | Err(_) => listener = None,
                        }
                    }
                    None => {
                        tokio::time::sleep(poll_interval).await;
                        if tx.is_closed() {
                            return;
                        }
                        listener = listen(&pool).await;
                    }
                }
            }
        });
        Self {
            wakeups,
            poll_interval,
        }
    }

    /// Returns when new work may be due: a notification since the last wait, or
    /// `poll_interval` elapsed.
    pub async fn wait(&mut self) {
        let _ = tokio::time::timeout(self.poll_interval, self.wakeups.changed()).await;
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(WAKE_CHANNEL).await.ok()?;
    Some(listener)
}
