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
    beats: Mutex<BTreeMap<String, Instant>>,
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
        changed
    }

    /// Ready when every known component is ready (and there is at least one).
    pub fn ready(&self) -> bool {
        let map = self.components.lock().expect("health lock");
        !map.is_empty() && map.values().all(|c| c.ready)
    }

    pub fn components(&self) -> BTreeMap<String, Component> {
        self.components.lock().expect("health lock").clone()
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

#[cfg(test)]
mod tests {
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
}
