//! The daily budget against the in-process HubSpot simulator: it is seeded from HubSpot's usage
//! endpoint, so another app's spending is seen before anything is sent; at the reserve nothing
//! is sent until the reported reset, after which sending resumes without a 429; and a refused
//! endpoint leaves the configured budget and the rate-limit headers, with one warning.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Timelike, Utc};
use hubsync::hubspot::{ApiVersion, BudgetError, HubSpotClient, HubSpotError, UpdateInput};
use hubsync::sim::hubspot::{Faults, RunningSim, SimOptions};

use crate::support::Logs;

use crate::hubspot_client::{
    TOKEN, VERSIONS, all_on, client_with, props, seed_emails, settings, sim,
};

/// The simulator's statistics name for the usage endpoint.
const USAGE: &str = "account-info/usage";

fn usage_reads(sim: &RunningSim) -> u64 {
    sim.stats()
        .requests_by_endpoint
        .get(USAGE)
        .copied()
        .unwrap_or(0)
}

/// A simulator with a small daily limit of which other apps have already spent `other_apps`,
/// one contact, and a client with `reserve` on `version`.
async fn stand(
    options: SimOptions,
    reserve: u64,
    version: ApiVersion,
) -> (RunningSim, Arc<HubSpotClient>, String) {
    let sim = sim(options).await;
    let id = seed_emails(&sim, std::iter::once("dia@coop.cr".to_owned())).remove(0);
    let mut settings = settings(&sim, 100, TOKEN);
    settings.api_version = version;
    settings.daily_reserve = reserve;
    (sim, client_with(&settings), id)
}

async fn update(client: &HubSpotClient, id: &str) -> Result<(), HubSpotError> {
    let input = UpdateInput {
        id: id.to_owned(),
        properties: props(&[("city", "Alajuela")]),
    };
    let outcomes = client.batch_update("contacts", &[input]).await?;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    Ok(())
}

/// Updates the contact until the limiter refuses; returns how many went out and the refusal.
async fn spend_until_refused(client: &HubSpotClient, id: &str) -> (u64, HubSpotError) {
    let mut sent = 0;
    loop {
        match update(client, id).await {
            Ok(()) => sent += 1,
            Err(e) => return (sent, e),
        }
        assert!(sent < 1_000, "never stopped");
    }
}

#[tokio::test]
async fn another_apps_usage_is_seen_before_anything_is_sent() {
    for version in VERSIONS {
        seen_before_sending(version).await;
    }
}

