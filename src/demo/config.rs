//! The demo's `config.yaml`: the shipped annotated example (same objects and mappings) pointed at
//! the simulators, a free loopback port and a log directory, with short intervals so changes show
//! within seconds. Secrets stay out of the file (the daemon gets them from the environment).
//! Pure text edits, each checked to apply exactly once.

use std::net::SocketAddr;
use std::path::Path;

/// The repository's `config.yaml`, built into the binary so the demo runs anywhere.
pub const SHIPPED: &str = include_str!("../../config.yaml");

/// Where the demo's services are.
#[derive(Debug, Clone)]
pub struct Targets<'a> {
    pub http_listen: SocketAddr,
    pub hubspot_base_url: &'a str,
    pub log_dir: &'a Path,
}

/// The demo configuration text, or which edit of the shipped file no longer applies.
pub fn demo_config(shipped: &str, t: &Targets<'_>) -> Result<String, String> {
    let edits: [(&str, String); 9] = [
        (
            "http_listen: 127.0.0.1:9187",
            format!("http_listen: {}", t.http_listen),
        ),
        (
            "# instance: hubsync-1",
            "instance: hubsync-demo".to_string(),
        ),
        ("shutdown_grace: 30s", "shutdown_grace: 5s".to_string()),
        ("health_interval: 5s", "health_interval: 1s".to_string()),
        ("poll_interval: 5s", "poll_interval: 1s".to_string()),
        ("retry_initial: 5s", "retry_initial: 1s".to_string()),
        ("stdout: true", "stdout: false".to_string()),
        (
            "directory: /var/log/hubsync",
            format!("directory: {}", t.log_dir.display()),
        ),
        (
            "base_url: https://api.hubapi.com",
            // The simulator's search index has no lag, so the poller needs little overlap.
            format!("base_url: {}\n  search_lag: 2s", t.hubspot_base_url),
        ),
    ];
    let mut text = format!(
        "# hubsync demo: the shipped config.yaml pointed at the simulators and a throwaway\n\
         # PostgreSQL. Secrets come from the environment, as in production.\n{shipped}"
    );
    for (from, to) in edits {
        text = replace_once(&text, from, &to)?;
    }
    Ok(text)
}

/// Loads a config `text` whose secrets come from `secrets` (environment name, value) instead of
/// the environment, as the daemon started with them would see it.
pub fn load_with_secrets(
    text: &str,
    secrets: &[(&str, String)],
) -> Result<crate::config::Config, crate::config::ConfigError> {
    let env = |name: &str| {
        secrets
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    crate::config::load_str(text, crate::config::Need::All, &env)
}

/// `text` with `from`, which must occur exactly once, replaced by `to`; or why not.
pub fn replace_once(text: &str, from: &str, to: &str) -> Result<String, String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => Err(format!(
            "`{from}` occurs {n} times in config.yaml, expected once"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Need, load_str};

    #[test]
    fn the_demo_config_is_the_shipped_one_pointed_at_the_demo() {
        let logs = Path::new("/tmp/hubsync-demo/logs");
        let text = demo_config(
            SHIPPED,
            &Targets {
                http_listen: "127.0.0.1:4567".parse().unwrap(),
                hubspot_base_url: "http://127.0.0.1:4568",
                log_dir: logs,
            },
        )
        .unwrap();
        let env = |name: &str| match name {
            "HUBSYNC_DATABASE_URL" => Some("postgres://postgres@127.0.0.1:5/demo".to_string()),
            "HUBSYNC_HUBSPOT_TOKEN" => Some("t".to_string()),
            "HUBSYNC_SQL_SERVER" => Some("server=tcp:127.0.0.1,6;user=sa;password=p".to_string()),
            _ => None,
        };
        let config = load_str(&text, Need::All, &env).unwrap();
        let shipped = load_str(SHIPPED, Need::Nothing, &|_| None).unwrap();
        assert_eq!(config.service.http_listen.port(), 4567);
        assert_eq!(config.hubspot.base_url.as_str(), "http://127.0.0.1:4568/");
        assert_eq!(config.hubspot.search_lag.as_secs(), 2);
        assert_eq!(config.logging.directory.as_deref(), Some(logs));
        assert!(!config.logging.stdout);
        assert_eq!(
            format!("{:?}", config.objects),
            format!("{:?}", shipped.objects),
            "same objects and mappings"
        );
    }

    #[test]
    fn an_edit_that_no_longer_applies_is_named() {
        let t = Targets {
            http_listen: "127.0.0.1:1".parse().unwrap(),
            hubspot_base_url: "http://x",
            log_dir: Path::new("/tmp"),
        };
        let err = demo_config("service: {}\n", &t).unwrap_err();
        assert!(err.contains("http_listen"), "{err}");
    }
}
