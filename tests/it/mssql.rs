//! The SQL Server adapter (change reader, writer, pool) against the in-process TDS simulator, or
//! against a real SQL Server when `HUBSYNC_TEST_MSSQL` holds an ADO.NET connection string.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hubsync::mssql::{
    ChangeCursor, ChangeKind, ChangeReader, RowChange, RowOutcome, RowWrite, SqlObject,
    SqlObjectSettings, SqlPool, SqlRow, SqlServerSettings, SqlWriter,
};
use hubsync::sim::mssql::{MssqlSimOptions, RunningMssqlSim};
use secrecy::SecretString;
use serde_json::{Value, json};

static NEXT_TABLE: AtomicU32 = AtomicU32::new(0);

/// The server under test: a fresh simulator, or the real server of `HUBSYNC_TEST_MSSQL`.
struct Target {
    sim: Option<RunningMssqlSim>,
    connection: String,
    /// Tables created by this test (dropped at the end on a real server).
    tables: Vec<String>,
    pool: SqlPool,
}

impl Target {
    async fn start() -> Self {
        let (sim, connection) = match crate::sql_target::real_server() {
            Some(conn) => (None, conn),
            None => {
                let sim = hubsync::sim::mssql::start(
                    "127.0.0.1:0".parse().expect("addr"),
                    MssqlSimOptions::default(),
                )
                .await
                .expect("start the SQL Server simulator");
                let conn = sim.connection_string();
                (Some(sim), conn)
            }
        };
        let pool = SqlPool::new(&settings(&connection)).expect("pool");
        Self {
            sim,
            connection,
            tables: Vec::new(),
            pool,
        }
    }

    /// Prints why a simulator-only test does nothing on a real server.
    fn sim_only(&self, what: &str) -> Option<&RunningMssqlSim> {
        if self.sim.is_none() {
            crate::sql_target::skipped_on_real_server(what);
        }
        self.sim.as_ref()
    }

    /// Runs setup SQL as a client would (one SQL batch per statement).
    async fn exec(&self, sql: &str) {
        let mut conn = self.pool.get_once().await.expect("connection");
        conn.batch(sql)
            .await
            .unwrap_or_else(|e| panic!("setup `{sql}`: {e}"));
    }

    /// A unique table name `dbo.it_<base>_<n>` created from `columns`.
    async fn table(&mut self, base: &str, columns: &str) -> String {
        let name = format!(
            "it_{base}_{}_{}",
            std::process::id(),
            NEXT_TABLE.fetch_add(1, Ordering::Relaxed)
        );
        self.exec(&format!("CREATE TABLE [dbo].[{name}] ({columns})"))
            .await;
        self.tables.push(name.clone());
        format!("dbo.{name}")
    }

    /// The default contact-like table with a rowversion column.
    async fn contacts(&mut self) -> String {
        self.table("contacts", CONTACT_COLUMNS).await
    }

    async fn finish(mut self) {
        if let Some(sim) = self.sim.take() {
            // Its tables go with it.
            self.tables.clear();
            sim.shutdown().await;
        }
    }
}

impl Drop for Target {
    /// A real server keeps none of the test's tables, whether the test passed or not.
    fn drop(&mut self) {
        if self.sim.is_none() && !self.tables.is_empty() {
            let tables: Vec<String> = self.tables.iter().map(|t| format!("[dbo].[{t}]")).collect();
            crate::sql_target::drop_tables(&self.connection, &tables);
        }
    }
}

const CONTACT_COLUMNS: &str = "[numero_asociado] INT NOT NULL PRIMARY KEY, \
    [nombre] NVARCHAR(20) NOT NULL, [email] NVARCHAR(100) NULL UNIQUE, \
    [saldo] DECIMAL(12,2) NULL, [nacimiento] DATE NULL, [activo] BIT NOT NULL DEFAULT 1, \
    [hubspot_id] NVARCHAR(20) NULL, [modificado] DATETIME2 NULL, [rv] ROWVERSION";

