//! `hubsync bench reconcile`: N members in step on both simulators (SQL Server rows, HubSpot
//! contacts and the record links built directly, as the sync would leave them), then a share of
//! drift of each kind made behind hubsync's back; `hubsync run` runs a reconcile job while its
//! pollers and workers go on. Prints the run's time, HubSpot requests (list pages of 100 are the
//! floor) and their share of the rate limit, drift made and found (totals and per kind), and the
//! daemon's peak RSS.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::SeedableRng;
use serde_json::json;

use super::sync::{Daemon, Stand};
use super::{peak_rss_mib, thousands};
use crate::exit::{self, Failure};
use crate::mapping::SqlRow;
use crate::mssql::{ChangeReader, SqlPool, SqlServerSettings};
use crate::queue::Direction;
use crate::sync::reconcile::Kind;

#[derive(Debug, Args)]
pub struct ReconcileBenchArgs {
    /// Members in step before the drift.
    #[arg(long, default_value_t = 100_000)]
    members: u64,
    /// Share of the members drifted per kind.
    #[arg(long, default_value_t = 0.01)]
    drift: f64,
    /// After the fixes are synced, run again and print what that run finds (0 is the target).
    #[arg(long)]
    again: bool,
}

pub async fn run(args: ReconcileBenchArgs, config: &Path) -> Result<u8, Failure> {
    bench(args, config)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

/// The shipped configuration for the bench: records created in HubSpot are inserted (so an
/// orphan contact is drift, not policy) and bring their member number; archives mark the row.
fn edit(text: &str) -> anyhow::Result<String> {
    let mut out = text.to_string();
    for (from, to) in [
        (
            "on_new_hubspot_record: ignore",
            "on_new_hubspot_record: insert",
        ),
        (
            "hubspot: numero_asociado, direction: to_hubspot,",
            "hubspot: numero_asociado, direction: both,",
        ),
        (
            "on_hubspot_archive: { action: ignore }",
            "on_hubspot_archive: { action: set_column, column: activo, value: false }",
        ),
    ] {
        if !out.contains(from) {
            bail!("the config has no `{from}` for the bench to change");
        }
        out = out.replace(from, to);
    }
    Ok(out)
}

/// A HubSpot API call to the simulator, as a HubSpot user's edits would be.
async fn hubspot_call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let answer = http
        .post(format!("{base}{path}"))
        .bearer_auth("sim-token")
        .json(&body)
        .send()
        .await?;
    if !answer.status().is_success() && answer.status().as_u16() != 204 {
        bail!("{path}: {} {}", answer.status(), answer.text().await?);
    }
    Ok(())
}

