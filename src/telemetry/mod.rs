//! Telemetry: JSON log lines to stdout and daily-rotated files, the per-operation log record,
//! and masking of personal data (emails, identity numbers) in log output.

pub mod mask;
mod operation;

pub use operation::OperationLog;

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LoggingSettings;

/// Keeps the non-blocking writers flushing; hold it for the life of the process.
#[must_use = "dropping the guard stops log output"]
pub struct TelemetryGuard {
    _guards: Vec<WorkerGuard>,
}

/// Installs the global subscriber for a long-running command: JSON lines on stdout (when
/// enabled) and in `<directory>/hubsync.YYYY-MM-DD.log`, filtered by `RUST_LOG` or `level`.
pub fn init(settings: &LoggingSettings) -> anyhow::Result<TelemetryGuard> {
    mask::set_enabled(settings.mask_personal_data);
    let mut guards = Vec::new();
    let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> = Vec::new();
    if settings.stdout {
        let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
        guards.push(guard);
        layers.push(json_layer(writer));
    }
    if let Some(dir) = &settings.directory {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        let appender = Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("hubsync")
            .filename_suffix("log")
            .max_log_files(settings.retention_days)
            .build(dir)
            .with_context(|| format!("cannot open log files in {}", dir.display()))?;
        let (writer, guard) = tracing_appender::non_blocking(appender);
        guards.push(guard);
        layers.push(json_layer(writer));
    }
    tracing_subscriber::registry()
        .with(filter(&settings.level))
        .with(layers)
        .try_init()
        .context("a log subscriber is already installed")?;
    Ok(TelemetryGuard { _guards: guards })
}

/// Installs a subscriber for one-shot CLI commands: JSON lines on stderr, warnings and worse by
/// default, so that stdout stays for the command's own output.
pub fn init_cli() {
    let layer = json_layer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(filter("warn"))
        .with(layer)
        .try_init();
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The JSON line format every hubsync log uses, writing to `writer`.
pub fn json_layer<S, W>(writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_writer(writer)
        .boxed()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn operation_lines_are_json_with_the_operator_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let message = format!(
                "created contact for {}",
                mask::email("maria.rojas@example.com")
            );
            OperationLog {
                operation: "CREATE",
                object: "contacts",
                direction: "to_hubspot",
                record_key: "10045",
                hubspot_id: Some("90211"),
                batch_id: "b-1",
                status: "done",
                message: &message,
                started: Instant::now(),
            }
            .emit();
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
        for field in [
            "timestamp",
            "level",
            "operation",
            "object",
            "direction",
            "record_key",
            "hubspot_id",
            "batch_id",
            "status",
            "message",
            "execution_time_ms",
        ] {
            assert!(v.get(field).is_some(), "missing {field}: {v}");
        }
        assert_eq!(v["operation"], "CREATE");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "created contact for m***@example.com");
        assert!(!text.contains("maria.rojas"));
    }

    #[test]
    fn secrets_never_format_into_output() {
        let config = crate::config::load_str(
            "hubspot:\n  token: pat-na1-secret-value\npostgres:\n  url: postgres://u:pw-secret@h/db\n",
            crate::config::Need::Postgres,
            &|_| None,
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("pat-na1-secret-value") && !shown.contains("pw-secret"),
            "{shown}"
        );
    }
}
