//! Paused directions (`sync_pauses`): an operator's pause of one object's direction, which every
//! worker of every instance honours at its next claim; pollers keep queueing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Direction, Queue, Result};

/// One paused direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub object: String,
    pub direction: String,
    pub paused_at: DateTime<Utc>,
    pub paused_by: String,
}

impl Queue {
    /// Pauses `object`'s `direction`; false when it already was (its start is kept).
    pub async fn pause(&self, object: &str, direction: Direction, by: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO sync_pauses (object, direction, paused_by) VALUES ($1, $2, $3) \
             ON CONFLICT (object, direction) DO NOTHING",
        )
        .bind(object)
        .bind(direction.as_str())
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Resumes `object`'s `direction`; false when it was not paused.
    pub async fn resume(&self, object: &str, direction: Direction) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sync_pauses WHERE object = $1 AND direction = $2")
            .bind(object)
            .bind(direction.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every paused direction, oldest pause first.
    pub async fn pauses(&self) -> Result<Vec<Pause>> {
        let rows = sqlx::query(
            "SELECT object, direction, paused_at, paused_by FROM sync_pauses \
             ORDER BY paused_at, object, direction",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Pause {
                    object: r.try_get("object")?,
                    direction: r.try_get("direction")?,
                    paused_at: r.try_get("paused_at")?,
                    paused_by: r.try_get("paused_by")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
