//! Change tracking in the SQL Server simulator, driven with tiberius: enabling it (and SQL
//! Server's refusals), CHANGETABLE(CHANGES …) with operations relative to the version asked,
//! versions given at commit, contexts, OBJECT_ID and the minimum valid version after cleanup.

use hubsync::sim::mssql::RunningMssqlSim;

use hubsync::sim::mssql::MssqlSimOptions;

use super::mssql_sim::{Conn, connect, error_of, run_batch};

async fn version(c: &mut Conn, sql: &str) -> Option<i64> {
    let row = c
        .query(sql, &[])
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row")
        .expect("one row");
    row.get::<i64, _>(0)
}

/// (key, operation, version, creation version, context) of `CHANGES members, since`.
async fn changes(
    c: &mut Conn,
    since: i64,
) -> Vec<(i64, String, i64, Option<i64>, Option<Vec<u8>>)> {
    let rows = c
        .query(
            "SELECT [ct].[id], [ct].[SYS_CHANGE_OPERATION], [ct].[SYS_CHANGE_VERSION], \
             [ct].[SYS_CHANGE_CREATION_VERSION], [ct].[SYS_CHANGE_CONTEXT] \
             FROM CHANGETABLE(CHANGES [dbo].[members], @P1) AS [ct] ORDER BY [ct].[id]",
            &[&since],
        )
        .await
        .expect("changes")
        .into_first_result()
        .await
        .expect("rows");
    rows.iter()
        .map(|r| {
            (
                r.get::<i64, _>(0).expect("key"),
                r.get::<&str, _>(1).expect("operation").to_string(),
                r.get::<i64, _>(2).expect("version"),
                r.get::<i64, _>(3),
                r.get::<&[u8], _>(4).map(<[u8]>::to_vec),
            )
        })
        .collect()
}

/// A simulator with `dbo.members`; `snapshot`: READ_COMMITTED_SNAPSHOT on (readers see the
/// last committed rows instead of waiting for another session's open transaction).
async fn tracked_sim(snapshot: bool) -> (RunningMssqlSim, Conn) {
    let sim = hubsync::sim::mssql::start(
        "127.0.0.1:0".parse().expect("address"),
        MssqlSimOptions {
            read_committed_snapshot: snapshot,
            ..MssqlSimOptions::default()
        },
    )
    .await
    .expect("start the SQL Server simulator");
    let mut c = connect(&sim).await;
    run_batch(
        &mut c,
        "CREATE TABLE [dbo].[members] ([id] BIGINT NOT NULL PRIMARY KEY, [name] NVARCHAR(40) NULL)",
    )
    .await;
    (sim, c)
}

#[tokio::test]
async fn change_tracking_is_refused_until_enabled_and_needs_a_primary_key() {
    let (_sim, mut c) = tracked_sim(false).await;
    assert_eq!(
        version(&mut c, "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS [v]").await,
        None,
        "NULL while the database has change tracking off"
    );
    let enable = "ALTER TABLE [dbo].[members] ENABLE CHANGE_TRACKING";
    assert_eq!(error_of(&mut c, enable).await, 4996);
    assert_eq!(
        error_of(
            &mut c,
            "SELECT [id] FROM CHANGETABLE(CHANGES [dbo].[members], 0) AS [ct]"
        )
        .await,
        22105
    );
    run_batch(&mut c, "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)").await;
    assert_eq!(
        error_of(&mut c, "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON").await,
        5088
    );
    run_batch(&mut c, "CREATE TABLE [dbo].[nokey] ([a] INT NULL)").await;
    assert_eq!(
        error_of(&mut c, "ALTER TABLE [dbo].[nokey] ENABLE CHANGE_TRACKING").await,
        4997
    );
    run_batch(
        &mut c,
        "ALTER TABLE [dbo].[members] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF)",
    )
    .await;
    assert_eq!(error_of(&mut c, enable).await, 4999);
    assert_eq!(
        version(
            &mut c,
            "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(N'dbo.nokey')) AS [v]"
        )
        .await,
        None,
        "no minimum valid version for a table without change tracking"
    );
    // The version must be a parameter, a literal or NULL.
    assert_eq!(
        error_of(
            &mut c,
            "SELECT [id] FROM CHANGETABLE(CHANGES [dbo].[members], 1 + 1) AS [ct]"
        )
        .await,
        102
    );
}

