//! The simulator's in-memory contact store: records, the lowercased-email (additional emails
//! included) and unique-property indexes, write timestamps, archiving, merges (merged-away ids
//! resolving to their survivor), GDPR purges with their email blocklist, and the search index
//! with its optional lag. Pure (time is passed in).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::properties::PropertyDef;
use super::validate::format_ms;

/// First id handed out; ids are numeric strings like HubSpot's.
const FIRST_ID: u64 = 1001;

/// The secondary addresses a merge leaves on the survivor, `;`-separated; unique across
/// contacts like `email`.
pub const ADDITIONAL_EMAILS: &str = "hs_additional_emails";

/// One stored contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: u64,
    /// Property values (absent = no value); includes hs_object_id, createdate,
    /// lastmodifieddate and hs_lastmodifieddate.
    pub properties: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived_ms: Option<i64>,
}

impl Contact {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    pub fn archived(&self) -> bool {
        self.archived_ms.is_some()
    }

    /// HubSpot's object JSON with the given properties (`null` for those without a value).
    pub fn to_json(&self, properties: &[String]) -> Value {
        let mut props = Map::new();
        for name in properties {
            let value = self
                .get(name)
                .map_or(Value::Null, |v| Value::String(v.to_owned()));
            props.insert(name.clone(), value);
        }
        self.with_properties(props)
    }

    /// HubSpot's object JSON with every property that has a value.
    pub fn to_json_all(&self) -> Value {
        let props: Map<String, Value> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.with_properties(props)
    }

    /// The addresses the contact holds: its email, then its additional emails.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        let additional = self.get(ADDITIONAL_EMAILS).unwrap_or_default().split(';');
        self.get("email")
            .into_iter()
            .chain(additional.map(str::trim).filter(|a| !a.is_empty()))
    }

    fn with_properties(&self, props: Map<String, Value>) -> Value {
        let mut object = json!({
            "id": self.id.to_string(),
            "properties": props,
            "createdAt": format_ms(self.created_ms),
            "updatedAt": format_ms(self.updated_ms),
            "archived": self.archived(),
        });
        if let Some(at) = self.archived_ms {
            object["archivedAt"] = Value::String(format_ms(at));
        }
        object
    }
}

/// The properties a read returns when none are requested.
pub const DEFAULT_READ: &[&str] = &[
    "createdate",
    "email",
    "firstname",
    "lastname",
    "hs_object_id",
    "lastmodifieddate",
];

/// Contacts plus indexes. Live writes are visible at once to reads; search sees them after
/// `index_lag_us`.
#[derive(Debug)]
pub struct Store {
    pub properties: Vec<PropertyDef>,
    /// The portal's write rules (property validations, required properties).
    pub rules: super::rules::PortalRules,
    /// Merges keep the primary's id (HubSpot's "primary ID preservation for merged records"
    /// beta) rather than making a new record with a new id.
    pub keep_primary_id: bool,
    contacts: BTreeMap<u64, Contact>,
    /// Merged-away id → the live record it now resolves to (kept current through later merges).
    merged_into: HashMap<u64, u64>,
    /// Merges each record has taken part in, its predecessors' included (absent = none).
    merge_counts: HashMap<u64, u32>,
    /// Lowercased emails a GDPR delete has blocklisted.
    blocklist: HashSet<String>,
    by_email: HashMap<String, u64>,
    by_unique: HashMap<(String, String), u64>,
    next_id: u64,
    index_lag_us: u64,
    /// Search's view when there is a lag: id → contact as last indexed.
    indexed: BTreeMap<u64, Contact>,
    /// Writes waiting to be indexed: (visible at, id, new state or None when archived).
    pending: VecDeque<(u64, u64, Option<Contact>)>,
    /// Every value an update changed, when kept (see [`Store::keep_history`]).
    history: Option<Vec<Change>>,
}

/// One property value an update changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: u64,
    /// The contact's modification time the update gave it (epoch ms).
    pub at_ms: i64,
    pub property: String,
    pub value: Option<String>,
}

