//! `objects.<name>:` — one synced object: SQL table and key, HubSpot object, match property and
//! its field list.

use serde::Deserialize;

use crate::config::Problems;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectConfig {
    /// SQL Server table, optionally schema-qualified (`dbo.hb_contacts`).
    pub sql_table: String,
    /// Primary-key column of that table.
    pub sql_key: String,
    /// HubSpot object type (`contacts`).
    #[serde(default = "default_hubspot_object")]
    pub hubspot_object: String,
    /// Unique HubSpot property used to find existing records (`email`).
    #[serde(default = "default_match_property")]
    pub match_property: String,
}

fn default_hubspot_object() -> String {
    "contacts".into()
}

fn default_match_property() -> String {
    "email".into()
}

impl ObjectConfig {
    /// Adds a problem for every setting of this object that cannot work.
    pub fn check(&self, path: &str, problems: &mut Problems) {
        if self.sql_table.trim().is_empty() {
            problems.push(format!("{path}.sql_table"), "must not be empty");
        }
        if self.sql_key.trim().is_empty() {
            problems.push(format!("{path}.sql_key"), "must not be empty");
        }
    }
}
