//! Hostile configurations, run through the real binary: `check-config` and `run` agree on every
//! one (exit 78, the key named, before any connection), secrets that land in the wrong key are
//! named by their variable and never shown, and no input file can make loading slow or hang.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::{example_config, hubsync_within};

const TOKEN: &str = "pat-na1-99999999-8888-7777-6666-555555555555";
const SQL_PASSWORD: &str = "Sup3r-S3cret-Pw";

/// The SQL Server connection string the example config takes from `${SQL_SERVER}`.
fn sql_server() -> String {
    format!("server=tcp:sql.internal,1433;database=coop;user=hubsync;password={SQL_PASSWORD}")
}

/// The secrets a valid config needs, with a queue database nobody listens on: a config error
/// must be found before connecting.
struct Secrets {
    database_url: String,
    sql_server: String,
}

impl Secrets {
    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            database_url: format!("postgres://hubsync:{SQL_PASSWORD}@127.0.0.1:{port}/hubsync"),
            sql_server: sql_server(),
        }
    }

    fn env(&self) -> [(&str, &str); 3] {
        [
            ("HUBSYNC_DATABASE_URL", self.database_url.as_str()),
            ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
            ("SQL_SERVER", self.sql_server.as_str()),
        ]
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shipped example with `from` replaced by `to` (which must occur), logs in `dir`.
fn example_with(dir: &Path, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(example_config()).unwrap();
    let logs = format!("directory: {}", dir.join("logs").display());
    for (from, to) in [("directory: /var/log/hubsync", logs.as_str())]
        .iter()
        .chain(edits)
    {
        assert!(text.contains(from), "the example has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    text
}

/// Runs `config` through both `check-config` and `run`; both must exit 78 naming `key`, and
/// show none of `secrets`. Returns what each printed.
fn both_refuse(config: &str, key: &str, env: &[(&str, &str)], secrets: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    let mut printed = Vec::new();
    for command in ["check-config", "run"] {
        let out = hubsync_within(
            &["--config", &path, command],
            env,
            dir.path(),
            Duration::from_secs(30),
        );
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{command} for {key}: {all}");
        assert!(
            all.lines().any(|l| l.trim_start().starts_with(key)),
            "{command}: no problem names {key}:\n{all}"
        );
        for secret in secrets {
            let bytes = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{command} shows a secret for {key}:\n{all}"
            );
        }
        printed.push(all);
    }
    printed
}

#[test]
fn check_config_and_run_refuse_the_same_hostile_settings() {
    let secrets = Secrets::new();
    let env = secrets.env();
    let long_column = "c".repeat(300);
    let detection = |column: &str| {
        format!(
            "hubspot_object: contacts\n    change_detection: {{ mode: rowversion, column: '{column}' }}"
        )
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![(
                "sql_table: dbo.hb_contacts",
                "sql_table: 'dbo.hb_contacts]; DROP TABLE socios; --'".into(),
            )],
            "objects.contacts.sql_table",
        ),
        (
            vec![(
                "sql_key: numero_asociado",
                "sql_key: \"numero_asociado; DELETE FROM socios\"".into(),
            )],
            "objects.contacts.sql_key",
        ),
        (
            vec![("hubspot_object: contacts", detection("rv] = 0; --"))],
            "objects.contacts.change_detection.column",
        ),
        (
            vec![("hubspot_object: contacts", detection(&long_column))],
            "objects.contacts.change_detection.column",
        ),
        (
            vec![(
                "{ sql: email, hubspot: email,",
                format!("{{ sql: {long_column}, hubspot: email,"),
            )],
            "objects.contacts.fields[4].sql",
        ),
        (
            vec![(
                "hubspot_object: contacts",
                "hubspot_object: \"../../x\"".into(),
            )],
            "objects.contacts.hubspot_object",
        ),
        (
            vec![("workers: 4 ", "workers: 100000000 ".into())],
            "queue.workers",
        ),
        (
            vec![("poll_interval: 5s", "poll_interval: 0s".into())],
            "queue.poll_interval",
        ),
        (
            vec![("connect_timeout: 5s", "connect_timeout: 0s".into())],
            "postgres.connect_timeout",
        ),
        (
            vec![("retention: 30d", "retention: 500000y".into())],
            "queue.retention",
        ),
        (
            vec![(
                "rejected_payload_retention: 30d",
                "rejected_payload_retention: 0s".into(),
            )],
            "queue.rejected_payload_retention",
        ),
        (
            vec![(
                "conflict_retention: 90d",
                "conflict_retention: 500000y".into(),
            )],
            "queue.conflict_retention",
        ),
        (
            vec![(
                "rules: [placeholder, positive], sql_type",
                "rules: [placeholder, \"range:10..1\"], sql_type".into(),
            )],
            "objects.contacts.fields[13].rules",
        ),
    ];
    for (edits, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
        both_refuse(
            &example_with(dir.path(), &edits),
            key,
            &env,
            &[TOKEN, SQL_PASSWORD],
        );
    }
}

#[test]
fn a_secret_in_the_wrong_key_is_named_by_its_variable_never_shown() {
    let secrets = Secrets::new();
    let env = secrets.env();
    let dir = tempfile::tempdir().unwrap();
    // The connection string given as the whole section (its old lines go under another key).
    let whole_section = example_with(
        dir.path(),
        &[("sql_server:\n", "sql_server: ${SQL_SERVER}\nx_unused:\n")],
    );
    let cases: Vec<(String, &str, &str)> = vec![
        (
            example_with(
                dir.path(),
                &[("lease: 2m", "lease: \"${HUBSYNC_HUBSPOT_TOKEN}\"")],
            ),
            "queue.lease",
            "${HUBSYNC_HUBSPOT_TOKEN}",
        ),
        (
            example_with(
                dir.path(),
                &[(
                    "conflict_policy: newest_wins",
                    "conflict_policy: ${SQL_SERVER}",
                )],
            ),
            "objects.contacts.conflict_policy",
            "${SQL_SERVER}",
        ),
        (
            example_with(
                dir.path(),
                &[("sql_table: dbo.hb_contacts", "sql_table: ${SQL_SERVER}")],
            ),
            "objects.contacts.sql_table",
            "${SQL_SERVER}",
        ),
        (
            example_with(
                dir.path(),
                &[(
                    "http_listen: 127.0.0.1:9187",
                    "http_listen: ${HUBSYNC_HUBSPOT_TOKEN}",
                )],
            ),
            "service.http_listen",
            "${HUBSYNC_HUBSPOT_TOKEN}",
        ),
        (
            example_with(
                dir.path(),
                &[("time_zone: America/Costa_Rica", "time_zone: ${SQL_SERVER}")],
            ),
            "sql_server.time_zone",
            "${SQL_SERVER}",
        ),
    ];
    for (config, key, variable) in cases {
        for out in both_refuse(
            &config,
            key,
            &env,
            &[TOKEN, SQL_PASSWORD, &secrets.sql_server],
        ) {
            assert!(out.contains(variable), "{key}: {out}");
        }
    }
    // The whole section given as the connection string: a type error about `sql_server`.
    let printed = both_refuse(
        &whole_section,
        "sql_server",
        &env,
        &[TOKEN, SQL_PASSWORD, &secrets.sql_server],
    );
    for out in printed {
        assert!(out.contains("${SQL_SERVER}"), "{out}");
    }
}

#[test]
fn secrets_written_literally_in_the_file_are_never_shown() {
    const LITERAL_TOKEN: &str = "pat-na1-11111111-2222-3333-4444-000000000000";
    const LITERAL_PASSWORD: &str = "L1teral-Pa55word";
    let secrets = Secrets::new();
    let env = secrets.env();
    let dir = tempfile::tempdir().unwrap();
    let connection = format!(
        "server=tcp:sql.internal,1433;database=coop;user=hubsync;password={LITERAL_PASSWORD}"
    );
    let url = format!("postgres://hubsync:{LITERAL_PASSWORD}@db.internal/hubsync");
    // A whole section given as the secret (its old lines go under another key), and secrets
    // pasted into keys that are not secret at all.
    let sql_section = format!("sql_server: \"{connection}\"\nx_unused:\n");
    let hubspot_section = format!("hubspot: {LITERAL_TOKEN}\nx_unused:\n");
    let postgres_section = format!("postgres: \"{url}\"\nx_unused:\n");
    let lease = format!("lease: \"{connection}\"");
    let listen = format!("http_listen: \"{url}\"");
    let timeout = format!("timeout: {LITERAL_TOKEN}");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("sql_server:\n", sql_section.as_str())], "sql_server"),
        (vec![("hubspot:\n", hubspot_section.as_str())], "hubspot"),
        (vec![("postgres:\n", postgres_section.as_str())], "postgres"),
        (vec![("lease: 2m", lease.as_str())], "queue.lease"),
        (
            vec![("http_listen: 127.0.0.1:9187", listen.as_str())],
            "service.http_listen",
        ),
        (vec![("timeout: 30s", timeout.as_str())], "hubspot.timeout"),
    ];
    for (edits, key) in cases {
        let config = example_with(dir.path(), &edits);
        both_refuse(
            &config,
            key,
            &env,
            &[LITERAL_TOKEN, LITERAL_PASSWORD, TOKEN, SQL_PASSWORD],
        );
    }
    // A literal token where it belongs, with another problem in its section: the check names
    // the problem, never the token.
    let config = example_with(
        dir.path(),
        &[(
            "base_url: https://api.hubapi.com",
            &format!("base_url: http://api.example.com\n  token: {LITERAL_TOKEN}"),
        )],
    );
    both_refuse(&config, "hubspot.base_url", &[], &[LITERAL_TOKEN]);
}

