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
