//! The single-object contact endpoints: create (`POST …/objects/contacts`), update
//! (`PATCH …/{id}`, by id, merged-away ids included, or by `idProperty` email or a unique
//! property), archive (`DELETE …/{id}`) and GDPR delete (`POST …/gdpr-delete`, permanent, with
//! the email blocklist), checked like the batch writes. Pure over the store.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use super::batch::{
    Ctx, Target, apply, check_id_property, check_write, email_conflict, id_text, parse,
};
use super::errors::{Reply, object_not_found, validation_body};
use super::store::Store;

/// The body of a single create or update.
#[derive(Debug, Deserialize)]
struct SingleInput {
    properties: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GdprInput {
    object_id: Value,
    #[serde(default)]
    id_property: Option<String>,
}

/// `POST …/objects/contacts`: 201 with the new contact; 400 on any bad value, 409 on an email
/// another contact holds, as a batch create without trace ids.
pub fn create<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    match parse::<SingleInput>(body, &ctx.correlation) {
        Ok(input) => write_one(store, Target::New, &input.properties, ctx, 201),
        Err(reply) => reply,
    }
}

/// `PATCH …/objects/contacts/{id}[?idProperty=…]`: 200 with the contact. Unlike batch update,
/// it takes `idProperty=email` and ids listed in `hs_merged_object_ids`, which update their
/// survivor [D: the update-contact reference; the contacts guide on merged ids]. Archived or
/// unknown records answer 404.
pub fn update<R: Rng>(
    store: &mut Store,
    id: &str,
    id_property: Option<&str>,
    body: &[u8],
    ctx: &mut Ctx<'_, R>,
) -> Reply {
    let corr = ctx.correlation.clone();
    let input: SingleInput = match parse(body, &corr) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    let id_property = id_property.filter(|p| *p != "hs_object_id");
    if let Err(reply) = check_id_property(store, id_property, "update", true, &corr) {
        return reply;
    }
    match live(store, id_property, id) {
        Some(id) => write_one(store, Target::Existing(id), &input.properties, ctx, 200),
        None => object_not_found(&corr),
    }
}

/// `DELETE …/objects/contacts/{id}`: archives (recycle bin, readable with `archived=true`);
/// 204. [I] HubSpot documents only the 204: unknown or already archived ids get it too, as in
/// batch archive, and a merged-away id archives its survivor, as PATCH resolves it.
pub fn archive<R: Rng>(store: &mut Store, id: &str, ctx: &mut Ctx<'_, R>) -> Reply {
    if let Some(id) = store.lookup_survivor(None, id) {
        store.archive(id, ctx.now_ms, ctx.now_us);
    }
    Reply::empty(204)
}

/// `POST …/objects/contacts/gdpr-delete`: purges the contact for good and blocklists its emails;
/// an email no contact holds is blocklisted all the same; 204 [D: the gdpr-delete reference].
/// [I] An id or unique value that finds nothing answers 404, as a read of it would.
pub fn gdpr_delete<R: Rng>(store: &mut Store, body: &[u8], ctx: &mut Ctx<'_, R>) -> Reply {
    let corr = ctx.correlation.clone();
    let input: GdprInput = match parse(body, &corr) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    let id_property = input
        .id_property
        .as_deref()
        .filter(|p| *p != "hs_object_id");
    if let Err(reply) = check_id_property(store, id_property, "gdpr-delete", true, &corr) {
        return reply;
    }
    if purge(store, id_property, &id_text(&input.object_id), ctx.now_us) {
        Reply::empty(204)
    } else {
        object_not_found(&corr)
    }
}

/// Purges the contact `value` names (by id when `id_property` is `None`) and blocklists its
/// emails, or blocklists `value` when it is an email no contact holds. False when neither.
pub fn purge(store: &mut Store, id_property: Option<&str>, value: &str, now_us: u64) -> bool {
    match store.lookup_survivor(id_property, value) {
        Some(id) => {
            if let Some(contact) = store.purge(id, now_us) {
                for address in contact.addresses() {
                    store.blocklist(address);
                }
            }
            true
        }
        None if id_property.is_some_and(|p| store.property(p).is_some_and(|d| d.email)) => {
            store.blocklist(value);
            true
        }
        None => false,
    }
}

/// The live (not archived) contact an id (merged-away ones resolved) or unique value names.
fn live(store: &Store, id_property: Option<&str>, value: &str) -> Option<u64> {
    store
        .lookup_survivor(id_property, value)
        .filter(|&id| store.get(id).is_some_and(|c| !c.archived()))
}

/// One checked write answering the contact with `ok`.
fn write_one<R: Rng>(
    store: &mut Store,
    target: Target,
    properties: &BTreeMap<String, Value>,
    ctx: &mut Ctx<'_, R>,
    ok: u16,
) -> Reply {
    let corr = ctx.correlation.clone();
    let changes = match check_write(
        store,
        target,
        properties,
        &mut HashMap::new(),
        0,
        ctx.enforce_required,
    ) {
        Ok(changes) => changes,
        Err(problems) => return Reply::json(400, validation_body(&problems, &corr)),
    };
    if let Some(reply) = email_conflict(store, target, &changes, &corr) {
        return reply;
    }
    let id = apply(store, target, changes, ctx);
    match store.get(id) {
        Some(contact) => Reply::json(ok, contact.to_json_all()),
        None => object_not_found(&corr),
    }
}

#[cfg(test)]
mod tests {
    use super::super::properties::default_properties;
    use super::*;

    #[test]
    fn a_gdpr_delete_purges_and_blocklists_every_address() {
        let mut store = Store::new(default_properties(), 0);
        let values = [
            ("email".to_owned(), "a@x.cr".to_owned()),
            ("hs_additional_emails".to_owned(), "b@x.cr".to_owned()),
        ];
        let id = store.create(values.into(), 0, 0, None, None);
        assert!(purge(&mut store, None, &id.to_string(), 0));
        assert_eq!(store.get(id), None);
        assert!(store.is_blocklisted("A@x.cr") && store.is_blocklisted("b@x.cr"));
        assert!(purge(&mut store, Some("email"), "Nobody@x.cr", 0));
        assert!(store.is_blocklisted("nobody@x.cr"));
        assert!(!purge(&mut store, None, "4242", 0));
        assert!(!purge(&mut store, Some("numero_asociado"), "77", 0));
    }
}
