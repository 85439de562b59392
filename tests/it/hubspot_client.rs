//! The HubSpot client against the in-process HubSpot simulator: the shared limiter keeps every
//! rolling window under the tier, faults and 429s lose nothing, creates never duplicate, search
//! passes the 10,000 cap, preflight names problems, and a bad token gives one clear error. The
//! key tests run on API version `2026-09` (the default) and on the legacy `v3`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use hubsync::hubspot::{
    ApiVersion, CreateInput, HubSpotClient, HubSpotError, HubSpotSettings, Limiter, ModifiedSince,
    PreflightProblem, Properties, PropertyUse, ReadBy, UpdateInput, WriteOutcome,
    update_concurrently,
};
use hubsync::sim::hubspot::{Faults, RunningSim, SimOptions, start};
use secrecy::SecretString;

/// A raised limit for tests that move many records, so they take seconds.
const FAST_TIER: u32 = 5_000;
pub(crate) const TOKEN: &str = "sim-token";
/// The versions the key tests run on: the default and the legacy one a portal may still use.
pub(crate) const VERSIONS: [ApiVersion; 2] = [ApiVersion::V2026_09, ApiVersion::V3];

pub(crate) async fn sim(options: SimOptions) -> RunningSim {
    start("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("simulator starts")
}

pub(crate) fn settings(sim: &RunningSim, tier: u32, token: &str) -> HubSpotSettings {
    HubSpotSettings {
        base_url: sim.base_url().parse().expect("url"),
        token: Some(SecretString::from(token)),
        requests_per_10s: tier,
        search_per_second: 5,
        timeout: Duration::from_secs(5),
        retry_initial: Duration::from_millis(10),
        retry_max_interval: Duration::from_millis(200),
        max_retry_elapsed: Duration::from_secs(60),
        ..HubSpotSettings::default()
    }
}

pub(crate) fn client_with(settings: &HubSpotSettings) -> Arc<HubSpotClient> {
    let limiter = Arc::new(Limiter::from_settings(settings));
    Arc::new(HubSpotClient::new(settings, limiter).expect("client"))
}

fn client(sim: &RunningSim, tier: u32) -> Arc<HubSpotClient> {
    client_on(sim, tier, ApiVersion::default())
}

fn client_on(sim: &RunningSim, tier: u32, version: ApiVersion) -> Arc<HubSpotClient> {
    client_with(&HubSpotSettings {
        api_version: version,
        ..settings(sim, tier, TOKEN)
    })
}

/// Every request the simulator served came in on `version`'s paths.
pub(crate) fn all_on(sim: &RunningSim, version: ApiVersion) {
    let by_version = sim.stats().requests_by_version;
    assert_eq!(
        by_version.keys().collect::<Vec<_>>(),
        [version.as_str()],
        "{by_version:?}"
    );
}

pub(crate) fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
        .collect()
}

pub(crate) fn seed_emails(sim: &RunningSim, emails: impl Iterator<Item = String>) -> Vec<String> {
    let records: Vec<BTreeMap<String, Option<String>>> =
        emails.map(|e| props(&[("email", &e)])).collect();
    sim.seed_contacts(&records).expect("seed")
}

/// Batches of 100 updates setting `property` to `value(id)` on every id.
fn updates(
    ids: &[String],
    property: &str,
    value: impl Fn(&str) -> String,
) -> Vec<Vec<UpdateInput>> {
    ids.chunks(100)
        .map(|chunk| {
            chunk
                .iter()
                .map(|id| UpdateInput {
                    id: id.clone(),
                    properties: props(&[(property, &value(id))]),
                })
                .collect()
        })
        .collect()
}

