//! HubSpot simulator conformance against HubSpot's OpenAPI specs, its reference and the official
//! Python SDK: one test per behaviour where the simulator once was more lenient (or stricter)
//! than HubSpot, or lacked it. Each runs on the `v3` paths and, where the behaviour is not
//! version-specific, on `2026-09` too; the record-lifecycle ones (single-object writes, merges,
//! GDPR delete) on every version.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::hubspot_sim::{Answer, Sim, TOKEN, sim, sim_with};
use hubsync::sim::hubspot::{Faults, MAX_MERGES, SimOptions, SimSettings};

/// The object path prefixes of the versions each test runs on.
const OBJECTS: [&str; 2] = ["/crm/v3/objects/contacts", "/crm/objects/2026-09/contacts"];

/// Every API version's object path prefix, by name or by type id `0-1`.
const EVERY_VERSION: [&str; 3] = [
    "/crm/v3/objects/contacts",
    "/crm/objects/2026-03/0-1",
    "/crm/objects/2026-09/contacts",
];

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
        let (s, ids) = with_contacts(&["a", "b"]).await;
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

/// A simulator holding one contact `{name}@coop.cr` per name, and their ids in that order.
async fn with_contacts(names: &[&str]) -> (Sim, Vec<String>) {
    let s = sim().await;
    let emails: Vec<String> = names.iter().map(|n| format!("{n}@coop.cr")).collect();
    let records: Vec<[(&str, &str); 1]> = emails.iter().map(|e| [("email", e.as_str())]).collect();
    let records: Vec<&[(&str, &str)]> = records.iter().map(|r| r.as_slice()).collect();
    let ids = s.seed(&records);
    (s, ids)
}

async fn send(s: &Sim, method: Method, path: &str, body: Option<Value>) -> Answer {
    s.send_as(TOKEN, method, path, body).await.unwrap()
}

async fn patch(s: &Sim, path: &str, properties: Value) -> Answer {
    let body = json!({"properties": properties});
    send(s, Method::PATCH, path, Some(body)).await
}

async fn merge(s: &Sim, objects: &str, primary: &str, other: &str) -> Answer {
    let body = json!({"primaryObjectId": primary, "objectIdToMerge": other});
    s.post(&format!("{objects}/merge"), body).await
}

async fn gdpr_delete(s: &Sim, objects: &str, body: Value) -> Answer {
    s.post(&format!("{objects}/gdpr-delete"), body).await
}

/// The survivor's id from a successful merge answer.
fn merged_id(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

fn ids_of(answer: &Answer) -> Vec<&str> {
    let mut ids: Vec<&str> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_single_create_answers_201_and_409_on_an_email_another_contact_holds() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "ana@coop.cr")]]);
        let created = s
            .post(
                objects,
                json!({"properties": {"email": "Luis@Coop.cr", "firstname": "Luis"},
                       "associations": []}),
            )
            .await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{objects}: {}",
            created.body
        );
        assert_eq!(created.body["properties"]["email"], "luis@coop.cr");
        let id = created.body["id"].as_str().unwrap();
        assert_eq!(created.body["properties"]["hs_object_id"], id);
        assert!(s.sim.contact(id).is_some());
        let taken = s
            .post(objects, json!({"properties": {"email": "ANA@coop.cr"}}))
            .await;
        assert_eq!(taken.status, StatusCode::CONFLICT, "{objects}");
        assert_eq!(taken.body["category"], "CONFLICT");
        assert_eq!(
            taken.body["message"],
            format!("Contact already exists. Existing ID: {}", ids[0])
        );
        let bad = s
            .post(objects, json!({"properties": {"marital_status": "casado"}}))
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(bad.body["errors"][0]["code"], "INVALID_OPTION");
        assert_eq!(s.sim.stats().contacts, 2, "{objects}: nothing else created");
        assert_eq!(s.sim.stats().requests_by_endpoint.get("create"), Some(&3));
    }
}