fn settings(connection: &str) -> SqlServerSettings {
    SqlServerSettings {
        connection: Some(SecretString::from(connection.to_string())),
        pool_size: 3,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(20),
        retry_max_elapsed: Duration::from_secs(10),
        deadlock_retries: 3,
        ..SqlServerSettings::default()
    }
}

fn object(table: &str, yaml_extra: &str) -> SqlObject {
    let yaml = format!("table: {table}\nkey: numero_asociado\n{yaml_extra}");
    serde_yaml::from_str::<SqlObjectSettings>(&yaml)
        .expect("settings yaml")
        .validate()
        .unwrap_or_else(|p| panic!("settings: {:?}", p.into_vec()))
}

const ROWVERSION: &str = "change_detection: {mode: rowversion, column: rv}\npage_size: 10\n";

/// `INSERT` of contacts `from..=to` with modification time `modificado`.
fn insert_sql(table: &str, from: u32, to: u32, modificado: &str) -> String {
    let values: Vec<String> = (from..=to)
        .map(|i| {
            format!(
                "({i}, N'Socio {i}', N'socio{i}@coop.cr', {i}.50, '1990-01-{:02}', 1, '{modificado}')",
                i % 28 + 1
            )
        })
        .collect();
    format!(
        "INSERT INTO [{}] ([numero_asociado], [nombre], [email], [saldo], [nacimiento], [activo], [modificado]) VALUES {}",
        table.replace('.', "].["),
        values.join(", ")
    )
}

/// Reads a whole poll, returning every change and the last stored cursor.
async fn drain(
    reader: &ChangeReader,
    cursor: Option<ChangeCursor>,
) -> (Vec<RowChange>, Option<ChangeCursor>) {
    let mut poll = reader.poll(cursor.clone());
    let mut all = Vec::new();
    let mut last = cursor;
    while let Some(page) = poll.next_page().await.expect("read page") {
        all.extend(page.changes);
        last = Some(page.cursor);
    }
    (all, last)
}

fn keys(changes: &[RowChange]) -> Vec<String> {
    changes.iter().map(|c| c.key.clone()).collect()
}

fn range(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn rowversion_reader_returns_each_change_once_in_order_and_resumes_from_a_stored_cursor() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 25, "2024-03-09T10:00:00"))
        .await;
    let reader = ChangeReader::new(t.pool.clone(), object(&table, ROWVERSION));

    // First page only, then "restart": a new reader from the cursor's JSON.
    let mut poll = reader.poll(None);
    let page = poll.next_page().await.expect("page").expect("rows");
    assert_eq!(keys(&page.changes), range(1, 10));
    let stored = page.cursor.to_json();
    drop(poll);
    let reader = ChangeReader::new(t.pool.clone(), object(&table, ROWVERSION));
    let (rest, cursor) = drain(&reader, Some(ChangeCursor::from_json(&stored).unwrap())).await;
    assert_eq!(keys(&rest), range(11, 25));
    let versions: Vec<&String> = rest.iter().map(|c| &c.version).collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "rowversion order");

    // Nothing new: nothing read. Then updates come out once, in update order.
    let (none, cursor) = drain(&reader, cursor).await;
    assert!(none.is_empty());
    for k in [7, 3, 20] {
        t.exec(&format!(
            "UPDATE [{}] SET [nombre] = N'Cambiado {k}' WHERE [numero_asociado] = {k}",
            table.replace('.', "].[")
        ))
        .await;
    }
    let (updated, _) = drain(&reader, cursor).await;
    assert_eq!(keys(&updated), ["7", "3", "20"]);
    assert_eq!(updated[1].row["nombre"], json!("Cambiado 3"));
    assert!(updated.iter().all(|c| c.kind == ChangeKind::Upsert));
    t.finish().await;
}

