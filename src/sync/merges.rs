//! HubSpot merges: a contact merged into another answers reads by its old id with the survivor,
//! lists the ids merged into it in `hs_merged_object_ids`, and is left out of batch updates.
//! Decides from read answers and record links where a member's link goes (it follows the
//! survivor) and when a merge joined the contacts of several members (a data problem: every
//! one of them is rejected, naming the others). Pure, but for the log line of a merge followed.

use std::collections::{BTreeSet, HashMap};

use super::links::Link;
use crate::hubspot::types::Record;
use crate::queue::ItemError;

/// The property listing the ids merged into a contact, `;`-separated.
pub const MERGED_IDS: &str = "hs_merged_object_ids";

/// A record link that follows a merged contact to its survivor; applied (and logged) with its
/// item when the item is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub item_id: i64,
    pub sql_key: String,
    /// The id the link held.
    pub from: String,
    /// The survivor's id.
    pub to: String,
}

impl Merge {
    /// The `MERGE` operation line: old id, new id and member key (never a value).
    pub fn log(&self, object: &str, direction: &str, batch_id: &str) {
        tracing::info!(
            operation = "MERGE",
            object,
            direction,
            record_key = %self.sql_key,
            hubspot_id = %self.to,
            old_hubspot_id = %self.from,
            batch_id,
            status = "done",
            message = "HubSpot merged the member's contact: its link follows the survivor",
        );
    }
}

/// Every id a contact answers to: its own first, then those merged into it.
pub fn ids_of(id: &str, merged: Option<&str>) -> Vec<String> {
    let mut ids = vec![id.trim().to_string()];
    for old in merged.unwrap_or_default().split(';').map(str::trim) {
        if !old.is_empty() && !ids.iter().any(|i| i == old) {
            ids.push(old.to_string());
        }
    }
    ids
}

/// [`ids_of`] a record as HubSpot returned it.
pub fn record_ids(record: &Record) -> Vec<String> {
    ids_of(&record.id, record.property(MERGED_IDS))
}

/// The links held on any of `ids` (from `links`, by HubSpot id), one per member, ordered by SQL
/// key: the members a contact with those ids belongs to.
pub fn owners<'l>(ids: &[String], links: &'l HashMap<String, Link>) -> Vec<&'l Link> {
    let mut owners: Vec<&Link> = ids.iter().filter_map(|id| links.get(id)).collect();
    owners.sort_by(|a, b| a.sql_key.cmp(&b.sql_key));
    owners.dedup_by(|a, b| a.sql_key == b.sql_key);
    owners
}

/// Where a member's change goes, after reading the contact its link holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// HubSpot has no such contact (deleted, purged).
    Gone,
    /// The linked contact itself (perhaps with others merged into it).
    Same,
    /// Merged into `to`, which no other member is linked to: the link follows.
    Moved { from: String, to: String },
    /// Merged with the contact of other members (`others`, their SQL keys) into `survivor`.
    Shared {
        survivor: String,
        others: Vec<String>,
    },
}

/// Follows member `member`'s link (`linked`, the id it holds) to what a read by that id answered;
/// `links` holds the links of the ids the answer carries (others' links matter; the member's own
/// may be there or not).
pub fn follow(
    member: &str,
    linked: &str,
    record: Option<&Record>,
    links: &HashMap<String, Link>,
) -> Follow {
    let Some(record) = record else {
        return Follow::Gone;
    };
    let others: Vec<String> = owners(&record_ids(record), links)
        .into_iter()
        .filter(|l| l.sql_key != member)
        .map(|l| l.sql_key.clone())
        .collect();
    if !others.is_empty() {
        return Follow::Shared {
            survivor: record.id.clone(),
            others,
        };
    }
    if record.id == linked.trim() {
        Follow::Same
    } else {
        Follow::Moved {
            from: linked.trim().to_string(),
            to: record.id.clone(),
        }
    }
}

