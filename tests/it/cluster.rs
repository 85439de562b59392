//! Several `hubsync run` processes on one queue database share one HubSpot budget through it:
//! three instances load 30,000 members without a 429 and with no window over the limit; the
//! share of an instance killed with SIGKILL returns to the other two within one hold; a 20 s
//! PostgreSQL outage in the middle of the load draws no 429 and loses
//! nothing. How fast they go together is `hubsync bench cluster`'s to measure.

use std::time::{Duration, Instant};

use hubsync::budget::link::Timing;
use hubsync::pg::throwaway::{Cluster, Durability};
use hubsync::sim::hubspot::SimOptions;
use nix::sys::signal::Signal;

use crate::daemon::{Daemon, eventually};
use crate::reliability::{Stand, assert_running};

const TIER: u32 = 100;

fn options() -> SimOptions {
    SimOptions {
        tier: TIER,
        ..SimOptions::lagging()
    }
}

/// Three daemons on the stand's database, each ready and counting the three of them.
async fn three(stand: &Stand) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for n in ["a", "b", "c"] {
        let instance = format!("instance: hubsync-{n}");
        daemons.push(stand.spawn(&[("# instance: hubsync-1", &instance)]).await);
    }
    for d in &daemons {
        d.expect_notify("READY=1");
    }
    for d in &daemons {
        eventually(
            "each instance sees the three of them",
            Duration::from_secs(10),
            || async { d.metrics().await.contains("hubsync_limiter_instances 3") },
        )
        .await;
    }
    daemons
}

/// One figure of a daemon's `/metrics` (NaN when absent).
async fn metric(daemon: &Daemon, name: &str) -> f64 {
    let text = daemon.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Instances registered in the shared budget.
async fn registered(stand: &Stand) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM rate_instances")
        .fetch_one(&stand.pool)
        .await
        .unwrap()
}

/// Waits until every member is settled, failing if a daemon exits on its own.
async fn settle(stand: &Stand, daemons: &mut [Daemon], limit: Duration) {
    eventually("every member is synced", limit, || {
        for d in daemons.iter_mut() {
            assert_running(d);
        }
        async move { stand.settled().await }
    })
    .await;
}

/// HubSpot never answered 429 and no rolling window held more than the tier.
fn assert_within_the_limit(stand: &Stand) -> u64 {
    let stats = stand.sims.hubspot.stats();
    assert_eq!(stats.throttled_429, 0, "{stats:?}");
    assert!(
        stats.max_requests_in_10s_window <= u64::from(TIER),
        "{stats:?}"
    );
    stats.max_requests_in_10s_window
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_load_30000_members_with_no_429_and_no_window_over_the_limit() {
    let stand = Stand::new(30_000, options()).await;
    let mut daemons = three(&stand).await;
    stand.insert_members().await;
    settle(&stand, &mut daemons, Duration::from_secs(180)).await;
    // Each took its part of the one budget.
    for d in &daemons {
        let part = metric(d, "hubsync_limiter_part").await;
        assert!(part > 0.1, "part {part}");
    }
    let busiest = assert_within_the_limit(&stand);
    for d in daemons {
        assert_eq!(stand.stop(d), Some(0));
    }
    let checked = stand.check().await;
    stand.assert_no_secrets();
    eprintln!("three instances: {checked} contacts checked, busiest window {busiest}, 0 × 429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_share_returns_to_the_other_two_within_one_hold() {
    let stand = Stand::new(45_000, options()).await;
    let mut daemons = three(&stand).await;
    stand.insert_members().await;
    eventually("the load is under way", Duration::from_secs(60), || async {
        stand.sims.hubspot.stats().contacts >= 8_000
    })
    .await;
    let mut killed = daemons.pop().unwrap();
    killed.signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    eventually("the killed daemon is gone", Duration::from_secs(10), || {
        let gone = !killed.running();
        async move { gone }
    })
    .await;
    stand.keep_output(killed);
    // A survivor on the same host sees the killed process's pid gone and takes its share back
    // at once; on another host the share would be held back until its hold ends (the SQL's own
    // test covers that). Either way: within one hold, the whole window is the survivors' again.
    let timing = Timing::default();
    let hold = timing.hold(hubsync::budget::shared::spans()[0]);
    let survivor = &daemons[0];
    eventually(
        "the killed instance's share comes back",
        hold + Duration::from_secs(5),
        || async {
            metric(survivor, "hubsync_limiter_held{lane=\"standard\"}").await == 0.0
                && registered(&stand).await == 2
        },
    )
    .await;
    let back_after = killed_at.elapsed();
    assert!(back_after < hold, "{back_after:?}");
    eventually(
        "the survivors share the window",
        Duration::from_secs(10),
        || async { metric(survivor, "hubsync_limiter_share{lane=\"standard\"}").await == 50.0 },
    )
    .await;
    settle(&stand, &mut daemons, Duration::from_secs(240)).await;
    assert_within_the_limit(&stand);
    for d in daemons {
        assert_eq!(stand.stop(d), Some(0));
    }
    let checked = stand.check().await;
    stand.assert_no_secrets();
    eprintln!(
        "kill -9 of one of three: {checked} contacts checked, its share back after {:.1} s \
         (at most the hold, {:.1} s), 0 × 429",
        back_after.as_secs_f64(),
        hold.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_20s_mid_load_draws_no_429_and_loses_nothing() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(|| Cluster::start(Durability::Fast))
            .await
            .unwrap()
            .unwrap(),
    );
    let url = cluster.create_database("budget_outage").await.unwrap();
    let pool = hubsync::pg::connect_url(&url, 2, Duration::from_secs(10))
        .await
        .unwrap();
    let stand = Stand::on(pool, url, 20_000, options()).await;
    let mut daemons = three(&stand).await;
    stand.insert_members().await;
    eventually("the load is under way", Duration::from_secs(60), || async {
        stand.sims.hubspot.stats().contacts >= 5_000
    })
    .await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    // The outage itself: 20 s with the database gone.
    tokio::time::sleep(Duration::from_secs(20)).await;
    for d in daemons.iter_mut() {
        assert_running(d);
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap()
        .unwrap();
    settle(&stand, &mut daemons, Duration::from_secs(240)).await;
    let busiest = assert_within_the_limit(&stand);
    let mut paced_alone = 0;
    for d in daemons {
        if d.output()
            .contains("HubSpot calls pace on this instance's own share")
        {
            paced_alone += 1;
        }
        assert_eq!(stand.stop(d), Some(0));
    }
    assert_eq!(paced_alone, 3, "every instance noticed the outage");
    let checked = stand.check().await;
    stand.assert_no_secrets();
    eprintln!(
        "20 s PostgreSQL outage under three instances: {checked} contacts checked, busiest \
         window {busiest}, 0 × 429"
    );
}
