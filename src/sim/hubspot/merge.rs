//! Contact merges (`POST …/objects/contacts/merge`) as HubSpot makes them: the primary's values
//! win and the other's fill its blanks, the lifecycle stage furthest down the funnel is kept, the
//! other's email joins `hs_additional_emails`, the merged-away ids accumulate in
//! `hs_merged_object_ids` and `hs_calculated_merged_vids`, and the survivor is a new record (or,
//! with primary id preservation, the primary under its own id). Pure over the store.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use super::batch::{Ctx, id_text, parse};
use super::errors::{Reply, bad_request};
use super::properties::PropertyOption;
use super::store::{ADDITIONAL_EMAILS, Contact, Store};

/// HubSpot refuses to merge records that took part in this many merges between them [D: "you
/// cannot merge contacts if they've been included in a combined total of 250+ merges"].
pub const MAX_MERGES: u32 = 250;

const MERGED_IDS: &str = "hs_merged_object_ids";
const MERGED_VIDS: &str = "hs_calculated_merged_vids";
const LIFECYCLE: &str = "lifecyclestage";
/// Identity and timestamps, which the store sets on the survivor.
const SET_BY_STORE: &[&str] = &[
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    "hs_lastmodifieddate",
];

/// Why a merge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("contact {0} does not exist")]
    NotFound(String),
    #[error("a contact cannot be merged with itself")]
    Itself,
    #[error("the contacts took part in {0} merges between them; HubSpot stops at {MAX_MERGES}")]
    TooManyMerges(u32),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MergeInput {
    primary_object_id: Value,
    object_id_to_merge: Value,
}

/// `POST …/objects/contacts/merge`: 200 with the survivor. [I] HubSpot documents neither the
/// status of an unknown id nor that of a merge with itself: 404 OBJECT_NOT_FOUND (as a
/// single-object read of it) and 400 VALIDATION_ERROR. 414 past the merge limit [D: reference
/// §8].
pub fn merge<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    let corr = ctx.correlation.clone();
    let input: MergeInput = match parse(body, &corr) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    let primary = id_text(&input.primary_object_id);
    let other = id_text(&input.object_id_to_merge);
    match merge_contacts(store, &primary, &other, ctx.now_ms, ctx.now_us) {
        Ok(id) => match store.get(id) {
            Some(contact) => Reply::json(200, contact.to_json_all()),
            None => Reply::error(500, "INTERNAL_ERROR", "merged record missing", &corr),
        },
        Err(e @ MergeError::NotFound(_)) => {
            Reply::error(404, "OBJECT_NOT_FOUND", e.to_string(), &corr)
        }
        Err(e @ MergeError::Itself) => bad_request(e.to_string(), &corr),
        Err(e @ MergeError::TooManyMerges(_)) => {
            Reply::error(414, "VALIDATION_ERROR", e.to_string(), &corr)
        }
    }
}

/// Merges `other` into `primary` (ids as sent; merged-away ids resolve to their survivor;
/// archived records are not found). Returns the survivor's id.
pub fn merge_contacts(
    store: &mut Store,
    primary: &str,
    other: &str,
    now_ms: i64,
    now_us: u64,
) -> Result<u64, MergeError> {
    let live = |raw: &str| {
        store
            .lookup_survivor(None, raw)
            .and_then(|id| store.get(id))
            .filter(|c| !c.archived())
            .cloned()
            .ok_or_else(|| MergeError::NotFound(raw.trim().to_owned()))
    };
    let (first, second) = (live(primary)?, live(other)?);
    if first.id == second.id {
        return Err(MergeError::Itself);
    }
    let merges = store.merge_count(first.id) + store.merge_count(second.id);
    if merges >= MAX_MERGES {
        return Err(MergeError::TooManyMerges(merges));
    }
    let stages = store
        .property(LIFECYCLE)
        .map(|p| p.options.clone())
        .unwrap_or_default();
    let values = merged_values(&first, &second, store.keep_primary_id, &stages, now_ms);
    store
        .merge(first.id, second.id, values, now_ms, now_us)
        .ok_or_else(|| MergeError::NotFound(primary.trim().to_owned()))
}