/// Whether a read answer may show a merge: another id than the one asked for, or ids merged in.
pub fn shows_merge(linked: &str, record: &Record) -> bool {
    record.id != linked.trim() || record.property(MERGED_IDS).is_some()
}

/// Every id the answers that [`shows_merge`] carry: the ids whose links decide [`follow`].
pub fn ids_to_check<'r>(
    answers: impl IntoIterator<Item = (&'r str, Option<&'r Record>)>,
) -> Vec<String> {
    let ids: BTreeSet<String> = answers
        .into_iter()
        .filter_map(|(linked, record)| record.filter(|r| shows_merge(linked, r)))
        .flat_map(record_ids)
        .collect();
    ids.into_iter().collect()
}

/// The error of member `member`, whose contact HubSpot merged with those of `others` into
/// `survivor`: one contact cannot hold several members.
pub fn shared_error(member: &str, survivor: &str, others: &[String]) -> ItemError {
    let them = match others {
        [one] => format!("member {one}"),
        many => format!("members {}", many.join(", ")),
    };
    ItemError {
        rule: Some("one_member_per_contact".into()),
        ..ItemError::new(
            "merge",
            format!(
                "HubSpot merged the contact of member {member} with that of {them} into \
                 contact {survivor}: one contact cannot hold several members; separate them in \
                 HubSpot or SQL Server, then retry"
            ),
        )
    }
}

