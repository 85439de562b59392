//! Conformance of the SQL Server simulator with tiberius as the client: login, typed parameters,
//! result types, multi-packet results, transactions, rowversion, error numbers, faults.

use std::net::SocketAddr;

use hubsync::sim::mssql::{self, MssqlSimOptions, RunningMssqlSim};
use tiberius::{Client, Config, numeric::Numeric};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Conn = Client<Compat<TcpStream>>;

async fn sim_with(schema: &str) -> RunningMssqlSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let options = MssqlSimOptions {
        schema: Some(schema.to_string()),
        ..MssqlSimOptions::default()
    };
    mssql::start(addr, options).await.expect("simulator starts")
}

async fn sim() -> RunningMssqlSim {
    sim_with(
        "CREATE TABLE [dbo].[items] (
            [id] BIGINT NOT NULL PRIMARY KEY,
            [code] INT NULL,
            [name] NVARCHAR(20) NOT NULL,
            [note] NVARCHAR(MAX) NULL,
            [ascii] VARCHAR(10) NULL,
            [price] DECIMAL(18,2) NULL,
            [born] DATE NULL,
            [seen] DATETIME2 NULL,
            [ok] BIT NULL,
            [blob] VARBINARY(16) NULL,
            [rv] ROWVERSION
        );
        CREATE UNIQUE INDEX [ux_items_code] ON [dbo].[items] ([code]);",
    )
    .await
}

async fn connect_with(sim: &RunningMssqlSim, conn: &str) -> tiberius::Result<Conn> {
    let config = Config::from_ado_string(conn)?;
    let tcp = TcpStream::connect(sim.addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

async fn connect(sim: &RunningMssqlSim) -> Conn {
    connect_with(sim, &sim.connection_string())
        .await
        .expect("login succeeds")
}

fn server_error(e: tiberius::error::Error) -> u32 {
    match e {
        tiberius::error::Error::Server(t) => t.code(),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn error_of(c: &mut Conn, sql: &str) -> u32 {
    let result = c.simple_query(sql).await;
    let err = match result {
        Ok(stream) => stream
            .into_results()
            .await
            .expect_err("the statement fails"),
        Err(e) => e,
    };
    server_error(err)
}

#[tokio::test]
async fn login_and_probe() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    let row = c
        .query("SELECT 1 AS [ok]", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("one row");
    assert_eq!(row.get::<i32, _>("ok"), Some(1));
    assert_eq!(row.columns()[0].name(), "ok");

    let bad = sim
        .connection_string()
        .replace("password=", "password=wrong");
    let err = connect_with(&sim, &bad)
        .await
        .expect_err("bad password refused");
    assert_eq!(server_error(err), 18456);
    assert_eq!(sim.stats().logins_failed, 1);
    sim.shutdown().await;
}
