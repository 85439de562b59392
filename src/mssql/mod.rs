//! SQL Server: settings, connection pool, change reader and writer (through tiberius).

mod settings;

pub use settings::SqlServerSettings;
