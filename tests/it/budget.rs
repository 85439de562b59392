//! The shared HubSpot budget's SQL (migration 0007) on real PostgreSQL: grants from several
//! instances keep every window at the limit, first come first served; the shares of stale
//! instances are held back until their hold ends; shares never add up to more than the limit;
//! grants an instance made on its own join the log when it reports in again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;

use crate::support::fresh_db;

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros() as i64,
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Grant {
    wait_us: i64,
    slot: Option<DateTime<Utc>>,
    held: i32,
}

/// One call of `hubsync_rate_grant` on the standard lane.
async fn grant(
    pool: &PgPool,
    instance: &str,
    limit: i32,
    span: Duration,
    ahead: Duration,
) -> Grant {
    sqlx::query_as(
        "SELECT wait_us, slot, held FROM hubsync_rate_grant('standard', $1, $2, $3, $4, $5, $6)",
    )
    .bind(limit)
    .bind(interval(span))
    .bind(interval(ahead))
    .bind(instance)
    .bind(interval(Duration::from_secs(3)))
    .bind(interval(Duration::from_secs(30)))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// One heartbeat of `instance` at `limit` per lane, pushing `own` standard grants (ages);
/// returns its standard share.
async fn beat(pool: &PgPool, instance: &str, limit: i32, own: &[Duration]) -> i32 {
    let ages: Vec<i64> = own.iter().map(|a| a.as_micros() as i64).collect();
    let lanes: Vec<&str> = own.iter().map(|_| "standard").collect();
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT lane, share FROM hubsync_rate_heartbeat($1, 'shared', $2, $3, $4, 0, 0, 0, 0, $5, $6)",
    )
    .bind(instance)
    .bind(vec!["standard", "search"])
    .bind(vec![limit, 5])
    .bind(interval(Duration::from_secs(30)))
    .bind(lanes)
    .bind(ages)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .find(|(lane, _)| lane == "standard")
        .map(|(_, share)| share)
        .unwrap()
}

async fn live_shares(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT s.instance, s.share FROM rate_shares s JOIN rate_instances i USING (instance) \
         WHERE s.lane = 'standard' AND i.heartbeat_at > clock_timestamp() - interval '30 s' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Largest number of slots inside any window `(t - span, t]`.
fn busiest(slots: &[DateTime<Utc>], span: Duration) -> usize {
    let span = chrono::TimeDelta::from_std(span).unwrap();
    let mut sorted = slots.to_vec();
    sorted.sort();
    let mut start = 0;
    let mut most = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= span {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_of_three_instances_never_put_more_than_the_limit_in_a_window() {
    let (pool, _) = fresh_db().await;
    let (limit, span, ahead) = (5, Duration::from_millis(400), Duration::from_millis(500));
    let mut tasks = Vec::new();
    for caller in 0..9 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let instance = format!("i{}", caller % 3);
            let mut slots = Vec::new();
            while slots.len() < 5 {
                let g = grant(&pool, &instance, limit, span, ahead).await;
                // The caller sleeps as told: to its slot, or until it may ask again.
                tokio::time::sleep(Duration::from_micros(g.wait_us as u64)).await;
                if let Some(slot) = g.slot {
                    assert!(g.wait_us <= ahead.as_micros() as i64, "{g:?}");
                    slots.push(slot);
                }
            }
            slots
        }));
    }
    let mut slots = Vec::new();
    for t in tasks {
        slots.extend(t.await.unwrap());
    }
    assert_eq!(slots.len(), 45);
    assert_eq!(busiest(&slots, span), limit as usize, "{slots:?}");
    // Nothing was wasted: 45 grants, evenly spaced at 5 per window, span 44 / 5 windows.
    slots.sort();
    let spread = (slots[44] - slots[0]).to_std().unwrap();
    assert!(spread >= span * 8, "{spread:?}");
    assert!(spread < span * 9 + Duration::from_millis(300), "{spread:?}");
    // The log keeps the last window and what lies ahead only, not every grant.
    let kept: i32 =
        sqlx::query_scalar("SELECT cardinality(slots) FROM rate_lanes WHERE lane = 'standard'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let windows = (span + ahead).as_millis() / span.as_millis() + 1;
    assert!(kept <= limit * windows as i32, "{kept}");
}

