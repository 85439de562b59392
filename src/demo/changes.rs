//! Changes the demo makes while the daemon runs, the way people would: UPDATEs in SQL Server
//! (a member's surname), edits in HubSpot through its API (a contact's first name), and the same
//! field edited on both sides at once (a conflict for the policy to settle). Afterwards checks
//! that each change arrived on the other side.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::stand::OBJECT;
use crate::config::Config;
use crate::hubspot::types::{UpdateInput, WriteOutcome};
use crate::hubspot::{HubSpotClient, Limiter};
use crate::mssql::ChangeReader;
use crate::queue::Direction;
use crate::sim::mssql::RunningMssqlSim;
use crate::sim::mssql::setup::literal;
use crate::sync::poller::{Polled, elected};

const SURNAMES: &[&str] = &[
    "Quesada Ulate",
    "Brenes Calvo",
    "Zúñiga Montero",
    "Alfaro Sequeira",
    "Madrigal Porras",
    "Camacho Villalobos",
];
/// First names the edits give (the demo's and the kill-and-compare scenario's).
pub const FIRST_NAMES: &[&str] = &[
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
/// (SQL Server value, HubSpot value) of a first name edited on both sides.
const BOTH_SIDES: &[(&str, &str)] = &[
    ("Ana Patricia", "Ana Paty"),
    ("María Fernanda", "Mafer"),
    ("José Pablo", "Jose Pa"),
    ("Luis Diego", "Luisdi"),
];

/// One edit: the member, its HubSpot contact, the field and the new value.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub sql_key: String,
    pub hubspot_id: String,
    pub field: &'static str,
    pub value: String,
}

/// A field edited on both sides before either edit was synced.
#[derive(Debug, Clone, PartialEq)]
pub struct BothSides {
    pub sql: Edit,
    pub hubspot: Edit,
}

/// Everything the demo changed.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub in_sql: Vec<Edit>,
    pub in_hubspot: Vec<Edit>,
    pub both: Vec<BothSides>,
}

/// Members linked to a HubSpot contact, by member number: (sql_key, hubspot_id).
pub async fn linked(pool: &PgPool) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT sql_key, hubspot_id FROM record_links \
         WHERE object = $1 AND hubspot_id IS NOT NULL ORDER BY length(sql_key), sql_key",
    )
    .bind(OBJECT)
    .fetch_all(pool)
    .await?)
}

/// Splits linked members into the ones edited in SQL Server, in HubSpot, and on both sides
/// (`both` of them), `per_side` each, spread over the whole list. Pure.
pub fn plan(linked: &[(String, String)], per_side: usize, both: usize) -> Changes {
    let edit = |(key, id): &(String, String), field, value: String| Edit {
        sql_key: key.clone(),
        hubspot_id: id.clone(),
        field,
        value,
    };
    let wanted = 2 * per_side + both;
    let step = (linked.len() / wanted.max(1)).max(1);
    let mut picks = linked.iter().step_by(step);
    let mut changes = Changes::default();
    for i in 0..per_side {
        if let Some(m) = picks.next() {
            changes
                .in_sql
                .push(edit(m, "lastname", SURNAMES[i % SURNAMES.len()].into()));
        }
        if let Some(m) = picks.next() {
            changes.in_hubspot.push(edit(
                m,
                "firstname",
                FIRST_NAMES[i % FIRST_NAMES.len()].into(),
            ));
        }
    }
    for (i, m) in picks.take(both).enumerate() {
        let (sql, hubspot) = BOTH_SIDES[i % BOTH_SIDES.len()];
        changes.both.push(BothSides {
            sql: edit(m, "firstname", sql.into()),
            hubspot: edit(m, "firstname", hubspot.into()),
        });
    }
    changes
}

/// Makes the changes: SQL Server UPDATEs through the simulator, HubSpot edits through its API.
/// The edits on both sides go out at the same moment.
pub struct Editor {
    client: HubSpotClient,
    /// HubSpot API requests this editor made.
    requests: std::sync::atomic::AtomicU64,
    table: String,
    key_column: String,
    /// The daemon's `queue.poll_interval`.
    poll_interval: std::time::Duration,
}

