//! Test and demo setup for the SQL Server simulator: rows in the contracts' JSON encoding as the
//! multi-row INSERT statements a client would send.

use serde_json::Value;

use crate::mapping::SqlRow;

/// A T-SQL literal for a value in the row contract (numbers bare, everything else N'…').
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("N'{}'", s.replace('\'', "''")),
        Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        other => format!("N'{}'", other.to_string().replace('\'', "''")),
    }
}

/// `[dbo].[hb_contacts]` → the bracketed identifier; names come from our own config.
fn bracketed(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("[{}]", part.trim_matches(['[', ']']).replace(']', "]]")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Multi-row INSERT statements (500 rows each) for `rows`, which all have the same columns.
pub fn insert_statements(table: &str, rows: &[SqlRow]) -> Vec<String> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let columns: Vec<&String> = first.keys().collect();
    let list = columns
        .iter()
        .map(|c| format!("[{}]", c.replace(']', "]]")))
        .collect::<Vec<_>>()
        .join(", ");
    rows.chunks(500)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| {
                    let vals: Vec<String> = columns
                        .iter()
                        .map(|c| literal(r.get(c.as_str()).unwrap_or(&Value::Null)))
                        .collect();
                    format!("({})", vals.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO {} ({list}) VALUES {}",
                bracketed(table),
                values.join(",\n")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_chunked_and_quoted() {
        let mut row = SqlRow::new();
        row.insert("numero_asociado".into(), 1.into());
        row.insert("lastname".into(), "O'Brien".into());
        row.insert("email".into(), Value::Null);
        let rows = vec![row; 501];
        let sql = insert_statements("dbo.hb_contacts", &rows);
        assert_eq!(sql.len(), 2);
        assert!(sql[0].starts_with(
            "INSERT INTO [dbo].[hb_contacts] ([email], [lastname], [numero_asociado]) VALUES (NULL, N'O''Brien', 1),"
        ));
        assert_eq!(sql[1].matches("N'O''Brien'").count(), 1);
    }
}