#[tokio::test]
async fn a_single_patch_updates_by_id_or_email_and_answers_404_for_unknown_or_archived() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "ana@coop.cr")], &[("email", "luis@coop.cr")]]);
        let before = s.sim.contact(&ids[0]).unwrap().updated_ms;
        let by_id = patch(
            &s,
            &format!("{objects}/{}", ids[0]),
            json!({"city": "Cartago"}),
        )
        .await;
        assert_eq!(by_id.status, StatusCode::OK, "{objects}: {}", by_id.body);
        assert_eq!(by_id.body["id"], ids[0].as_str());
        assert_eq!(by_id.body["properties"]["city"], "Cartago");
        assert!(s.sim.contact(&ids[0]).unwrap().updated_ms > before);
        let by_email = patch(
            &s,
            &format!("{objects}/ANA@coop.cr?idProperty=email"),
            json!({"city": ""}),
        )
        .await;
        assert_eq!(
            by_email.status,
            StatusCode::OK,
            "{objects}: {}",
            by_email.body
        );
        assert_eq!(s.sim.contact(&ids[0]).unwrap().get("city"), None, "cleared");
        let read_only = patch(
            &s,
            &format!("{objects}/{}", ids[0]),
            json!({"createdate": "2024-01-01T00:00:00Z"}),
        )
        .await;
        assert_eq!(read_only.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(read_only.body["category"], "VALIDATION_ERROR");
        let taken = patch(
            &s,
            &format!("{objects}/{}", ids[0]),
            json!({"email": "luis@coop.cr"}),
        )
        .await;
        assert_eq!(taken.status, StatusCode::CONFLICT, "{objects}");
        let unknown = patch(&s, &format!("{objects}/999999"), json!({"city": "x"})).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{objects}");
        assert_eq!(unknown.body["category"], "OBJECT_NOT_FOUND");
        let by_name = patch(
            &s,
            &format!("{objects}/Ana?idProperty=firstname"),
            json!({"city": "x"}),
        )
        .await;
        assert_eq!(by_name.status, StatusCode::BAD_REQUEST, "{objects}");
        send(&s, Method::DELETE, &format!("{objects}/{}", ids[1]), None).await;
        let archived = patch(&s, &format!("{objects}/{}", ids[1]), json!({"city": "x"})).await;
        assert_eq!(archived.status, StatusCode::NOT_FOUND, "{objects}");
    }
}

#[tokio::test]
async fn delete_archives_a_contact_that_reads_with_archived_true_still_find() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "ana@coop.cr")], &[("email", "luis@coop.cr")]]);
        let path = format!("{objects}/{}", ids[0]);
        let deleted = send(&s, Method::DELETE, &path, None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{objects}");
        assert_eq!(deleted.body, Value::Null);
        assert_eq!(
            s.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{objects}"
        );
        let archived = s.get(&format!("{path}?archived=true")).await;
        assert_eq!(archived.status, StatusCode::OK, "{objects}");
        assert_eq!(archived.body["archived"], true);
        assert!(archived.body["archivedAt"].is_string());
        let listed = s.get(&format!("{objects}?archived=true")).await;
        assert_eq!(ids_of(&listed), [ids[0].as_str()], "{objects}");
        let again = send(&s, Method::DELETE, &path, None).await;
        assert_eq!(
            again.status,
            StatusCode::NO_CONTENT,
            "{objects}: already archived"
        );
        let unknown = send(&s, Method::DELETE, &format!("{objects}/999999"), None).await;
        assert_eq!(
            unknown.status,
            StatusCode::NO_CONTENT,
            "{objects}: unknown id"
        );
        assert_eq!(s.sim.stats().contacts, 1);
        // The email is free again, as after a batch archive.
        let reused = s
            .post(objects, json!({"properties": {"email": "ana@coop.cr"}}))
            .await;
        assert_eq!(reused.status, StatusCode::CREATED, "{objects}");
    }
}

