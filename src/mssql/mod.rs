//! SQL Server: settings, connection pool, change reader and writer (through tiberius).
//! `corpus.sql` lists every statement shape sent.

mod cursor;
mod error;
mod ident;
mod object;
mod pool;
mod reader;
mod settings;
mod sql;
mod table;
mod value;
mod writer;

pub use cursor::{ChangeCursor, Rowversion, local_to_utc, overlap_start};
pub use error::{DEADLOCK, MssqlError};
pub use ident::{Ident, IdentError, TableName};
pub use object::{
    ChangeDetection, DeletedWhen, NewRecordPolicy, SoftDelete, SqlObject, SqlObjectSettings,
};
pub use pool::{Conn, PooledConn, Rows, SqlPool, parse_connection};
pub use reader::{ChangeKind, ChangePage, ChangeReader, Poll, RowChange};
pub use settings::SqlServerSettings;
pub use table::TableShape;
pub use value::{Param, SqlRow};
pub use writer::{BatchReport, RowFailure, RowOutcome, RowWrite, SqlWriter};