#[test]
fn secret_overrides_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_with(dir.path(), &[]);
    let conn = sql_server();
    let bad_url = format!("mysql://hubsync:{SQL_PASSWORD}@db.internal/hubsync");
    let bad_conn = format!("server=tcp:sql,1433;trusted_connection=yes;password={SQL_PASSWORD}");
    for (env, key) in [
        (
            vec![
                ("HUBSYNC_DATABASE_URL", bad_url.as_str()),
                ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
                ("SQL_SERVER", conn.as_str()),
            ],
            "postgres.url",
        ),
        (
            vec![
                ("HUBSYNC_DATABASE_URL", "postgres://h@127.0.0.1:1/h"),
                ("HUBSYNC_HUBSPOT_TOKEN", TOKEN),
                ("HUBSYNC_SQL_SERVER", bad_conn.as_str()),
            ],
            "sql_server.connection",
        ),
    ] {
        both_refuse(&config, key, &env, &[SQL_PASSWORD, TOKEN]);
    }
}

#[test]
fn deep_nesting_is_refused_in_well_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = "queue: ".to_string() + &"[".repeat(200_000) + "\n";
    let path = dir.path().join("nested.yaml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    for command in ["check-config", "run"] {
        let start = Instant::now();
        let out = hubsync_within(
            &["--config", &path, command],
            &[],
            dir.path(),
            Duration::from_secs(30),
        );
        let took = start.elapsed();
        assert_eq!(out.status.code(), Some(78), "{}", text(&out));
        assert!(text(&out).contains("nested more than 64"), "{}", text(&out));
        assert!(took < Duration::from_secs(1), "{command} took {took:?}");
    }
}

