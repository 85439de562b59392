-- Every T-SQL statement shape hubsync's SQL Server adapter (src/mssql) sends.
--
-- Conventions
-- * One block per shape, opened by `-- name: <shape>`; the statement follows on ONE line, exactly
--   as the adapter emits it (no trailing semicolon). `-- sent:` says how it travels:
--   `rpc` = sp_executesql with typed parameters (tiberius `query`/`execute`), `batch` = SQLBatch
--   (tiberius `simple_query`). `-- params:` gives the declared parameter types.
-- * Placeholder identifiers: `[schema].[table]` is the configured table (always schema-qualified;
--   `dbo` when the config names none). `[key]` is the key column, `[rv]` the rowversion column,
--   `[modified_at]` the modified-at column, `[col1], [col2]` stand for one or more column names
--   (the same names in the same order wherever a block shows them; a real statement may carry
--   1..n of them). Every identifier is validated against ^[A-Za-z_][A-Za-z0-9_]*$ and
--   bracket-quoted; every value is a parameter.
-- * The select list of the change readers is the configured columns plus, appended when not
--   already listed, the key, the rowversion or modified-at column, the soft-delete column and
--   the configured modification-time column (rowversion mode).
--   When the object configures no column list, the readers' select list is `*` instead.
-- * `@P1` TOP values are bigint. Key parameters are bigint for int/bigint keys and nvarchar for
--   character keys. Written values are bound with the column's own type:
--   int, bigint, smallint, tinyint -> int/bigint; bit -> bit; decimal/numeric -> numeric(p,s);
--   date -> date; datetime/datetime2/smalldatetime -> datetime2; character types -> nvarchar
--   (nvarchar(max) above 4000 bytes); NULLs of any of these.

-- name: probe
-- sent: rpc
-- Readiness probe and connection check before a pooled connection is handed out again.
SELECT 1 AS [ok]

-- name: table_columns
-- sent: rpc
-- Column names and wire types of a configured table (only the COLMETADATA is used, no rows).
SELECT TOP (0) * FROM [schema].[table]

-- name: rowversion_changes
-- sent: rpc
-- params: @P1 bigint (page size), @P2 bigint (last rowversion read, as a number; 0 at the start)
-- The rowversion cursor travels as BIGINT and is converted with CAST(... AS BINARY(8)), the
-- 8-byte big-endian value of the rowversion; [rv] itself comes back as binary(8).
SELECT TOP (@P1) [col1], [col2], [key], [rv] FROM [schema].[table] WHERE [rv] > CAST(@P2 AS BINARY(8)) AND [rv] < MIN_ACTIVE_ROWVERSION() ORDER BY [rv]

-- name: modified_at_changes_from
-- sent: rpc
-- params: @P1 bigint (page size), @P2 datetime2 (start of the poll: high-water mark minus overlap,
--         local time; 0001-01-01 on the first poll)
SELECT TOP (@P1) [col1], [col2], [key], [modified_at] FROM [schema].[table] WHERE [modified_at] >= @P2 ORDER BY [modified_at], [key]

-- name: modified_at_changes_after
-- sent: rpc
-- params: @P1 bigint (page size), @P2 datetime2 (modified_at of the last row read),
--         @P3 bigint or nvarchar (key of the last row read)
-- The compound cursor (modified_at, key): rows after it in (modified_at, key) order.
SELECT TOP (@P1) [col1], [col2], [key], [modified_at] FROM [schema].[table] WHERE [modified_at] >= @P2 AND ([modified_at] > @P2 OR [key] > @P3) ORDER BY [modified_at], [key]

-- name: rows_by_keys
-- sent: rpc
-- params: @P1..@Pn bigint or nvarchar (keys; 1 to 1000 of them)
-- The current SQL rows of a batch's records in one query (three-way diffs and conflict checks
-- of the to_sql step, diagnostics); a key without a row is simply absent from the result.
SELECT [col1], [col2], [key], [rv] FROM [schema].[table] WHERE [key] IN (@P1, @P2)

-- name: count_rows
-- sent: rpc
-- The number of rows in the table, for a backfill's progress bar.
SELECT COUNT_BIG(*) AS [rows] FROM [schema].[table]

