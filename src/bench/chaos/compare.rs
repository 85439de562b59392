//! The scenario's verdict: both systems compared directly, member by member and field by field,
//! against what the edits add up to. Counts lost edits per direction, duplicates, conflicts
//! recorded where only one side changed, and whether each field edited on both sides was
//! settled by the policy. Pure: the caller reads SQL Server, HubSpot and `sync_conflicts`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::edits::{Expect, Expected};
use crate::demo::watch::Conflict;
use crate::mapping::{Mapper, SqlRow};
use crate::sim::hubspot::SimContact;

/// What is compared.
pub struct Sides<'a> {
    /// Every member as first loaded, by key (`numero_asociado`).
    pub members: &'a BTreeMap<String, SqlRow>,
    /// Keys of the members the mapping accepts.
    pub valid: &'a BTreeSet<String>,
    /// SQL Server's rows now, by key.
    pub sql: &'a HashMap<String, SqlRow>,
    /// HubSpot's contacts now.
    pub contacts: &'a [SimContact],
    /// `sync_conflicts`, oldest first.
    pub conflicts: &'a [Conflict],
    pub expected: &'a Expected,
    pub mapper: &'a Mapper,
}

/// One thing found wrong with one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    pub text: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the comparison found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// HubSpot edits SQL Server does not hold (or HubSpot no longer holds).
    pub lost_to_sql: Vec<Finding>,
    /// … of which HubSpot no longer holds the edit: overwritten there by SQL Server's value.
    pub overwritten_in_hubspot: usize,
    /// SQL Server edits HubSpot does not hold (or SQL Server no longer holds).
    pub lost_to_hubspot: Vec<Finding>,
    /// … of which SQL Server no longer holds the edit: overwritten there by HubSpot's value.
    pub overwritten_in_sql: usize,
    /// HubSpot contacts beyond the first of a member.
    pub duplicates: usize,
    /// Valid members with no HubSpot contact.
    pub missing: Vec<String>,
    /// Contacts of invalid or unknown members.
    pub unexpected: Vec<String>,
    /// Conflicts recorded for a field not edited on both sides.
    pub false_conflicts: Vec<Finding>,
    /// Fields edited on both sides.
    pub conflicts: usize,
    /// … of which both sides hold one of the two edits, a conflict is recorded and its winner's
    /// value is the one both hold.
    pub settled: usize,
    pub unsettled: Vec<Finding>,
    /// Settled conflicts by recorded winner (`sql`, `hubspot`).
    pub winners: BTreeMap<String, usize>,
    /// Fields not edited that differ between the two systems, or from the member's row.
    pub differing: Vec<String>,
    /// Fields compared.
    pub fields_checked: usize,
}

fn sql_text(row: Option<&SqlRow>, field: &str) -> Option<String> {
    row?.get(field)?.as_str().map(str::to_string)
}

