//! Schedules (`schedules:` in config.yaml): named cron expressions, read in
//! `sql_server.time_zone`, that start jobs; their checks, their next run, and the clock they
//! are read against (the system's, or one a test moves by hand).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;

use super::{JobKind, JobRequest, parse_request};
use crate::queue::Direction;

/// One entry of `schedules:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Named in logs, in `GET /api/v1/schedules` and on the jobs it starts.
    pub name: String,
    pub kind: JobKind,
    pub object: String,
    /// Five fields (minute hour day-of-month month day-of-week) or `@daily`, `@hourly`, …, in
    /// `sql_server.time_zone`.
    pub cron: String,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub dry_run: bool,
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_text: String,
    cron: Cron,
    /// The job it starts.
    pub request: JobRequest,
}

impl Schedule {
    /// The first run strictly after `after`, reading the expression in `zone`.
    pub fn next_after(&self, after: DateTime<Utc>, zone: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Parses a five-field cron expression (or an `@` alias).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())
}

/// Checks every schedule against the configured `objects`: each problem as (key path,
/// message naming the schedule).
pub fn check(
    configs: &[ScheduleConfig],
    objects: &[&str],
) -> Result<Vec<Schedule>, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut schedules = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let path = format!("schedules[{i}]");
        let named = format!("schedule `{}`", shown(&c.name));
        let mut problem = |key: &str, message: String| {
            problems.push((format!("{path}.{key}"), format!("{named}: {message}")));
        };
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !name_ok {
            problem(
                "name",
                "a name is 1 to 64 letters, digits, `-`, `_` or `.`".into(),
            );
        } else if configs[..i].iter().any(|o| o.name == c.name) {
            problem("name", "another schedule has this name".into());
        }
        let cron = parse_cron(&c.cron);
        if let Err(e) = &cron {
            problem(
                "cron",
                format!("not a cron expression ({e}); write five fields, e.g. `0 2 * * *`"),
            );
        }
        if c.kind == JobKind::Resync {
            problem(
                "kind",
                "a schedule cannot start a resync (it names no members); use backfill or reconcile"
                    .into(),
            );
            continue;
        }
        let body = serde_json::json!({
            "kind": c.kind.as_str(),
            "object": c.object,
            "direction": c.direction.map(Direction::as_str),
            "dry_run": c.dry_run,
        });
        match (parse_request(&body, objects), cron) {
            (Ok(request), Ok(cron)) if name_ok => schedules.push(Schedule {
                name: c.name.clone(),
                cron_text: c.cron.clone(),
                cron,
                request,
            }),
            (Err(errors), _) => {
                for e in errors {
                    problem(&e.field, e.message);
                }
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(schedules)
    } else {
        Err(problems)
    }
}

fn shown(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// What schedules read the time from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at `t` or soon after (earlier when the clock jumps: callers look again).
    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock. Sleeps at most a minute at a time, so a clock step (NTP, suspend) is
/// noticed within a minute.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (t - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait.min(Duration::from_secs(60))))
    }
}

/// A clock that moves only when told ([`ManualClock::set`]), for tests: a schedule fires when
/// the test moves the clock past its next run, without waiting.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    moved: Arc<tokio::sync::Notify>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            moved: Arc::default(),
        }
    }

    /// Moves the clock to `t`, waking every sleeper.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = t;
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                // Registered before the look, so a move in between is not missed.
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now() >= t {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, cron: &str) -> ScheduleConfig {
        ScheduleConfig {
            name: name.into(),
            kind: JobKind::Backfill,
            object: "contacts".into(),
            cron: cron.into(),
            direction: None,
            dry_run: false,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_is_read_in_the_configured_zone() {
        let s = check(&[config("nightly", "0 2 * * *")], &["contacts"]).unwrap();
        let cr = chrono_tz::America::Costa_Rica;
        // 02:00 in Costa Rica (UTC-6) is 08:00 UTC.
        let next = s[0].next_after(at("2026-12-02T04:00:00Z"), cr).unwrap();
        assert_eq!(next, at("2026-12-02T08:00:00Z"));
        // Strictly after: at the run itself, the next is a day later.
        assert_eq!(
            s[0].next_after(next, cr).unwrap(),
            at("2026-12-03T08:00:00Z")
        );
        let utc = s[0].next_after(at("2026-12-02T04:00:00Z"), chrono_tz::UTC);
        assert_eq!(utc.unwrap(), at("2026-12-03T02:00:00Z"));
    }

    #[test]
    fn aliases_and_steps_parse() {
        for ok in ["@hourly", "@daily", "*/15 * * * *", "0 3 * * MON-FRI"] {
            parse_cron(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn every_problem_names_its_schedule() {
        let mut resync = config("one", "* * * * *");
        resync.kind = JobKind::Resync;
        let mut reconcile = config("recon", "@daily");
        reconcile.kind = JobKind::Reconcile;
        let mut elsewhere = config("cars", "@daily");
        elsewhere.object = "cars".into();
        let problems = check(
            &[
                config("nightly", "0 2 * *"),
                config("nightly", "61 * * * *"),
                config("bad name", "@daily"),
                config("seconds", "0 0 2 * * *"),
                resync,
                reconcile,
                elsewhere,
            ],
            &["contacts"],
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "schedules[0].cron",
                "schedules[1].name",
                "schedules[1].cron",
                "schedules[2].name",
                "schedules[3].cron",
                "schedules[4].kind",
                // schedules[5], a nightly reconcile, is fine.
                "schedules[6].object",
            ]
        );
        assert!(
            problems[0].1.starts_with("schedule `nightly`: "),
            "{problems:?}"
        );
        assert!(problems[6].1.contains("no such object"), "{problems:?}");
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let clock = ManualClock::new(at("2026-12-02T04:00:00Z"));
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(at("2026-12-02T04:01:00Z")).await })
        };
        tokio::task::yield_now().await;
        clock.set(at("2026-12-02T04:00:30Z"));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.set(at("2026-12-02T04:01:00Z"));
        sleeper.await.unwrap();
    }
}
