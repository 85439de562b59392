//! HubSpot simulator conformance: each documented HubSpot behaviour the simulator promises,
//! checked over HTTP with reqwest against an in-process server on a free port.

use std::collections::BTreeMap;
use std::time::Duration;

use hubsync::sim::hubspot::{Faults, RunningSim, SimOptions, start};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

pub(crate) const TOKEN: &str = "sim-token";

pub(crate) struct Sim {
    pub(crate) sim: RunningSim,
    pub(crate) http: reqwest::Client,
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

pub(crate) async fn sim_with(options: SimOptions) -> Sim {
    let sim = start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Sim { sim, http }
}

pub(crate) async fn sim() -> Sim {
    sim_with(SimOptions::default()).await
}

impl Sim {
    pub(crate) async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<Answer> {
        let url = format!("{}{path}", self.sim.base_url());
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.send_as(TOKEN, Method::POST, path, Some(body))
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send_as(TOKEN, Method::GET, path, None).await.unwrap()
    }

    pub(crate) async fn create(&self, inputs: Value) -> Answer {
        self.post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": inputs}),
        )
        .await
    }

    pub(crate) fn seed(&self, records: &[&[(&str, &str)]]) -> Vec<String> {
        let records: Vec<BTreeMap<String, Option<String>>> = records
            .iter()
            .map(|r| {
                r.iter()
                    .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                    .collect()
            })
            .collect();
        self.sim.seed_contacts(&records).unwrap()
    }
}

fn header(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn emails(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"properties": {"email": format!("{prefix}{i}@coop.cr")}}))
        .collect()
}

#[tokio::test]
async fn a_wrong_or_missing_token_gets_401_and_a_missing_scope_403() {
    let s = sim().await;
    let wrong = s
        .send_as(
            "pat-na1-wrong",
            Method::GET,
            "/crm/v3/properties/contacts",
            None,
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["category"], "INVALID_AUTHENTICATION");
    assert_eq!(wrong.body["status"], "error");
    assert!(
        wrong.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Authentication credentials not found")
    );
    assert_eq!(
        header(&wrong, "x-hubspot-auth-failure").as_deref(),
        Some("401 Unauthorized")
    );
    let url = format!("{}/crm/v3/objects/contacts", s.sim.base_url());
    let missing = s.http.get(url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let ok = s.get("/crm/v3/properties/contacts").await;
    assert_eq!(ok.status, StatusCode::OK);
    s.sim.set_faults(Faults {
        missing_write_scope: true,
        ..Faults::default()
    });
    let denied = s.create(Value::Array(emails(1, "scope"))).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body["category"], "MISSING_SCOPES");
    assert_eq!(
        denied.body["errors"][0]["context"]["requiredGranularScopes"][0],
        "crm.objects.contacts.write"
    );
    assert_eq!(
        s.get("/crm/v3/objects/contacts").await.status,
        StatusCode::OK,
        "reads keep working"
    );
}

#[tokio::test]
async fn a_batch_of_more_than_100_inputs_is_refused_with_400() {
    let s = sim().await;
    let too_many = s.create(Value::Array(emails(101, "a"))).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.body["category"], "VALIDATION_ERROR");
    assert_eq!(s.sim.stats().contacts, 0);
    let ids: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let read = s
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": ids}),
        )
        .await;
    assert_eq!(read.status, StatusCode::BAD_REQUEST);
    let hundred = s.create(Value::Array(emails(100, "b"))).await;
    assert_eq!(hundred.status, StatusCode::CREATED);
    assert_eq!(hundred.body["results"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn one_bad_input_without_trace_ids_fails_the_whole_batch() {
    let s = sim().await;
    let answer = s
        .create(json!([
            {"properties": {"email": "ana@coop.cr"}},
            {"properties": {"email": "luis@coop.cr", "marital_status": "casado"}}
        ]))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["category"], "VALIDATION_ERROR");
    assert!(answer.body.get("objectWriteTraceId").is_none());
    assert_eq!(
        answer.body["errors"][0]["context"]["propertyName"][0],
        "marital_status"
    );
    assert!(s.sim.contacts().is_empty(), "nothing may be written");
}

#[tokio::test]
async fn trace_ids_turn_a_bad_input_into_a_207_entry_and_apply_the_good_ones() {
    let s = sim().await;
    let answer = s
        .create(json!([
            {"properties": {"email": "ana@coop.cr"}, "objectWriteTraceId": "row-1"},
            {"properties": {"email": "bad@"}, "objectWriteTraceId": "row-2"},
            {"properties": {"email": "eva@coop.cr"}, "objectWriteTraceId": "row-3"}
        ]))
        .await;
    assert_eq!(answer.status, StatusCode::MULTI_STATUS);
    assert_eq!(answer.body["numErrors"], 1);
    let error = &answer.body["errors"][0];
    assert_eq!(error["context"]["objectWriteTraceId"][0], "row-2");
    assert_eq!(error["errors"][0]["code"], "INVALID_EMAIL");
    let mut traced: Vec<&str> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["objectWriteTraceId"].as_str().unwrap())
        .collect();
    traced.sort_unstable();
    assert_eq!(traced, ["row-1", "row-3"]);
    assert_eq!(s.sim.contacts().len(), 2);
}

