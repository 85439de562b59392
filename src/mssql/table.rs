//! A configured table's column names and types, read once from the server's result metadata
//! (`SELECT TOP (0) *`), so keys and written values are bound with the column's own type.

use tiberius::{Column, ColumnType};

use super::error::MssqlError;
use super::object::SqlObject;
use super::pool::SqlPool;
use super::sql;
use super::value::{Param, param_for, type_name};

/// Column names and types of one table.
#[derive(Debug, Clone)]
pub struct TableShape {
    columns: Vec<Column>,
}

impl TableShape {
    pub async fn load(pool: &SqlPool, obj: &SqlObject) -> Result<Self, MssqlError> {
        let statement = sql::table_columns(obj);
        let rows = pool
            .retrying("read table columns", |conn| {
                let statement = statement.clone();
                Box::pin(async move { conn.query(&statement, &[]).await })
            })
            .await?;
        let shape = Self {
            columns: rows.columns,
        };
        shape.column(obj.key.as_str()).ok_or_else(|| {
            obj.type_error(
                obj.key.as_str(),
                "missing",
                "the configured key column is not in the table",
            )
        })?;
        Ok(shape)
    }

    /// The column named `name` (SQL Server names are case-insensitive).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.column(name).map(Column::column_type)
    }

    /// The parameter for a key given as text (`record_key`), typed like the key column.
    pub fn key_param(&self, obj: &SqlObject, key: &str) -> Result<Param, String> {
        let ty = self
            .column_type(obj.key.as_str())
            .ok_or_else(|| format!("key column {} is not in the table", obj.key))?;
        use ColumnType as T;
        match ty {
            T::Int1 | T::Int2 | T::Int4 | T::Int8 | T::Intn => key
                .trim()
                .parse::<i64>()
                .map(|k| Param::I64(Some(k)))
                .map_err(|_| format!("key {key:?} is not an integer ({})", type_name(ty))),
            _ => param_for(ty, &serde_json::Value::String(key.to_string()))
                .map_err(|e| format!("key column {}: {e}", obj.key)),
        }
    }
}
