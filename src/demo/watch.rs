//! What the demo shows and waits for, read from where an operator would look: the queue tables
//! and views in PostgreSQL, the simulators' statistics and the daemon's `/metrics`. Also decides
//! when everything has settled: no item pending or running, both pollers caught up with their
//! source, and nothing queued meanwhile.

use serde::Serialize;
use sqlx::PgPool;

use super::stand::{OBJECT, Stand};
use crate::config::Config;
use crate::mssql::{ChangeCursor, ChangeReader, SqlPool};
use crate::queue::Direction;
use crate::sim::hubspot::RunningSim;

/// One rejection reason and how many records it stops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub field: String,
    pub rule: String,
    pub records: i64,
}

/// One recorded conflict.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Conflict {
    pub sql_key: String,
    pub field: String,
    pub sql_value: Option<String>,
    pub hubspot_value: Option<String>,
    pub winner: String,
}

/// HubSpot API use as the simulator counted it, and as the daemon reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiUse {
    pub total_requests: u64,
    /// Non-search requests in the busiest rolling 10 s window.
    pub busiest_10s: u64,
    pub limit_10s: u32,
    pub throttled_429: u64,
    /// `hubsync_hubspot_requests` from the daemon's /metrics.
    pub daemon_requests: Option<u64>,
}

/// The state of the demo at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Done items per direction and outcome (CREATE, UPDATE, LINK, SKIP, WRITE…).
    pub outcomes: Vec<(String, String, i64)>,
    pub pending: i64,
    pub running: i64,
    /// Members linked to a HubSpot contact.
    pub synced: i64,
    /// Records whose newest SQL Server → HubSpot item is rejected / dead.
    pub rejected: i64,
    pub dead: i64,
    /// Most common reasons of those rejections.
    pub reasons: Vec<Reason>,
    pub conflicts: Vec<Conflict>,
    pub api: ApiUse,
    /// Contacts in HubSpot (the simulator's store).
    pub hubspot_contacts: u64,
}

impl Snapshot {
    /// Done items of one direction, all outcomes.
    pub fn done(&self, direction: Direction) -> i64 {
        self.outcomes
            .iter()
            .filter(|(d, _, _)| d == direction.as_str())
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Done items of one direction with one outcome.
    pub fn outcome(&self, direction: Direction, outcome: &str) -> i64 {
        self.outcomes
            .iter()
            .filter(|(d, o, _)| d == direction.as_str() && o == outcome)
            .map(|(_, _, n)| n)
            .sum()
    }
}

const NEWEST_TO_HUBSPOT: &str = "WITH newest AS ( \
       SELECT DISTINCT ON (record_key) record_key, state, errors FROM sync_queue \
       WHERE object = $1 AND direction = 'to_hubspot' ORDER BY record_key, id DESC) ";

/// Reads the demo's state.
pub struct Watcher {
    pool: PgPool,
    reader: ChangeReader,
    http: reqwest::Client,
    metrics_url: String,
    limit_10s: u32,
}

impl Watcher {
    pub fn new(stand: &Stand) -> anyhow::Result<Watcher> {
        Ok(Watcher {
            pool: stand.pool.clone(),
            reader: sql_reader(&stand.config)?,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?,
            metrics_url: stand.metrics_url(),
            limit_10s: stand.config.hubspot.requests_per_10s,
        })
    }

    /// Reads the SQL Server row of one member now (through the production reader).
    pub fn reader(&self) -> &ChangeReader {
        &self.reader
    }

    pub async fn snapshot(&self, stand: &Stand) -> anyhow::Result<Snapshot> {
        let pool = &self.pool;
        let states: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM sync_queue WHERE object = $1 \
             AND state IN ('pending', 'running') GROUP BY 1",
        )
        .bind(OBJECT)
        .fetch_all(pool)
        .await?;
        let count = |s: &str| {
            states
                .iter()
                .find(|(state, _)| state == s)
                .map_or(0, |(_, n)| *n)
        };
        let outcomes: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT direction, coalesce(outcome, '?'), count(*) FROM sync_queue \
             WHERE object = $1 AND state = 'done' GROUP BY 1, 2 ORDER BY 1, 3 DESC",
        )
        .bind(OBJECT)
        .fetch_all(pool)
        .await?;
        let synced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM record_links WHERE object = $1 AND hubspot_id IS NOT NULL",
        )
        .bind(OBJECT)
        .fetch_one(pool)
        .await?;
        let (rejected, dead): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{NEWEST_TO_HUBSPOT} SELECT count(*) FILTER (WHERE state = 'rejected'), \
             count(*) FILTER (WHERE state = 'dead') FROM newest"
        )))
        .bind(OBJECT)
        .fetch_one(pool)
        .await?;
        let reasons: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{NEWEST_TO_HUBSPOT} SELECT coalesce(e->>'field', ''), \
             coalesce(e->>'rule', e->>'kind', ''), count(DISTINCT record_key) \
             FROM newest, jsonb_array_elements(newest.errors) e \
             WHERE newest.state = 'rejected' AND coalesce(e->>'kind', '') NOT LIKE 'operator%' \
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 5"
        )))
        .bind(OBJECT)
        .fetch_all(pool)
        .await?;
        let conflicts = conflicts(pool).await?;
        let stats = stand.hubspot.stats();
        Ok(Snapshot {
            outcomes,
            pending: count("pending"),
            running: count("running"),
            synced,
            rejected,
            dead,
            reasons: reasons
                .into_iter()
                .map(|(field, rule, records)| Reason {
                    field,
                    rule,
                    records,
                })
                .collect(),
            conflicts,
            api: ApiUse {
                total_requests: stats.total_requests,
                busiest_10s: stats.max_requests_in_10s_window,
                limit_10s: self.limit_10s,
                throttled_429: stats.throttled_429,
                daemon_requests: self.daemon_requests().await,
            },
            hubspot_contacts: stats.contacts,
        })
    }

    /// `hubsync_hubspot_requests` from the daemon's /metrics, if it answers.
    async fn daemon_requests(&self) -> Option<u64> {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric(&text, "hubsync_hubspot_requests")
    }

    /// See [`settled`].
    pub async fn settled(&self, hubspot: &RunningSim) -> anyhow::Result<bool> {
        settled(&self.pool, &self.reader, hubspot).await
    }
}