#[tokio::test]
async fn validation_errors_carry_hubspots_codes_and_property_names() {
    let s = sim().await;
    let cases = [
        ("favorite_food", "pizza", "PROPERTY_DOESNT_EXIST"),
        ("createdate", "2024-01-01", "READ_ONLY_VALUE"),
        ("email", "ana.coop.cr", "INVALID_EMAIL"),
        ("marital_status", "soltero", "INVALID_OPTION"),
        (
            "salario_neto_semanal_o_quincenal",
            "450 000",
            "INVALID_INTEGER",
        ),
        ("date_of_birth", "1635535865", "INVALID_DATE"),
        ("date_of_birth", "1980-13-01", "INVALID_DATE"),
    ];
    for (name, value, code) in cases {
        let answer = s.create(json!([{"properties": {name: value}}])).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}={value}");
        let message = answer.body["message"].as_str().unwrap();
        let details: Value = serde_json::from_str(
            message
                .strip_prefix("Property values were not valid: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(details[0]["error"], code, "{name}={value}");
        assert_eq!(details[0]["name"], name);
        assert_eq!(answer.body["errors"][0]["code"], code);
    }
    let midnight = s
        .create(json!([{"properties": {"date_of_birth": "320716800000",
        "marital_status": "Unión Libre", "salario_neto_semanal_o_quincenal": "450000.50"}}]))
        .await;
    assert_eq!(midnight.status, StatusCode::CREATED);
    assert_eq!(
        midnight.body["results"][0]["properties"]["date_of_birth"],
        "1980-03-01"
    );
}

#[tokio::test]
async fn creating_an_existing_email_fails_the_batch_with_409_naming_the_id() {
    let s = sim().await;
    let ids = s.seed(&[&[("email", "ana.mora@coop.cr")]]);
    let answer = s
        .create(json!([
            {"properties": {"email": "nuevo@coop.cr"}, "objectWriteTraceId": "t1"},
            {"properties": {"email": "Ana.Mora@COOP.cr"}, "objectWriteTraceId": "t2"}
        ]))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.body["category"], "CONFLICT");
    assert_eq!(
        answer.body["message"],
        format!("Contact already exists. Existing ID: {}", ids[0])
    );
    assert!(
        s.sim.contact_by_email("nuevo@coop.cr").is_none(),
        "the whole batch fails"
    );
}

