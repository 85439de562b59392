//! The edits the scenario makes while the daemon lives and dies, the way people would: SQL
//! Server UPDATEs of members' surnames, first names changed through HubSpot's API
//! (`batch/update`), and the same first name edited on both sides before either is synced; in
//! batches of up to 100, at seeded moments. Keeps what they add up to: per member and field, the
//! value both systems must hold at the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::stand::Stand;
use crate::demo::changes::{BothSides, Changes, Edit, Editor, FIRST_NAMES};
use crate::demo::stand::OBJECT;
use crate::mapping::SqlRow;

/// The field SQL Server edits change.
pub const SQL_FIELD: &str = "lastname";
/// The field HubSpot edits, and edits on both sides, change.
pub const HUBSPOT_FIELD: &str = "firstname";
/// Most edits in one batch (HubSpot's batch limit).
const BATCH: usize = crate::hubspot::BATCH_LIMIT;

const SURNAMES: &[&str] = &[
    "Quesada",
    "Ulate",
    "Brenes",
    "Calvo",
    "Zúñiga",
    "Montero",
    "Alfaro",
    "Sequeira",
    "Madrigal",
    "Porras",
    "Camacho",
    "Villalobos",
    "Solano",
    "Chaves",
    "Arias",
    "Vargas",
];

/// The last edit of one member's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Edited in SQL Server: HubSpot must get it.
    Sql(String),
    /// Edited in HubSpot: SQL Server must get it.
    Hubspot(String),
    /// Edited on both sides before either was synced: a conflict for the policy.
    Both { sql: String, hubspot: String },
}

