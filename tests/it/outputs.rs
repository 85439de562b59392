//! The scan of everything hubsync writes in the suite: stdout, stderr and the log files of every
//! process the tests start, and log lines captured in process, for the test secrets, unmasked
//! emails and cédulas in clear (`hubsync::telemetry::leaks`). A hit fails the test, naming the
//! test, the command, the stream or file and the line, masked.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use hubsync::mapping::SqlRow;
use hubsync::telemetry::leaks::{Leak, Watch, hide, leaks};

/// Hits shown in a failure message; the rest are counted.
const SHOWN: usize = 10;

/// What every scan looks for: the simulators' default secrets, the test server's password, and
/// the identity numbers of every member a test has generated.
static SUITE: LazyLock<Mutex<Watch>> = LazyLock::new(|| {
    let mut watch = Watch::default();
    watch.secret(hubsync::sim::mssql::DEFAULT_PASSWORD).secret(
        secrecy::ExposeSecret::expose_secret(&hubsync::sim::hubspot::SimOptions::default().token),
    );
    if let Ok(url) = std::env::var("HUBSYNC_TEST_DATABASE_URL") {
        for secret in secrets_in_value(&url) {
            watch.secret(&secret);
        }
    }
    Mutex::new(watch)
});

/// Every identity number of `rows` (columns named like `no__de_cedula`), looked for in every
/// output from now on.
pub fn watch_members(rows: &[SqlRow]) {
    let mut watch = SUITE.lock().unwrap();
    for row in rows {
        for (column, value) in row {
            if let (true, Some(value)) = (column.contains("cedula"), value.as_str()) {
                watch.identity(value);
            }
        }
    }
}

/// The suite's watch with `secrets` added.
pub fn watch(secrets: &[String]) -> Watch {
    let mut watch = SUITE.lock().unwrap().clone();
    for secret in secrets {
        watch.secret(secret);
    }
    watch
}

/// The secrets a command is given: values of `*TOKEN*`/`*PASSWORD*` variables and options,
/// the passwords in connection strings and URLs, anywhere in `args` and `env`, and the secret
/// keys of its configuration file (a test may write them there literally).
pub fn secrets_of(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Vec<String> {
    let mut secrets = Vec::new();
    let named = |name: &str| {
        let name = name.to_ascii_uppercase();
        name.contains("TOKEN") || name.contains("PASSWORD")
    };
    for (name, value) in env {
        if named(name) {
            secrets.push(value.to_string());
        }
        secrets.extend(secrets_in_value(value));
    }
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && args[i - 1].starts_with("--") && named(args[i - 1]) {
            secrets.push(arg.to_string());
        }
        secrets.extend(secrets_in_value(arg));
    }
    if let Some(config) = config_yaml(args, cwd) {
        for key in [
            &["hubspot", "token"][..],
            &["service", "api_token"],
            &["postgres", "url"],
            &["sql_server", "connection"],
            &["sql_server"],
        ] {
            let value = key.iter().try_fold(&config, |v, k| v.get(k));
            if let Some(text) = value.and_then(|v| v.as_str()) {
                if key == ["hubspot", "token"] {
                    secrets.push(text.to_string());
                }
                secrets.extend(secrets_in_value(text));
            }
        }
    }
    secrets
}

/// The password of a URL (as written and decoded) or of a `password=…` connection string.
fn secrets_in_value(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(password) = url::Url::parse(value)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned());
        found.extend(decoded);
        found.push(password);
    }
    for part in value.split(';') {
        if let Some((key, secret)) = part.split_once('=') {
            let key = key.trim().to_ascii_lowercase();
            if key == "password" || key == "pwd" {
                let secret = secret.trim();
                found.push(secret.trim_matches(['{', '}']).to_string());
                found.push(secret.to_string());
            }
        }
    }
    found
}

/// The configuration file a command reads (`--config`, else `config.yaml` in `cwd`), parsed;
/// none when it is not a small regular file of little nesting (the hostile ones are a FIFO,
/// `/dev/zero`, a deep nest of `[`).
fn config_yaml(args: &[&str], cwd: &Path) -> Option<serde_yaml::Value> {
    let path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| cwd.join("config.yaml"), |p| cwd.join(p));
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 256 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    if text.matches(['[', '{']).count() > 1000 {
        return None;
    }
    serde_yaml::from_str(&text).ok()
}

