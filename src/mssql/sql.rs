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
    if obj.columns.is_empty() {
        return "*".into();
    }
    let mut cols: Vec<&Ident> = obj.columns.iter().collect();
    let extra = [
        Some(&obj.key),
        Some(obj.change_column()),
        obj.soft_delete.as_ref().map(|(c, _)| c),
        obj.modified_column(),
    ];
    for c in extra.into_iter().flatten() {
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    join(cols.iter().map(|c| c.quoted()))
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

/// The current rows of `n` records: `… WHERE [key] IN (@P1, …, @Pn)`.
pub fn rows_by_keys(obj: &SqlObject, n: usize) -> String {
    format!(
        "SELECT {} FROM {} WHERE {} IN ({})",
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
        let yaml = format!(
            "table: schema.table\nkey: key\ncolumns: [col1, col2]\nchange_detection: {{mode: {mode}, column: {}}}\n",
            if mode == "rowversion" {
                "rv"
            } else {
                "modified_at"
            }
        );
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
                update_by_key_if_unchanged(&rv, &two, rv.change_column()),
            ),
            ("insert_returning_key", insert_returning_key(&rv, &two)),
            ("delete_by_key", delete_by_key(&rv)),
            ("begin_transaction", BEGIN.to_string()),
            ("commit_transaction", COMMIT.to_string()),
            ("rollback_transaction", ROLLBACK.to_string()),
            ("trancount", TRANCOUNT.to_string()),
        ];
        let corpus = corpus();
        assert_eq!(corpus.len(), emitted.len(), "corpus blocks: {corpus:?}");
        for (name, sql) in &emitted {
            assert!(
                corpus.iter().any(|(n, s)| n == name && s == sql),
                "{name}: `{sql}` is not in corpus.sql"
            );
        }
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