/// The survivor's property values (identity and timestamps left to the store), after HubSpot's
/// merge rules [D: changelog "Updated merge functionality for contacts and companies" and the
/// "Merge records" article]: the primary's value wins and the other's is used where the primary
/// has none; the lifecycle stage furthest down the funnel (`stages` in funnel order) is kept;
/// the primary's email stays the email and the other's becomes an additional email
/// (`;`-separated). The merged-away ids (both, or only the other's when the primary keeps its
/// id) join those merged into either before, in `hs_merged_object_ids` (`;`-separated) and in
/// `hs_calculated_merged_vids` as `id:merged-at-epoch-ms` [C: Fivetran's HubSpot schema docs].
pub fn merged_values(
    primary: &Contact,
    other: &Contact,
    keep_primary_id: bool,
    stages: &[PropertyOption],
    now_ms: i64,
) -> BTreeMap<String, String> {
    let mut values = other.properties.clone();
    values.extend(primary.properties.clone());
    for name in SET_BY_STORE {
        values.remove(*name);
    }
    let rank = |v: &str| stages.iter().position(|o| o.value == v);
    if let (Some(a), Some(b)) = (primary.get(LIFECYCLE), other.get(LIFECYCLE))
        && rank(b) > rank(a)
    {
        values.insert(LIFECYCLE.to_owned(), b.to_owned());
    }
    let email = values.get("email").cloned();
    let mut additional: Vec<&str> = Vec::new();
    for address in primary.addresses().chain(other.addresses()) {
        if Some(address) != email.as_deref() && !additional.contains(&address) {
            additional.push(address);
        }
    }
    set_list(&mut values, ADDITIONAL_EMAILS, additional);
    let gone = [(!keep_primary_id).then_some(primary.id), Some(other.id)];
    let mut ids: BTreeMap<u64, String> = BTreeMap::new();
    for contact in [primary, other] {
        for entry in list(contact.get(MERGED_VIDS)) {
            if let Some((id, at)) = entry.split_once(':')
                && let Ok(id) = id.trim().parse()
            {
                ids.insert(id, at.trim().to_owned());
            }
        }
        for id in list(contact.get(MERGED_IDS)).filter_map(|id| id.parse().ok()) {
            ids.entry(id).or_insert_with(|| now_ms.to_string());
        }
    }
    for id in gone.into_iter().flatten() {
        ids.insert(id, now_ms.to_string());
    }
    let merged: Vec<String> = ids.keys().map(u64::to_string).collect();
    let vids: Vec<String> = ids.iter().map(|(id, at)| format!("{id}:{at}")).collect();
    set_list(&mut values, MERGED_IDS, merged.iter().map(String::as_str));
    set_list(&mut values, MERGED_VIDS, vids.iter().map(String::as_str));
    values
}

/// The items of a `;`-separated value.
fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Sets `name` to the `;`-joined items, or clears it when there are none.
fn set_list<'a>(
    values: &mut BTreeMap<String, String>,
    name: &str,
    items: impl IntoIterator<Item = &'a str>,
) {
    let joined = items.into_iter().collect::<Vec<_>>().join(";");
    if joined.is_empty() {
        values.remove(name);
    } else {
        values.insert(name.to_owned(), joined);
    }
}

#[cfg(test)]
mod tests {
    use super::super::properties::{LIFECYCLE_STAGES, default_properties};
    use super::*;

    fn contact(id: u64, pairs: &[(&str, &str)]) -> Contact {
        Contact {
            id,
            properties: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            created_ms: 0,
            updated_ms: 0,
            archived_ms: None,
        }
    }

    fn stages() -> Vec<PropertyOption> {
        LIFECYCLE_STAGES
            .iter()
            .map(|(label, value)| PropertyOption {
                label: (*label).to_owned(),
                value: (*value).to_owned(),
            })
            .collect()
    }

    fn merged(primary: &Contact, other: &Contact, keep: bool) -> BTreeMap<String, String> {
        merged_values(primary, other, keep, &stages(), 7)
    }

