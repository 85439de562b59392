//! The demo's words on screen: the live status lines and the final report, built from snapshots
//! of the queue, the simulators and the daemon's metrics. Pure text.

use std::fmt::Write as _;
use std::time::Duration;

use super::changes::{Arrived, Changes};
use super::watch::Snapshot;
use crate::bench::thousands;
use crate::queue::Direction;

/// Addresses an operator can open.
#[derive(Debug, Clone)]
pub struct Places {
    pub metrics_url: String,
    pub database_url: String,
    pub log_dir: String,
    pub config_path: String,
    pub hubspot_url: String,
    pub sql_server: String,
}

fn n(v: impl TryInto<u64>) -> String {
    thousands(v.try_into().unwrap_or(0))
}

/// The live status lines.
pub fn live(phase: &str, s: &Snapshot) -> String {
    let reasons: Vec<String> = s
        .reasons
        .iter()
        .take(3)
        .map(|r| format!("{} {}", r.rule, n(r.records)))
        .collect();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({}…)", reasons.join(", "))
    };
    format!(
        "{phase}: synced {} · rejected {}{reasons} · pending {} · running {}\n\
         to SQL Server {} written · conflicts {} · HubSpot API {} calls, busiest 10 s {}/{} · \
         429s {}",
        n(s.synced),
        n(s.rejected),
        n(s.pending),
        n(s.running),
        n(s.outcome(Direction::ToSql, "WRITE")),
        s.conflicts.len(),
        n(s.api.total_requests),
        s.api.busiest_10s,
        s.api.limit_10s,
        s.api.throttled_429,
    )
}

/// Where to look while it runs.
pub fn places(p: &Places) -> String {
    format!(
        "  metrics      {}\n  queue        psql {} -c 'SELECT * FROM sync_queue_summary'\n  \
         conflicts    psql {} -c 'SELECT * FROM sync_conflicts'\n  logs         {}\n  \
         config       {}\n  HubSpot sim  {}/_sim/stats\n  SQL Server   {}\n",
        p.metrics_url,
        p.database_url,
        p.database_url,
        p.log_dir,
        p.config_path,
        p.hubspot_url,
        p.sql_server,
    )
}

/// Everything the final report says.
pub struct Final<'a> {
    pub members: usize,
    /// Members the configured rules accept.
    pub valid: usize,
    pub snapshot: &'a Snapshot,
    pub changes: &'a Changes,
    pub arrived: &'a Arrived,
    /// HubSpot API requests the demo made itself (its edits).
    pub demo_requests: u64,
    pub took: Duration,
}

