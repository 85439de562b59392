//! Writes in flight (`sync_writes`): what hubsync is about to send to one side for a record,
//! stored before the call and removed when the item that made it settles. After a crash between
//! a write and its settling they are how hubsync still knows the write was its own: the other
//! side's poller sees the echo as no change (see [`super::diff::recognise`]), and a contact
//! created but not linked yet has the values it was created with as its base snapshot.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Row};

use super::diff::Values;
use crate::queue::Direction;

/// One write in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The queue item's `record_key` (SQL key to_hubspot, HubSpot id to_sql).
    pub record_key: String,
    pub item_id: i64,
    pub sql_key: Option<String>,
    pub hubspot_id: Option<String>,
    /// HubSpot property values the record has once the write lands.
    pub sent: Values,
    /// When the item first sent this write (kept across its retries; set by PostgreSQL).
    pub first_sent_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A contact created and not linked yet: the values it was created with, kept when an
    /// update to it follows (whose `sent` holds only its changes). Set by PostgreSQL.
    pub created_with: Option<Values>,
}

/// Stores the writes about to be made (one statement), replacing earlier ones of the same
/// records.
pub async fn record(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    writes: &[Write],
) -> Result<(), sqlx::Error> {
    if writes.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = writes.iter().map(|w| w.record_key.as_str()).collect();
    let items: Vec<i64> = writes.iter().map(|w| w.item_id).collect();
    let sql_keys: Vec<Option<&str>> = writes.iter().map(|w| w.sql_key.as_deref()).collect();
    let ids: Vec<Option<&str>> = writes.iter().map(|w| w.hubspot_id.as_deref()).collect();
    let sent: Vec<serde_json::Value> = writes
        .iter()
        .map(|w| serde_json::to_value(&w.sent).unwrap_or_else(|_| serde_json::json!({})))
        .collect();
    sqlx::query(
        r#"
INSERT INTO sync_writes AS w (object, direction, record_key, item_id, sql_key, hubspot_id, sent,
                              created_with)
SELECT $1, $2, u.record_key, u.item_id, u.sql_key, u.hubspot_id, u.sent,
       CASE WHEN $2 = 'to_hubspot' AND u.hubspot_id IS NULL THEN u.sent END
FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::jsonb[])
    AS u(record_key, item_id, sql_key, hubspot_id, sent)
ON CONFLICT (object, direction, record_key) DO UPDATE SET
    item_id = EXCLUDED.item_id,
    sql_key = coalesce(EXCLUDED.sql_key, w.sql_key),
    hubspot_id = coalesce(EXCLUDED.hubspot_id, w.hubspot_id),
    -- A create retried (or taken up again after a crash) never replaces the record of an
    -- earlier create that may have landed: those are the values the contact was created with.
    sent = CASE WHEN EXCLUDED.hubspot_id IS NULL
                     AND (w.hubspot_id IS NOT NULL OR w.item_id = EXCLUDED.item_id)
                THEN w.sent ELSE EXCLUDED.sent END,
    -- What a contact not linked yet was created with outlives the update that follows it
    -- (an update's `sent` is only its changes); a create starting afresh brings its own.
    created_with = CASE WHEN EXCLUDED.hubspot_id IS NOT NULL
                             OR w.hubspot_id IS NOT NULL OR w.item_id = EXCLUDED.item_id
                        THEN w.created_with ELSE EXCLUDED.created_with END,
    created_at = CASE WHEN w.item_id = EXCLUDED.item_id OR w.hubspot_id IS NOT NULL
                      THEN w.created_at ELSE now() END
"#,
    )
    .bind(object)
    .bind(direction.as_str())
    .bind(&keys)
    .bind(&items)
    .bind(&sql_keys)
    .bind(&ids)
    .bind(&sent)
    .execute(pool)
    .await?;
    Ok(())
}