/// The directories in the temp dir a command writes logs to: `logging.directory` of its
/// configuration and a `--dir` it is given (the demo's). The shipped `/var/log/hubsync` is
/// not the suite's to read.
pub fn log_dirs(args: &[&str], cwd: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = config_yaml(args, cwd).as_ref().and_then(|c| {
        c.get("logging")?
            .get("directory")?
            .as_str()
            .map(str::to_owned)
    }) {
        dirs.push(cwd.join(dir));
    }
    if let Some(dir) = args
        .iter()
        .position(|a| *a == "--dir")
        .and_then(|i| args.get(i + 1))
    {
        dirs.push(cwd.join(dir));
    }
    dirs.retain(|d| d.starts_with(std::env::temp_dir()));
    dirs
}

/// The hits found so far in one process's (or one test's) output, for one failure message.
#[derive(Default)]
pub struct Findings {
    hits: Vec<(String, Leak)>,
}

impl Findings {
    /// Scans `text`, which came from `source` (`stdout`, a file name).
    pub fn scan(&mut self, source: &str, text: &str, watch: &Watch) {
        self.add(source, leaks(text, watch));
    }

    pub fn add(&mut self, source: &str, found: Vec<Leak>) {
        self.hits
            .extend(found.into_iter().map(|l| (source.to_string(), l)));
    }

    /// Scans every file under `dir` but the configuration files the test wrote (`*.yaml`).
    pub fn scan_dir(&mut self, dir: &Path, watch: &Watch) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                self.scan_dir(&path, watch);
            } else if path.is_file() && path.extension().is_none_or(|e| e != "yaml") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                self.scan(&path.display().to_string(), &text, watch);
            }
        }
    }

    /// Fails the test if anything was found, naming `what` wrote it (a command, with every
    /// secret of `watch` hidden).
    pub fn assert_clean(self, what: &str, watch: &Watch) {
        if self.hits.is_empty() {
            return;
        }
        let test = std::thread::current()
            .name()
            .unwrap_or("(a test thread)")
            .to_string();
        let shown = hide(what, watch);
        let mut message = format!(
            "{test}: {shown} wrote what must never be in any output, on these lines ({}):",
            self.hits.len()
        );
        for (source, leak) in self.hits.iter().take(SHOWN) {
            message.push_str(&format!("\n  {source} {leak}"));
        }
        if self.hits.len() > SHOWN {
            message.push_str(&format!("\n  … and {} more", self.hits.len() - SHOWN));
        }
        panic!("{message}");
    }
}

/// Fails the test if `text` (log lines captured in this process, `what`) leaks anything
/// [`watch`] looks for, `secrets` included.
pub fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    let watch = watch(secrets);
    let mut findings = Findings::default();
    findings.scan(what, text, &watch);
    findings.assert_clean(what, &watch);
}

#[test]
fn a_leaking_output_fails_with_the_line_masked() {
    let secret = "Outp4t-Scan-Secret".to_string();
    let text = format!(
        "{{\"message\":\"ok\"}}\n{{\"message\":\"sent ana.rojas@example.com, key {secret}\"}}\n"
    );
    let failure = std::panic::catch_unwind(|| {
        assert_clean("stdout of a test", &text, std::slice::from_ref(&secret))
    })
    .expect_err("a leak fails the test");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("a_leaking_output_fails_with_the_line_masked")
            && message.contains("stdout of a test line 2: an unmasked email")
            && message.contains("a***@example.com")
            && message.contains("<secret>"),
        "{message}"
    );
    assert!(
        !message.contains("ana.rojas") && !message.contains(&secret),
        "{message}"
    );
    assert_clean(
        "clean",
        "{\"message\":\"sent a***@example.com\"}\n",
        &[secret],
    );
}

#[test]
fn the_secrets_of_a_command_are_found_in_its_environment_arguments_and_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "hubspot:\n  token: pat-na1-literal-in-file\nlogging:\n  directory: logs\n",
    )
    .unwrap();
    let secrets = secrets_of(
        &[
            "--config",
            "c.yaml",
            "sim",
            "mssql",
            "--password",
            "Cli-Passw0rd!",
        ],
        &[
            ("HUBSYNC_HUBSPOT_TOKEN", "pat-na1-from-env"),
            (
                "HUBSYNC_DATABASE_URL",
                "postgres://hubsync:p%40ss-w0rd@db/hubsync",
            ),
            (
                "SQL_SERVER",
                "server=tcp:x,1433;user=sa;Password={Br4ced;Pw}",
            ),
        ],
        dir.path(),
    );
    for secret in [
        "pat-na1-literal-in-file",
        "pat-na1-from-env",
        "p@ss-w0rd",
        "p%40ss-w0rd",
        "Cli-Passw0rd!",
        "{Br4ced",
    ] {
        assert!(secrets.iter().any(|s| s == secret), "{secret}: {secrets:?}");
    }
    assert_eq!(
        log_dirs(&["--config", "c.yaml", "run"], dir.path()),
        [dir.path().join("logs")]
    );
}
