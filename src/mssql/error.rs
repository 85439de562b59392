//! Errors of the SQL Server adapter; callers branch on `is_transient()` and `number()`. No
//! variant ever carries the connection string or its password.

/// An error talking to SQL Server or converting its data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MssqlError {
    /// The connection string or settings cannot work (fix the configuration).
    #[error("sql_server.connection: {0}")]
    Config(String),
    /// The TCP connection, TLS or login handshake failed, or the server went away.
    #[error("SQL Server at {addr} is unreachable: {reason}")]
    Unavailable { addr: String, reason: String },
    /// The server answered with an error (number as in `sys.messages`).
    #[error("SQL Server error {number}: {message}")]
    Server { number: u32, message: String },
    /// A column holds a type or value hubsync cannot represent.
    #[error("table {table}, column {column} ({sql_type}): {message}")]
    Type {
        table: String,
        column: String,
        sql_type: String,
        message: String,
    },
    /// The connection broke while COMMIT was in flight: the batch may or may not be applied.
    #[error("SQL Server connection lost during COMMIT; the outcome is unknown: {0}")]
    CommitUnknown(String),
    /// The server sent something the client could not parse.
    #[error("SQL Server protocol error: {0}")]
    Protocol(String),
}

/// SQL Server's error number for a deadlock victim.
pub const DEADLOCK: u32 = 1205;
/// Login failed.
pub const LOGIN_FAILED: u32 = 18456;

impl MssqlError {
    /// True when retrying later may succeed (server unreachable, deadlock, timeouts, failed
    /// login during a restart); false for bad configuration and bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::CommitUnknown(_) => true,
            Self::Server { number, .. } => {
                matches!(
                    *number,
                    DEADLOCK | LOGIN_FAILED | 1222 | 4060 | 40613 | 40197 | 40501
                )
            }
            Self::Config(_) | Self::Type { .. } | Self::Protocol(_) => false,
        }
    }

    /// SQL Server's error number, when the server sent one.
    pub fn number(&self) -> Option<u32> {
        match self {
            Self::Server { number, .. } => Some(*number),
            _ => None,
        }
    }

    /// True when the connection that produced this error must not be reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::CommitUnknown(_) | Self::Protocol(_)
        )
    }

    /// Maps a tiberius error; `addr` names the server for connection failures.
    pub(crate) fn from_tiberius(e: tiberius::error::Error, addr: &str) -> Self {
        use tiberius::error::Error as E;
        match e {
            E::Server(t) => Self::Server {
                number: t.code(),
                message: t.message().to_string(),
            },
            E::Io { message, .. } => Self::Unavailable {
                addr: addr.to_string(),
                reason: message,
            },
            E::Tls(m) => Self::Unavailable {
                addr: addr.to_string(),
                reason: tls_reason(&m),
            },
            E::Routing { host, port } => Self::Unavailable {
                addr: addr.to_string(),
                reason: format!("server redirects to {host}:{port}"),
            },
            other => Self::Protocol(other.to_string()),
        }
    }
}

/// tiberius' TLS failure in connection-string terms: a refused server certificate is named as
/// such, with the keywords that fix it (tiberius' own advice names its Rust API).
fn tls_reason(message: &str) -> String {
    const REFUSED: &str = "the server's certificate was rejected during the TLS handshake: ";
    match message.strip_prefix(REFUSED) {
        Some(rest) => {
            let cause = rest.split(" To connect anyway").next().unwrap_or(rest);
            format!(
                "TLS: the server's certificate was refused ({}): it must be issued by a CA the \
                 system trusts or the one in trustServerCertificateCA=<file>, for the name \
                 connected to (or hostNameInCertificate=<name>)",
                cause.trim_end_matches('.')
            )
        }
        None => format!("TLS: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_named_in_connection_string_terms() {
        let reason = tls_reason(
            "the server's certificate was rejected during the TLS handshake: invalid peer \
             certificate: UnknownIssuer. To connect anyway you can: (1) trust a specific CA \
             certificate with `Config::trust_cert_ca(path)`",
        );
        assert!(reason.starts_with("TLS: the server's certificate was refused (invalid peer certificate: UnknownIssuer)"), "{reason}");
        assert!(reason.contains("trustServerCertificateCA") && !reason.contains("Config::"));
        assert_eq!(tls_reason("handshake eof"), "TLS: handshake eof");
    }

    #[test]
    fn deadlocks_and_outages_are_transient_constraint_errors_are_not() {
        let dl = MssqlError::Server {
            number: DEADLOCK,
            message: "victim".into(),
        };
        assert!(dl.is_transient());
        assert_eq!(dl.number(), Some(1205));
        let pk = MssqlError::Server {
            number: 2627,
            message: "dup".into(),
        };
        assert!(!pk.is_transient());
        assert!(
            MssqlError::Unavailable {
                addr: "h:1433".into(),
                reason: "refused".into()
            }
            .is_transient()
        );
        assert!(!MssqlError::Config("x".into()).is_transient());
    }
}