#[tokio::test]
async fn rows_are_typed_as_the_mapping_contract_says() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 1, "2024-03-09T10:15:30.1234567"))
        .await;
    let reader = ChangeReader::new(t.pool.clone(), object(&table, ROWVERSION));
    let (changes, _) = drain(&reader, None).await;
    let row = &changes[0].row;
    assert_eq!(row["numero_asociado"], json!(1));
    assert_eq!(row["nombre"], json!("Socio 1"));
    assert_eq!(row["saldo"], json!("1.50"));
    assert_eq!(row["nacimiento"], json!("1990-01-02"));
    assert_eq!(row["activo"], json!(true));
    assert_eq!(row["hubspot_id"], Value::Null);
    assert_eq!(row["modificado"], json!("2024-03-09T10:15:30.1234567"));
    let rv = row["rv"].as_str().expect("rv is a string");
    assert!(rv.starts_with("0x") && rv.len() == 18, "{rv}");
    assert_eq!(changes[0].version, rv);
    t.finish().await;
}

#[tokio::test]
async fn a_row_of_a_transaction_open_during_the_read_is_not_skipped_after_it_commits() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 1, "2024-03-09T10:00:00"))
        .await;
    let reader = ChangeReader::new(t.pool.clone(), object(&table, ROWVERSION));

    let mut writer = t.pool.get_once().await.expect("second session");
    writer.batch("BEGIN TRANSACTION").await.expect("begin");
    writer
        .batch(&insert_sql(&table, 2, 2, "2024-03-09T10:00:00"))
        .await
        .expect("insert in open transaction");
    // Under locking READ COMMITTED (a real server's default, and the simulator's) the read waits
    // on the open row: read concurrently and commit.
    let r = reader.clone();
    let read = tokio::spawn(async move { drain(&r, None).await });
    writer.batch("COMMIT TRANSACTION").await.expect("commit");
    let (first, cursor) = read.await.expect("read task");
    let (second, _) = drain(&reader, cursor.clone()).await;
    drop(writer);
    assert!(cursor.is_some());
    let mut all = keys(&first);
    all.extend(keys(&second));
    assert_eq!(all, ["1", "2"], "each row exactly once, in order");
    t.finish().await;
}

fn modified_at(overlap: &str) -> String {
    format!(
        "change_detection: {{mode: modified_at, column: modificado, overlap: {overlap}}}\npage_size: 4\n"
    )
}

#[tokio::test]
async fn modified_at_reader_pages_through_equal_timestamps_without_skips_or_repeats() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    // Ten rows share one timestamp, across page boundaries (page size 4).
    t.exec(&insert_sql(&table, 1, 10, "2024-03-09T10:00:00"))
        .await;
    t.exec(&insert_sql(&table, 11, 13, "2024-03-09T10:05:00"))
        .await;
    let reader = ChangeReader::new(t.pool.clone(), object(&table, &modified_at("0s")));
    let (all, cursor) = drain(&reader, None).await;
    assert_eq!(keys(&all), range(1, 13));
    assert_eq!(
        cursor.as_ref().map(ChangeCursor::to_json),
        Some(json!({"mode": "modified_at", "modified_at": "2024-03-09T10:05:00", "key": 13}))
    );
    assert_eq!(all[0].version, "2024-03-09T10:00:00");
    assert_eq!(
        all[0].modified_utc.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-03-09T16:00:00+00:00"),
        "Costa Rica is UTC-6"
    );
    // With no overlap, a second poll resumes right after the stored (modified_at, key).
    t.exec(&insert_sql(&table, 14, 14, "2024-03-09T10:06:00"))
        .await;
    let (next, _) = drain(&reader, cursor).await;
    assert_eq!(keys(&next), ["14"]);
    t.finish().await;
}

