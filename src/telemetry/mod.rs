//! Telemetry: JSON log lines to stdout and daily-rotated files, the per-operation log record,
//! and masking of personal data in every line written, dependencies' included (see [`mask`]);
//! [`leaks`] finds what masking must have caught, for the tests' scan of every output.

pub mod leaks;
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
    init_with_stdout(settings, std::io::stdout())
}

/// [`init`] with `stdout` standing for the process's standard output.
pub fn init_with_stdout(
    settings: &LoggingSettings,
    stdout: impl std::io::Write + Send + 'static,
) -> anyhow::Result<TelemetryGuard> {
    mask::set_enabled(settings.mask_personal_data);
    let mut guards = Vec::new();
    let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> = Vec::new();
    if settings.stdout {
        let (writer, guard) = tracing_appender::non_blocking(stdout);
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
    let (filter, refused) = filter(&settings.level, settings.mask_personal_data);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .context("a log subscriber is already installed")?;
    warn_refused(&refused);
    Ok(TelemetryGuard { _guards: guards })
}

/// Installs a subscriber for one-shot CLI commands: JSON lines on stderr, warnings and worse by
/// default, so that stdout stays for the command's own output.
pub fn init_cli() {
    let layer = json_layer(std::io::stderr);
    let (filter, refused) = filter("warn", true);
    if tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok()
    {
        warn_refused(&refused);
    }
}

/// Dependencies that log whole rows at debug and trace: values masking cannot recognise (names,
/// amounts). While masking is on they log at info at most.
const ROW_LOGGING: &[&str] = &["tiberius"];

/// The directives of a `RUST_LOG`-style filter that would let a dependency log whole rows
/// (`tiberius=debug`, `tiberius::tds=trace`, a bare `tiberius`); check-config refuses them in
/// `logging.level` while `mask_personal_data` is on.
pub fn row_logging(filter: &str) -> Vec<&str> {
    filter
        .split(',')
        .map(str::trim)
        .filter(|d| {
            if d.contains('[') {
                return false;
            }
            let (target, level) = match d.split_once('=') {
                Some((target, level)) => (target.trim(), level),
                None if is_level(d) => return false,
                None => (*d, "trace"),
            };
            !target.is_empty()
                && matches!(
                    level.trim().to_ascii_lowercase().as_str(),
                    "debug" | "trace"
                )
                && ROW_LOGGING
                    .iter()
                    .any(|dep| dep.starts_with(target) || target.starts_with(dep))
        })
        .collect()
}

fn is_level(directive: &str) -> bool {
    matches!(
        directive.to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    )
}

/// The filter from `RUST_LOG` (when set and valid) or `level`. With `mask` the row-logging
/// directives are dropped (returned, for a warning) and a global debug/trace leaves those
/// dependencies at info.
fn filter(level: &str, mask: bool) -> (EnvFilter, Vec<String>) {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok());
    let wanted = from_env.as_deref().unwrap_or(level);
    let (spec, refused) = if mask {
        cap_row_logging(wanted)
    } else {
        (wanted.to_owned(), Vec::new())
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    (filter, refused)
}

fn cap_row_logging(wanted: &str) -> (String, Vec<String>) {
    let refused = row_logging(wanted);
    let mut kept: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !refused.contains(d))
        .collect();
    let global_verbose = kept
        .iter()
        .any(|d| matches!(d.to_ascii_lowercase().as_str(), "debug" | "trace"));
    let caps: Vec<String> = ROW_LOGGING
        .iter()
        .map(|dep| format!("{dep}=info"))
        .collect();
    if global_verbose {
        kept.extend(caps.iter().map(String::as_str));
    }
    let refused = refused.into_iter().map(str::to_owned).collect();
    (kept.join(","), refused)
}

fn warn_refused(refused: &[String]) {
    if !refused.is_empty() {
        tracing::warn!(
            ignored = %refused.join(","),
            "log filter directives ignored: tiberius at debug or trace logs whole rows, which \
             masking cannot recognise; set logging.mask_personal_data: false to allow them"
        );
    }
}