impl Editor {
    /// An editor of the `contacts` object of `config`, through HubSpot's API at
    /// `hubspot.base_url`.
    pub fn new(config: &Config) -> anyhow::Result<Editor> {
        let settings = &config.hubspot;
        let object = config
            .objects
            .get(OBJECT)
            .ok_or_else(|| anyhow::anyhow!("no {OBJECT} object"))?;
        Ok(Editor {
            client: HubSpotClient::new(settings, Arc::new(Limiter::from_settings(settings)))?,
            requests: Default::default(),
            table: object.sql_table.clone(),
            key_column: object.sql_key.clone(),
            poll_interval: config.queue.poll_interval,
        })
    }

    /// Makes the edits. Those on both sides are made while this process holds the SQL Server
    /// poller's election, as a second hubsync instance would while polling: the daemon's SQL
    /// Server poller reads them only after the HubSpot edits have reached the daemon, so both
    /// sides have changed since the last sync, whatever the two pollers' timing.
    pub async fn apply(
        &self,
        pool: &PgPool,
        mssql: &RunningMssqlSim,
        changes: &Changes,
    ) -> anyhow::Result<()> {
        self.in_sql(mssql, &changes.in_sql).await?;
        self.in_hubspot(&changes.in_hubspot).await?;
        if changes.both.is_empty() {
            return Ok(());
        }
        let sql: Vec<Edit> = changes.both.iter().map(|b| b.sql.clone()).collect();
        let hubspot: Vec<Edit> = changes.both.iter().map(|b| b.hubspot.clone()).collect();
        let ids: Vec<String> = hubspot.iter().map(|e| e.hubspot_id.clone()).collect();
        let wait = self.poll_interval * 10;
        loop {
            let since: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM sync_queue")
                .fetch_one(pool)
                .await?;
            let held = elected(pool, OBJECT, Direction::ToHubspot, || async {
                self.in_sql(mssql, &sql).await?;
                self.in_hubspot(&hubspot).await?;
                hubspot_edits_settled(pool, &ids, since, wait).await?;
                Ok(Polled::default())
            })
            .await?;
            if held.elected {
                return Ok(());
            }
            // The daemon's poller is polling right now; that takes moments.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// HubSpot API requests made for the edits so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn in_sql(&self, mssql: &RunningMssqlSim, edits: &[Edit]) -> anyhow::Result<()> {
        if edits.is_empty() {
            return Ok(());
        }
        let statements: Vec<String> = edits
            .iter()
            .map(|e| {
                format!(
                    "UPDATE {} SET [{}] = {} WHERE [{}] = {}",
                    self.table,
                    e.field,
                    literal(&e.value.clone().into()),
                    self.key_column,
                    literal(&key_value(&e.sql_key)),
                )
            })
            .collect();
        mssql.execute_batch(&statements.join(";\n")).await
    }

    async fn in_hubspot(&self, edits: &[Edit]) -> anyhow::Result<()> {
        for chunk in edits.chunks(crate::hubspot::BATCH_LIMIT) {
            let inputs: Vec<UpdateInput> = chunk
                .iter()
                .map(|e| UpdateInput {
                    id: e.hubspot_id.clone(),
                    properties: BTreeMap::from([(e.field.to_string(), Some(e.value.clone()))]),
                })
                .collect();
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let outcomes = self.client.batch_update("contacts", &inputs).await?;
            if let Some(refused) = outcomes
                .iter()
                .find(|o| !matches!(o, WriteOutcome::Ok { .. }))
            {
                anyhow::bail!("HubSpot did not take an edit: {refused:?}");
            }
        }
        Ok(())
    }
}

/// Waits until the daemon has taken in the HubSpot edits of these contacts (queued after item
/// `since` and finished), or `at_most`.
async fn hubspot_edits_settled(
    pool: &PgPool,
    ids: &[String],
    since: i64,
    at_most: std::time::Duration,
) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + at_most;
    // The queue has no notification for finished items; look often, it is an indexed query.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    while std::time::Instant::now() < until {
        tick.tick().await;
        let finished: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT record_key) FROM sync_queue \
             WHERE object = $1 AND direction = 'to_sql' AND record_key = ANY($2) AND id > $3 \
               AND state NOT IN ('pending', 'running')",
        )
        .bind(OBJECT)
        .bind(ids)
        .bind(since)
        .fetch_one(pool)
        .await?;
        if finished as usize >= ids.len() {
            break;
        }
    }
    Ok(())
}