#[test]
fn devices_fifos_directories_and_huge_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let huge = dir.path().join("huge.yaml");
    std::fs::write(&huge, "# padding\n".repeat(200_000)).unwrap();
    let fifo = fifo.display().to_string();
    let huge = huge.display().to_string();
    let here = dir.path().display().to_string();
    for (path, why) in [
        ("/dev/zero", "a device"),
        (fifo.as_str(), "a FIFO"),
        (here.as_str(), "a directory"),
        (huge.as_str(), "1 MiB"),
    ] {
        for command in ["check-config", "run"] {
            let start = Instant::now();
            let out = hubsync_within(
                &["--config", path, command],
                &[],
                dir.path(),
                Duration::from_secs(10),
            );
            assert_eq!(out.status.code(), Some(78), "{path}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(why) && stderr.contains(path), "{stderr}");
            assert!(start.elapsed() < Duration::from_secs(2), "{path} {command}");
        }
    }
}

/// The enumeration name the env-file test passes through `${MARITAL}`: spaces, both quotes,
/// `#`, `$` and a backslash. In the YAML file it is a single-quoted key.
const ODD_NAME: &str = r#"sp ace "dq" 'sq' #h $d \b"#;
const ODD_NAME_YAML: &str = r#"'sp ace "dq" ''sq'' #h $d \b'"#;

