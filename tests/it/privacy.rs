//! Personal data and secrets on the wire: the HubSpot token never goes out over plain HTTP to
//! another host, and HubSpot's answers are never followed elsewhere by a redirect.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubsync::hubspot::{HubSpotClient, HubSpotSettings, Limiter};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::hubsync;

/// `check-config` on `yaml` written to `dir/c.yaml`, with `env`.
fn check_config(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> Output {
    let config = dir.join("c.yaml");
    std::fs::write(&config, yaml).unwrap();
    hubsync(
        &["--config", config.to_str().unwrap(), "check-config"],
        env,
        dir,
    )
}

/// The line of `stderr` that reports a problem at `path`.
fn problem<'a>(stderr: &'a str, path: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with(path))
        .unwrap_or_else(|| panic!("{path} is not named: {stderr}"))
}

#[test]
fn an_http_hubspot_base_url_to_another_host_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let run = |base_url: &str| {
        check_config(
            dir.path(),
            &format!("hubspot:\n  base_url: {base_url}\n"),
            &[
                (
                    "HUBSYNC_DATABASE_URL",
                    "postgres://hubsync@127.0.0.1/hubsync",
                ),
                ("HUBSYNC_HUBSPOT_TOKEN", "pat-na1-test"),
            ],
        )
    };
    let out = run("http://api.hubapi.com");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let line = problem(&stderr, "hubspot.base_url");
    assert!(line.contains("http://"), "{line}");
    // To this host (the simulators) plain HTTP stays allowed: only other problems remain.
    for local in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:2",
    ] {
        let out = run(local);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("hubspot.base_url"), "{local}: {stderr}");
    }
}

/// A server that answers every request with `answer` and counts the connections it accepted.
async fn server(answer: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_redirect_from_hubspot_is_an_error_and_is_not_followed() {
    let (elsewhere, reached) = server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".into(),
    )
    .await;
    let (port, asked) = server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere}/crm/v3/properties/contacts\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let settings = HubSpotSettings {
        base_url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        token: Some(SecretString::from("pat-na1-redirect-test")),
        timeout: Duration::from_secs(5),
        max_retry_elapsed: Duration::from_secs(2),
        ..HubSpotSettings::default()
    };
    let client =
        HubSpotClient::new(&settings, Arc::new(Limiter::from_settings(&settings))).unwrap();
    let err = client.properties("contacts").await.unwrap_err().to_string();
    assert!(err.contains("307"), "the status is named: {err}");
    assert!(asked.load(Ordering::SeqCst) >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[test]
fn check_config_notes_weak_tls_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::example_config();
    let out = hubsync(
        &["--config", config.to_str().unwrap(), "check-config"],
        &[
            (
                "HUBSYNC_DATABASE_URL",
                "postgres://hubsync:pg-Secret-1@db.internal/hubsync?sslmode=require",
            ),
            ("HUBSYNC_HUBSPOT_TOKEN", "pat-na1-test"),
            (
                "SQL_SERVER",
                "server=tcp:sql.internal,1433;user=hubsync;password=Sql-Secret-2;\
                 encrypt=false;TrustServerCertificate=true",
            ),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for note in [
        "note: postgres.url: PostgreSQL at db.internal with sslmode=require",
        "note: sql_server.connection: encrypt=false",
        "note: sql_server.connection: trustServerCertificate=true",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(note)),
            "{note}: {stdout}"
        );
    }
    assert!(!stdout.contains("pg-Secret-1") && !stdout.contains("Sql-Secret-2"));
}

#[test]
fn tiberius_row_logging_is_refused_while_masking() {
    let dir = tempfile::tempdir().unwrap();
    let check = |logging: &str| {
        let out = check_config(dir.path(), &format!("logging:\n{logging}"), &[]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let refused = check("  level: info,tiberius=debug\n");
    let line = problem(&refused, "logging.level");
    assert!(line.contains("mask_personal_data"), "{line}");
    let allowed = check("  level: info,tiberius=debug\n  mask_personal_data: false\n");
    assert!(!allowed.contains("logging.level"), "{allowed}");
    assert!(!check("  level: debug\n").contains("logging.level"));
}