    #[test]
    fn the_primary_wins_and_the_other_fills_its_blanks() {
        let primary = contact(1, &[("firstname", "Ana"), ("hs_object_id", "1")]);
        let other = contact(
            2,
            &[("firstname", "Ann"), ("lastname", "Mora"), ("phone", "8")],
        );
        let values = merged(&primary, &other, false);
        assert_eq!(values["firstname"], "Ana");
        assert_eq!(values["lastname"], "Mora");
        assert_eq!(values["phone"], "8");
        assert!(!values.contains_key("hs_object_id"), "set by the store");
    }

    #[test]
    fn the_lifecycle_stage_furthest_down_the_funnel_is_kept() {
        let lead = contact(1, &[("lifecyclestage", "lead")]);
        let customer = contact(2, &[("lifecyclestage", "customer")]);
        assert_eq!(
            merged(&lead, &customer, false)["lifecyclestage"],
            "customer"
        );
        assert_eq!(
            merged(&customer, &lead, false)["lifecyclestage"],
            "customer"
        );
    }

    #[test]
    fn the_other_email_becomes_an_additional_one() {
        let primary = contact(1, &[("email", "a@x.cr"), (ADDITIONAL_EMAILS, "c@x.cr")]);
        let other = contact(
            2,
            &[("email", "b@x.cr"), (ADDITIONAL_EMAILS, "c@x.cr;d@x.cr")],
        );
        let values = merged(&primary, &other, false);
        assert_eq!(values["email"], "a@x.cr");
        assert_eq!(values[ADDITIONAL_EMAILS], "c@x.cr;b@x.cr;d@x.cr");
        let without = contact(3, &[("firstname", "Ana")]);
        let values = merged(&without, &other, false);
        assert_eq!(values["email"], "b@x.cr", "fills the primary's blank");
        assert_eq!(values[ADDITIONAL_EMAILS], "c@x.cr;d@x.cr");
        assert!(!merged(&without, &without, false).contains_key(ADDITIONAL_EMAILS));
    }

    #[test]
    fn merged_ids_accumulate_and_depend_on_the_id_mode() {
        let primary = contact(10, &[(MERGED_IDS, "3;4"), (MERGED_VIDS, "3:100;4:200")]);
        let other = contact(20, &[(MERGED_IDS, "5")]);
        let values = merged(&primary, &other, false);
        assert_eq!(values[MERGED_IDS], "3;4;5;10;20");
        assert_eq!(values[MERGED_VIDS], "3:100;4:200;5:7;10:7;20:7");
        let kept = merged(&primary, &other, true);
        assert_eq!(kept[MERGED_IDS], "3;4;5;20", "the primary keeps its id");
    }

    #[test]
    fn merges_are_refused_with_itself_unknown_ids_and_past_the_limit() {
        let mut store = Store::new(default_properties(), 0);
        let a = store.create(BTreeMap::new(), 0, 0, None, None);
        let b = store.create(BTreeMap::new(), 0, 0, None, None);
        let (a, b) = (a.to_string(), b.to_string());
        let merge = |store: &mut Store, x: &str, y: &str| merge_contacts(store, x, y, 1, 0);
        assert_eq!(merge(&mut store, &a, &a), Err(MergeError::Itself));
        assert_eq!(
            merge(&mut store, &a, "99"),
            Err(MergeError::NotFound("99".into()))
        );
        let survivor = merge(&mut store, &a, &b).map(|id| id.to_string());
        let survivor = survivor.unwrap_or_default();
        assert_eq!(
            merge(&mut store, &b, &survivor),
            Err(MergeError::Itself),
            "an old id resolves to its survivor"
        );
        let mut current = survivor;
        for _ in 1..MAX_MERGES {
            let fresh = store.create(BTreeMap::new(), 0, 0, None, None).to_string();
            current = merge(&mut store, &current, &fresh)
                .map(|id| id.to_string())
                .unwrap_or_default();
        }
        let fresh = store.create(BTreeMap::new(), 0, 0, None, None).to_string();
        assert_eq!(
            merge(&mut store, &fresh, &current),
            Err(MergeError::TooManyMerges(MAX_MERGES))
        );
    }
}
