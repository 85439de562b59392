//! The read endpoints' semantics: list (paging, `archived=true` in any case), get by id, search
//! (filters, one sort, `limit` ≤ 200, `after` paging, the 10,000-result cap) and property
//! definitions. Requested properties that are not defined are left out. Pure over the store.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Value, json};

use super::batch::{check_id_property, parse};
use super::errors::{Reply, bad_request, object_not_found};
use super::properties::{PropertyDef, PropertyType};
use super::store::{Contact, DEFAULT_READ, Store};
use super::validate::{normalize, parse_timestamp_ms};

/// Largest list page.
pub const MAX_LIST: usize = 100;
/// Largest search page.
pub const MAX_SEARCH_PAGE: usize = 200;
/// Results one search query can page through.
pub const SEARCH_CAP: usize = 10_000;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;
const MAX_QUERY: usize = 3_000;

/// Query parameters of list, get and batch read; `properties` may be comma-separated and/or
/// repeated.
#[derive(Debug, Default, Clone)]
pub struct ReadParams {
    pub limit: Option<String>,
    pub after: Option<String>,
    pub properties: Vec<String>,
    pub archived: bool,
    pub id_property: Option<String>,
}

impl ReadParams {
    /// Parses a raw query string (`None` = no query).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "limit" => params.limit = Some(value.into_owned()),
                "after" => params.after = Some(value.into_owned()),
                // The Python SDK sends `archived=True`.
                "archived" => params.archived = value.eq_ignore_ascii_case("true"),
                "idProperty" => params.id_property = Some(value.into_owned()),
                "properties" => params.properties.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
        params
    }

    fn properties(&self, store: &Store) -> Vec<String> {
        requested(store, self.properties.clone())
    }
}

/// The properties a read returns: the defaults when none are asked for, else those asked for
/// that are defined (HubSpot leaves unknown names out) plus id and timestamps.
pub fn requested(store: &Store, mut names: Vec<String>) -> Vec<String> {
    if names.is_empty() {
        return DEFAULT_READ.iter().map(|s| (*s).to_owned()).collect();
    }
    names.retain(|n| store.property(n).is_some());
    for always in ["hs_object_id", "createdate", "lastmodifieddate"] {
        if !names.iter().any(|n| n == always) {
            names.push(always.to_owned());
        }
    }
    names
}

/// `GET …/objects/contacts`: pages in id order; `after` is the next record's id. `objects_url`
/// is the absolute URL of the path the request came in on, for `paging.next.link`.
pub fn list(store: &Store, params: &ReadParams, objects_url: &str, corr: &str) -> Reply {
    let limit = match params.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if n >= 1 => n.min(MAX_LIST),
        Some(_) => return bad_request("limit must be a positive integer", corr),
    };
    let after = match params.after.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_request("after must be an integer", corr),
    };
    let archived = params.archived;
    let properties = params.properties(store);
    let mut page = store.range_from(after).filter(|c| c.archived() == archived);
    let results: Vec<Value> = page
        .by_ref()
        .take(limit)
        .map(|c| c.to_json(&properties))
        .collect();
    let mut body = json!({"results": results});
    if let Some(next) = page.next() {
        let link = format!("{objects_url}?limit={limit}&after={}", next.id);
        body["paging"] = json!({"next": {"after": next.id.to_string(), "link": link}});
    }
    Reply::json(200, body)
}

/// `GET …/objects/contacts/{id}` (or by `idProperty`); a merged-away id answers the record it
/// was merged into, under that record's id.
pub fn get(store: &Store, id: &str, params: &ReadParams, corr: &str) -> Reply {
    let id_property = params
        .id_property
        .as_deref()
        .filter(|p| *p != "hs_object_id");
    if let Err(reply) = check_id_property(store, id_property, "read", true, corr) {
        return reply;
    }
    let archived = params.archived;
    match store
        .lookup_survivor(id_property, id)
        .and_then(|id| store.get(id))
        .filter(|c| c.archived() == archived)
    {
        Some(contact) => Reply::json(200, contact.to_json(&params.properties(store))),
        None => object_not_found(corr),
    }
}