async fn bench(args: ReconcileBenchArgs, config_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let stand = Stand::start().await?;
    crate::pg::migrate(&stand.pool).await?;
    let (config, mapper, _) = stand.configure(&edit(&text)?, 4)?;
    let contacts = config
        .objects
        .get("contacts")
        .context("the config maps no `contacts` object")?;
    let per_kind = ((args.members as f64) * args.drift).round().max(1.0) as usize;

    // In step: the members in SQL Server, the valid ones in HubSpot, and their links.
    let t = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let total = args.members + per_kind as u64 * 2;
    let members: Vec<SqlRow> = (0..total)
        .map(|i| super::validate::member_row(i, &mut rng))
        .collect();
    let (members, spare) = members.split_at(args.members as usize);
    let (newcomers, outsiders) = spare.split_at(per_kind);
    stand
        .mssql
        .insert_rows("[dbo].[hb_contacts]", members)
        .await?;
    let sql = SqlPool::new(&SqlServerSettings {
        connection: Some(stand.mssql.connection_string().into()),
        ..Default::default()
    })?;
    let object = crate::sync::poller::sql_object_settings(contacts)
        .validate()
        .map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let reader = ChangeReader::new(sql, object);
    let mut poll = reader.poll(None);
    let mut rows = Vec::new();
    let mut cursor = None;
    while let Some(page) = poll.next_page().await? {
        rows.extend(page.changes);
        cursor = Some(page.cursor);
    }
    drop(poll);
    let valid: Vec<(String, i64, crate::mapping::Properties)> = rows
        .iter()
        .filter_map(|c| {
            let mapped = mapper.to_hubspot(&c.row);
            let version = crate::sync::poller::source_version(c)?;
            mapped
                .is_valid()
                .then(|| (c.key.clone(), version, mapped.properties))
        })
        .collect();
    // Synced a day ago.
    let synced_at = chrono::Utc::now() - chrono::Duration::days(1);
    let yesterday = synced_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let dated = |mut p: crate::mapping::Properties| {
        for date in ["createdate", "lastmodifieddate"] {
            p.insert(date.into(), Some(yesterday.clone()));
        }
        p
    };
    let props: Vec<_> = valid.iter().map(|v| dated(v.2.clone())).collect();
    let ids = stand.hubspot.seed_contacts(&props)?;
    for (chunk, chunk_ids) in valid.chunks(5000).zip(ids.chunks(5000)) {
        let keys: Vec<&str> = chunk.iter().map(|v| v.0.as_str()).collect();
        let versions: Vec<i64> = chunk.iter().map(|v| v.1).collect();
        let synced: Vec<serde_json::Value> = chunk.iter().map(|v| json!(v.2)).collect();
        sqlx::query(
            "INSERT INTO record_links (object, sql_key, hubspot_id, synced, sql_version, \
               hubspot_version, synced_to_hubspot_at) \
             SELECT 'contacts', k, i, s, v, $5, now() \
             FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[]) AS t(k, i, s, v)",
        )
        .bind(&keys)
        .bind(chunk_ids)
        .bind(&synced)
        .bind(&versions)
        .bind(synced_at.timestamp_millis())
        .execute(&stand.pool)
        .await?;
    }
    println!(
        "bench reconcile: {} members in step ({} valid, so in HubSpot and linked) in {:.1} s",
        thousands(args.members),
        thousands(valid.len() as u64),
        t.elapsed().as_secs_f64()
    );

    // Drift behind hubsync's back, `per_kind` of each.
    let http = reqwest::Client::new();
    let base = format!("{}/crm/objects/2026-09/contacts", stand.hubspot.base_url());
    let step = valid.len() / (per_kind * 6).max(1);
    let pick = |kind: usize, i: usize| (i * 6 + kind) * step.max(1);
    let chosen = |kind: usize| -> Vec<usize> {
        (0..per_kind)
            .map(|i| pick(kind, i))
            .filter(|&i| i < valid.len())
            .collect()
    };
    let mut made: BTreeMap<Kind, usize> = BTreeMap::new();
    // SQL Server edits, then new members, that the poller's cursor passes over.
    let sql_edits = chosen(0);
    for keys in sql_edits.chunks(500) {
        let list: Vec<&str> = keys.iter().map(|&i| valid[i].0.as_str()).collect();
        stand
            .mssql
            .execute_batch(&format!(
                "UPDATE [dbo].[hb_contacts] SET [firstname] = N'Cambio Perdido' \
                 WHERE [numero_asociado] IN ({})",
                list.join(",")
            ))
            .await?;
    }
    made.insert(Kind::SqlDrift, sql_edits.len());
    stand
        .mssql
        .insert_rows("[dbo].[hb_contacts]", newcomers)
        .await?;
    let valid_newcomers = newcomers
        .iter()
        .filter(|r| mapper.to_hubspot(r).is_valid())
        .count();
    made.insert(Kind::MissingInHubspot, valid_newcomers);
    let mut poll = reader.poll(cursor);
    let mut cursor = None;
    while let Some(page) = poll.next_page().await? {
        cursor = Some(page.cursor);
    }
    drop(poll);
    let cursor = cursor.context("the SQL Server poller had changes to pass over")?;
    // HubSpot: edits, contacts archived by hand, contacts created there.
    let hs_edits = chosen(1);
    for chunk in hs_edits.chunks(100) {
        let inputs: Vec<_> = chunk
            .iter()
            .map(|&i| json!({"id": ids[i], "properties": {"lastname": "Editado Sin Aviso"}}))
            .collect();
        hubspot_call(&http, &base, "/batch/update", json!({"inputs": inputs})).await?;
    }
    made.insert(Kind::HubspotDrift, hs_edits.len());
    let archived = chosen(2);
    for chunk in archived.chunks(100) {
        let inputs: Vec<_> = chunk.iter().map(|&i| json!({"id": ids[i]})).collect();
        hubspot_call(&http, &base, "/batch/archive", json!({"inputs": inputs})).await?;
    }
    made.insert(Kind::OrphanLink, archived.len());
    let outsider_props: Vec<_> = outsiders
        .iter()
        .map(|r| mapper.to_hubspot(r))
        .filter(|m| m.is_valid())
        .map(|m| dated(m.properties))
        .collect();
    stand.hubspot.seed_contacts(&outsider_props)?;
    made.insert(Kind::OrphanContact, outsider_props.len());
    // hubsync's own table: links lost.
    let unlinked: Vec<&str> = chosen(3).iter().map(|&i| valid[i].0.as_str()).collect();
    sqlx::query("DELETE FROM record_links WHERE object = 'contacts' AND sql_key = ANY($1)")
        .bind(&unlinked)
        .execute(&stand.pool)
        .await?;
    made.insert(Kind::UnlinkedMatchable, unlinked.len());
    // The pollers' positions: past every change above (the HubSpot poller's also past its
    // re-read window, so that it does not read them again).
    let ahead = chrono::Utc::now().timestamp_millis()
        + config.hubspot.search_lag.as_millis() as i64
        + 5_000;
    let hubspot_cursor = json!({"lastmodifieddate_ms": ahead, "archived_at_ms": ahead});
    for (direction, value) in [
        (Direction::ToHubspot, cursor.to_json()),
        (Direction::ToSql, hubspot_cursor),
    ] {
        crate::sync::poller::enqueue_page(&stand.pool, "contacts", direction, &[], value, 10)
            .await?;
    }
    let made_total: usize = made.values().sum();

    // The service runs a reconcile job beside its pollers and workers.
    let mut run = stand.hubsync(&["run"]);
    run.envs(crate::daemon::SERVICE_ALLOCATOR_ENV);
    let mut daemon = Daemon(run.spawn()?);
    let mut rss = 0.0f64;
    let first = reconcile_job(&stand, &mut daemon, &mut rss).await?;
    let found_total: i64 = Kind::DRIFT
        .iter()
        .map(|k| first.counts.get(k.as_str()).copied().unwrap_or(0))
        .sum();
    let ceiling = f64::from(config.hubspot.requests_per_10s) / 10.0;
    let rate = first.requests as f64 / first.seconds;
    println!(
        "reconcile: {} SQL Server rows, {} HubSpot records in {:.1} s",
        thousands(first.counts.get("sql_rows").copied().unwrap_or(0) as u64),
        thousands(first.counts.get("hubspot_records").copied().unwrap_or(0) as u64),
        first.seconds
    );
    let floor = first.counts.get("hubspot_records").copied().unwrap_or(0) as f64 / 100.0;
    println!(
        "HubSpot requests: {} (list pages of 100: {:.0} is the floor), {rate:.2}/s = {:.3} of the \
         limit ({ceiling:.0}/s; configured share {:.2})",
        thousands(first.requests as u64),
        floor.ceil(),
        rate / ceiling,
        config.reconcile.budget_share
    );
    println!("drift made: {made_total}");
    println!("drift found: {found_total}");
    for kind in Kind::DRIFT {
        println!(
            "  {:<20} made {:>6}  found {:>6}",
            kind.as_str(),
            made.get(&kind).copied().unwrap_or(0),
            first.counts.get(kind.as_str()).copied().unwrap_or(0)
        );
    }
    println!(
        "not compared (changes on their way, or refused records): {}",
        first.counts.get("skipped_in_flight").copied().unwrap_or(0)
            + first.counts.get("skipped_invalid").copied().unwrap_or(0)
    );
    if args.again {
        // The fixes synced, a second run.
        wait_idle(&stand, &mut daemon, &mut rss).await?;
        let second = reconcile_job(&stand, &mut daemon, &mut rss).await?;
        let again: i64 = Kind::DRIFT
            .iter()
            .map(|k| second.counts.get(k.as_str()).copied().unwrap_or(0))
            .sum();
        println!(
            "second run after the fixes synced: drift found {again} in {:.1} s",
            second.seconds
        );
    }
    rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
    daemon.stop();
    println!("daemon peak RSS: {rss:.1} MiB (target ≤ 64)");
    Ok(())
}

