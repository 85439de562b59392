//! Enqueue with coalescing: one statement per batch; a newer change replaces a pending item's
//! payload, an older or already-seen one is ignored.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use sqlx::PgConnection;

use super::{Direction, NewItem, Queue, Result, WAKE_CHANNEL};

/// The enqueue statement; `force` (backfills) queues records again even at a version already
/// synced, e.g. after a mapping change.
fn enqueue_sql(force: bool) -> &'static str {
    static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        let skip_seen = r#"
    -- Skip changes this record already had queued, synced or settled at the same or a newer
    -- version (re-reads of an overlap window are free).
    WHERE NOT EXISTS (
        SELECT 1 FROM sync_queue q
        WHERE q.object = $1 AND q.direction = $2 AND q.record_key = i.record_key
          AND q.state <> 'pending' AND q.source_version >= i.source_version)"#;
        let sql = |filter: &str| {
            format!(
                r#"
WITH input AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::jsonb[], $6::bigint[])
        AS t(record_key, operation, payload, source_version)
), fresh AS (
    SELECT i.* FROM input i{filter}
)
INSERT INTO sync_queue (object, direction, record_key, operation, payload, source_version, max_attempts)
SELECT $1, $2, record_key, operation, payload, source_version, $7 FROM fresh
ON CONFLICT (object, direction, record_key) WHERE state = 'pending'
DO UPDATE SET payload = EXCLUDED.payload,
              source_version = EXCLUDED.source_version,
              operation = EXCLUDED.operation,
              -- A newer change is due at once unless the item is backing off from failures.
              run_after = CASE WHEN sync_queue.attempts = 0
                               THEN least(sync_queue.run_after, now())
                               ELSE sync_queue.run_after END,
              updated_at = now()
    WHERE EXCLUDED.source_version > sync_queue.source_version
"#
            )
        };
        [sql(skip_seen), sql("")]
    });
    &SQL[usize::from(force)]
}

impl Queue {
    /// Enqueues changes of one object and direction; returns how many items were added or
    /// refreshed with a newer payload.
    pub async fn enqueue(
        &self,
        object: &str,
        direction: Direction,
        items: &[NewItem],
    ) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        enqueue_on(
            &mut conn,
            object,
            direction,
            items,
            self.settings.max_attempts,
        )
        .await
    }
}

/// What stands for a NUL character in queued text: PostgreSQL text and jsonb cannot hold
/// U+0000, and a record that carries one must be rejected by validation (rule `text` refuses
/// U+FFFD), not block its whole batch from being queued.
pub const NUL_STAND_IN: char = '\u{fffd}';

/// `text` with every NUL replaced by [`NUL_STAND_IN`]; borrowed when it has none.
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', &NUL_STAND_IN.to_string()))
    } else {
        Cow::Borrowed(text)
    }
}

/// A payload PostgreSQL can store: NULs in its strings and keys replaced (see
/// [`NUL_STAND_IN`]); borrowed when it has none.
pub fn storable(payload: &Value) -> Cow<'_, Value> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn replaced(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(storable_text(s).into_owned()),
            Value::Array(a) => Value::Array(a.iter().map(replaced).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (storable_text(k).into_owned(), replaced(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(payload) {
        Cow::Owned(replaced(payload))
    } else {
        Cow::Borrowed(payload)
    }
}

/// Enqueue on a given connection, so a poller can enqueue and advance its cursor in one
/// transaction. Wakes idle workers (NOTIFY is delivered when that transaction commits).
pub async fn enqueue_on(
    conn: &mut PgConnection,
    object: &str,
    direction: Direction,
    items: &[NewItem],
    max_attempts: i32,
) -> Result<u64> {
    enqueue_with(conn, object, direction, items, max_attempts, Seen::Skip).await
}

/// What enqueue does with a change at a version the record already had queued or settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Skip it: re-reading an overlap window queues nothing new (pollers).
    Skip,
    /// Queue it again: a backfill's full resync after a mapping or rule change.
    Requeue,
}

/// Enqueue with a choice of what happens to versions already seen; see [`enqueue_on`].
pub async fn enqueue_with(
    conn: &mut PgConnection,
    object: &str,
    direction: Direction,
    items: &[NewItem],
    max_attempts: i32,
    seen: Seen,
) -> Result<u64> {
    if items.is_empty() {
        return Ok(0);
    }
    // One row per record: the same key twice in one INSERT … ON CONFLICT is an error.
    let mut newest: HashMap<&str, &NewItem> = HashMap::with_capacity(items.len());
    for item in items {
        newest
            .entry(item.record_key.as_str())
            .and_modify(|cur| {
                if item.source_version >= cur.source_version {
                    *cur = item;
                }
            })
            .or_insert(item);
    }
    let n = newest.len();
    let (mut keys, mut ops, mut payloads, mut versions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for item in newest.values() {
        keys.push(storable_text(&item.record_key));
        ops.push(item.operation.as_str());
        payloads.push(storable(&item.payload));
        versions.push(item.source_version);
    }
    let payloads: Vec<&Value> = payloads.iter().map(AsRef::as_ref).collect();
    let affected = sqlx::query(enqueue_sql(seen == Seen::Requeue))
        .bind(object)
        .bind(direction.as_str())
        .bind(&keys)
        .bind(&ops)
        .bind(&payloads)
        .bind(&versions)
        .bind(max_attempts)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if affected > 0 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(format!("{object}/{direction}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_replaced_so_postgresql_can_store_the_item() {
        let clean = json!({"firstname": "Ana", "n": 5});
        assert!(matches!(storable(&clean), Cow::Borrowed(_)));
        let dirty = json!({"firstname": "Ana\u{0}", "list": ["a\u{0}b"], "k\u{0}": 1});
        assert_eq!(
            storable(&dirty).into_owned(),
            json!({"firstname": "Ana\u{fffd}", "list": ["a\u{fffd}b"], "k\u{fffd}": 1})
        );
        assert_eq!(storable_text("12\u{0}3"), "12\u{fffd}3");
        assert!(matches!(storable_text("123"), Cow::Borrowed(_)));
    }
}
