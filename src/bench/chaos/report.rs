//! What one kill-and-compare scenario found, and its report: the figures issue #18 names, one
//! per line, then examples of each kind of finding with the queue history of a few members.

use std::path::PathBuf;

use super::compare::Findings;
use super::plan::Moment;
use super::stand::Held;
use crate::bench::thousands;
use crate::sim::hubspot::SimStats;

/// One kill and what the dead process left behind.
#[derive(Debug, Clone)]
pub struct Kill {
    pub pid: u32,
    pub moment: Moment,
    /// Whether the moment came (else the kill came when waiting for it ran out).
    pub reached: bool,
    /// Seconds since the scenario started.
    pub at_s: f64,
    pub held: Vec<Held>,
    /// Held to_hubspot items whose member HubSpot already has: written, never settled.
    pub written_unsettled: usize,
    pub window: String,
}

/// What one scenario found.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub members: usize,
    pub valid: usize,
    pub seed: u64,
    pub kills: Vec<Kill>,
    pub sql_edits: usize,
    pub hubspot_edits: usize,
    pub both_edits: usize,
    pub edit_batches: usize,
    pub edit_requests: u64,
    pub findings: Findings,
    /// What the queue did with a few of the members found wrong, one line each.
    pub histories: Vec<String>,
    /// Seconds from the last start until nothing the last killed process held is left.
    pub recovery_s: f64,
    /// Seconds from the last start until everything was settled.
    pub settled_s: f64,
    /// The last life's exit code on SIGTERM (None: killed by a signal or did not stop).
    pub exit_code: Option<i32>,
    pub hubspot: SimStats,
    pub elapsed_s: f64,
    /// Where the config, the daemon's output and its logs are (kept when something was found).
    pub dir: PathBuf,
}

impl ChaosReport {
    pub fn lost_to_sql(&self) -> usize {
        self.findings.lost_to_sql.len()
    }

    pub fn lost_to_hubspot(&self) -> usize {
        self.findings.lost_to_hubspot.len()
    }

    pub fn false_conflicts(&self) -> usize {
        self.findings.false_conflicts.len()
    }

    /// Every target met: nothing lost, duplicated, missing or different, every conflict settled
    /// by the policy and none recorded where only one side changed, recovery within 10 s and a
    /// clean stop.
    pub fn clean(&self) -> bool {
        let f = &self.findings;
        self.lost_to_sql() + self.lost_to_hubspot() + f.duplicates + self.false_conflicts() == 0
            && f.missing.is_empty()
            && f.unexpected.is_empty()
            && f.differing.is_empty()
            && f.settled == f.conflicts
            && self.recovery_s <= 10.0
            && self.exit_code == Some(0)
    }

    /// The report, one figure per line, then up to `examples` lines of each kind of finding.
    pub fn lines(&self, examples: usize) -> Vec<String> {
        let f = &self.findings;
        let n = |v: usize| thousands(v as u64);
        let reached = self.kills.iter().filter(|k| k.reached).count();
        let held = self.kills.iter().filter(|k| !k.held.is_empty()).count();
        let unsettled = self
            .kills
            .iter()
            .filter(|k| k.written_unsettled > 0)
            .count();
        let winners: Vec<String> = f.winners.iter().map(|(w, c)| format!("{w} {c}")).collect();
        let search = self
            .hubspot
            .requests_by_endpoint
            .get("search")
            .copied()
            .unwrap_or(0);
        let mut out = vec![
            format!(
                "members: {} ({} valid), seed {}",
                n(self.members),
                n(self.valid),
                self.seed
            ),
            format!(
                "kills: {} ({reached} at their moment, {held} holding items, {unsettled} between a \
                 HubSpot write and its settle)",
                self.kills.len()
            ),
            format!(
                "edits: {} SQL Server surnames, {} HubSpot first names, {} first names on both \
                 sides, in {} batches ({} HubSpot requests)",
                n(self.sql_edits),
                n(self.hubspot_edits),
                n(self.both_edits),
                n(self.edit_batches),
                n(self.edit_requests as usize)
            ),
            format!(
                "HubSpot: {} requests ({} searches), {} faults injected, {} answered 429",
                n(self.hubspot.total_requests as usize),
                n(search as usize),
                n(self.hubspot.faults_injected as usize),
                n(self.hubspot.throttled_429 as usize)
            ),
            format!("lost edits to_sql: {}", self.lost_to_sql()),
            format!("lost edits to_hubspot: {}", self.lost_to_hubspot()),
            format!("duplicates: {}", f.duplicates),
            format!("false conflicts: {}", self.false_conflicts()),
            format!(
                "conflicts settled: {} of {} (winners: {})",
                f.settled,
                f.conflicts,
                if winners.is_empty() {
                    "none".to_string()
                } else {
                    winners.join(", ")
                }
            ),
            format!("recovery after the last kill: {:.1} s", self.recovery_s),
            format!(
                "members missing from HubSpot: {}, contacts of no valid member: {}, other fields \
                 differing: {} (of {} compared)",
                f.missing.len(),
                f.unexpected.len(),
                f.differing.len(),
                n(f.fields_checked)
            ),
            format!(
                "settled {:.1} s after the last start; daemon exit on SIGTERM: {}; {:.0} s in all",
                self.settled_s,
                self.exit_code
                    .map_or("none (signal or timeout)".into(), |c| c.to_string()),
                self.elapsed_s
            ),
        ];
        let f = &self.findings;
        if f.overwritten_in_hubspot + f.overwritten_in_sql > 0 {
            out.push(format!(
                "of the lost edits, overwritten at their source by the other side's older value: \
                 {} in HubSpot, {} in SQL Server",
                f.overwritten_in_hubspot, f.overwritten_in_sql
            ));
        }
        for (what, list) in [
            ("lost to_sql", &f.lost_to_sql),
            ("lost to_hubspot", &f.lost_to_hubspot),
            ("false conflict", &f.false_conflicts),
            ("conflict not settled", &f.unsettled),
        ] {
            for finding in list.iter().take(examples) {
                out.push(format!("  {what}: {finding}"));
            }
        }
        for (what, list) in [
            ("missing", &f.missing),
            ("unexpected", &f.unexpected),
            ("differing", &f.differing),
        ] {
            for line in list.iter().take(examples) {
                out.push(format!("  {what}: {line}"));
            }
        }
        for line in &self.histories {
            out.push(format!("  history: {line}"));
        }
        if !self.clean() {
            out.push(format!(
                "config, daemon output and logs: {}",
                self.dir.display()
            ));
        }
        out
    }
}
