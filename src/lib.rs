//! hubsync: keeps a cooperative's member contacts in SQL Server and HubSpot CRM in step, in both
//! directions, through a durable PostgreSQL work queue.

pub mod app;
pub mod bench;
pub mod budget;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod hubspot;
pub mod jobs;
pub mod mapping;
pub mod mssql;
pub mod pg;
pub mod queue;
pub mod sim;
pub mod support;
pub mod sync;
pub mod telemetry;
pub mod validation;
