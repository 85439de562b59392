//! Health: which components are ready (PostgreSQL, SQL Server, HubSpot, pollers) and which
//! supervised tasks are alive, for `/readyz`, `STATUS=` lines and the systemd watchdog.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Component {
    pub ready: bool,
    pub detail: String,
}

/// Shared health state; every task reports into it.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<String, Component>>,
    /// Bumped on every component report, for [`Health::reported`].
    reports: tokio::sync::watch::Sender<u64>,
    beats: Mutex<BTreeMap<String, Instant>>,
    /// Per poller (object, direction it feeds): when it last completed a poll.
    polls: Mutex<BTreeMap<(String, String), Instant>>,
}

impl Health {
    /// Records a component's state; returns true when its readiness changed.
    pub fn set(&self, name: &str, ready: bool, detail: impl Into<String>) -> bool {
        let mut map = self.components.lock().expect("health lock");
        let new = Component {
            ready,
            detail: detail.into(),
        };
        let changed = map.get(name).is_none_or(|old| old.ready != ready);
        map.insert(name.to_string(), new);
        drop(map);
        self.reports.send_modify(|n| *n += 1);
        changed
    }

    /// Waits until every one of `names` has reported at least once (ready or not).
    pub async fn reported(&self, names: &[&str]) {
        let mut reports = self.reports.subscribe();
        let all_known = |_: &u64| {
            let map = self.components.lock().expect("health lock");
            names.iter().all(|n| map.contains_key(*n))
        };
        // The sender lives as long as `self`, so this only ends when the condition holds.
        let _ = reports.wait_for(all_known).await;
    }

    /// Ready when every known component is ready (and there is at least one).
    pub fn ready(&self) -> bool {
        let map = self.components.lock().expect("health lock");
        !map.is_empty() && map.values().all(|c| c.ready)
    }

    pub fn components(&self) -> BTreeMap<String, Component> {
        self.components.lock().expect("health lock").clone()
    }

    /// [`Health::components`] as `/readyz` shows them: details without host names, addresses,
    /// user names, quoted values or credentials (the log has the full reasons).
    pub fn public_components(&self) -> BTreeMap<String, Component> {
        let mut map = self.components();
        for c in map.values_mut() {
            c.detail = public_detail(&c.detail);
        }
        map
    }