#[tokio::test]
async fn changetable_reports_each_key_s_last_committed_change_with_versions_given_at_commit() {
    let (sim, mut c) = tracked_sim(true).await;
    run_batch(&mut c, "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON").await;
    run_batch(&mut c, "ALTER TABLE [dbo].[members] ENABLE CHANGE_TRACKING").await;
    let current = "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS [v]";
    let v0 = version(&mut c, current).await.expect("a current version");
    let min_valid =
        "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(N'[dbo].[members]')) AS [v]";
    assert_eq!(version(&mut c, min_valid).await, Some(v0));

    run_batch(&mut c, "BEGIN TRANSACTION; INSERT INTO [dbo].[members] ([id], [name]) VALUES (1, N'Ana'), (2, N'Luis'); COMMIT TRANSACTION").await;
    run_batch(
        &mut c,
        "INSERT INTO [dbo].[members] ([id], [name]) VALUES (3, N'Eva')",
    )
    .await;
    run_batch(&mut c, "WITH CHANGE_TRACKING_CONTEXT (0x6869) UPDATE [dbo].[members] SET [name] = N'Ana M' WHERE [id] = 1").await;
    run_batch(&mut c, "DELETE FROM [dbo].[members] WHERE [id] = 2").await;
    assert_eq!(
        version(&mut c, current).await,
        Some(v0 + 4),
        "one version per commit"
    );

    // An open transaction's change has no version yet: another session does not see it (under
    // RCSI; without it the read would wait for the commit), and the current version does not
    // move until it commits.
    let mut other = connect(&sim).await;
    run_batch(
        &mut other,
        "BEGIN TRANSACTION; UPDATE [dbo].[members] SET [name] = N'Eva R' WHERE [id] = 3",
    )
    .await;
    assert_eq!(version(&mut c, current).await, Some(v0 + 4));
    let seen = changes(&mut c, v0).await;
    assert_eq!(
        seen,
        vec![
            (1, "I".into(), v0 + 3, Some(v0 + 1), Some(b"hi".to_vec())),
            (2, "D".into(), v0 + 4, Some(v0 + 1), None),
            (3, "I".into(), v0 + 2, Some(v0 + 2), None),
        ],
        "relative to v0: rows created after it are inserts, with the last change's version and context"
    );
    run_batch(&mut other, "COMMIT TRANSACTION").await;
    assert_eq!(version(&mut c, current).await, Some(v0 + 5));
    let since_first = changes(&mut c, v0 + 1).await;
    let ops: Vec<(i64, &str, i64)> = since_first
        .iter()
        .map(|(k, op, v, _, _)| (*k, op.as_str(), *v))
        .collect();
    assert_eq!(
        ops,
        vec![(1, "U", v0 + 3), (2, "D", v0 + 4), (3, "I", v0 + 5)],
        "relative to v0+1: key 1 existed already, key 3 was created after it"
    );
    assert!(changes(&mut c, v0 + 5).await.is_empty());

    // A rolled-back change leaves nothing behind.
    run_batch(
        &mut c,
        "BEGIN TRANSACTION; DELETE FROM [dbo].[members] WHERE [id] = 1; ROLLBACK TRANSACTION",
    )
    .await;
    assert!(changes(&mut c, v0 + 5).await.is_empty());
    assert_eq!(version(&mut c, current).await, Some(v0 + 5));

    // Cleanup: older changes are gone and the minimum valid version moves up.
    sim.change_tracking_cleanup().await.expect("cleanup");
    assert_eq!(version(&mut c, min_valid).await, Some(v0 + 5));
    assert!(changes(&mut c, v0).await.is_empty());
    run_batch(
        &mut c,
        "UPDATE [dbo].[members] SET [name] = N'Ana L' WHERE [id] = 1",
    )
    .await;
    let after = changes(&mut c, v0 + 5).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].0, after[0].1.as_str(), after[0].2),
        (1, "U", v0 + 6)
    );
}