impl Store {
    pub fn new(properties: Vec<PropertyDef>, index_lag_us: u64) -> Self {
        Self {
            properties,
            rules: Default::default(),
            keep_primary_id: false,
            contacts: BTreeMap::new(),
            merged_into: HashMap::new(),
            merge_counts: HashMap::new(),
            blocklist: HashSet::new(),
            by_email: HashMap::new(),
            by_unique: HashMap::new(),
            next_id: FIRST_ID,
            index_lag_us,
            indexed: BTreeMap::new(),
            pending: VecDeque::new(),
            history: None,
        }
    }

    pub fn property(&self, name: &str) -> Option<&PropertyDef> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Whether `name` can key a lookup (`idProperty`): email or a unique property.
    pub fn is_id_property(&self, name: &str) -> bool {
        self.property(name).is_some_and(|p| p.email || p.unique)
    }

    /// Whether `name` is a custom property with `hasUniqueValue` (email is not one).
    pub fn is_unique_property(&self, name: &str) -> bool {
        self.property(name).is_some_and(|p| p.unique && !p.email)
    }

    pub fn get(&self, id: u64) -> Option<&Contact> {
        self.contacts.get(&id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// All contacts, archived ones included, in id order.
    pub fn all(&self) -> impl Iterator<Item = &Contact> {
        self.contacts.values()
    }

    /// Contacts with id ≥ `from`, in id order.
    pub fn range_from(&self, from: u64) -> impl Iterator<Item = &Contact> {
        self.contacts.range(from..).map(|(_, c)| c)
    }

    /// Resolves a lookup value: by id (no `id_property`), by lowercased email, or by a unique
    /// property. Archived contacts are only found by id.
    pub fn lookup(&self, id_property: Option<&str>, value: &str) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => value
                .trim()
                .parse()
                .ok()
                .filter(|id| self.contacts.contains_key(id)),
            Some(name) => {
                if self.property(name).is_some_and(|p| p.email) {
                    self.by_email.get(&value.trim().to_lowercase()).copied()
                } else {
                    self.by_unique
                        .get(&(name.to_owned(), value.to_owned()))
                        .copied()
                }
            }
        }
    }