async fn seen_before_sending(version: ApiVersion) {
    // hubspot.daily_limit says 250,000; the account has 1,000 and another app used 996.
    let options = SimOptions {
        daily_limit: Some(1_000),
        other_apps_usage: 996,
        ..SimOptions::default()
    };
    let (sim, client, id) = stand(options, 5, version).await;
    let report = client
        .refresh_daily_budget()
        .await
        .expect("the usage endpoint answers");
    assert_eq!((report.usage_limit, report.current_usage), (1_000, 997));
    let stats = client.limiter().stats();
    assert_eq!(stats.daily_limit, 1_000);
    assert_eq!(stats.daily_usage, Some(report));
    assert_eq!(stats.daily_resets_at, Some(sim.usage().resets_at));
    assert_eq!(client.limiter().daily_remaining(), 3);
    // 3 left is below the reserve of 5: not one update goes out (headers alone would have
    // needed one to learn it).
    let err = update(&client, &id).await.expect_err("at the reserve");
    assert!(
        matches!(
            err,
            HubSpotError::Budget(BudgetError::DailyReserve {
                remaining: 3,
                reserve: 5,
                resets_at: Some(_),
                ..
            })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("until HubSpot's daily reset at"),
        "{err}"
    );
    let stats = sim.stats();
    assert_eq!(stats.write_requests(), 0);
    assert_eq!((stats.total_requests, usage_reads(&sim)), (1, 1));
    assert_eq!(stats.throttled_429, 0);
    all_on(&sim, version);
}

#[tokio::test]
async fn at_the_reserve_nothing_is_sent_until_hubspots_reset_and_then_sending_resumes() {
    // The account's day ends 2 s from now; later days end at midnight in Costa Rica.
    let resets_at = Utc::now() + TimeDelta::seconds(2);
    let options = SimOptions {
        daily_limit: Some(1_000),
        other_apps_usage: 980,
        resets_at: Some(resets_at),
        time_zone: chrono_tz::America::Costa_Rica,
        ..SimOptions::default()
    };
    let (sim, client, id) = stand(options, 10, ApiVersion::default()).await;
    client.refresh_daily_budget().await.expect("read"); // 981 used, 19 left
    let (sent, err) = spend_until_refused(&client, &id).await;
    assert_eq!(sent, 9, "spent down to the reserve");
    // Reaching the reserve read HubSpot's figures once more (991 used: still at the reserve).
    assert_eq!(usage_reads(&sim), 2);
    let HubSpotError::Budget(BudgetError::DailyReserve {
        resets_at: reported,
        retry_after,
        ..
    }) = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*reported, Some(resets_at));
    assert!(*retry_after <= Duration::from_secs(4), "{retry_after:?}");
    assert!(client.limiter().stats().daily_paused_until.is_some());

    // Other apps spend the rest: anything sent before the reset would now get 429 DAILY.
    sim.spend_other_apps(9);
    let before = sim.stats().total_requests;
    for _ in 0..20 {
        let refused = update(&client, &id).await.expect_err("held back");
        assert!(matches!(refused, HubSpotError::Budget(_)), "{refused:?}");
    }
    assert_eq!(
        sim.stats().total_requests,
        before,
        "nothing sent at the reserve"
    );

    client.limiter().daily_budget_back().await;
    assert!(Utc::now() >= resets_at, "held back until HubSpot's reset");
    update(&client, &id).await.expect("a new day");
    let usage = sim.usage();
    assert_eq!(
        (usage.current_usage, usage.other_apps),
        (2, 0),
        "the new day holds the usage read and the update"
    );
    let midnight = usage
        .resets_at
        .with_timezone(&chrono_tz::America::Costa_Rica);
    assert_eq!((midnight.hour(), midnight.minute()), (0, 0), "{midnight}");
    let stats = client.limiter().stats();
    assert_eq!(stats.daily_usage.map(|u| u.current_usage), Some(1));
    assert_eq!(stats.daily_resets_at, Some(usage.resets_at));
    assert_eq!(stats.daily_paused_until, None);
    assert_eq!(usage_reads(&sim), 3);
    assert_eq!(sim.stats().throttled_429, 0);
}

/// The warning lines `logs` holds.
fn warnings(logs: &Logs) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_refused_usage_endpoint_leaves_the_configured_budget_with_one_warning() {
    // (status, what the warning names, usage reads: a refusal is not tried again; a server
    // error is, on the second refresh and when the reserve is reached)
    for (status, named, reads) in [
        (403, "403 MISSING_SCOPES", 1),
        (404, "404 OBJECT_NOT_FOUND", 1),
        (503, "503", 3),
    ] {
        let logs = Logs::default();
        let writer = logs.clone();
        // The service's own log format, masked as it would be on stdout.
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            hubsync::telemetry::json_layer(move || writer.clone()),
        );
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            subscriber,
            tracing_subscriber::filter::LevelFilter::INFO,
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let options = SimOptions {
            daily_limit: Some(20),
            faults: Faults {
                usage_refused: Some(status),
                ..Faults::default()
            },
            ..SimOptions::default()
        };
        let (sim, client, id) = stand(options, 15, ApiVersion::default()).await;
        assert_eq!(client.refresh_daily_budget().await, None, "{status}");
        assert_eq!(client.refresh_daily_budget().await, None, "{status}");
        // Today's behaviour: the headers tell the figure, spending stops at the reserve.
        let (sent, err) = spend_until_refused(&client, &id).await;
        assert_eq!(sent, 5, "{status}: 20 a day, reserve 15");
        assert!(
            matches!(
                err,
                HubSpotError::Budget(BudgetError::DailyReserve {
                    resets_at: None,
                    ..
                })
            ),
            "{status}: {err:?}"
        );
        assert!(err.to_string().contains("next check in"), "{err}");
        assert_eq!(usage_reads(&sim), reads, "{status}: usage reads");
        assert_eq!(sim.stats().throttled_429, 0);
        assert_eq!(client.limiter().stats().daily_usage, None);
        let warnings: Vec<String> = warnings(&logs)
            .into_iter()
            .filter(|l| l.contains("cannot read HubSpot's daily API usage"))
            .collect();
        assert_eq!(warnings.len(), 1, "{status}: {warnings:?}");
        assert!(warnings[0].contains(named), "{status}: {}", warnings[0]);
        let all = logs.text();
        crate::outputs::assert_clean("the in-process log", &all, &[TOKEN.into()]);
    }
}
