//! `hubsync demo`: the whole service on one machine with one command. Starts a throwaway
//! PostgreSQL, the SQL Server simulator with a sample of Costa Rican members (some invalid), the
//! HubSpot simulator, and the real daemon; waits for the initial load, edits both sides while it
//! runs, shows live figures and where to look, then prints a final report and stops everything
//! (or, with `--keep`, leaves it running until Ctrl-C).

pub mod changes;
pub mod config;
pub mod live;
pub mod members;
pub mod report;
pub mod stand;
pub mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::config::Need;
use crate::exit::{self, Failure};
use crate::mapping::Mapper;
use changes::{Changes, Editor};
use live::Live;
use report::{Final, Places};
use stand::{OBJECT, Plan, Stand};
use watch::{Snapshot, Watcher};

/// Options of `hubsync demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Members in the SQL Server sample (20 to 1,000,000).
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(20..=1_000_000))]
    pub members: u64,
    /// After the report, leave everything running for exploration until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated members (the same seed, the same members).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for the demo's config.yaml and logs (default: a new one in the temp dir, kept).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Use this (empty) PostgreSQL database instead of starting a throwaway one.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Give up when the sync has not settled this long after the start, e.g. "10m".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub timeout: Duration,
}

/// Fields edited on both sides per attempt, and attempts at a conflict.
const BOTH_SIDES: usize = 2;
const CONFLICT_ATTEMPTS: usize = 4;

/// Runs the demo; exit 0 when everything ended in step, 1 when something did not.
pub async fn run(args: DemoArgs) -> Result<u8, Failure> {
    let software = |e: anyhow::Error| Failure::new(exit::SOFTWARE, format!("demo: {e:#}"));
    let stop = crate::sim::stop_signal()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot wait for signals: {e}")))?;
    tokio::pin!(stop);
    let started = Instant::now();
    let live = Live::new();
    let dir = demo_dir(args.dir.as_ref()).map_err(software)?;
    let members = members::sample(args.members, args.seed);
    let valid = valid_members(&members).map_err(software)?;
    let plan = Plan {
        members: &members,
        dir: &dir,
        database_url: args.database_url.as_deref(),
    };
    let say = |line: &str| live.say(line);
    let mut stand = tokio::select! {
        stand = Stand::start(plan, &say) => stand.map_err(|e| {
            Failure::new(exit::UNAVAILABLE, format!("demo: cannot start: {e:#}"))
        })?,
        _ = &mut stop => return Ok(exit::REJECTED),
    };
    let places = places(&stand);
    live.say(&format!(
        "hubsync run is up (pid {}). Where to look while the demo runs (--keep keeps it all \
         running after the report):\n{}",
        stand.daemon_pid().unwrap_or_default(),
        report::places(&places)
    ));

    let deadline = started + args.timeout;
    let outcome = tokio::select! {
        result = demo(&mut stand, &live, members.len(), valid, deadline, started) => Some(result),
        _ = &mut stop => None,
    };
    live.clear();
    let code = match outcome {
        None => {
            live.say("interrupted: stopping everything…");
            exit::REJECTED
        }
        Some(Err(e)) => {
            live.warn(&format!("hubsync demo failed: {e:#}"));
            exit::SOFTWARE
        }
        Some(Ok((text, in_step))) => {
            live.say(&text);
            if !in_step {
                live.warn("hubsync demo: something did not end in step (see above, and the logs)");
            }
            if args.keep {
                live.say(&format!(
                    "\nEverything keeps running; press Ctrl-C to stop it.\n{}",
                    report::places(&places)
                ));
                tokio::select! {
                    _ = &mut stop => {}
                    status = stand.daemon_ended() => {
                        live.say(&format!("the daemon stopped by itself ({status:?})"));
                    }
                }
            }
            if in_step { exit::OK } else { exit::REJECTED }
        }
    };
    live.say("stopping the daemon (SIGTERM), the simulators and PostgreSQL…");
    match stand.stop().await {
        Ok(Some(0)) => live.say(&format!(
            "stopped cleanly; config and logs kept in {}",
            dir.display()
        )),
        Ok(other) => {
            live.warn(&format!("hubsync demo: the daemon exited with {other:?}"));
            return Ok(code.max(exit::REJECTED));
        }
        Err(e) => return Err(software(e)),
    }
    Ok(code)
}