/// `GET …/properties/contacts`.
pub fn properties(store: &Store) -> Reply {
    let results: Vec<Value> = store.properties.iter().map(PropertyDef::to_json).collect();
    Reply::json(200, json!({"results": results}))
}

/// `GET …/properties/contacts/{name}`.
pub fn property(store: &Store, name: &str, corr: &str) -> Reply {
    match store.property(name) {
        Some(def) => Reply::json(200, def.to_json()),
        None => Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Unable to find property {name}"),
            corr,
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    /// Sort rules; the spec types them as strings, which HubSpot ignores.
    #[serde(default)]
    sorts: Vec<Value>,
    #[serde(default)]
    properties: Vec<String>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    after: Option<Value>,
    #[serde(default)]
    query: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FilterGroup {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    high_value: Option<Value>,
    #[serde(default)]
    values: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sort {
    property_name: String,
    #[serde(default)]
    direction: Option<String>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn integer(value: Option<&Value>, default: usize, what: &str, corr: &str) -> Result<usize, Reply> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => text(v).parse::<usize>().map_err(|_| {
            bad_request(
                format!("{what} must be a non-negative integer, got {v}"),
                corr,
            )
        }),
    }
}

/// A comparable form of a property value, by the property's type.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Text(String),
}

/// A contact's comparable value; identity and timestamps come from the record's own fields
/// rather than being parsed again.
fn contact_key(def: &PropertyDef, contact: &Contact) -> Option<Key> {
    match def.name.as_str() {
        "hs_object_id" => Some(Key::Number(contact.id as f64)),
        "createdate" => Some(Key::Number(contact.created_ms as f64)),
        "lastmodifieddate" | "hs_lastmodifieddate" => Some(Key::Number(contact.updated_ms as f64)),
        name => contact.get(name).and_then(|v| key(def, v)),
    }
}

fn key(def: &PropertyDef, value: &str) -> Option<Key> {
    match def.kind {
        PropertyType::Number => value.trim().parse::<f64>().ok().map(Key::Number),
        PropertyType::DateTime => parse_timestamp_ms(value).map(|ms| Key::Number(ms as f64)),
        PropertyType::Date => normalize(def, value).ok().map(Key::Text),
        PropertyType::Enumeration => Some(Key::Text(value.to_owned())),
        PropertyType::String | PropertyType::Bool => Some(Key::Text(value.to_lowercase())),
    }
}

fn compare(a: &Key, b: &Key) -> Option<Ordering> {
    a.partial_cmp(b)
}

/// `*`-wildcard match of a lowercased pattern against a lowercased value.
fn wildcard(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return value
            .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
            .any(|t| t == pattern)
            || value == pattern;
    }
    if !value.starts_with(first) || !value.ends_with(last) || value.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A filter checked against the store's definitions, ready to evaluate.
struct Compiled<'a> {
    def: &'a PropertyDef,
    operator: &'a str,
    value: Option<Key>,
    high: Option<Key>,
    values: Vec<Key>,
    raw: String,
    /// Contacts have no `hs_lastmodifieddate` in search (they use `lastmodifieddate`): a filter
    /// on it matches nothing, whatever the operator.
    never: bool,
}

