//! The T-SQL text of every statement the adapter sends, built from validated identifiers only
//! (values are always `@Pn` parameters). `corpus.sql` lists the same shapes; a test keeps the two
//! in step.

use super::ident::Ident;
use super::object::{Change, SqlObject};

pub const PROBE: &str = "SELECT 1 AS [ok]";
pub const BEGIN: &str = "BEGIN TRANSACTION";
pub const COMMIT: &str = "COMMIT TRANSACTION";
pub const ROLLBACK: &str = "ROLLBACK TRANSACTION";
pub const TRANCOUNT: &str = "SELECT @@TRANCOUNT AS [trancount]";

/// Configured columns plus key, change column, soft-delete and modification-time columns; `*`
/// when none configured.
pub fn select_list(obj: &SqlObject) -> String {
    select_list_of(obj, "")
}

/// [`select_list`] with each column (or the `*`) prefixed by `qualifier` (`[t].` or nothing).
fn select_list_of(obj: &SqlObject, qualifier: &str) -> String {
    if obj.columns.is_empty() {
        return format!("{qualifier}*");
    }
    let mut cols: Vec<&Ident> = obj.columns.iter().collect();
    let extra = [
        Some(&obj.key),
        obj.change_column(),
        obj.soft_delete.as_ref().map(|(c, _)| c),
        obj.modified_column(),
    ];
    for c in extra.into_iter().flatten() {
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    join(cols.iter().map(|c| format!("{qualifier}{}", c.quoted())))
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

pub fn table_columns(obj: &SqlObject) -> String {
    format!("SELECT TOP (0) * FROM {}", obj.table.quoted())
}

/// Rowversion mode page; `@P1` page size, `@P2` last rowversion as bigint.
pub fn rowversion_changes(obj: &SqlObject, rv: &Ident) -> String {
    let rv = rv.quoted();
    format!(
        "SELECT TOP (@P1) {} FROM {} WHERE {rv} > CAST(@P2 AS BINARY(8)) AND {rv} < MIN_ACTIVE_ROWVERSION() ORDER BY {rv}",
        select_list(obj),
        obj.table.quoted()
    )
}

/// Modified-at mode, first page of a poll: `@P1` page size, `@P2` start (inclusive).
pub fn modified_at_from(obj: &SqlObject, m: &Ident) -> String {
    let (m, k) = (m.quoted(), obj.key.quoted());
    format!(
        "SELECT TOP (@P1) {} FROM {} WHERE {m} >= @P2 ORDER BY {m}, {k}",
        select_list(obj),
        obj.table.quoted()
    )
}

/// Modified-at mode, later pages: `@P1` page size, `@P2`/`@P3` the last (modified_at, key).
pub fn modified_at_after(obj: &SqlObject, m: &Ident) -> String {
    let (m, k) = (m.quoted(), obj.key.quoted());
    format!(
        "SELECT TOP (@P1) {} FROM {} WHERE {m} >= @P2 AND ({m} > @P2 OR {k} > @P3) ORDER BY {m}, {k}",
        select_list(obj),
        obj.table.quoted()
    )
}

/// Change-detection statements for the object's mode: (first page, later pages).
pub fn change_reads(obj: &SqlObject) -> (String, String) {
    match &obj.change {
        Change::Tracking => (ct_changes(obj, false), ct_changes(obj, true)),
        Change::Rowversion(rv) => {
            let s = rowversion_changes(obj, rv);
            (s.clone(), s)
        }
        Change::ModifiedAt { column, .. } => (
            modified_at_from(obj, column),
            modified_at_after(obj, column),
        ),
    }
}

/// The change-tracking context hubsync's own writes carry (`hubsync` in ASCII), so the change
/// reader knows their echo.
pub const CT_CONTEXT: &[u8] = b"hubsync";

/// Names of the change-tracking columns the change reader adds to each row (removed again
/// before the row is used).
pub const CT_KEY: &str = "__ct_key";
pub const CT_VERSION: &str = "__ct_version";
pub const CT_OPERATION: &str = "__ct_operation";
pub const CT_CONTEXT_COLUMN: &str = "__ct_context";

/// Change tracking: the current version and the table's minimum valid version (`@P1` the
/// table's quoted name, nvarchar); both NULL when change tracking is off.
pub fn ct_versions() -> &'static str {
    "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS [current_version], \
     CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS [min_valid_version]"
}

/// Change tracking page: `@P1` page size, `@P2` the version the poll reads changes after; the
/// next pages also `@P3`, `@P4`: the (version, key) of the last change read. Each row is the
/// table's row (NULLs when deleted) with its key, version, operation and context.
fn ct_changes(obj: &SqlObject, after: bool) -> String {
    let (t, k) = (obj.table.quoted(), obj.key.quoted());
    let filter = if after {
        format!(
            " WHERE [ct].[SYS_CHANGE_VERSION] > @P3 OR ([ct].[SYS_CHANGE_VERSION] = @P3 AND [ct].{k} > @P4)"
        )
    } else {
        String::new()
    };
    format!(
        "SELECT TOP (@P1) {}, [ct].{k} AS [{CT_KEY}], [ct].[SYS_CHANGE_VERSION] AS [{CT_VERSION}], \
         [ct].[SYS_CHANGE_OPERATION] AS [{CT_OPERATION}], [ct].[SYS_CHANGE_CONTEXT] AS [{CT_CONTEXT_COLUMN}] \
         FROM CHANGETABLE(CHANGES {t}, @P2) AS [ct] LEFT OUTER JOIN {t} AS [t] ON [t].{k} = [ct].{k}{filter} \
         ORDER BY [ct].[SYS_CHANGE_VERSION], [ct].{k}",
        select_list_of(obj, "[t].")
    )
}

/// Change tracking's full read (first poll, or a resync after the minimum valid version passed
/// the stored one): rows in key order, `@P1` page size, then `@P2` the last key read.
pub fn rows_in_key_order(obj: &SqlObject, after: bool) -> String {
    let k = obj.key.quoted();
    format!(
        "SELECT TOP (@P1) {} FROM {}{} ORDER BY {k}",
        select_list(obj),
        obj.table.quoted(),
        if after {
            format!(" WHERE {k} > @P2")
        } else {
            String::new()
        }
    )
}

/// The current rows of `n` records: `… WHERE [key] IN (@P1, …, @Pn)`; with change tracking
/// also the current version, which no change of these rows read here is newer than.
pub fn rows_by_keys(obj: &SqlObject, n: usize) -> String {
    let version = match obj.change {
        Change::Tracking => {
            format!(", CHANGE_TRACKING_CURRENT_VERSION() AS [{CT_VERSION}]")
        }
        _ => String::new(),
    };
    format!(
        "SELECT {}{version} FROM {} WHERE {} IN ({})",
        select_list(obj),
        obj.table.quoted(),
        obj.key.quoted(),
        join((1..=n.max(1)).map(|i| format!("@P{i}")))
    )
}

/// The number of rows in the table (backfill progress).
pub fn count_rows(obj: &SqlObject) -> String {
    format!("SELECT COUNT_BIG(*) AS [rows] FROM {}", obj.table.quoted())
}

pub fn keys_first_page(obj: &SqlObject) -> String {
    let k = obj.key.quoted();
    format!(
        "SELECT TOP (@P1) {k} FROM {} ORDER BY {k}",
        obj.table.quoted()
    )
}

pub fn keys_after(obj: &SqlObject) -> String {
    let k = obj.key.quoted();
    format!(
        "SELECT TOP (@P1) {k} FROM {} WHERE {k} > @P2 ORDER BY {k}",
        obj.table.quoted()
    )
}

/// `UPDATE … SET [c1] = @P1, … WHERE [key] = @Pn+1 AND [rv] = CAST(@Pn+2 AS BINARY(8))`: only
/// while the row still has the rowversion it was read with.
pub fn update_by_key_if_unchanged(obj: &SqlObject, columns: &[&Ident], rv: &Ident) -> String {
    format!(
        "{} AND {} = CAST(@P{} AS BINARY(8))",
        update_by_key(obj, columns),
        rv.quoted(),
        columns.len() + 2
    )
}

/// Change tracking: `UPDATE … SET … WHERE [key] = @Pn+1 AND NOT EXISTS (…CHANGETABLE(CHANGES
/// …, @Pn+2) … [key] = @Pn+1)`: only while no change of the row is newer than the version it
/// was read at.
pub fn update_by_key_if_untracked(obj: &SqlObject, columns: &[&Ident]) -> String {
    let n = columns.len();
    let (t, k) = (obj.table.quoted(), obj.key.quoted());
    format!(
        "{} AND NOT EXISTS (SELECT 1 FROM CHANGETABLE(CHANGES {t}, @P{}) AS [ct] WHERE [ct].{k} = @P{})",
        update_by_key(obj, columns),
        n + 2,
        n + 1
    )
}

/// `WITH CHANGE_TRACKING_CONTEXT (@Pn) ` + `statement`: hubsync's own write, `@Pn` its context.
pub fn tagged(statement: &str, context_param: usize) -> String {
    format!("WITH CHANGE_TRACKING_CONTEXT (@P{context_param}) {statement}")
}

/// `UPDATE … SET [c1] = @P1, … WHERE [key] = @Pn+1`.
pub fn update_by_key(obj: &SqlObject, columns: &[&Ident]) -> String {
    let sets = join(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = @P{}", c.quoted(), i + 1)),
    );
    format!(
        "UPDATE {} SET {sets} WHERE {} = @P{}",
        obj.table.quoted(),
        obj.key.quoted(),
        columns.len() + 1
    )
}

/// `DELETE FROM … WHERE [key] = @P1`.
pub fn delete_by_key(obj: &SqlObject) -> String {
    format!(
        "DELETE FROM {} WHERE {} = @P1",
        obj.table.quoted(),
        obj.key.quoted()
    )
}

/// `INSERT INTO … ([c1], …) OUTPUT INSERTED.[key] VALUES (@P1, …)`.
pub fn insert_returning_key(obj: &SqlObject, columns: &[&Ident]) -> String {
    let names = join(columns.iter().map(|c| c.quoted()));
    let params = join((1..=columns.len()).map(|i| format!("@P{i}")));
    format!(
        "INSERT INTO {} ({names}) OUTPUT INSERTED.{} VALUES ({params})",
        obj.table.quoted(),
        obj.key.quoted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mssql::object::SqlObjectSettings;

    const CORPUS: &str = include_str!("corpus.sql");

    fn placeholder(mode: &str) -> SqlObject {
        let yaml = match mode {
            "change_tracking" => "table: schema.table\nkey: key\ncolumns: [col1, col2]\nchange_detection: {mode: change_tracking}\n".to_string(),
            _ => format!(
                "table: schema.table\nkey: key\ncolumns: [col1, col2]\nchange_detection: {{mode: {mode}, column: {}}}\n",
                if mode == "rowversion" {
                    "rv"
                } else {
                    "modified_at"
                }
            ),
        };
        serde_yaml::from_str::<SqlObjectSettings>(&yaml)
            .unwrap()
            .validate()
            .unwrap()
    }

    /// The statement lines of `corpus.sql` by block name.
    fn corpus() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut name = None;
        for line in CORPUS.lines() {
            if let Some(n) = line.strip_prefix("-- name: ") {
                name = Some(n.trim().to_string());
            } else if !line.starts_with("--") && !line.trim().is_empty() {
                out.push((
                    name.clone().expect("statement before any name"),
                    line.to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn every_emitted_shape_is_in_the_corpus_and_every_corpus_shape_is_emitted() {
        let rv = placeholder("rowversion");
        let m = placeholder("modified_at");
        let ct = placeholder("change_tracking");
        let c1 = Ident::parse("col1").unwrap();
        let c2 = Ident::parse("col2").unwrap();
        let two = [&c1, &c2];
        let emitted = [
            ("probe", PROBE.to_string()),
            ("table_columns", table_columns(&rv)),
            ("rowversion_changes", change_reads(&rv).0),
            ("modified_at_changes_from", change_reads(&m).0),
            ("modified_at_changes_after", change_reads(&m).1),
            ("rows_by_keys", rows_by_keys(&rv, 2)),
            ("count_rows", count_rows(&rv)),
            ("keys_first_page", keys_first_page(&rv)),
            ("keys_after", keys_after(&rv)),
            ("update_by_key", update_by_key(&rv, &two)),
            (
                "update_by_key_if_unchanged",
                update_by_key_if_unchanged(&rv, &two, rv.change_column().unwrap()),
            ),
            ("ct_versions", ct_versions().to_string()),
            ("ct_changes_first", change_reads(&ct).0),
            ("ct_changes_after", change_reads(&ct).1),
            ("ct_rows_first", rows_in_key_order(&ct, false)),
            ("ct_rows_after", rows_in_key_order(&ct, true)),
            ("ct_rows_by_keys", rows_by_keys(&ct, 2)),
            (
                "ct_update_by_key_if_untracked",
                update_by_key_if_untracked(&ct, &two),
            ),
            (
                "ct_update_by_key_if_untracked_tagged",
                tagged(&update_by_key_if_untracked(&ct, &two), 5),
            ),
            (
                "ct_insert_returning_key",
                tagged(&insert_returning_key(&ct, &two), 3),
            ),
            ("ct_delete_by_key", tagged(&delete_by_key(&ct), 2)),
            ("insert_returning_key", insert_returning_key(&rv, &two)),
            ("delete_by_key", delete_by_key(&rv)),
            ("begin_transaction", BEGIN.to_string()),
            ("commit_transaction", COMMIT.to_string()),
            ("rollback_transaction", ROLLBACK.to_string()),
            ("trancount", TRANCOUNT.to_string()),
        ];
        let corpus = corpus();
        let missing: Vec<String> = emitted
            .iter()
            .filter(|(name, sql)| !corpus.iter().any(|(n, s)| n == name && s == sql))
            .map(|(name, sql)| format!("-- name: {name}\n{sql}"))
            .collect();
        assert!(
            missing.is_empty(),
            "not in corpus.sql:\n{}",
            missing.join("\n")
        );
        assert_eq!(corpus.len(), emitted.len(), "corpus blocks: {corpus:?}");
    }

    #[test]
    fn select_list_adds_needed_columns_once() {
        let mut o = placeholder("rowversion");
        assert_eq!(select_list(&o), "[col1], [col2], [key], [rv]");
        o.columns = vec![Ident::parse("key").unwrap(), Ident::parse("rv").unwrap()];
        assert_eq!(select_list(&o), "[key], [rv]");
        o.columns.clear();
        assert_eq!(select_list(&o), "*");
    }
}
