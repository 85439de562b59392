//! `hubsync bench chaos` and the kill-and-compare scenario behind it (also run, smaller, by the
//! integration tests): N members in the SQL Server simulator, the real daemon killed with
//! SIGKILL at K seeded moments (during the initial load, with HubSpot writes in flight, between
//! a write and its settle, mid-poll) and restarted, edits on both sides all along, HubSpot fault
//! windows, then one last life driven until everything is settled. SQL Server and HubSpot are
//! then compared directly, field by field, against what the edits add up to.

mod compare;
mod edits;
mod plan;
mod report;
pub mod stand;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::thousands;
use crate::demo::stand::OBJECT;
use crate::exit::{self, Failure};
use crate::mapping::{Mapper, SqlRow};
use crate::sim::hubspot::{Faults, SimStats};
use compare::Sides;
pub use compare::{Finding, Findings};
use edits::{Expected, Members};
use plan::{Moment, Progress};
pub use report::{ChaosReport, Kill};
use stand::{Daemon, Held, Stand, held_by};

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Members in the SQL Server simulator (about 1 in 20 invalid).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(20..))]
    members: u64,
    /// SIGKILLs of the daemon.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    kills: u64,
    /// Seed of the members, the kill moments, the fault windows and the edits.
    #[arg(long, default_value_t = 18)]
    seed: u64,
}

/// How big a scenario to run, and with what.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub members: u64,
    pub kills: usize,
    pub seed: u64,
    /// The `hubsync` binary to run as the daemon.
    pub exe: PathBuf,
    /// The shipped `config.yaml` text, edited for the scenario.
    pub config: String,
    /// An empty database to use instead of a throwaway PostgreSQL.
    pub database_url: Option<String>,
    /// Where the daemons' config, output and logs go (kept); default a new temp dir, deleted
    /// when the report is clean.
    pub dir: Option<PathBuf>,
}

pub async fn run(args: ChaosArgs, config: &Path) -> Result<u8, Failure> {
    let fail = |e: anyhow::Error| Failure::new(exit::SOFTWARE, format!("{e:#}"));
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))
        .map_err(fail)?;
    let exe = std::env::current_exe()
        .context("cannot find the hubsync binary")
        .map_err(fail)?;
    let report = scenario(ChaosOptions {
        members: args.members,
        kills: args.kills as usize,
        seed: args.seed,
        exe,
        config: text,
        database_url: None,
        dir: None,
    })
    .await
    .map_err(fail)?;
    for line in report.lines(10) {
        println!("{line}");
    }
    Ok(if report.clean() {
        exit::OK
    } else {
        exit::REJECTED
    })
}

fn say(line: &str) {
    eprintln!("chaos: {line}");
}

/// Runs the whole scenario; the scenario's directory is kept when the report is not clean (a
/// given one always).
pub async fn scenario(opts: ChaosOptions) -> anyhow::Result<ChaosReport> {
    if let Some(dir) = &opts.dir {
        std::fs::create_dir_all(dir)?;
        return scenario_in(&opts, dir).await;
    }
    let dir = tempfile::Builder::new()
        .prefix("hubsync-chaos-")
        .tempdir()?;
    let result = scenario_in(&opts, dir.path()).await;
    match &result {
        Ok(report) if report.clean() => {}
        _ => {
            let kept = dir.keep();
            say(&format!("kept {}", kept.display()));
        }
    }
    result
}