#[tokio::test]
async fn modified_at_overlap_catches_a_late_commit_with_an_older_timestamp() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 3, "2024-03-09T10:00:00"))
        .await;
    let with_overlap = ChangeReader::new(t.pool.clone(), object(&table, &modified_at("5m")));
    let without = ChangeReader::new(t.pool.clone(), object(&table, &modified_at("0s")));
    let (_, cursor) = drain(&with_overlap, None).await;
    // A transaction stamped 09:58 commits only now.
    t.exec(&insert_sql(&table, 4, 4, "2024-03-09T09:58:00"))
        .await;
    let (missed, _) = drain(&without, cursor.clone()).await;
    assert!(
        !keys(&missed).contains(&"4".to_string()),
        "without overlap the late row is missed"
    );
    let (caught, after) = drain(&with_overlap, cursor.clone()).await;
    assert!(
        keys(&caught).contains(&"4".to_string()),
        "{:?}",
        keys(&caught)
    );
    assert_eq!(
        after, cursor,
        "re-reading the overlap never moves the cursor back"
    );
    t.finish().await;
}

#[tokio::test]
async fn soft_deletes_become_archive_changes_and_reconciliation_finds_hard_deletes() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 12, "2024-03-09T10:00:00"))
        .await;
    let obj = object(
        &table,
        &format!("{ROWVERSION}soft_delete: {{column: activo, deleted_when: 'false'}}\n"),
    );
    let reader = ChangeReader::new(t.pool.clone(), obj);
    let (_, cursor) = drain(&reader, None).await;
    let quoted = table.replace('.', "].[");
    t.exec(&format!(
        "UPDATE [{quoted}] SET [activo] = 0 WHERE [numero_asociado] = 5"
    ))
    .await;
    let (changes, _) = drain(&reader, cursor).await;
    assert_eq!(keys(&changes), ["5"]);
    assert_eq!(changes[0].kind, ChangeKind::Archive);

    t.exec(&format!(
        "DELETE FROM [{quoted}] WHERE [numero_asociado] = 3 OR [numero_asociado] = 11"
    ))
    .await;
    let known: BTreeSet<String> = range(1, 12).into_iter().chain(["99".into()]).collect();
    let missing = reader.missing_keys(&known).await.expect("reconcile");
    assert_eq!(missing, ["11", "3", "99"]);
    assert_eq!(
        reader.row_by_key("4").await.expect("read").expect("row 4")["nombre"],
        json!("Socio 4")
    );
    assert!(reader.row_by_key("3").await.expect("no row").is_none());
    let wanted: Vec<String> = ["4", "3", "1", "99"].map(String::from).into();
    let rows = reader.rows_by_keys(&wanted).await.expect("read rows");
    let found: std::collections::BTreeMap<&String, &Value> =
        rows.iter().map(|(k, r)| (k, &r["nombre"])).collect();
    let expected = [("1", json!("Socio 1")), ("4", json!("Socio 4"))];
    assert_eq!(found.len(), 2, "{found:?}");
    for (key, name) in &expected {
        assert_eq!(found.get(&key.to_string()), Some(&name), "row {key}");
    }
    t.finish().await;
}