/// A numeric key as a number, anything else as text.
fn key_value(key: &str) -> serde_json::Value {
    key.parse::<i64>()
        .map_or_else(|_| key.into(), serde_json::Value::from)
}

/// How many changes arrived where they should.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Arrived {
    /// SQL Server edits now in HubSpot.
    pub sql_to_hubspot: usize,
    /// HubSpot edits now in SQL Server.
    pub hubspot_to_sql: usize,
    /// Fields edited on both sides that now hold the same value on both.
    pub both_agree: usize,
    /// What did not arrive, one line each.
    pub missing: Vec<String>,
}

/// Checks every change against both sides as they are now.
pub async fn arrived(
    changes: &Changes,
    reader: &ChangeReader,
    hubspot: &crate::sim::hubspot::RunningSim,
) -> anyhow::Result<Arrived> {
    let mut out = Arrived::default();
    let hs_value = |e: &Edit| {
        hubspot
            .contact(&e.hubspot_id)
            .and_then(|c| c.get(e.field).map(str::to_string))
    };
    for e in &changes.in_sql {
        let now = hs_value(e);
        let sides = ("HubSpot", "SQL Server");
        tally(e, now, sides, &mut out.sql_to_hubspot, &mut out.missing);
    }
    for e in &changes.in_hubspot {
        let now = sql_value(reader, e).await?;
        let sides = ("SQL Server", "HubSpot");
        tally(e, now, sides, &mut out.hubspot_to_sql, &mut out.missing);
    }
    for b in &changes.both {
        let (sql, hs) = (sql_value(reader, &b.sql).await?, hs_value(&b.hubspot));
        let known = [&b.sql.value, &b.hubspot.value];
        if sql == hs && sql.as_ref().is_some_and(|v| known.contains(&v)) {
            out.both_agree += 1;
        } else {
            out.missing.push(format!(
                "member {}: {} is {:?} in SQL Server but {:?} in HubSpot",
                b.sql.sql_key, b.sql.field, sql, hs
            ));
        }
    }
    Ok(out)
}

/// Counts an edit made on one side (`from`) that the other (`to`) now holds, or says what `to`
/// holds instead.
fn tally(
    e: &Edit,
    now: Option<String>,
    (to, from): (&str, &str),
    arrived: &mut usize,
    missing: &mut Vec<String>,
) {
    if now.as_deref() == Some(e.value.as_str()) {
        *arrived += 1;
    } else {
        missing.push(format!(
            "member {}: {} is {:?} in {to}, {from} has {:?}",
            e.sql_key, e.field, now, e.value
        ));
    }
}

async fn sql_value(reader: &ChangeReader, e: &Edit) -> anyhow::Result<Option<String>> {
    Ok(reader.row_by_key(&e.sql_key).await?.and_then(|row| {
        row.get(e.field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_disjoint_edits_spread_over_the_members() {
        let linked: Vec<(String, String)> = (1..=100)
            .map(|i| (i.to_string(), (1000 + i).to_string()))
            .collect();
        let c = plan(&linked, 5, 2);
        assert_eq!(
            (c.in_sql.len(), c.in_hubspot.len(), c.both.len()),
            (5, 5, 2)
        );
        let mut keys: Vec<&String> = c
            .in_sql
            .iter()
            .chain(&c.in_hubspot)
            .chain(c.both.iter().map(|b| &b.sql))
            .map(|e| &e.sql_key)
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 12, "every member edited once");
        assert!(c.both.iter().all(|b| b.sql.value != b.hubspot.value));
        assert_eq!(c.in_sql[0].field, "lastname");
        assert_eq!(c.in_hubspot[0].hubspot_id, "1009");
    }

    #[test]
    fn a_short_list_plans_what_it_can() {
        let linked = vec![("1".to_string(), "1001".to_string())];
        let c = plan(&linked, 3, 2);
        assert_eq!(c.in_sql.len() + c.in_hubspot.len() + c.both.len(), 1);
    }
}
