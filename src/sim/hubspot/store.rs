//! The simulator's in-memory contact store: records, the lowercased-email and unique-property
//! indexes, write timestamps, archiving, and the search index with its optional lag. Pure (time
//! is passed in).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::properties::PropertyDef;
use super::validate::format_ms;

/// First id handed out; ids are numeric strings like HubSpot's.
const FIRST_ID: u64 = 1001;

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
    contacts: BTreeMap<u64, Contact>,
    by_email: HashMap<String, u64>,
    by_unique: HashMap<(String, String), u64>,
    next_id: u64,
    index_lag_us: u64,
    /// Search's view when there is a lag: id → contact as last indexed.
    indexed: BTreeMap<u64, Contact>,
    /// Writes waiting to be indexed: (visible at, id, new state or None when archived).
    pending: VecDeque<(u64, u64, Option<Contact>)>,
}

impl Store {
    pub fn new(properties: Vec<PropertyDef>, index_lag_us: u64) -> Self {
        Self {
            properties,
            rules: Default::default(),
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            by_unique: HashMap::new(),
            next_id: FIRST_ID,
            index_lag_us,
            indexed: BTreeMap::new(),
            pending: VecDeque::new(),
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
        let mut contact = Contact {
            id,
            properties: values,
            created_ms: created,
            updated_ms: modified,
            archived_ms: None,
        };
        contact
            .properties
            .insert("hs_object_id".into(), id.to_string());
        contact
            .properties
            .insert("createdate".into(), format_ms(created));
        stamp(&mut contact, modified);
        self.index_keys(&contact);
        self.contacts.insert(id, contact);
        self.reindex(id, now_us);
        id
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
        for (name, value) in changes {
            match value {
                Some(v) => contact.properties.insert(name.clone(), v.clone()),
                None => contact.properties.remove(name),
            };
        }
        let modified = now_ms.max(contact.updated_ms + 1);
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

    fn index_keys(&mut self, contact: &Contact) {
        if contact.archived() {
            return;
        }
        for (name, value) in &contact.properties {
            if let Some(def) = self.properties.iter().find(|p| &p.name == name) {
                if def.email {
                    self.by_email.insert(value.clone(), contact.id);
                } else if def.unique {
                    self.by_unique
                        .insert((name.clone(), value.clone()), contact.id);
                }
            }
        }
    }

    fn unindex_keys(&mut self, contact: &Contact) {
        for (name, value) in &contact.properties {
            if self.by_email.get(value) == Some(&contact.id) && name == "email" {
                self.by_email.remove(value);
            }
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