/// The initial load, the changes, and the report text with whether all ended in step.
async fn demo(
    stand: &mut Stand,
    live: &Live,
    members: usize,
    valid: usize,
    deadline: Instant,
    started: Instant,
) -> anyhow::Result<(String, bool)> {
    let watcher = Watcher::new(stand)?;
    live.say(&format!(
        "initial load: {members} members from SQL Server to HubSpot ({valid} valid)…"
    ));
    let loaded = until_settled(stand, &watcher, live, "initial load", deadline).await?;
    live.say(&format!(
        "initial load done after {:.1} s: {} synced, {} rejected",
        started.elapsed().as_secs_f64(),
        loaded.synced,
        loaded.rejected
    ));

    let linked = changes::linked(&stand.pool).await?;
    let per_side = (linked.len() / 25).clamp(3, 100);
    let mut all = changes::plan(&linked, per_side, 0);
    let editor = Editor::new(&stand.config)?;
    live.say(&format!(
        "changes: {} surnames edited in SQL Server, {} first names in HubSpot…",
        all.in_sql.len(),
        all.in_hubspot.len(),
    ));
    editor.apply(&stand.pool, &stand.mssql, &all).await?;
    let mut snapshot = until_settled(stand, &watcher, live, "changes", deadline).await?;
    // Edits on both sides are a conflict only when neither was synced before the other was
    // made (the editor sees to that); should one still have been synced first, two more.
    for attempt in 0..CONFLICT_ATTEMPTS {
        let used = edited_keys(&all);
        let rest: Vec<(String, String)> = linked
            .iter()
            .filter(|(k, _)| !used.contains(k))
            .cloned()
            .collect();
        let more = changes::plan(&rest, 0, BOTH_SIDES);
        if more.both.is_empty() {
            break;
        }
        live.say(&if attempt == 0 {
            format!(
                "conflict: the first name of {} members edited in SQL Server and in HubSpot at once…",
                more.both.len()
            )
        } else {
            "no conflict recorded (one side was synced before the other was edited); two more members…".to_string()
        });
        editor.apply(&stand.pool, &stand.mssql, &more).await?;
        all.both.extend(more.both);
        snapshot = until_settled(stand, &watcher, live, "conflict", deadline).await?;
        if !snapshot.conflicts.is_empty() {
            break;
        }
    }
    let arrived = changes::arrived(&all, watcher.reader(), &stand.hubspot).await?;
    let f = Final {
        members,
        valid,
        snapshot: &snapshot,
        changes: &all,
        arrived: &arrived,
        demo_requests: editor.requests(),
        took: started.elapsed(),
    };
    Ok((report::final_report(&f), report::in_step(&f)))
}

fn edited_keys(c: &Changes) -> Vec<String> {
    c.in_sql
        .iter()
        .chain(&c.in_hubspot)
        .chain(c.both.iter().map(|b| &b.sql))
        .map(|e| e.sql_key.clone())
        .collect()
}

/// Refreshes the live figures about every second until everything has settled.
async fn until_settled(
    stand: &mut Stand,
    watcher: &Watcher,
    live: &Live,
    phase: &str,
    deadline: Instant,
) -> anyhow::Result<Snapshot> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(status) = stand.daemon_exited() {
            bail!("the daemon exited ({status}): {}", stand.daemon_tail());
        }
        let snapshot = watcher.snapshot(stand).await?;
        live.status(report::live(phase, &snapshot));
        if watcher.settled(&stand.hubspot).await? {
            return watcher.snapshot(stand).await;
        }
        if Instant::now() > deadline {
            bail!(
                "not settled before the --timeout ({phase}): {}",
                report::live(phase, &snapshot).replace('\n', " · ")
            );
        }
    }
}

/// How many sample members the shipped rules accept.
fn valid_members(members: &[crate::mapping::SqlRow]) -> anyhow::Result<usize> {
    let config = crate::config::load_str(config::SHIPPED, Need::Nothing, &|_| None)
        .map_err(|e| anyhow::anyhow!("the built-in config.yaml: {e}"))?;
    let object = config
        .objects
        .get(OBJECT)
        .ok_or_else(|| anyhow::anyhow!("the built-in config.yaml has no {OBJECT}"))?;
    let mapper = Mapper::new(object)?;
    let mut mapped: Vec<_> = members.iter().map(|m| mapper.to_hubspot(m)).collect();
    mapper.reject_duplicates(&mut mapped);
    Ok(mapped.iter().filter(|m| m.is_valid()).count())
}

/// The directory for config and logs: the given one, or a new one in the temp dir.
fn demo_dir(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok(dir.clone())
        }
        None => Ok(tempfile::Builder::new()
            .prefix("hubsync-demo-")
            .tempdir()?
            .keep()),
    }
}

fn places(stand: &Stand) -> Places {
    Places {
        metrics_url: stand.metrics_url(),
        database_url: without_password(&stand.database_url),
        log_dir: stand.log_dir.display().to_string(),
        config_path: stand.config_path.display().to_string(),
        hubspot_url: stand.hubspot.base_url(),
        sql_server: match stand.mssql.ca_file() {
            Some(ca) => format!(
                "{} (simulator, login sa, TLS; its test CA: {})",
                stand.mssql.addr(),
                ca.display()
            ),
            None => format!("{} (simulator, login sa)", stand.mssql.addr()),
        },
    }
}

/// A database URL fit to print: any password replaced by `****`.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(the --database-url given)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::without_password("postgres://u:secret@h:5/db"),
            "postgres://u:****@h:5/db"
        );
        assert_eq!(
            super::without_password("postgres://postgres@127.0.0.1:5/db"),
            "postgres://postgres@127.0.0.1:5/db"
        );
    }
}
