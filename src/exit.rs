//! Process exit codes (BSD `sysexits.h`), so systemd and scripts can branch on the cause.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// Work finished but some records were rejected (e.g. `hubsync validate`).
pub const REJECTED: u8 = 1;
/// Malformed input data (EX_DATAERR).
pub const DATA_ERR: u8 = 65;
/// A service hubsync needs is unreachable (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Internal error (EX_SOFTWARE).
pub const SOFTWARE: u8 = 70;
/// Temporary failure: try again later, e.g. another run holds the work (EX_TEMPFAIL).
pub const TEMPFAIL: u8 = 75;
/// Configuration error (EX_CONFIG); systemd is told not to restart on it.
pub const CONFIG: u8 = 78;

/// An error that knows which exit code it maps to; the CLI prints it on one line and exits.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}
