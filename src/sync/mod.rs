//! The sync engine: diffs against the last synced snapshot, echo suppression and conflict
//! resolution (pure, in `diff`); pollers and workers join the queue, mapping, HubSpot and SQL
//! Server sides.

pub mod backfill;
pub mod diff;
pub mod dry_run;
pub mod engine;
pub mod erasure;
pub mod forget;
pub mod history;
pub mod links;
pub mod mark_synced;
pub mod merges;
pub mod plan;
pub mod poller;
pub mod reconcile;
pub mod resync;
pub mod to_hubspot;
pub mod to_sql;
pub mod worker;
pub mod writes;