#[tokio::test]
async fn shares_never_add_up_to_more_than_the_limit_and_a_leaver_gives_its_share_back() {
    let (pool, _) = fresh_db().await;
    let mut seen = Vec::new();
    for round in 0..3 {
        for name in ["a", "b", "c"] {
            seen.push((round, name, beat(&pool, name, 100, &[]).await));
            let total: i32 = live_shares(&pool).await.iter().map(|(_, s)| s).sum();
            assert!(total <= 100, "{seen:?}");
        }
    }
    assert_eq!(
        live_shares(&pool).await,
        vec![("a".into(), 33), ("b".into(), 33), ("c".into(), 33)],
        "{seen:?}"
    );
    sqlx::query("SELECT hubsync_rate_leave('c')")
        .execute(&pool)
        .await
        .unwrap();
    for name in ["a", "b", "a"] {
        beat(&pool, name, 100, &[]).await;
    }
    assert_eq!(
        live_shares(&pool).await,
        vec![("a".into(), 50), ("b".into(), 50)]
    );
}

#[tokio::test]
async fn a_stale_instances_share_is_held_back_from_the_log_until_its_hold_ends() {
    let (pool, _) = fresh_db().await;
    // Shares settle at 5 each once both have reported twice.
    for name in ["a", "b", "a", "b"] {
        beat(&pool, name, 10, &[]).await;
    }
    let span = Duration::from_secs(60);
    let ahead = Duration::from_secs(600);
    let age = |secs: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "UPDATE rate_instances SET heartbeat_at = clock_timestamp() - make_interval(secs => $1) \
                 WHERE instance = 'b'",
            )
            .bind(secs as f64)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    // Slots are a window ÷ room apart: 6 s while b reports (room 10).
    let gap = |a: &Grant, b: &Grant| (b.slot.unwrap() - a.slot.unwrap()).to_std().unwrap();
    age(1).await;
    let g1 = grant(&pool, "a", 10, span, ahead).await;
    let g2 = grant(&pool, "a", 10, span, ahead).await;
    assert_eq!((g1.held, g2.held), (0, 0));
    assert_eq!(gap(&g1, &g2), Duration::from_secs(6));
    // 3 s without a heartbeat and b is stale: its 5 are held back, room 5, 12 s apart.
    age(4).await;
    let g3 = grant(&pool, "a", 10, span, ahead).await;
    assert_eq!(g3.held, 5);
    assert_eq!(gap(&g2, &g3), Duration::from_secs(12));
    // Past its hold, b may be dead and is certainly silent: its share comes back.
    age(31).await;
    let g4 = grant(&pool, "a", 10, span, ahead).await;
    assert_eq!(g4.held, 0);
    assert_eq!(gap(&g3, &g4), Duration::from_secs(6));
}

#[tokio::test]
async fn grants_made_on_an_own_share_join_the_log_with_the_next_heartbeat() {
    let (pool, _) = fresh_db().await;
    beat(&pool, "a", 3, &[]).await;
    let before: i64 = sqlx::query_scalar("SELECT granted FROM rate_lanes WHERE lane = 'standard'")
        .fetch_one(&pool)
        .await
        .unwrap();
    beat(
        &pool,
        "a",
        3,
        &[Duration::from_millis(200), Duration::from_millis(100)],
    )
    .await;
    let (granted, kept): (i64, i32) = sqlx::query_as(
        "SELECT granted, cardinality(slots) FROM rate_lanes WHERE lane = 'standard'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((granted - before, kept), (2, 2));
    // With 2 of 3 spent in the window, one more goes a third of the window after the last, and
    // the next when the first leaves the window.
    let span = Duration::from_secs(30);
    let third = grant(&pool, "a", 3, span, Duration::from_secs(60)).await;
    let after = Duration::from_micros(third.wait_us as u64);
    assert!(
        after > Duration::from_secs(9) && after < Duration::from_secs(10),
        "{third:?}"
    );
    let fourth = grant(&pool, "a", 3, span, Duration::from_secs(60)).await;
    let ahead = Duration::from_micros(fourth.wait_us as u64);
    assert!(
        ahead > span - Duration::from_secs(1) && ahead < span,
        "{fourth:?}"
    );
}