#[tokio::test]
async fn emails_are_stored_lowercased_and_batch_read_finds_them_by_email_or_unique_property() {
    let s = sim().await;
    let created = s
        .create(
            json!([{"properties": {"email": "Maria.Solis@Coop.CR", "numero_asociado": "A-77"}}]),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        created.body["results"][0]["properties"]["email"],
        "maria.solis@coop.cr"
    );
    assert_eq!(
        s.sim.contact(&id).unwrap().get("email"),
        Some("maria.solis@coop.cr")
    );
    let by_email = s
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "email",
            "inputs": [{"id": "MARIA.solis@coop.cr"}], "properties": ["firstname"]}),
        )
        .await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert_eq!(by_email.body["results"][0]["id"], id.as_str());
    assert_eq!(
        by_email.body["results"][0]["properties"]["email"],
        "maria.solis@coop.cr"
    );
    assert_eq!(
        by_email.body["results"][0]["properties"]["firstname"],
        Value::Null
    );
    let by_numero = s
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "numero_asociado",
            "inputs": [{"id": "A-77"}, {"id": "A-78"}]}),
        )
        .await;
    assert_eq!(by_numero.status, StatusCode::MULTI_STATUS);
    assert_eq!(by_numero.body["results"][0]["id"], id.as_str());
    assert_eq!(by_numero.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(by_numero.body["errors"][0]["context"]["ids"][0], "A-78");
    let non_unique = s
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "firstname", "inputs": [{"id": "x"}]}),
        )
        .await;
    assert_eq!(non_unique.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn results_come_back_out_of_input_order_deterministically_per_seed() {
    async fn order(seed: u64) -> Vec<String> {
        let s = sim_with(SimOptions {
            seed,
            ..SimOptions::default()
        })
        .await;
        let answer = s.create(Value::Array(emails(20, "o"))).await;
        answer.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["properties"]["email"].as_str().unwrap().to_owned())
            .collect()
    }
    let first = order(42).await;
    let inputs: Vec<String> = (0..20).map(|i| format!("o{i}@coop.cr")).collect();
    assert_ne!(first, inputs);
    let mut sorted = first.clone();
    sorted.sort_by_key(|e| {
        e.trim_start_matches('o')
            .trim_end_matches("@coop.cr")
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(sorted, inputs, "every input comes back once");
    assert_eq!(order(42).await, first, "same seed, same order");
}

#[tokio::test]
async fn updates_bump_lastmodifieddate_and_report_missing_and_duplicate_ids() {
    let s = sim().await;
    let ids = s.seed(&[&[
        ("email", "a@coop.cr"),
        ("lastmodifieddate", "2024-01-01T00:00:00Z"),
    ]]);
    let before = s.sim.contact(&ids[0]).unwrap();
    assert_eq!(
        before.get("lastmodifieddate"),
        Some("2024-01-01T00:00:00.000Z")
    );
    let answer = s
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [
            {"id": ids[0], "properties": {"firstname": "Ana"}, "objectWriteTraceId": "u1"},
            {"id": "999999", "properties": {"firstname": "X"}, "objectWriteTraceId": "u2"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::MULTI_STATUS);
    assert_eq!(answer.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        answer.body["errors"][0]["context"]["objectWriteTraceId"][0],
        "u2"
    );
    let after = s.sim.contact(&ids[0]).unwrap();
    assert_eq!(after.get("firstname"), Some("Ana"));
    assert!(after.updated_ms > before.updated_ms);
    assert_eq!(
        after.get("lastmodifieddate"),
        after.get("hs_lastmodifieddate")
    );
    assert_eq!(
        answer.body["results"][0]["properties"]["lastmodifieddate"],
        after.get("lastmodifieddate").unwrap()
    );
    let duplicate = s
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [
            {"id": ids[0], "properties": {}}, {"id": ids[0], "properties": {}}]}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    assert!(
        duplicate.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Duplicate IDs found in batch input")
    );
}

#[tokio::test]
async fn archived_contacts_leave_reads_and_search_and_list_with_archived_true() {
    let s = sim().await;
    let ids = s.seed(&[
        &[("email", "a@coop.cr")],
        &[("email", "b@coop.cr")],
        &[("email", "c@coop.cr")],
    ]);
    let archive = s
        .post(
            "/crm/v3/objects/contacts/batch/archive",
            json!({"inputs": [{"id": ids[1]}]}),
        )
        .await;
    assert_eq!(archive.status, StatusCode::NO_CONTENT);
    let page1 = s
        .get("/crm/v3/objects/contacts?limit=1&properties=email")
        .await;
    assert_eq!(page1.body["results"][0]["properties"]["email"], "a@coop.cr");
    let after = page1.body["paging"]["next"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    let page2 = s
        .get(&format!(
            "/crm/v3/objects/contacts?limit=1&after={after}&properties=email"
        ))
        .await;
    assert_eq!(page2.body["results"][0]["properties"]["email"], "c@coop.cr");
    assert!(page2.body.get("paging").is_none());
    let archived = s.get("/crm/v3/objects/contacts?archived=true").await;
    assert_eq!(archived.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(archived.body["results"][0]["id"], ids[1].as_str());
    assert!(archived.body["results"][0]["archivedAt"].is_string());
    assert_eq!(
        s.get(&format!("/crm/v3/objects/contacts/{}", ids[1]))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let one = s
        .get(&format!(
            "/crm/v3/objects/contacts/{}?properties=email",
            ids[0]
        ))
        .await;
    assert_eq!(one.body["properties"]["email"], "a@coop.cr");
    let search = s.post("/crm/v3/objects/contacts/search", json!({})).await;
    assert_eq!(search.body["total"], 2);
}

#[tokio::test]
async fn search_filters_sorts_pages_and_refuses_paging_past_10000() {
    let s = sim().await;
    let records: Vec<BTreeMap<String, Option<String>>> = (0..10_050)
        .map(|i| {
            [
                ("email".to_owned(), Some(format!("s{i}@coop.cr"))),
                (
                    "lastmodifieddate".to_owned(),
                    Some("2026-11-20T10:00:00.000Z".to_owned()),
                ),
                (
                    "provincia".to_owned(),
                    Some(if i % 2 == 0 { "San José" } else { "Heredia" }.to_owned()),
                ),
            ]
            .into()
        })
        .collect();
    let ids = s.sim.seed_contacts(&records).unwrap();
    let filters = json!([{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1763632800000"},
        {"propertyName": "hs_object_id", "operator": "GTE", "value": "0"}]}]);
    let page = |after: &str, limit: u32| {
        json!({"filterGroups": filters, "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
               "properties": ["email"], "limit": limit, "after": after})
    };
    let first = s
        .post("/crm/v3/objects/contacts/search", page("0", 200))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["total"], 10_050);
    assert_eq!(first.body["results"][0]["id"], ids[0].as_str());
    assert_eq!(first.body["paging"]["next"]["after"], "200");
    assert!(
        header(&first, "x-hubspot-ratelimit-max").is_none(),
        "search carries no rate-limit headers"
    );
    let last = s
        .post("/crm/v3/objects/contacts/search", page("9800", 200))
        .await;
    assert_eq!(last.body["results"][199]["id"], ids[9_999].as_str());
    assert_eq!(last.body["paging"]["next"]["after"], "10000");
    let past = s
        .post("/crm/v3/objects/contacts/search", page("10000", 200))
        .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST);
    let too_big = s
        .post("/crm/v3/objects/contacts/search", page("0", 201))
        .await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    let by_in = s
        .post("/crm/v3/objects/contacts/search", json!({"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "IN", "values": ["s1@coop.cr", "s2@coop.cr", "s9@coop.cr"]},
            {"propertyName": "provincia", "operator": "EQ", "value": "heredia"}]}],
            "sorts": [{"propertyName": "email", "direction": "DESCENDING"}]}))
        .await;
    let found: Vec<&str> = by_in.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["properties"]["email"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["s9@coop.cr", "s1@coop.cr"]);
}