async fn scenario_in(opts: &ChaosOptions, dir: &Path) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let rows: Vec<SqlRow> = (0..opts.members)
        .map(|i| super::validate::member_row(i, &mut rng))
        .collect();
    let kills = opts.kills.max(1);
    let stand = Stand::start(
        &opts.config,
        opts.database_url.as_deref(),
        &rows,
        kills,
        opts.seed,
        opts.exe.clone(),
        dir,
    )
    .await?;
    let stand = Arc::new(stand);
    let mapper = Mapper::new(
        stand
            .config
            .objects
            .get(OBJECT)
            .context("the config maps no contacts object")?,
    )?;
    let members: BTreeMap<String, SqlRow> = rows
        .into_iter()
        .map(|r| (r["numero_asociado"].to_string(), r))
        .collect();
    let valid: BTreeSet<String> = members
        .iter()
        .filter(|(_, r)| mapper.to_hubspot(r).is_valid())
        .map(|(k, _)| k.clone())
        .collect();
    say(&format!(
        "{} members in SQL Server ({} valid), {kills} kills, seed {}; in {}",
        thousands(members.len() as u64),
        thousands(valid.len() as u64),
        opts.seed,
        dir.display()
    ));
    let members = Arc::new(Members {
        valid: valid.iter().cloned().collect(),
        rows: members,
    });

    let lag = stand.config.hubspot.search_lag;
    let windows = plan::windows(kills, lag, &mut rng);
    let stop = CancellationToken::new();
    let mut editing = Some(tokio::spawn(edits::edit_until(
        stand.clone(),
        members.clone(),
        stop.clone(),
        opts.seed.wrapping_add(1),
    )));
    let mut expected: Option<Expected> = None;
    let mut killed = Vec::with_capacity(kills);
    stand.hubspot.set_faults(windows[0].faults());
    say(&format!("start; HubSpot: {}", windows[0].describe()));
    let mut daemon = stand.spawn()?;
    for (n, kind) in plan::kinds(kills).into_iter().enumerate() {
        let window = windows[n].describe();
        if n + 1 == kills
            && let Some(task) = editing.take()
        {
            // The last edits are made before the last kill, which finds them in flight.
            stop.cancel();
            expected = Some(task.await??);
        }
        let armed = plan::armed_after(kind, &mut rng).max(windows[n].min_life());
        live_for(&stand, &mut daemon, armed).await?;
        let progress = progress(&stand, &members).await?;
        let moment = plan::moment(kind, &progress, &mut rng);
        let reached = wait_for(&stand, &mut daemon, moment, Duration::from_secs(60)).await?;
        let pid = daemon.pid;
        daemon.kill().await?;
        let kill = left_behind(&stand, pid, moment, reached, started, window).await?;
        say(&format!(
            "kill {} of {kills} at {:.1} s after {:.1} s of life ({}{}): {} items held, {} of them \
             written to HubSpot and not settled",
            n + 1,
            kill.at_s,
            daemon.started.elapsed().as_secs_f64(),
            moment.describe(),
            if reached { "" } else { ", not reached in 60 s" },
            kill.held.len(),
            kill.written_unsettled
        ));
        killed.push(kill);
        let pause = Duration::from_millis(rng.random_range(0..=3_000));
        tokio::time::sleep(pause).await;
        if n + 1 < kills {
            stand.hubspot.set_faults(windows[n + 1].faults());
            say(&format!(
                "restart after {:.1} s; HubSpot: {}",
                pause.as_secs_f64(),
                windows[n + 1].describe()
            ));
            daemon = stand.spawn()?;
        }
    }
    let expected = expected.context("the edits never finished")?;

    // The last life, without faults: drive until everything is settled.
    stand.hubspot.set_faults(Faults::default());
    let last = killed.last().context("no kill")?;
    let (dead, held) = (last.pid, last.held.clone());
    let mut daemon = stand.spawn()?;
    say(&format!(
        "last start; {} items the last killed process held",
        held.len()
    ));
    let (recovery, settled) = drive(&stand, &mut daemon, dead, &held).await?;
    let grace = stand.config.service.shutdown_grace + Duration::from_secs(10);
    let exit_code = daemon.terminate(grace).await?.and_then(|s| s.code());

    let keys: Vec<String> = members.rows.keys().cloned().collect();
    let sql = stand.reader.rows_by_keys(&keys).await?;
    let contacts = stand.hubspot.contacts();
    let conflicts = crate::demo::watch::conflicts(&stand.pool).await?;
    let findings = compare::compare(&Sides {
        members: &members.rows,
        valid: &valid,
        sql: &sql,
        contacts: &contacts,
        conflicts: &conflicts,
        expected: &expected,
        mapper: &mapper,
    });
    let mut histories = Vec::new();
    for list in [
        &findings.lost_to_sql,
        &findings.lost_to_hubspot,
        &findings.unsettled,
        &findings.false_conflicts,
    ] {
        for finding in list.iter().take(3) {
            let line = history(&stand, &finding.key).await?;
            if !histories.contains(&line) {
                histories.push(line);
            }
        }
    }
    Ok(ChaosReport {
        members: members.rows.len(),
        valid: valid.len(),
        seed: opts.seed,
        kills: killed,
        sql_edits: expected.sql_edits,
        hubspot_edits: expected.hubspot_edits,
        both_edits: expected.both_edits,
        edit_batches: expected.batches,
        edit_requests: expected.requests,
        findings,
        histories,
        recovery_s: recovery.as_secs_f64(),
        settled_s: settled.as_secs_f64(),
        exit_code,
        hubspot: stand.hubspot.stats(),
        elapsed_s: started.elapsed().as_secs_f64(),
        dir: dir.to_path_buf(),
    })
}

