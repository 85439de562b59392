//! A member whose HubSpot contact is gone for good (a GDPR delete: not found by its id, not
//! archived, not merged): what the object's `on_hubspot_erasure` policy makes of its SQL Server
//! row (decided here without I/O), and the erasure a worker settles with the item that found
//! it — hubsync's own copies of the member purged (see [`super::forget`]) and one `ERASE` line.

use crate::mapping::{ErasureAction, ObjectConfig};
use crate::mssql::{RowWrite, SqlRow};
use crate::queue::ItemError;

use super::forget::Forgotten;

/// One object's `on_hubspot_erasure`, ready to apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErasurePolicy {
    pub action: ErasureAction,
    /// The columns written (`anonymize`, `set_column`) with their values.
    pub changes: SqlRow,
}

impl ErasurePolicy {
    pub fn new(object: &ObjectConfig) -> Self {
        let erasure = &object.on_hubspot_erasure;
        let changes = match (erasure.action, &erasure.column) {
            (ErasureAction::Anonymize, _) => erasure.anonymized(object).into_iter().collect(),
            (ErasureAction::SetColumn, Some(column)) => {
                let value = erasure.value.clone().unwrap_or_default();
                [(column.clone(), value)].into_iter().collect()
            }
            _ => SqlRow::new(),
        };
        Self {
            action: erasure.action,
            changes,
        }
    }

    /// The SQL Server write for member `sql_key`; None when the row is left as it is.
    pub fn write(&self, sql_key: &str) -> Option<RowWrite> {
        let key = Some(sql_key.to_string());
        match self.action {
            ErasureAction::Ignore => None,
            ErasureAction::Delete => Some(RowWrite {
                key,
                delete: true,
                ..RowWrite::default()
            }),
            ErasureAction::Anonymize | ErasureAction::SetColumn => Some(RowWrite {
                key,
                changes: self.changes.clone(),
                ..RowWrite::default()
            }),
        }
    }

    /// What became of the SQL Server row, in the ERASE line and history row.
    pub fn row_outcome(&self) -> &'static str {
        match self.action {
            ErasureAction::Ignore => "SQL Server row left as it is (on_hubspot_erasure: ignore)",
            ErasureAction::Delete => "SQL Server row deleted (on_hubspot_erasure: delete)",
            ErasureAction::Anonymize => {
                "SQL Server row's personal columns cleared (on_hubspot_erasure: anonymize)"
            }
            ErasureAction::SetColumn => "SQL Server row marked (on_hubspot_erasure: set_column)",
        }
    }
}

/// The words an erasure's ERASE history row and log line start with.
pub fn cause_message(policy: &ErasurePolicy, hubspot_id: &str) -> String {
    format!(
        "HubSpot contact {hubspot_id} is gone for good (not found, not archived, not merged): {}",
        policy.row_outcome()
    )
}

/// The error of a member whose linked contact is archived (in HubSpot's recycle bin): not an
/// erasure, and nothing to update until it is restored.
pub fn archived_error(hubspot_id: &str) -> ItemError {
    ItemError {
        rule: Some("archived".into()),
        ..ItemError::new(
            "hubspot",
            format!(
                "HubSpot contact {hubspot_id} is archived (in the recycle bin): restore it in \
                 HubSpot to sync the member again (on_hubspot_archive decides what becomes of \
                 the SQL Server row)"
            ),
        )
    }
}

/// A member found erased in HubSpot, settled with its item (done) when the item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub item_id: i64,
    pub sql_key: String,
    pub hubspot_id: String,
    /// [`cause_message`].
    pub message: String,
}