#[tokio::test]
async fn a_merge_makes_a_new_record_that_both_old_ids_resolve_to() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let ids = s.seed(&[
            &[
                ("email", "ana@coop.cr"),
                ("firstname", "Ana"),
                ("lifecyclestage", "lead"),
            ],
            &[
                ("email", "ana.mora@coop.cr"),
                ("firstname", "Ana María"),
                ("lastname", "Mora"),
                ("lifecyclestage", "customer"),
                ("createdate", "2020-01-01T00:00:00Z"),
            ],
        ]);
        let latest = ids
            .iter()
            .map(|id| s.sim.contact(id).unwrap().updated_ms)
            .max()
            .unwrap();
        let answer = merge(&s, objects, &ids[0], &ids[1]).await;
        let survivor = merged_id(&answer);
        assert!(!ids.contains(&survivor), "{objects}: a new id");
        let properties = &answer.body["properties"];
        assert_eq!(
            properties["email"], "ana@coop.cr",
            "{objects}: the primary's email"
        );
        assert_eq!(properties["hs_additional_emails"], "ana.mora@coop.cr");
        assert_eq!(properties["firstname"], "Ana", "the primary's value wins");
        assert_eq!(properties["lastname"], "Mora", "the other fills blanks");
        assert_eq!(properties["lifecyclestage"], "customer", "furthest stage");
        assert_eq!(
            properties["createdate"], "2020-01-01T00:00:00.000Z",
            "the oldest"
        );
        assert_eq!(
            properties["hs_merged_object_ids"],
            format!("{};{}", ids[0], ids[1])
        );
        let vids = properties["hs_calculated_merged_vids"].as_str().unwrap();
        assert!(
            vids.starts_with(&format!("{}:", ids[0])) && vids.contains(&format!(";{}:", ids[1])),
            "{objects}: {vids}"
        );
        let modified = s.sim.contact(&survivor).unwrap().updated_ms;
        assert!(
            modified > latest,
            "{objects}: lastmodifieddate is the merge time"
        );
        for old in &ids {
            let read = s.get(&format!("{objects}/{old}")).await;
            assert_eq!(read.status, StatusCode::OK, "{objects} GET {old}");
            assert_eq!(read.body["id"], survivor.as_str(), "{objects} GET {old}");
        }
        let batch = s
            .post(
                &format!("{objects}/batch/read"),
                json!({"inputs": [{"id": ids[0]}, {"id": ids[1]}],
                       "properties": ["hs_merged_object_ids"]}),
            )
            .await;
        assert_eq!(batch.status, StatusCode::OK, "{objects}: {}", batch.body);
        assert_eq!(ids_of(&batch), [survivor.as_str()], "{objects}");
        let listed = s.get(objects).await;
        assert_eq!(ids_of(&listed), [survivor.as_str()], "{objects}");
        let archived = s.get(&format!("{objects}?archived=true")).await;
        assert_eq!(ids_of(&archived), Vec::<&str>::new(), "{objects}");
        let found = search(&s, objects, json!({})).await;
        assert_eq!(ids_of(&found), [survivor.as_str()], "{objects}: search");
        assert_eq!(s.sim.stats().contacts, 1);
    }
}

#[tokio::test]
async fn merged_ids_accumulate_across_repeated_merges() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b", "c"]).await;
        let ab = merged_id(&merge(&s, objects, &ids[0], &ids[1]).await);
        let answer = merge(&s, objects, &ids[2], &ab).await;
        let abc = merged_id(&answer);
        let mut expected: Vec<u64> = [&ids[0], &ids[1], &ids[2], &ab]
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        expected.sort_unstable();
        let expected: Vec<String> = expected.iter().map(u64::to_string).collect();
        let properties = &answer.body["properties"];
        assert_eq!(
            properties["hs_merged_object_ids"],
            expected.join(";"),
            "{objects}"
        );
        assert_eq!(properties["email"], "c@coop.cr");
        assert_eq!(
            properties["hs_additional_emails"], "a@coop.cr;b@coop.cr",
            "{objects}: every address stays on the survivor"
        );
        for old in ids.iter().chain([&ab]) {
            let read = s.get(&format!("{objects}/{old}")).await;
            assert_eq!(read.body["id"], abc.as_str(), "{objects} GET {old}");
        }
    }
}

