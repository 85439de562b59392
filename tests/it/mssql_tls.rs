//! TLS between hubsync and SQL Server, against the simulator: the handshake inside PRELOGIN,
//! the certificate checked against a configured CA (another CA or another name refused),
//! `trustServerCertificate=true` accepted with hubsync's warning, `encrypt=false` encrypting the
//! login only, and a server without encryption refusing a client that requires it.

use std::time::Duration;

use hubsync::mssql::{MssqlError, SqlPool, SqlServerSettings};
use hubsync::sim::mssql::{self, MssqlSimEncryption, MssqlSimOptions, RunningMssqlSim};
use secrecy::SecretString;
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use crate::support::Logs;

async fn sim_with(encryption: MssqlSimEncryption) -> RunningMssqlSim {
    let options = MssqlSimOptions {
        encryption,
        ..MssqlSimOptions::default()
    };
    mssql::start("127.0.0.1:0".parse().expect("address"), options)
        .await
        .expect("simulator starts")
}

async fn sim() -> RunningMssqlSim {
    sim_with(MssqlSimEncryption::Available).await
}

/// Logs in with tiberius and runs `SELECT 1`.
async fn select_one(sim: &RunningMssqlSim, conn: &str) -> tiberius::Result<i32> {
    let config = Config::from_ado_string(conn)?;
    let tcp = TcpStream::connect(sim.addr()).await?;
    tcp.set_nodelay(true)?;
    let mut client = Client::connect(config, tcp.compat_write()).await?;
    let row = client
        .query("SELECT 1 AS [one]", &[])
        .await?
        .into_row()
        .await?;
    Ok(row.and_then(|r| r.get::<i32, _>(0)).unwrap_or_default())
}

fn settings(connection: &str) -> SqlServerSettings {
    SqlServerSettings {
        connection: Some(SecretString::from(connection.to_string())),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        retry_max_elapsed: Duration::from_secs(1),
        ..SqlServerSettings::default()
    }
}

/// hubsync's readiness probe over `conn`, with the warnings `SqlPool::new` logged.
async fn probe(conn: &str) -> (Result<(), MssqlError>, Vec<String>) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        hubsync::telemetry::json_layer(move || writer.clone()),
    );
    let pool = {
        let _guard = tracing::subscriber::set_default(subscriber);
        SqlPool::new(&settings(conn)).expect("pool")
    };
    let warnings = logs
        .text()
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_owned)
        .collect();
    (pool.probe().await, warnings)
}