/// Notes the HubSpot ids of contacts just created (record key, id), as soon as HubSpot names
/// them and before the items settle.
pub async fn set_hubspot_ids(
    pool: &PgPool,
    object: &str,
    created: &[(String, String)],
) -> Result<(), sqlx::Error> {
    if created.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = created.iter().map(|(k, _)| k.as_str()).collect();
    let ids: Vec<&str> = created.iter().map(|(_, id)| id.as_str()).collect();
    sqlx::query(
        "UPDATE sync_writes w SET hubspot_id = u.id \
         FROM unnest($2::text[], $3::text[]) AS u(record_key, id) \
         WHERE w.object = $1 AND w.direction = 'to_hubspot' AND w.record_key = u.record_key",
    )
    .bind(object)
    .bind(&keys)
    .bind(&ids)
    .execute(pool)
    .await?;
    Ok(())
}

impl Write {
    /// The values contact `current` was synced with, for a contact this create made (see
    /// [`Write::created`]): what it was created with, and of the update sent after it (a crash
    /// came between) the values `current` holds. Fields it holds differently were changed by
    /// someone else, or the update never landed.
    pub fn created_base(&self, current: &Values) -> Values {
        match &self.created_with {
            Some(created) => super::diff::recognise(created, &self.sent, current),
            None => self.sent.clone(),
        }
    }

    /// Whether HubSpot contact `record` is the one this create made: HubSpot named it so, or
    /// (its answer lost, or the crash came before its id was noted) it was created no earlier
    /// than this item first sent the create.
    pub fn created(&self, record: &crate::hubspot::types::Record) -> bool {
        match (&self.hubspot_id, self.first_sent_at) {
            (Some(id), _) => *id == record.id,
            (None, Some(sent)) => record
                .property("createdate")
                .and_then(super::diff::hubspot_time)
                .is_some_and(|created| created >= sent),
            (None, None) => false,
        }
    }
}

/// Which column a lookup goes by (fixed names, never input).
#[derive(Debug, Clone, Copy)]
pub enum By {
    SqlKey,
    HubspotId,
}

impl By {
    fn column(self) -> &'static str {
        match self {
            By::SqlKey => "sql_key",
            By::HubspotId => "hubspot_id",
        }
    }
}

/// The writes in flight in `direction` of the records whose SQL key or HubSpot id (`by`) is
/// one of `values`, by that value.
pub async fn load(
    pool: &PgPool,
    object: &str,
    direction: Direction,
    by: By,
    values: &[String],
) -> Result<HashMap<String, Write>, sqlx::Error> {
    if values.is_empty() {
        return Ok(HashMap::new());
    }
    let column = by.column();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT record_key, item_id, sql_key, hubspot_id, sent, created_at, created_with \
         FROM sync_writes \
         WHERE object = $1 AND direction = $2 AND {column} = ANY($3)"
    )))
    .bind(object)
    .bind(direction.as_str())
    .bind(values)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for row in rows {
        let sent: serde_json::Value = row.try_get("sent")?;
        let created_with: Option<serde_json::Value> = row.try_get("created_with")?;
        let write = Write {
            record_key: row.try_get("record_key")?,
            item_id: row.try_get("item_id")?,
            sql_key: row.try_get("sql_key")?,
            hubspot_id: row.try_get("hubspot_id")?,
            sent: serde_json::from_value(sent).unwrap_or_default(),
            first_sent_at: row.try_get("created_at")?,
            created_with: created_with.and_then(|v| serde_json::from_value(v).ok()),
        };
        let key: Option<String> = row.try_get(column)?;
        out.insert(key.unwrap_or_default(), write);
    }
    Ok(out)
}

/// Removes the writes of the records whose items (of `item_ids`) have just ended done,
/// rejected or dead, inside the caller's settling transaction: the record link now says what
/// both sides hold. A write of an item retried, or superseded by a newer change, stays on
/// record until the record's newest item ends.
pub async fn clear(conn: &mut PgConnection, item_ids: &[i64]) -> Result<u64, sqlx::Error> {
    if item_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "DELETE FROM sync_writes w USING sync_queue q \
         WHERE q.id = ANY($1) AND q.state IN ('done', 'rejected', 'dead') \
           AND w.object = q.object AND w.direction = q.direction AND w.record_key = q.record_key",
    )
    .bind(item_ids)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
