//! hubsync's integration tests: one test binary, one module per area, against real PostgreSQL
//! and the HubSpot and SQL Server simulators.

mod backfill;
mod budget;
mod change_tracking;
mod chaos;
mod cli;
mod cluster;
mod daemon;
mod daemon_faults;
mod demo;
mod every_edit;
mod hostile_config;
mod hubspot_client;
mod hubspot_client_budget;
mod hubspot_conformance;
mod hubspot_sim;
mod jobs;
mod lifecycle;
mod links;
mod merges;
mod mssql;
mod mssql_ct;
mod mssql_sim;
mod mssql_tls;
mod outputs;
mod privacy;
mod queue;
mod reconcile;
mod reliability;
mod sql_target;
mod support;
mod to_hubspot;
mod to_sql;
mod validate;
mod worker;
