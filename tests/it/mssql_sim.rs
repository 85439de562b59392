//! Conformance of the SQL Server simulator with tiberius as the client: login, typed parameters,
//! result types, multi-packet results, transactions, rowversion, error numbers, faults.

use std::net::SocketAddr;
use std::time::Duration;

use hubsync::sim::mssql::{self, MssqlSimOptions, RunningMssqlSim};
use tiberius::{Client, Config, numeric::Numeric};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub type Conn = Client<Compat<TcpStream>>;

async fn sim_with(schema: &str) -> RunningMssqlSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let options = MssqlSimOptions {
        schema: Some(schema.to_string()),
        ..MssqlSimOptions::default()
    };
    mssql::start(addr, options).await.expect("simulator starts")
}

async fn sim() -> RunningMssqlSim {
    sim_with(ITEMS).await
}

/// The `items` table with READ_COMMITTED_SNAPSHOT as given.
async fn sim_rcsi(read_committed_snapshot: bool) -> RunningMssqlSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let options = MssqlSimOptions {
        schema: Some(ITEMS.to_string()),
        read_committed_snapshot,
        ..MssqlSimOptions::default()
    };
    mssql::start(addr, options).await.expect("simulator starts")
}

const ITEMS: &str = "CREATE TABLE [dbo].[items] (
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
        CREATE UNIQUE INDEX [ux_items_code] ON [dbo].[items] ([code]) WHERE [code] IS NOT NULL;";