fn changes(pairs: &[(&str, Value)]) -> SqlRow {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn update(key: u32, pairs: &[(&str, Value)]) -> RowWrite {
    RowWrite {
        key: Some(key.to_string()),
        changes: changes(pairs),
        hubspot_id: None,
        ..RowWrite::default()
    }
}

#[tokio::test]
async fn an_update_decided_on_a_row_that_changed_since_is_not_applied() {
    guarded_update_refused_after_an_edit(ROWVERSION).await;
}

#[tokio::test]
async fn with_change_tracking_an_update_decided_on_a_row_that_changed_since_is_not_applied() {
    guarded_update_refused_after_an_edit(
        "change_detection: {mode: change_tracking}\npage_size: 10\n",
    )
    .await;
}

/// Two rows read, one edited by someone else, both written guarded by the version read: the
/// edited one is left alone (`Changed`), the other written.
async fn guarded_update_refused_after_an_edit(detection: &str) {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    if detection.contains("change_tracking") {
        // On a real server the database may have change tracking on already (5088).
        let mut conn = t.pool.get_once().await.expect("connection");
        if let Err(e) = conn
            .batch("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON")
            .await
        {
            assert_eq!(e.number(), Some(5088), "{e}");
        }
        drop(conn);
        t.exec(&format!(
            "ALTER TABLE [{}] ENABLE CHANGE_TRACKING",
            table.replace('.', "].[")
        ))
        .await;
    }
    t.exec(&insert_sql(&table, 1, 2, "2024-03-09T10:00:00"))
        .await;
    let obj = object(&table, detection);
    let (reader, writer) = (
        ChangeReader::new(t.pool.clone(), obj.clone()),
        SqlWriter::new(t.pool.clone(), obj),
    );
    let read = |k: &'static str| {
        let r = reader.clone();
        async move { r.row_by_key(k).await.expect("read").expect("row") }
    };
    let (one, two) = (read("1").await, read("2").await);
    // Someone edits row 1 after it was read.
    t.exec(&format!(
        "UPDATE {table} SET [nombre] = N'Editado' WHERE [numero_asociado] = 1"
    ))
    .await;
    let guarded = |k: u32, row: &SqlRow| RowWrite {
        unchanged_since: reader.rowversion_of(row),
        ..update(k, &[("nombre", json!("Desde HubSpot"))])
    };
    let report = writer
        .apply(&[guarded(1, &one), guarded(2, &two)])
        .await
        .expect("batch");
    assert_eq!(report.outcomes[0], RowOutcome::Changed { key: "1".into() });
    assert_eq!(report.outcomes[1], RowOutcome::Updated { key: "2".into() });
    assert_eq!(read("1").await["nombre"], json!("Editado"));
    assert_eq!(read("2").await["nombre"], json!("Desde HubSpot"));
}

#[tokio::test]
async fn writer_applies_good_rows_and_reports_the_bad_row_with_its_error_number() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 5, "2024-03-09T10:00:00"))
        .await;
    let obj = object(
        &table,
        &format!("{ROWVERSION}hubspot_id_column: hubspot_id\n"),
    );
    let writer = SqlWriter::new(t.pool.clone(), obj.clone());
    let batch = vec![
        update(1, &[("nombre", json!("Ana")), ("saldo", json!("99.95"))]),
        // Duplicate of row 3's email: UNIQUE violation.
        update(2, &[("email", json!("socio3@coop.cr"))]),
        // Longer than NVARCHAR(20): truncation.
        update(3, &[("nombre", json!("A name far longer than twenty"))]),
        update(
            4,
            &[
                ("nacimiento", json!("2001-12-31")),
                ("activo", json!(false)),
            ],
        ),
        update(77, &[("nombre", json!("Nadie"))]),
        update(5, &[("fecha", json!("2001-12-31"))]),
        RowWrite {
            key: Some("5".into()),
            changes: SqlRow::new(),
            hubspot_id: Some("hs-555".into()),
            ..RowWrite::default()
        },
    ];
    let report = writer.apply(&batch).await.expect("batch");
    assert_eq!(report.outcomes[0], RowOutcome::Updated { key: "1".into() });
    let failure = |i: usize| match &report.outcomes[i] {
        RowOutcome::Failed(f) => f.clone(),
        other => panic!("row {i}: {other:?}"),
    };
    assert_eq!(failure(1).number, Some(2627), "{:?}", failure(1));
    assert!(
        matches!(failure(2).number, Some(2628) | Some(8152)),
        "{:?}",
        failure(2)
    );
    assert_eq!(report.outcomes[3], RowOutcome::Updated { key: "4".into() });
    assert_eq!(failure(4).number, None);
    assert!(failure(4).message.contains("no row"), "{:?}", failure(4));
    assert!(
        failure(5).message.contains("no column fecha"),
        "{:?}",
        failure(5)
    );
    assert_eq!(report.outcomes[6], RowOutcome::Updated { key: "5".into() });

    let reader = ChangeReader::new(t.pool.clone(), obj);
    let row = |k: &'static str| {
        let r = reader.clone();
        async move { r.row_by_key(k).await.expect("read").expect("row") }
    };
    let r1 = row("1").await;
    assert_eq!(
        (&r1["nombre"], &r1["saldo"]),
        (&json!("Ana"), &json!("99.95"))
    );
    assert_eq!(row("2").await["email"], json!("socio2@coop.cr"));
    assert_eq!(row("3").await["nombre"], json!("Socio 3"));
    let r4 = row("4").await;
    assert_eq!(
        (&r4["nacimiento"], &r4["activo"]),
        (&json!("2001-12-31"), &json!(false))
    );
    assert_eq!(row("5").await["hubspot_id"], json!("hs-555"));
    t.finish().await;
}