async fn update_all(
    client: &Arc<HubSpotClient>,
    batches: Vec<Vec<UpdateInput>>,
) -> Vec<(UpdateInput, WriteOutcome)> {
    update_concurrently(client, "contacts", batches, 4)
        .await
        .expect("updates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_sharing_the_limiter_never_exceed_the_tier_window() {
    // The real tier: 300 requests at 100 per 10 s take about 30 s by nature (rate, not sleep).
    let sim = sim(SimOptions::default()).await;
    let ids = seed_emails(&sim, (0..10).map(|i| format!("w{i}@coop.cr")));
    let client = client(&sim, 100);
    let batches: Vec<Vec<UpdateInput>> = (0..300)
        .flat_map(|n| updates(&ids, "city", move |_| format!("round {n}")))
        .collect();
    let done = update_all(&client, batches).await;
    assert!(done.iter().all(|(_, o)| o.is_ok()));
    let stats = sim.stats();
    assert_eq!(stats.total_requests, 300);
    assert_eq!(
        stats.throttled_429, 0,
        "a 429 is never how the limit is found"
    );
    assert!(
        stats.max_requests_in_10s_window <= 100,
        "busiest window {}",
        stats.max_requests_in_10s_window
    );
    // Not needlessly slow either: the busiest window is close to the tier.
    assert!(stats.max_requests_in_10s_window >= 90);
    assert!(client.limiter().stats().waited > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_5xx_and_dropped_connections_10000_updates_arrive_exactly_once() {
    let sim = sim(SimOptions {
        tier: FAST_TIER,
        seed: 7,
        ..SimOptions::default()
    })
    .await;
    let ids = seed_emails(&sim, (0..10_000).map(|i| format!("f{i}@coop.cr")));
    sim.set_faults(Faults {
        error_rate: 0.2,
        drop_rate: 0.05,
        lost_response_rate: 0.05,
        ..Faults::default()
    });
    let client = client(&sim, FAST_TIER);
    let batches = updates(&ids, "firstname", |id| format!("n{id}"));
    let done = update_all(&client, batches).await;
    assert_eq!(done.len(), 10_000);
    assert!(
        done.iter().all(|(_, o)| o.is_ok()),
        "every update settled Ok"
    );
    let stats = sim.stats();
    assert!(stats.faults_injected > 10, "faults were injected");
    let contacts = sim.contacts();
    assert_eq!(contacts.len(), 10_000, "no record created or lost");
    for contact in &contacts {
        assert_eq!(
            contact.get("firstname"),
            Some(format!("n{}", contact.id).as_str()),
            "contact {}",
            contact.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_burst_is_waited_out_without_losing_records() {
    let sim = sim(SimOptions {
        tier: FAST_TIER,
        ..SimOptions::default()
    })
    .await;
    let ids = seed_emails(&sim, (0..400).map(|i| format!("b{i}@coop.cr")));
    sim.set_faults(Faults {
        burst_429: 3,
        ..Faults::default()
    });
    let client = client(&sim, FAST_TIER);
    let batches = updates(&ids, "city", |_| "Cartago".to_owned());
    let done = update_all(&client, batches).await;
    assert!(done.iter().all(|(_, o)| o.is_ok()));
    assert_eq!(sim.stats().throttled_429, 3);
    assert!(
        client.limiter().stats().pauses >= 1,
        "workers paused together"
    );
    assert!(
        sim.contacts()
            .iter()
            .all(|c| c.get("city") == Some("Cartago"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_1000_of_which_300_exist_links_every_input_without_duplicates() {
    for version in VERSIONS {
        create_1000_of_which_300_exist(version).await;
    }
}

async fn create_1000_of_which_300_exist(version: ApiVersion) {
    let sim = sim(SimOptions {
        tier: FAST_TIER,
        seed: 3,
        ..SimOptions::default()
    })
    .await;
    let existing = seed_emails(&sim, (0..300).map(|i| format!("socio{i}@coop.cr")));
    // Inputs interleave existing and new members; some existing emails differ in case.
    let emails: Vec<String> = (0..1000)
        .map(|i| {
            if i % 10 < 3 {
                let n = (i / 10) * 3 + i % 10;
                if n % 2 == 0 {
                    format!("Socio{n}@COOP.cr")
                } else {
                    format!("socio{n}@coop.cr")
                }
            } else {
                format!("nuevo{i}@coop.cr")
            }
        })
        .collect();
    let inputs: Vec<CreateInput> = emails
        .iter()
        .map(|e| CreateInput {
            properties: props(&[("email", e), ("firstname", "Ana")]),
        })
        .collect();
    let client = client_on(&sim, FAST_TIER, version);
    let outcomes = client
        .batch_create("contacts", &inputs, Some("email"))
        .await
        .expect("create");
    assert_eq!(sim.contacts().len(), 1000, "exactly 1,000 contacts");
    all_on(&sim, version);
    let mut exists = 0;
    let mut linked = HashSet::new();
    for (email, outcome) in emails.iter().zip(&outcomes) {
        let id = outcome
            .linked_id()
            .unwrap_or_else(|| panic!("{email}: {outcome:?}"));
        let contact = sim.contact(id).expect("linked contact exists");
        assert_eq!(contact.get("email"), Some(email.to_lowercase().as_str()));
        if let WriteOutcome::Exists { existing_id } = outcome {
            assert!(existing.contains(existing_id));
            exists += 1;
        }
        assert!(linked.insert(id.to_owned()), "{id} linked twice");
    }
    assert_eq!(exists, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_returns_25000_contacts_modified_in_one_second_exactly_once() {
    for version in VERSIONS {
        search_25000_modified_in_one_second(version).await;
    }
}

async fn search_25000_modified_in_one_second(version: ApiVersion) {
    let sim = sim(SimOptions {
        search_per_second: 100,
        ..SimOptions::default()
    })
    .await;
    let same_second = "2026-11-20T10:00:00.000Z";
    let records: Vec<BTreeMap<String, Option<String>>> = (0..25_000)
        .map(|i| {
            props(&[
                ("email", &format!("m{i}@coop.cr")),
                ("lastmodifieddate", same_second),
            ])
        })
        .collect();
    let ids: HashSet<String> = sim
        .seed_contacts(&records)
        .expect("seed")
        .into_iter()
        .collect();
    let mut settings = settings(&sim, 100, TOKEN);
    settings.search_per_second = 100;
    settings.api_version = version;
    let client = client_with(&settings);
    let mut pager = client.search_modified(
        "contacts",
        ModifiedSince {
            since: Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap(),
            until: None,
            properties: vec!["email".into()],
        },
    );
    let mut seen = HashSet::new();
    while let Some(page) = pager.next_page().await.expect("page") {
        for record in page {
            assert!(
                seen.insert(record.id.clone()),
                "{} returned twice",
                record.id
            );
        }
    }
    assert_eq!(seen, ids, "all 25,000 returned");
    // Keyset pages of 200: one request per page, none of them near the 10,000 cap.
    assert_eq!(
        pager.requests,
        25_000 / hubsync::hubspot::SEARCH_PAGE as u64
    );
    assert_eq!(sim.stats().throttled_429, 0);
    all_on(&sim, version);
}

#[tokio::test]
async fn preflight_names_unknown_read_only_and_bad_enumeration_option() {
    for version in VERSIONS {
        preflight_names_problems(version).await;
    }
}

async fn preflight_names_problems(version: ApiVersion) {
    let sim = sim(SimOptions::default()).await;
    let client = client_on(&sim, 100, version);
    let uses = vec![
        PropertyUse::written("email").with_type("string"),
        PropertyUse::written("numero_de_socio_inexistente"),
        PropertyUse::written("createdate"),
        PropertyUse::read("lastmodifieddate"),
        PropertyUse::written("lifecyclestage").with_values(["customer", "Customer"]),
    ];
    let problems = client
        .preflight("contacts", &uses)
        .await
        .expect("preflight");
    assert_eq!(
        problems,
        vec![
            PreflightProblem::Unknown {
                name: "numero_de_socio_inexistente".into()
            },
            PreflightProblem::ReadOnly {
                name: "createdate".into()
            },
            PreflightProblem::BadOption {
                name: "lifecyclestage".into(),
                value: "Customer".into(),
                allowed: hubsync::sim::hubspot::LIFECYCLE_STAGES
                    .iter()
                    .map(|(_, value)| (*value).to_owned())
                    .collect(),
            },
        ]
    );
    // The definitions are cached: a second preflight does not call HubSpot again.
    client.preflight("contacts", &uses).await.expect("again");
    assert_eq!(sim.stats().requests_by_endpoint.get("properties"), Some(&1));
    all_on(&sim, version);
}

#[tokio::test]
async fn a_wrong_token_gives_one_clear_error_that_never_shows_the_token() {
    for version in VERSIONS {
        wrong_token(version).await;
    }
}

async fn wrong_token(version: ApiVersion) {
    let sim = sim(SimOptions::default()).await;
    let wrong = "pat-na1-0000-wrong-secret-token";
    let client = client_with(&HubSpotSettings {
        api_version: version,
        ..settings(&sim, 100, wrong)
    });
    let err = client
        .batch_update(
            "contacts",
            &[UpdateInput {
                id: "1".into(),
                properties: props(&[("city", "Limón")]),
            }],
        )
        .await
        .expect_err("401");
    assert!(matches!(err, HubSpotError::InvalidToken { .. }), "{err:?}");
    let text = format!("{err} {err:?} {client:?}");
    assert!(text.contains("invalid"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains("wrong-secret"),
        "{text}"
    );
    assert_eq!(sim.stats().total_requests, 1, "a 401 is not retried");
    all_on(&sim, version);
}

#[tokio::test]
async fn per_input_outcomes_are_matched_by_trace_id_and_id() {
    for version in VERSIONS {
        per_input_outcomes(version).await;
    }
}

async fn per_input_outcomes(version: ApiVersion) {
    let sim = sim(SimOptions {
        seed: 11,
        ..SimOptions::default()
    })
    .await;
    let ids = seed_emails(&sim, (0..3).map(|i| format!("o{i}@coop.cr")));
    let client = client_on(&sim, 100, version);
    // A partial batch answers 207 on v3; from 2026-09 on 200 with the errors in its body.
    let partial = if version.multi_status() { 207 } else { 200 };
    let inputs = vec![
        UpdateInput {
            id: ids[0].clone(),
            properties: props(&[("city", "Heredia")]),
        },
        UpdateInput {
            id: ids[1].clone(),
            properties: props(&[("lifecyclestage", "Cliente")]),
        },
        UpdateInput {
            id: "999999".into(),
            properties: props(&[("city", "Heredia")]),
        },
        UpdateInput {
            id: ids[2].clone(),
            properties: props(&[("city", "Alajuela")]),
        },
    ];
    let outcomes = client
        .batch_update("contacts", &inputs)
        .await
        .expect("update");
    assert!(matches!(&outcomes[0], WriteOutcome::Ok { id, .. } if *id == ids[0]));
    assert!(
        matches!(&outcomes[1], WriteOutcome::Rejected { property: Some(p), status, .. }
            if p == "lifecyclestage" && *status == partial),
        "{:?}",
        outcomes[1]
    );
    assert!(matches!(&outcomes[2], WriteOutcome::NotFound { id } if id == "999999"));
    assert!(matches!(&outcomes[3], WriteOutcome::Ok { id, .. } if *id == ids[2]));
    assert_eq!(sim.contact(&ids[2]).unwrap().get("city"), Some("Alajuela"));
    assert_eq!(sim.contact(&ids[1]).unwrap().get("lifecyclestage"), None);

    // Reads by email match case-insensitively and report missing ones as None.
    let keys = vec!["O1@Coop.CR".to_owned(), "nadie@coop.cr".to_owned()];
    let read = client
        .batch_read(
            "contacts",
            &ReadBy::Property("email".into()),
            &keys,
            &["city"],
        )
        .await
        .expect("read");
    assert_eq!(
        read[0].as_ref().map(|r| r.id.as_str()),
        Some(ids[1].as_str())
    );
    assert!(read[1].is_none());

    // Archived records leave reads and show up in the archived list.
    let archived = client
        .batch_archive("contacts", &ids[..2])
        .await
        .expect("archive");
    assert!(archived.iter().all(WriteOutcome::is_ok));
    let listed: HashSet<String> = client
        .list_archived("contacts", &["email"])
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ids[..2].iter().cloned().collect());

    // A create with one bad input: 201 (2026-09) or 207 (v3), the good one created either way.
    let created = client
        .batch_create(
            "contacts",
            &[
                CreateInput {
                    properties: props(&[("email", "nueva@coop.cr")]),
                },
                CreateInput {
                    properties: props(&[("email", "mala@coop.cr"), ("marital_status", "x")]),
                },
            ],
            Some("email"),
        )
        .await
        .expect("create");
    let partial = if version.multi_status() { 207 } else { 201 };
    assert!(created[0].is_ok(), "{:?}", created[0]);
    assert!(
        matches!(&created[1], WriteOutcome::Rejected { property: Some(p), status, .. }
            if p == "marital_status" && *status == partial),
        "{:?}",
        created[1]
    );
    assert!(sim.contact_by_email("mala@coop.cr").is_none());
    all_on(&sim, version);
}

#[tokio::test]
async fn the_daily_reserve_stops_spending_before_hubspots_limit() {
    let sim = sim(SimOptions {
        daily_limit: Some(20),
        ..SimOptions::default()
    })
    .await;
    let ids = seed_emails(&sim, std::iter::once("d@coop.cr".to_owned()));
    let mut settings = settings(&sim, 100, TOKEN);
    settings.daily_reserve = 15;
    let client = client_with(&settings);
    let update = [UpdateInput {
        id: ids[0].clone(),
        properties: props(&[("city", "Liberia")]),
    }];
    let mut sent = 0;
    let err = loop {
        match client.batch_update("contacts", &update).await {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 20, "never stopped");
    };
    assert!(matches!(err, HubSpotError::Budget(_)), "{err:?}");
    assert!(err.to_string().contains("reserve is 15"), "{err}");
    assert_eq!(sent, 5, "spent down to the reserve, then stopped");
    assert_eq!(sim.stats().throttled_429, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_under_faults_and_lost_answers_never_duplicate() {
    let sim = sim(SimOptions {
        tier: FAST_TIER,
        seed: 5,
        ..SimOptions::default()
    })
    .await;
    sim.set_faults(Faults {
        error_rate: 0.2,
        lost_response_rate: 0.2,
        ..Faults::default()
    });
    let emails: Vec<String> = (0..500).map(|i| format!("alta{i}@coop.cr")).collect();
    let inputs: Vec<CreateInput> = emails
        .iter()
        .map(|e| CreateInput {
            properties: props(&[("email", e)]),
        })
        .collect();
    let client = client(&sim, FAST_TIER);
    let outcomes = client
        .batch_create("contacts", &inputs, Some("email"))
        .await
        .expect("create");
    assert!(sim.stats().faults_injected > 0);
    assert_eq!(
        sim.contacts().len(),
        500,
        "a retried create never duplicates"
    );
    for (email, outcome) in emails.iter().zip(&outcomes) {
        let id = outcome.linked_id().expect("linked");
        assert_eq!(
            sim.contact(id).expect("contact").get("email"),
            Some(email.as_str())
        );
    }
}

#[tokio::test]
async fn a_hanging_request_times_out_and_is_retried() {
    let sim = sim(SimOptions::default()).await;
    let ids = seed_emails(&sim, std::iter::once("t@coop.cr".to_owned()));
    sim.set_faults(Faults {
        timeout_next: 1,
        timeout_hang: Duration::from_secs(5),
        ..Faults::default()
    });
    let mut settings = settings(&sim, 100, TOKEN);
    settings.timeout = Duration::from_millis(300);
    let client = client_with(&settings);
    let outcomes = client
        .batch_update(
            "contacts",
            &[UpdateInput {
                id: ids[0].clone(),
                properties: props(&[("city", "Puntarenas")]),
            }],
        )
        .await
        .expect("update");
    assert!(outcomes[0].is_ok());
    assert_eq!(sim.stats().total_requests, 2);
    assert_eq!(
        sim.contact(&ids[0]).unwrap().get("city"),
        Some("Puntarenas")
    );
}

#[tokio::test]
async fn when_retries_run_out_every_input_is_left_transient() {
    let sim = sim(SimOptions::default()).await;
    let ids = seed_emails(&sim, (0..3).map(|i| format!("x{i}@coop.cr")));
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let mut settings = settings(&sim, 100, TOKEN);
    settings.max_retry_elapsed = Duration::from_millis(200);
    let client = client_with(&settings);
    let inputs: Vec<UpdateInput> = ids
        .iter()
        .map(|id| UpdateInput {
            id: id.clone(),
            properties: props(&[("city", "Nicoya")]),
        })
        .collect();
    let outcomes = client
        .batch_update("contacts", &inputs)
        .await
        .expect("outcomes");
    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        assert!(
            matches!(
                outcome,
                WriteOutcome::Transient {
                    status: Some(500..=599),
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    assert!(sim.stats().total_requests > 1, "retried before giving up");
}

#[test]
fn an_unknown_api_version_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(crate::support::example_config()).expect("example");
    assert!(example.contains("api_version: \"2026-09\""));
    let check = |version: &str| {
        let path = dir.path().join(format!("{version}.yaml"));
        let text = example.replace(
            "api_version: \"2026-09\"",
            &format!("api_version: {version}"),
        );
        std::fs::write(&path, text).expect("write config");
        let out = crate::support::hubsync(
            &["--config", &path.display().to_string(), "check-config"],
            &[
                ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
                ("HUBSYNC_DATABASE_URL", "postgres://localhost/hubsync"),
                ("SQL_SERVER", "server=tcp:localhost,1433;database=coop"),
            ],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with("hubspot.api_version"))
            .map(str::to_owned);
        (out.status.code(), line, err)
    };
    let (code, line, err) = check("2025-09");
    assert_eq!(code, Some(78), "{err}");
    let line = line.unwrap_or_else(|| panic!("hubspot.api_version not named:\n{err}"));
    assert!(
        line.contains("`2025-09`") && line.contains("2026-09, 2026-03, v3"),
        "{line}"
    );
    for accepted in ["v3", "2026-03", "'2026-09'"] {
        let (_, line, err) = check(accepted);
        assert_eq!(line, None, "{accepted}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_each_clash_between_the_mapping_and_the_portals_rules() {
    let sim = sim(SimOptions::default()).await;
    let http = reqwest::Client::new();
    for (property, rule, args) in [
        (
            "telefono_oficina",
            "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
            vec![],
        ),
        (
            "telefono_habitacion",
            "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
            vec![],
        ),
        ("firstname", "MAX_LENGTH", vec!["40"]),
    ] {
        let path = format!(
            "{}/crm/property-validations/2026-09/0-1/{property}/rule-type/{rule}",
            sim.base_url()
        );
        let put = http
            .put(path)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "ruleArguments": args }))
            .send()
            .await
            .expect("rule set");
        assert_eq!(put.status(), 204);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(crate::support::example_config()).expect("example");
    let office =
        "{ sql: telefono_oficina, hubspot: telefono_oficina, transform: [\"phone_cr:service\"]";
    assert!(example.contains(office));
    let text = example
        .replace("https://api.hubapi.com", &sim.base_url())
        .replace(office, "{ sql: telefono_oficina, hubspot: telefono_oficina, transform: [trim]")
        .replace(
            "    record_rules:\n",
            "    portal_required:\n      - { property: canton, when: { property: provincia, is: [Cartago] } }\n      - { property: hs_lead_status }\n    record_rules:\n",
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    let config = path.display().to_string();
    let env = [
        ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
        ("HUBSYNC_DATABASE_URL", "postgres://localhost/hubsync"),
        ("SQL_SERVER", "server=tcp:localhost,1433;database=coop"),
    ];
    let out = crate::support::hubsync(&["--config", &config, "check-config"], &env, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(
        has(
            "objects.contacts: property telefono_oficina (telefono_oficina): portal rule PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE"
        ),
        "{stdout}"
    );
    assert!(
        has(
            "property firstname (firstname): portal rule MAX_LENGTH: the mapping allows 100 characters, the portal 40"
        ),
        "{stdout}"
    );
    assert!(
        has("property canton (canton): the portal requires it when provincia"),
        "{stdout}"
    );
    assert!(
        has(
            "property hs_lead_status: the portal requires it on create but the mapping does not write it"
        ),
        "{stdout}"
    );
    // telefono_habitacion goes through phone_cr: +506… satisfies the rule, no clash.
    assert!(!has("telefono_habitacion"), "{stdout}");
    assert_eq!(warnings.len(), 4, "{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"));

    // --offline does not contact HubSpot.
    let before = sim.stats().total_requests;
    let out = crate::support::hubsync(
        &["--config", &config, "check-config", "--offline"],
        &env,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning:"));
    assert_eq!(sim.stats().total_requests, before);
}

#[tokio::test]
async fn a_redirect_is_a_setup_error_naming_the_status_and_never_a_rejected_record() {
    // A proxy (or a wrong base URL) answering every request with a redirect to a login page.
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async {
            (
                axum::http::StatusCode::MOVED_PERMANENTLY,
                [(
                    axum::http::header::LOCATION,
                    "https://proxy.example/login?next=%2Fcrm",
                )],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = client_with(&HubSpotSettings {
        base_url: format!("http://{addr}").parse().expect("url"),
        token: Some(SecretString::from(TOKEN)),
        max_retry_elapsed: Duration::from_secs(5),
        ..HubSpotSettings::default()
    });
    let err = client
        .batch_update(
            "contacts",
            &[UpdateInput {
                id: "1".into(),
                properties: props(&[("city", "Guápiles")]),
            }],
        )
        .await
        .expect_err("a redirect fails the call, not the record");
    assert!(
        matches!(err, HubSpotError::Redirected { status: 301, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("redirect (301 to https://proxy.example/login)")
            && text.contains("hubspot.base_url")
            && !text.contains("next="),
        "{text}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "not retried"
    );
    // The usage read says the same, and leaves the configured budget.
    assert!(matches!(
        client.read_usage().await,
        Err(HubSpotError::Redirected { status: 301, .. })
    ));
    assert_eq!(client.refresh_daily_budget().await, None);
}

#[tokio::test]
async fn an_upsert_that_may_have_landed_is_not_sent_again_but_a_refused_one_is() {
    let sim = sim(SimOptions::default()).await;
    let client = client(&sim, 100);
    // One upsert of a new member under `faults`: its outcome and the upsert requests so far.
    let upsert = async |email: &str, faults: Faults| {
        sim.set_faults(faults);
        let input = CreateInput {
            properties: props(&[("email", email), ("firstname", "Ana")]),
        };
        let outcomes = client
            .batch_upsert("contacts", "email", &[input])
            .await
            .expect("outcomes");
        let sent = sim
            .stats()
            .requests_by_endpoint
            .get("batch/upsert")
            .copied();
        (outcomes[0].clone(), sent.unwrap_or(0))
    };
    // The contact is made, but the answer never comes: sent once, left to the caller.
    let lost = Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    };
    let (outcome, sent) = upsert("perdida@coop.cr", lost).await;
    assert!(
        matches!(&outcome, WriteOutcome::Transient { message, .. }
            if message.contains("not sent again")),
        "{outcome:?}"
    );
    assert_eq!(sent, 1, "not repeated");
    assert_eq!(sim.contacts().len(), 1, "it landed");
    // A 5xx may have done the work too (this one did not): not repeated either.
    let failing = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    let (outcome, sent) = upsert("caida@coop.cr", failing).await;
    assert!(
        matches!(
            &outcome,
            WriteOutcome::Transient {
                status: Some(500..=599),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(sent, 2);
    // A 429 says nothing was done: waited out and sent again.
    let throttled = Faults {
        burst_429: 1,
        ..Faults::default()
    };
    let (outcome, sent) = upsert("espera@coop.cr", throttled).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(sent, 4, "the refused try and the one after it");
    assert_eq!(sim.contacts().len(), 2);
}