/// The error of a HubSpot change to contact `survivor`, which merges the contacts of `members`.
pub fn merged_members_error(survivor: &str, members: &[Link]) -> ItemError {
    let keys: Vec<&str> = members.iter().map(|l| l.sql_key.as_str()).collect();
    ItemError {
        rule: Some("one_member_per_contact".into()),
        ..ItemError::new(
            "merge",
            format!(
                "HubSpot contact {survivor} merges the contacts of members {}: one contact cannot \
                 hold several members; separate them in HubSpot or SQL Server, then retry",
                keys.join(" and ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, merged: Option<&str>) -> Record {
        Record {
            id: id.into(),
            properties: merged
                .map(|m| (MERGED_IDS.to_string(), Some(m.to_string())))
                .into_iter()
                .collect(),
            ..Record::default()
        }
    }

    fn linked(pairs: &[(&str, &str)]) -> HashMap<String, Link> {
        pairs
            .iter()
            .map(|(key, id)| {
                let link = Link {
                    sql_key: (*key).into(),
                    hubspot_id: Some((*id).into()),
                    synced: Default::default(),
                    sql_version: None,
                    hubspot_version: None,
                };
                ((*id).to_string(), link)
            })
            .collect()
    }

    #[test]
    fn a_contact_answers_to_its_id_and_every_id_merged_into_it() {
        assert_eq!(ids_of("30", Some("10; 20;;10")), ["30", "10", "20"]);
        assert_eq!(ids_of(" 7 ", None), ["7"]);
        assert_eq!(record_ids(&record("3", Some("1;2"))), ["3", "1", "2"]);
    }

    #[test]
    fn a_link_to_a_merged_away_id_follows_the_survivor() {
        let links = linked(&[("A", "1")]);
        let survivor = record("3", Some("1;2"));
        assert_eq!(
            follow("A", "1", Some(&survivor), &links),
            Follow::Moved {
                from: "1".into(),
                to: "3".into()
            }
        );
        // The member's own link need not have been loaded.
        assert_eq!(
            follow("A", "1", Some(&survivor), &HashMap::new()),
            Follow::Moved {
                from: "1".into(),
                to: "3".into()
            }
        );
    }

    #[test]
    fn the_primary_that_kept_its_id_stays_and_a_missing_contact_is_gone() {
        let links = linked(&[("A", "1")]);
        assert_eq!(
            follow("A", "1", Some(&record("1", Some("5"))), &links),
            Follow::Same,
            "an unlinked contact merged into the member's"
        );
        assert_eq!(
            follow("A", "1", Some(&record("1", None)), &links),
            Follow::Same
        );
        assert_eq!(follow("A", "1", None, &links), Follow::Gone);
    }

    #[test]
    fn contacts_of_two_members_merged_are_shared_whichever_id_survives() {
        let links = linked(&[("A", "1"), ("B", "2")]);
        let shared = |survivor: &str, other: &str| Follow::Shared {
            survivor: survivor.into(),
            others: vec![other.into()],
        };
        // A new id: both old ids listed.
        let new = record("3", Some("1;2"));
        assert_eq!(follow("A", "1", Some(&new), &links), shared("3", "B"));
        assert_eq!(follow("B", "2", Some(&new), &links), shared("3", "A"));
        // The primary's id kept: its own member sees the other through the merged ids.
        let kept = record("1", Some("2"));
        assert_eq!(follow("A", "1", Some(&kept), &links), shared("1", "B"));
        assert_eq!(follow("B", "2", Some(&kept), &links), shared("1", "A"));
        // A survivor another member is linked to already.
        let taken = linked(&[("A", "1"), ("C", "3")]);
        let answer = record("3", Some("1"));
        assert_eq!(follow("A", "1", Some(&answer), &taken), shared("3", "C"));
    }

    #[test]
    fn owners_are_one_per_member_in_key_order() {
        let links = linked(&[("B", "2"), ("A", "1")]);
        let keys = |ids: &[&str]| -> Vec<String> {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            owners(&ids, &links)
                .iter()
                .map(|l| l.sql_key.clone())
                .collect()
        };
        assert_eq!(keys(&["3", "2", "1"]), ["A", "B"]);
        assert_eq!(keys(&["1", "1"]), ["A"]);
        assert!(keys(&["9"]).is_empty());
    }

    #[test]
    fn only_answers_that_show_a_merge_are_checked() {
        let plain = record("1", None);
        let moved = record("3", Some("2"));
        let merged_in = record("4", Some("5"));
        let ids = ids_to_check([
            ("1", Some(&plain)),
            ("2", Some(&moved)),
            ("4", Some(&merged_in)),
            ("6", None),
        ]);
        assert_eq!(ids, ["2", "3", "4", "5"]);
    }

    #[test]
    fn a_merge_logs_one_line_with_both_ids_and_the_member_key() {
        let merge = Merge {
            item_id: 7,
            sql_key: "10045".into(),
            from: "37765128953".into(),
            to: "37765128999".into(),
        };
        let text = crate::telemetry::logged(|| merge.log("contacts", "to_hubspot", "b-1"));
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        for (field, value) in [
            ("operation", "MERGE"),
            ("object", "contacts"),
            ("direction", "to_hubspot"),
            ("record_key", "10045"),
            ("old_hubspot_id", "37765128953"),
            ("hubspot_id", "37765128999"),
            ("batch_id", "b-1"),
            ("status", "done"),
        ] {
            assert_eq!(line[field], value, "{field}: {text}");
        }
    }

    #[test]
    fn errors_name_the_other_members_and_the_survivor() {
        let e = shared_error("17", "3", &["42".into()]);
        assert_eq!(e.kind, "merge");
        assert!(e.message.contains("member 17"), "{}", e.message);
        assert!(e.message.contains("member 42"), "{}", e.message);
        assert!(e.message.contains("contact 3"), "{}", e.message);
        let many = shared_error("17", "3", &["42".into(), "43".into()]);
        assert!(many.message.contains("members 42, 43"), "{}", many.message);
        let links = linked(&[("17", "1"), ("42", "2")]);
        let owners: Vec<Link> = owners(&["3".into(), "1".into(), "2".into()], &links)
            .into_iter()
            .cloned()
            .collect();
        let e = merged_members_error("3", &owners);
        assert!(e.message.contains("members 17 and 42"), "{}", e.message);
    }
}
