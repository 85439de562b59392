//! Record links in PostgreSQL (`record_links`): which SQL Server row is which HubSpot record,
//! and the values both sides agreed on. Written in the same transaction that settles the items,
//! and conflicts (`sync_conflicts`) with them.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Row};

use super::diff::{Conflict, Side, Values};
use super::merges::Merge;

/// One record's link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub sql_key: String,
    pub hubspot_id: Option<String>,
    pub synced: Values,
    pub sql_version: Option<i64>,
    pub hubspot_version: Option<i64>,
}

/// A link to write after a successful sync: `synced` replaces the snapshot's fields it names.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkUpdate {
    pub sql_key: String,
    pub hubspot_id: Option<String>,
    pub synced: Values,
    pub sql_version: Option<i64>,
    pub hubspot_version: Option<i64>,
    /// Which direction this sync went (sets `synced_to_hubspot_at` or `synced_to_sql_at`).
    pub direction: crate::queue::Direction,
}

/// A conflict to record, with the record it belongs to.
#[derive(Debug, Clone)]
pub struct ConflictRecord {
    /// The queue item that found it (a retry of the item records it once).
    pub item_id: Option<i64>,
    pub sql_key: String,
    pub hubspot_id: Option<String>,
    pub conflict: Conflict,
    pub sql_modified_at: Option<chrono::DateTime<chrono::Utc>>,
    pub hubspot_modified_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn masked(v: &Option<String>) -> String {
    v.as_deref()
        .map(|v| crate::telemetry::mask::value(v).into_owned())
        .unwrap_or_default()
}

fn to_json(values: &Values) -> serde_json::Value {
    serde_json::to_value(values).unwrap_or_else(|_| serde_json::json!({}))
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Link, sqlx::Error> {
    let synced: serde_json::Value = row.try_get("synced")?;
    Ok(Link {
        sql_key: row.try_get("sql_key")?,
        hubspot_id: row.try_get("hubspot_id")?,
        synced: serde_json::from_value(synced).unwrap_or_default(),
        sql_version: row.try_get("sql_version")?,
        hubspot_version: row.try_get("hubspot_version")?,
    })
}

const COLUMNS: &str = "sql_key, hubspot_id, synced, sql_version, hubspot_version";

/// Up to `limit` links of `object` with a HubSpot id, in key order after `after`.
pub async fn page(
    pool: &PgPool,
    object: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Link>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM record_links WHERE object = $1 AND hubspot_id IS NOT NULL \
         AND ($2::text IS NULL OR sql_key > $2) ORDER BY sql_key LIMIT $3"
    )))
    .bind(object)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// How many links of `object` hold a HubSpot id.
pub async fn count(pool: &PgPool, object: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM record_links WHERE object = $1 AND hubspot_id IS NOT NULL",
    )
    .bind(object)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// Replaces the snapshot's values of the fields `values` names, for each (sql_key, values), in