#[tokio::test]
async fn search_is_limited_to_5_per_second_without_headers() {
    let s = sim().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = s
            .post("/crm/v3/objects/contacts/search", json!({"limit": 1}))
            .await;
        statuses.push(answer.status);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                answer.body["message"],
                "You have reached your secondly limit."
            );
            assert_eq!(answer.body["errorType"], "RATE_LIMIT");
            assert!(header(&answer, "x-hubspot-ratelimit-remaining").is_none());
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        s.sim.stats().max_requests_in_10s_window,
        0,
        "search is outside the 10 s window"
    );
}

#[tokio::test]
async fn the_101st_request_in_10_seconds_gets_429_with_headers_and_policy_name() {
    let s = sim().await;
    let first = s.get("/crm/v3/properties/contacts").await;
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-max").as_deref(),
        Some("100")
    );
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("99")
    );
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
        Some("10000")
    );
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-daily").as_deref(),
        Some("250000")
    );
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-daily-remaining").as_deref(),
        Some("249999")
    );
    for _ in 1..100 {
        assert_eq!(
            s.get("/crm/v3/objects/contacts?limit=1").await.status,
            StatusCode::OK
        );
    }
    let limited = s.get("/crm/v3/objects/contacts?limit=1").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        limited.body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(limited.body["errorType"], "RATE_LIMIT");
    assert_eq!(
        header(&limited, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let stats = s.sim.stats();
    assert_eq!(stats.throttled_429, 1);
    assert_eq!(stats.max_requests_in_10s_window, 101);
}

#[tokio::test]
async fn the_daily_limit_answers_429_daily() {
    let s = sim_with(SimOptions {
        daily_limit: Some(3),
        tier: 190,
        ..SimOptions::default()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let answer = s.get("/crm/v3/properties/contacts").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            header(&answer, "x-hubspot-ratelimit-daily-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(
            header(&answer, "x-hubspot-ratelimit-max").as_deref(),
            Some("190")
        );
    }
    let over = s.get("/crm/v3/properties/contacts").await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.body["policyName"], "DAILY");
    assert_eq!(over.body["message"], "You have reached your daily limit.");
}

#[tokio::test]
async fn the_usage_endpoint_counts_every_app_and_the_day_resets_at_resets_at() {
    let s = sim_with(SimOptions {
        daily_limit: Some(10),
        other_apps_usage: 4,
        time_zone: chrono_tz::America::Costa_Rica,
        ..SimOptions::default()
    })
    .await;
    let paths = [
        "/account-info/v3/api-usage/daily/private-apps",
        "/account-info/2026-03/api-usage/daily/private-apps",
        "/account-info/2026-09/api-usage/daily/private-apps",
    ];
    let unauthorized = s
        .send_as("wrong", Method::GET, paths[0], None)
        .await
        .unwrap();
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    for (n, path) in paths.iter().enumerate() {
        let answer = s.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let entry = &answer.body["results"][0];
        assert_eq!(entry["name"], "private-apps-api-calls-daily");
        assert_eq!(entry["usageLimit"], 10);
        assert_eq!(entry["fetchStatus"], "SUCCESS");
        // Other apps' 4, and each read counts as a request like any other.
        let used = 4 + n as u64 + 1;
        assert_eq!(entry["currentUsage"], used, "{path}");
        assert_eq!(
            header(&answer, "x-hubspot-ratelimit-daily-remaining"),
            Some((10 - used).to_string()),
            "the headers agree with the endpoint"
        );
        let resets: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(entry["resetsAt"].clone()).unwrap();
        let local = resets.with_timezone(&chrono_tz::America::Costa_Rica);
        assert_eq!(
            local.time(),
            chrono::NaiveTime::MIN,
            "midnight in the account's zone"
        );
        assert!(resets > chrono::Utc::now());
    }
    let stats = s.sim.stats();
    assert_eq!(
        stats.requests_by_endpoint.get("account-info/usage"),
        Some(&4)
    );
    assert_eq!(
        stats.requests_by_version.keys().collect::<Vec<_>>(),
        ["2026-03", "2026-09", "v3"]
    );

    // Another app spends the rest of the day over the admin API: the limit answers 429 DAILY.
    let spent = s.post("/_sim/usage", json!({"other_apps": 3})).await;
    assert_eq!(spent.status, StatusCode::OK);
    assert_eq!(spent.body["current_usage"], 10);
    assert_eq!(spent.body["other_apps"], 7);
    let over = s.get(paths[2]).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.body["policyName"], "DAILY");

    // The reset: at `resetsAt` a new day starts from zero, and the next reset is midnight again.
    let moved = s.post("/_sim/usage", json!({"resets_in": "0s"})).await;
    assert_eq!(moved.body["current_usage"], 0, "{:?}", moved.body);
    let fresh = s.get(paths[2]).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.body["results"][0]["currentUsage"], 1);
    let usage = s.sim.usage();
    assert_eq!((usage.own, usage.other_apps), (1, 0));
    assert_eq!(usage.time_zone, "America/Costa_Rica");
    assert_eq!(
        usage
            .resets_at
            .with_timezone(&chrono_tz::America::Costa_Rica)
            .time(),
        chrono::NaiveTime::MIN
    );
    let over_http = s.get("/_sim/usage").await;
    assert_eq!(
        serde_json::from_value::<hubsync::sim::hubspot::SimUsage>(over_http.body).unwrap(),
        usage
    );
}

