//! The one log line written per sync operation, with the fields operators search on.

use std::time::Instant;

/// One sync operation (CREATE, UPDATE, SKIP, WRITE, ARCHIVE…) on one record. `emit` writes it as
/// a JSON log line with `operation`, `object`, `direction`, `record_key`, `hubspot_id`,
/// `batch_id`, `status`, `message` and `execution_time_ms`.
#[derive(Debug, Clone)]
pub struct OperationLog<'a> {
    pub operation: &'a str,
    pub object: &'a str,
    pub direction: &'a str,
    pub record_key: &'a str,
    pub hubspot_id: Option<&'a str>,
    pub batch_id: &'a str,
    pub status: &'a str,
    /// Free text; every line is masked on output (see [`super::mask`]).
    pub message: &'a str,
    pub started: Instant,
}

impl OperationLog<'_> {
    pub fn emit(&self) {
        let execution_time_ms = self.started.elapsed().as_millis() as u64;
        let hubspot_id = self.hubspot_id.unwrap_or("");
        let ok = matches!(self.status, "done" | "ok" | "skipped");
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    operation = self.operation,
                    object = self.object,
                    direction = self.direction,
                    record_key = self.record_key,
                    hubspot_id,
                    batch_id = self.batch_id,
                    status = self.status,
                    message = self.message,
                    execution_time_ms,
                )
            };
        }
        if ok { line!(info) } else { line!(warn) }
    }
}