#[tokio::test]
async fn with_primary_id_preservation_the_primary_keeps_its_id() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let settings = send(
            &s,
            Method::PUT,
            "/_sim/settings",
            Some(json!({"preserve_primary_id": true})),
        )
        .await;
        assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
        assert_eq!(
            s.get("/_sim/settings").await.body["preserve_primary_id"],
            true
        );
        let ids = s.seed(&[&[("email", "a@coop.cr")], &[("email", "b@coop.cr")]]);
        let answer = merge(&s, objects, &ids[0], &ids[1]).await;
        assert_eq!(merged_id(&answer), ids[0], "{objects}");
        assert_eq!(
            answer.body["properties"]["hs_merged_object_ids"],
            ids[1].as_str()
        );
        let read = s.get(&format!("{objects}/{}", ids[1])).await;
        assert_eq!(read.body["id"], ids[0].as_str(), "{objects}");
        s.post("/_sim/reset", json!({})).await;
        assert_eq!(s.sim.settings(), SimSettings::default(), "reset restores");
    }
    let s = sim_with(SimOptions {
        preserve_primary_id: true,
        ..SimOptions::default()
    })
    .await;
    let ids = s.seed(&[&[("email", "a@coop.cr")], &[("email", "b@coop.cr")]]);
    assert_eq!(s.sim.merge_contacts(&ids[1], &ids[0]).unwrap(), ids[1]);
}

#[tokio::test]
async fn a_merged_away_email_stays_taken_by_the_survivor() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b"]).await;
        let survivor = merged_id(&merge(&s, objects, &ids[0], &ids[1]).await);
        let create = s
            .post(objects, json!({"properties": {"email": "B@coop.cr"}}))
            .await;
        assert_eq!(create.status, StatusCode::CONFLICT, "{objects}");
        assert_eq!(
            create.body["message"],
            format!("Contact already exists. Existing ID: {survivor}")
        );
        let by_email = s
            .get(&format!("{objects}/b@coop.cr?idProperty=email"))
            .await;
        assert_eq!(by_email.body["id"], survivor.as_str(), "{objects}");
    }
}

#[tokio::test]
async fn batch_update_leaves_merged_away_ids_out_while_patch_updates_their_survivor() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b"]).await;
        let survivor = merged_id(&merge(&s, objects, &ids[0], &ids[1]).await);
        let batch = s
            .post(
                &format!("{objects}/batch/update"),
                json!({"inputs": [{"id": ids[1], "properties": {"city": "Cartago"}}]}),
            )
            .await;
        assert_eq!(batch.status, StatusCode::OK, "{objects}: {}", batch.body);
        assert_eq!(batch.body["results"], json!([]), "{objects}");
        assert!(
            batch.body.get("errors").is_none(),
            "{objects}: {}",
            batch.body
        );
        assert_eq!(s.sim.contact(&survivor).unwrap().get("city"), None);
        let single = patch(
            &s,
            &format!("{objects}/{}", ids[1]),
            json!({"city": "Cartago"}),
        )
        .await;
        assert_eq!(single.status, StatusCode::OK, "{objects}: {}", single.body);
        assert_eq!(single.body["id"], survivor.as_str());
        assert_eq!(
            s.sim.contact(&survivor).unwrap().get("city"),
            Some("Cartago")
        );
    }
}