/// How often the scenario looks at the systems while it waits for a moment or a state: often,
/// since a write may be settled a few milliseconds after HubSpot has it.
const LOOK: Duration = Duration::from_millis(2);

/// Lets the daemon work for `how_long`, failing if it exits.
async fn live_for(stand: &Stand, daemon: &mut Daemon, how_long: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        daemon.check_running(stand)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn progress(stand: &Stand, members: &Members) -> anyhow::Result<Progress> {
    let stats = stand.hubspot.stats();
    Ok(Progress {
        members: members.rows.len() as u64,
        valid: members.valid.len() as u64,
        queued: queued(stand).await?,
        writes: stats.write_requests(),
        contacts: stats.contacts,
        searches: searches(&stats),
    })
}

fn searches(stats: &SimStats) -> u64 {
    stats
        .requests_by_endpoint
        .get("search")
        .copied()
        .unwrap_or(0)
}

/// Distinct records queued for HubSpot.
async fn queued(stand: &Stand) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT record_key) FROM sync_queue WHERE direction = 'to_hubspot'",
    )
    .fetch_one(&stand.pool)
    .await?;
    Ok(n as u64)
}

/// Waits until `moment` (true) or `limit` (false).
async fn wait_for(
    stand: &Stand,
    daemon: &mut Daemon,
    moment: Moment,
    limit: Duration,
) -> anyhow::Result<bool> {
    let until = Instant::now() + limit;
    let mut tick = tokio::time::interval(LOOK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < until {
        tick.tick().await;
        daemon.check_running(stand)?;
        let stats = stand.hubspot.stats();
        let now = match moment {
            Moment::Queued(at) => queued(stand).await? >= at,
            // The edits' own write calls count too: the daemon's is in flight while it holds
            // items.
            Moment::InFlight(at) => {
                stats.write_requests() >= at && !held_by(&stand.pool, daemon.pid).await?.is_empty()
            }
            Moment::Written(at) => stats.contacts >= at,
            Moment::MidPoll(at) => searches(&stats) >= at,
        };
        if now {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the process `pid`, just killed, left behind.
async fn left_behind(
    stand: &Stand,
    pid: u32,
    moment: Moment,
    reached: bool,
    started: Instant,
    window: String,
) -> anyhow::Result<Kill> {
    let at_s = started.elapsed().as_secs_f64();
    let held = held_by(&stand.pool, pid).await?;
    let in_hubspot: BTreeSet<String> = stand
        .hubspot
        .contacts()
        .iter()
        .filter_map(|c| c.get("numero_asociado").map(str::to_string))
        .collect();
    let written_unsettled = held
        .iter()
        .filter(|h| h.direction == "to_hubspot" && in_hubspot.contains(&h.record_key))
        .count();
    Ok(Kill {
        pid,
        moment,
        reached,
        at_s,
        held,
        written_unsettled,
        window,
    })
}

/// Drives the last life until everything is settled; returns (recovery, settled) times from
/// its start: recovery when no item the dead process `dead` held is open any more (nor any
/// item still locked by it), settled when nothing is left to do at all (see
/// [`crate::demo::watch::settled`]).
async fn drive(
    stand: &Stand,
    daemon: &mut Daemon,
    dead: u32,
    held: &[Held],
) -> anyhow::Result<(Duration, Duration)> {
    let limit = Duration::from_secs(600);
    let directions: Vec<String> = held.iter().map(|h| h.direction.clone()).collect();
    let keys: Vec<String> = held.iter().map(|h| h.record_key.clone()).collect();
    let mut recovery = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        daemon.check_running(stand)?;
        let elapsed = daemon.started.elapsed();
        if recovery.is_none() {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sync_queue \
                 WHERE state IN ('pending', 'running') \
                   AND ((state = 'running' AND locked_by LIKE '%:' || $1 || '/%') \
                     OR (direction, record_key) IN (SELECT * FROM unnest($2::text[], $3::text[])))",
            )
            .bind(dead.to_string())
            .bind(&directions)
            .bind(&keys)
            .fetch_one(&stand.pool)
            .await?;
            if open == 0 {
                recovery = Some(elapsed);
                say(&format!(
                    "recovered {:.1} s after the last start",
                    elapsed.as_secs_f64()
                ));
            }
        }
        if let Some(recovery) = recovery
            && crate::demo::watch::settled(&stand.pool, &stand.reader, &stand.hubspot).await?
        {
            say(&format!(
                "settled {:.1} s after the last start",
                elapsed.as_secs_f64()
            ));
            return Ok((recovery, elapsed));
        }
        if elapsed > limit {
            anyhow::bail!(
                "not settled {} s after the last start: {}",
                limit.as_secs(),
                open_items(stand).await?
            );
        }
    }
}

/// Open items by direction and state, for an error message.
async fn open_items(stand: &Stand) -> anyhow::Result<String> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT direction, state, count(*) FROM sync_queue \
         WHERE state IN ('pending', 'running') GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&stand.pool)
    .await?;
    let parts: Vec<String> = rows
        .iter()
        .map(|(d, s, n)| format!("{d} {s} {n}"))
        .collect();
    Ok(if parts.is_empty() {
        "nothing open (a poller has not caught up)".into()
    } else {
        parts.join(", ")
    })
}