fn compile<'a>(store: &'a Store, filter: &'a Filter, corr: &str) -> Result<Compiled<'a>, Reply> {
    let name = filter.property_name.as_str();
    let def = store
        .property(name)
        .ok_or_else(|| bad_request(format!("Property \"{name}\" does not exist"), corr))?;
    let convert = |v: &Value| -> Result<Key, Reply> {
        key(def, &text(v)).ok_or_else(|| {
            bad_request(
                format!(
                    "{} is not a valid value to compare with {name} ({})",
                    text(v),
                    def.kind.as_str()
                ),
                corr,
            )
        })
    };
    let operator = filter.operator.as_str();
    let needs_value = matches!(
        operator,
        "EQ" | "NEQ" | "LT" | "LTE" | "GT" | "GTE" | "BETWEEN"
    );
    let needs_values = matches!(operator, "IN" | "NOT_IN");
    let known = needs_value
        || needs_values
        || matches!(
            operator,
            "HAS_PROPERTY" | "NOT_HAS_PROPERTY" | "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN"
        );
    if !known {
        return Err(bad_request(
            format!("Unknown filter operator {operator}"),
            corr,
        ));
    }
    let value = match (&filter.value, needs_value) {
        (Some(v), true) => Some(convert(v)?),
        (None, true) => {
            return Err(bad_request(
                format!("Filter {operator} on {name} needs a value"),
                corr,
            ));
        }
        _ => None,
    };
    let high = match (&filter.high_value, operator) {
        (Some(v), "BETWEEN") => Some(convert(v)?),
        (None, "BETWEEN") => {
            return Err(bad_request(
                format!("Filter BETWEEN on {name} needs a highValue"),
                corr,
            ));
        }
        _ => None,
    };
    // IN / NOT_IN on strings compare the given values exactly with the lowercased stored ones:
    // HubSpot asks for lowercase values.
    let exact = |v: &Value| match def.kind {
        PropertyType::String | PropertyType::Bool => Ok(Key::Text(text(v))),
        _ => convert(v),
    };
    let values = match (&filter.values, needs_values) {
        (Some(vs), true) => vs.iter().map(exact).collect::<Result<Vec<_>, _>>()?,
        (None, true) => {
            return Err(bad_request(
                format!("Filter {operator} on {name} needs values"),
                corr,
            ));
        }
        _ => Vec::new(),
    };
    let raw = filter
        .value
        .as_ref()
        .map(text)
        .unwrap_or_default()
        .to_lowercase();
    Ok(Compiled {
        def,
        operator,
        value,
        high,
        values,
        raw,
        never: name == "hs_lastmodifieddate",
    })
}

impl Compiled<'_> {
    fn matches(&self, contact: &Contact) -> bool {
        if self.never {
            return false;
        }
        let stored = contact.get(&self.def.name);
        if self.operator == "HAS_PROPERTY" {
            return stored.is_some();
        }
        if self.operator == "NOT_HAS_PROPERTY" {
            return stored.is_none();
        }
        if self.operator == "CONTAINS_TOKEN" || self.operator == "NOT_CONTAINS_TOKEN" {
            let found = stored.is_some_and(|v| wildcard(&self.raw, &v.to_lowercase()));
            return found == (self.operator == "CONTAINS_TOKEN");
        }
        let Some(actual) = contact_key(self.def, contact) else {
            return matches!(self.operator, "NEQ" | "NOT_IN");
        };
        let cmp = |k: &Option<Key>| k.as_ref().and_then(|k| compare(&actual, k));
        match self.operator {
            "EQ" => cmp(&self.value) == Some(Ordering::Equal),
            "NEQ" => cmp(&self.value) != Some(Ordering::Equal),
            "LT" => cmp(&self.value) == Some(Ordering::Less),
            "LTE" => matches!(cmp(&self.value), Some(Ordering::Less | Ordering::Equal)),
            "GT" => cmp(&self.value) == Some(Ordering::Greater),
            "GTE" => matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal)),
            "BETWEEN" => {
                matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(cmp(&self.high), Some(Ordering::Less | Ordering::Equal))
            }
            "IN" => self
                .values
                .iter()
                .any(|v| compare(&actual, v) == Some(Ordering::Equal)),
            "NOT_IN" => !self
                .values
                .iter()
                .any(|v| compare(&actual, v) == Some(Ordering::Equal)),
            _ => false,
        }
    }
}