#[tokio::test]
async fn merges_with_itself_or_an_unknown_or_archived_id_are_refused() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b", "c"]).await;
        let itself = merge(&s, objects, &ids[0], &ids[0]).await;
        assert_eq!(itself.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(itself.body["category"], "VALIDATION_ERROR");
        let unknown = merge(&s, objects, &ids[0], "999999").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{objects}");
        assert_eq!(unknown.body["category"], "OBJECT_NOT_FOUND");
        send(&s, Method::DELETE, &format!("{objects}/{}", ids[2]), None).await;
        let archived = merge(&s, objects, &ids[0], &ids[2]).await;
        assert_eq!(archived.status, StatusCode::NOT_FOUND, "{objects}");
        let survivor = merged_id(&merge(&s, objects, &ids[0], &ids[1]).await);
        let old_and_new = merge(&s, objects, &survivor, &ids[1]).await;
        assert_eq!(old_and_new.status, StatusCode::BAD_REQUEST, "{objects}");
        let missing = s
            .post(
                &format!("{objects}/merge"),
                json!({"primaryObjectId": survivor}),
            )
            .await;
        assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{objects}");
        assert_eq!(s.sim.stats().contacts, 1, "{objects}: only the one merge");
    }
}

#[tokio::test]
async fn records_in_250_merges_between_them_cannot_be_merged_again() {
    for objects in EVERY_VERSION {
        let names: Vec<String> = (0..=MAX_MERGES + 1).map(|i| format!("m{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (s, ids) = with_contacts(&names).await;
        let last = MAX_MERGES as usize;
        // 248 merges in-process (no rate limit), then the 249th and 250th over the API.
        let mut survivor = ids[0].clone();
        for other in &ids[1..last - 1] {
            survivor = s.sim.merge_contacts(&survivor, other).unwrap();
        }
        for other in &ids[last - 1..=last] {
            survivor = merged_id(&merge(&s, objects, &survivor, other).await);
        }
        let refused = merge(&s, objects, &ids[last + 1], &survivor).await;
        let message = &refused.body["message"];
        assert_eq!(refused.status.as_u16(), 414, "{objects}: {message}");
        assert_eq!(refused.body["status"], "error");
        let survivor = s.sim.contact(&survivor).unwrap();
        let merged = survivor.get("hs_merged_object_ids").unwrap();
        assert_eq!(
            merged.split(';').count(),
            2 * last,
            "{objects}: originals and in-betweens"
        );
        assert!(
            s.sim.contact(&ids[last + 1]).is_some(),
            "{objects}: untouched"
        );
    }
}

#[tokio::test]
async fn a_gdpr_delete_is_permanent() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b"]).await;
        let gone = gdpr_delete(&s, objects, json!({"objectId": ids[0]})).await;
        assert_eq!(
            gone.status,
            StatusCode::NO_CONTENT,
            "{objects}: {}",
            gone.body
        );
        let by_email = gdpr_delete(
            &s,
            objects,
            json!({"objectId": "B@coop.cr", "idProperty": "email"}),
        )
        .await;
        assert_eq!(by_email.status, StatusCode::NO_CONTENT, "{objects}");
        for id in &ids {
            let path = format!("{objects}/{id}");
            assert_eq!(
                s.get(&path).await.status,
                StatusCode::NOT_FOUND,
                "{objects}"
            );
            let archived = s.get(&format!("{path}?archived=true")).await;
            assert_eq!(archived.status, StatusCode::NOT_FOUND, "{objects}");
        }
        let listed = s.get(&format!("{objects}?archived=true")).await;
        assert_eq!(ids_of(&listed), Vec::<&str>::new(), "{objects}");
        let read = s
            .post(
                &format!("{objects}/batch/read"),
                json!({"inputs": [{"id": ids[0]}, {"id": ids[1]}]}),
            )
            .await;
        assert_eq!(read.body["results"], json!([]), "{objects}");
        assert_eq!(read.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
        assert_eq!(read.body["errors"][0]["context"]["ids"], json!(ids));
        assert!(s.sim.contacts().is_empty(), "{objects}: nothing left");
        let unknown = gdpr_delete(&s, objects, json!({"objectId": "999999"})).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{objects}");
    }
}

#[tokio::test]
async fn a_gdpr_delete_blocklists_the_email_even_when_no_contact_has_it() {
    for objects in EVERY_VERSION {
        let s = sim().await;
        let ids = s.seed(&[&[("email", "a@coop.cr")]]);
        assert!(s.sim.gdpr_delete_email("A@coop.cr"));
        let unknown = gdpr_delete(
            &s,
            objects,
            json!({"objectId": "Nadie@coop.cr", "idProperty": "email"}),
        )
        .await;
        assert_eq!(unknown.status, StatusCode::NO_CONTENT, "{objects}");
        for email in ["a@coop.cr", "NADIE@coop.cr"] {
            let create = s
                .post(objects, json!({"properties": {"email": email}}))
                .await;
            assert_eq!(create.status, StatusCode::BAD_REQUEST, "{objects} {email}");
            assert_eq!(create.body["errors"][0]["code"], "INVALID_EMAIL");
            assert_eq!(
                create.body["errors"][0]["context"]["propertyName"][0],
                "email"
            );
            let upsert = s
                .post(
                    &format!("{objects}/batch/upsert"),
                    json!({"inputs": [{"id": email, "idProperty": "email",
                                       "properties": {"firstname": "Ana"}}]}),
                )
                .await;
            assert_eq!(upsert.status, StatusCode::BAD_REQUEST, "{objects} {email}");
        }
        assert_eq!(s.sim.stats().contacts, 0, "{objects}");
        assert_eq!(s.sim.contact(&ids[0]), None);
        let other = s
            .post(objects, json!({"properties": {"email": "b@coop.cr"}}))
            .await;
        assert_eq!(
            other.status,
            StatusCode::CREATED,
            "{objects}: other emails are fine"
        );
    }
}

#[tokio::test]
async fn single_writes_merges_and_gdpr_deletes_are_limited_and_faulted_like_the_api() {
    for objects in EVERY_VERSION {
        let (s, ids) = with_contacts(&["a", "b"]).await;
        s.sim.set_faults(Faults {
            missing_write_scope: true,
            ..Faults::default()
        });
        let path = format!("{objects}/{}", ids[0]);
        let refused = [
            s.post(objects, json!({"properties": {}})).await,
            patch(&s, &path, json!({"city": "x"})).await,
            send(&s, Method::DELETE, &path, None).await,
            merge(&s, objects, &ids[0], &ids[1]).await,
            gdpr_delete(&s, objects, json!({"objectId": ids[0]})).await,
        ];
        for answer in &refused {
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{objects}: {}",
                answer.body
            );
            assert_eq!(answer.body["category"], "MISSING_SCOPES");
        }
        s.sim.set_faults(Faults {
            burst_429: 1,
            ..Faults::default()
        });
        let throttled = merge(&s, objects, &ids[0], &ids[1]).await;
        assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS, "{objects}");
        let ok = patch(&s, &path, json!({"city": "x"})).await;
        assert_eq!(ok.status, StatusCode::OK, "{objects}");
        assert!(ok.headers.contains_key("x-hubspot-ratelimit-remaining"));
        assert_eq!(s.sim.stats().contacts, 2, "{objects}: nothing done");
        let stats = s.sim.stats();
        for (endpoint, n) in [("create", 1), ("update", 2), ("archive", 1), ("merge", 2)] {
            assert_eq!(
                stats.requests_by_endpoint.get(endpoint),
                Some(&n),
                "{endpoint}"
            );
        }
        assert_eq!(stats.requests_by_endpoint.get("gdpr-delete"), Some(&1));
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
