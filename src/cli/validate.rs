//! `hubsync validate`: maps and validates a CSV or JSONL file of SQL-side records with exactly the
//! code the sync uses, writing one JSON line (or a readable table) per record and a summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::config::Need;
use crate::exit::{self, Failure};
use crate::mapping::{Mapped, Mapper, Properties, SqlRow};
use crate::telemetry::mask;
use crate::validation::Issue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Table,
}

/// `hubsync validate` arguments.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Object of `config.yaml` whose mapping applies (`contacts`).
    #[arg(long)]
    pub object: String,
    /// CSV (header = SQL column names) or JSONL file of SQL-side records.
    #[arg(long)]
    pub input: PathBuf,
    /// Input format; default from the file extension (`.csv` → csv, otherwise jsonl).
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// Output: one JSON line per record, or a readable report with a progress bar.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: OutputFormat,
    /// Judge dates (birth dates, two-digit years) as of this day instead of today in Costa Rica,
    /// for reproducible reports.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<chrono::NaiveDate>,
    /// Print mapped values, record keys and messages as they are; personal data (every mapped
    /// value, emails, identity numbers, quoted values in messages) is masked otherwise.
    #[arg(long)]
    pub unmask: bool,
}

/// One output line.
#[derive(Serialize)]
struct Line<'a> {
    line: u64,
    record_key: &'a Option<String>,
    valid: bool,
    errors: &'a [Issue],
    warnings: &'a [Issue],
    properties: &'a Properties,
}

/// Runs the command: exit 0 all valid, 1 some rejected, 65 unreadable input, 78 config error.
pub fn run(config_path: &Path, args: ValidateArgs) -> Result<u8, Failure> {
    let config = crate::app::load(config_path, Need::Nothing)?;
    let object = config.objects.get(&args.object).ok_or_else(|| {
        let known: Vec<&str> = config.objects.keys().map(String::as_str).collect();
        Failure::new(
            exit::CONFIG,
            format!(
                "no object {:?} in the configuration (objects: {})",
                args.object,
                known.join(", ")
            ),
        )
    })?;
    let mut mapper = Mapper::new(object).map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    if let Some(today) = args.today {
        mapper = mapper.with_today(today);
    }
    let data_err = |m: String| Failure::new(exit::DATA_ERR, m);
    let name = args.input.display().to_string();
    let file = File::open(&args.input).map_err(|e| data_err(format!("cannot read {name}: {e}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let format = args.input_format.unwrap_or_else(|| {
        match args.input.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => InputFormat::Csv,
            _ => InputFormat::Jsonl,
        }
    });

    let progress = match args.format {
        OutputFormat::Table => {
            let bar = ProgressBar::new(size);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        }
        OutputFormat::Jsonl => ProgressBar::hidden(),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut summary = Summary::default();
    let mut duplicates = mapper.duplicate_check();
    let mut emit = |line: u64, row: SqlRow, bytes: u64| -> Result<(), Failure> {
        let mut mapped = mapper.to_hubspot(&row);
        duplicates.check(&mut mapped);
        summary.add(&mapped);
        if !args.unmask {
            mapped = masked(mapped);
        }
        write_record(&mut out, args.format, line, &mapped)
            .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot write output: {e}")))?;
        if line.is_multiple_of(1024) {
            progress.set_position(bytes);
        }
        Ok(())
    };
    let read = match format {
        InputFormat::Csv => read_csv(file, &mut emit),
        InputFormat::Jsonl => read_jsonl(file, &mut emit),
    };
    progress.finish_and_clear();
    out.flush()
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot write output: {e}")))?;
    drop(out);
    eprintln!("{}", summary.render());
    match read {
        Err(ReadError::Data(m)) => Err(data_err(format!("{name}: {m}"))),
        Err(ReadError::Stop(f)) => Err(f),
        Ok(()) if summary.rejected > 0 => Ok(exit::REJECTED),
        Ok(()) => Ok(exit::OK),
    }
}

enum ReadError {
    /// The input is malformed (exit 65), with line and column.
    Data(String),
    /// Writing failed.
    Stop(Failure),
}

type Emit<'a> = dyn FnMut(u64, SqlRow, u64) -> Result<(), Failure> + 'a;

fn read_csv(file: File, emit: &mut Emit) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::new(file));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ReadError::Data(csv_error(&e)))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let pos = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
                let row: SqlRow = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| {
                        let value = if v.is_empty() {
                            Value::Null
                        } else {
                            Value::String(v.to_string())
                        };
                        (h.clone(), value)
                    })
                    .collect();
                emit(pos.0, row, pos.1).map_err(ReadError::Stop)?;
            }
            Err(e) => return Err(ReadError::Data(csv_error(&e))),
        }
    }
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: {len} columns, expected {expected_len} as in the header",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "line {}, column {}: not valid UTF-8",
            pos.as_ref().map_or(0, |p| p.line()),
            err.field() + 1
        ),
        _ => e.to_string(),
    }
}

