//! Prometheus metrics served at `/metrics`: queue depth and age, records synced/rejected/dead,
//! merges followed, members erased, HubSpot calls and 429s, limiter wait, poll lag, the daily API
//! budget and this instance's place in the shared budget.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub object: String,
    pub direction: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    pub object: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub object: String,
    pub direction: String,
    /// done, rejected, dead, retried
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    /// standard (the rolling 10 s window) or search
    pub lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuantileLabels {
    pub quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub object: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub object: String,
    /// missing_in_hubspot, unlinked_matchable, sql_drift, hubspot_drift, orphan_link,
    /// orphan_contact
    pub kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric hubsync exports, registered once per process.
pub struct Metrics {
    registry: Registry,
    pub queue_items: Family<QueueLabels, Gauge>,
    pub oldest_pending_seconds: Family<FlowLabels, FloatGauge>,
    pub records: Family<OutcomeLabels, Counter>,
    pub merges: Family<ObjectLabels, Counter>,
    pub erasures: Family<ObjectLabels, Counter>,
    pub change_tracking_resyncs: Family<ObjectLabels, Counter>,
    pub hubspot_requests: Gauge,
    pub hubspot_throttled: Gauge,
    pub limiter_wait_seconds: FloatGauge,
    pub daily_budget_remaining: Gauge,
    pub daily_limit: Gauge,
    pub daily_usage: Gauge,
    pub daily_reset_timestamp: Gauge,
    pub daily_paused: Gauge,
    pub poll_lag_seconds: Family<FlowLabels, FloatGauge>,
    pub paused: Family<FlowLabels, Gauge>,
    pub ready: Gauge,
    pub limiter_shared: Gauge,
    pub limiter_instances: Gauge,
    pub limiter_share: Family<LaneLabels, Gauge>,
    pub limiter_held: Family<LaneLabels, Gauge>,
    pub limiter_part: FloatGauge,
    pub limiter_grant_seconds: Family<QuantileLabels, FloatGauge>,
    pub limiter_late_grants: Gauge,
    pub drift_records: Family<DriftLabels, Gauge>,
    pub reconcile_last_run: Family<ObjectLabels, Gauge>,
    pub reconcile_last_run_dry: Family<ObjectLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hubsync");
        let m = Metrics {
            queue_items: Family::default(),
            oldest_pending_seconds: Family::default(),
            records: Family::default(),
            merges: Family::default(),
            erasures: Family::default(),
            change_tracking_resyncs: Family::default(),
            hubspot_requests: Gauge::default(),
            hubspot_throttled: Gauge::default(),
            limiter_wait_seconds: FloatGauge::default(),
            daily_budget_remaining: Gauge::default(),
            daily_limit: Gauge::default(),
            daily_usage: Gauge::default(),
            daily_reset_timestamp: Gauge::default(),
            daily_paused: Gauge::default(),
            poll_lag_seconds: Family::default(),
            paused: Family::default(),
            ready: Gauge::default(),
            limiter_shared: Gauge::default(),
            limiter_instances: Gauge::default(),
            limiter_share: Family::default(),
            limiter_held: Family::default(),
            limiter_part: FloatGauge::default(),
            limiter_grant_seconds: Family::default(),
            limiter_late_grants: Gauge::default(),
            drift_records: Family::default(),
            reconcile_last_run: Family::default(),
            reconcile_last_run_dry: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "queue_items",
            "Work items in sync_queue by object, direction and state",
            m.queue_items.clone(),
        );
        registry.register(
            "queue_oldest_pending_seconds",
            "Age of the oldest pending item",
            m.oldest_pending_seconds.clone(),
        );
        registry.register(
            "records",
            "Records settled by this process, by outcome",
            m.records.clone(),
        );
        registry.register(
            "merges",
            "Record links that followed a contact merged in HubSpot to its survivor",
            m.merges.clone(),
        );
        registry.register(
            "erasures",
            "Members whose HubSpot contact was found gone for good (GDPR delete) and erased from hubsync's tables",
            m.erasures.clone(),
        );
        registry.register(
            "change_tracking_resyncs",
            "Polls that found SQL Server's change tracking cleanup past the stored version (changes lost unread) and read every row of the object again",
            m.change_tracking_resyncs.clone(),
        );
        registry.register(
            "hubspot_requests",
            "HubSpot API requests granted by the limiter",
            m.hubspot_requests.clone(),
        );
        registry.register(
            "hubspot_throttled",
            "HubSpot 429 answers (rolling window) that paused every worker",
            m.hubspot_throttled.clone(),
        );
        registry.register(
            "limiter_wait_seconds",
            "Total time callers waited for the HubSpot limiter",
            m.limiter_wait_seconds.clone(),
        );
        registry.register(
            "hubspot_daily_budget_remaining",
            "HubSpot API requests left today (from HubSpot's usage endpoint, tightened by the rate-limit headers)",
            m.daily_budget_remaining.clone(),
        );
        registry.register(
            "hubspot_daily_limit",
            "HubSpot API requests the account may make today (HubSpot's usageLimit, else hubspot.daily_limit)",
            m.daily_limit.clone(),
        );
        registry.register(
            "hubspot_daily_usage",
            "HubSpot API requests the account (every app) had made today at the last usage-endpoint read",
            m.daily_usage.clone(),
        );
        registry.register(
            "hubspot_daily_reset_timestamp_seconds",
            "When HubSpot's daily limit next resets (Unix time, from the usage endpoint)",
            m.daily_reset_timestamp.clone(),
        );
        registry.register(
            "hubspot_daily_paused",
            "1 while hubsync sends nothing to HubSpot because the daily reserve is reached",
            m.daily_paused.clone(),
        );
        registry.register(
            "poll_lag_seconds",
            "Time since each change poller last completed a poll (direction: to_hubspot is the SQL Server poller, to_sql the HubSpot poller)",
            m.poll_lag_seconds.clone(),
        );
        registry.register(
            "paused",
            "1 for each object and direction an operator paused (hubsync pause)",
            m.paused.clone(),
        );
        registry.register(
            "ready",
            "1 when every dependency is reachable",
            m.ready.clone(),
        );
        registry.register(
            "limiter_shared",
            "1 while this instance takes HubSpot slots from the budget shared through the queue database, 0 while it paces on its own share",
            m.limiter_shared.clone(),
        );
        registry.register(
            "limiter_instances",
            "hubsync instances sharing the HubSpot budget at the last heartbeat, this one included",
            m.limiter_instances.clone(),
        );
        registry.register(
            "limiter_share",
            "Requests per window this instance may send on its own while the queue database is unreachable",
            m.limiter_share.clone(),
        );
        registry.register(
            "limiter_held",
            "Requests per window held back for instances that stopped reporting (they may be pacing on their own)",
            m.limiter_held.clone(),
        );
        registry.register(
            "limiter_part",
            "This instance's part of every instance's HubSpot requests over the last minute (0-1)",
            m.limiter_part.clone(),
        );
        registry.register(
            "limiter_grant_seconds",
            "Round trip of one slot grant to the queue database (recent grants)",
            m.limiter_grant_seconds.clone(),
        );
        registry.register(
            "limiter_late_grants",
            "Slots left unused because the grant's round trip to the queue database was too slow to keep the request within the jitter margin",
            m.limiter_late_grants.clone(),
        );
        registry.register(
            "drift_records",
            "Records out of step by kind, as the object's last completed reconcile run found them",
            m.drift_records.clone(),
        );
        registry.register(
            "reconcile_last_run_timestamp_seconds",
            "When the object's last completed reconcile run ended (Unix time)",
            m.reconcile_last_run.clone(),
        );
        registry.register(
            "reconcile_last_run_dry",
            "1 when the object's last completed reconcile run was a dry run (its drift was listed, not fixed)",
            m.reconcile_last_run_dry.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Copies the HubSpot limiter's counters into the gauges.
    pub fn set_hubspot(&self, stats: &crate::hubspot::LimiterStats) {
        self.hubspot_requests
            .set((stats.granted + stats.search_granted) as i64);
        self.hubspot_throttled.set(stats.pauses as i64);
        self.limiter_wait_seconds.set(stats.waited.as_secs_f64());
        if let Some(left) = stats.daily_remaining {
            self.daily_budget_remaining.set(left as i64);
        }
        self.daily_limit.set(stats.daily_limit as i64);
        if let Some(usage) = &stats.daily_usage {
            self.daily_usage.set(usage.current_usage as i64);
        }
        if let Some(at) = stats.daily_resets_at {
            self.daily_reset_timestamp.set(at.timestamp());
        }
        self.daily_paused
            .set(i64::from(stats.daily_paused_until.is_some()));
    }

    /// Copies what this instance knows of the shared HubSpot budget into the gauges.
    pub fn set_shared(&self, status: &crate::budget::SharedStatus) {
        self.limiter_shared.set(i64::from(status.joined));
        self.limiter_instances.set(i64::from(status.instances));
        for (i, lane) in crate::budget::shared::LANES.into_iter().enumerate() {
            let labels = LaneLabels {
                lane: lane.to_string(),
            };
            self.limiter_share
                .get_or_create(&labels)
                .set(i64::from(status.shares[i]));
            self.limiter_held
                .get_or_create(&labels)
                .set(i64::from(status.held[i]));
        }
        self.limiter_part.set(status.part);
        self.limiter_late_grants.set(status.late_grants as i64);
        for (quantile, took) in [("0.5", status.grant_p50), ("0.99", status.grant_p99)] {
            if let Some(took) = took {
                self.limiter_grant_seconds
                    .get_or_create(&QuantileLabels {
                        quantile: quantile.to_string(),
                    })
                    .set(took.as_secs_f64());
            }
        }
    }

    /// Shows the outcome counters of `objects` (both directions) at 0 before anything settles.
    pub fn init_records<'a>(&self, objects: impl IntoIterator<Item = &'a str>) {
        for object in objects {
            for counter in [&self.merges, &self.erasures, &self.change_tracking_resyncs] {
                counter
                    .get_or_create(&ObjectLabels {
                        object: object.to_string(),
                    })
                    .inc_by(0);
            }
            for direction in ["to_hubspot", "to_sql"] {
                for outcome in ["done", "rejected", "dead"] {
                    self.records
                        .get_or_create(&OutcomeLabels {
                            object: object.to_string(),
                            direction: direction.to_string(),
                            outcome: outcome.to_string(),
                        })
                        .inc_by(0);
                }
            }
        }
    }

    /// Counts the outcomes of one settled batch of `object` in `direction`.
    pub fn count_settled(&self, object: &str, direction: &str, settled: &crate::queue::Settled) {
        for (outcome, n) in [
            ("done", settled.done),
            ("rejected", settled.rejected),
            ("dead", settled.dead),
            ("retried", settled.retried),
            ("superseded", settled.superseded),
        ] {
            if n > 0 {
                self.records
                    .get_or_create(&OutcomeLabels {
                        object: object.to_string(),
                        direction: direction.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .inc_by(n);
            }
        }
        if settled.merges > 0 {
            self.merges
                .get_or_create(&ObjectLabels {
                    object: object.to_string(),
                })
                .inc_by(settled.merges);
        }
        if settled.erasures > 0 {
            self.erasures
                .get_or_create(&ObjectLabels {
                    object: object.to_string(),
                })
                .inc_by(settled.erasures);
        }
    }

    /// Replaces the poll-lag gauges: per (object, direction) the time since its poller last
    /// completed a poll.
    pub fn set_poll_lags(&self, lags: &[(String, String, std::time::Duration)]) {
        self.poll_lag_seconds.clear();
        for (object, direction, lag) in lags {
            self.poll_lag_seconds
                .get_or_create(&FlowLabels {
                    object: object.clone(),
                    direction: direction.clone(),
                })
                .set(lag.as_secs_f64());
        }
    }

    /// The last completed reconcile run of each object, as read at scrape time.
    pub fn set_reconciles(&self, runs: &[crate::sync::reconcile::store::Finished]) {
        self.drift_records.clear();
        for run in runs {
            let object = ObjectLabels {
                object: run.object.clone(),
            };
            self.reconcile_last_run
                .get_or_create(&object)
                .set(run.finished_at.timestamp());
            self.reconcile_last_run_dry
                .get_or_create(&object)
                .set(i64::from(run.dry_run));
            for kind in crate::sync::reconcile::Kind::DRIFT {
                self.drift_records
                    .get_or_create(&DriftLabels {
                        object: run.object.clone(),
                        kind: kind.as_str().into(),
                    })
                    .set(run.counts.get(kind.as_str()).copied().unwrap_or(0));
            }
        }
    }

    /// The paused directions, as read at scrape time.
    pub fn set_pauses(&self, pauses: &[crate::queue::Pause]) {
        self.paused.clear();
        for p in pauses {
            self.paused
                .get_or_create(&FlowLabels {
                    object: p.object.clone(),
                    direction: p.direction.clone(),
                })
                .set(1);
        }
    }

    pub fn set_queue(&self, rows: &[crate::queue::SummaryRow]) {
        self.queue_items.clear();
        self.oldest_pending_seconds.clear();
        for r in rows {
            self.queue_items
                .get_or_create(&QueueLabels {
                    object: r.object.clone(),
                    direction: r.direction.clone(),
                    state: r.state.clone(),
                })
                .set(r.items);
            // Every flow with items gets the gauge: 0 when nothing is pending.
            let oldest = self.oldest_pending_seconds.get_or_create(&FlowLabels {
                object: r.object.clone(),
                direction: r.direction.clone(),
            });
            if let Some(age) = r.oldest_pending_age_s {
                oldest.set(age);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `hubsync_…` series the shipped alert rules and dashboard query is one this process
    /// exports (a renamed metric would silence an alert).
    #[test]
    fn the_alert_rules_and_the_dashboard_query_only_exported_series() {
        // Labelled families show once they have a series.
        let m = Metrics::default();
        m.set_queue(&[crate::queue::SummaryRow {
            object: "contacts".into(),
            direction: "to_hubspot".into(),
            state: "pending".into(),
            items: 1,
            oldest_pending_age_s: Some(1.0),
        }]);
        m.init_records(["contacts"]);
        let merged = crate::queue::Settled {
            merges: 1,
            ..Default::default()
        };
        m.count_settled("contacts", "to_hubspot", &merged);
        m.set_poll_lags(&[(
            "contacts".into(),
            "to_sql".into(),
            std::time::Duration::from_secs(1),
        )]);
        m.set_pauses(&[crate::queue::Pause {
            object: "contacts".into(),
            direction: "to_sql".into(),
            paused_at: chrono::Utc::now(),
            paused_by: "ops".into(),
        }]);
        m.set_reconciles(&[crate::sync::reconcile::store::Finished {
            run_id: 1,
            object: "contacts".into(),
            dry_run: false,
            status: "completed".into(),
            finished_at: chrono::Utc::now(),
            counts: [("sql_drift".to_string(), 3)].into_iter().collect(),
        }]);
        let text = m.encode();
        assert!(text.contains(r#"hubsync_drift_records{object="contacts",kind="sql_drift"} 3"#));
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let known = |name: &str| {
            exported.contains(name)
                || name
                    .strip_suffix("_total")
                    .is_some_and(|base| exported.contains(base))
        };
        for (file, body) in [
            (
                "hubsync-rules.yml",
                include_str!("../../deploy/prometheus/hubsync-rules.yml"),
            ),
            (
                "hubsync.json",
                include_str!("../../deploy/grafana/hubsync.json"),
            ),
        ] {
            let mut used = 0;
            for (i, _) in body.match_indices("hubsync_") {
                let name: String = body[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Alert names and prose (`hubsync queue stuck`) are not series.
                if name.len() > "hubsync_".len() && !body[..i].ends_with('-') {
                    assert!(
                        known(&name),
                        "{file} queries {name}, which hubsync does not export: {exported:?}"
                    );
                    used += 1;
                }
            }
            assert!(used > 5, "{file}: {used} series");
        }
    }

    #[test]
    fn encodes_queue_gauges_in_prometheus_text() {
        let m = Metrics::default();
        m.set_queue(&[crate::queue::SummaryRow {
            object: "contacts".into(),
            direction: "to_hubspot".into(),
            state: "pending".into(),
            items: 42,
            oldest_pending_age_s: Some(3.5),
        }]);
        let text = m.encode();
        assert!(
            text.contains(
                "hubsync_queue_items{object=\"contacts\",direction=\"to_hubspot\",state=\"pending\"} 42"
            ),
            "{text}"
        );
        assert!(
            text.contains("hubsync_queue_oldest_pending_seconds"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counts_settled_records_and_poll_lag() {
        let m = Metrics::default();
        let settled = crate::queue::Settled {
            done: 98,
            rejected: 2,
            merges: 3,
            ..Default::default()
        };
        m.count_settled("contacts", "to_hubspot", &settled);
        m.count_settled("contacts", "to_hubspot", &settled);
        m.set_poll_lags(&[(
            "contacts".into(),
            "to_sql".into(),
            std::time::Duration::from_millis(1500),
        )]);
        let text = m.encode();
        for line in [
            "hubsync_records_total{object=\"contacts\",direction=\"to_hubspot\",outcome=\"done\"} 196",
            "hubsync_records_total{object=\"contacts\",direction=\"to_hubspot\",outcome=\"rejected\"} 4",
            "hubsync_poll_lag_seconds{object=\"contacts\",direction=\"to_sql\"} 1.5",
            "hubsync_merges_total{object=\"contacts\"} 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing: {text}");
        }
        assert!(!text.contains("outcome=\"dead\""), "{text}");
        m.init_records(["contacts"]);
        let text = m.encode();
        let dead =
            "hubsync_records_total{object=\"contacts\",direction=\"to_sql\",outcome=\"dead\"} 0";
        assert!(text.lines().any(|l| l == dead), "{text}");
        assert!(
            text.contains("outcome=\"done\"} 196"),
            "counts are kept: {text}"
        );
    }

    #[test]
    fn exports_the_hubspot_limiter_counters() {
        let m = Metrics::default();
        m.set_hubspot(&crate::hubspot::LimiterStats {
            granted: 120,
            search_granted: 3,
            waited: std::time::Duration::from_millis(2500),
            pauses: 1,
            daily_remaining: Some(249_000),
            window_remaining: Some(7),
            daily_limit: 250_000,
            daily_usage: Some(crate::hubspot::UsageReport {
                usage_limit: 250_000,
                current_usage: 1_000,
                resets_at: "2026-10-02T06:00:00Z".parse().unwrap(),
                collected_at: None,
                fetch_status: "SUCCESS".into(),
            }),
            daily_resets_at: Some("2026-10-02T06:00:00Z".parse().unwrap()),
            daily_paused_until: None,
        });
        let text = m.encode();
        for line in [
            "hubsync_hubspot_requests 123",
            "hubsync_hubspot_throttled 1",
            "hubsync_limiter_wait_seconds 2.5",
            "hubsync_hubspot_daily_budget_remaining 249000",
            "hubsync_hubspot_daily_limit 250000",
            "hubsync_hubspot_daily_usage 1000",
            "hubsync_hubspot_daily_reset_timestamp_seconds 1790920800",
            "hubsync_hubspot_daily_paused 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing: {text}");
        }
    }
}