#[tokio::test]
async fn writer_inserts_new_hubspot_records_only_when_the_policy_says_insert() {
    let mut t = Target::start().await;
    let table = t
        .table(
            "nuevos",
            "[numero_asociado] INT IDENTITY(1,1) PRIMARY KEY, [nombre] NVARCHAR(50) NOT NULL, \
             [hubspot_id] NVARCHAR(20) NULL, [rv] ROWVERSION",
        )
        .await;
    let new = RowWrite {
        key: None,
        changes: changes(&[("nombre", json!("Nueva"))]),
        hubspot_id: Some("hs-1".into()),
        ..RowWrite::default()
    };
    let ignoring = SqlWriter::new(
        t.pool.clone(),
        object(
            &table,
            &format!("{ROWVERSION}hubspot_id_column: hubspot_id\n"),
        ),
    );
    let report = ignoring
        .apply(std::slice::from_ref(&new))
        .await
        .expect("ignore");
    assert_eq!(report.outcomes, [RowOutcome::Skipped]);

    let obj = object(
        &table,
        &format!("{ROWVERSION}hubspot_id_column: hubspot_id\non_new_hubspot_record: insert\n"),
    );
    let writer = SqlWriter::new(t.pool.clone(), obj.clone());
    let missing_name = RowWrite {
        key: None,
        changes: changes(&[("nombre", Value::Null)]),
        hubspot_id: None,
        ..RowWrite::default()
    };
    let report = writer.apply(&[new, missing_name]).await.expect("insert");
    let RowOutcome::Inserted { key } = &report.outcomes[0] else {
        panic!("{:?}", report.outcomes);
    };
    match &report.outcomes[1] {
        RowOutcome::Failed(f) => assert_eq!(f.number, Some(515), "{f:?}"),
        other => panic!("{other:?}"),
    }
    let row = ChangeReader::new(t.pool.clone(), obj)
        .row_by_key(key)
        .await
        .expect("read")
        .expect("inserted row");
    assert_eq!(
        (&row["nombre"], &row["hubspot_id"]),
        (&json!("Nueva"), &json!("hs-1"))
    );
    t.finish().await;
}

