//! `hubsync bench mssql`: loads N rows into the default contact table of an in-process SQL
//! Server simulator (its seeded `dbo.hb_contacts`, connected over TLS with its certificate
//! checked), then reads them all as changes through the production change reader (rowversion
//! or change tracking mode, paged); prints rows/s, the ratio to HubSpot's write ceiling and
//! memory.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;

use super::{HUBSPOT_CEILING_PER_S, thousands};
use crate::exit::{self, Failure};
use crate::mssql::{ChangeReader, SqlObjectSettings, SqlPool, SqlServerSettings};

#[derive(Debug, Args)]
pub struct MssqlBenchArgs {
    /// Changed rows to read.
    #[arg(long, default_value_t = 100_000)]
    rows: u32,
    /// Rows per change-reader page.
    #[arg(long, default_value_t = 5_000)]
    page_size: u32,
    /// The change detection read: the rowversion column, or CHANGETABLE (change tracking
    /// enabled on the table before the load).
    #[arg(long, value_enum, default_value_t = Mode::Rowversion)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Rowversion,
    ChangeTracking,
}

pub async fn run(args: MssqlBenchArgs) -> Result<u8, Failure> {
    bench(args)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    Ok(exit::OK)
}

fn insert_batch(from: u32, to: u32) -> String {
    let values: Vec<String> = (from..=to)
        .map(|i| {
            format!(
                "({i}, N'1{:08}', N'Socio {i}', N'Rojas Mora {}', N'socio{i}@coop.cr', N'+5068{:07}', \
                 '19{:02}-0{}-1{}', N'San José', N'Escazú', N'San Rafael', {i}.25, 1)",
                i % 100_000_000,
                i % 97,
                i % 10_000_000,
                50 + i % 50,
                1 + i % 9,
                i % 10
            )
        })
        .collect();
    format!(
        "INSERT INTO [dbo].[hb_contacts] ([numero_asociado], [no__de_cedula], [firstname], [lastname], \
         [email], [hs_whatsapp_phone_number], [date_of_birth], [provincia], [canton], [distrito], \
         [salario_neto_semanal_o_quincenal], [activo]) VALUES {}",
        values.join(", ")
    )
}

async fn bench(args: MssqlBenchArgs) -> anyhow::Result<()> {
    let options = crate::sim::mssql::MssqlSimOptions {
        schema: Some(crate::sim::mssql::SEED_SCHEMA.to_string()),
        ..Default::default()
    };
    let sim = crate::sim::mssql::start("127.0.0.1:0".parse().context("address")?, options)
        .await
        .context("cannot start the SQL Server simulator")?;
    let settings = SqlServerSettings {
        connection: Some(SecretString::from(sim.connection_string())),
        pool_size: 2,
        command_timeout: Duration::from_secs(120),
        ..SqlServerSettings::default()
    };
    let pool = SqlPool::new(&settings)?;
    let mut conn = pool.get_once().await?;
    let tracking = args.mode == Mode::ChangeTracking;
    if tracking {
        conn.batch("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)")
            .await?;
        conn.batch("ALTER TABLE [dbo].[hb_contacts] ENABLE CHANGE_TRACKING")
            .await?;
    }
    let load = Instant::now();
    let mut from = 1;
    while from <= args.rows {
        let to = (from + 999).min(args.rows);
        conn.batch(&insert_batch(from, to)).await?;
        from = to + 1;
    }
    drop(conn);
    let load_s = load.elapsed().as_secs_f64();
    println!(
        "loaded {} rows into dbo.hb_contacts in {load_s:.1} s",
        thousands(u64::from(args.rows))
    );

    let detection = if tracking {
        "{mode: change_tracking}"
    } else {
        "{mode: rowversion, column: rv}"
    };
    let object: SqlObjectSettings = serde_yaml::from_str(&format!(
        "table: dbo.hb_contacts\nkey: numero_asociado\nchange_detection: {detection}\npage_size: {}\n",
        args.page_size
    ))?;
    let object = object
        .validate()
        .map_err(|p| anyhow::anyhow!("bench object settings: {:?}", p.into_vec()))?;
    let reader = ChangeReader::new(pool.clone(), object);
    let rss_before = super::peak_rss_mib(None);
    let started = Instant::now();
    // Change tracking: every row loaded is a change after version 0 (tracking began before
    // the load), read through CHANGETABLE rather than the first poll's full read.
    let stored = tracking.then_some(crate::mssql::ChangeCursor::tracked(0));
    let mut poll = reader.poll(stored);
    let (mut rows, mut pages, mut largest_page) = (0u64, 0u64, 0usize);
    while let Some(page) = poll.next_page().await? {
        rows += page.changes.len() as u64;
        pages += 1;
        largest_page = largest_page.max(page.changes.len());
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = rows as f64 / secs.max(1e-9);
    println!(
        "read {} changed rows in {pages} pages (≤ {largest_page} rows each) in {secs:.2} s",
        thousands(rows)
    );
    let stats = sim.stats();
    println!(
        "mode {}: over TLS with the certificate checked: {} ({} TLS sessions)",
        if tracking {
            "change_tracking"
        } else {
            "rowversion"
        },
        if stats.tls_sessions > 0 { "yes" } else { "no" },
        stats.tls_sessions
    );
    println!(
        "change reader: {} rows/s; ratio to HubSpot's write ceiling (1,000/s): {:.1}",
        thousands(rate as u64),
        rate / HUBSPOT_CEILING_PER_S
    );
    if let (Some(before), Some(after)) = (rss_before, super::peak_rss_mib(None)) {
        println!(
            "peak RSS (simulator included): {before:.0} MiB after loading, {after:.0} MiB after reading"
        );
    }
    sim.shutdown().await;
    anyhow::ensure!(
        rows == u64::from(args.rows),
        "read {rows} rows, expected {}",
        args.rows
    );
    Ok(())
}
