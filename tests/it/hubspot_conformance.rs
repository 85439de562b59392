//! HubSpot simulator conformance against HubSpot's OpenAPI specs, its reference and the official
//! Python SDK: one test per behaviour where the simulator once was more lenient (or stricter)
//! than HubSpot. Each runs on the `v3` paths and, where the behaviour is not version-specific,
//! on `2026-09` too.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::hubspot_sim::{Sim, sim};

/// The object path prefixes of the versions each test runs on.
const OBJECTS: [&str; 2] = ["/crm/v3/objects/contacts", "/crm/objects/2026-09/contacts"];

fn total(answer: &crate::hubspot_sim::Answer) -> u64 {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["total"].as_u64().unwrap()
}

async fn search(s: &Sim, objects: &str, body: Value) -> crate::hubspot_sim::Answer {
    s.post(&format!("{objects}/search"), body).await
}

fn one_filter(property: &str, operator: &str, value: Value) -> Value {
    let mut filter = json!({"propertyName": property, "operator": operator});
    match value {
        Value::Array(_) => filter["values"] = value,
        other => filter["value"] = other,
    }
    json!({"filterGroups": [{"filters": [filter]}]})
}

#[tokio::test]
async fn batch_update_keyed_by_email_is_refused_as_a_non_unique_property() {
    for objects in OBJECTS {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "ana@coop.cr")]]);
        let answer = s
            .post(
                &format!("{objects}/batch/update"),
                json!({"inputs": [{"id": "ana@coop.cr", "idProperty": "email",
                                   "properties": {"firstname": "Ana"}}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(answer.body["category"], "VALIDATION_ERROR");
        assert_eq!(
            answer.body["message"],
            "Unable to perform update/upsert by non-unique 0-1 property email"
        );
        assert_eq!(s.sim.contact(&ids[0]).unwrap().get("firstname"), None);
    }
}

#[tokio::test]
async fn contact_search_on_hs_lastmodifieddate_matches_nothing() {
    for objects in OBJECTS {
        let s = sim().await;
        s.seed(&[&[("email", "a@coop.cr")], &[("email", "b@coop.cr")]]);
        let since = json!("0");
        let right = search(
            &s,
            objects,
            one_filter("lastmodifieddate", "GTE", since.clone()),
        );
        assert_eq!(total(&right.await), 2, "{objects}");
        for operator in ["GTE", "LTE", "NEQ"] {
            let wrong = search(
                &s,
                objects,
                one_filter("hs_lastmodifieddate", operator, since.clone()),
            );
            assert_eq!(total(&wrong.await), 0, "{objects} {operator}");
        }
        let has = one_filter("hs_lastmodifieddate", "HAS_PROPERTY", Value::Null);
        assert_eq!(total(&search(&s, objects, has).await), 0);
    }
}

#[tokio::test]
async fn requested_properties_that_are_not_defined_are_left_out() {
    for objects in OBJECTS {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "a@coop.cr")]]);
        let wanted = ["email", "firstname", "no_such_property"];
        let read = s
            .post(
                &format!("{objects}/batch/read"),
                json!({"inputs": [{"id": ids[0]}], "properties": wanted}),
            )
            .await;
        let found = search(&s, objects, json!({"properties": wanted})).await;
        let list = s
            .get(&format!("{objects}?properties={}", wanted.join(",")))
            .await;
        let one = s
            .get(&format!(
                "{objects}/{}?properties={}",
                ids[0],
                wanted.join(",")
            ))
            .await;
        for (what, record) in [
            ("batch read", &read.body["results"][0]),
            ("search", &found.body["results"][0]),
            ("list", &list.body["results"][0]),
            ("get", &one.body),
        ] {
            let properties = record["properties"].as_object().unwrap();
            assert_eq!(properties["email"], "a@coop.cr", "{objects} {what}");
            // Defined but without a value: null. Not defined: absent.
            assert_eq!(properties["firstname"], Value::Null, "{objects} {what}");
            assert!(
                !properties.contains_key("no_such_property"),
                "{objects} {what}: {record}"
            );
        }
    }
}

