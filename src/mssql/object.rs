//! Per-object SQL Server settings (table, key, change detection, soft delete, HubSpot id column,
//! new-record policy) and their validated form with quoted identifiers.

use std::time::Duration;

use serde::Deserialize;

use super::ident::{Ident, IdentError, TableName};
use crate::config::Problems;

/// The SQL Server side of one synced object, in plain values (the lead fills it from the
/// object's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlObjectSettings {
    /// `table` or `schema.table` (schema `dbo` when omitted).
    pub table: String,
    /// Key column (the record's SQL key).
    pub key: String,
    /// Columns the change reader returns; empty means every column (`*`). The key, the change
    /// detection column and the soft-delete column are added when missing.
    #[serde(default)]
    pub columns: Vec<String>,
    pub change_detection: ChangeDetection,
    /// Optional soft-delete column: a row that reads as deleted becomes an archive item.
    #[serde(default)]
    pub soft_delete: Option<SoftDelete>,
    /// Optional column that receives the HubSpot id.
    #[serde(default)]
    pub hubspot_id_column: Option<String>,
    /// Rowversion mode: an optional datetime/datetime2 column with the row's last modification
    /// (local time), read for `newest_wins` conflicts. In modified_at mode that column is used.
    #[serde(default)]
    pub modified_column: Option<String>,
    #[serde(default)]
    pub on_new_hubspot_record: NewRecordPolicy,
    /// Rows per change-reader page (and keys per reconciliation page).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How often the poller should run key reconciliation (hard-delete detection); none = never.
    #[serde(default, with = "humantime_serde")]
    pub reconcile_every: Option<Duration>,
}

fn default_page_size() -> u32 {
    1000
}

/// How changed rows are found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChangeDetection {
    /// `WHERE rv > @cursor AND rv < MIN_ACTIVE_ROWVERSION() ORDER BY rv` (recommended).
    Rowversion { column: String },
    /// A local-time datetime/datetime2 column with a `(modified_at, key)` cursor; every poll
    /// re-reads the last `overlap` to catch late commits carrying older timestamps.
    ModifiedAt {
        column: String,
        #[serde(with = "humantime_serde", default = "default_overlap")]
        overlap: Duration,
    },
    /// SQL Server Change Tracking on a table with a primary key: `CHANGETABLE(CHANGES …)` from
    /// the stored version, deletes included, hubsync's own writes tagged with a context.
    ChangeTracking,
}

fn default_overlap() -> Duration {
    Duration::from_secs(5 * 60)
}

/// A soft-delete column and the value that means "deleted".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftDelete {
    pub column: String,
    pub deleted_when: DeletedWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedWhen {
    /// `activo = 0`: bit/int column false or 0.
    False,
    /// `borrado = 1`: bit/int column true or non-zero.
    True,
    /// `deleted_at IS NOT NULL`.
    NotNull,
}

/// What the writer does with a record created in HubSpot that has no SQL row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewRecordPolicy {
    Insert,
    #[default]
    Ignore,
}

/// Validated settings: every identifier checked, ready to be quoted into statements.
#[derive(Debug, Clone)]
pub struct SqlObject {
    pub table: TableName,
    pub key: Ident,
    pub columns: Vec<Ident>,
    pub change: Change,
    pub soft_delete: Option<(Ident, DeletedWhen)>,
    pub hubspot_id_column: Option<Ident>,
    /// The configured modification-time column (rowversion mode).
    pub modified_column: Option<Ident>,
    pub on_new_hubspot_record: NewRecordPolicy,
    pub page_size: u32,
}

/// Validated change detection.
#[derive(Debug, Clone)]
pub enum Change {
    Rowversion(Ident),
    ModifiedAt { column: Ident, overlap: Duration },
    Tracking,
}

impl SqlObjectSettings {
    /// Settings with the defaults for everything but table, key and change detection.
    pub fn new(table: &str, key: &str, change_detection: ChangeDetection) -> Self {
        Self {
            table: table.to_string(),
            key: key.to_string(),
            columns: Vec::new(),
            change_detection,
            soft_delete: None,
            hubspot_id_column: None,
            modified_column: None,
            on_new_hubspot_record: NewRecordPolicy::default(),
            page_size: default_page_size(),
            reconcile_every: None,
        }
    }

    /// Validates every identifier; the error lists each refused setting by its key path.
    pub fn validate(&self) -> Result<SqlObject, Problems> {
        let mut problems = Problems::default();
        let obj = self.validate_into("sql", &mut problems);
        match obj {
            Some(o) if problems.is_empty() => Ok(o),
            _ => Err(problems),
        }
    }

    /// Adds a problem for every setting that cannot work, under `path`.
    pub fn check(&self, path: &str, problems: &mut Problems) {
        self.validate_into(path, problems);
    }