-- name: keys_first_page
-- sent: rpc
-- params: @P1 bigint (page size)
-- Key reconciliation (hard-delete detection): all keys, paged, in key order.
SELECT TOP (@P1) [key] FROM [schema].[table] ORDER BY [key]

-- name: keys_after
-- sent: rpc
-- params: @P1 bigint (page size), @P2 bigint or nvarchar (last key of the previous page)
SELECT TOP (@P1) [key] FROM [schema].[table] WHERE [key] > @P2 ORDER BY [key]

-- name: update_by_key
-- sent: rpc
-- params: @P1..@Pn typed values of the changed columns, @Pn+1 the key (bigint or nvarchar)
-- Writer: only the changed columns of one record. The HubSpot id write-back is one more column
-- in the same statement, or the only column when nothing else changed.
UPDATE [schema].[table] SET [col1] = @P1, [col2] = @P2 WHERE [key] = @P3

-- name: update_by_key_if_unchanged
-- sent: rpc
-- params: as update_by_key, then @Pn+2 bigint (the rowversion the row was read with)
-- Writer, rowversion mode: the update applies only while the row still has the rowversion the
-- decision was made on; 0 rows affected means it changed since (decide again).
UPDATE [schema].[table] SET [col1] = @P1, [col2] = @P2 WHERE [key] = @P3 AND [rv] = CAST(@P4 AS BINARY(8))