async fn connect_with(sim: &RunningMssqlSim, conn: &str) -> tiberius::Result<Conn> {
    let config = Config::from_ado_string(conn)?;
    let tcp = TcpStream::connect(sim.addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

pub async fn connect(sim: &RunningMssqlSim) -> Conn {
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

pub async fn error_of(c: &mut Conn, sql: &str) -> u32 {
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
    let elsewhere = sim
        .connection_string()
        .replace("database=hubsync", "database=nope");
    let err = connect_with(&sim, &elsewhere)
        .await
        .expect_err("unknown database refused");
    assert_eq!(server_error(err), 4060);
    assert_eq!(sim.stats().logins_failed, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_parameter_type_round_trips_with_sql_server_wire_types() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    let long_note: String = "ñ".repeat(3000); // 6000 UTF-8 bytes: goes as nvarchar(max)
    let born = chrono::NaiveDate::from_ymd_opt(1987, 9, 15).unwrap();
    let seen = chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_nano_opt(23, 59, 58, 123_456_700)
        .unwrap();
    let price = Numeric::new_with_scale(125_000_050, 2);
    let result = c
        .execute(
            "INSERT INTO [dbo].[items] ([id], [code], [name], [note], [ascii], [price], [born], [seen], [ok], [blob]) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10)",
            &[&4_000_000_000i64, &7i32, &"José Ñandú", &long_note.as_str(), &"plain", &price, &born, &seen, &true, &vec![0u8, 1, 254, 255]],
        )
        .await
        .unwrap();
    assert_eq!(result.rows_affected(), &[1]);
    let nulls = c
        .execute(
            "INSERT INTO [dbo].[items] ([id], [code], [name], [note], [ascii], [price], [born], [seen], [ok], [blob]) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10)",
            &[&2i64, &Option::<i32>::None, &"nulls", &Option::<&str>::None, &Option::<&str>::None, &Option::<Numeric>::None, &Option::<chrono::NaiveDate>::None, &Option::<chrono::NaiveDateTime>::None, &Option::<bool>::None, &Option::<Vec<u8>>::None],
        )
        .await
        .unwrap();
    assert_eq!(nulls.rows_affected(), &[1]);

    let rows = c
        .query("SELECT * FROM [dbo].[items] ORDER BY [id] DESC", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.get::<i64, _>("id"), Some(4_000_000_000));
    let spelled = c
        .query(
            "SELECT [ID], [Name] AS [Label] FROM [dbo].[items] WHERE [id] = @P1",
            &[&2i64],
        )
        .await
        .unwrap()
        .columns()
        .await
        .unwrap()
        .map(|cols| {
            cols.iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
        });
    assert_eq!(
        spelled,
        Some(vec!["ID".to_string(), "Label".to_string()]),
        "names as the query spells them"
    );
    assert_eq!(r.get::<i32, _>("code"), Some(7));
    assert_eq!(r.get::<&str, _>("name"), Some("José Ñandú"));
    assert_eq!(r.get::<&str, _>("note"), Some(long_note.as_str()));
    assert_eq!(r.get::<&str, _>("ascii"), Some("plain"));
    assert_eq!(
        r.get::<Numeric, _>("price").map(|n| n.to_string()),
        Some("1250000.50".into())
    );
    assert_eq!(r.get::<chrono::NaiveDate, _>("born"), Some(born));
    assert_eq!(r.get::<chrono::NaiveDateTime, _>("seen"), Some(seen));
    assert_eq!(r.get::<bool, _>("ok"), Some(true));
    assert_eq!(r.get::<&[u8], _>("blob"), Some(&[0u8, 1, 254, 255][..]));
    assert_eq!(r.get::<&[u8], _>("rv").map(<[u8]>::len), Some(8));
    // Wrong-width reads fail exactly as against SQL Server: int is not i64.
    assert!(r.try_get::<i64, _>("code").is_err());

    let n = &rows[1];
    assert_eq!(n.get::<i32, _>("code"), None);
    assert_eq!(n.get::<&str, _>("note"), None);
    assert_eq!(n.get::<Numeric, _>("price"), None);
    assert_eq!(n.get::<chrono::NaiveDate, _>("born"), None);
    assert_eq!(n.get::<chrono::NaiveDateTime, _>("seen"), None);
    assert_eq!(n.get::<bool, _>("ok"), None);
    assert_eq!(n.get::<&[u8], _>("blob"), None);

    // Parameters come back with their declared types.
    let echo = c
        .query(
            "SELECT @P1 AS [a], @P2 AS [b], @P3 AS [c], @P4 AS [d]",
            &[&5i64, &"x", &price, &Option::<i32>::None],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo.get::<i64, _>("a"), Some(5));
    assert_eq!(echo.get::<&str, _>("b"), Some("x"));
    assert_eq!(
        echo.get::<Numeric, _>("c").map(|n| n.to_string()),
        Some("1250000.50".into())
    );
    assert_eq!(echo.get::<i32, _>("d"), None);

    // Dates compare as dates with literals and parameters, not as their text.
    let by_date = c
        .query(
            "SELECT [id] FROM [dbo].[items] WHERE [seen] >= '2024-02-29' AND [seen] < '2024-03-01' AND [born] = @P1",
            &[&born],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(by_date.len(), 1);

    // Lookups compare text case-insensitively, like the default CI_AS collation.
    let found = c
        .query(
            "SELECT [id] FROM [dbo].[items] WHERE [name] = @P1",
            &[&"JOSÉ ÑANDÚ"],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_rows_cross_many_packets_in_order() {
    let sim = sim().await;
    for chunk in 0..10 {
        let values: Vec<String> = (0..1000)
            .map(|i| {
                let id = chunk * 1000 + i + 1;
                format!("({id}, N'member number {id:05} with a longer name')")
            })
            .collect();
        sim.execute_batch(&format!(
            "INSERT INTO [dbo].[items] ([id], [note]) VALUES {}",
            values.join(", ")
        ))
        .await
        .expect_err("name is NOT NULL");
        sim.execute_batch(&format!(
            "INSERT INTO [dbo].[items] ([id], [name]) VALUES {}",
            (0..1000)
                .map(|i| format!(
                    "({}, N'n{:05}')",
                    chunk * 1000 + i + 1,
                    chunk * 1000 + i + 1
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await
        .unwrap();
    }
    let mut c = connect(&sim).await;
    let rows = c
        .query(
            "SELECT TOP (@P1) [id], [name], [rv] FROM [dbo].[items] ORDER BY [id]",
            &[&20_000i64],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 10_000);
    for (i, r) in rows.iter().enumerate() {
        let id = i as i64 + 1;
        assert_eq!(r.get::<i64, _>("id"), Some(id));
        assert_eq!(r.get::<&str, _>("name"), Some(format!("n{id:05}").as_str()));
    }
    // Rowversions are distinct and increase with insertion order.
    let rvs: Vec<u64> = rows
        .iter()
        .map(|r| u64::from_be_bytes(r.get::<&[u8], _>("rv").unwrap().try_into().unwrap()))
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]));
    let count = c
        .simple_query("SELECT COUNT(*) AS [n] FROM [dbo].[items]")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count.get::<i32, _>("n"), Some(10_000));
    sim.shutdown().await;
}

async fn trancount(c: &mut Conn) -> i32 {
    first_int(c, "SELECT @@TRANCOUNT AS [trancount]").await
}

async fn count_items(c: &mut Conn) -> i32 {
    first_int(c, "SELECT COUNT(*) FROM [dbo].[items]").await
}

/// The first column of the one row `sql` returns, as an int.
pub async fn first_int(c: &mut Conn, sql: &str) -> i32 {
    c.query(sql, &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<i32, _>(0)
        .unwrap()
}

#[tokio::test]
async fn transactions_by_batch_and_by_transaction_manager() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    assert_eq!(trancount(&mut c).await, 0);
    run_batch(&mut c, "BEGIN TRANSACTION").await;
    assert_eq!(trancount(&mut c).await, 1);
    run_batch(&mut c, "BEGIN TRAN").await;
    assert_eq!(trancount(&mut c).await, 2);
    c.execute(
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES (@P1, @P2)",
        &[&1i64, &"a"],
    )
    .await
    .unwrap();
    run_batch(&mut c, "COMMIT TRANSACTION").await;
    assert_eq!(trancount(&mut c).await, 1);
    run_batch(&mut c, "ROLLBACK TRANSACTION").await;
    assert_eq!(trancount(&mut c).await, 0);
    assert_eq!(
        count_items(&mut c).await,
        0,
        "the rollback undid the insert"
    );

    c.begin_transaction().await.unwrap();
    assert_eq!(trancount(&mut c).await, 1);
    c.execute(
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES (@P1, @P2)",
        &[&2i64, &"b"],
    )
    .await
    .unwrap();
    c.commit_transaction().await.unwrap();
    assert_eq!(trancount(&mut c).await, 0);
    c.begin_transaction().await.unwrap();
    c.execute(
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES (@P1, @P2)",
        &[&3i64, &"c"],
    )
    .await
    .unwrap();
    c.rollback_transaction().await.unwrap();
    assert_eq!(count_items(&mut c).await, 1);

    assert_eq!(error_of(&mut c, "COMMIT TRANSACTION").await, 3902);
    // A dropped connection rolls its open transaction back.
    let mut other = connect(&sim).await;
    other
        .simple_query("BEGIN TRAN")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    other
        .execute(
            "INSERT INTO [dbo].[items] ([id], [name]) VALUES (@P1, @P2)",
            &[&4i64, &"d"],
        )
        .await
        .unwrap();
    drop(other);
    sim.drop_connections();
    let mut fresh = connect(&sim).await;
    assert_eq!(count_items(&mut fresh).await, 1);
    // The same key inserts again: the dropped session's row and write lock are gone.
    let again = fresh
        .execute(
            "INSERT INTO [dbo].[items] ([id], [name]) VALUES (@P1, @P2)",
            &[&4i64, &"d"],
        )
        .await
        .unwrap();
    assert_eq!(again.rows_affected(), &[1]);
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_carry_sql_server_numbers_and_the_connection_survives() {
    let sim = sim().await;
    sim.execute_batch(
        "CREATE TABLE [dbo].[parents] ([id] INT NOT NULL PRIMARY KEY);
         CREATE TABLE [dbo].[children] ([id] INT IDENTITY(1,1) PRIMARY KEY, [parent] INT NOT NULL, FOREIGN KEY ([parent]) REFERENCES [dbo].[parents] ([id]));
         INSERT INTO [dbo].[items] ([id], [code], [name]) VALUES (1, 10, N'a');",
    )
    .await
    .unwrap();
    let mut c = connect(&sim).await;
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'dup')"
        )
        .await,
        2627
    );
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[items] ([id], [code], [name]) VALUES (2, 10, N'dup code')"
        )
        .await,
        2601
    );
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[items] ([id], [name]) VALUES (3, NULL)"
        )
        .await,
        515
    );
    // A unique constraint admits one NULL, as in SQL Server, and compares case-insensitively.
    sim.execute_batch(
        "CREATE TABLE [dbo].[tags] ([id] INT NOT NULL PRIMARY KEY, [tag] NVARCHAR(10) NULL CONSTRAINT [UQ_tags_tag] UNIQUE);
         INSERT INTO [dbo].[tags] ([id], [tag]) VALUES (1, NULL), (2, N'Coop');",
    )
    .await
    .unwrap();
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[tags] ([id], [tag]) VALUES (3, NULL)"
        )
        .await,
        2627
    );
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[tags] ([id], [tag]) VALUES (4, N'COOP')"
        )
        .await,
        2627
    );
    assert_eq!(
        error_of(
            &mut c,
            "UPDATE [dbo].[items] SET [name] = N'this name is far too long for it' WHERE [id] = 1"
        )
        .await,
        2628
    );
    assert_eq!(
        error_of(
            &mut c,
            "INSERT INTO [dbo].[children] ([parent]) VALUES (99)"
        )
        .await,
        547
    );
    assert_eq!(error_of(&mut c, "SELECT * FROM [dbo].[missing]").await, 208);
    assert_eq!(
        error_of(&mut c, "SELECT [nope] FROM [dbo].[items]").await,
        207
    );
    assert_eq!(error_of(&mut c, "MERGE [dbo].[items] AS t USING (VALUES (1)) AS s(id) ON t.id = s.id WHEN MATCHED THEN DELETE;").await, 102);
    assert_eq!(
        error_of(&mut c, "SELECT SOUNDEX([name]) FROM [dbo].[items]").await,
        102
    );
    assert_eq!(error_of(&mut c, "SELEC 1").await, 102);

    // Identity keys come back through OUTPUT and SCOPE_IDENTITY().
    c.execute("INSERT INTO [dbo].[parents] ([id]) VALUES (@P1)", &[&5i32])
        .await
        .unwrap();
    let id = c
        .query(
            "INSERT INTO [dbo].[children] ([parent]) OUTPUT INSERTED.[id] VALUES (@P1)",
            &[&5i32],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<i32, _>("id");
    assert_eq!(id, Some(1));

    // SQL Server's limit of 2,100 parameters per request.
    let mut many = tiberius::Query::new("SELECT @P1 AS [first]");
    for i in 0..2101 {
        many.bind(i);
    }
    let err = match many.query(&mut c).await {
        Ok(stream) => stream
            .into_results()
            .await
            .expect_err("too many parameters"),
        Err(e) => e,
    };
    assert_eq!(server_error(err), 8003);

    // Statement errors leave the transaction open, unless XACT_ABORT is ON.
    run_batch(&mut c, "BEGIN TRAN").await;
    let dup = "INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'dup')";
    assert_eq!(error_of(&mut c, dup).await, 2627);
    assert_eq!(trancount(&mut c).await, 1);
    run_batch(&mut c, "SET XACT_ABORT ON").await;
    assert_eq!(error_of(&mut c, dup).await, 2627);
    assert_eq!(trancount(&mut c).await, 0);
    run_batch(&mut c, "SET XACT_ABORT OFF").await;

    // Deadlock injection: the next write fails with 1205 and rolls the transaction back.
    sim.deadlock_next_writes(1);
    run_batch(&mut c, "BEGIN TRAN").await;
    let err = c
        .execute(
            "UPDATE [dbo].[items] SET [name] = @P1 WHERE [id] = @P2",
            &[&"x", &1i64],
        )
        .await
        .expect_err("deadlock victim");
    assert_eq!(server_error(err), 1205);
    assert_eq!(trancount(&mut c).await, 0);
    let again = c
        .execute(
            "UPDATE [dbo].[items] SET [name] = @P1 WHERE [id] = @P2",
            &[&"x", &1i64],
        )
        .await
        .unwrap();
    assert_eq!(again.rows_affected(), &[1]);
    sim.shutdown().await;
}

