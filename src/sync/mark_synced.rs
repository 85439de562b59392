//! Marking an object synced (`hubsync mark-synced`): after a manual bulk fix, the current
//! values of both sides become the baseline where they agree, so the fix is neither sent back
//! nor taken for conflicts; fields where the sides still differ keep their snapshot and are
//! left to the sync (and its conflict policy) to settle. The comparison is pure.

use serde::Serialize;

use super::diff::Values;
use super::engine::ObjectSync;
use crate::hubspot::ReadBy;

/// What marking one linked record synced changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rebase {
    pub record_key: String,
    pub hubspot_id: Option<String>,
    /// Fields both sides agree on whose snapshot is rewritten to that value (values kept out
    /// of the printed line).
    #[serde(skip)]
    pub set: Values,
    /// Names of the fields in `set`.
    pub fields: Vec<String>,
    /// Fields whose sides differ now: their snapshot stays.
    pub differ: Vec<String>,
    /// Why the record was left alone (its SQL row or HubSpot record is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<&'static str>,
}

fn norm(v: Option<&Option<String>>) -> Option<&str> {
    v.and_then(|v| v.as_deref()).filter(|s| !s.is_empty())
}

/// For each of `fields`: where `sql` (mapped) and `hubspot` agree and the snapshot differs,
/// the agreed value; where they differ, the field's name. Pure.
pub fn rebase(
    fields: &[String],
    sql: &Values,
    hubspot: &Values,
    synced: &Values,
) -> (Values, Vec<String>) {
    let mut set = Values::new();
    let mut differ = Vec::new();
    for f in fields {
        let (a, b) = (norm(sql.get(f)), norm(hubspot.get(f)));
        if a != b {
            differ.push(f.clone());
        } else if norm(synced.get(f)) != a {
            set.insert(f.clone(), a.map(str::to_string));
        }
    }
    (set, differ)
}

/// Compares every linked record of `object` (page by page) and, unless `dry_run`, rewrites the
/// snapshots; `each` gets every record with something to report.
pub async fn run(
    object: &ObjectSync,
    pool: &sqlx::PgPool,
    dry_run: bool,
    mut each: impl FnMut(&Rebase),
) -> anyhow::Result<Summary> {
    let mapper = &object.to_hubspot.mapper;
    let fields: Vec<String> = mapper.fields().map(|f| f.hubspot.clone()).collect();
    let props: Vec<&str> = fields.iter().map(String::as_str).collect();
    let client = &object.to_hubspot.client;
    let reader = &object.poller.reader;
    let mut summary = Summary::default();
    let mut after: Option<String> = None;
    loop {
        let links = super::links::page(pool, &object.name, after.as_deref(), 100).await?;
        let Some(last) = links.last() else { break };
        after = Some(last.sql_key.clone());
        let keys: Vec<String> = links.iter().map(|l| l.sql_key.clone()).collect();
        let ids: Vec<String> = links.iter().filter_map(|l| l.hubspot_id.clone()).collect();
        let rows = reader.rows_by_keys(&keys).await?;
        let records = client
            .batch_read(&object.to_hubspot.hubspot_object, &ReadBy::Id, &ids, &props)
            .await?;
        let by_id: std::collections::HashMap<String, Values> = records
            .into_iter()
            .flatten()
            .map(|r| (r.id.clone(), r.properties))
            .collect();
        let mut updates = Vec::new();
        for link in &links {
            summary.links += 1;
            let mut r = Rebase {
                record_key: link.sql_key.clone(),
                hubspot_id: link.hubspot_id.clone(),
                ..Rebase::default()
            };
            let hubspot = link.hubspot_id.as_ref().and_then(|id| by_id.get(id));
            match (rows.get(&link.sql_key), hubspot) {
                (None, _) => r.missing = Some("no SQL Server row"),
                (_, None) => r.missing = Some("no HubSpot record"),
                (Some(row), Some(hubspot)) => {
                    let sql = mapper.to_hubspot(row).properties;
                    (r.set, r.differ) = rebase(&fields, &sql, hubspot, &link.synced);
                    r.fields = r.set.keys().cloned().collect();
                }
            }
            summary.missing += u64::from(r.missing.is_some());
            summary.rewritten += u64::from(!r.set.is_empty());
            summary.fields += r.set.len() as u64;
            summary.differ += r.differ.len() as u64;
            if r.missing.is_some() || !r.set.is_empty() || !r.differ.is_empty() {
                each(&r);
            }
            if !r.set.is_empty() {
                updates.push((r.record_key.clone(), r.set));
            }
        }
        if !dry_run && !updates.is_empty() {
            super::links::merge_synced(pool, &object.name, &updates).await?;
        }
    }
    Ok(summary)
}

/// Figures of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub links: u64,
    /// Links whose snapshot is (or would be) rewritten, and their fields.
    pub rewritten: u64,
    pub fields: u64,
    /// Fields whose sides differ (left to the sync).
    pub differ: u64,
    pub missing: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sync::diff::values;

    #[test]
    fn agreeing_sides_become_the_baseline_and_differing_ones_are_named() {
        let fields: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let sql = values(&[
            ("a", Some("new")),
            ("b", Some("x")),
            ("c", Some("")),
            ("d", Some("same")),
        ]);
        let hubspot = values(&[
            ("a", Some("new")),
            ("b", Some("y")),
            ("c", None),
            ("d", Some("same")),
        ]);
        let synced = values(&[
            ("a", Some("old")),
            ("b", Some("x")),
            ("c", Some("gone")),
            ("d", Some("same")),
        ]);
        let (set, differ) = rebase(&fields, &sql, &hubspot, &synced);
        assert_eq!(set, values(&[("a", Some("new")), ("c", None)]));
        assert_eq!(differ, ["b"]);
        let (set, differ) = rebase(&fields, &sql, &sql, &sql);
        assert!(set.is_empty() && differ.is_empty());
    }
}
