//! Assembles the sync engine from the configuration: one shared HubSpot client and limiter, one
//! SQL Server pool, and per object its mapper, SQL Server poller and to_hubspot handler.

use std::sync::Arc;

use anyhow::Context;

use super::erasure::ErasurePolicy;
use super::poller::{SqlPoller, sql_object_settings};
use super::to_hubspot::{PortalCache, ToHubspot};
use super::to_sql::{HubspotPoller, ToSql};
use super::worker::Worker;
use crate::config::Config;
use crate::hubspot::{HubSpotClient, Limiter};
use crate::mapping::Mapper;
use crate::mssql::{ChangeReader, SqlPool, SqlWriter};
use crate::queue::{Direction, Queue};

/// Everything that syncs one object, both ways.
pub struct ObjectSync {
    pub name: String,
    pub poller: Arc<SqlPoller>,
    pub to_hubspot: Arc<ToHubspot>,
    pub hubspot_poller: Arc<HubspotPoller>,
    pub to_sql: Arc<ToSql>,
}

impl ObjectSync {
    /// A to_hubspot worker for this object named `worker`.
    pub fn worker(&self, queue: &Queue, worker: &str) -> Worker<ToHubspot> {
        Worker {
            queue: queue.clone(),
            name: worker.to_string(),
            object: self.name.clone(),
            direction: Direction::ToHubspot,
            handler: self.to_hubspot.clone(),
        }
    }

    /// A to_sql worker for this object named `worker`.
    pub fn sql_worker(&self, queue: &Queue, worker: &str) -> Worker<ToSql> {
        Worker {
            queue: queue.clone(),
            name: worker.to_string(),
            object: self.name.clone(),
            direction: Direction::ToSql,
            handler: self.to_sql.clone(),
        }
    }
}

/// The engine: the shared clients and every configured object.
pub struct Engine {
    pub hubspot: Arc<HubSpotClient>,
    pub sql: SqlPool,
    pub objects: Vec<ObjectSync>,
}

pub fn build(config: &Config, queue: &Queue) -> anyhow::Result<Engine> {
    build_with(
        config,
        queue,
        Arc::new(Limiter::from_settings(&config.hubspot)),
    )
}

/// As [`build`], sharing an existing HubSpot limiter (a daemon reload keeps its rate window).
pub fn build_with(config: &Config, queue: &Queue, limiter: Arc<Limiter>) -> anyhow::Result<Engine> {
    let hubspot = Arc::new(
        HubSpotClient::new(&config.hubspot, limiter).context("cannot set up the HubSpot client")?,
    );
    let sql = SqlPool::new(&config.sql_server).context("cannot set up the SQL Server pool")?;
    let mut objects = Vec::new();
    for (name, object) in &config.objects {
        let mapper = Arc::new(
            Mapper::new(object).with_context(|| format!("objects.{name}: invalid mapping"))?,
        );
        let sql_object = sql_object_settings(object).validate().map_err(|problems| {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("objects.{name}: {}", text.join("; "))
        })?;
        let reader = Arc::new(ChangeReader::new(sql.clone(), sql_object.clone()));
        let writer = Arc::new(SqlWriter::new(sql.clone(), sql_object.clone()));
        objects.push(ObjectSync {
            name: name.clone(),
            hubspot_poller: Arc::new(HubspotPoller {
                object: name.clone(),
                hubspot_object: object.hubspot_object.clone(),
                client: hubspot.clone(),
                properties: mapper.fields().map(|f| f.hubspot.clone()).collect(),
                pool: queue.pool().clone(),
                max_attempts: queue.settings().max_attempts,
                lag: config.hubspot.search_lag,
                archive_scan: object.on_hubspot_archive.scan_interval(),
                last_archive_scan: Default::default(),
            }),
            to_sql: Arc::new(ToSql {
                object: name.clone(),
                mapper: mapper.clone(),
                reader: reader.clone(),
                writer: writer.clone(),
                pool: queue.pool().clone(),
                on_archive: object.on_hubspot_archive.clone(),
            }),
            poller: Arc::new(SqlPoller {
                object: name.clone(),
                reader: ChangeReader::new(sql.clone(), sql_object),
                pool: queue.pool().clone(),
                max_attempts: queue.settings().max_attempts,
            }),
            to_hubspot: Arc::new(ToHubspot {
                object: name.clone(),
                hubspot_object: object.hubspot_object.clone(),
                mapper,
                client: hubspot.clone(),
                pool: queue.pool().clone(),
                sql_reader: Some(reader),
                lookup: Default::default(),
                portal: PortalCache::new(object.portal_required.clone()),
                erasure: ErasurePolicy::new(object),
                sql_writer: Some(writer.clone()),
            }),
        });
    }
    Ok(Engine {
        hubspot,
        sql,
        objects,
    })
}