/// The final report.
pub fn final_report(f: &Final<'_>) -> String {
    let s = f.snapshot;
    let mut out = String::new();
    let _ = writeln!(out, "hubsync demo: final report");
    let _ = writeln!(
        out,
        "  members in SQL Server: {} ({} valid by the configured rules)",
        n(f.members as u64),
        n(f.valid as u64)
    );
    let duplicates = if s.hubspot_contacts as i64 == s.synced {
        "no duplicates".to_string()
    } else {
        format!("{} contacts in HubSpot", n(s.hubspot_contacts))
    };
    let _ = writeln!(out, "  synced to HubSpot: {} ({duplicates})", n(s.synced));
    let _ = writeln!(out, "  rejected: {}", n(s.rejected));
    for r in &s.reasons {
        let _ = writeln!(
            out,
            "    {:>6}  {} ({})",
            n(r.records),
            if r.field.is_empty() {
                "record"
            } else {
                &r.field
            },
            r.rule
        );
    }
    let _ = writeln!(out, "  dead: {}", n(s.dead));
    let _ = writeln!(
        out,
        "  SQL Server edits in HubSpot: {} of {}",
        f.arrived.sql_to_hubspot,
        f.changes.in_sql.len()
    );
    let _ = writeln!(
        out,
        "  HubSpot edits in SQL Server: {} of {}",
        f.arrived.hubspot_to_sql,
        f.changes.in_hubspot.len()
    );
    let _ = writeln!(
        out,
        "  conflicts: {} recorded; edited on both sides and now equal on both: {} of {}",
        s.conflicts.len(),
        f.arrived.both_agree,
        f.changes.both.len()
    );
    for c in &s.conflicts {
        let _ = writeln!(
            out,
            "    member {} {}: SQL Server {:?} vs HubSpot {:?} -> {} wins",
            c.sql_key,
            c.field,
            c.sql_value.as_deref().unwrap_or(""),
            c.hubspot_value.as_deref().unwrap_or(""),
            c.winner
        );
    }
    for m in &f.arrived.missing {
        let _ = writeln!(out, "  NOT IN STEP: {m}");
    }
    for direction in [Direction::ToHubspot, Direction::ToSql] {
        let parts: Vec<String> = s
            .outcomes
            .iter()
            .filter(|(d, _, _)| d == direction.as_str())
            .map(|(_, o, c)| format!("{o} {}", n(*c)))
            .collect();
        let _ = writeln!(
            out,
            "  queue {}: {}",
            direction.as_str(),
            if parts.is_empty() {
                "nothing done".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    let daemon = s.api.daemon_requests.map_or(String::new(), |d| {
        format!("; the daemon's /metrics counts {}", n(d))
    });
    let _ = writeln!(
        out,
        "  HubSpot API: {} requests ({} of them the demo's edits); busiest 10 s window {} of {} \
         allowed; {} answered 429{daemon}",
        n(s.api.total_requests),
        f.demo_requests,
        s.api.busiest_10s,
        s.api.limit_10s,
        s.api.throttled_429
    );
    let _ = writeln!(out, "  took: {:.1} s", f.took.as_secs_f64());
    out
}

/// Whether the run showed what it should: every valid member synced once, nothing dead,
/// every change arrived and at least one conflict recorded.
pub fn in_step(f: &Final<'_>) -> bool {
    let s = f.snapshot;
    s.synced as usize == f.valid
        && s.hubspot_contacts as i64 == s.synced
        && s.rejected as usize + f.valid == f.members
        && s.dead == 0
        && f.arrived.missing.is_empty()
        && !s.conflicts.is_empty()
}

#[cfg(test)]
mod tests {
    use super::super::watch::{ApiUse, Conflict, Reason};
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            outcomes: vec![
                ("to_hubspot".into(), "CREATE".into(), 2700),
                ("to_sql".into(), "WRITE".into(), 61),
            ],
            synced: 2700,
            rejected: 300,
            reasons: vec![Reason {
                field: "email".into(),
                rule: "email".into(),
                records: 150,
            }],
            conflicts: vec![Conflict {
                sql_key: "12".into(),
                field: "firstname".into(),
                sql_value: Some("Ana Patricia".into()),
                hubspot_value: Some("Ana Paty".into()),
                winner: "hubspot".into(),
            }],
            api: ApiUse {
                total_requests: 1234,
                busiest_10s: 100,
                limit_10s: 100,
                throttled_429: 0,
                daemon_requests: Some(1200),
            },
            hubspot_contacts: 2700,
            ..Default::default()
        }
    }

    #[test]
    fn the_report_states_the_figures() {
        let s = snapshot();
        let changes = Changes::default();
        let arrived = Arrived::default();
        let f = Final {
            members: 3000,
            valid: 2700,
            snapshot: &s,
            changes: &changes,
            arrived: &arrived,
            demo_requests: 2,
            took: Duration::from_millis(41_500),
        };
        let text = final_report(&f);
        assert!(
            text.contains("members in SQL Server: 3,000 (2,700 valid"),
            "{text}"
        );
        assert!(
            text.contains("synced to HubSpot: 2,700 (no duplicates)"),
            "{text}"
        );
        assert!(
            text.contains("rejected: 300\n       150  email (email)"),
            "{text}"
        );
        assert!(
            text.contains("member 12 firstname: SQL Server \"Ana Patricia\" vs HubSpot \"Ana Paty\" -> hubspot wins"),
            "{text}"
        );
        assert!(text.contains("queue to_sql: WRITE 61"), "{text}");
        assert!(text.contains("1,234 requests (2 of them the demo's edits); busiest 10 s window 100 of 100 allowed; 0 answered 429; the daemon's /metrics counts 1,200"), "{text}");
        assert!(in_step(&f));
        let none = Snapshot {
            conflicts: vec![],
            ..snapshot()
        };
        assert!(!in_step(&Final {
            snapshot: &none,
            ..f
        }));
    }

    #[test]
    fn the_live_lines_show_progress() {
        let text = live("initial load", &snapshot());
        assert!(
            text.starts_with("initial load: synced 2,700 · rejected 300"),
            "{text}"
        );
        assert!(text.contains("conflicts 1 · HubSpot API 1,234 calls, busiest 10 s 100/100"));
    }
}
