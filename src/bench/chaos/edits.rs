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
use crate::demo::changes::{BothSides, Changes, Edit, Editor};
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
const FIRST_NAMES: &[&str] = &[
    "Marianela",
    "Yorleny",
    "Minor",
    "Yendry",
    "Greivin",
    "Hazel",
    "Keilor",
    "Dinia",
    "Jeffry",
    "Xinia",
    "Maikol",
    "Shirley",
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
    let mut rng = StdRng::seed_from_u64(seed);
    let editor = Editor::new(&stand.config)?;
    let mut expected = Expected::default();
    let mut last_conflict = Instant::now();
    while !stop.is_cancelled() {
        let pause = Duration::from_millis(rng.random_range(100..=600));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => break,
        }
        let since = last_conflict.elapsed();
        let conflict = since > Duration::from_secs(12)
            || (since > Duration::from_secs(3) && rng.random_bool(0.25));
        let done = if conflict {
            let n = rng.random_range(2..=8);
            both_sides(&stand, &editor, &members, &mut expected, n, &mut rng).await?
        } else {
            0
        };
        if done > 0 {
            last_conflict = Instant::now();
            continue;
        }
        let n = rng.random_range(1..=BATCH);
        if rng.random_bool(0.5)
            || hubspot(&stand, &editor, &members, &mut expected, n, &mut rng).await? == 0
        {
            in_sql(&stand, &editor, &members, &mut expected, n, &mut rng).await?;
        }
    }
    // SQL Server's last: they make HubSpot writes for the last kill to find in flight.
    hubspot(&stand, &editor, &members, &mut expected, BATCH, &mut rng).await?;
    in_sql(&stand, &editor, &members, &mut expected, BATCH, &mut rng).await?;
    expected.requests = editor.requests();
    Ok(expected)
}

fn edit(key: &str, hubspot_id: &str, field: &'static str, value: String) -> Edit {
    Edit {
        sql_key: key.to_string(),
        hubspot_id: hubspot_id.to_string(),
        field,
        value,
    }
}

/// Surnames of `n` valid members edited in SQL Server.
async fn in_sql(
    stand: &Stand,
    editor: &Editor,
    members: &Members,
    expected: &mut Expected,
    n: usize,
    rng: &mut StdRng,
) -> anyhow::Result<usize> {
    let keys: Vec<&String> = members.valid.choose_multiple(rng, n).collect();
    let mut changes = Changes::default();
    for key in keys {
        let current = expected.current(key, SQL_FIELD, &members.rows[key]);
        let value = new_value(SQL_FIELD, &current, rng);
        changes.in_sql.push(edit(key, "", SQL_FIELD, value));
    }
    let now = Utc::now();
    editor.apply(&stand.pool, &stand.mssql, &changes).await?;
    for e in &changes.in_sql {
        let at = (e.sql_key.clone(), SQL_FIELD);
        expected.at.insert(at.clone(), now);
        expected.fields.insert(at, Expect::Sql(e.value.clone()));
    }
    expected.sql_edits += changes.in_sql.len();
    expected.batches += 1;
    Ok(changes.in_sql.len())
}

/// First names of up to `n` members already in HubSpot edited there.
async fn hubspot(
    stand: &Stand,
    editor: &Editor,
    members: &Members,
    expected: &mut Expected,
    n: usize,
    rng: &mut StdRng,
) -> anyhow::Result<usize> {
    let mut seen = HashSet::new();
    let contacts: Vec<(String, String)> = stand
        .hubspot
        .contacts()
        .into_iter()
        .filter(|c| !c.archived())
        .filter_map(|c| Some((c.get("numero_asociado")?.to_string(), c.id.to_string())))
        .filter(|(key, _)| members.rows.contains_key(key) && !expected.conflicted.contains(key))
        .filter(|(key, _)| seen.insert(key.clone()))
        .collect();
    let mut changes = Changes::default();
    for (key, id) in contacts.choose_multiple(rng, n) {
        let current = expected.current(key, HUBSPOT_FIELD, &members.rows[key]);
        let value = new_value(HUBSPOT_FIELD, &current, rng);
        changes.in_hubspot.push(edit(key, id, HUBSPOT_FIELD, value));
    }
    if changes.in_hubspot.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    editor.apply(&stand.pool, &stand.mssql, &changes).await?;
    for e in &changes.in_hubspot {
        let at = (e.sql_key.clone(), HUBSPOT_FIELD);
        expected.at.insert(at.clone(), now);
        expected.fields.insert(at, Expect::Hubspot(e.value.clone()));
        expected.hubspot_edited.insert(e.sql_key.clone());
    }
    expected.hubspot_edits += changes.in_hubspot.len();
    expected.batches += 1;
    Ok(changes.in_hubspot.len())
}

/// First names of up to `n` synced members with nothing in the queue edited on both sides, while
/// this process holds the SQL Server poller's election (as a second instance would): neither
/// edit is synced before the other is made.
async fn both_sides(
    stand: &Stand,
    editor: &Editor,
    members: &Members,
    expected: &mut Expected,
    n: usize,
    rng: &mut StdRng,
) -> anyhow::Result<usize> {
    let idle: Vec<(String, String)> = sqlx::query_as(
        "SELECT l.sql_key, l.hubspot_id FROM record_links l \
         WHERE l.object = $1 AND l.hubspot_id IS NOT NULL AND NOT EXISTS ( \
           SELECT 1 FROM sync_queue q WHERE q.object = l.object \
           AND q.state IN ('pending', 'running') \
           AND q.record_key IN (l.sql_key, l.hubspot_id))",
    )
    .bind(OBJECT)
    .fetch_all(&stand.pool)
    .await?;
    let free: Vec<&(String, String)> = idle
        .iter()
        .filter(|(key, _)| {
            members.rows.contains_key(key)
                && !expected.hubspot_edited.contains(key)
                && !expected.conflicted.contains(key)
        })
        .collect();
    let mut changes = Changes::default();
    for (key, id) in free.choose_multiple(rng, n).copied() {
        let current = expected.current(key, HUBSPOT_FIELD, &members.rows[key]);
        let sql = new_value(HUBSPOT_FIELD, &current, rng);
        let hubspot = loop {
            let v = new_value(HUBSPOT_FIELD, &current, rng);
            if v != sql {
                break v;
            }
        };
        changes.both.push(BothSides {
            sql: edit(key, id, HUBSPOT_FIELD, sql),
            hubspot: edit(key, id, HUBSPOT_FIELD, hubspot),
        });
    }
    if changes.both.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    editor.apply(&stand.pool, &stand.mssql, &changes).await?;
    for b in &changes.both {
        let key = b.sql.sql_key.clone();
        expected.at.insert((key.clone(), HUBSPOT_FIELD), now);
        let both = Expect::Both {
            sql: b.sql.value.clone(),
            hubspot: b.hubspot.value.clone(),
        };
        expected.fields.insert((key.clone(), HUBSPOT_FIELD), both);
        expected.conflicted.insert(key);
    }
    expected.both_edits += changes.both.len();
    expected.batches += 1;
    Ok(changes.both.len())
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