fn hubspot_text(contact: Option<&SimContact>, field: &str) -> Option<String> {
    contact?
        .get(field)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub fn compare(s: &Sides<'_>) -> Findings {
    let mut f = Findings::default();
    let mut by_key: BTreeMap<&str, Vec<&SimContact>> = BTreeMap::new();
    for c in s.contacts.iter().filter(|c| !c.archived()) {
        by_key
            .entry(c.get("numero_asociado").unwrap_or(""))
            .or_default()
            .push(c);
    }
    for (key, contacts) in &by_key {
        f.duplicates += contacts.len() - 1;
        if !s.valid.contains(*key) {
            f.unexpected.push(format!(
                "contact {} for member {key:?}, which is not a valid member",
                contacts[0].id
            ));
        }
    }
    let mut recorded: BTreeMap<(&str, &str), &Conflict> = BTreeMap::new();
    for c in s.conflicts {
        recorded.insert((c.sql_key.as_str(), c.field.as_str()), c);
    }
    for ((key, field), c) in &recorded {
        let both = matches!(
            s.expected.fields.get(&(key.to_string(), field_name(field))),
            Some(Expect::Both { .. })
        );
        if !both {
            f.false_conflicts.push(Finding {
                key: key.to_string(),
                text: format!(
                    "member {key} {field}: conflict recorded (SQL Server {:?} vs HubSpot {:?}, {} \
                     won) though only one side changed it",
                    c.sql_value, c.hubspot_value, c.winner
                ),
            });
        }
    }
    for key in s.valid {
        let Some(contact) = by_key.get(key.as_str()).map(|cs| cs[0]) else {
            f.missing.push(format!("member {key} is not in HubSpot"));
            continue;
        };
        let row = s.sql.get(key);
        let Some(actual) = row else {
            f.missing
                .push(format!("member {key} is gone from SQL Server"));
            continue;
        };
        let mut edited = BTreeSet::new();
        for ((k, field), expect) in s.expected.fields.range((key.clone(), "")..) {
            if k != key {
                break;
            }
            edited.insert(*field);
            f.fields_checked += 1;
            let (sql, hs) = (sql_text(row, field), hubspot_text(Some(contact), field));
            let when = s
                .expected
                .at
                .get(&(key.clone(), *field))
                .map_or(String::new(), |t| {
                    format!(" at {}", t.format("%H:%M:%S%.3f"))
                });
            let finding = |what: String| Finding {
                key: key.clone(),
                text: format!(
                    "member {key} {field}: {what}{when}; SQL Server has {sql:?}, HubSpot {hs:?}"
                ),
            };
            match expect {
                Expect::Sql(v) if sql.as_ref() != Some(v) || hs.as_ref() != Some(v) => {
                    f.overwritten_in_sql += usize::from(sql.as_ref() != Some(v));
                    f.lost_to_hubspot
                        .push(finding(format!("edited to {v:?} in SQL Server")));
                }
                Expect::Hubspot(v) if sql.as_ref() != Some(v) || hs.as_ref() != Some(v) => {
                    f.overwritten_in_hubspot += usize::from(hs.as_ref() != Some(v));
                    f.lost_to_sql
                        .push(finding(format!("edited to {v:?} in HubSpot")));
                }
                Expect::Both { sql: a, hubspot: b } => {
                    f.conflicts += 1;
                    let conflict = recorded.get(&(key.as_str(), *field));
                    let winner_value = conflict.map(|c| if c.winner == "sql" { a } else { b });
                    let problem = if sql != hs {
                        Some("the two sides differ")
                    } else if sql.as_ref() != Some(a) && sql.as_ref() != Some(b) {
                        Some("the value is neither edit")
                    } else if conflict.is_none() {
                        Some("no conflict recorded")
                    } else if sql.as_ref() != winner_value {
                        Some("the value is not the recorded winner's")
                    } else {
                        None
                    };
                    let recorded = conflict.map_or(String::new(), |c| {
                        format!(" (conflict recorded, {} won)", c.winner)
                    });
                    match problem {
                        None => {
                            f.settled += 1;
                            let winner = conflict.map_or("", |c| c.winner.as_str());
                            *f.winners.entry(winner.to_string()).or_default() += 1;
                        }
                        Some(problem) => f.unsettled.push(finding(format!(
                            "SQL Server {a:?} vs HubSpot {b:?}: {problem}{recorded}"
                        ))),
                    }
                }
                Expect::Sql(_) | Expect::Hubspot(_) => {}
            }
        }
        let now = s.mapper.to_hubspot(actual);
        if !now.is_valid() {
            f.differing.push(format!(
                "member {key}: its SQL Server row is no longer valid: {:?}",
                now.errors
            ));
        }
        let first = s.members.get(key).map(|m| s.mapper.to_hubspot(m));
        for (prop, value) in &now.properties {
            if edited.contains(prop.as_str()) {
                continue;
            }
            f.fields_checked += 1;
            let hs = hubspot_text(Some(contact), prop);
            let loaded = first.as_ref().and_then(|m| m.properties.get(prop));
            if hs.as_ref() != value.as_ref() {
                f.differing.push(format!(
                    "member {key} {prop}: SQL Server {value:?}, HubSpot {hs:?}"
                ));
            } else if loaded.is_some_and(|l| l != value) {
                f.differing.push(format!(
                    "member {key} {prop}: {value:?} on both sides, loaded as {loaded:?}"
                ));
            }
        }
    }
    f
}

/// The `&'static str` the expected model keys a field by.
fn field_name(field: &str) -> &'static str {
    use super::edits::{HUBSPOT_FIELD, SQL_FIELD};
    match field {
        f if f == SQL_FIELD => SQL_FIELD,
        f if f == HUBSPOT_FIELD => HUBSPOT_FIELD,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::hubspot::{RunningSim, SimOptions};

    fn mapper() -> Mapper {
        let config = crate::config::load_str(
            crate::demo::config::SHIPPED,
            crate::config::Need::Nothing,
            &|_| None,
        )
        .unwrap();
        Mapper::new(&config.objects["contacts"]).unwrap()
    }

    struct World {
        members: BTreeMap<String, SqlRow>,
        valid: BTreeSet<String>,
        sql: HashMap<String, SqlRow>,
        sim: RunningSim,
        conflicts: Vec<Conflict>,
        expected: Expected,
        mapper: Mapper,
    }

    /// Three valid members, in step on both sides except as `adjust` changes a contact.
    async fn world(adjust: impl Fn(&str, &mut crate::mapping::Properties)) -> World {
        let mapper = mapper();
        let mut rng = rand::SeedableRng::seed_from_u64(4);
        let rows: Vec<SqlRow> = (0..3)
            .map(|i| crate::bench::validate::member_row(i, &mut rng))
            .collect();
        let sim = crate::sim::hubspot::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
            .await
            .unwrap();
        let mut props = Vec::new();
        for row in &rows {
            let mapped = mapper.to_hubspot(row);
            assert!(mapped.is_valid(), "{:?}", mapped.errors);
            let mut p = mapped.properties;
            adjust(&row["numero_asociado"].to_string(), &mut p);
            props.push(p);
        }
        sim.seed_contacts(&props).unwrap();
        let members: BTreeMap<String, SqlRow> = rows
            .iter()
            .map(|r| (r["numero_asociado"].to_string(), r.clone()))
            .collect();
        World {
            valid: members.keys().cloned().collect(),
            sql: members.clone().into_iter().collect(),
            members,
            sim,
            conflicts: Vec::new(),
            expected: Expected::default(),
            mapper,
        }
    }

    fn run(w: &World) -> Findings {
        let contacts = w.sim.contacts();
        compare(&Sides {
            members: &w.members,
            valid: &w.valid,
            sql: &w.sql,
            contacts: &contacts,
            conflicts: &w.conflicts,
            expected: &w.expected,
            mapper: &w.mapper,
        })
    }

    fn set_sql(w: &mut World, key: &str, field: &str, value: &str) {
        w.sql
            .get_mut(key)
            .unwrap()
            .insert(field.into(), value.into());
    }

    fn in_step(_: &str, _: &mut crate::mapping::Properties) {}

    #[tokio::test]
    async fn systems_in_step_show_nothing() {
        let w = world(in_step).await;
        let f = run(&w);
        assert!(f.missing.is_empty() && f.differing.is_empty(), "{f:?}");
        assert!(
            f.unexpected.is_empty() && f.false_conflicts.is_empty(),
            "{f:?}"
        );
        assert_eq!((f.duplicates, f.conflicts), (0, 0));
        assert!(f.fields_checked > 30, "{f:?}");
    }

    #[tokio::test]
    async fn an_edit_on_one_side_only_is_lost_in_its_direction() {
        let mut w = world(in_step).await;
        // SQL Server's surname edit never reached HubSpot; HubSpot's first name edit did not
        // reach SQL Server.
        set_sql(&mut w, "1", "lastname", "Brenes Calvo");
        w.expected
            .fields
            .insert(("1".into(), "lastname"), Expect::Sql("Brenes Calvo".into()));
        w.expected
            .fields
            .insert(("2".into(), "firstname"), Expect::Hubspot("Xinia".into()));
        let f = run(&w);
        assert_eq!(f.lost_to_hubspot.len(), 1, "{f:?}");
        assert_eq!(f.lost_to_sql.len(), 1, "{f:?}");
        assert!(
            f.differing.is_empty(),
            "edited fields are not counted twice: {f:?}"
        );
        // A field nobody edited that differs.
        set_sql(&mut w, "3", "telefono_habitacion", "2222-3333");
        assert!(!run(&w).differing.is_empty());
    }

    #[tokio::test]
    async fn a_conflict_is_settled_when_both_hold_the_recorded_winner() {
        let mut w = world(|key, p| {
            if key == "1" {
                p.insert("firstname".into(), Some("Ana Paty".into()));
            }
        })
        .await;
        w.expected.fields.insert(
            ("1".into(), "firstname"),
            Expect::Both {
                sql: "Ana Patricia".into(),
                hubspot: "Ana Paty".into(),
            },
        );
        // Both sides hold HubSpot's edit, but nothing recorded a conflict.
        set_sql(&mut w, "1", "firstname", "Ana Paty");
        let f = run(&w);
        assert_eq!((f.conflicts, f.settled), (1, 0), "{f:?}");
        assert!(
            f.unsettled[0].text.contains("no conflict recorded"),
            "{f:?}"
        );
        let conflict = |winner: &str| Conflict {
            sql_key: "1".into(),
            field: "firstname".into(),
            sql_value: Some("Ana Patricia".into()),
            hubspot_value: Some("Ana Paty".into()),
            winner: winner.into(),
        };
        w.conflicts = vec![conflict("hubspot")];
        let f = run(&w);
        assert_eq!((f.conflicts, f.settled), (1, 1), "{f:?}");
        assert_eq!(f.winners.get("hubspot"), Some(&1));
        w.conflicts = vec![conflict("sql")];
        assert_eq!(run(&w).settled, 0, "the value is not the winner's");
        // A conflict recorded for a field only one side changed.
        w.conflicts.push(Conflict {
            field: "lastname".into(),
            ..conflict("sql")
        });
        assert_eq!(run(&w).false_conflicts.len(), 1);
    }

    #[tokio::test]
    async fn missing_and_unexpected_members_are_counted() {
        let mut w = world(in_step).await;
        let mut stranger = w.mapper.to_hubspot(&w.members["1"]).properties;
        stranger.insert("email".into(), Some("stranger@example.com".into()));
        stranger.insert("numero_asociado".into(), Some("77".into()));
        w.sim.seed_contacts(&[stranger]).unwrap();
        let mut row = w.members["1"].clone();
        row.insert("numero_asociado".into(), 99.into());
        w.members.insert("99".into(), row.clone());
        w.valid.insert("99".into());
        w.sql.insert("99".into(), row);
        let f = run(&w);
        assert_eq!((f.missing.len(), f.unexpected.len()), (1, 1), "{f:?}");
    }
}
