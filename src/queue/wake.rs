//! Wake-ups for idle workers: LISTEN on the queue channel as a hint, with a polling fallback so
//! a lost notification or a dropped listener connection only delays work by `poll_interval`.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::WAKE_CHANNEL;

pub struct Waker {
    pool: PgPool,
    listener: Option<PgListener>,
    poll_interval: Duration,
}

impl Waker {
    /// Starts listening; if that fails the waker just polls (and tries to listen again later).
    pub async fn new(pool: PgPool, poll_interval: Duration) -> Self {
        let listener = listen(&pool).await;
        Self {
            pool,
            listener,
            poll_interval,
        }
    }

    /// Returns when new work may be due: a notification, or `poll_interval` elapsed.
    pub async fn wait(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(self.poll_interval).await;
            self.listener = listen(&self.pool).await;
            return;
        };
        match tokio::time::timeout(self.poll_interval, listener.try_recv()).await {
            Ok(Ok(Some(_))) | Err(_) => {}
            // The connection dropped (Ok(None)) or failed: poll until it can listen again.
            Ok(Ok(None)) | Ok(Err(_)) => self.listener = None,
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(WAKE_CHANNEL).await.ok()?;
    Some(listener)
}
