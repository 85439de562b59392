//! Bounds on every number and duration of the configuration: production ranges, so that a value
//! that parses but cannot run (`workers: 100000000`, `poll_interval: 0s`, `retention: 500000y`)
//! is a configuration problem, not a failure at run time.

use std::time::Duration;

use super::{Config, Problems};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Adds a problem for every number or duration outside its range. A key that already has a
/// problem (e.g. from its section's own check) is not reported twice.
pub fn check(config: &Config, problems: &mut Problems) {
    let mut b = Bounds {
        found: Vec::new(),
        reported: problems.iter().map(|p| p.path.clone()).collect(),
    };
    let s = &config.service;
    b.duration(
        "service.shutdown_grace",
        s.shutdown_grace,
        Duration::ZERO,
        10 * MINUTE,
    );
    b.duration("service.health_interval", s.health_interval, 100 * MS, HOUR);

    let p = &config.postgres;
    b.number("postgres.max_connections", p.max_connections, 1, 1000);
    b.duration(
        "postgres.connect_timeout",
        p.connect_timeout,
        SECOND,
        10 * MINUTE,
    );

    let q = &config.queue;
    b.number("queue.workers", q.workers, 1, 64);
    b.number_why(
        "queue.batch_size",
        q.batch_size,
        1,
        100,
        " (HubSpot's batch limit)",
    );
    b.duration("queue.lease", q.lease, 5 * SECOND, HOUR);
    b.number("queue.max_attempts", q.max_attempts, 1, 1000);
    b.number("queue.max_rescues", q.max_rescues, 1, 1000);
    b.duration("queue.retry_initial", q.retry_initial, 100 * MS, DAY);
    b.duration("queue.retry_max", q.retry_max, 100 * MS, 7 * DAY);
    b.duration("queue.poll_interval", q.poll_interval, 100 * MS, HOUR);
    b.duration("queue.retention", q.retention, MINUTE, 3650 * DAY);
    b.duration(
        "queue.rejected_payload_retention",
        q.rejected_payload_retention,
        MINUTE,
        3650 * DAY,
    );
    b.duration(
        "queue.conflict_retention",
        q.conflict_retention,
        MINUTE,
        3650 * DAY,
    );
    b.number("queue.prune_batch", q.prune_batch, 1, 100_000);
    b.duration("queue.stuck_after", q.stuck_after, SECOND, 30 * DAY);

    b.number(
        "logging.retention_days",
        config.logging.retention_days,
        1,
        3650,
    );

    let h = &config.hubspot;
    b.number("hubspot.requests_per_10s", h.requests_per_10s, 1, 10_000);
    b.number("hubspot.search_per_second", h.search_per_second, 1, 100);
    b.number("hubspot.daily_limit", h.daily_limit, 1, 100_000_000);
    b.number("hubspot.daily_reserve", h.daily_reserve, 0, 100_000_000);
    b.duration("hubspot.timeout", h.timeout, SECOND, 10 * MINUTE);
    b.duration("hubspot.search_lag", h.search_lag, Duration::ZERO, HOUR);
    b.duration(
        "hubspot.max_retry_elapsed",
        h.max_retry_elapsed,
        Duration::ZERO,
        HOUR,
    );
    b.duration("hubspot.retry_initial", h.retry_initial, MS, MINUTE);
    b.duration("hubspot.retry_max_interval", h.retry_max_interval, MS, HOUR);

    let sql = &config.sql_server;
    b.number("sql_server.pool_size", sql.pool_size, 1, 100);
    b.duration(
        "sql_server.connect_timeout",
        sql.connect_timeout,
        SECOND,
        10 * MINUTE,
    );
    b.duration(
        "sql_server.command_timeout",
        sql.command_timeout,
        SECOND,
        HOUR,
    );
    b.duration(
        "sql_server.retry_max_elapsed",
        sql.retry_max_elapsed,
        Duration::ZERO,
        HOUR,
    );
    b.number("sql_server.deadlock_retries", sql.deadlock_retries, 0, 100);

    for (name, object) in &config.objects {
        let at = format!("objects.{name}.on_hubspot_archive.scan_every");
        let scan = object.on_hubspot_archive.scan_every;
        b.duration(&at, scan, Duration::ZERO, 7 * DAY);
    }
    for (path, message) in b.found {
        problems.push(path, message);
    }
}

struct Bounds {
    found: Vec<(String, String)>,
    reported: Vec<String>,
}

impl Bounds {
    fn out_of_range(&mut self, path: &str, message: String) {
        if !self.reported.iter().any(|p| p == path) {
            self.found.push((path.to_string(), message));
        }
    }

    fn number<T: TryInto<i128> + Copy>(&mut self, path: &str, value: T, min: i128, max: i128) {
        self.number_why(path, value, min, max, "");
    }

    fn number_why<T: TryInto<i128> + Copy>(
        &mut self,
        path: &str,
        value: T,
        min: i128,
        max: i128,
        why: &str,
    ) {
        let v: i128 = value.try_into().unwrap_or(i128::MAX);
        if !(min..=max).contains(&v) {
            self.out_of_range(path, format!("{v} is not between {min} and {max}{why}"));
        }
    }

    fn duration(&mut self, path: &str, value: Duration, min: Duration, max: Duration) {
        if !(min..=max).contains(&value) {
            self.out_of_range(
                path,
                format!(
                    "{} is not between {} and {}",
                    show(value),
                    show(min),
                    show(max)
                ),
            );
        }
    }
}

/// A duration in the largest unit that states it exactly (`90s`, `5m`, `3650d`, `250ms`).
pub fn show(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 && !d.is_zero() {
        return format!("{}ns", d.as_nanos());
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_durations_in_their_unit() {
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(100 * MS), "100ms");
        assert_eq!(show(90 * SECOND), "90s");
        assert_eq!(show(3650 * DAY), "3650d");
        assert_eq!(show(Duration::from_nanos(5)), "5ns");
    }

    #[test]
    fn reports_out_of_range_values_once() {
        let mut config: Config = serde_yaml::from_str(
            "queue: {workers: 100000000, poll_interval: 0s, retention: 500000y, \
             rejected_payload_retention: 0s, conflict_retention: 20000d}\n",
        )
        .unwrap();
        config.hubspot.timeout = Duration::ZERO;
        let mut problems = Problems::default();
        problems.push("hubspot.timeout", "must be above zero");
        check(&config, &mut problems);
        let found: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            found,
            [
                "hubspot.timeout: must be above zero",
                "queue.workers: 100000000 is not between 1 and 64",
                "queue.poll_interval: 0s is not between 100ms and 1h",
                "queue.retention: 182625000d is not between 1m and 3650d",
                "queue.rejected_payload_retention: 0s is not between 1m and 3650d",
                "queue.conflict_retention: 20000d is not between 1m and 3650d",
            ]
        );
    }
}
