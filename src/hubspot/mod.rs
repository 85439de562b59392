//! HubSpot CRM: settings, the paths of each API version, the rate-limited batch client, API types
//! and the property cache.

mod batch;
mod client;
mod error;
pub mod limiter;
pub mod paths;
pub mod portal;
pub mod preflight;
mod search;
mod settings;
pub mod types;
pub mod usage;

pub use batch::{BATCH_LIMIT, update_concurrently};
pub use client::{HubSpotClient, PROPERTY_CACHE_TTL, Repeat};
pub use error::HubSpotError;
pub use limiter::{BudgetError, Lane, Limiter, LimiterStats};
pub use paths::{ApiVersion, BatchOp, Paths};
pub use preflight::{PreflightProblem, PropertyUse};
pub use search::{ModifiedSince, SEARCH_PAGE, SearchPager, modified_property};
pub use settings::HubSpotSettings;
pub use types::{
    CreateInput, Properties, PropertyDef, PropertyDefs, ReadBy, Record, UpdateInput, WriteOutcome,
};
pub use usage::UsageReport;