#[tokio::test]
async fn search_in_on_strings_is_case_sensitive_against_lowercased_values() {
    for objects in OBJECTS {
        let s = sim().await;
        s.seed(&[
            &[("email", "socio1@coop.cr"), ("firstname", "Ana")],
            &[("email", "socio2@coop.cr"), ("firstname", "Luis")],
        ]);
        let count = async |property: &str, values: Value| {
            total(&search(&s, objects, one_filter(property, "IN", values)).await)
        };
        assert_eq!(count("email", json!(["socio1@coop.cr"])).await, 1);
        assert_eq!(count("email", json!(["SOCIO1@coop.cr"])).await, 0);
        assert_eq!(count("firstname", json!(["ana", "luis"])).await, 2);
        assert_eq!(count("firstname", json!(["Ana"])).await, 0, "{objects}");
        let not_in = one_filter("firstname", "NOT_IN", json!(["Ana"]));
        assert_eq!(total(&search(&s, objects, not_in).await), 2);
    }
}

#[tokio::test]
async fn lifecyclestage_moves_forward_only_unless_first_cleared() {
    for objects in OBJECTS {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "a@coop.cr"), ("lifecyclestage", "customer")]]);
        let set = async |stage: &str| {
            s.post(
                &format!("{objects}/batch/update"),
                json!({"inputs": [{"id": ids[0], "properties": {"lifecyclestage": stage}}]}),
            )
            .await
        };
        let stage = || {
            s.sim
                .contact(&ids[0])
                .unwrap()
                .get("lifecyclestage")
                .map(str::to_owned)
        };
        let backwards = set("lead").await;
        assert_eq!(backwards.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(backwards.body["category"], "VALIDATION_ERROR");
        assert_eq!(
            backwards.body["errors"][0]["context"]["propertyName"][0],
            "lifecyclestage"
        );
        assert_eq!(stage().as_deref(), Some("customer"));
        assert_eq!(set("customer").await.status, StatusCode::OK, "same stage");
        assert_eq!(set("").await.status, StatusCode::OK, "cleared");
        assert_eq!(set("lead").await.status, StatusCode::OK, "after clearing");
        assert_eq!(set("customer").await.status, StatusCode::OK, "forward");
        assert_eq!(stage().as_deref(), Some("customer"));
    }
}

#[tokio::test]
async fn archived_true_is_read_whatever_its_case() {
    for objects in OBJECTS {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "a@coop.cr")], &[("email", "b@coop.cr")]]);
        s.post(
            &format!("{objects}/batch/archive"),
            json!({"inputs": [{"id": ids[1]}]}),
        )
        .await;
        for spelling in ["true", "True", "TRUE"] {
            let list = s.get(&format!("{objects}?archived={spelling}")).await;
            let results = list.body["results"].as_array().unwrap();
            assert_eq!(results.len(), 1, "{objects} archived={spelling}");
            assert_eq!(results[0]["id"], ids[1].as_str());
            let read = s
                .post(
                    &format!("{objects}/batch/read?archived={spelling}"),
                    json!({"inputs": [{"id": ids[1]}]}),
                )
                .await;
            assert_eq!(read.status, StatusCode::OK, "{objects} archived={spelling}");
            assert_eq!(read.body["results"][0]["id"], ids[1].as_str());
        }
    }
}