fn read_jsonl(file: File, emit: &mut Emit) -> Result<(), ReadError> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut bytes = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| ReadError::Data(format!("line {}: {e}", line + 1)))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        bytes += n as u64;
        let text = std::str::from_utf8(&buf).map_err(|e| {
            ReadError::Data(format!(
                "line {line}, column {}: not valid UTF-8",
                e.valid_up_to() + 1
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let row: SqlRow = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ReadError::Data(format!(
                    "line {line}, column 1: expected a JSON object of column values"
                )));
            }
            Err(e) => {
                return Err(ReadError::Data(format!(
                    "line {line}, column {}: {}",
                    e.column(),
                    strip_position(&e.to_string())
                )));
            }
        };
        emit(line, row, bytes).map_err(ReadError::Stop)?;
    }
}

/// serde_json appends " at line L column C"; the caller names the position itself.
fn strip_position(message: &str) -> &str {
    message.rsplit_once(" at line ").map_or(message, |(m, _)| m)
}

/// `m` as printed without `--unmask`: every mapped value hidden (an email keeps its first
/// letter and domain), the record key and the messages masked like stored errors. Fields,
/// rules and which values are empty stay, so the output still says what the mapping did.
fn masked(m: Mapped) -> Mapped {
    let stored = |s: &str| mask::stored(s).into_owned();
    let issues = |issues: Vec<Issue>| -> Vec<Issue> {
        issues
            .into_iter()
            .map(|i| Issue {
                message: stored(&i.message),
                ..i
            })
            .collect()
    };
    Mapped {
        record_key: m.record_key.as_deref().map(stored),
        properties: m
            .properties
            .into_iter()
            .map(|(k, v)| (k, v.as_deref().map(mask::hidden)))
            .collect(),
        errors: issues(m.errors),
        warnings: issues(m.warnings),
    }
}

fn write_record(
    out: &mut impl Write,
    format: OutputFormat,
    line: u64,
    m: &Mapped,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Jsonl => {
            serde_json::to_writer(
                &mut *out,
                &Line {
                    line,
                    record_key: &m.record_key,
                    valid: m.is_valid(),
                    errors: &m.errors,
                    warnings: &m.warnings,
                    properties: &m.properties,
                },
            )?;
            out.write_all(b"\n")
        }
        OutputFormat::Table => {
            if m.errors.is_empty() && m.warnings.is_empty() {
                return Ok(());
            }
            let key = m.record_key.as_deref().unwrap_or("(no key)");
            let verdict = if m.is_valid() {
                "ok, with warnings"
            } else {
                "REJECTED"
            };
            writeln!(out, "line {line:<6} record {key:<12} {verdict}")?;
            for (kind, issues) in [("error", &m.errors), ("warning", &m.warnings)] {
                for i in issues {
                    writeln!(
                        out,
                        "    {kind:<7} {:<38} {:<20} {}",
                        i.field, i.rule, i.message
                    )?;
                }
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Summary {
    records: u64,
    valid: u64,
    rejected: u64,
    by_rule: BTreeMap<String, u64>,
    warnings: u64,
}

impl Summary {
    fn add(&mut self, m: &Mapped) {
        self.records += 1;
        if m.is_valid() {
            self.valid += 1;
        } else {
            self.rejected += 1;
        }
        for e in &m.errors {
            *self.by_rule.entry(e.rule.clone()).or_default() += 1;
        }
        self.warnings += m.warnings.len() as u64;
    }

    fn render(&self) -> String {
        let mut s = format!(
            "records: {}, valid: {}, rejected: {}, warnings: {}",
            self.records, self.valid, self.rejected, self.warnings
        );
        if !self.by_rule.is_empty() {
            let rules: Vec<String> = self
                .by_rule
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            s.push_str(&format!("\nerrors by rule: {}", rules.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_records_hide_every_value_but_keep_fields_rules_and_empties() {
        let issue = |field: &str, message: &str| Issue {
            field: field.into(),
            rule: "email".into(),
            message: message.into(),
        };
        let m = Mapped {
            record_key: Some("112345678".into()),
            properties: [
                ("email", Some("ana.rojas@example.com")),
                ("firstname", Some("Ana María")),
                ("no__de_cedula", Some("102340567")),
                ("telefono_oficina", None),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
            errors: vec![issue("email", "\"ana.rojas@examp\" is not an email")],
            warnings: vec![issue("no__de_cedula", "1-0234-0567 was padded")],
        };
        let shown = serde_json::to_string(&masked(m.clone())).unwrap();
        for clear in ["ana.rojas", "Ana María", "102340567", "0234", "12345"] {
            assert!(!shown.contains(clear), "{clear}: {shown}");
        }
        let masked = masked(m);
        assert_eq!(
            masked.properties["email"].as_deref(),
            Some("a***@example.com")
        );
        assert_eq!(masked.properties["firstname"].as_deref(), Some("***"));
        assert_eq!(masked.properties["telefono_oficina"], None);
        assert_eq!(masked.record_key.as_deref(), Some("1-****-**78"));
        assert_eq!(masked.errors[0].message, "\"***\" is not an email");
        assert_eq!(
            (
                masked.errors[0].field.as_str(),
                masked.errors[0].rule.as_str()
            ),
            ("email", "email")
        );
        assert_eq!(masked.warnings[0].message, "1-****-**67 was padded");
    }
}