    /// One line naming what is not ready, for `STATUS=` and logs.
    pub fn summary(&self) -> String {
        let map = self.components.lock().expect("health lock");
        let down: Vec<String> = map
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(n, c)| format!("{n}: {}", c.detail))
            .collect();
        if down.is_empty() {
            "ready".into()
        } else {
            format!("not ready: {}", down.join("; "))
        }
    }

    /// Names of the components that are not ready.
    pub fn not_ready(&self) -> Vec<String> {
        let map = self.components.lock().expect("health lock");
        map.iter()
            .filter(|(_, c)| !c.ready)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Forgets a component (its task is gone, e.g. after a reload removed it).
    pub fn remove(&self, name: &str) {
        self.components.lock().expect("health lock").remove(name);
    }

    /// A new set of pollers starts: each counts from now until its first completed poll.
    pub fn pollers_started(&self, pollers: &[(String, String)]) {
        let now = Instant::now();
        let mut map = self.polls.lock().expect("health lock");
        map.clear();
        map.extend(pollers.iter().map(|p| (p.clone(), now)));
    }

    /// The poller of `object` feeding `direction` completed a poll.
    pub fn polled(&self, object: &str, direction: &str) {
        self.polls
            .lock()
            .expect("health lock")
            .insert((object.to_string(), direction.to_string()), Instant::now());
    }

    /// Per poller (object, direction): time since its last completed poll.
    pub fn poll_lags(&self) -> Vec<(String, String, Duration)> {
        let now = Instant::now();
        self.polls
            .lock()
            .expect("health lock")
            .iter()
            .map(|((o, d), at)| (o.clone(), d.clone(), now.duration_since(*at)))
            .collect()
    }

    /// Pollers that have not completed a poll within `max_age`, as `object/direction`.
    pub fn stalled_pollers(&self, max_age: Duration) -> Vec<String> {
        self.poll_lags()
            .into_iter()
            .filter(|(_, _, lag)| *lag > max_age)
            .map(|(o, d, _)| format!("{o}/{d}"))
            .collect()
    }

    /// A supervised loop says it is alive.
    pub fn beat(&self, task: &str) {
        self.beats
            .lock()
            .expect("health lock")
            .insert(task.to_string(), Instant::now());
    }

    /// A task stopped beating on purpose (it ended).
    pub fn forget(&self, task: &str) {
        self.beats.lock().expect("health lock").remove(task);
    }

    /// Tasks that have not beaten within `max_age`.
    pub fn stalled(&self, max_age: Duration) -> Vec<String> {
        let now = Instant::now();
        self.beats
            .lock()
            .expect("health lock")
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > max_age)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// A readiness detail with what could identify the installation taken out: URLs, quoted
/// values (names of users, databases, hosts), IP addresses, `host:port`, the word after `user`
/// or `host`, and anything shaped like a secret.
pub fn public_detail(detail: &str) -> String {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+", "<url>"),
            (r#""[^"]*"|'[^']*'|`[^`]*`"#, "\"…\""),
            (r"\[[0-9A-Fa-f:.]+\](:\d+)?", "<address>"),
            (r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b", "<address>"),
            (r"\b[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*:\d{2,5}\b", "<address>"),
            (
                r"(?i)\b(user|login|host|server|database)\s+[^\s,;:()]+",
                "$1 …",
            ),
            (r"\b([A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b", "<host>"),
        ]
        .into_iter()
        .filter_map(|(p, with)| regex::Regex::new(p).ok().map(|r| (r, with)))
        .collect()
    });
    let mut text = crate::config::scrub::mask_secret_shapes(detail);
    for (pattern, with) in PATTERNS.iter() {
        text = pattern.replace_all(&text, *with).into_owned();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn readiness_details_name_no_host_user_or_credential() {
        let cases = [
            "server said: password authentication failed for user \"hubsync\"",
            "Connection refused (os error 111) connecting to db.coop.internal:5432",
            "error sending request for url (https://api.hubapi.com/crm/v3/properties/contacts)",
            "Login failed for user 'sa'. (code 18456) on 10.0.0.5:1433",
            "connect to [fe80::1]:5432 failed",
            "database coop does not exist on host sql.internal",
        ];
        for case in cases {
            let shown = super::public_detail(case);
            for word in [
                "hubsync\"",
                "coop.internal",
                "hubapi",
                "'sa'",
                "10.0.0.5",
                "fe80",
                "sql.internal",
                " coop ",
            ] {
                assert!(!shown.contains(word), "{case} -> {shown}");
            }
        }
        assert_eq!(super::public_detail("ok"), "ok");
        assert_eq!(
            super::public_detail("no answer to SELECT 1"),
            "no answer to SELECT 1"
        );
    }

    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let h = Health::default();
        assert!(!h.ready(), "nothing known yet is not ready");
        assert!(h.set("postgres", true, "ok"));
        assert!(h.ready());
        assert!(h.set("hubspot", false, "connection refused"));
        assert!(!h.ready());
        assert_eq!(h.summary(), "not ready: hubspot: connection refused");
        assert!(
            !h.set("hubspot", false, "timed out"),
            "same readiness is no change"
        );
    }

    #[test]
    fn stalled_tasks_are_named() {
        let h = Health::default();
        h.beat("rescue");
        assert!(h.stalled(Duration::from_secs(60)).is_empty());
        assert_eq!(h.stalled(Duration::ZERO), ["rescue"]);
        h.forget("rescue");
        assert!(h.stalled(Duration::ZERO).is_empty());
    }

    #[tokio::test]
    async fn waits_until_components_have_reported() {
        let h = std::sync::Arc::new(Health::default());
        h.set("postgres", true, "ok");
        h.reported(&["postgres"]).await;
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.reported(&["postgres", "hubspot"]).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        h.set("hubspot", false, "503");
        waiter.await.unwrap();
    }

    #[test]
    fn not_ready_names_the_components() {
        let h = Health::default();
        h.set("postgres", true, "ok");
        h.set("sql_server", false, "timed out");
        h.set("hubspot", false, "503");
        assert_eq!(h.not_ready(), ["hubspot", "sql_server"]);
        h.remove("hubspot");
        assert_eq!(h.not_ready(), ["sql_server"]);
    }

    #[test]
    fn pollers_count_from_their_start_and_last_poll() {
        let h = Health::default();
        let pollers = [
            ("contacts".to_string(), "to_hubspot".to_string()),
            ("contacts".to_string(), "to_sql".to_string()),
        ];
        h.pollers_started(&pollers);
        assert!(h.stalled_pollers(Duration::from_secs(60)).is_empty());
        assert_eq!(
            h.stalled_pollers(Duration::ZERO),
            ["contacts/to_hubspot", "contacts/to_sql"]
        );
        std::thread::sleep(Duration::from_millis(5));
        h.polled("contacts", "to_sql");
        assert_eq!(
            h.stalled_pollers(Duration::from_millis(4)),
            ["contacts/to_hubspot"]
        );
        let lags = h.poll_lags();
        assert_eq!(lags.len(), 2);
        assert!(lags[0].2 > lags[1].2, "{lags:?}");
        h.pollers_started(&pollers[..1]);
        assert_eq!(h.poll_lags().len(), 1, "a new set replaces the old");
    }
}