fn rv(bytes: Option<&[u8]>) -> u64 {
    u64::from_be_bytes(bytes.expect("a rowversion").try_into().expect("8 bytes"))
}

#[tokio::test]
async fn min_active_rowversion_holds_back_readers_while_a_transaction_is_open() {
    // The reader polls during the writer's transaction: with RCSI it is not blocked.
    let sim = two_items(true).await;
    let mut writer = connect(&sim).await;
    let mut reader = connect(&sim).await;
    let reader_sql = "SELECT TOP (@P1) [name], [id], [rv] FROM [dbo].[items] WHERE [rv] > CAST(@P2 AS BINARY(8)) AND [rv] < MIN_ACTIVE_ROWVERSION() ORDER BY [rv]";

    let first = reader
        .query(reader_sql, &[&100i64, &0i64])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let cursor = rv(first[1].get::<&[u8], _>("rv"));

    writer
        .simple_query("BEGIN TRANSACTION")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    writer
        .execute(
            "UPDATE [dbo].[items] SET [name] = @P1 WHERE [id] = @P2",
            &[&"a2", &1i64],
        )
        .await
        .unwrap();
    let pending = rv(writer
        .query("SELECT [rv] FROM [dbo].[items] WHERE [id] = @P1", &[&1i64])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<&[u8], _>("rv"));
    assert!(pending > cursor);
    let min_active = reader
        .query("SELECT MIN_ACTIVE_ROWVERSION() AS [m]", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rv(min_active.get::<&[u8], _>("m")), pending);
    let during = reader
        .query(reader_sql, &[&100i64, &(cursor as i64)])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert!(
        during.is_empty(),
        "nothing at or above the open transaction's rowversion"
    );

    writer
        .simple_query("COMMIT TRANSACTION")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert!(sim.min_active_rowversion() > pending as i64);
    let after = reader
        .query(reader_sql, &[&100i64, &(cursor as i64)])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        1,
        "the committed update is read once the transaction ends"
    );
    assert_eq!(after[0].get::<&str, _>("name"), Some("a2"));
    sim.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_dropped_connections_and_refused_logins() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    assert_eq!(count_items(&mut c).await, 0);
    sim.drop_connections();
    let outcome = match c.simple_query("SELECT 1").await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "a dropped connection no longer answers");
    sim.refuse_logins_for(std::time::Duration::from_secs(600));
    assert!(connect_with(&sim, &sim.connection_string()).await.is_err());
    sim.refuse_logins_for(std::time::Duration::ZERO);
    let mut again = connect(&sim).await;
    assert_eq!(count_items(&mut again).await, 0);
    assert_eq!(sim.stats().logins_ok, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn cli_style_seed_schema_has_the_contact_table() {
    let sim = sim_with(mssql::SEED_SCHEMA).await;
    let mut c = connect(&sim).await;
    c.execute(
        "INSERT INTO [dbo].[hb_contacts] ([numero_asociado], [no__de_cedula], [firstname], [lastname], [email], [salario_neto_semanal_o_quincenal]) VALUES (@P1, @P2, @P3, @P4, @P5, @P6)",
        &[&1042i64, &"109870654", &"Ana", &"Mora", &"ana@example.com", &Numeric::new_with_scale(45_000_000, 2)],
    )
    .await
    .unwrap();
    let row = c
        .query("SELECT TOP (0) * FROM [dbo].[hb_contacts]", &[])
        .await
        .unwrap()
        .columns()
        .await
        .unwrap()
        .map(|cols| {
            cols.iter()
                .map(|c| (c.name().to_string(), c.column_type()))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(row.len(), 35);
    assert_eq!(
        row[0],
        ("numero_asociado".into(), tiberius::ColumnType::Int8)
    );
    assert_eq!(row.last().unwrap().1, tiberius::ColumnType::BigBinary);
    let r = c
        .query("SELECT [activo], [modified_at], [salario_neto_semanal_o_quincenal] FROM [dbo].[hb_contacts] WHERE [numero_asociado] = @P1", &[&1042i64])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.get::<bool, _>("activo"), Some(true));
    assert!(r.get::<chrono::NaiveDateTime, _>("modified_at").is_some());
    assert_eq!(
        r.get::<Numeric, _>(2).map(|n| n.to_string()),
        Some("450000.00".into())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn attention_is_acknowledged_and_the_connection_goes_on() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    c.cancel_query().await.expect("attention acknowledged");
    assert_eq!(count_items(&mut c).await, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_data_directory_keeps_tables_rows_and_rowversions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = MssqlSimOptions {
        schema: Some(
            "CREATE TABLE [dbo].[kept] ([id] INT NOT NULL PRIMARY KEY, [rv] ROWVERSION)".into(),
        ),
        data_dir: Some(dir.path().to_path_buf()),
        ..MssqlSimOptions::default()
    };
    let first = mssql::start(addr, options.clone()).await.unwrap();
    first
        .execute_batch("INSERT INTO [dbo].[kept] ([id]) VALUES (1)")
        .await
        .unwrap();
    let before = first.min_active_rowversion();
    first.shutdown().await;

    let second = mssql::start(addr, options)
        .await
        .expect("restarts on the same data");
    assert_eq!(
        second.min_active_rowversion(),
        before,
        "the rowversion counter continues"
    );
    second
        .execute_batch("INSERT INTO [dbo].[kept] ([id]) VALUES (2)")
        .await
        .unwrap();
    let mut c = connect(&second).await;
    let rows = c
        .query("SELECT [id], [rv] FROM [dbo].[kept] ORDER BY [rv]", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().filter_map(|r| r.get::<i32, _>("id")).collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(rv(rows[1].get::<&[u8], _>("rv")) >= before as u64);
    second.shutdown().await;
}

#[tokio::test]
async fn the_cli_serves_the_seed_contact_table() {
    let cwd = tempfile::tempdir().unwrap();
    let process = crate::support::Process::start(
        &[
            "sim",
            "mssql",
            "--listen",
            "127.0.0.1:0",
            "--password",
            "Cli-Passw0rd!",
            "--ca-file",
            "sim-ca.pem",
            "--read-committed-snapshot",
            "on",
        ],
        &[],
        cwd.path(),
    );
    let line = process.first_line(std::time::Duration::from_secs(30));
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(
        !line.contains("Cli-Passw0rd!"),
        "the password is not printed"
    );
    // The CA file is written before the line is printed; the line names it.
    let ca = cwd.path().join("sim-ca.pem");
    assert!(
        line.contains("encrypt=true;trustServerCertificateCA=sim-ca.pem"),
        "{line}"
    );
    let config = Config::from_ado_string(&format!(
        "server=tcp:{},{};user=sa;password=Cli-Passw0rd!;encrypt=true;trustServerCertificateCA={}",
        addr.ip(),
        addr.port(),
        ca.display()
    ))
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut c = Client::connect(config, tcp.compat_write()).await.unwrap();
    let n = c
        .query("SELECT COUNT(*) FROM [dbo].[hb_contacts]", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<i32, _>(0);
    assert_eq!(n, Some(0));
    // Dropping it stops the simulator and scans what it wrote.
    drop(process);
}

/// Runs a batch and reads its results to the end, failing the test on an error.
pub async fn run_batch(c: &mut Conn, sql: &str) {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The message of a server error.
fn server_message(e: tiberius::error::Error) -> (u32, String) {
    match e {
        tiberius::error::Error::Server(t) => (t.code(), t.message().to_string()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn error_message_of(c: &mut Conn, sql: &str) -> (u32, String) {
    let err = match c.simple_query(sql).await {
        Ok(stream) => stream
            .into_results()
            .await
            .expect_err("the statement fails"),
        Err(e) => e,
    };
    server_message(err)
}

async fn first_column<T>(c: &mut Conn, sql: &str, params: &[&dyn tiberius::ToSql]) -> Vec<T>
where
    T: for<'a> tiberius::FromSql<'a> + Clone,
{
    c.query(sql, params)
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<T, _>(0).expect("not null"))
        .collect()
}

#[tokio::test]
async fn decimals_are_exact_round_half_away_from_zero_and_overflow_with_8115() {
    let sim = sim_with(
        "CREATE TABLE [dbo].[amounts] ([id] INT NOT NULL PRIMARY KEY, [amount] DECIMAL(18,2) NULL, [big] NUMERIC(38,4) NULL)",
    )
    .await;
    let mut c = connect(&sim).await;
    run_batch(
        &mut c,
        "INSERT INTO [dbo].[amounts] ([id], [amount]) VALUES (1, 1234567890123456.78), (2, 9999999999999999.99), (3, -9999999999999999.99), (4, 2.5), (5, 10)",
    )
    .await;
    // A numeric parameter is exact, and rounds to the column's scale half away from zero.
    c.execute(
        "INSERT INTO [dbo].[amounts] ([id], [amount], [big]) VALUES (@P1, @P2, @P3), (@P4, @P5, NULL)",
        &[
            &6i32,
            &Numeric::new_with_scale(-12_345, 3),
            &Numeric::new_with_scale(12_345_678_901_234_567_890_123_456_789_012_345_678, 4),
            &7i32,
            &Numeric::new_with_scale(12_345, 3),
        ],
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT [id], [amount], [big] FROM [dbo].[amounts] ORDER BY [id]",
            &[],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(
        rows[0].columns()[1].column_type(),
        tiberius::ColumnType::Decimaln
    );
    let amounts: Vec<(i32, i128, u8)> = rows
        .iter()
        .map(|r| {
            let n = r.get::<Numeric, _>(1).expect("an amount");
            (r.get::<i32, _>(0).unwrap(), n.value(), n.scale())
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            (1, 123_456_789_012_345_678, 2),
            (2, 999_999_999_999_999_999, 2),
            (3, -999_999_999_999_999_999, 2),
            (4, 250, 2),
            (5, 1000, 2),
            (6, -1235, 2),
            (7, 1235, 2),
        ]
    );
    let big = rows[5].get::<Numeric, _>(2).expect("a big number");
    assert_eq!(
        (big.value(), big.scale()),
        (12_345_678_901_234_567_890_123_456_789_012_345_678, 4)
    );
    // Comparisons and order are numeric and exact, with literals and parameters alike.
    let ids: Vec<i32> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[amounts] WHERE [amount] > 1234567890123456.77 ORDER BY [amount] DESC",
        &[],
    )
    .await;
    assert_eq!(ids, vec![2, 1]);
    let ids: Vec<i32> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[amounts] WHERE [amount] = @P1",
        &[&Numeric::new_with_scale(123_456_789_012_345_678, 2)],
    )
    .await;
    assert_eq!(ids, vec![1]);
    let ids: Vec<i32> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[amounts] WHERE [amount] < 3 AND [amount] >= -12.35 ORDER BY [amount]",
        &[],
    )
    .await;
    assert_eq!(ids, vec![6, 4]);
    let ids: Vec<i32> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[amounts] ORDER BY [amount], [id]",
        &[],
    )
    .await;
    assert_eq!(ids, vec![3, 6, 4, 5, 7, 1, 2]);
    let max: Vec<Numeric> =
        first_column(&mut c, "SELECT MAX([amount]) FROM [dbo].[amounts]", &[]).await;
    assert_eq!(max[0].value(), 999_999_999_999_999_999);

    // Beyond the precision: SQL Server's 8115, and nothing stored.
    for sql in [
        "INSERT INTO [dbo].[amounts] ([id], [amount]) VALUES (8, 10000000000000000.00)",
        "INSERT INTO [dbo].[amounts] ([id], [amount]) VALUES (8, 9999999999999999.995)",
        "UPDATE [dbo].[amounts] SET [amount] = 99999999999999999 WHERE [id] = 1",
    ] {
        let (number, message) = error_message_of(&mut c, sql).await;
        assert_eq!(number, 8115, "{sql}: {message}");
        assert!(
            message.starts_with("Arithmetic overflow error converting "),
            "{message}"
        );
    }
    let err = c
        .execute(
            "INSERT INTO [dbo].[amounts] ([id], [amount]) VALUES (@P1, @P2)",
            &[&9i32, &Numeric::new_with_scale(100_000_000_000_000_000, 1)],
        )
        .await
        .expect_err("overflow");
    assert_eq!(
        server_message(err),
        (
            8115,
            "Arithmetic overflow error converting numeric to data type numeric.".into()
        )
    );
    assert_eq!(count_rows(&mut c, "amounts").await, 7);
    // Arithmetic on decimal columns is refused rather than done in floating point.
    assert_eq!(
        error_of(
            &mut c,
            "SELECT [id] FROM [dbo].[amounts] WHERE [amount] * 2 > 1"
        )
        .await,
        102
    );
    sim.shutdown().await;
}

async fn count_rows(c: &mut Conn, table: &str) -> i32 {
    first_column::<i32>(c, &format!("SELECT COUNT(*) FROM [dbo].[{table}]"), &[]).await[0]
}

#[tokio::test]
async fn a_rowversion_cursor_passed_as_bytes_reads_the_change_feed() {
    let sim = sim().await;
    sim.execute_batch(
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'a'), (2, N'b'), (3, N'c')",
    )
    .await
    .unwrap();
    let mut c = connect(&sim).await;
    let rvs: Vec<Vec<u8>> = c
        .query("SELECT [rv] FROM [dbo].[items] ORDER BY [rv]", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<&[u8], _>(0).unwrap().to_vec())
        .collect();
    assert_eq!(rvs.len(), 3);
    // A varbinary(8) cursor compares with the rowversion byte by byte, as in SQL Server.
    let feed: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE [rv] > @P1 ORDER BY [rv]",
        &[&rvs[0]],
    )
    .await;
    assert_eq!(feed, vec![2, 3]);
    let feed: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE @P1 <= [rv] ORDER BY [rv]",
        &[&rvs[1]],
    )
    .await;
    assert_eq!(feed, vec![2, 3]);
    let feed: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE [rv] > CAST(@P1 AS BINARY(8)) ORDER BY [rv]",
        &[&rvs[1]],
    )
    .await;
    assert_eq!(feed, vec![3]);
    // Hex literals are binary values.
    let hex: String = rvs[1].iter().map(|b| format!("{b:02X}")).collect();
    let feed: Vec<i64> = first_column(
        &mut c,
        &format!("SELECT [id] FROM [dbo].[items] WHERE [rv] >= 0x{hex} ORDER BY [rv]"),
        &[],
    )
    .await;
    assert_eq!(feed, vec![2, 3]);
    let none: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE [rv] > 0xFFFFFFFFFFFFFFFF",
        &[],
    )
    .await;
    assert!(none.is_empty());
    let bytes: Vec<Vec<u8>> = c
        .query("SELECT 0x0102AB AS [b]", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<&[u8], _>("b").unwrap().to_vec())
        .collect();
    assert_eq!(bytes, vec![vec![1u8, 2, 0xAB]]);
    c.execute(
        "UPDATE [dbo].[items] SET [blob] = 0x00FF WHERE [id] = 1",
        &[],
    )
    .await
    .unwrap();
    let ids: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE [blob] = @P1",
        &[&vec![0u8, 255]],
    )
    .await;
    assert_eq!(ids, vec![1]);
    // CAST(… AS BINARY(8)) is a binary value: it matches a BINARY(8) column, and reads back
    // as the number it came from.
    sim.execute_batch(
        "CREATE TABLE [dbo].[cursors] ([name] NVARCHAR(20) NOT NULL PRIMARY KEY, [last_rv] BINARY(8) NULL)",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO [dbo].[cursors] ([name], [last_rv]) VALUES (N'items', CAST(@P1 AS BINARY(8)))",
        &[&258i64],
    )
    .await
    .unwrap();
    let found: Vec<i64> = first_column(
        &mut c,
        "SELECT CAST([last_rv] AS BIGINT) FROM [dbo].[cursors] WHERE [last_rv] = CAST(@P1 AS BINARY(8))",
        &[&258i64],
    )
    .await;
    assert_eq!(found, vec![258]);
    let found: Vec<i64> = first_column(
        &mut c,
        "SELECT CAST([last_rv] AS BIGINT) FROM [dbo].[cursors] WHERE [last_rv] = 0x0000000000000102",
        &[],
    )
    .await;
    assert_eq!(found, vec![258]);
    sim.shutdown().await;
}