/// Properties free-text `query` looks in.
const QUERY_PROPERTIES: &[&str] = &["email", "firstname", "lastname", "phone", "mobilephone"];

/// `POST …/objects/contacts/search` over the contacts search currently sees.
pub fn search(store: &mut Store, body: &[u8], now_us: u64, corr: &str) -> Reply {
    store.refresh_index(now_us);
    let store: &Store = store;
    let request: SearchRequest = match parse(body, corr) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let limit = match integer(request.limit.as_ref(), 10, "limit", corr) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    if limit > MAX_SEARCH_PAGE {
        return bad_request(
            format!("limit must be at most {MAX_SEARCH_PAGE}, got {limit}"),
            corr,
        );
    }
    let after = match integer(request.after.as_ref(), 0, "after", corr) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    if after >= SEARCH_CAP {
        return bad_request(
            format!(
                "Search results are limited to {SEARCH_CAP}; after={after} pages past that limit. Narrow the filters instead of paging further."
            ),
            corr,
        );
    }
    let groups = &request.filter_groups;
    let total_filters: usize = groups.iter().map(|g| g.filters.len()).sum();
    if groups.len() > MAX_GROUPS
        || groups
            .iter()
            .any(|g| g.filters.len() > MAX_FILTERS_PER_GROUP)
        || total_filters > MAX_FILTERS
    {
        return bad_request(
            format!(
                "Too many filters: at most {MAX_GROUPS} filterGroups of {MAX_FILTERS_PER_GROUP} filters, {MAX_FILTERS} filters in total"
            ),
            corr,
        );
    }
    let query = request
        .query
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    if query
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY)
    {
        return bad_request(format!("query is longer than {MAX_QUERY} characters"), corr);
    }
    let mut compiled = Vec::new();
    for group in groups {
        let mut filters = Vec::new();
        for filter in &group.filters {
            match compile(store, filter, corr) {
                Ok(c) => filters.push(c),
                Err(reply) => return reply,
            }
        }
        compiled.push(filters);
    }
    // Only one rule is honoured; plain-string rules (the spec's type) are ignored.
    let rule = request.sorts.iter().find(|s| s.is_object()).cloned();
    let rule = match rule.map(serde_json::from_value::<Sort>).transpose() {
        Ok(rule) => rule,
        Err(e) => return bad_request(format!("Invalid sort: {e}"), corr),
    };
    let sort = match rule {
        Some(sort) => match store.property(&sort.property_name) {
            Some(def) => Some((def.clone(), sort.direction.as_deref() == Some("DESCENDING"))),
            None => {
                return bad_request(
                    format!("Property \"{}\" does not exist", sort.property_name),
                    corr,
                );
            }
        },
        None => None,
    };
    let properties = requested(store, request.properties.clone());
    let defs = store.properties.clone();
    let created = defs.iter().find(|d| d.name == "createdate").cloned();
    let mut hits: Vec<&Contact> = store
        .searchable()
        .into_iter()
        .filter(|c| compiled.is_empty() || compiled.iter().any(|g| g.iter().all(|f| f.matches(c))))
        .filter(|c| {
            query.as_ref().is_none_or(|q| {
                QUERY_PROPERTIES.iter().any(|p| {
                    c.get(p)
                        .is_some_and(|v| v.to_lowercase().contains(q.as_str()))
                })
            })
        })
        .collect();
    let (sort_def, descending) = match (&sort, &created) {
        (Some((def, desc)), _) => (Some(def), *desc),
        (None, created) => (created.as_ref(), false),
    };
    if let Some(def) = sort_def {
        // Keys are computed once per hit, not once per comparison.
        let mut keyed: Vec<(Option<Key>, &Contact)> =
            hits.into_iter().map(|c| (contact_key(def, c), c)).collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            let order = match (ka, kb) {
                (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let order = if descending { order.reverse() } else { order };
            order.then(a.id.cmp(&b.id))
        });
        hits = keyed.into_iter().map(|(_, c)| c).collect();
    }
    let total = hits.len();
    let end = (after + limit).min(total).min(SEARCH_CAP);
    let results: Vec<Value> = hits
        .get(after.min(end)..end)
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_json(&properties))
        .collect();
    let mut body = json!({"total": total, "results": results});
    if end < total {
        body["paging"] = json!({"next": {"after": end.to_string()}});
    }
    Reply::json(200, body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::properties::default_properties;
    use super::*;

    fn store_with(n: usize) -> Store {
        let mut store = Store::new(default_properties(), 0);
        for i in 0..n {
            let values: BTreeMap<String, String> = [
                ("email".to_owned(), format!("socio{i}@coop.cr")),
                (
                    "salario_neto_semanal_o_quincenal".to_owned(),
                    (i * 1000).to_string(),
                ),
            ]
            .into();
            store.create(values, 1_700_000_000_000 + i as i64, 0, None, None);
        }
        store
    }

    fn run(store: &mut Store, request: Value) -> Reply {
        search(store, request.to_string().as_bytes(), 0, "c")
    }

    #[test]
    fn filters_sort_and_page() {
        let mut store = store_with(30);
        let request = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "salario_neto_semanal_o_quincenal", "operator": "GTE", "value": "5000"},
                {"propertyName": "lastmodifieddate", "operator": "LTE", "value": "1700000000020"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
            "limit": 5, "properties": ["email"]});
        let reply = run(&mut store, request);
        let body = reply.body.unwrap_or_default();
        assert_eq!(body["total"], 16);
        assert_eq!(body["results"][0]["properties"]["email"], "socio20@coop.cr");
        assert_eq!(body["paging"]["next"]["after"], "5");
    }

    #[test]
    fn in_has_property_and_tokens() {
        let mut store = store_with(5);
        let by_in = run(
            &mut store,
            json!({"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "IN", "values": ["socio1@coop.cr", "SOCIO3@coop.cr"]}]}]}),
        );
        // Case-sensitive: only the lowercase value matches.
        assert_eq!(by_in.body.unwrap_or_default()["total"], 1);
        let none = run(
            &mut store,
            json!({"filterGroups": [{"filters": [
            {"propertyName": "firstname", "operator": "HAS_PROPERTY"}]}]}),
        );
        assert_eq!(none.body.unwrap_or_default()["total"], 0);
        let token = run(
            &mut store,
            json!({"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@coop.cr"}]}]}),
        );
        assert_eq!(token.body.unwrap_or_default()["total"], 5);
    }

    #[test]
    fn limit_and_cap_are_enforced() {
        let mut store = store_with(3);
        assert_eq!(run(&mut store, json!({"limit": 201})).status, 400);
        assert_eq!(run(&mut store, json!({"after": "10000"})).status, 400);
        assert_eq!(
            run(&mut store, json!({"after": "9999", "limit": 1})).status,
            200
        );
        let too_many = json!({"filterGroups": [{"filters": (0..7).map(|_| json!(
            {"propertyName": "email", "operator": "HAS_PROPERTY"})).collect::<Vec<_>>()}]});
        assert_eq!(run(&mut store, too_many).status, 400);
    }

    #[test]
    fn read_params_take_comma_separated_and_repeated_properties() {
        let p = ReadParams::parse(Some(
            "properties=email,firstname&properties=lastname&archived=true&limit=5",
        ));
        assert_eq!(p.properties, ["email", "firstname", "lastname"]);
        assert!(p.archived);
        assert_eq!(p.limit.as_deref(), Some("5"));
        assert!(!ReadParams::parse(None).archived);
    }

    #[test]
    fn wildcard_tokens() {
        assert!(wildcard("*@x.com", "a@x.com"));
        assert!(!wildcard("*@x.com", "a@y.com"));
        assert!(wildcard("ana", "ana maría"));
        assert!(wildcard("a*c*e", "abcde"));
    }
}