/// What the edits add up to.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// (member key, field) → its last edit.
    pub fields: BTreeMap<(String, &'static str), Expect>,
    /// (member key, field) → when its last edit was made.
    pub at: BTreeMap<(String, &'static str), DateTime<Utc>>,
    pub sql_edits: usize,
    pub hubspot_edits: usize,
    pub both_edits: usize,
    pub batches: usize,
    /// HubSpot API requests the edits made.
    pub requests: u64,
    /// Members whose first name was edited in HubSpot only; never edited on both sides.
    hubspot_edited: HashSet<String>,
    /// Members edited on both sides; never edited in HubSpot only.
    conflicted: HashSet<String>,
}

impl Expected {
    /// The value `key`'s `field` should hold now: its last edit, else the member's row.
    fn current(&self, key: &str, field: &'static str, row: &SqlRow) -> String {
        match self.fields.get(&(key.to_string(), field)) {
            Some(Expect::Sql(v) | Expect::Hubspot(v)) => v.clone(),
            Some(Expect::Both { hubspot, .. }) => hubspot.clone(),
            None => row
                .get(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// The members the edits may touch: the valid ones, by key.
pub struct Members {
    pub rows: BTreeMap<String, SqlRow>,
    pub valid: Vec<String>,
}

/// A value of `field` different from `current`.
fn new_value(field: &str, current: &str, rng: &mut impl Rng) -> String {
    loop {
        let value = if field == SQL_FIELD {
            let two: Vec<&&str> = SURNAMES.choose_multiple(rng, 2).collect();
            format!("{} {}", two[0], two[1])
        } else if rng.random_bool(0.5) {
            FIRST_NAMES
                .choose(rng)
                .copied()
                .unwrap_or("Hazel")
                .to_string()
        } else {
            let two: Vec<&&str> = FIRST_NAMES.choose_multiple(rng, 2).collect();
            format!("{} {}", two[0], two[1])
        };
        if value != current {
            return value;
        }
    }
}

/// Makes edits until `stop`, then one last batch on each side; returns what they add up to.
pub async fn edit_until(
    stand: Arc<Stand>,
    members: Arc<Members>,
    stop: CancellationToken,
    seed: u64,
) -> anyhow::Result<Expected> {
    let mut user = User {
        editor: Editor::new(&stand.config)?,
        stand,
        members,
        expected: Expected::default(),
        rng: StdRng::seed_from_u64(seed),
    };
    let mut last_conflict = Instant::now();
    while !stop.is_cancelled() {
        let pause = Duration::from_millis(user.rng.random_range(100..=600));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => break,
        }
        let since = last_conflict.elapsed();
        let conflict = since > Duration::from_secs(12)
            || (since > Duration::from_secs(3) && user.rng.random_bool(0.25));
        if conflict {
            let n = user.rng.random_range(2..=8);
            if user.both_sides(n).await? > 0 {
                last_conflict = Instant::now();
                continue;
            }
        }
        let n = user.rng.random_range(1..=BATCH);
        if user.rng.random_bool(0.5) || user.in_hubspot(n).await? == 0 {
            user.in_sql(n).await?;
        }
    }
    // SQL Server's last: they make HubSpot writes for the last kill to find in flight.
    user.in_hubspot(BATCH).await?;
    user.in_sql(BATCH).await?;
    user.expected.requests = user.editor.requests();
    Ok(user.expected)
}

fn edit(key: &str, hubspot_id: &str, field: &'static str, value: String) -> Edit {
    Edit {
        sql_key: key.to_string(),
        hubspot_id: hubspot_id.to_string(),
        field,
        value,
    }
}

/// The people editing both systems, and what their edits add up to so far.
struct User {
    stand: Arc<Stand>,
    editor: Editor,
    members: Arc<Members>,
    expected: Expected,
    rng: StdRng,
}

impl User {
    /// A value for `key`'s `field` other than the one it should hold now.
    fn new_value(&mut self, key: &str, field: &'static str) -> String {
        let current = self.expected.current(key, field, &self.members.rows[key]);
        new_value(field, &current, &mut self.rng)
    }

    /// Surnames of `n` valid members edited in SQL Server.
    async fn in_sql(&mut self, n: usize) -> anyhow::Result<usize> {
        let members = self.members.clone();
        let mut changes = Changes::default();
        for key in members.valid.choose_multiple(&mut self.rng, n) {
            let value = self.new_value(key, SQL_FIELD);
            changes.in_sql.push(edit(key, "", SQL_FIELD, value));
        }
        self.make(changes).await
    }

    /// First names of up to `n` members already in HubSpot edited there.
    async fn in_hubspot(&mut self, n: usize) -> anyhow::Result<usize> {
        let mut seen = HashSet::new();
        let contacts: Vec<(String, String)> = self
            .stand
            .hubspot
            .contacts()
            .into_iter()
            .filter(|c| !c.archived())
            .filter_map(|c| Some((c.get("numero_asociado")?.to_string(), c.id.to_string())))
            .filter(|(key, _)| {
                self.members.rows.contains_key(key) && !self.expected.conflicted.contains(key)
            })
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect();
        let mut changes = Changes::default();
        for (key, id) in contacts.choose_multiple(&mut self.rng, n) {
            let value = self.new_value(key, HUBSPOT_FIELD);
            changes.in_hubspot.push(edit(key, id, HUBSPOT_FIELD, value));
        }
        self.make(changes).await
    }

    /// First names of up to `n` synced members with nothing in the queue edited on both
    /// sides, while this process holds the SQL Server poller's election (as a second instance
    /// would): neither edit is synced before the other is made.
    async fn both_sides(&mut self, n: usize) -> anyhow::Result<usize> {
        let idle: Vec<(String, String)> = sqlx::query_as(
            "SELECT l.sql_key, l.hubspot_id FROM record_links l \
             WHERE l.object = $1 AND l.hubspot_id IS NOT NULL AND NOT EXISTS ( \
               SELECT 1 FROM sync_queue q WHERE q.object = l.object \
               AND q.state IN ('pending', 'running') \
               AND q.record_key IN (l.sql_key, l.hubspot_id))",
        )
        .bind(OBJECT)
        .fetch_all(&self.stand.pool)
        .await?;
        let free: Vec<&(String, String)> = idle
            .iter()
            .filter(|(key, _)| {
                self.members.rows.contains_key(key)
                    && !self.expected.hubspot_edited.contains(key)
                    && !self.expected.conflicted.contains(key)
            })
            .collect();
        let picked: Vec<&(String, String)> =
            free.choose_multiple(&mut self.rng, n).copied().collect();
        let mut changes = Changes::default();
        for (key, id) in picked {
            let sql = self.new_value(key, HUBSPOT_FIELD);
            let hubspot = loop {
                let v = self.new_value(key, HUBSPOT_FIELD);
                if v != sql {
                    break v;
                }
            };
            changes.both.push(BothSides {
                sql: edit(key, id, HUBSPOT_FIELD, sql),
                hubspot: edit(key, id, HUBSPOT_FIELD, hubspot),
            });
        }
        self.make(changes).await
    }

    /// Makes `changes` and keeps what they add up to; returns how many edits were made.
    async fn make(&mut self, changes: Changes) -> anyhow::Result<usize> {
        let made = changes.in_sql.len() + changes.in_hubspot.len() + changes.both.len();
        if made == 0 {
            return Ok(0);
        }
        let now = Utc::now();
        self.editor
            .apply(&self.stand.pool, &self.stand.mssql, &changes)
            .await?;
        let sql = changes
            .in_sql
            .iter()
            .map(|e| (e, Expect::Sql(e.value.clone())));
        let hubspot = changes
            .in_hubspot
            .iter()
            .map(|e| (e, Expect::Hubspot(e.value.clone())));
        let both = changes.both.iter().map(|b| {
            let expect = Expect::Both {
                sql: b.sql.value.clone(),
                hubspot: b.hubspot.value.clone(),
            };
            (&b.sql, expect)
        });
        let expected = &mut self.expected;
        for (e, expect) in sql.chain(hubspot).chain(both) {
            match expect {
                Expect::Sql(_) => expected.sql_edits += 1,
                Expect::Hubspot(_) => {
                    expected.hubspot_edits += 1;
                    expected.hubspot_edited.insert(e.sql_key.clone());
                }
                Expect::Both { .. } => {
                    expected.both_edits += 1;
                    expected.conflicted.insert(e.sql_key.clone());
                }
            }
            let at = (e.sql_key.clone(), e.field);
            expected.at.insert(at.clone(), now);
            expected.fields.insert(at, expect);
        }
        expected.batches += 1;
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_value_always_differs_from_the_current_one() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            assert_ne!(
                new_value(SQL_FIELD, "Quesada Ulate", &mut rng),
                "Quesada Ulate"
            );
            assert_ne!(new_value(HUBSPOT_FIELD, "Hazel", &mut rng), "Hazel");
        }
        assert!(new_value(SQL_FIELD, "", &mut rng).contains(' '));
    }

    #[test]
    fn the_current_value_is_the_last_edit_or_the_row() {
        let row: SqlRow = serde_json::from_value(serde_json::json!({
            "numero_asociado": 7, "firstname": "Ana", "lastname": "Mora"
        }))
        .unwrap();
        let mut e = Expected::default();
        assert_eq!(e.current("7", SQL_FIELD, &row), "Mora");
        e.fields
            .insert(("7".into(), SQL_FIELD), Expect::Sql("Brenes Calvo".into()));
        assert_eq!(e.current("7", SQL_FIELD, &row), "Brenes Calvo");
        assert_eq!(e.current("7", HUBSPOT_FIELD, &row), "Ana");
    }
}
