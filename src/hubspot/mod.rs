//! HubSpot CRM: settings, the rate-limited batch client, API types and the property cache.

mod settings;

pub use settings::HubSpotSettings;