#[tokio::test]
async fn a_refused_usage_endpoint_answers_as_hubspot_would() {
    let s = sim().await;
    let path = "/account-info/2026-09/api-usage/daily/private-apps";
    for (status, category) in [(403, "MISSING_SCOPES"), (404, "OBJECT_NOT_FOUND")] {
        s.sim.set_faults(Faults {
            usage_refused: Some(status),
            ..Faults::default()
        });
        let answer = s.get(path).await;
        assert_eq!(answer.status.as_u16(), status);
        assert_eq!(answer.body["category"], category);
        // Other endpoints are not affected.
        assert_eq!(
            s.get("/crm/v3/properties/contacts").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        s.get(path).await.body["errors"][0]["context"]["requiredGranularScopes"],
        serde_json::Value::Null,
        "404 carries no scope"
    );
    s.sim.set_faults(Faults {
        usage_refused: Some(403),
        ..Faults::default()
    });
    assert_eq!(
        s.get(path).await.body["errors"][0]["context"]["requiredGranularScopes"][0],
        "oauth"
    );
}

#[tokio::test]
async fn stats_count_endpoints_429s_and_the_busiest_window_same_over_http() {
    let s = sim().await;
    s.create(Value::Array(emails(3, "w"))).await;
    for _ in 0..4 {
        s.post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"inputs": [{"id": "1"}]}),
        )
        .await;
    }
    s.post("/crm/v3/objects/contacts/search", json!({})).await;
    s.send_as("wrong", Method::GET, "/crm/v3/properties/contacts", None)
        .await
        .unwrap();
    let stats = s.sim.stats();
    assert_eq!(stats.requests_by_endpoint.get("batch/create"), Some(&1));
    assert_eq!(stats.requests_by_endpoint.get("batch/read"), Some(&4));
    assert_eq!(stats.requests_by_endpoint.get("search"), Some(&1));
    assert_eq!(stats.total_requests, 7);
    assert_eq!(
        stats.max_requests_in_10s_window, 6,
        "every non-search request, whatever its answer"
    );
    assert_eq!(stats.throttled_429, 0);
    assert_eq!(stats.contacts, 3);
    let over_http: hubsync::sim::hubspot::SimStats =
        serde_json::from_value(s.get("/_sim/stats").await.body).unwrap();
    assert_eq!(over_http, stats);
    let reset = s.post("/_sim/reset", json!({})).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert_eq!(s.sim.stats(), hubsync::sim::hubspot::SimStats::default());
}

