//! `hubsync reconcile --object O [--dry-run] [--json]`: compare both sides with the record
//! links and queue the fixes (a dry run only lists them), with a progress bar on a terminal;
//! prints every finding (member key, HubSpot id, kind, differing field names: no values) and a
//! summary by kind. Exit 0 when nothing drifted, 1 when something did.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::{self, Failure};
use crate::sync::reconcile::{Kind, Progress, Reconciler, Summary, store};

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The object, as named under `objects:` in config.yaml.
    #[arg(long)]
    pub object: String,
    /// List what differs and queue nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Findings as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Whether a `[instance@]host:pid/…` holder is a process of this host that has ended.
pub fn ended_here(holder: &str) -> bool {
    let host = crate::daemon::host();
    crate::queue::process_of(holder)
        .is_some_and(|(_, h, pid)| h == host && !crate::daemon::process_alive(pid))
}

/// The reconciler of `object` with the configured budget share.
pub fn reconciler<'a>(
    config: &crate::config::Config,
    object: &'a crate::sync::engine::ObjectSync,
    pool: &'a sqlx::PgPool,
    holder: String,
    dry_run: bool,
    job_id: Option<i64>,
) -> Reconciler<'a> {
    Reconciler {
        object,
        pool,
        holder,
        ended: &ended_here,
        dry_run,
        job_id,
        max_attempts: config.queue.max_attempts,
        budget_share: config.reconcile.budget_share,
        requests_per_10s: config.hubspot.requests_per_10s,
    }
}

pub async fn run(config_path: &std::path::Path, args: ReconcileArgs) -> Result<u8, Failure> {
    let (config, queue, engine) = crate::app::engine_for(config_path, &args.object).await?;
    let object = crate::app::object_sync(&engine, &args.object)?;
    let holder = format!("{}/reconcile", crate::daemon::instance(&config));
    let reconciler = reconciler(&config, object, queue.pool(), holder, args.dry_run, None);
    let bar = bar();
    let summary = reconciler.run(|p| show(&bar, p)).await.map_err(|e| {
        match e.downcast_ref::<store::StoreError>() {
            Some(store::StoreError::Busy { .. }) => Failure::new(exit::TEMPFAIL, format!("{e:#}")),
            _ => crate::app::unavailable(e),
        }
    })?;
    bar.finish_and_clear();
    print_findings(queue.pool(), summary.run_id, args.json)
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    for line in report(&summary) {
        eprintln!("{line}");
    }
    Ok(if summary.drift() > 0 {
        exit::REJECTED
    } else {
        exit::OK
    })
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn show(bar: &ProgressBar, p: &Progress) {
    bar.set_prefix(p.phase);
    if let Some(total) = p.total {
        bar.set_length(total.max(p.done));
    } else {
        bar.set_length(p.done);
    }
    bar.set_position(p.done);
    bar.set_message(format!(
        "{} found, {} HubSpot requests",
        p.found, p.requests
    ));
}

/// Prints a run's findings on stdout, page by page.
async fn print_findings(pool: &sqlx::PgPool, run_id: i64, json: bool) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = 0;
    loop {
        let (page, last) = store::findings(pool, run_id, after, 1000)
            .await
            .map_err(std::io::Error::other)?;
        if page.is_empty() {
            break;
        }
        for f in &page {
            if json {
                writeln!(out, "{}", serde_json::to_string(f).unwrap_or_default())?;
            } else {
                writeln!(
                    out,
                    "{:<20} member={} hubspot_id={} fields={} fix={}",
                    f.kind,
                    f.sql_key.as_deref().unwrap_or("-"),
                    f.hubspot_id.as_deref().unwrap_or("-"),
                    if f.fields.is_empty() {
                        "-".into()
                    } else {
                        f.fields.join(",")
                    },
                    f.fix
                )?;
            }
        }
        after = last;
    }
    out.flush()
}

/// The summary lines: one per kind, the totals, what was queued.
pub fn report(s: &Summary) -> Vec<String> {
    let n = |k: &str| s.counts.get(k).copied().unwrap_or(0);
    let mut lines = vec![format!(
        "reconcile {} (run {}{}): {} SQL Server rows, {} HubSpot records, {} HubSpot requests, {:.1} s",
        s.object,
        s.run_id,
        if s.resumed { ", resumed" } else { "" },
        n("sql_rows"),
        n("hubspot_records"),
        s.requests,
        s.elapsed.as_secs_f64()
    )];
    for kind in Kind::DRIFT {
        lines.push(format!(
            "  {:<20} {:>7}  {}",
            kind.as_str(),
            n(kind.as_str()),
            kind.meaning()
        ));
    }
    lines.push(format!("drift found: {}", s.drift()));
    let kept = n(Kind::LeftByPolicy.as_str());
    if kept > 0 {
        lines.push(format!(
            "left by policy: {kept} (on_new_hubspot_record / on_hubspot_archive keep them)"
        ));
    }
    let skipped = n("skipped_in_flight") + n("skipped_invalid");
    if skipped > 0 {
        lines.push(format!(
            "not compared: {skipped} records with a change on its way or refused (the queue's)"
        ));
    }
    if s.dry_run {
        lines.push("dry run: nothing was queued or changed".into());
    } else {
        lines.push(format!(
            "queued: {} for HubSpot, {} for SQL Server",
            n("queued_to_hubspot"),
            n("queued_to_sql")
        ));
    }
    lines
}
