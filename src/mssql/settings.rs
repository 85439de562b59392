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
    /// TCP connect plus TLS and login handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one server response before the connection is treated as lost.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long an operation keeps reconnecting (exponential backoff) before it gives up.
    #[serde(with = "humantime_serde")]
    pub retry_max_elapsed: Duration,
    /// Times a writer batch chosen as deadlock victim (1205) is retried.
    pub deadlock_retries: u32,
    /// Zone that local `datetime` values are in.
    pub time_zone: String,
}

impl Default for SqlServerSettings {
    fn default() -> Self {
        Self {
            connection: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(30),
            retry_max_elapsed: Duration::from_secs(60),
            deadlock_retries: 3,
            time_zone: "America/Costa_Rica".into(),
        }
    }
}

impl SqlServerSettings {
    /// Adds a problem for every setting that cannot work; `need_connection` when the command
    /// talks to SQL Server.
    /// The configured zone (`America/Costa_Rica` when the name is unknown; `check` reports it).
    pub fn zone(&self) -> chrono_tz::Tz {
        self.time_zone
            .parse()
            .unwrap_or(chrono_tz::America::Costa_Rica)
    }

    /// What check-config should say about the connection's TLS (see
    /// [`super::pool::tls_weaknesses`]); `run` logs the same as warnings.
    pub fn notes(&self, path: &str) -> Vec<String> {
        self.connection
            .as_ref()
            .map(super::pool::tls_weaknesses)
            .unwrap_or_default()
            .into_iter()
            .map(|weakness| format!("{path}.connection: {weakness}"))
            .collect()
    }

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
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.is_zero() {
                problems.push(format!("{path}.{name}"), "must be greater than zero");
            }
        }
        if let Some(Err(e)) = self.connection.as_ref().map(super::pool::parse_connection) {
            problems.push(format!("{path}.connection"), e);
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(
                format!("{path}.time_zone"),
                format!("unknown time zone `{}`", self.time_zone),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_timeouts_unknown_zones_and_bad_connection_strings() {
        let settings = SqlServerSettings {
            connection: Some(SecretString::from(
                "server=tcp:db,1433;trusted_connection=yes",
            )),
            command_timeout: Duration::ZERO,
            time_zone: "Mars/Olympus".into(),
            ..SqlServerSettings::default()
        };
        let mut problems = Problems::default();
        settings.check("sql_server", true, &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sql_server.command_timeout",
                "sql_server.connection",
                "sql_server.time_zone"
            ]
        );
        let mut problems = Problems::default();
        SqlServerSettings::default().check("sql_server", false, &mut problems);
        assert!(problems.is_empty());
    }
}