/// One member's story, for a finding: each queue item (direction, outcome, when created and
/// finished, rescues, the properties it wrote), and what HubSpot's updates gave the field the
/// HubSpot edits change.
async fn history(stand: &Stand, key: &str) -> anyhow::Result<String> {
    type Row = (
        String,
        String,
        String,
        String,
        i32,
        Option<serde_json::Value>,
    );
    let items: Vec<Row> = sqlx::query_as(
        "WITH link AS (SELECT hubspot_id FROM record_links WHERE object = $1 AND sql_key = $2) \
         SELECT q.direction, coalesce(q.outcome, q.state), \
                to_char(q.created_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), \
                coalesce(to_char(q.finished_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), 'open'), \
                q.rescues, \
                (SELECT jsonb_agg(DISTINCT p) FROM sync_history h, jsonb_array_elements(h.properties) p \
                 WHERE h.object = q.object AND h.item_id = q.id) \
         FROM sync_queue q WHERE q.object = $1 AND ( \
           (q.direction = 'to_hubspot' AND q.record_key = $2) \
           OR (q.direction = 'to_sql' AND q.record_key IN (SELECT hubspot_id FROM link))) \
         ORDER BY q.id",
    )
    .bind(OBJECT)
    .bind(key)
    .fetch_all(&stand.pool)
    .await?;
    let items: Vec<String> = items
        .iter()
        .map(|(direction, what, from, to, rescues, properties)| {
            let rescued = match rescues {
                0 => String::new(),
                n => format!(" ({n} rescued)"),
            };
            let wrote = properties
                .as_ref()
                .and_then(|p| p.as_array())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let names: Vec<&str> = p.iter().filter_map(|v| v.as_str()).collect();
                    format!(" [{}]", names.join(" "))
                })
                .unwrap_or_default();
            format!("{direction} {what} {from}-{to}{rescued}{wrote}")
        })
        .collect();
    let contact = stand
        .hubspot
        .contacts()
        .into_iter()
        .find(|c| c.get("numero_asociado") == Some(key));
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or("-".to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
    };
    let modified = contact
        .as_ref()
        .map_or("-".to_string(), |c| time(c.updated_ms));
    let field = contact
        .map(|c| {
            stand
                .hubspot
                .history_of(&c.id.to_string(), edits::HUBSPOT_FIELD)
        })
        .unwrap_or_default()
        .into_iter()
        .map(|(at, value)| format!("{} {}", time(at), value.unwrap_or_default()))
        .collect::<Vec<_>>();
    Ok(format!(
        "member {key}: {}; HubSpot last modified {modified}; its {} in HubSpot: {}",
        items.join(", "),
        edits::HUBSPOT_FIELD,
        field.join(", ")
    ))
}