#[tokio::test]
async fn sorts_given_as_plain_strings_are_ignored() {
    for objects in OBJECTS {
        let s = sim().await;
        s.seed(&[
            &[
                ("email", "b@coop.cr"),
                ("createdate", "2024-01-01T00:00:00Z"),
            ],
            &[
                ("email", "a@coop.cr"),
                ("createdate", "2024-01-02T00:00:00Z"),
            ],
        ]);
        let answer = search(
            &s,
            objects,
            json!({"sorts": ["email"], "properties": ["email"]}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{objects}: {}", answer.body);
        let emails: Vec<&str> = answer.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["properties"]["email"].as_str().unwrap())
            .collect();
        // No sort honoured: oldest-created first, as without `sorts`.
        assert_eq!(emails, ["b@coop.cr", "a@coop.cr"], "{objects}");
    }
}

/// `PUT …/property-validations/{v}/0-1/{property}/rule-type/{ruleType}` on the paths of
/// `objects`' version.
fn rule_path(objects: &str, property: &str, rule_type: &str) -> String {
    let validations = objects
        .replace("/objects/", "/property-validations/")
        .replace("/contacts", "/0-1");
    format!("{validations}/{property}/rule-type/{rule_type}")
}

#[tokio::test]
async fn property_validation_rules_are_published_and_enforced_on_writes() {
    for objects in OBJECTS {
        let s = sim().await;
        let put = s
            .send_as(
                crate::hubspot_sim::TOKEN,
                reqwest::Method::PUT,
                &rule_path(
                    objects,
                    "telefono_oficina",
                    "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
                ),
                Some(json!({"ruleArguments": []})),
            )
            .await
            .unwrap();
        assert_eq!(
            put.status,
            StatusCode::NO_CONTENT,
            "{objects}: {}",
            put.body
        );
        let bad = s
            .send_as(
                crate::hubspot_sim::TOKEN,
                reqwest::Method::PUT,
                &rule_path(objects, "firstname", "MAX_LENGTH"),
                Some(json!({"ruleArguments": ["many"]})),
            )
            .await
            .unwrap();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{objects}");
        let listed = s
            .get(&rule_path(objects, "x", "y").replace("/x/rule-type/y", ""))
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{objects}");
        assert_eq!(
            listed.body["results"],
            json!([{"propertyName": "telefono_oficina", "propertyValidationRules": [
                {"ruleType": "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE", "ruleArguments": [],
                 "shouldApplyNormalization": false}]}])
        );
        // A national number breaks the rule; the whole batch fails (no trace ids).
        let answer = s
            .post(
                &format!("{objects}/batch/create"),
                json!({"inputs": [
                    {"properties": {"email": "a@coop.cr", "telefono_oficina": "22223333"}},
                    {"properties": {"email": "b@coop.cr", "telefono_oficina": "+50622223333"}}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(answer.body["category"], "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.contains("INVALID_PHONE_NUMBER_COUNTRY_CODE")
                && message.contains("telefono_oficina"),
            "{message}"
        );
        assert_eq!(s.sim.contacts().len(), 0, "{objects}");
    }
}

#[tokio::test]
async fn conditionally_required_properties_bind_writes_from_2026_09_only() {
    for (objects, enforced) in [(OBJECTS[0], false), (OBJECTS[1], true)] {
        let s = sim().await;
        let url = format!("{}/_sim/required-rules", s.sim.base_url());
        let rules =
            json!([{"property": "canton", "when": {"property": "provincia", "is": ["Cartago"]}}]);
        let set = s.http.put(url).json(&rules).send().await.unwrap();
        assert!(set.status().is_success());
        let create = |email: &str, provincia: &str| json!({"inputs": [{"properties": {"email": email, "provincia": provincia}}]});
        let answer = s
            .post(
                &format!("{objects}/batch/create"),
                create("a@coop.cr", "Cartago"),
            )
            .await;
        if enforced {
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{objects}: {}",
                answer.body
            );
            let message = answer.body["message"].as_str().unwrap();
            assert!(
                message.contains("canton") && message.contains("provincia"),
                "{message}"
            );
        } else {
            assert_eq!(
                answer.status,
                StatusCode::CREATED,
                "{objects}: {}",
                answer.body
            );
        }
        let other = s
            .post(
                &format!("{objects}/batch/create"),
                create("b@coop.cr", "Limón"),
            )
            .await;
        assert_eq!(
            other.status,
            StatusCode::CREATED,
            "{objects}: {}",
            other.body
        );
    }
}