impl Erasure {
    /// The one `ERASE` line: ids and counts, never a value.
    pub fn log(&self, object: &str, direction: &str, batch_id: &str, gone: &Forgotten) {
        tracing::info!(
            operation = "ERASE",
            object,
            direction,
            record_key = %self.sql_key,
            hubspot_id = %self.hubspot_id,
            batch_id,
            status = "done",
            queue_items = gone.queue_items,
            writes = gone.writes,
            conflicts = gone.conflicts,
            links = gone.links,
            history = gone.history,
            message = %self.message,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Need, load_str};
    use serde_json::{Value, json};

    fn object(erasure: &str) -> ObjectConfig {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"))
            .unwrap()
            .replace(
                "on_hubspot_erasure: { action: ignore }",
                &format!("on_hubspot_erasure: {erasure}"),
            );
        let mut config = load_str(&text, Need::Nothing, &|_| None).unwrap();
        config.objects.remove("contacts").unwrap()
    }

    #[test]
    fn each_policy_makes_its_write_of_the_member_row() {
        let ignore = ErasurePolicy::new(&object("{ action: ignore }"));
        assert_eq!(ignore.write("10045"), None);
        let delete = ErasurePolicy::new(&object("{ action: delete }"));
        let w = delete.write("10045").unwrap();
        assert!(w.delete && w.key.as_deref() == Some("10045"));
        let mark = ErasurePolicy::new(&object(
            "{ action: set_column, column: borrado_hubspot, value: 1 }",
        ));
        let w = mark.write("10045").unwrap();
        assert!(!w.delete);
        assert_eq!(
            w.changes,
            json!({"borrado_hubspot": 1}).as_object().unwrap().clone()
        );
    }

    #[test]
    fn anonymize_clears_the_personal_columns_and_keeps_the_others() {
        let policy = ErasurePolicy::new(&object(
            "{ action: anonymize, neutral: { firstname: \"(borrado)\" } }",
        ));
        let w = policy.write("10045").unwrap();
        let cleared: Vec<&str> = w.changes.keys().map(String::as_str).collect();
        for column in [
            "no__de_cedula",
            "lastname",
            "email",
            "hs_whatsapp_phone_number",
            "telefono_habitacion",
            "telefono_oficina",
            "date_of_birth",
            "nombre_y_apellidos__beneficiario_01_",
            "numero_de_cedula__beneficiario_1_",
        ] {
            assert!(cleared.contains(&column), "{column}: {cleared:?}");
            assert_eq!(w.changes[column], Value::Null, "{column}");
        }
        assert_eq!(w.changes["firstname"], "(borrado)");
        for kept in [
            "numero_asociado",
            "marital_status",
            "provincia",
            "salario_neto_semanal_o_quincenal",
            "porcentaje__beneficiario_1_",
        ] {
            assert!(!cleared.contains(&kept), "{kept}: {cleared:?}");
        }
    }

    #[test]
    fn an_erasure_logs_one_line_with_ids_and_counts_only() {
        let erasure = Erasure {
            item_id: 7,
            sql_key: "10045".into(),
            hubspot_id: "501".into(),
            message: cause_message(&ErasurePolicy::default(), "501"),
        };
        let gone = Forgotten {
            queue_items: 3,
            links: 1,
            history: 9,
            ..Forgotten::default()
        };
        let text = crate::telemetry::logged(|| erasure.log("contacts", "to_hubspot", "b-1", &gone));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        for (field, value) in [
            ("operation", json!("ERASE")),
            ("record_key", json!("10045")),
            ("hubspot_id", json!("501")),
            ("batch_id", json!("b-1")),
            ("queue_items", json!(3)),
            ("history", json!(9)),
        ] {
            assert_eq!(line[field], value, "{field}: {text}");
        }
        assert!(
            line["message"].as_str().unwrap().contains("left as it is"),
            "{text}"
        );
    }

    #[test]
    fn messages_name_ids_and_the_policy_only() {
        let policy = ErasurePolicy::new(&object("{ action: delete }"));
        let m = cause_message(&policy, "501");
        assert!(m.contains("contact 501") && m.contains("deleted"), "{m}");
        assert!(archived_error("501").message.contains("recycle bin"));
    }
}