/// The JSON line format every hubsync log uses, writing to `writer` through [`mask::Masked`].
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
        .with_writer(mask::Masked(writer))
        .boxed()
}

/// Test support: what `f` logs on this thread, as hubsync's JSON log writes it (masked).
#[cfg(test)]
pub(crate) fn logged(f: impl FnOnce()) -> String {
    use tracing_subscriber::layer::SubscriberExt;
    let buffer = tests::Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    #[derive(Clone, Default)]
    pub(super) struct Buffer(pub(super) Arc<Mutex<Vec<u8>>>);

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
        let text = logged(|| {
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

    /// The real subscriber (`init`): stdout into a buffer, files in a temporary directory.
    #[test]
    fn dependency_errors_are_masked_on_stdout_and_in_the_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LoggingSettings {
            directory: Some(dir.path().to_path_buf()),
            ..LoggingSettings::default()
        };
        let stdout = Buffer::default();
        let guard = init_with_stdout(&settings, stdout.clone()).unwrap();
        // As tiberius logs the error tokens SQL Server sends.
        tracing::error!(
            target: "tiberius::tds::stream::token",
            code = 2628,
            "String or binary data would be truncated in table 'coop.dbo.hb_contacts', column \
             'email'. Truncated value: 'ana.rojas.longname@examp'."
        );
        tracing::error!(
            target: "tiberius::tds::stream::token",
            code = 2627,
            "Violation of UNIQUE KEY constraint 'UQ_cedula'. Cannot insert duplicate key in \
             object 'dbo.hb_contacts'. The duplicate key value is (1-0234-0567)."
        );
        tracing::warn!(
            operation = "CONFLICT",
            object = "contacts",
            record_key = "10045",
            field = "salario",
            sql_value = "1250000",
            hubspot_value = "Ana María Rojas",
            synced_value = 980000,
            "field changed on both sides"
        );
        drop(guard);
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<String>();
        let out = String::from_utf8(stdout.0.lock().unwrap().clone()).unwrap();
        for (name, text) in [("stdout", &out), ("file", &file)] {
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON lines"))
                .collect();
            let find = |needle: &str| {
                lines
                    .iter()
                    .find(|l| l.to_string().contains(needle))
                    .unwrap_or_else(|| panic!("{name}: no line with {needle}: {text}"))
            };
            assert!(
                find("Truncated value")["message"]
                    .as_str()
                    .unwrap()
                    .ends_with("Truncated value: '***'."),
                "{text}"
            );
            assert!(
                find("duplicate key value")["message"]
                    .as_str()
                    .unwrap()
                    .ends_with("The duplicate key value is (***)."),
                "{text}"
            );
            let conflict = find("CONFLICT");
            assert_eq!(conflict["sql_value"], "***", "{conflict}");
            assert_eq!(conflict["hubspot_value"], "***", "{conflict}");
            assert_eq!(conflict["synced_value"], "***", "{conflict}");
            assert_eq!(conflict["field"], "salario");
            for clear in ["ana.rojas", "0234", "1250000", "María", "980000"] {
                assert!(!text.contains(clear), "{name} shows {clear}: {text}");
            }
        }
    }

    #[test]
    fn row_logging_is_refused_or_capped_while_masking() {
        assert_eq!(row_logging("info,tiberius=debug"), ["tiberius=debug"]);
        assert_eq!(
            row_logging("tiberius::tds=TRACE,hubsync=debug"),
            ["tiberius::tds=TRACE"]
        );
        assert_eq!(row_logging("warn,tiberius"), ["tiberius"]);
        assert!(row_logging("debug,tiberius=info,sqlx=warn").is_empty());
        let (spec, refused) = cap_row_logging("debug,tiberius=trace");
        assert_eq!(spec, "debug,tiberius=info");
        assert_eq!(refused, ["tiberius=trace"]);
        assert_eq!(
            cap_row_logging("info,hubsync=debug").0,
            "info,hubsync=debug"
        );
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