/// A reader of the SQL Server table of the `contacts` object of `config`, through the
/// production change reader.
pub fn sql_reader(config: &Config) -> anyhow::Result<ChangeReader> {
    let object = config
        .objects
        .get(OBJECT)
        .ok_or_else(|| anyhow::anyhow!("no {OBJECT} object in the config"))?;
    let sql_object = crate::sync::poller::sql_object_settings(object)
        .validate()
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    Ok(ChangeReader::new(
        SqlPool::new(&config.sql_server)?,
        sql_object,
    ))
}

/// Every recorded conflict, oldest first.
pub async fn conflicts(pool: &PgPool) -> anyhow::Result<Vec<Conflict>> {
    Ok(sqlx::query_as(
        "SELECT sql_key, field, sql_value, hubspot_value, winner FROM sync_conflicts \
         WHERE object = $1 ORDER BY id",
    )
    .bind(OBJECT)
    .fetch_all(pool)
    .await?)
}

/// True when nothing is left to do: no item pending or running, the SQL Server poller has
/// read every row change, the HubSpot poller every contact change, and no item was queued
/// while this was checked (so no worker wrote anything meanwhile).
pub async fn settled(
    pool: &PgPool,
    reader: &ChangeReader,
    hubspot: &RunningSim,
) -> anyhow::Result<bool> {
    let before = queue_mark(pool).await?;
    if before.1 > 0 {
        return Ok(false);
    }
    let sql_cursor = crate::sync::poller::load_cursor(pool, OBJECT, Direction::ToHubspot)
        .await?
        .map(|v| ChangeCursor::from_json(&v))
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    if sql_cursor.is_none() || reader.poll(sql_cursor).next_page().await?.is_some() {
        return Ok(false);
    }
    if !hubspot_read_all(pool, hubspot).await? {
        return Ok(false);
    }
    Ok(queue_mark(pool).await? == before)
}

/// Whether the HubSpot poller has read every HubSpot change: its cursor (the start of its last
/// complete pass) has reached the newest modification time of any live contact plus the
/// search index's lag, so that pass's search saw that change (true while HubSpot has none).
pub async fn hubspot_read_all(pool: &PgPool, hubspot: &RunningSim) -> anyhow::Result<bool> {
    let newest = hubspot
        .contacts()
        .iter()
        .filter(|c| !c.archived())
        .map(|c| c.updated_ms)
        .max();
    let Some(newest) = newest else {
        return Ok(true);
    };
    let visible = newest + i64::try_from(hubspot.index_lag().as_millis()).unwrap_or(i64::MAX);
    let read_up_to: Option<i64> = sqlx::query_scalar(
        "SELECT (cursor_value->>'lastmodifieddate_ms')::bigint FROM sync_cursors \
         WHERE object = $1 AND direction = $2",
    )
    .bind(OBJECT)
    .bind(Direction::ToSql.as_str())
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(read_up_to.is_some_and(|r| r >= visible))
}

/// (highest item id, items pending or running).
async fn queue_mark(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT coalesce(max(id), 0), \
         count(*) FILTER (WHERE state IN ('pending', 'running')) FROM sync_queue",
    )
    .fetch_one(pool)
    .await?)
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_metric() {
        let text = "# HELP hubsync_hubspot_requests x\n# TYPE hubsync_hubspot_requests gauge\n\
                    hubsync_hubspot_requests 42\nhubsync_hubspot_requests_total 7\n";
        assert_eq!(metric(text, "hubsync_hubspot_requests"), Some(42));
        assert_eq!(metric(text, "hubsync_ready"), None);
    }

    #[test]
    fn counts_done_items_by_direction_and_outcome() {
        let s = Snapshot {
            outcomes: vec![
                ("to_hubspot".into(), "CREATE".into(), 10),
                ("to_hubspot".into(), "UPDATE".into(), 3),
                ("to_sql".into(), "SKIP".into(), 10),
            ],
            ..Default::default()
        };
        assert_eq!(s.done(Direction::ToHubspot), 13);
        assert_eq!(s.outcome(Direction::ToSql, "SKIP"), 10);
        assert_eq!(s.outcome(Direction::ToSql, "WRITE"), 0);
    }
}
