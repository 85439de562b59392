//! SQL Server: settings, connection pool, change reader and writer (through tiberius).
//! `corpus.sql` lists every statement shape sent.

mod error;
mod ident;
mod object;
mod pool;
mod settings;
mod sql;
mod value;

pub use error::{DEADLOCK, MssqlError};
pub use ident::{Ident, IdentError, TableName};
pub use object::{
    ChangeDetection, DeletedWhen, NewRecordPolicy, SoftDelete, SqlObject, SqlObjectSettings,
};
pub use pool::{Conn, PooledConn, Rows, SqlPool, parse_connection};
pub use settings::SqlServerSettings;
pub use value::{Param, SqlRow};
