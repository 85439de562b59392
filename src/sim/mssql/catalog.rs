//! The simulator's catalog: tables created through CREATE TABLE with their SQL Server column
//! types, keys and unique constraints (the store keeps it in `__sim_catalog` so a `--data`
//! directory survives restarts).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::types::SqlType;

/// One column as declared in T-SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    pub identity: bool,
}

/// One table as declared in T-SQL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableDef {
    /// The store's table name (`dbo.` stripped, lower case).
    pub name: String,
    /// `schema.table` as SQL Server names it in messages.
    pub display: String,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    pub primary_key_name: Option<String>,
    /// (constraint or index name, columns (lower case), is a unique index rather than a
    /// constraint).
    pub unique: Vec<(String, Vec<String>, bool)>,
}

impl TableDef {
    /// Column by name, case-insensitively (SQL Server's default collation).
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "display": self.display,
            "columns": self.columns.iter().map(|c| json!({
                "name": c.name, "type": c.ty.name(), "nullable": c.nullable, "identity": c.identity,
            })).collect::<Vec<_>>(),
            "primary_key": self.primary_key,
            "primary_key_name": self.primary_key_name,
            "unique": self.unique.iter().map(|(n, cols, index)| json!({"name": n, "columns": cols, "index": index})).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Json) -> Option<TableDef> {
        let text = |v: &Json| v.as_str().map(str::to_string);
        let strings = |v: &Json| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mut columns = Vec::new();
        for c in v.get("columns")?.as_array()? {
            columns.push(ColumnDef {
                name: text(c.get("name")?)?,
                ty: SqlType::parse(c.get("type")?.as_str()?)?,
                nullable: c.get("nullable")?.as_bool()?,
                identity: c.get("identity")?.as_bool()?,
            });
        }
        let mut unique = Vec::new();
        for u in v.get("unique")?.as_array()? {
            unique.push((
                text(u.get("name")?)?,
                strings(u.get("columns")?)?,
                u.get("index")?.as_bool()?,
            ));
        }
        Some(TableDef {
            name: text(v.get("name")?)?,
            display: text(v.get("display")?)?,
            columns,
            primary_key: strings(v.get("primary_key")?)?,
            primary_key_name: v.get("primary_key_name").and_then(text),
            unique,
        })
    }
}

/// All tables, by store name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tables: BTreeMap<String, TableDef>,
}

impl Catalog {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(&name.to_ascii_lowercase())
    }
    pub fn insert(&mut self, table: TableDef) {
        self.tables.insert(table.name.to_ascii_lowercase(), table);
    }
    pub fn remove(&mut self, name: &str) {
        self.tables.remove(&name.to_ascii_lowercase());
    }
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables.values()
    }
    /// The change table of `name` when change tracking is enabled on it.
    pub fn change_table(&self, name: &str) -> Option<&TableDef> {
        self.table(&change_table_name(name))
    }
    /// Every change table (one per table with change tracking).
    pub fn change_tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables
            .values()
            .filter(|t| t.name.starts_with(CHANGE_TABLE_PREFIX))
    }
}

/// Change tracking keeps, per tracked table, one row per primary key in a store table named
/// with this prefix: the key, the version and kind of its last committed change and its context.
pub const CHANGE_TABLE_PREFIX: &str = "__ct_";

/// The change table's store name for a tracked table.
pub fn change_table_name(table: &str) -> String {
    format!("{CHANGE_TABLE_PREFIX}{}", table.to_ascii_lowercase())
}

/// The change table's definition for `table` (which has a primary key): the key columns, then
/// CHANGETABLE's columns, then the simulator's own bookkeeping (`__tx`: the session whose
/// uncommitted change it is; `__insert`: the row was inserted by that uncommitted change).
pub fn change_table_def(table: &TableDef) -> TableDef {
    let mut columns: Vec<ColumnDef> = table
        .primary_key
        .iter()
        .filter_map(|k| table.column(k).cloned())
        .map(|c| ColumnDef {
            nullable: false,
            identity: false,
            ..c
        })
        .collect();
    let col = |name: &str, ty: SqlType, nullable: bool| ColumnDef {
        name: name.into(),
        ty,
        nullable,
        identity: false,
    };
    columns.extend([
        col("SYS_CHANGE_VERSION", SqlType::BigInt, true),
        col("SYS_CHANGE_CREATION_VERSION", SqlType::BigInt, true),
        col("SYS_CHANGE_OPERATION", SqlType::NChar(1), false),
        col("SYS_CHANGE_COLUMNS", SqlType::VarBinary(Some(4100)), true),
        col("SYS_CHANGE_CONTEXT", SqlType::VarBinary(Some(128)), true),
        col("__tx", SqlType::BigInt, true),
        col("__insert", SqlType::Bit, false),
    ]);
    TableDef {
        name: change_table_name(&table.name),
        display: format!("sys.change_tracking_{}", table.name),
        columns,
        primary_key: table.primary_key.clone(),
        primary_key_name: None,
        unique: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_definitions_survive_json() {
        let t = TableDef {
            name: "t".into(),
            display: "dbo.t".into(),
            columns: vec![ColumnDef {
                name: "Id".into(),
                ty: SqlType::BigInt,
                nullable: false,
                identity: true,
            }],
            primary_key: vec!["id".into()],
            primary_key_name: Some("PK_t".into()),
            unique: vec![("ix".into(), vec!["id".into()], true)],
        };
        assert_eq!(TableDef::from_json(&t.to_json()), Some(t.clone()));
        assert!(t.column("ID").is_some());
    }
}