-- name: insert_returning_key
-- sent: rpc
-- params: @P1..@Pn typed values
-- Writer: a record created in HubSpot (on_new_hubspot_record: insert). The key comes back as a
-- one-row, one-column result (the key column's own type, e.g. an IDENTITY int).
INSERT INTO [schema].[table] ([col1], [col2]) OUTPUT INSERTED.[key] VALUES (@P1, @P2)

-- name: delete_by_key
-- sent: rpc
-- params: @P1 bigint or nvarchar (key)
-- Writer: the row of a record archived in HubSpot (on_hubspot_archive: delete). No row deleted
-- means it was already gone, which is the same outcome.
DELETE FROM [schema].[table] WHERE [key] = @P1

-- name: begin_transaction
-- sent: batch
BEGIN TRANSACTION

-- name: commit_transaction
-- sent: batch
COMMIT TRANSACTION

-- name: rollback_transaction
-- sent: batch
ROLLBACK TRANSACTION

-- name: trancount
-- sent: rpc
-- After a failed statement inside the writer's transaction: is the transaction still open
-- (1), or did the error end it (0, e.g. XACT_ABORT ON or a deadlock victim)?
SELECT @@TRANCOUNT AS [trancount]

-- Change tracking mode (`change_detection: {mode: change_tracking}`, tables with a primary key).
-- `[ct]` is CHANGETABLE's alias, `[t]` the table's. The reader's columns are taken from `[t]`
-- (`[t].*` when the object configures none).

-- name: ct_versions
-- sent: rpc
-- params: @P1 nvarchar (the table's quoted name, e.g. N'[schema].[table]')
-- At the start of every poll: where changes can be read from. Both NULL when change tracking is
-- off for the database; the second NULL when it is off for the table (or the login lacks VIEW
-- CHANGE TRACKING). A stored version below min_valid_version means changes were cleaned up
-- unread: the poll reads every row again (ct_rows_first/after) as of current_version.
SELECT CHANGE_TRACKING_CURRENT_VERSION() AS [current_version], CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS [min_valid_version]

-- name: ct_changes_first
-- sent: rpc
-- params: @P1 bigint (page size), @P2 bigint (the stored version: changes after it)
-- Each changed key once, with its last change; a deleted row comes back with NULLs from [t].
SELECT TOP (@P1) [t].[col1], [t].[col2], [t].[key], [ct].[key] AS [__ct_key], [ct].[SYS_CHANGE_VERSION] AS [__ct_version], [ct].[SYS_CHANGE_OPERATION] AS [__ct_operation], [ct].[SYS_CHANGE_CONTEXT] AS [__ct_context] FROM CHANGETABLE(CHANGES [schema].[table], @P2) AS [ct] LEFT OUTER JOIN [schema].[table] AS [t] ON [t].[key] = [ct].[key] ORDER BY [ct].[SYS_CHANGE_VERSION], [ct].[key]

-- name: ct_changes_after
-- sent: rpc
-- params: as ct_changes_first, then @P3 bigint and @P4 bigint or nvarchar: the (version, key) of
--         the last change read (one transaction can change more rows than a page holds)
SELECT TOP (@P1) [t].[col1], [t].[col2], [t].[key], [ct].[key] AS [__ct_key], [ct].[SYS_CHANGE_VERSION] AS [__ct_version], [ct].[SYS_CHANGE_OPERATION] AS [__ct_operation], [ct].[SYS_CHANGE_CONTEXT] AS [__ct_context] FROM CHANGETABLE(CHANGES [schema].[table], @P2) AS [ct] LEFT OUTER JOIN [schema].[table] AS [t] ON [t].[key] = [ct].[key] WHERE [ct].[SYS_CHANGE_VERSION] > @P3 OR ([ct].[SYS_CHANGE_VERSION] = @P3 AND [ct].[key] > @P4) ORDER BY [ct].[SYS_CHANGE_VERSION], [ct].[key]

-- name: ct_rows_first
-- sent: rpc
-- params: @P1 bigint (page size)
-- The full read of the first poll or of a resync, in key order.
SELECT TOP (@P1) [col1], [col2], [key] FROM [schema].[table] ORDER BY [key]

-- name: ct_rows_after
-- sent: rpc
-- params: @P1 bigint (page size), @P2 bigint or nvarchar (last key read)
SELECT TOP (@P1) [col1], [col2], [key] FROM [schema].[table] WHERE [key] > @P2 ORDER BY [key]

-- name: ct_rows_by_keys
-- sent: rpc
-- params: as rows_by_keys
-- With the current version: no change of these rows as read here is newer than it, so a write
-- guarded by it (ct_update_by_key_if_untracked) never overwrites a later edit unseen.
SELECT [col1], [col2], [key], CHANGE_TRACKING_CURRENT_VERSION() AS [__ct_version] FROM [schema].[table] WHERE [key] IN (@P1, @P2)

-- name: ct_update_by_key_if_untracked
-- sent: rpc
-- params: as update_by_key, then @Pn+2 bigint (the version the row was read at)
-- 0 rows affected means the row changed since it was read (decide again).
UPDATE [schema].[table] SET [col1] = @P1, [col2] = @P2 WHERE [key] = @P3 AND NOT EXISTS (SELECT 1 FROM CHANGETABLE(CHANGES [schema].[table], @P4) AS [ct] WHERE [ct].[key] = @P3)

-- name: ct_update_by_key_if_untracked_tagged
-- sent: rpc
-- params: as ct_update_by_key_if_untracked, then @Pn+3 varbinary (hubsync's context, 0x68756273796E63)
-- The same write when the row held nothing still to go to HubSpot: the change reader skips a
-- change carrying this context (change tracking keeps only a row's last change, so a row with
-- anything unsynced is written untagged instead).
WITH CHANGE_TRACKING_CONTEXT (@P5) UPDATE [schema].[table] SET [col1] = @P1, [col2] = @P2 WHERE [key] = @P3 AND NOT EXISTS (SELECT 1 FROM CHANGETABLE(CHANGES [schema].[table], @P4) AS [ct] WHERE [ct].[key] = @P3)

-- name: ct_insert_returning_key
-- sent: rpc
-- params: as insert_returning_key, then @Pn+1 varbinary (hubsync's context)
WITH CHANGE_TRACKING_CONTEXT (@P3) INSERT INTO [schema].[table] ([col1], [col2]) OUTPUT INSERTED.[key] VALUES (@P1, @P2)

-- name: ct_delete_by_key
-- sent: rpc
-- params: @P1 the key, @P2 varbinary (hubsync's context)
WITH CHANGE_TRACKING_CONTEXT (@P2) DELETE FROM [schema].[table] WHERE [key] = @P1