/// one transaction.
pub async fn merge_synced(
    pool: &PgPool,
    object: &str,
    updates: &[(String, Values)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (key, values) in updates {
        merge_synced_on(&mut tx, object, key, values).await?;
    }
    tx.commit().await
}

/// Replaces the snapshot's values of the fields `values` names for one link, in the caller's
/// transaction.
pub async fn merge_synced_on(
    conn: &mut PgConnection,
    object: &str,
    sql_key: &str,
    values: &Values,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE record_links SET synced = synced || $3, updated_at = now() \
         WHERE object = $1 AND sql_key = $2",
    )
    .bind(object)
    .bind(sql_key)
    .bind(to_json(values))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Links of `object` whose HubSpot id is above `after` and at most `upto` (None: no upper
/// bound), in id order, stored before `before` (links made since belong to records a pass in id
/// order may have passed). Ids are decimal strings, ordered by `record_links_hubspot_order`.
pub async fn in_id_range(
    pool: &PgPool,
    object: &str,
    after: u64,
    upto: Option<u64>,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Link>, sqlx::Error> {
    let pad = |n: u64| format!("{n:020}");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM record_links \
         WHERE object = $1 AND hubspot_id IS NOT NULL AND lpad(hubspot_id, 20, '0') > $2 \
           AND ($3::text IS NULL OR lpad(hubspot_id, 20, '0') <= $3) AND updated_at < $4 \
         ORDER BY lpad(hubspot_id, 20, '0')"
    )))
    .bind(object)
    .bind(pad(after))
    .bind(upto.map(pad))
    .bind(before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Links of the given SQL keys, by key.
pub async fn by_sql_keys(
    pool: &PgPool,
    object: &str,
    keys: &[String],
) -> Result<HashMap<String, Link>, sqlx::Error> {
    let links = load(pool, object, "sql_key", keys).await?;
    Ok(links.into_iter().map(|l| (l.sql_key.clone(), l)).collect())
}

/// Links of the given HubSpot ids, by id.
pub async fn by_hubspot_ids(
    pool: &PgPool,
    object: &str,
    ids: &[String],
) -> Result<HashMap<String, Link>, sqlx::Error> {
    let links = load(pool, object, "hubspot_id", ids).await?;
    Ok(links
        .into_iter()
        .map(|l| (l.hubspot_id.clone().unwrap_or_default(), l))
        .collect())
}

/// Links whose `column` (a fixed column name, never input) is one of `values`.
async fn load(
    pool: &PgPool,
    object: &str,
    column: &'static str,
    values: &[String],
) -> Result<Vec<Link>, sqlx::Error> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM record_links WHERE object = $1 AND {column} = ANY($2)"
    )))
    .bind(object)
    .bind(values)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Links whose snapshot holds one of `values` (lowercased) as `property`, by that value: who
/// already has a match value, without asking HubSpot.
pub async fn holders_of(
    pool: &PgPool,
    object: &str,
    property: &str,
    values: &[String],
) -> Result<HashMap<String, Link>, sqlx::Error> {
    // The name is written into the statement (so that an index on the expression, such as
    // `record_links_synced_email`, serves it): only a HubSpot property name's characters.
    if values.is_empty()
        || property.is_empty()
        || !property
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, lower(synced->>'{property}') AS held FROM record_links \
         WHERE object = $1 AND synced->>'{property}' = ANY($2)"
    )))
    .bind(object)
    .bind(values)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::new();
    for row in &rows {
        out.insert(row.try_get::<String, _>("held")?, from_row(row)?);
    }
    Ok(out)
}

/// Inserts or updates links in one statement; the snapshot is merged field by field.
pub async fn upsert(
    conn: &mut PgConnection,
    object: &str,
    updates: &[LinkUpdate],
) -> Result<u64, sqlx::Error> {
    if updates.is_empty() {
        return Ok(0);
    }
    let keys: Vec<&str> = updates.iter().map(|u| u.sql_key.as_str()).collect();
    let ids: Vec<Option<&str>> = updates.iter().map(|u| u.hubspot_id.as_deref()).collect();
    let synced: Vec<serde_json::Value> = updates.iter().map(|u| to_json(&u.synced)).collect();
    let sql_versions: Vec<Option<i64>> = updates.iter().map(|u| u.sql_version).collect();
    let hs_versions: Vec<Option<i64>> = updates.iter().map(|u| u.hubspot_version).collect();
    let to_hubspot: Vec<bool> = updates
        .iter()
        .map(|u| u.direction == crate::queue::Direction::ToHubspot)
        .collect();
    let done = sqlx::query(
        r#"
INSERT INTO record_links AS l (object, sql_key, hubspot_id, synced, sql_version, hubspot_version,
                               synced_to_hubspot_at, synced_to_sql_at)
SELECT $1, u.sql_key, u.hubspot_id, u.synced, u.sql_version, u.hubspot_version,
       CASE WHEN u.to_hubspot THEN now() END, CASE WHEN NOT u.to_hubspot THEN now() END
FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::bigint[], $6::bigint[], $7::bool[])
    AS u(sql_key, hubspot_id, synced, sql_version, hubspot_version, to_hubspot)
ON CONFLICT (object, sql_key) DO UPDATE SET
    hubspot_id = coalesce(EXCLUDED.hubspot_id, l.hubspot_id),
    synced = l.synced || EXCLUDED.synced,
    sql_version = coalesce(EXCLUDED.sql_version, l.sql_version),
    hubspot_version = coalesce(EXCLUDED.hubspot_version, l.hubspot_version),
    synced_to_hubspot_at = coalesce(EXCLUDED.synced_to_hubspot_at, l.synced_to_hubspot_at),
    synced_to_sql_at = coalesce(EXCLUDED.synced_to_sql_at, l.synced_to_sql_at),
    updated_at = now()
"#,
    )
    .bind(object)
    .bind(&keys)
    .bind(&ids)
    .bind(&synced)
    .bind(&sql_versions)
    .bind(&hs_versions)
    .bind(&to_hubspot)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Re-points links to the survivors of contacts merged in HubSpot: each from the id it held