#[tokio::test]
async fn injected_5xx_and_429_bursts_do_no_work() {
    let s = sim().await;
    s.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let failed = s.create(Value::Array(emails(2, "f"))).await;
    assert!(
        [500, 502, 503, 504].contains(&failed.status.as_u16()),
        "{}",
        failed.status
    );
    assert!(s.sim.contacts().is_empty());
    s.sim.set_faults(Faults {
        error_rate: 1.0,
        error_statuses: vec![477],
        ..Faults::default()
    });
    let migrating = s.get("/crm/v3/properties/contacts").await;
    assert_eq!(migrating.status.as_u16(), 477);
    assert_eq!(header(&migrating, "retry-after").as_deref(), Some("1"));
    let set = s.post("/_sim/faults", json!({"burst_429": 2})).await;
    assert_eq!(set.status, StatusCode::OK);
    for _ in 0..2 {
        let burst = s.create(Value::Array(emails(2, "f"))).await;
        assert_eq!(burst.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(burst.body["policyName"], "TEN_SECONDLY_ROLLING");
    }
    assert_eq!(
        s.create(Value::Array(emails(2, "f"))).await.status,
        StatusCode::CREATED
    );
    let stats = s.sim.stats();
    assert_eq!(stats.throttled_429, 2);
    assert_eq!(stats.faults_injected, 4);
    assert_eq!(stats.contacts, 2);
}

#[tokio::test]
async fn dropped_connections_and_lost_responses_give_no_answer_on_writes_only_if_asked() {
    let s = sim().await;
    s.sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let url = "/crm/v3/objects/contacts/batch/create";
    let dropped = s
        .send_as(
            TOKEN,
            Method::POST,
            url,
            Some(json!({"inputs": emails(1, "d")})),
        )
        .await;
    assert!(
        dropped.is_err(),
        "a dropped connection yields no HTTP answer"
    );
    assert!(s.sim.contacts().is_empty(), "dropped before any work");
    s.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        ..Faults::default()
    });
    let lost = s
        .send_as(
            TOKEN,
            Method::POST,
            url,
            Some(json!({"inputs": emails(1, "d")})),
        )
        .await;
    assert!(lost.is_err());
    assert!(
        s.sim.contact_by_email("d0@coop.cr").is_some(),
        "the work was done, only the answer lost"
    );
    // Faults on writes only: a read is answered, a write's answer is still lost.
    s.sim.set_faults(Faults {
        lost_response_rate: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let read = s
        .send_as(
            TOKEN,
            Method::POST,
            "/crm/v3/objects/contacts/batch/read",
            Some(
                json!({"inputs": [{"id": "d0@coop.cr"}], "idProperty": "email",
                        "properties": ["email"]}),
            ),
        )
        .await
        .expect("a read is answered");
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let lost = s
        .send_as(
            TOKEN,
            Method::POST,
            url,
            Some(json!({"inputs": emails(1, "e")})),
        )
        .await;
    assert!(lost.is_err(), "a write's answer is lost");
    assert!(s.sim.contact_by_email("e0@coop.cr").is_some());
}

#[tokio::test]
async fn a_hanging_request_times_out_the_client_and_latency_is_added() {
    let s = sim().await;
    s.sim.set_faults(Faults {
        timeout_next: 1,
        ..Faults::default()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/crm/v3/properties/contacts", s.sim.base_url());
    let timed_out = client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    assert!(timed_out.is_timeout());
    s.sim.set_faults(Faults {
        latency: Duration::from_millis(400),
        ..Faults::default()
    });
    let slow = client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    assert!(
        slow.is_timeout(),
        "400 ms of latency exceeds a 300 ms timeout"
    );
    s.sim.set_faults(Faults::default());
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn index_lag_hides_new_writes_from_search_but_not_from_reads() {
    let s = sim_with(SimOptions {
        index_lag: Duration::from_secs(3600),
        ..SimOptions::default()
    })
    .await;
    let created = s.create(Value::Array(emails(1, "lag"))).await;
    let id = created.body["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.get(&format!("/crm/v3/objects/contacts/{id}"))
            .await
            .status,
        StatusCode::OK
    );
    let search = s.post("/crm/v3/objects/contacts/search", json!({})).await;
    assert_eq!(search.body["total"], 0);
}

#[tokio::test]
async fn seeding_and_inspection_over_the_admin_api() {
    let s = sim().await;
    let seeded = s
        .post(
            "/_sim/contacts",
            json!({"contacts": [{"email": "X@Coop.cr", "firstname": "Xinia"}]}),
        )
        .await;
    assert_eq!(seeded.status, StatusCode::CREATED);
    let id = seeded.body["ids"][0].as_str().unwrap().to_owned();
    let one = s.get(&format!("/_sim/contacts/{id}")).await;
    assert_eq!(one.body["properties"]["email"], "x@coop.cr");
    let all = s.get("/_sim/contacts").await;
    assert_eq!(all.body.as_array().unwrap().len(), 1);
    let by_email = s.get("/_sim/contacts?email=X%40COOP.cr").await;
    assert_eq!(by_email.body[0]["id"], id.parse::<u64>().unwrap());
    assert_eq!(
        s.get("/_sim/contacts?email=nobody%40coop.cr").await.body,
        json!([])
    );
    let bad = s
        .post(
            "/_sim/contacts",
            json!({"contacts": [{"email": "ok@coop.cr"}, {"marital_status": "casado"}]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let message = bad.body["message"].as_str().unwrap();
    assert!(
        message.contains("#1")
            && message.contains("marital_status")
            && message.contains("INVALID_OPTION"),
        "{message}"
    );
    assert_eq!(s.sim.contacts().len(), 1, "a bad seed adds nothing");
}

#[test]
fn the_cli_prints_its_base_url_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let process = crate::support::Process::start(
        &[
            "sim",
            "hubspot",
            "--listen",
            "127.0.0.1:0",
            "--tier",
            "190",
            "--seed",
            "3",
        ],
        &[],
        cwd.path(),
    );
    let base = process
        .first_line(Duration::from_secs(30))
        .trim()
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{base}/crm/v3/properties/contacts"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-hubspot-ratelimit-max"], "190");
        response.status()
    });
    assert_eq!(status, StatusCode::OK);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(process.wait().0, Some(0));
}

#[tokio::test]
async fn upsert_by_email_updates_the_holder_or_creates_and_says_which() {
    let s = sim().await;
    let ids = s.seed(&[&[("email", "ana@coop.cr"), ("firstname", "Ana")]]);
    let answer = s
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [
            {"id": "ANA@coop.cr", "idProperty": "email", "properties": {"lastname": "Mora"}},
            {"id": "Luis@Coop.cr", "idProperty": "email", "properties": {"firstname": "Luis"}}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let results = answer.body["results"].as_array().unwrap();
    let ana = results.iter().find(|r| r["id"] == ids[0].as_str()).unwrap();
    assert_eq!(ana["new"], false);
    assert_eq!(ana["properties"]["lastname"], "Mora");
    let luis = results.iter().find(|r| r["id"] != ids[0].as_str()).unwrap();
    assert_eq!(luis["new"], true);
    assert_eq!(luis["properties"]["email"], "luis@coop.cr");
    assert_eq!(s.sim.stats().contacts, 2);
    let no_key = s
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"id": "x", "properties": {}}]}),
        )
        .await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn property_definitions_describe_types_options_and_writability() {
    let s = sim().await;
    let all = s.get("/crm/v3/properties/contacts").await;
    let results = all.body["results"].as_array().unwrap();
    let find = |name: &str| results.iter().find(|p| p["name"] == name).unwrap().clone();
    let marital = find("marital_status");
    assert_eq!(marital["type"], "enumeration");
    let labels: Vec<&str> = marital["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["Soltero", "Casado", "Divorciado", "Viudo", "Unión Libre"]
    );
    assert_eq!(find("date_of_birth")["type"], "date");
    assert_eq!(find("porcentaje__beneficiario_5_")["type"], "number");
    assert_eq!(
        find("lastmodifieddate")["modificationMetadata"]["readOnlyValue"],
        true
    );
    assert_eq!(find("numero_asociado")["hasUniqueValue"], true);
    let one = s
        .get("/crm/v3/properties/contacts/frecuencia_deposito_de_su_salario")
        .await;
    assert_eq!(one.body["options"].as_array().unwrap().len(), 4);
    assert_eq!(
        s.get("/crm/v3/properties/contacts/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let ids = s.seed(&[&[
        ("email", "p@coop.cr"),
        ("firstname", "Pia"),
        ("provincia", "Limón"),
    ]]);
    let repeated = s
        .get(&format!(
            "/crm/v3/objects/contacts/{}?properties=firstname&properties=provincia",
            ids[0]
        ))
        .await;
    assert_eq!(repeated.body["properties"]["firstname"], "Pia");
    assert_eq!(repeated.body["properties"]["provincia"], "Limón");
}