fn write_env_file(dir: &Path, name: &str, marital_line: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let text = format!(
        "# hubsync secrets\n\
         HUBSYNC_DATABASE_URL=postgres://hubsync:p%40ss%20w@db.internal:5432/hubsync\n\
         HUBSYNC_HUBSPOT_TOKEN=\"{TOKEN}\"\n\
         SQL_SERVER='server=tcp:sql.internal,1433;database=coop;user=hubsync;password={SQL_PASSWORD}'\n\
         {marital_line}\n"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

#[test]
fn check_config_reads_a_systemd_env_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_with(
        dir.path(),
        &[
            (
                "transform: [\"enum:marital_status\"]",
                "transform: [\"enum:${MARITAL}\"]",
            ),
            (
                "      marital_status:\n",
                &format!("      {ODD_NAME_YAML}:\n"),
            ),
        ],
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let config_path = config_path.display().to_string();
    let check = |env_file: &str, env: &[(&str, &str)]| {
        hubsync_within(
            &[
                "--config",
                &config_path,
                "check-config",
                "--env-file",
                env_file,
            ],
            env,
            dir.path(),
            Duration::from_secs(30),
        )
    };
    // The same value written the three ways systemd reads: double quotes with escapes, single
    // quotes joined with a double-quoted `'`, and unquoted with backslashes.
    for (n, line) in [
        r#"MARITAL="sp ace \"dq\" 'sq' #h \$d \\b""#,
        r#"MARITAL='sp ace "dq" '"'"'sq'"'"' #h $d \b'"#,
        r#"MARITAL=  sp\ ace "dq" \'sq\' #h $d \\b   "#,
    ]
    .iter()
    .enumerate()
    {
        let file = write_env_file(dir.path(), &format!("ok{n}.env"), line, 0o600);
        // The calling shell's variables do not count: the service will not have them.
        let out = check(&file, &[("MARITAL", "marital_status")]);
        assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("ok\n"));
    }
    assert!(ODD_NAME.contains('\\'));

    // One character off: refused at the transform, naming the variable, not its value.
    let file = write_env_file(
        dir.path(),
        "off.env",
        r#"MARITAL="sp ace \"dq\" 'sq' #h $d b""#,
        0o600,
    );
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("objects.contacts.fields[9].transform[0]") && all.contains("${MARITAL}"),
        "{all}"
    );
    assert!(!all.contains("sp ace"), "{all}");

    // Readable by the group: refused, and nothing of it shown.
    let file = write_env_file(dir.path(), "open.env", r#"MARITAL=x"#, 0o640);
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("0640") && all.contains("chmod 600"), "{all}");
    assert!(!all.contains(TOKEN) && !all.contains(SQL_PASSWORD), "{all}");

    // Shell syntax systemd does not understand.
    let file = write_env_file(dir.path(), "export.env", "export MARITAL=x", 0o600);
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("line 5") && text(&out).contains("export"));
}

#[test]
fn check_config_and_run_refuse_the_same_bad_erasure_policies() {
    let secrets = Secrets::new();
    let env = secrets.env();
    let dir = tempfile::tempdir().unwrap();
    let erasure = "on_hubspot_erasure: { action: ignore }";
    let p = "objects.contacts.on_hubspot_erasure";
    for (policy, key) in [
        ("{ action: set_column }", format!("{p}.column")),
        (
            "{ action: set_column, column: 'activo; DROP TABLE x', value: 0 }",
            format!("{p}.column"),
        ),
        (
            "{ action: set_column, column: activo, value: [0] }",
            format!("{p}.value"),
        ),
        (
            "{ action: anonymize, neutral: { provincia: '' } }",
            format!("{p}.neutral.provincia"),
        ),
        (
            "{ action: delete, neutral: { email: '' } }",
            format!("{p}.neutral"),
        ),
        ("{ action: erase }", format!("{p}.action")),
    ] {
        let config = example_with(
            dir.path(),
            &[(erasure, &format!("on_hubspot_erasure: {policy}"))],
        );
        both_refuse(&config, &key, &env, &[SQL_PASSWORD, TOKEN]);
    }
    // What check-config accepts, run accepts: a good policy passes both checks.
    let good = "on_hubspot_erasure: { action: set_column, column: activo, value: 0 }";
    let config = example_with(dir.path(), &[(erasure, good)]);
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    let out = hubsync_within(
        &["--config", &path, "check-config", "--offline"],
        &env,
        dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