#[tokio::test]
async fn hostile_identifiers_are_refused_and_hostile_values_are_stored_verbatim() {
    for (field, yaml) in [
        (
            "sql.table",
            "table: 'dbo.x]; DROP TABLE y; --'\nkey: id\nchange_detection: {mode: rowversion, column: rv}\n",
        ),
        (
            "sql.key",
            "table: dbo.x\nkey: 'id]=1 OR 1=1--'\nchange_detection: {mode: rowversion, column: rv}\n",
        ),
        (
            "sql.change_detection.column",
            "table: dbo.x\nkey: id\nchange_detection: {mode: rowversion, column: 'rv; SHUTDOWN'}\n",
        ),
    ] {
        let s: SqlObjectSettings = serde_yaml::from_str(yaml).expect("yaml");
        let problems = s
            .validate()
            .expect_err("hostile identifier accepted")
            .into_vec();
        assert!(
            problems.iter().any(|p| p.path == field),
            "{field}: {problems:?}"
        );
    }

    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 2, "2024-03-09T10:00:00"))
        .await;
    let obj = object(&table, ROWVERSION);
    let writer = SqlWriter::new(t.pool.clone(), obj.clone());
    let hostile = [
        "Robert'); DROP TABLE x;--",
        "]; DELETE FROM [dbo].[t]; --",
        "N'' + CHAR(0) @P1 ünïcødé ñ 🙂",
    ];
    let report = writer
        .apply(&[
            update(1, &[("nombre", json!(hostile[0][..20]))]),
            update(
                2,
                &[("email", json!(format!("{}{}", hostile[1], hostile[2])))],
            ),
            update(2, &[("nombre]; DROP TABLE x; --", json!("x"))]),
        ])
        .await
        .expect("batch");
    assert_eq!(report.outcomes[0], RowOutcome::Updated { key: "1".into() });
    assert_eq!(report.outcomes[1], RowOutcome::Updated { key: "2".into() });
    match &report.outcomes[2] {
        RowOutcome::Failed(f) => {
            assert!(f.number.is_none() && f.message.contains("refused"), "{f:?}")
        }
        other => panic!("hostile column accepted: {other:?}"),
    }
    let reader = ChangeReader::new(t.pool.clone(), obj);
    let r1 = reader.row_by_key("1").await.expect("read").expect("row 1");
    assert_eq!(r1["nombre"], json!(hostile[0][..20]));
    let r2 = reader.row_by_key("2").await.expect("read").expect("row 2");
    assert_eq!(r2["email"], json!(format!("{}{}", hostile[1], hostile[2])));
    t.finish().await;
}

#[tokio::test]
async fn writer_retries_a_batch_chosen_as_deadlock_victim() {
    let mut t = Target::start().await;
    if t.sim_only("deadlock retry").is_none() {
        return t.finish().await;
    }
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 2, "2024-03-09T10:00:00"))
        .await;
    if let Some(sim) = &t.sim {
        sim.deadlock_next_writes(1);
    }
    let obj = object(&table, ROWVERSION);
    let writer = SqlWriter::new(t.pool.clone(), obj.clone());
    let report = writer
        .apply(&[
            update(1, &[("nombre", json!("Uno"))]),
            update(2, &[("nombre", json!("Dos"))]),
        ])
        .await
        .expect("batch after deadlock retry");
    assert_eq!(report.attempts, 2);
    assert!(report.failures().next().is_none(), "{report:?}");
    let reader = ChangeReader::new(t.pool.clone(), obj);
    for (k, v) in [("1", "Uno"), ("2", "Dos")] {
        let row = reader.row_by_key(k).await.expect("read").expect("row");
        assert_eq!(row["nombre"], json!(v));
    }
    t.finish().await;
}

#[tokio::test]
async fn the_pool_reconnects_after_the_server_drops_every_connection() {
    let mut t = Target::start().await;
    if t.sim_only("dropping connections").is_none() {
        return t.finish().await;
    }
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 3, "2024-03-09T10:00:00"))
        .await;
    let reader = ChangeReader::new(t.pool.clone(), object(&table, ROWVERSION));
    t.pool.probe().await.expect("ready");
    let (before, cursor) = drain(&reader, None).await;
    assert_eq!(keys(&before), range(1, 3));
    if let Some(sim) = &t.sim {
        sim.drop_connections();
    }
    t.exec(&insert_sql(&table, 4, 4, "2024-03-09T10:00:00"))
        .await;
    let (after, cursor) = drain(&reader, cursor).await;
    assert_eq!(keys(&after), ["4"]);

    // Dropped again and refusing logins for a while: the read retries with backoff until the
    // server takes logins again, and loses nothing.
    t.exec(&insert_sql(&table, 5, 5, "2024-03-09T10:00:00"))
        .await;
    let connections = t.sim.as_ref().map(|s| s.stats().connections).unwrap_or(0);
    if let Some(sim) = &t.sim {
        sim.drop_connections();
        sim.refuse_logins_for(Duration::from_millis(300));
    }
    let probe = t.pool.probe().await;
    assert!(
        probe.as_ref().is_err_and(|e| e.is_transient()),
        "readiness is false while logins are refused: {probe:?}"
    );
    let (after, _) = drain(&reader, cursor).await;
    assert_eq!(keys(&after), ["5"]);
    let reconnects = t.sim.as_ref().map(|s| s.stats().connections).unwrap_or(0) - connections;
    assert!(
        reconnects >= 2,
        "refused attempts and the successful one: {reconnects}"
    );
    t.pool.probe().await.expect("ready again");
    t.finish().await;
}