/// The simulator's counters once its side of a failed handshake has been seen.
async fn stats_after_handshake_failure(sim: &RunningMssqlSim) -> mssql::MssqlSimStats {
    for _ in 0..100 {
        let stats = sim.stats();
        if stats.tls_handshake_failures > 0 {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stats()
}

#[tokio::test]
async fn the_default_connection_is_encrypted_with_the_certificate_checked() {
    let sim = sim().await;
    let conn = sim.connection_string();
    assert!(
        conn.contains("encrypt=true;trustServerCertificateCA=") && !conn.contains("DANGER"),
        "{conn}"
    );
    let ca = sim.ca_file().expect("a generated CA");
    assert_eq!(
        std::fs::read_to_string(ca).unwrap(),
        sim.ca_pem().expect("CA PEM")
    );
    assert_eq!(select_one(&sim, &conn).await.expect("TLS login"), 1);
    let (probed, warnings) = probe(&conn).await;
    probed.expect("hubsync connects over TLS");
    assert!(warnings.is_empty(), "no TLS warning: {warnings:?}");
    let stats = sim.stats();
    assert_eq!(
        (
            stats.tls_sessions,
            stats.login_only_tls_sessions,
            stats.plaintext_sessions
        ),
        (2, 0, 0),
        "{stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let sim = sim().await;
    let other = sim_with(MssqlSimEncryption::Available).await;
    let foreign_ca = other.ca_file().expect("CA").display().to_string();
    let conn = format!(
        "{};encrypt=true;trustServerCertificateCA={foreign_ca}",
        sim.connection_string_base()
    );
    let err = select_one(&sim, &conn)
        .await
        .expect_err("another CA's certificate is refused");
    assert!(
        matches!(&err, tiberius::error::Error::Tls(m) if m.contains("UnknownIssuer")),
        "{err:?}"
    );
    let (probed, _) = probe(&conn).await;
    let text = probed.expect_err("hubsync refuses it too").to_string();
    assert!(
        text.contains("TLS: the server's certificate was refused (")
            && text.contains("UnknownIssuer")
            && text.contains("trustServerCertificateCA"),
        "{text}"
    );
    assert!(!text.contains(mssql::DEFAULT_PASSWORD), "{text}");
    let stats = stats_after_handshake_failure(&sim).await;
    assert_eq!(stats.logins_ok, 0, "{stats:?}");
    assert!(stats.tls_handshake_failures >= 1, "{stats:?}");
    sim.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn trusting_any_certificate_is_accepted_with_the_warning() {
    let sim = sim().await;
    let conn = format!(
        "{};encrypt=true;trustServerCertificate=true",
        sim.connection_string_base()
    );
    let (probed, warnings) = probe(&conn).await;
    probed.expect("an unchecked certificate is accepted");
    assert!(
        warnings
            .iter()
            .any(|w| w
                .contains("trustServerCertificate=true: the server certificate is not checked")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|w| !w.contains(mssql::DEFAULT_PASSWORD)),
        "{warnings:?}"
    );
    assert_eq!(sim.stats().tls_sessions, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let sim = sim().await;
    let ca = sim.ca_file().expect("CA").display().to_string();
    let conn = format!(
        "{};encrypt=true;trustServerCertificateCA={ca};hostNameInCertificate=sql.example.org",
        sim.connection_string_base()
    );
    let err = select_one(&sim, &conn)
        .await
        .expect_err("the certificate is not for sql.example.org");
    assert!(
        matches!(&err, tiberius::error::Error::Tls(m) if m.contains("not valid for name \"sql.example.org\"")),
        "{err:?}"
    );
    let (probed, _) = probe(&conn).await;
    let text = probed.expect_err("hubsync refuses it too").to_string();
    assert!(
        text.contains("certificate was refused (certificate not valid for name"),
        "{text}"
    );
    // The names it does hold: localhost and the loopback address.
    let by_name = format!(
        "server=tcp:localhost,{};user=sa;password={};encrypt=true;trustServerCertificateCA={ca}",
        sim.addr().port(),
        mssql::DEFAULT_PASSWORD
    );
    probe(&by_name)
        .await
        .0
        .expect("localhost is in the certificate");
    sim.shutdown().await;
}

#[tokio::test]
async fn encrypt_false_encrypts_the_login_only() {
    let sim = sim().await;
    let ca = sim.ca_file().expect("CA").display().to_string();
    let conn = format!(
        "{};encrypt=false;trustServerCertificateCA={ca}",
        sim.connection_string_base()
    );
    let (probed, warnings) = probe(&conn).await;
    probed.expect("login over TLS, then plaintext");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("encrypt=false: only the login is encrypted")),
        "{warnings:?}"
    );
    let stats = sim.stats();
    assert_eq!(
        (
            stats.tls_sessions,
            stats.login_only_tls_sessions,
            stats.plaintext_sessions,
            stats.logins_ok
        ),
        (0, 1, 0, 1),
        "{stats:?}"
    );
    // The login itself is still checked: a wrong certificate fails even with encrypt=false.
    let other = sim_with(MssqlSimEncryption::Available).await;
    let foreign = format!(
        "{};encrypt=false;trustServerCertificateCA={}",
        sim.connection_string_base(),
        other.ca_file().expect("CA").display()
    );
    assert!(select_one(&sim, &foreign).await.is_err());
    sim.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn forced_encryption_encrypts_an_encrypt_false_session_throughout() {
    let sim = sim_with(MssqlSimEncryption::Forced).await;
    let ca = sim.ca_file().expect("CA").display().to_string();
    let conn = format!(
        "{};encrypt=false;trustServerCertificateCA={ca}",
        sim.connection_string_base()
    );
    assert_eq!(select_one(&sim, &conn).await.expect("login"), 1);
    assert_eq!(
        select_one(&sim, &sim.connection_string())
            .await
            .expect("login"),
        1
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.tls_sessions, stats.login_only_tls_sessions),
        (2, 0),
        "{stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_only_server_refuses_a_client_that_requires_encryption() {
    let sim = sim_with(MssqlSimEncryption::PlaintextOnly).await;
    assert!(sim.ca_file().is_none() && sim.ca_pem().is_none());
    let conn = sim.connection_string();
    assert!(conn.ends_with(";encrypt=DANGER_PLAINTEXT"), "{conn}");
    assert_eq!(select_one(&sim, &conn).await.expect("plaintext login"), 1);

    let encrypted = format!("{};encrypt=true", sim.connection_string_base());
    let err = select_one(&sim, &encrypted)
        .await
        .expect_err("encryption is required but not offered");
    assert!(
        matches!(&err, tiberius::error::Error::Protocol(m) if m.contains("does not allow the requested encryption level")),
        "{err:?}"
    );
    let (probed, _) = probe(&encrypted).await;
    assert!(probed.is_err(), "hubsync cannot connect either");
    let stats = sim.stats();
    assert_eq!(
        (
            stats.plaintext_sessions,
            stats.logins_ok,
            stats.tls_sessions
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_offering_no_encryption_gets_none_unless_it_is_forced() {
    let sim = sim().await;
    let conn = format!("{};encrypt=DANGER_PLAINTEXT", sim.connection_string_base());
    assert_eq!(select_one(&sim, &conn).await.expect("plaintext login"), 1);
    assert_eq!(sim.stats().plaintext_sessions, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_given_certificate_is_served() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cooperative test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["sql.coop.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("coop-ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();

    let options = MssqlSimOptions {
        certificate: Some(mssql::MssqlSimCertificate {
            chain_pem: server.pem(),
            key_pem: key.serialize_pem().into(),
        }),
        ..MssqlSimOptions::default()
    };
    assert!(!format!("{options:?}").contains("PRIVATE KEY"));
    let sim = mssql::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("simulator starts");
    assert!(sim.ca_file().is_none());
    assert!(sim.connection_string().ends_with(";encrypt=true"));
    let conn = format!(
        "{};encrypt=true;trustServerCertificateCA={};hostNameInCertificate=sql.coop.test",
        sim.connection_string_base(),
        ca_path.display()
    );
    probe(&conn)
        .await
        .0
        .expect("the given certificate is checked");
    sim.shutdown().await;
}