    fn validate_into(&self, path: &str, problems: &mut Problems) -> Option<SqlObject> {
        let mut refused: Vec<(String, String)> = Vec::new();
        let mut ok = true;
        let mut note = |field: &str, r: Result<Ident, IdentError>| match r {
            Ok(i) => Some(i),
            Err(e) => {
                refused.push((format!("{path}.{field}"), e.to_string()));
                None
            }
        };
        let table = match TableName::parse(&self.table) {
            Ok(t) => Some(t),
            Err(e) => {
                note("table", Err(e));
                None
            }
        };
        let key = note("key", Ident::parse(&self.key));
        let columns: Vec<Option<Ident>> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| note(&format!("columns[{i}]"), Ident::parse(c)))
            .collect();
        let change = match &self.change_detection {
            ChangeDetection::Rowversion { column } => {
                note("change_detection.column", Ident::parse(column)).map(Change::Rowversion)
            }
            ChangeDetection::ModifiedAt { column, overlap } => {
                note("change_detection.column", Ident::parse(column)).map(|column| {
                    Change::ModifiedAt {
                        column,
                        overlap: *overlap,
                    }
                })
            }
            ChangeDetection::ChangeTracking => Some(Change::Tracking),
        };
        let soft_delete = match &self.soft_delete {
            Some(sd) => note("soft_delete.column", Ident::parse(&sd.column))
                .map(|c| Some((c, sd.deleted_when))),
            None => Some(None),
        };
        let hubspot_id_column = match &self.hubspot_id_column {
            Some(c) => note("hubspot_id_column", Ident::parse(c)).map(Some),
            None => Some(None),
        };
        let modified_column = match (&self.modified_column, &self.change_detection) {
            (None, _) => Some(None),
            (Some(c), ChangeDetection::Rowversion { .. } | ChangeDetection::ChangeTracking) => {
                note("modified_column", Ident::parse(c)).map(Some)
            }
            (Some(_), ChangeDetection::ModifiedAt { .. }) => {
                refused.push((
                    format!("{path}.modified_column"),
                    "only for rowversion or change_tracking change detection: in modified_at \
                     mode the change detection column is the modification time"
                        .into(),
                ));
                None
            }
        };
        ok &= refused.is_empty();
        for (p, m) in refused {
            problems.push(p, m);
        }
        if self.page_size == 0 || self.page_size > 100_000 {
            problems.push(format!("{path}.page_size"), "must be between 1 and 100000");
            ok = false;
        }
        if let ChangeDetection::ModifiedAt { overlap, .. } = &self.change_detection
            && *overlap > Duration::from_secs(7 * 24 * 3600)
        {
            problems.push(
                format!("{path}.change_detection.overlap"),
                "must be at most 7 days",
            );
            ok = false;
        }
        let columns: Option<Vec<Ident>> = columns.into_iter().collect();
        if !ok {
            return None;
        }
        Some(SqlObject {
            table: table?,
            key: key?,
            columns: columns?,
            change: change?,
            soft_delete: soft_delete?,
            hubspot_id_column: hubspot_id_column?,
            modified_column: modified_column?,
            on_new_hubspot_record: self.on_new_hubspot_record,
            page_size: self.page_size,
        })
    }
}

impl SqlObject {
    /// An error about a column of this object's table.
    pub fn type_error(
        &self,
        column: &str,
        sql_type: &str,
        message: impl Into<String>,
    ) -> super::MssqlError {
        super::MssqlError::Type {
            table: self.table.to_string(),
            column: column.to_string(),
            sql_type: sql_type.to_string(),
            message: message.into(),
        }
    }

    /// The column holding the row's last modification time, if known: the modified_at change
    /// detection column, or the configured `modified_column` in rowversion mode.
    pub fn modified_column(&self) -> Option<&Ident> {
        match &self.change {
            Change::ModifiedAt { column, .. } => Some(column),
            Change::Rowversion(_) | Change::Tracking => self.modified_column.as_ref(),
        }
    }

    /// The column the change reader orders by (none with change tracking: CHANGETABLE's version).
    pub fn change_column(&self) -> Option<&Ident> {
        match &self.change {
            Change::Rowversion(c) => Some(c),
            Change::ModifiedAt { column, .. } => Some(column),
            Change::Tracking => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> SqlObjectSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn parses_both_modes_with_defaults() {
        let s = settings(
            "table: dbo.hb_contacts\nkey: numero_asociado\nchange_detection: {mode: rowversion, column: rv}\n",
        );
        let o = s.validate().unwrap();
        assert_eq!(o.table.quoted(), "[dbo].[hb_contacts]");
        assert_eq!(o.page_size, 1000);
        assert_eq!(o.on_new_hubspot_record, NewRecordPolicy::Ignore);
        let s = settings(
            "table: socios\nkey: id\nchange_detection: {mode: modified_at, column: modificado, overlap: 10m}\nsoft_delete: {column: activo, deleted_when: 'false'}\non_new_hubspot_record: insert\n",
        );
        let o = s.validate().unwrap();
        match o.change {
            Change::ModifiedAt { overlap, .. } => assert_eq!(overlap, Duration::from_secs(600)),
            Change::Rowversion(_) | Change::Tracking => panic!("wrong mode"),
        }
        assert_eq!(o.soft_delete.unwrap().1, DeletedWhen::False);
    }

    #[test]
    fn new_takes_defaults() {
        let s = SqlObjectSettings::new(
            "dbo.hb_contacts",
            "numero_asociado",
            ChangeDetection::Rowversion {
                column: "rv".into(),
            },
        );
        let o = s.validate().unwrap();
        assert_eq!(o.page_size, 1000);
        assert!(o.columns.is_empty() && o.soft_delete.is_none());
    }

    #[test]
    fn reports_every_bad_identifier_with_its_path() {
        let s = settings(
            "table: 'dbo.x]; drop table y'\nkey: 'id--'\ncolumns: [ok, 'a b']\nchange_detection: {mode: rowversion, column: rv}\nhubspot_id_column: \"h'\"\n",
        );
        let problems = s.validate().unwrap_err();
        let paths: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "sql.table",
                "sql.key",
                "sql.columns[1]",
                "sql.hubspot_id_column"
            ]
        );
    }
}