#[tokio::test]
async fn error_texts_are_sql_server_s_own() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    sim.execute_batch("CREATE TABLE [dbo].[others] ([id] BIGINT NOT NULL PRIMARY KEY)")
        .await
        .unwrap();
    let cases = [
        (
            "SELECT [nope] FROM [dbo].[items]",
            207,
            "Invalid column name 'nope'.",
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [Missing] = 1",
            207,
            "Invalid column name 'Missing'.",
        ),
        (
            "SELECT i.[nope] FROM [dbo].[items] i",
            207,
            "Invalid column name 'nope'.",
        ),
        (
            "SELECT * FROM [dbo].[missing]",
            208,
            "Invalid object name 'dbo.missing'.",
        ),
        (
            "SELECT [id] FROM [dbo].[items] JOIN [dbo].[others] ON [items].[id] = [others].[id]",
            209,
            "Ambiguous column name 'id'.",
        ),
    ];
    for (sql, number, message) in cases {
        assert_eq!(
            error_message_of(&mut c, sql).await,
            (number, message.to_string()),
            "{sql}"
        );
    }
    for sql in [
        "SELECT [id] FROM [dbo].[items] GROUP BY [id] HAVING [name] = 1 ORDER BY COUNT(*) +",
        "SELECT [id] FROM [dbo].[items] WHERE [id] IN (SELECT [id], [name] FROM [dbo].[items])",
        "SELECT [id] FROM [dbo].[items] WHERE 1 = 1 ORDER BY 5",
    ] {
        let (_, message) = error_message_of(&mut c, sql).await;
        let lower = message.to_lowercase();
        assert!(
            !lower.contains("sqlite") && !lower.contains("no such") && !lower.contains("store"),
            "{sql}: {message}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn use_accepts_the_configured_database_only() {
    let sim = sim().await;
    let mut c = connect(&sim).await;
    run_batch(&mut c, "USE [hubsync]").await;
    run_batch(&mut c, "USE hubsync; SELECT 1").await;
    assert_eq!(
        error_message_of(&mut c, "USE [nope]").await,
        (
            911,
            "Database 'nope' does not exist. Make sure that the name is entered correctly.".into()
        )
    );
    assert_eq!(count_items(&mut c).await, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn text_compares_and_sorts_as_latin1_general_ci_as() {
    let sim = sim().await;
    sim.execute_batch(
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES
            (1, N'Zamora'), (2, N'Álvarez'), (3, N'Alvarez'), (4, N'Azofeifa'), (5, N'Alvarado'),
            (6, N'Ébano'), (7, N'Echeverría'), (8, N'Núñez'), (9, N'Nunez'), (10, N'de la O')",
    )
    .await
    .unwrap();
    let mut c = connect(&sim).await;
    let order: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] ORDER BY [name]",
        &[],
    )
    .await;
    assert_eq!(order, vec![5, 3, 2, 4, 10, 6, 7, 9, 8, 1]);
    for (sql, expected) in [
        // Case-insensitive, accent-sensitive.
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] = N'álvarez'",
            vec![2i64],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] = N'ALVAREZ'",
            vec![3],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] LIKE N'é%'",
            vec![6],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] LIKE N'%ÑEZ' ORDER BY [id]",
            vec![8],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] LIKE N'[a-b]%' ORDER BY [name]",
            vec![5, 3, 2, 4],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] LIKE N'[^a-y]%'",
            vec![1],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] > N'Az' ORDER BY [name]",
            vec![4, 10, 6, 7, 9, 8, 1],
        ),
        (
            "SELECT [id] FROM [dbo].[items] WHERE [name] BETWEEN N'A' AND N'B' ORDER BY [name]",
            vec![5, 3, 2, 4],
        ),
    ] {
        assert_eq!(
            first_column::<i64>(&mut c, sql, &[]).await,
            expected,
            "{sql}"
        );
    }
    let ids: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE [name] LIKE @P1",
        &[&"éBANO"],
    )
    .await;
    assert_eq!(ids, vec![6]);
    // Without a column, a literal and a parameter still compare under the collation.
    let ids: Vec<i64> = first_column(
        &mut c,
        "SELECT [id] FROM [dbo].[items] WHERE @P1 = N'ÁLVAREZ' AND [id] < 3 ORDER BY [id]",
        &[&"álvarez"],
    )
    .await;
    assert_eq!(ids, vec![1, 2]);
    let upper = c
        .query(
            "SELECT UPPER([name]) FROM [dbo].[items] WHERE [id] = 8",
            &[],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("one row");
    assert_eq!(upper.get::<&str, _>(0), Some("NÚÑEZ"));
    sim.shutdown().await;
}