#[tokio::test]
async fn readiness_probe_reports_an_unreachable_server_without_the_password() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let conn = format!("server=tcp:127.0.0.1,{port};user=sa;password=Very$ecret1;encrypt=true");
    let pool = SqlPool::new(&settings(&conn)).expect("pool");
    let err = pool.probe().await.expect_err("nothing listens there");
    let text = err.to_string();
    assert!(err.is_transient(), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("Very$ecret1"), "{text}");
    assert!(!format!("{pool:?}").contains("Very$ecret1"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_login_failed() {
    let t = Target::start().await;
    assert!(!crate::sql_target::password_of(&t.connection).is_empty());
    let wrong = t
        .connection
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if crate::sql_target::is_password_key(k) => {
                format!("{k}=not-the-password")
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";");
    assert_ne!(wrong, t.connection);
    let pool = SqlPool::new(&settings(&wrong)).expect("pool");
    let err = pool.probe().await.expect_err("wrong password");
    assert_eq!(err.number(), Some(18456), "{err}");
    assert!(!err.to_string().contains("password"), "{err}");
    t.finish().await;
}

#[tokio::test]
async fn when_a_row_error_ends_the_transaction_the_batch_replays_without_that_row() {
    let mut t = Target::start().await;
    let table = t.contacts().await;
    t.exec(&insert_sql(&table, 1, 3, "2024-03-09T10:00:00"))
        .await;
    // One connection, with XACT_ABORT ON as a server's user options may set it: any error rolls
    // the whole transaction back.
    let pool = SqlPool::new(&SqlServerSettings {
        pool_size: 1,
        ..settings(&t.connection)
    })
    .expect("pool");
    pool.get_once()
        .await
        .expect("connection")
        .batch("SET XACT_ABORT ON")
        .await
        .expect("set xact_abort");
    let obj = object(&table, ROWVERSION);
    let writer = SqlWriter::new(pool.clone(), obj.clone());
    let report = writer
        .apply(&[
            update(1, &[("nombre", json!("Uno"))]),
            update(2, &[("email", json!("socio3@coop.cr"))]),
            update(3, &[("nombre", json!("Tres"))]),
        ])
        .await
        .expect("batch");
    assert_eq!(report.attempts, 2, "{report:?}");
    assert_eq!(report.outcomes[0], RowOutcome::Updated { key: "1".into() });
    assert!(
        matches!(&report.outcomes[1], RowOutcome::Failed(f) if f.number == Some(2627)),
        "{report:?}"
    );
    assert_eq!(report.outcomes[2], RowOutcome::Updated { key: "3".into() });
    let reader = ChangeReader::new(t.pool.clone(), obj);
    for (k, v) in [("1", "Uno"), ("3", "Tres")] {
        let row = reader.row_by_key(k).await.expect("read").expect("row");
        assert_eq!(row["nombre"], json!(v));
    }
    let row2 = reader.row_by_key("2").await.expect("read").expect("row");
    assert_eq!(row2["email"], json!("socio2@coop.cr"));
    t.finish().await;
}
