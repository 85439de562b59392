//! `sql_server:` settings — ADO.NET connection string (a secret), pool size and time zone.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::Problems;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlServerSettings {
    /// `server=tcp:host,1433;database=…;user=…;password=…;encrypt=true`; usually from
    /// `HUBSYNC_SQL_SERVER` or `${SQL_SERVER}`.
    pub connection: Option<SecretString>,
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Zone that local `datetime` values are in.
    pub time_zone: String,
}

impl Default for SqlServerSettings {
    fn default() -> Self {
        Self {
            connection: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(15),
            time_zone: "America/Costa_Rica".into(),
        }
    }
}

impl SqlServerSettings {
    /// Adds a problem for every setting that cannot work; `need_connection` when the command
    /// talks to SQL Server.
    pub fn check(&self, path: &str, need_connection: bool, problems: &mut Problems) {
        if need_connection && self.connection.is_none() {
            problems.push(
                format!("{path}.connection"),
                format!(
                    "required secret is missing: set {} or {path}.connection",
                    crate::config::ENV_SQL_SERVER
                ),
            );
        }
        if self.pool_size == 0 {
            problems.push(format!("{path}.pool_size"), "must be at least 1");
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(
                format!("{path}.time_zone"),
                format!("unknown time zone `{}`", self.time_zone),
            );
        }
    }
}