/// The `name` of item `id`, read on `c`.
async fn name_of(c: &mut Conn, id: i64) -> String {
    c.query("SELECT [name] FROM [dbo].[items] WHERE [id] = @P1", &[&id])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("the item exists")
        .get::<&str, _>(0)
        .unwrap()
        .to_string()
}

/// Waits (bounded) until the simulator has `n` client sessions open.
async fn sessions_drop_to(sim: &RunningMssqlSim, n: u64, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while sim.stats().open_sessions != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

const UPDATE_NAME: &str = "UPDATE [dbo].[items] SET [name] = @P1 WHERE [id] = @P2";

/// A simulator (READ_COMMITTED_SNAPSHOT as given) whose `items` are 1 `a` and 2 `b`.
async fn two_items(read_committed_snapshot: bool) -> RunningMssqlSim {
    let sim = sim_rcsi(read_committed_snapshot).await;
    sim.execute_batch("INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'a'), (2, N'b')")
        .await
        .unwrap();
    sim
}

/// A session whose open transaction holds item 1 (renamed `held`).
async fn holding_item_1(sim: &RunningMssqlSim) -> Conn {
    let mut holder = connect(sim).await;
    run_batch(
        &mut holder,
        "BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'held' WHERE [id] = 1",
    )
    .await;
    holder
}

/// Whether `work` is still waiting after 300 ms (polled again later, it goes on).
async fn still_waits<F: std::future::Future + Unpin>(work: &mut F) -> bool {
    tokio::time::timeout(Duration::from_millis(300), work)
        .await
        .is_err()
}

#[tokio::test]
async fn an_update_whose_client_drops_the_connection_while_it_waits_is_not_applied() {
    let sim = sim().await;
    sim.execute_batch("INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'a')")
        .await
        .unwrap();
    let mut holder = holding_item_1(&sim).await;
    let mut waiter = connect(&sim).await;
    let waiting = still_waits(&mut std::pin::pin!(
        waiter.execute(UPDATE_NAME, &[&"cancelled", &1i64])
    ))
    .await;
    assert!(waiting, "the update waits for the held row");
    // What hubsync does when its command timeout fires: the connection is closed.
    drop(waiter);
    assert!(
        sessions_drop_to(&sim, 1, Duration::from_secs(3)).await,
        "the waiting session ends with its connection, not when its statement could go on"
    );
    run_batch(&mut holder, "COMMIT TRANSACTION").await;
    assert_eq!(name_of(&mut holder, 1).await, "held");
    let mut later = connect(&sim).await;
    assert_eq!(name_of(&mut later, 1).await, "held");
    sim.shutdown().await;
}

#[tokio::test]
async fn attention_cancels_a_waiting_update_and_keeps_the_transaction_open() {
    let sim = two_items(false).await;
    let mut holder = holding_item_1(&sim).await;
    let mut waiter = connect(&sim).await;
    run_batch(
        &mut waiter,
        "BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'mine' WHERE [id] = 2",
    )
    .await;
    let waiting = still_waits(&mut std::pin::pin!(
        waiter.execute(UPDATE_NAME, &[&"cancelled", &1i64])
    ))
    .await;
    assert!(waiting, "the update waits for the held row");
    tokio::time::timeout(Duration::from_secs(3), waiter.cancel_query())
        .await
        .expect("the attention is answered while the row is still held")
        .expect("DONE with DONE_ATTN");
    assert_eq!(
        trancount(&mut waiter).await,
        1,
        "the transaction stays open"
    );
    run_batch(&mut holder, "COMMIT TRANSACTION").await;
    assert_eq!(
        name_of(&mut waiter, 1).await,
        "held",
        "the cancelled update is not applied once the row is free"
    );
    assert_eq!(name_of(&mut waiter, 2).await, "mine");
    run_batch(&mut waiter, "ROLLBACK TRANSACTION").await;
    assert_eq!(name_of(&mut holder, 2).await, "b");
    sim.shutdown().await;
}

#[tokio::test]
async fn writers_on_different_rows_commit_while_both_transactions_are_open() {
    let sim = two_items(false).await;
    let mut a = connect(&sim).await;
    let mut b = connect(&sim).await;
    let quick = Duration::from_secs(2);
    // BEGIN takes no lock: both start at once.
    tokio::time::timeout(quick, run_batch(&mut a, "BEGIN TRANSACTION"))
        .await
        .expect("BEGIN in the first session");
    tokio::time::timeout(quick, run_batch(&mut b, "BEGIN TRANSACTION"))
        .await
        .expect("BEGIN in the second session while the first is open");
    tokio::time::timeout(quick, a.execute(UPDATE_NAME, &[&"a2", &1i64]))
        .await
        .expect("the first writer is not blocked")
        .unwrap();
    tokio::time::timeout(quick, b.execute(UPDATE_NAME, &[&"b2", &2i64]))
        .await
        .expect("a writer on another row is not blocked")
        .unwrap();
    assert_eq!(trancount(&mut a).await, 1);
    assert_eq!(trancount(&mut b).await, 1);
    run_batch(&mut b, "COMMIT TRANSACTION").await;
    run_batch(&mut a, "COMMIT TRANSACTION").await;
    let mut c = connect(&sim).await;
    assert_eq!(name_of(&mut c, 1).await, "a2");
    assert_eq!(name_of(&mut c, 2).await, "b2");
    sim.shutdown().await;
}

#[tokio::test]
async fn lock_timeout_answers_1222_and_the_transaction_stays_open() {
    let sim = two_items(false).await;
    let mut holder = holding_item_1(&sim).await;
    let mut waiter = connect(&sim).await;
    run_batch(
        &mut waiter,
        "SET LOCK_TIMEOUT 100; BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'mine' WHERE [id] = 2",
    )
    .await;
    let err = match waiter
        .simple_query("UPDATE [dbo].[items] SET [name] = N'late' WHERE [id] = 1")
        .await
    {
        Ok(stream) => stream.into_results().await.expect_err("the wait times out"),
        Err(e) => e,
    };
    match err {
        tiberius::error::Error::Server(t) => {
            assert_eq!(
                (t.code(), t.class(), t.state(), t.message()),
                (1222, 16, 51, "Lock request time out period exceeded.")
            );
        }
        other => panic!("expected 1222, got {other:?}"),
    }
    assert_eq!(
        trancount(&mut waiter).await,
        1,
        "1222 ends the statement only"
    );
    run_batch(&mut waiter, "COMMIT TRANSACTION").await;
    run_batch(&mut holder, "ROLLBACK TRANSACTION").await;
    assert_eq!(name_of(&mut holder, 1).await, "a");
    assert_eq!(name_of(&mut holder, 2).await, "mine");
    sim.shutdown().await;
}

#[tokio::test]
async fn without_rcsi_a_reader_waits_for_an_uncommitted_row_until_the_writer_commits() {
    let sim = sim_rcsi(false).await;
    sim.execute_batch("INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'a')")
        .await
        .unwrap();
    let mut writer = connect(&sim).await;
    let mut reader = connect(&sim).await;
    run_batch(&mut writer, "BEGIN TRANSACTION").await;
    writer.execute(UPDATE_NAME, &[&"new", &1i64]).await.unwrap();
    assert_eq!(
        name_of(&mut writer, 1).await,
        "new",
        "a session reads its own rows"
    );
    let read = name_of(&mut reader, 1);
    tokio::pin!(read);
    assert!(
        still_waits(&mut read).await,
        "the reader waits while the row is uncommitted"
    );
    run_batch(&mut writer, "COMMIT TRANSACTION").await;
    let seen = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the reader goes on after the commit");
    assert_eq!(seen, "new");
    sim.shutdown().await;
}

#[tokio::test]
async fn with_rcsi_a_reader_sees_the_last_committed_row_without_waiting() {
    let sim = two_items(true).await;
    let mut writer = connect(&sim).await;
    let mut reader = connect(&sim).await;
    run_batch(
        &mut writer,
        "BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'new' WHERE [id] = 1; DELETE FROM [dbo].[items] WHERE [id] = 2; INSERT INTO [dbo].[items] ([id], [name]) VALUES (3, N'c')",
    )
    .await;
    let quick = Duration::from_secs(2);
    let seen = tokio::time::timeout(quick, name_of(&mut reader, 1))
        .await
        .expect("the reader does not wait");
    assert_eq!(seen, "a", "the last committed value");
    let rows = tokio::time::timeout(quick, async {
        reader
            .query("SELECT [name] FROM [dbo].[items] ORDER BY [id]", &[])
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap()
    })
    .await
    .expect("a scan does not wait either");
    let names: Vec<&str> = rows.iter().map(|r| r.get::<&str, _>(0).unwrap()).collect();
    assert_eq!(names, ["a", "b"], "neither the delete nor the insert shows");
    assert_eq!(
        count_items(&mut writer).await,
        2,
        "the writer sees its own changes"
    );
    run_batch(&mut writer, "COMMIT TRANSACTION").await;
    assert_eq!(name_of(&mut reader, 1).await, "new");
    assert_eq!(count_items(&mut reader).await, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_change_whose_transaction_took_its_rowversion_first_and_committed_last_is_read_once() {
    let sim = two_items(true).await;
    // hubsync's change reader (`rowversion_changes` in src/mssql/corpus.sql).
    let reader_sql = "SELECT TOP (@P1) [id], [rv] FROM [dbo].[items] WHERE [rv] > CAST(@P2 AS BINARY(8)) AND [rv] < MIN_ACTIVE_ROWVERSION() ORDER BY [rv]";
    let mut reader = connect(&sim).await;
    let mut cursor = 0u64;
    let mut seen: Vec<i64> = Vec::new();
    let poll = async |reader: &mut Conn, cursor: &mut u64, seen: &mut Vec<i64>| {
        let rows = reader
            .query(reader_sql, &[&100i64, &(*cursor as i64)])
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap();
        for row in &rows {
            seen.push(row.get::<i64, _>("id").unwrap());
            *cursor = rv(row.get::<&[u8], _>("rv"));
        }
        rows.len()
    };
    assert_eq!(poll(&mut reader, &mut cursor, &mut seen).await, 2);
    seen.clear();

    let mut first = connect(&sim).await;
    let mut second = connect(&sim).await;
    run_batch(&mut first, "BEGIN TRANSACTION").await;
    first.execute(UPDATE_NAME, &[&"a2", &1i64]).await.unwrap();
    run_batch(&mut second, "BEGIN TRANSACTION").await;
    second.execute(UPDATE_NAME, &[&"b2", &2i64]).await.unwrap();
    run_batch(&mut second, "COMMIT TRANSACTION").await;
    let rv_of = async |c: &mut Conn, id: i64| {
        rv(
            c.query("SELECT [rv] FROM [dbo].[items] WHERE [id] = @P1", &[&id])
                .await
                .unwrap()
                .into_row()
                .await
                .unwrap()
                .unwrap()
                .get::<&[u8], _>(0),
        )
    };
    let first_rv = rv_of(&mut first, 1).await;
    let second_rv = rv_of(&mut second, 2).await;
    assert!(
        first_rv < second_rv,
        "interleaved: the open transaction took the lower rowversion"
    );
    for _ in 0..3 {
        assert_eq!(
            poll(&mut reader, &mut cursor, &mut seen).await,
            0,
            "the committed later change waits behind the open transaction's rowversion"
        );
    }
    run_batch(&mut first, "COMMIT TRANSACTION").await;
    for _ in 0..3 {
        poll(&mut reader, &mut cursor, &mut seen).await;
    }
    assert_eq!(
        seen,
        [1, 2],
        "each change read exactly once, in rowversion order"
    );
    assert_eq!(cursor, second_rv);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_insert_of_a_key_an_open_transaction_deleted_waits_for_its_outcome() {
    let sim = sim().await;
    sim.execute_batch("INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'a')")
        .await
        .unwrap();
    let mut holder = connect(&sim).await;
    let mut inserter = connect(&sim).await;
    run_batch(
        &mut holder,
        "BEGIN TRANSACTION; DELETE FROM [dbo].[items] WHERE [id] = 1",
    )
    .await;
    let insert = error_of(
        &mut inserter,
        "INSERT INTO [dbo].[items] ([id], [name]) VALUES (1, N'again')",
    );
    tokio::pin!(insert);
    assert!(
        still_waits(&mut insert).await,
        "the key is not free while the delete is uncommitted"
    );
    run_batch(&mut holder, "ROLLBACK TRANSACTION").await;
    assert_eq!(insert.await, 2627, "the rolled-back delete kept the key");
    assert_eq!(name_of(&mut holder, 1).await, "a");
    sim.shutdown().await;
}

#[tokio::test]
async fn crossed_waits_make_one_transaction_the_deadlock_victim() {
    let sim = two_items(false).await;
    let mut a = connect(&sim).await;
    let mut b = connect(&sim).await;
    run_batch(
        &mut a,
        "BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'a1' WHERE [id] = 1",
    )
    .await;
    run_batch(
        &mut b,
        "BEGIN TRANSACTION; UPDATE [dbo].[items] SET [name] = N'b2' WHERE [id] = 2",
    )
    .await;
    let mut first = Box::pin(a.execute(
        "UPDATE [dbo].[items] SET [name] = N'a2' WHERE [id] = 2",
        &[],
    ));
    assert!(still_waits(&mut first).await, "a waits for b's row");
    // b closes the cycle: b is the victim, its transaction rolled back, and a goes on.
    assert_eq!(
        error_of(
            &mut b,
            "UPDATE [dbo].[items] SET [name] = N'b1' WHERE [id] = 1"
        )
        .await,
        1205
    );
    assert_eq!(trancount(&mut b).await, 0);
    let done = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("a goes on once the victim is rolled back")
        .unwrap();
    assert_eq!(done.total(), 1);
    run_batch(&mut a, "COMMIT TRANSACTION").await;
    assert_eq!(name_of(&mut b, 1).await, "a1");
    assert_eq!(name_of(&mut b, 2).await, "a2");
    sim.shutdown().await;
}