    /// Like `lookup`, but a merged-away id resolves to the record it was merged into, as
    /// HubSpot's reads and single-object writes do.
    pub fn lookup_survivor(&self, id_property: Option<&str>, value: &str) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => {
                let id: u64 = value.trim().parse().ok()?;
                if self.contacts.contains_key(&id) {
                    Some(id)
                } else {
                    self.merged_into.get(&id).copied()
                }
            }
            Some(_) => self.lookup(id_property, value),
        }
    }

    /// Whether `value` is an id that was merged into another record.
    pub fn merged_away(&self, value: &str) -> bool {
        value
            .trim()
            .parse()
            .is_ok_and(|id: u64| self.merged_into.contains_key(&id))
    }

    /// Merges the record `id` has taken part in.
    pub fn merge_count(&self, id: u64) -> u32 {
        self.merge_counts.get(&id).copied().unwrap_or(0)
    }

    /// Whether a GDPR delete blocklisted this email (any case).
    pub fn is_blocklisted(&self, email: &str) -> bool {
        self.blocklist.contains(&email.trim().to_lowercase())
    }

    /// Blocklists an email (any case): it can no longer be given to a contact.
    pub fn blocklist(&mut self, email: &str) {
        self.blocklist.insert(email.trim().to_lowercase());
    }

    /// The live contact holding `value` for an email or unique property, if any.
    pub fn holder(&self, name: &str, value: &str) -> Option<u64> {
        self.lookup(Some(name), value)
    }

    /// Creates a contact with already validated values; `created_ms` defaults to `now_ms`.
    pub fn create(
        &mut self,
        values: BTreeMap<String, String>,
        now_ms: i64,
        now_us: u64,
        created_ms: Option<i64>,
        modified_ms: Option<i64>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let created = created_ms.unwrap_or(modified_ms.map_or(now_ms, |m| m.min(now_ms)));
        let modified = modified_ms.unwrap_or(now_ms.max(created));
        self.insert_new(id, values, created, modified, now_us);
        id
    }

    /// Stores a new live record under `id` with its identity and timestamps set.
    fn insert_new(
        &mut self,
        id: u64,
        values: BTreeMap<String, String>,
        created_ms: i64,
        modified_ms: i64,
        now_us: u64,
    ) {
        let mut contact = Contact {
            id,
            properties: values,
            created_ms,
            updated_ms: modified_ms,
            archived_ms: None,
        };
        contact
            .properties
            .insert("hs_object_id".into(), id.to_string());
        contact
            .properties
            .insert("createdate".into(), format_ms(created_ms));
        stamp(&mut contact, modified_ms);
        self.index_keys(&contact);
        self.contacts.insert(id, contact);
        self.reindex(id, now_us);
    }

    /// Applies validated changes (`None` clears) and bumps the modification time, strictly past
    /// the previous one.
    pub fn update(
        &mut self,
        id: u64,
        changes: &BTreeMap<String, Option<String>>,
        now_ms: i64,
        now_us: u64,
    ) {
        let Some(mut contact) = self.contacts.remove(&id) else {
            return;
        };
        self.unindex_keys(&contact);
        let modified = now_ms.max(contact.updated_ms + 1);
        for (name, value) in changes {
            let before = match value {
                Some(v) => contact.properties.insert(name.clone(), v.clone()),
                None => contact.properties.remove(name),
            };
            if let Some(history) = self.history.as_mut()
                && before.as_ref() != value.as_ref()
            {
                history.push(Change {
                    id,
                    at_ms: modified,
                    property: name.clone(),
                    value: value.clone(),
                });
            }
        }
        stamp(&mut contact, modified);
        self.index_keys(&contact);
        self.contacts.insert(id, contact);
        self.reindex(id, now_us);
    }

    /// Moves a contact to the recycle bin (frees its email and unique values).
    pub fn archive(&mut self, id: u64, now_ms: i64, now_us: u64) -> bool {
        let Some(mut contact) = self.contacts.remove(&id) else {
            return false;
        };
        if contact.archived() {
            self.contacts.insert(id, contact);
            return false;
        }
        self.unindex_keys(&contact);
        contact.archived_ms = Some(now_ms);
        self.contacts.insert(id, contact);
        self.reindex(id, now_us);
        true
    }

    /// Replaces `primary` and `other` (both live) with one record holding `values` (already
    /// merged): a new record with a new id, or the primary under its own id when
    /// `keep_primary_id`. The merged-away ids resolve to it from then on, and so do the ids
    /// merged into either before. Its modification time is the merge time, strictly past both
    /// records'. Returns its id.
    pub fn merge(
        &mut self,
        primary: u64,
        other: u64,
        values: BTreeMap<String, String>,
        now_ms: i64,
        now_us: u64,
    ) -> Option<u64> {
        let first = self.contacts.remove(&primary)?;
        let Some(second) = self.contacts.remove(&other) else {
            self.contacts.insert(primary, first);
            return None;
        };
        self.unindex_keys(&first);
        self.unindex_keys(&second);
        let id = if self.keep_primary_id {
            primary
        } else {
            self.next_id += 1;
            self.next_id - 1
        };
        let gone: Vec<u64> = [primary, other].into_iter().filter(|&g| g != id).collect();
        for target in self.merged_into.values_mut() {
            if gone.contains(target) {
                *target = id;
            }
        }
        for &g in &gone {
            self.merged_into.insert(g, id);
        }
        let merges = self.merge_count(primary) + self.merge_count(other) + 1;
        for g in &gone {
            self.merge_counts.remove(g);
        }
        self.merge_counts.insert(id, merges);
        let created = first.created_ms.min(second.created_ms);
        let modified = now_ms.max(first.updated_ms.max(second.updated_ms) + 1);
        for &g in &gone {
            self.reindex(g, now_us);
        }
        self.insert_new(id, values, created, modified, now_us);
        Some(id)
    }

    /// Removes a contact for good (GDPR delete): no read, list or id finds it again, the ids
    /// merged into it included. Returns what it held.
    pub fn purge(&mut self, id: u64, now_us: u64) -> Option<Contact> {
        let contact = self.contacts.remove(&id)?;
        self.unindex_keys(&contact);
        self.merged_into.retain(|_, target| *target != id);
        self.merge_counts.remove(&id);
        self.reindex(id, now_us);
        Some(contact)
    }

    fn index_keys(&mut self, contact: &Contact) {
        if contact.archived() {
            return;
        }
        for address in contact.addresses() {
            self.by_email.insert(address.to_owned(), contact.id);
        }
        for (name, value) in &contact.properties {
            if self.is_unique_property(name) {
                self.by_unique
                    .insert((name.clone(), value.clone()), contact.id);
            }
        }
    }

    fn unindex_keys(&mut self, contact: &Contact) {
        for address in contact.addresses() {
            if self.by_email.get(address) == Some(&contact.id) {
                self.by_email.remove(address);
            }
        }
        for (name, value) in &contact.properties {
            let key = (name.clone(), value.clone());
            if self.by_unique.get(&key) == Some(&contact.id) {
                self.by_unique.remove(&key);
            }
        }
    }

    fn reindex(&mut self, id: u64, now_us: u64) {
        if self.index_lag_us == 0 {
            return;
        }
        let state = self.contacts.get(&id).filter(|c| !c.archived()).cloned();
        self.pending
            .push_back((now_us + self.index_lag_us, id, state));
    }

    /// Keeps every value updates change from now on (off by default: a load of many contacts
    /// would hold them all), or stops keeping them.
    pub fn keep_history(&mut self, keep: bool) {
        self.history = keep.then(|| self.history.take().unwrap_or_default());
    }

    /// The values updates gave `property` of contact `id` while history was kept, oldest
    /// first: (modification time in epoch ms, value).
    pub fn history_of(&self, id: u64, property: &str) -> Vec<(i64, Option<String>)> {
        self.history
            .iter()
            .flatten()
            .filter(|c| c.id == id && c.property == property)
            .map(|c| (c.at_ms, c.value.clone()))
            .collect()
    }

    /// When the last write made so far becomes visible to search (None: all are).
    pub fn indexed_by_us(&self) -> Option<u64> {
        self.pending.back().map(|(at, _, _)| *at)
    }

    /// Makes writes whose index lag has passed at `now_us` visible to search.
    pub fn refresh_index(&mut self, now_us: u64) {
        while let Some((at, _, _)) = self.pending.front() {
            if *at > now_us {
                break;
            }
            if let Some((_, id, state)) = self.pending.pop_front() {
                match state {
                    Some(contact) => self.indexed.insert(id, contact),
                    None => self.indexed.remove(&id),
                };
            }
        }
    }

    /// The contacts search sees: live ones without lag, otherwise those indexed so far (call
    /// `refresh_index` first).
    pub fn searchable(&self) -> Vec<&Contact> {
        if self.index_lag_us == 0 {
            self.contacts.values().filter(|c| !c.archived()).collect()
        } else {
            self.indexed.values().collect()
        }
    }
}

