//! Erasing one member from hubsync's own tables (`hubsync forget`): every queue item of the
//! member in either direction (payloads and errors), its unsettled writes, its conflicts and its
//! record link with the snapshot of its values, in one transaction. The SQL Server row is the
//! system of record and stays.

use sqlx::PgPool;

/// What was erased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The HubSpot id the member's link held, if any.
    pub hubspot_id: Option<String>,
    pub queue_items: u64,
    pub writes: u64,
    pub conflicts: u64,
    pub links: u64,
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

/// Erases member `sql_key` of `object` from every hubsync table, in one transaction.
pub async fn forget(pool: &PgPool, object: &str, sql_key: &str) -> sqlx::Result<Forgotten> {
    let mut tx = pool.begin().await?;
    let hubspot_id: Option<String> = sqlx::query_scalar::<_, Option<String>>(
        "SELECT hubspot_id FROM record_links WHERE object = $1 AND sql_key = $2 FOR UPDATE",
    )
    .bind(object)
    .bind(sql_key)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let id = hubspot_id.as_deref();
    let mut erase = async |sql: &'static str| -> sqlx::Result<u64> {
        Ok(sqlx::query(sql)
            .bind(object)
            .bind(sql_key)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected())
    };
    let conflicts =
        erase("DELETE FROM sync_conflicts WHERE object = $1 AND (sql_key = $2 OR hubspot_id = $3)")
            .await?;
    let writes = erase(
        "DELETE FROM sync_writes WHERE object = $1 AND \
         (sql_key = $2 OR record_key = $2 OR hubspot_id = $3 OR record_key = $3)",
    )
    .await?;
    let queue_items = erase(
        "DELETE FROM sync_queue WHERE object = $1 AND \
         ((direction = 'to_hubspot' AND record_key = $2) OR \
          (direction = 'to_sql' AND record_key = $3))",
    )
    .await?;
    let links = sqlx::query("DELETE FROM record_links WHERE object = $1 AND sql_key = $2")
        .bind(object)
        .bind(sql_key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(Forgotten {
        hubspot_id,
        queue_items,
        writes,
        conflicts,
        links,
    })
}
