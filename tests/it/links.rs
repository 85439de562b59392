//! Record links and conflicts in PostgreSQL, written atomically with the items' outcomes.

use std::collections::BTreeMap;

use hubsync::queue::{Direction, NewItem, Operation, Outcome, Queue};
use hubsync::sync::diff::{Conflict, ConflictPolicy, Side, Values};
use hubsync::sync::links::{self, ConflictRecord, LinkUpdate};
use sqlx::Row;

use crate::support::fresh_db;

fn vals(pairs: &[(&str, &str)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect::<BTreeMap<_, _>>()
}

fn update(key: &str, id: Option<&str>, synced: Values, direction: Direction) -> LinkUpdate {
    LinkUpdate {
        sql_key: key.into(),
        hubspot_id: id.map(Into::into),
        synced,
        sql_version: Some(7),
        hubspot_version: None,
        direction,
    }
}

#[tokio::test]
async fn snapshots_merge_field_by_field_and_keep_the_hubspot_id() {
    let (pool, _) = fresh_db().await;
    let mut conn = pool.acquire().await.unwrap();
    let first = update(
        "10045",
        Some("901"),
        vals(&[("a", "1"), ("b", "2")]),
        Direction::ToHubspot,
    );
    links::upsert(&mut conn, "contacts", &[first])
        .await
        .unwrap();
    let second = update("10045", None, vals(&[("b", "3")]), Direction::ToSql);
    links::upsert(&mut conn, "contacts", &[second])
        .await
        .unwrap();

    let by_key = links::by_sql_keys(&pool, "contacts", &["10045".into()])
        .await
        .unwrap();
    let link = &by_key["10045"];
    assert_eq!(link.hubspot_id.as_deref(), Some("901"));
    assert_eq!(link.synced, vals(&[("a", "1"), ("b", "3")]));
    let by_id = links::by_hubspot_ids(&pool, "contacts", &["901".into()])
        .await
        .unwrap();
    assert_eq!(by_id["901"].sql_key, "10045");
    let row = sqlx::query("SELECT synced_to_hubspot_at IS NOT NULL AS h, synced_to_sql_at IS NOT NULL AS s FROM record_links")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(row.get::<bool, _>("h") && row.get::<bool, _>("s"));

    // One HubSpot record is never linked to two SQL rows.
    let clash = update("20001", Some("901"), vals(&[]), Direction::ToHubspot);
    assert!(
        links::upsert(&mut conn, "contacts", &[clash])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn links_conflicts_and_outcomes_commit_together_or_not_at_all() {
    let (pool, _) = fresh_db().await;
    let queue = Queue::new(pool.clone(), Default::default());
    let item = NewItem {
        record_key: "10045".into(),
        operation: Operation::Upsert,
        payload: serde_json::json!({}),
        source_version: 7,
    };
    queue
        .enqueue("contacts", Direction::ToHubspot, &[item])
        .await
        .unwrap();
    let batch = queue
        .claim("contacts", Direction::ToHubspot, 10, "w")
        .await
        .unwrap();
    let conflict = ConflictRecord {
        item_id: None,
        sql_key: "10045".into(),
        hubspot_id: Some("901".into()),
        conflict: Conflict {
            field: "email".into(),
            sql_value: Some("ana@example.com".into()),
            hubspot_value: Some("ana.r@example.com".into()),
            synced_value: Some("old@example.com".into()),
            policy: ConflictPolicy::SqlWins,
            winner: Side::Sql,
            decided_by: "policy sql_wins",
        },
        sql_modified_at: None,
        hubspot_modified_at: None,
    };
    let done = Outcome::Done {
        operation: "UPDATE".into(),
        hubspot_id: Some("901".into()),
    };

    for commit in [false, true] {
        let mut tx = pool.begin().await.unwrap();
        let link = update(
            "10045",
            Some("901"),
            vals(&[("email", "ana@example.com")]),
            Direction::ToHubspot,
        );
        links::upsert(&mut tx, "contacts", &[link]).await.unwrap();
        links::record_conflicts(&mut tx, "contacts", std::slice::from_ref(&conflict))
            .await
            .unwrap();
        let settled = queue
            .settle_on(&mut tx, "w", &[(&batch[0], done.clone())])
            .await
            .unwrap();
        assert_eq!(settled.done, 1);
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let links: i64 = sqlx::query_scalar("SELECT count(*) FROM record_links")
            .fetch_one(&pool)
            .await
            .unwrap();
        let conflicts: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_conflicts")
            .fetch_one(&pool)
            .await
            .unwrap();
        let state: String = sqlx::query_scalar("SELECT state FROM sync_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
        if commit {
            assert_eq!((links, conflicts, state.as_str()), (1, 1, "done"));
        } else {
            assert_eq!((links, conflicts, state.as_str()), (0, 0, "running"));
        }
    }
    let winner: String = sqlx::query_scalar("SELECT winner FROM sync_conflicts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(winner, "sql");
}