fn stamp(contact: &mut Contact, modified_ms: i64) {
    contact.updated_ms = modified_ms;
    let text = format_ms(modified_ms);
    contact
        .properties
        .insert("lastmodifieddate".into(), text.clone());
    contact
        .properties
        .insert("hs_lastmodifieddate".into(), text);
}

#[cfg(test)]
mod tests {
    use super::super::properties::default_properties;
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn create_sets_identity_and_timestamps() {
        let mut store = Store::new(default_properties(), 0);
        let id = store.create(
            values(&[("email", "a@x.cr")]),
            1_700_000_000_000,
            0,
            None,
            None,
        );
        let c = store
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("created contact missing"));
        assert_eq!(c.get("hs_object_id"), Some(id.to_string().as_str()));
        assert_eq!(c.get("createdate"), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(c.get("lastmodifieddate"), c.get("hs_lastmodifieddate"));
        assert_eq!(store.lookup(Some("email"), "A@X.cr"), Some(id));
    }

    #[test]
    fn update_bumps_modification_strictly_and_moves_the_email_index() {
        let mut store = Store::new(default_properties(), 0);
        let id = store.create(values(&[("email", "a@x.cr")]), 5_000, 0, None, None);
        let change: BTreeMap<String, Option<String>> =
            [("email".to_owned(), Some("b@x.cr".to_owned()))].into();
        store.update(id, &change, 5_000, 0);
        assert_eq!(store.get(id).map(|c| c.updated_ms), Some(5_001));
        assert_eq!(store.lookup(Some("email"), "a@x.cr"), None);
        assert_eq!(store.lookup(Some("email"), "b@x.cr"), Some(id));
    }