#[tokio::test]
async fn concurrent_clients_share_one_window_and_stats_see_every_request() {
    let s = std::sync::Arc::new(sim().await);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(s.get("/crm/v3/objects/contacts?limit=1").await.status);
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (100, 20));
    let stats = s.sim.stats();
    assert_eq!(stats.max_requests_in_10s_window, 120);
    assert_eq!(stats.throttled_429, 20);
    assert_eq!(stats.requests_by_endpoint.get("list"), Some(&120));
}

#[tokio::test]
async fn every_api_version_serves_its_paths_with_its_shapes_and_unknown_ones_404() {
    // (version, objects path, properties path, status of a partial create / update / read)
    let versions = [
        (
            "v3",
            "/crm/v3/objects/contacts",
            "/crm/v3/properties/contacts",
            [207, 207, 207],
        ),
        (
            "2026-03",
            "/crm/objects/2026-03/contacts",
            "/crm/properties/2026-03/0-1",
            [207, 207, 207],
        ),
        (
            "2026-09",
            "/crm/objects/2026-09/0-1",
            "/crm/properties/2026-09/contacts",
            [201, 200, 200],
        ),
    ];
    for (version, objects, properties, [create, update, read]) in versions {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "a@coop.cr")], &[("email", "b@coop.cr")]]);
        assert_eq!(s.get(properties).await.status, StatusCode::OK, "{version}");
        let created = s
            .post(
                &format!("{objects}/batch/create"),
                json!({"inputs": [
                    {"properties": {"email": "c@coop.cr"}, "objectWriteTraceId": "t1"},
                    {"properties": {"email": "d@coop.cr", "marital_status": "x"},
                     "objectWriteTraceId": "t2"}]}),
            )
            .await;
        let updated = s
            .post(
                &format!("{objects}/batch/update"),
                json!({"inputs": [
                    {"id": ids[0], "properties": {"city": "Cartago"}, "objectWriteTraceId": "u1"},
                    {"id": "999999", "properties": {"city": "Cartago"}, "objectWriteTraceId": "u2"}]}),
            )
            .await;
        let read_back = s
            .post(
                &format!("{objects}/batch/read"),
                json!({"inputs": [{"id": ids[1]}, {"id": "999999"}]}),
            )
            .await;
        for (what, answer, status, results) in [
            ("create", &created, create, 1),
            ("update", &updated, update, 1),
            ("read", &read_back, read, 1),
        ] {
            assert_eq!(answer.status.as_u16(), status, "{version} {what}");
            assert_eq!(answer.body["numErrors"], 1, "{version} {what}");
            assert_eq!(answer.body["errors"].as_array().unwrap().len(), 1);
            assert_eq!(answer.body["results"].as_array().unwrap().len(), results);
        }
        assert_eq!(
            created.body["errors"][0]["context"]["objectWriteTraceId"][0],
            "t2"
        );
        assert_eq!(updated.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
        // A batch without errors keeps its success status and has no error fields.
        let clean = s
            .post(
                &format!("{objects}/batch/read"),
                json!({"inputs": [{"id": ids[1]}]}),
            )
            .await;
        assert_eq!(clean.status, StatusCode::OK, "{version}");
        assert!(clean.body.get("numErrors").is_none() && clean.body.get("errors").is_none());
        let page = s.get(&format!("{objects}?limit=1")).await;
        let link = page.body["paging"]["next"]["link"].as_str().unwrap();
        assert!(
            link.starts_with(&format!("{}{objects}?", s.sim.base_url())),
            "{version}: {link}"
        );
        let search = s.post(&format!("{objects}/search"), json!({})).await;
        assert_eq!(search.body["total"], 3, "{version}");
        assert_eq!(
            s.sim.stats().requests_by_version.keys().collect::<Vec<_>>(),
            [version]
        );
    }
    let s = sim().await;
    for unknown in [
        "/crm/objects/2025-09/contacts/search",
        "/crm/objects/2027-03/contacts/batch/create",
        "/crm/v4/objects/contacts/batch/create",
        "/crm/v2026-09/objects/contacts/search",
    ] {
        let answer = s.post(unknown, json!({"inputs": []})).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{unknown}");
    }
    assert_eq!(
        s.get("/crm/properties/2025-09/contacts").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.sim.stats().total_requests,
        0,
        "unknown paths are not API requests"
    );
}
