//! Erasing one member from hubsync's own tables (`hubsync forget`): every queue item of the
//! member in either direction (payloads and errors), its unsettled writes, its conflicts and its
//! record link with the snapshot of its values and its history, in one transaction, leaving one
//! ERASE history row with ids and counts only. `hubsync forget` and a contact found gone for
//! good in HubSpot (GDPR delete) both erase through here. The SQL Server row is the system of
//! record: what becomes of it is the caller's (`on_hubspot_erasure`).

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};

use super::history;

/// What was erased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The HubSpot id the member's link held, if any.
    pub hubspot_id: Option<String>,
    pub queue_items: u64,
    pub writes: u64,
    pub conflicts: u64,
    pub links: u64,
    /// History rows replaced by the one ERASE row.
    pub history: u64,
    /// The operations those rows recorded, counted by name.
    pub operations: BTreeMap<String, i64>,
}

/// The HubSpot id linked to member `sql_key` of `object`, if any.
pub async fn linked_id(pool: &PgPool, object: &str, sql_key: &str) -> sqlx::Result<Option<String>> {
    let id: Option<Option<String>> = sqlx::query_scalar(
        "SELECT hubspot_id FROM record_links WHERE object = $1 AND sql_key = $2",
    )
    .bind(object)
    .bind(sql_key)
    .fetch_optional(pool)
    .await?;
    Ok(id.flatten())
}

/// How an erasure came about, for its ERASE history row.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// The direction whose item found the contact gone; None for `hubsync forget`.
    pub direction: Option<crate::queue::Direction>,
    pub item_id: Option<i64>,
    pub batch_id: Option<String>,
    /// hubsync's own words (no personal data): why, and what became of the SQL Server row.
    pub message: String,
}

/// Erases member `sql_key` of `object` from every hubsync table, in one transaction, and
/// leaves one ERASE history row (ids and counts only).
pub async fn forget(
    pool: &PgPool,
    object: &str,
    sql_key: &str,
    cause: &Cause,
) -> sqlx::Result<Forgotten> {
    let mut tx = pool.begin().await?;
    let gone = forget_on(&mut tx, object, sql_key, cause).await?;
    tx.commit().await?;
    Ok(gone)
}

/// [`forget`] on the caller's transaction (a worker settling the item that found the member's
/// contact gone for good).
pub async fn forget_on(
    tx: &mut PgConnection,
    object: &str,
    sql_key: &str,
    cause: &Cause,
) -> sqlx::Result<Forgotten> {
    let hubspot_id: Option<String> = sqlx::query_scalar::<_, Option<String>>(
        "SELECT hubspot_id FROM record_links WHERE object = $1 AND sql_key = $2 FOR UPDATE",
    )
    .bind(object)
    .bind(sql_key)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    // Every id the member had (merged-away contacts too): HubSpot changes of each are its data.
    let ids = history::ids_of(tx, object, sql_key).await?;
    let operations: Vec<(String, i64)> = sqlx::query_as(
        "SELECT operation, count(*) FROM sync_history \
         WHERE object = $1 AND (sql_key = $2 OR hubspot_id = ANY($3) OR old_hubspot_id = ANY($3)) \
         GROUP BY operation",
    )
    .bind(object)
    .bind(sql_key)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut erase = async |sql: &'static str| -> sqlx::Result<u64> {
        Ok(sqlx::query(sql)
            .bind(object)
            .bind(sql_key)
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected())
    };
    let conflicts = erase(
        "DELETE FROM sync_conflicts WHERE object = $1 AND (sql_key = $2 OR hubspot_id = ANY($3))",
    )
    .await?;
    let writes = erase(
        "DELETE FROM sync_writes WHERE object = $1 AND \
         (sql_key = $2 OR record_key = $2 OR hubspot_id = ANY($3) OR record_key = ANY($3))",
    )
    .await?;
    let queue_items = erase(
        "DELETE FROM sync_queue WHERE object = $1 AND \
         ((direction = 'to_hubspot' AND record_key = $2) OR \
          (direction = 'to_sql' AND record_key = ANY($3)))",
    )
    .await?;
    let history = erase(
        "DELETE FROM sync_history WHERE object = $1 AND \
         (sql_key = $2 OR hubspot_id = ANY($3) OR old_hubspot_id = ANY($3))",
    )
    .await?;
    // What reconcile runs found about the member (keys, ids and field names only).
    erase(
        "DELETE FROM reconcile_findings WHERE object = $1 AND \
         (sql_key = $2 OR hubspot_id = ANY($3))",
    )
    .await?;
    let links = sqlx::query("DELETE FROM record_links WHERE object = $1 AND sql_key = $2")
        .bind(object)
        .bind(sql_key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let gone = Forgotten {
        hubspot_id,
        queue_items,
        writes,
        conflicts,
        links,
        history,
        operations: operations.into_iter().collect(),
    };
    history::record(tx, object, &[gone.entry(sql_key, cause)]).await?;
    Ok(gone)
}

/// Drops the payloads and errors of settled items `ids` (changes of an erased member that are
/// not synced): their rows stay, without the member's values.
pub async fn drop_payloads(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE sync_queue SET payload = '{}'::jsonb, errors = '[]'::jsonb, last_error = NULL, \
         payload_dropped_at = now(), updated_at = now() \
         WHERE id = ANY($1) AND state NOT IN ('pending', 'running')",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

impl Forgotten {
    /// The one ERASE row left of the member: ids, counts and the operations its history had.
    fn entry(&self, sql_key: &str, cause: &Cause) -> history::Entry {
        let mut message = format!(
            "erased from hubsync's tables: {} queue item(s), {} unsettled write(s), {} \
             conflict(s), {} link(s), {} history row(s)",
            self.queue_items, self.writes, self.conflicts, self.links, self.history
        );
        if !self.operations.is_empty() {
            message.push_str(&format!(" ({})", history::summary(&self.operations)));
        }
        if !cause.message.is_empty() {
            message = format!("{}; {message}", cause.message);
        }
        history::Entry {
            direction: cause.direction,
            operation: "ERASE".into(),
            sql_key: Some(sql_key.to_string()),
            hubspot_id: self.hubspot_id.clone(),
            item_id: cause.item_id,
            batch_id: cause.batch_id.clone(),
            reasons: Some(serde_json::json!({
                "queue_items": self.queue_items,
                "writes": self.writes,
                "conflicts": self.conflicts,
                "links": self.links,
                "history": self.history,
                "operations": self.operations,
            })),
            message: Some(message),
            ..history::Entry::default()
        }
    }
}