    #[test]
    fn history_keeps_the_values_updates_changed_once_asked() {
        let mut store = Store::new(default_properties(), 0);
        let id = store.create(values(&[("firstname", "Ana")]), 1_000, 0, None, None);
        let set = |v: &str| -> BTreeMap<String, Option<String>> {
            [("firstname".to_owned(), Some(v.to_owned()))].into()
        };
        store.update(id, &set("Eva"), 2_000, 0);
        store.keep_history(true);
        store.update(id, &set("Eva"), 3_000, 0);
        store.update(id, &set("Luz"), 4_000, 0);
        store.update(id, &[("firstname".to_owned(), None)].into(), 5_000, 0);
        assert_eq!(
            store.history_of(id, "firstname"),
            vec![(4_000, Some("Luz".to_owned())), (5_000, None)]
        );
        assert!(store.history_of(id, "lastname").is_empty());
        store.keep_history(false);
        assert!(store.history_of(id, "firstname").is_empty());
    }

    #[test]
    fn merged_away_ids_follow_their_survivor_through_later_merges() {
        let mut store = Store::new(default_properties(), 0);
        let a = store.create(values(&[("email", "a@x.cr")]), 10, 0, None, None);
        let b = store.create(values(&[("email", "b@x.cr")]), 20, 0, None, None);
        let merged = values(&[("email", "a@x.cr"), (ADDITIONAL_EMAILS, "b@x.cr")]);
        let ab = store.merge(a, b, merged, 30, 0);
        let ab = ab.unwrap_or_else(|| panic!("merge refused"));
        assert!(ab != a && ab != b, "a new record");
        assert_eq!((store.get(a), store.get(b)), (None, None));
        assert_eq!(store.lookup_survivor(None, &a.to_string()), Some(ab));
        assert_eq!(store.lookup(None, &a.to_string()), None);
        assert_eq!(store.lookup(Some("email"), "b@x.cr"), Some(ab));
        assert_eq!(store.get(ab).map(|c| c.created_ms), Some(10));
        store.keep_primary_id = true;
        let c = store.create(BTreeMap::new(), 40, 0, None, None);
        assert_eq!(store.merge(c, ab, BTreeMap::new(), 50, 0), Some(c));
        assert_eq!(store.lookup_survivor(None, &b.to_string()), Some(c));
        assert_eq!(store.merge_count(c), 2);
        assert_eq!(
            store.lookup(Some("email"), "a@x.cr"),
            None,
            "values as given"
        );
    }

    #[test]
    fn search_sees_writes_only_after_the_lag_and_never_archived_ones() {
        let mut store = Store::new(default_properties(), 1_000);
        let id = store.create(values(&[("firstname", "Ana")]), 0, 10, None, None);
        let visible = |store: &mut Store, now: u64| {
            store.refresh_index(now);
            store.searchable().len()
        };
        assert_eq!(visible(&mut store, 500), 0);
        assert_eq!(visible(&mut store, 1_010), 1);
        store.archive(id, 0, 2_000);
        assert_eq!(visible(&mut store, 2_500), 1);
        assert_eq!(visible(&mut store, 3_000), 0);
        assert_eq!(store.lookup(None, &id.to_string()), Some(id));
    }
}