/// A finished reconcile job's run.
struct Finished {
    counts: BTreeMap<String, i64>,
    requests: i64,
    seconds: f64,
}

/// Starts a reconcile job through `hubsync jobs start` and waits for its run to complete.
async fn reconcile_job(
    stand: &Stand,
    daemon: &mut Daemon,
    rss: &mut f64,
) -> anyhow::Result<Finished> {
    let status = stand
        .hubsync(&[
            "jobs",
            "start",
            "--kind",
            "reconcile",
            "--object",
            "contacts",
        ])
        .status()?;
    if !status.success() {
        bail!("hubsync jobs start failed: {status}");
    }
    let job: i64 = sqlx::query_scalar("SELECT max(id) FROM sync_jobs WHERE kind = 'reconcile'")
        .fetch_one(&stand.pool)
        .await?;
    loop {
        *rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
        if let Some(status) = daemon.0.try_wait()? {
            bail!("hubsync run exited: {status}");
        }
        let (status, errors): (String, serde_json::Value) =
            sqlx::query_as("SELECT status, errors FROM sync_jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&stand.pool)
                .await?;
        match status.as_str() {
            "completed" => break,
            "failed" | "cancelled" => bail!("reconcile job {status}: {errors}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let (counts, requests, seconds): (serde_json::Value, i64, f64) = sqlx::query_as(
        "SELECT counts, requests, extract(epoch FROM finished_at - started_at)::float8 \
         FROM reconcile_runs WHERE job_id = $1 AND status = 'completed'",
    )
    .bind(job)
    .fetch_one(&stand.pool)
    .await?;
    Ok(Finished {
        counts: serde_json::from_value(counts)?,
        requests,
        seconds,
    })
}

/// Waits until the queue holds nothing pending or running.
async fn wait_idle(stand: &Stand, daemon: &mut Daemon, rss: &mut f64) -> anyhow::Result<()> {
    loop {
        *rss = rss.max(peak_rss_mib(Some(daemon.0.id())).unwrap_or(0.0));
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_queue WHERE state IN ('pending', 'running')",
        )
        .fetch_one(&stand.pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