/// (`from`) to `to`; a link changed meanwhile is left alone. Returns the SQL keys re-pointed.
pub async fn repoint(
    conn: &mut PgConnection,
    object: &str,
    merges: &[&Merge],
) -> Result<Vec<String>, sqlx::Error> {
    if merges.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = merges.iter().map(|m| m.sql_key.as_str()).collect();
    let from: Vec<&str> = merges.iter().map(|m| m.from.as_str()).collect();
    let to: Vec<&str> = merges.iter().map(|m| m.to.as_str()).collect();
    sqlx::query_scalar(
        "UPDATE record_links l SET hubspot_id = u.to_id, updated_at = now() \
         FROM unnest($2::text[], $3::text[], $4::text[]) AS u(sql_key, from_id, to_id) \
         WHERE l.object = $1 AND l.sql_key = u.sql_key AND l.hubspot_id = u.from_id \
         RETURNING l.sql_key",
    )
    .bind(object)
    .bind(&keys)
    .bind(&from)
    .bind(&to)
    .fetch_all(&mut *conn)
    .await
}

/// Deletes the links of the given SQL keys.
pub async fn remove(
    conn: &mut PgConnection,
    object: &str,
    sql_keys: &[String],
) -> Result<u64, sqlx::Error> {
    if sql_keys.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query("DELETE FROM record_links WHERE object = $1 AND sql_key = ANY($2)")
        .bind(object)
        .bind(sql_keys)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Records conflicts as soon as they are decided, before the winner is written: a crash after
/// the write would otherwise lose them (the retry finds both sides equal). Settling records
/// them again, which stores nothing new.
pub async fn record_conflicts_now(
    pool: &PgPool,
    object: &str,
    conflicts: &[ConflictRecord],
) -> Result<(), sqlx::Error> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    record_conflicts(&mut conn, object, conflicts).await
}

/// Records conflicts (and logs each with both values), each once.
pub async fn record_conflicts(
    conn: &mut PgConnection,
    object: &str,
    conflicts: &[ConflictRecord],
) -> Result<(), sqlx::Error> {
    for c in conflicts {
        let inserted = sqlx::query(
            "INSERT INTO sync_conflicts (object, sql_key, hubspot_id, field, sql_value, \
             hubspot_value, synced_value, sql_modified_at, hubspot_modified_at, policy, winner, \
             decided_by, item_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT DO NOTHING",
        )
        .bind(object)
        .bind(&c.sql_key)
        .bind(&c.hubspot_id)
        .bind(&c.conflict.field)
        .bind(&c.conflict.sql_value)
        .bind(&c.conflict.hubspot_value)
        .bind(&c.conflict.synced_value)
        .bind(c.sql_modified_at)
        .bind(c.hubspot_modified_at)
        .bind(c.conflict.policy.as_str())
        .bind(match c.conflict.winner {
            Side::Sql => "sql",
            Side::Hubspot => "hubspot",
        })
        .bind(c.conflict.decided_by)
        .bind(c.item_id)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 0 {
            continue; // recorded already, when it was decided
        }
        tracing::warn!(
            operation = "CONFLICT",
            object,
            record_key = %c.sql_key,
            hubspot_id = c.hubspot_id.as_deref().unwrap_or(""),
            field = %c.conflict.field,
            sql_value = %masked(&c.conflict.sql_value),
            hubspot_value = %masked(&c.conflict.hubspot_value),
            policy = c.conflict.policy.as_str(),
            winner = ?c.conflict.winner,
            decided_by = c.conflict.decided_by,
            "field changed on both sides"
        );
    }
    Ok(())
}
