//! T-SQL subset → SQLite translation: tokenizing, splitting a batch into statements, and
//! rewriting each supported statement (brackets, `N'…'`, `@Pn`, TOP, OUTPUT, CAST/CONVERT,
//! SQL Server functions, CREATE TABLE/INDEX) into SQLite text plus what the engine needs to type
//! the result columns. Anything outside the subset is refused with an `Unsupported` error.

use super::catalog::{Catalog, ColumnDef, TableDef};
use super::types::{self, SqlType};

/// A lexical token of T-SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Unquoted word: keyword or identifier (original spelling).
    Word(String),
    /// `[x]` or `"x"`.
    Quoted(String),
    /// `'x'` (`national` for `N'x'`).
    Str {
        text: String,
        national: bool,
    },
    Num(String),
    /// `0x…`: a binary literal.
    Hex(Vec<u8>),
    /// `@name`
    Param(String),
    /// `@@NAME`
    Global(String),
    Op(String),
}

impl Tok {
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }
    fn is_op(&self, o: &str) -> bool {
        matches!(self, Tok::Op(x) if x == o)
    }
    fn text(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Num(w) | Tok::Param(w) | Tok::Op(w) => w.clone(),
            Tok::Quoted(q) => format!("[{q}]"),
            Tok::Str { text, national } => {
                format!(
                    "{}'{}'",
                    if *national { "N" } else { "" },
                    text.replace('\'', "''")
                )
            }
            Tok::Global(g) => format!("@@{g}"),
            Tok::Hex(b) => format!("0x{}", hex(b)),
        }
    }
}

/// Why a statement cannot run: SQL Server error number and message.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    pub number: u32,
    pub state: u8,
    pub class: u8,
    pub message: String,
}

impl SqlError {
    pub fn new(number: u32, state: u8, class: u8, message: impl Into<String>) -> Self {
        Self {
            number,
            state,
            class,
            message: message.into(),
        }
    }
    /// Error 102 for anything outside the simulator's subset.
    pub fn unsupported(what: impl AsRef<str>) -> Self {
        Self::new(
            102,
            1,
            15,
            format!(
                "Incorrect syntax: the SQL Server simulator does not support {}.",
                what.as_ref()
            ),
        )
    }
    pub fn syntax(near: &str) -> Self {
        Self::new(102, 1, 15, format!("Incorrect syntax near '{near}'."))
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.number, self.message)
    }
}

impl std::error::Error for SqlError {}

type Result<T> = std::result::Result<T, SqlError>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Splits T-SQL text into tokens (comments dropped).
pub fn tokenize(sql: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || ((c == 'N' || c == 'n') && next == Some('\'')) {
            let national = c != '\'';
            i += if national { 2 } else { 1 };
            let mut text = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(SqlError::new(
                            105,
                            1,
                            15,
                            "Unclosed quotation mark after the character string.",
                        ));
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str { text, national });
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            i += 1;
            let mut name = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(SqlError::syntax(&name)),
                    Some(ch) if *ch == close && chars.get(i + 1) == Some(&close) => {
                        name.push(close);
                        i += 2;
                    }
                    Some(ch) if *ch == close => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        name.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Quoted(name));
        } else if c == '@' {
            let global = next == Some('@');
            i += if global { 2 } else { 1 };
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if name.is_empty() {
                return Err(SqlError::syntax("@"));
            }
            out.push(if global {
                Tok::Global(name.to_ascii_uppercase())
            } else {
                Tok::Param(format!("@{name}"))
            });
        } else if c == '0' && matches!(next, Some('x' | 'X')) {
            // 0x… is binary; an odd number of digits gets a leading zero, as in SQL Server.
            i += 2;
            let start = i;
            while i < chars.len() && chars[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                return Err(SqlError::syntax(
                    &chars[start - 2..=i].iter().collect::<String>(),
                ));
            }
            let mut digits: String = chars[start..i].iter().collect();
            if digits.len() % 2 == 1 {
                digits.insert(0, '0');
            }
            let bytes = (0..digits.len())
                .step_by(2)
                .map(|k| u8::from_str_radix(&digits[k..k + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|_| SqlError::syntax(&digits))?;
            out.push(Tok::Hex(bytes));
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' || c == '#' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '$'
                    || chars[i] == '#')
            {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if [
                "<=", ">=", "<>", "!=", "!<", "!>", "+=", "-=", "*=", "/=", "::",
            ]
            .contains(&two.as_str())
            {
                out.push(Tok::Op(two));
                i += 2;
            } else if "(),.;=<>+-*/%&|^~".contains(c) {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            } else {
                return Err(SqlError::syntax(&c.to_string()));
            }
        }
    }
    Ok(out)
}

const STATEMENT_STARTS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "BEGIN", "COMMIT", "ROLLBACK", "SET",
    "TRUNCATE", "MERGE", "DECLARE", "IF", "WHILE", "EXEC", "EXECUTE", "USE", "PRINT", "SAVE",
    "ALTER", "GO",
];

/// Splits a batch into statements at `;` and at statement-starting keywords.
pub fn split(tokens: Vec<Tok>) -> Vec<Vec<Tok>> {
    let mut out: Vec<Vec<Tok>> = Vec::new();
    let mut cur: Vec<Tok> = Vec::new();
    let mut depth = 0i32;
    for tok in tokens {
        if tok.is_op(";") && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if tok.is_op("(") {
            depth += 1;
        } else if tok.is_op(")") {
            depth -= 1;
        }
        if depth == 0
            && !cur.is_empty()
            && let Tok::Word(w) = &tok
        {
            let upper = w.to_ascii_uppercase();
            let word = |t: &Tok| match t {
                Tok::Word(f) => f.to_ascii_uppercase(),
                _ => String::new(),
            };
            // After `WITH CHANGE_TRACKING_CONTEXT (…)` the statement is the DML that follows.
            let mut first = word(&cur[0]);
            if first == "WITH" {
                first = cur
                    .iter()
                    .skip(1)
                    .map(word)
                    .find(|w| STATEMENT_STARTS.contains(&w.as_str()))
                    .unwrap_or(first);
            }
            let starts = STATEMENT_STARTS.contains(&upper.as_str())
                && !(first == "CREATE" || first == "ALTER")
                && !(upper == "SET" && first == "UPDATE")
                && !(upper == "SELECT" && first == "INSERT")
                && !(first == "SET" && cur.len() < 3)
                && !(first == "DROP" && upper == "IF" && cur.len() == 2)
                && first != "WITH";
            if starts {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.push(tok);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How a result column is typed when the store cannot say where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemType {
    /// Known from the expression (CAST, literal, function, parameter, catalog).
    Known(SqlType),
    /// A column reference: typed from the store's column metadata.
    FromStore,
    /// `*` or `t.*`.
    Star,
    /// An expression the simulator cannot type: the statement is refused if it is not a plain
    /// column.
    Unknown(String),
}

/// A translated statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    /// `SET NOCOUNT ON|OFF`.
    NoCount(bool),
    /// `SET XACT_ABORT ON|OFF`.
    XactAbort(bool),
    /// A SET option accepted without effect.
    Ignored,
    /// `SET LOCK_TIMEOUT n` (milliseconds; -1 waits without bound).
    LockTimeout(i64),
    /// `USE [db]`.
    Use(String),
    /// A query returning rows (SELECT, or DML with OUTPUT).
    Query {
        sql: String,
        items: Vec<ItemType>,
        names: Vec<Option<String>>,
        write: bool,
        /// Affected rows of DML with OUTPUT come from the row count.
        dml: bool,
    },
    /// INSERT/UPDATE/DELETE without OUTPUT.
    Dml {
        sql: String,
        table: String,
    },
    /// CREATE TABLE: the store's DDL and the catalog entry.
    CreateTable {
        sql: Vec<String>,
        table: TableDef,
    },
    /// CREATE INDEX.
    CreateIndex {
        sql: String,
        table: String,
        name: String,
        columns: Vec<String>,
        unique: bool,
    },
    DropTable {
        sql: String,
        table: String,
    },
    /// `ALTER DATABASE … SET CHANGE_TRACKING = ON [(…)]`.
    EnableDatabaseTracking {
        database: String,
    },
    /// `ALTER TABLE … ENABLE CHANGE_TRACKING [WITH (…)]`.
    EnableTableTracking {
        table: String,
    },
    /// `WITH CHANGE_TRACKING_CONTEXT (…)` before an INSERT, UPDATE or DELETE.
    WithContext {
        context: ContextValue,
        inner: Box<Statement>,
    },
}

/// The value of `WITH CHANGE_TRACKING_CONTEXT (…)`: a varbinary(128) parameter, literal or NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextValue {
    Param(String),
    Bytes(Vec<u8>),
    Null,
}

/// Values substituted into a statement at the moment it runs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub trancount: u32,
    pub min_active_rowversion: i64,
    pub dbts: i64,
    pub scope_identity: Option<i64>,
    pub rowcount: u64,
    pub spid: u16,
    /// Declared types of the RPC parameters (with `@`).
    pub params: Vec<(String, SqlType)>,
}

/// Maps a possibly schema-qualified name (parts) to the store's table name: `dbo.t` and `t` are
/// `t`, `s.t` is `s.t`.
pub fn table_name(parts: &[String]) -> Result<String> {
    match parts {
        [t] => Ok(t.to_ascii_lowercase()),
        [s, t] if s.eq_ignore_ascii_case("dbo") => Ok(t.to_ascii_lowercase()),
        [s, t] => Ok(format!(
            "{}.{}",
            s.to_ascii_lowercase(),
            t.to_ascii_lowercase()
        )),
        [_db, s, t] => table_name(&[s.clone(), t.clone()]),
        _ => Err(SqlError::unsupported("four-part names")),
    }
}

/// Quotes a name for the store.
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// T-SQL words passed through to SQLite unchanged (SQLite understands them the same way).
const PASS: &[&str] = &[
    "SELECT", "DISTINCT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE",
    "BETWEEN", "ORDER", "BY", "ASC", "DESC", "AS", "JOIN", "INNER", "LEFT", "OUTER", "ON", "GROUP",
    "HAVING", "CASE", "WHEN", "THEN", "ELSE", "END", "EXISTS", "UNION", "ALL", "VALUES", "SET",
    "INTO", "INSERT", "UPDATE", "DELETE", "DEFAULT", "ESCAPE",
];

/// T-SQL words that change meaning or are not translated: refused.
const REFUSED: &[&str] = &[
    "MERGE",
    "APPLY",
    "CROSS",
    "PIVOT",
    "UNPIVOT",
    "OVER",
    "PARTITION",
    "EXEC",
    "EXECUTE",
    "DECLARE",
    "IF",
    "WHILE",
    "GOTO",
    "TRY",
    "CATCH",
    "THROW",
    "RAISERROR",
    "PRINT",
    "OPENQUERY",
    "OPENROWSET",
    "CONTAINS",
    "FREETEXT",
    "COLLATE",
    "INTERSECT",
    "EXCEPT",
    "FULL",
    "RIGHT",
    "OFFSET",
    "FETCH",
    "FOR",
    "READTEXT",
    "WRITETEXT",
    "UPDATETEXT",
    "TABLESAMPLE",
    "WAITFOR",
    "OPENXML",
    "OPENDATASOURCE",
    "RETURN",
    "BREAK",
    "CONTINUE",
    "CURSOR",
    "GRANT",
    "REVOKE",
    "DENY",
    "BACKUP",
    "RESTORE",
    "DBCC",
    "KILL",
    "USE",
    "ALTER",
    "IDENTITY_INSERT",
    "WITHIN",
    "TOP",
    "OUTPUT",
    "INSERTED",
    "DELETED",
    "CONVERT",
    "CAST",
    "LIMIT",
    "RETURNING",
    "GLOB",
    "REGEXP",
    "MATCH",
    "PRAGMA",
    "ATTACH",
    "DETACH",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "REPLACE",
    "ABORT",
    "FAIL",
    "IGNORE",
    "INSTEAD",
    "TRIGGER",
    "VIEW",
    "PROCEDURE",
    "PROC",
    "FUNCTION",
    "WITH",
];

/// Functions passed through (same meaning in SQLite for the types the simulator stores).
const PASS_FUNCTIONS: &[&str] = &[
    "COUNT", "MIN", "MAX", "SUM", "COALESCE", "ABS", "UPPER", "LOWER", "LTRIM", "RTRIM",
];

/// Translates one statement's tokens.
pub fn translate(tokens: &[Tok], catalog: &Catalog, ctx: &Context) -> Result<Statement> {
    let first = match tokens.first() {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        Some(t) => return Err(SqlError::syntax(&t.text())),
        None => return Err(SqlError::syntax("")),
    };
    let words: Vec<String> = tokens
        .iter()
        .map(|t| match t {
            Tok::Word(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        })
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match first.as_str() {
        "BEGIN" if matches!(w(1), "TRAN" | "TRANSACTION") && tokens.len() <= 3 => {
            Ok(Statement::Begin)
        }
        "COMMIT"
            if tokens.len() == 1
                || (matches!(w(1), "TRAN" | "TRANSACTION" | "WORK") && tokens.len() <= 3) =>
        {
            Ok(Statement::Commit)
        }
        "ROLLBACK"
            if tokens.len() == 1
                || (matches!(w(1), "TRAN" | "TRANSACTION" | "WORK") && tokens.len() <= 3) =>
        {
            Ok(Statement::Rollback)
        }
        "SET" => translate_set(tokens, &words),
        "USE" => match tokens {
            [_, Tok::Word(db) | Tok::Quoted(db)] => Ok(Statement::Use(db.clone())),
            _ => Err(SqlError::syntax(
                &tokens.get(1).map(Tok::text).unwrap_or_default(),
            )),
        },
        "SELECT" => translate_select(tokens, catalog, ctx),
        "INSERT" => translate_insert(tokens, catalog, ctx),
        "UPDATE" => translate_update(tokens, catalog, ctx),
        "DELETE" => translate_delete(tokens, catalog, ctx),
        "TRUNCATE" if w(1) == "TABLE" => {
            let (parts, end) = read_name(tokens, 2)?;
            if end != tokens.len() {
                return Err(SqlError::syntax(&tokens[end].text()));
            }
            let table = existing_table(catalog, &parts)?;
            Ok(Statement::Dml {
                sql: format!("DELETE FROM {}", q(&table.name)),
                table: table.name.clone(),
            })
        }
        "ALTER" if w(1) == "DATABASE" => translate_alter_database(tokens, &words),
        "ALTER" if w(1) == "TABLE" => translate_alter_table(tokens, &words, catalog),
        "WITH" if w(1) == "CHANGE_TRACKING_CONTEXT" => {
            if !tokens.get(2).is_some_and(|t| t.is_op("(")) {
                return Err(SqlError::syntax("CHANGE_TRACKING_CONTEXT"));
            }
            let close = close_paren(tokens, 2)?;
            let context = match &tokens[3..close] {
                [Tok::Param(p)] => ContextValue::Param(p.clone()),
                [Tok::Hex(b)] if b.len() <= 128 => ContextValue::Bytes(b.clone()),
                [Tok::Word(n)] if n.eq_ignore_ascii_case("NULL") => ContextValue::Null,
                _ => return Err(SqlError::syntax(&preview(&tokens[3..close]))),
            };
            let rest = &tokens[close + 1..];
            if !rest
                .first()
                .is_some_and(|t| t.is_word("INSERT") || t.is_word("UPDATE") || t.is_word("DELETE"))
            {
                return Err(SqlError::syntax(
                    &rest.first().map(Tok::text).unwrap_or_default(),
                ));
            }
            Ok(Statement::WithContext {
                context,
                inner: Box::new(translate(rest, catalog, ctx)?),
            })
        }
        "CREATE" if w(1) == "TABLE" => translate_create_table(tokens),
        "CREATE" => translate_create_index(tokens, &words, catalog),
        "DROP" if w(1) == "TABLE" => {
            let (start, if_exists) = if w(2) == "IF" && w(3) == "EXISTS" {
                (4, true)
            } else {
                (2, false)
            };
            let (parts, end) = read_name(tokens, start)?;
            if end != tokens.len() {
                return Err(SqlError::unsupported("dropping several tables at once"));
            }
            let name = table_name(&parts)?;
            Ok(Statement::DropTable {
                sql: format!(
                    "DROP TABLE {}{}",
                    if if_exists { "IF EXISTS " } else { "" },
                    q(&name)
                ),
                table: name,
            })
        }
        _ => Err(unsupported_statement(tokens)),
    }
}

/// `ALTER DATABASE name|CURRENT SET CHANGE_TRACKING = ON [(CHANGE_RETENTION = n unit,
/// AUTO_CLEANUP = ON|OFF)]`; other ALTER DATABASE forms are refused.
fn translate_alter_database(tokens: &[Tok], words: &[String]) -> Result<Statement> {
    let database = match tokens.get(2) {
        Some(Tok::Word(n) | Tok::Quoted(n)) => n.clone(),
        other => return Err(SqlError::syntax(&other.map(Tok::text).unwrap_or_default())),
    };
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    if !(w(3) == "SET" && w(4) == "CHANGE_TRACKING" && tokens.get(5).is_some_and(|t| t.is_op("=")))
    {
        return Err(unsupported_statement(tokens));
    }
    match w(6) {
        "ON" => {}
        "OFF" => return Err(SqlError::unsupported("turning change tracking off")),
        _ => {
            return Err(SqlError::syntax(
                &tokens.get(6).map(Tok::text).unwrap_or_default(),
            ));
        }
    }
    if let Some(open) = tokens.get(7) {
        if !open.is_op("(") || close_paren(tokens, 7)? + 1 != tokens.len() {
            return Err(SqlError::syntax(&open.text()));
        }
        for option in split_commas(&tokens[8..tokens.len() - 1]) {
            let name = option.first().map(Tok::text).unwrap_or_default();
            let ok = match name.to_ascii_uppercase().as_str() {
                "CHANGE_RETENTION" => matches!(
                    option,
                    [_, Tok::Op(eq), Tok::Num(_), Tok::Word(unit)]
                        if eq == "=" && ["DAYS", "HOURS", "MINUTES"].contains(&unit.to_ascii_uppercase().as_str())
                ),
                "AUTO_CLEANUP" => matches!(
                    option,
                    [_, Tok::Op(eq), Tok::Word(v)]
                        if eq == "=" && (v.eq_ignore_ascii_case("ON") || v.eq_ignore_ascii_case("OFF"))
                ),
                _ => false,
            };
            if !ok {
                return Err(SqlError::syntax(&name));
            }
        }
    }
    Ok(Statement::EnableDatabaseTracking { database })
}

/// `ALTER TABLE name ENABLE CHANGE_TRACKING [WITH (TRACK_COLUMNS_UPDATED = ON|OFF)]`.
fn translate_alter_table(tokens: &[Tok], words: &[String], catalog: &Catalog) -> Result<Statement> {
    let (parts, end) = read_name(tokens, 2)?;
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    if !(w(end) == "ENABLE" && w(end + 1) == "CHANGE_TRACKING") {
        return Err(unsupported_statement(tokens));
    }
    let rest = &tokens[end + 2..];
    let options_ok = match rest {
        [] => true,
        [
            Tok::Word(with),
            Tok::Op(open),
            Tok::Word(opt),
            Tok::Op(eq),
            Tok::Word(v),
            Tok::Op(close),
        ] => {
            with.eq_ignore_ascii_case("WITH")
                && open == "("
                && close == ")"
                && eq == "="
                && opt.eq_ignore_ascii_case("TRACK_COLUMNS_UPDATED")
                && (v.eq_ignore_ascii_case("ON") || v.eq_ignore_ascii_case("OFF"))
        }
        _ => false,
    };
    if !options_ok {
        return Err(SqlError::syntax(
            &rest.first().map(Tok::text).unwrap_or_default(),
        ));
    }
    let table = existing_table(catalog, &parts)?;
    Ok(Statement::EnableTableTracking {
        table: table.name.clone(),
    })
}

/// A statement outside the simulator's subset, named by its first tokens.
fn unsupported_statement(tokens: &[Tok]) -> SqlError {
    SqlError::unsupported(format!("the statement `{}`", preview(tokens)))
}

fn preview(tokens: &[Tok]) -> String {
    let text: Vec<String> = tokens.iter().take(8).map(Tok::text).collect();
    text.join(" ")
}

fn translate_set(tokens: &[Tok], words: &[String]) -> Result<Statement> {
    let opt = words.get(1).map(String::as_str).unwrap_or("");
    let on = match words.get(2).map(String::as_str) {
        Some("ON") => Some(true),
        Some("OFF") => Some(false),
        _ => None,
    };
    match (opt, on) {
        ("NOCOUNT", Some(v)) if tokens.len() == 3 => Ok(Statement::NoCount(v)),
        ("XACT_ABORT", Some(v)) if tokens.len() == 3 => Ok(Statement::XactAbort(v)),
        (
            "ANSI_NULLS"
            | "ANSI_PADDING"
            | "ANSI_WARNINGS"
            | "QUOTED_IDENTIFIER"
            | "CONCAT_NULL_YIELDS_NULL"
            | "ARITHABORT"
            | "ANSI_NULL_DFLT_ON"
            | "IMPLICIT_TRANSACTIONS",
            Some(v),
        ) if tokens.len() == 3 => {
            if opt == "IMPLICIT_TRANSACTIONS" && v {
                return Err(SqlError::unsupported("SET IMPLICIT_TRANSACTIONS ON"));
            }
            if (opt == "ANSI_NULLS" || opt == "QUOTED_IDENTIFIER") && !v {
                return Err(SqlError::unsupported(format!("SET {opt} OFF")));
            }
            Ok(Statement::Ignored)
        }
        ("TEXTSIZE", _) if tokens.len() == 3 => Ok(Statement::Ignored),
        ("LOCK_TIMEOUT", _) if tokens.len() <= 4 => {
            let n: String = tokens[2..].iter().map(Tok::text).collect();
            match n.parse::<i64>() {
                Ok(n) if n >= -1 => Ok(Statement::LockTimeout(n)),
                _ => Err(SqlError::unsupported(format!("SET LOCK_TIMEOUT {n}"))),
            }
        }
        ("TRANSACTION", _)
            if words.get(2).map(String::as_str) == Some("ISOLATION")
                && words.get(3).map(String::as_str) == Some("LEVEL") =>
        {
            Ok(Statement::Ignored)
        }
        _ => Err(unsupported_statement(tokens)),
    }
}

/// Reads a dotted name starting at `i`; returns its parts and the index after it.
fn read_name(tokens: &[Tok], mut i: usize) -> Result<(Vec<String>, usize)> {
    let mut parts = Vec::new();
    loop {
        match tokens.get(i) {
            Some(Tok::Word(w)) => parts.push(w.clone()),
            Some(Tok::Quoted(n)) => parts.push(n.clone()),
            Some(t) => return Err(SqlError::syntax(&t.text())),
            None => return Err(SqlError::syntax("")),
        }
        i += 1;
        if tokens.get(i).is_some_and(|t| t.is_op(".")) {
            i += 1;
        } else {
            return Ok((parts, i));
        }
    }
}

fn existing_table<'c>(catalog: &'c Catalog, parts: &[String]) -> Result<&'c TableDef> {
    let name = table_name(parts)?;
    catalog.table(&name).ok_or_else(|| {
        SqlError::new(
            208,
            1,
            16,
            format!("Invalid object name '{}'.", parts.join(".")),
        )
    })
}

/// Index of the matching `)` for the `(` at `open`.
fn close_paren(tokens: &[Tok], open: usize) -> Result<usize> {
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth -= 1;
            if depth == 0 {
                return Ok(i);
            }
        }
    }
    Err(SqlError::syntax("("))
}

/// Splits at top-level commas.
fn split_commas(tokens: &[Tok]) -> Vec<&[Tok]> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth -= 1;
        } else if t.is_op(",") && depth == 0 {
            out.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    out.push(&tokens[start..]);
    out
}

/// Finds the first top-level word among `stops` at or after `from`.
fn find_top_word(tokens: &[Tok], from: usize, stops: &[&str]) -> Option<usize> {
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(from) {
        if t.is_op("(") {
            depth += 1;
        } else if t.is_op(")") {
            depth -= 1;
        } else if depth == 0 && stops.iter().any(|s| t.is_word(s)) {
            return Some(i);
        }
    }
    None
}

/// Expression translator: emits SQLite text for a token run.
struct Emitter<'a> {
    catalog: &'a Catalog,
    ctx: &'a Context,
    /// Tables the statement names (to type column references).
    tables: Vec<String>,
}

impl Emitter<'_> {
    fn expr(&self, tokens: &[Tok]) -> Result<String> {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        let mut table_position = false;
        let mut in_from = false;
        while i < tokens.len() {
            let tok = &tokens[i];
            let next = tokens.get(i + 1);
            match tok {
                Tok::Word(w)
                    if next.is_some_and(|n| n.is_op("(")) && !is_keyword_before_paren(w) =>
                {
                    let close = close_paren(tokens, i + 1)?;
                    let call = self.function(w, &tokens[i + 2..close])?;
                    out.push(
                        if self.binary_operand(&tokens[i..]) == Some(close + 1 - i)
                            && self.rowversion_follows(tokens, close + 1)
                        {
                            format!("__rv({call})")
                        } else {
                            call
                        },
                    );
                    i = close + 1;
                    table_position = false;
                    continue;
                }
                Tok::Word(w) | Tok::Quoted(w) => {
                    let upper = w.to_ascii_uppercase();
                    if let Tok::Word(_) = tok {
                        if upper == "WITH" && in_from && next.is_some_and(|n| n.is_op("(")) {
                            // Table hints (NOLOCK, ROWLOCK, …): no effect on the store.
                            i = close_paren(tokens, i + 1)? + 1;
                            continue;
                        }
                        if REFUSED.contains(&upper.as_str()) {
                            return Err(SqlError::unsupported(format!("`{w}` here")));
                        }
                        if PASS.contains(&upper.as_str()) {
                            out.push(upper.clone());
                            table_position =
                                matches!(upper.as_str(), "FROM" | "JOIN" | "INTO" | "UPDATE");
                            if upper == "FROM" {
                                in_from = true;
                            } else if matches!(
                                upper.as_str(),
                                "WHERE" | "GROUP" | "ORDER" | "HAVING" | "UNION" | "SET"
                            ) {
                                in_from = false;
                            }
                            i += 1;
                            continue;
                        }
                    }
                    // `t.*`: every column of one table of the FROM clause.
                    if !table_position
                        && next.is_some_and(|n| n.is_op("."))
                        && tokens.get(i + 2).is_some_and(|t| t.is_op("*"))
                    {
                        out.push(format!("{}.*", q(w)));
                        i += 3;
                        continue;
                    }
                    let (parts, end) = read_name(tokens, i)?;
                    if table_position {
                        let name = table_name(&parts)?;
                        if self.catalog.table(&name).is_none() {
                            return Err(SqlError::new(
                                208,
                                1,
                                16,
                                format!("Invalid object name '{}'.", parts.join(".")),
                            ));
                        }
                        out.push(q(&name));
                        table_position = false;
                    } else {
                        let keep = if parts.len() > 2 {
                            &parts[parts.len() - 2..]
                        } else {
                            &parts[..]
                        };
                        let quoted: Vec<String> = keep.iter().map(|p| q(p)).collect();
                        let column_sql = quoted.join(".");
                        if let Some((lhs, op, rhs)) =
                            self.date_comparison(&parts, &column_sql, tokens, end)?
                        {
                            out.extend([lhs, op, rhs]);
                            i = end + 2;
                            continue;
                        }
                        let column_type = self.column_of(&parts);
                        if matches!(column_type, Some(SqlType::Decimal { .. }))
                            && (i > 0 && is_arithmetic(&tokens[i - 1])
                                || tokens.get(end).is_some_and(is_arithmetic))
                        {
                            return Err(SqlError::unsupported(
                                "arithmetic on decimal columns (it would not be exact)",
                            ));
                        }
                        if column_type == Some(SqlType::RowVersion)
                            && let Some(Tok::Op(op)) = tokens.get(end)
                            && is_comparison(op)
                            && let Some(len) = self.binary_operand(&tokens[end + 1..])
                        {
                            let operand = self.expr(&tokens[end + 1..end + 1 + len])?;
                            out.extend([column_sql, op.clone(), format!("__rv({operand})")]);
                            i = end + 1 + len;
                            continue;
                        }
                        out.push(column_sql);
                    }
                    i = end;
                    continue;
                }
                Tok::Str { text, .. } => {
                    let sql = format!("'{}'", text.replace('\'', "''"));
                    out.push(if self.text_compared_with_text(tokens, i) {
                        format!("{sql} COLLATE TSQL_CI")
                    } else {
                        sql
                    });
                }
                Tok::Num(n) => out.push(number_sql(n)),
                Tok::Hex(b) => {
                    let sql = format!("X'{}'", hex(b));
                    out.push(if self.rowversion_follows(tokens, i + 1) {
                        format!("__rv({sql})")
                    } else {
                        sql
                    });
                }
                Tok::Param(p) => {
                    if !self
                        .ctx
                        .params
                        .iter()
                        .any(|(name, _)| name.eq_ignore_ascii_case(p))
                    {
                        return Err(SqlError::new(
                            137,
                            2,
                            15,
                            format!("Must declare the scalar variable \"{p}\"."),
                        ));
                    }
                    if self.binary_operand(&tokens[i..]) == Some(1)
                        && self.rowversion_follows(tokens, i + 1)
                    {
                        out.push(format!("__rv({p})"));
                    } else if self.text_compared_with_text(tokens, i) {
                        out.push(format!("{p} COLLATE TSQL_CI"));
                    } else {
                        out.push(p.clone());
                    }
                }
                Tok::Global(g) => out.push(self.global(g)?),
                Tok::Op(o) => {
                    let string_neighbour =
                        matches!(tokens.get(i.wrapping_sub(1)), Some(Tok::Str { .. }))
                            || matches!(next, Some(Tok::Str { .. }));
                    // A negative literal keeps its digits: `-12.5` is one decimal, not a float.
                    let unary = match tokens.get(i.wrapping_sub(1)) {
                        None => true,
                        Some(Tok::Op(p)) => p != ")",
                        Some(Tok::Word(w)) => PASS.contains(&w.to_ascii_uppercase().as_str()),
                        Some(_) => false,
                    };
                    if o == "-"
                        && unary
                        && let Some(Tok::Num(n)) = next
                    {
                        out.push(number_sql(&format!("-{n}")));
                        i += 2;
                        continue;
                    }
                    match o.as_str() {
                        "+" if string_neighbour => out.push("||".into()),
                        "," => {
                            out.push(",".into());
                            if in_from {
                                table_position = true;
                            }
                            i += 1;
                            continue;
                        }
                        "." | "(" | ")" | "=" | "<" | ">" | "<=" | ">=" | "<>" | "!=" | "+"
                        | "-" | "*" | "/" | "%" => out.push(o.clone()),
                        _ => return Err(SqlError::unsupported(format!("the operator `{o}`"))),
                    }
                }
            }
            table_position = false;
            i += 1;
        }
        Ok(out.join(" "))
    }

    /// A date or datetime column compared with a literal or parameter compares as a date (text
    /// forms differ: '2024-01-01' vs '2024-01-01 00:00:00.0000000'), in SQL Server's type
    /// precedence (date < datetime2).
    fn date_comparison(
        &self,
        parts: &[String],
        column_sql: &str,
        tokens: &[Tok],
        end: usize,
    ) -> Result<Option<(String, String, String)>> {
        let Some(column) = parts.last() else {
            return Ok(None);
        };
        let mut types = self
            .tables
            .iter()
            .filter_map(|t| self.catalog.table(t))
            .filter_map(|t| t.column(column))
            .map(|c| c.ty);
        let ty = match (types.next(), types.next()) {
            (Some(t), None) => t,
            _ => return Ok(None),
        };
        if !matches!(
            ty,
            SqlType::Date | SqlType::DateTime2(_) | SqlType::DateTime
        ) {
            return Ok(None);
        }
        let (Some(Tok::Op(op)), Some(operand)) = (tokens.get(end), tokens.get(end + 1)) else {
            return Ok(None);
        };
        if !["=", "<", ">", "<=", ">=", "<>", "!="].contains(&op.as_str())
            || !matches!(operand, Tok::Str { .. } | Tok::Param(_))
            || tokens
                .get(end + 2)
                .is_some_and(|t| t.is_op(".") || t.is_op("(") || t.is_op("+") || t.is_op("-"))
        {
            return Ok(None);
        }
        let operand_sql = self.expr(std::slice::from_ref(operand))?;
        let operand_type = match operand {
            Tok::Param(p) => self
                .ctx
                .params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(p))
                .map(|(_, t)| *t),
            _ => None,
        };
        let wide = "DATETIME2(7)";
        Ok(Some(match (ty, operand_type) {
            (SqlType::Date, Some(SqlType::DateTime2(_) | SqlType::DateTime)) => (
                format!("__cast({column_sql}, '{wide}')"),
                op.clone(),
                operand_sql,
            ),
            (SqlType::Date, _) => (
                column_sql.to_string(),
                op.clone(),
                format!("__cast({operand_sql}, 'DATE')"),
            ),
            _ => (
                column_sql.to_string(),
                op.clone(),
                format!("__cast({operand_sql}, '{wide}')"),
            ),
        }))
    }

    /// The catalog type of a column reference when exactly one of the statement's tables has
    /// that column.
    fn column_of(&self, parts: &[String]) -> Option<SqlType> {
        let column = parts.last()?;
        let mut types = self
            .tables
            .iter()
            .filter_map(|t| self.catalog.table(t))
            .filter_map(|t| t.column(column))
            .map(|c| c.ty);
        match (types.next(), types.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }

    /// Whether the text literal or parameter at `at` is compared (`=`, `<`, …, IN) with another
    /// text literal or parameter: no column lends its collation then, so it is given here.
    fn text_compared_with_text(&self, tokens: &[Tok], at: usize) -> bool {
        let text = |t: Option<&Tok>| match t {
            Some(Tok::Str { .. }) => true,
            Some(Tok::Param(p)) => self
                .ctx
                .params
                .iter()
                .any(|(n, t)| n.eq_ignore_ascii_case(p) && t.is_text()),
            _ => false,
        };
        if !text(tokens.get(at)) {
            return false;
        }
        match tokens.get(at + 1) {
            Some(Tok::Op(op)) if is_comparison(op) => text(tokens.get(at + 2)),
            Some(t) if t.is_word("IN") => {
                tokens.get(at + 2).is_some_and(|t| t.is_op("(")) && text(tokens.get(at + 3))
            }
            _ => false,
        }
    }

    /// Whether `tokens[at]` is a comparison operator followed by a rowversion column.
    fn rowversion_follows(&self, tokens: &[Tok], at: usize) -> bool {
        let Some(Tok::Op(op)) = tokens.get(at) else {
            return false;
        };
        if !is_comparison(op) {
            return false;
        }
        match read_name(tokens, at + 1) {
            Ok((parts, end)) => {
                !tokens.get(end).is_some_and(|t| t.is_op("("))
                    && self.column_of(&parts) == Some(SqlType::RowVersion)
            }
            Err(_) => false,
        }
    }

    /// The length of a binary operand at the start of `tokens` (a `0x…` literal, a binary
    /// parameter, or CAST/CONVERT to varbinary), which compares with a rowversion by its bytes.
    fn binary_operand(&self, tokens: &[Tok]) -> Option<usize> {
        let binary = |t: &SqlType| matches!(t, SqlType::VarBinary(_) | SqlType::Binary(_));
        match tokens.first()? {
            Tok::Hex(_) => Some(1),
            Tok::Param(p) => self
                .ctx
                .params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(p))
                .filter(|(_, t)| binary(t))
                .map(|_| 1),
            Tok::Word(f)
                if (f.eq_ignore_ascii_case("CAST") || f.eq_ignore_ascii_case("CONVERT"))
                    && tokens.get(1).is_some_and(|t| t.is_op("(")) =>
            {
                let close = close_paren(tokens, 1).ok()?;
                let args = &tokens[2..close];
                let target = if f.eq_ignore_ascii_case("CAST") {
                    let at = find_top_word(args, 0, &["AS"])?;
                    SqlType::parse(&type_text(&args[at + 1..]))?
                } else {
                    SqlType::parse(&type_text(split_commas(args).first()?))?
                };
                matches!(target, SqlType::VarBinary(_) | SqlType::Binary(_)).then_some(close + 1)
            }
            _ => None,
        }
    }

    fn global(&self, g: &str) -> Result<String> {
        Ok(match g {
            "TRANCOUNT" => self.ctx.trancount.to_string(),
            "ROWCOUNT" => self.ctx.rowcount.to_string(),
            "SPID" => self.ctx.spid.to_string(),
            "DBTS" => self.ctx.dbts.to_string(),
            "IDENTITY" => self
                .ctx
                .scope_identity
                .map_or("NULL".into(), |v| v.to_string()),
            "VERSION" => "'Microsoft SQL Server 2022 (hubsync simulator)'".into(),
            _ => return Err(SqlError::unsupported(format!("@@{g}"))),
        })
    }

    fn function(&self, name: &str, args: &[Tok]) -> Result<String> {
        let upper = name.to_ascii_uppercase();
        let none = args.is_empty();
        Ok(match upper.as_str() {
            "CAST" => {
                let at = find_top_word(args, 0, &["AS"]).ok_or_else(|| SqlError::syntax("CAST"))?;
                let ty = type_text(&args[at + 1..]);
                let sql_type = SqlType::parse(&ty)
                    .ok_or_else(|| SqlError::unsupported(format!("CAST to `{ty}`")))?;
                typed(
                    format!("__cast({}, '{}')", self.expr(&args[..at])?, sql_type.name()),
                    sql_type,
                )
            }
            "CONVERT" => {
                let parts = split_commas(args);
                if parts.len() != 2 {
                    return Err(SqlError::unsupported("CONVERT with a style"));
                }
                let ty = type_text(parts[0]);
                let sql_type = SqlType::parse(&ty)
                    .ok_or_else(|| SqlError::unsupported(format!("CONVERT to `{ty}`")))?;
                typed(
                    format!("__cast({}, '{}')", self.expr(parts[1])?, sql_type.name()),
                    sql_type,
                )
            }
            "MIN_ACTIVE_ROWVERSION" if none => self.ctx.min_active_rowversion.to_string(),
            "CHANGE_TRACKING_CURRENT_VERSION" if none => "__ct_current()".into(),
            "CHANGE_TRACKING_MIN_VALID_VERSION" => {
                format!("__ct_min_valid({})", self.expr(args)?)
            }
            "OBJECT_ID" => match split_commas(args).as_slice() {
                [name] => format!("__object_id({})", self.expr(name)?),
                [name, [Tok::Str { text, .. }]] if text.trim().eq_ignore_ascii_case("U") => {
                    format!("__object_id({})", self.expr(name)?)
                }
                _ => {
                    return Err(SqlError::unsupported(
                        "OBJECT_ID with an object type other than 'U'",
                    ));
                }
            },
            "CHANGETABLE" => self.changetable(args)?,
            "SCOPE_IDENTITY" if none => self
                .ctx
                .scope_identity
                .map_or("NULL".into(), |v| v.to_string()),
            "SYSUTCDATETIME" | "GETUTCDATE" if none => "__sysutcdatetime()".into(),
            "SYSDATETIME" | "GETDATE" | "CURRENT_TIMESTAMP" if none => "__sysdatetime()".into(),
            "LEN" => format!("__len({})", self.expr(args)?),
            "COUNT_BIG" => format!("COUNT({})", self.expr(args)?),
            "SUM" | "AVG" | "ABS"
                if matches!(
                    self.column_type(args, &self.tables),
                    Some(SqlType::Decimal { .. })
                ) =>
            {
                return Err(SqlError::unsupported(format!(
                    "{upper}() over a decimal column (it would not be exact)"
                )));
            }
            f if f == "ISNULL" || PASS_FUNCTIONS.contains(&f) => {
                let sql = format!(
                    "{}({})",
                    if f == "ISNULL" { "IFNULL" } else { f },
                    self.expr(args)?
                );
                // The result keeps the first argument's comparison rules (collation, decimal
                // order), which SQLite drops for function results.
                match split_commas(args).first() {
                    Some(first) if f != "COUNT" => match self.column_type(first, &self.tables) {
                        Some(t) => typed(sql, t),
                        None => sql,
                    },
                    _ => sql,
                }
            }
            _ => return Err(SqlError::unsupported(format!("the function {name}()"))),
        })
    }

    /// `CHANGETABLE(CHANGES table, last_sync_version)` as a derived table over the table's change
    /// table: the last committed change of every key changed after the version, its operation
    /// `I` when the row was created after it (`D` when deleted, else `U`).
    fn changetable(&self, args: &[Tok]) -> Result<String> {
        let parts = split_commas(args);
        match parts.first().and_then(|p| p.first()) {
            Some(t) if t.is_word("CHANGES") => {}
            Some(t) if t.is_word("VERSION") => {
                return Err(SqlError::unsupported("CHANGETABLE(VERSION …)"));
            }
            _ => return Err(SqlError::syntax("CHANGETABLE")),
        }
        let [first, version] = parts.as_slice() else {
            return Err(SqlError::syntax("CHANGETABLE"));
        };
        let (name_parts, end) = read_name(first, 1)?;
        if end != first.len() {
            return Err(SqlError::syntax(&first[end].text()));
        }
        let name = table_name(&name_parts)?;
        let table = self.catalog.table(&name).ok_or_else(|| {
            SqlError::new(
                208,
                1,
                16,
                format!("Invalid object name '{}'.", name_parts.join(".")),
            )
        })?;
        let side = self.catalog.change_table(&name).ok_or_else(|| {
            SqlError::new(
                22105,
                1,
                16,
                format!(
                    "Change tracking is not enabled on table '{}'.",
                    table.display
                ),
            )
        })?;
        // A parameter, a literal or NULL: an expression is a syntax error in SQL Server.
        let since = match version {
            [Tok::Param(_) | Tok::Num(_)] => self.expr(version)?,
            [Tok::Word(n)] if n.eq_ignore_ascii_case("NULL") => "NULL".into(),
            _ => return Err(SqlError::syntax(&preview(version))),
        };
        let keys: Vec<String> = table
            .primary_key
            .iter()
            .filter_map(|k| table.column(k))
            .map(|c| q(&c.name))
            .collect();
        Ok(format!(
            "(SELECT {}, \"SYS_CHANGE_VERSION\", \"SYS_CHANGE_CREATION_VERSION\", \
             CASE WHEN \"SYS_CHANGE_OPERATION\" = 'D' THEN 'D' \
             WHEN \"SYS_CHANGE_CREATION_VERSION\" > IFNULL({since}, -1) THEN 'I' ELSE 'U' END \
             AS \"SYS_CHANGE_OPERATION\", \"SYS_CHANGE_COLUMNS\", \"SYS_CHANGE_CONTEXT\" \
             FROM {} WHERE \"SYS_CHANGE_VERSION\" > IFNULL({since}, -1))",
            keys.join(", "),
            q(&side.name)
        ))
    }

    /// The result type of a select-list item, as far as the expression tells.
    fn item_type(&self, item: &[Tok], tables: &[String]) -> ItemType {
        let expr = strip_alias(item);
        match expr {
            [Tok::Op(s)] if s == "*" => return ItemType::Star,
            [_, Tok::Op(d), Tok::Op(s)] if d == "." && s == "*" => return ItemType::Star,
            [Tok::Num(n)] => {
                return match n.parse::<i64>() {
                    Ok(v) if i32::try_from(v).is_ok() => ItemType::Known(SqlType::Int),
                    _ if n.contains(['e', 'E']) => ItemType::Known(SqlType::Float),
                    _ => types::decimal_literal_type(n)
                        .map_or(ItemType::Unknown(n.clone()), ItemType::Known),
                };
            }
            [Tok::Hex(b)] => {
                return ItemType::Known(SqlType::VarBinary(Some(b.len().clamp(1, 8000) as u16)));
            }
            [Tok::Str { text, national }] => {
                let len = Some(text.chars().count().clamp(1, 4000) as u16);
                return ItemType::Known(if *national {
                    SqlType::NVarChar(len)
                } else {
                    SqlType::VarChar(len)
                });
            }
            [Tok::Word(n)] if n.eq_ignore_ascii_case("NULL") => {
                return ItemType::Known(SqlType::Int);
            }
            [Tok::Param(p)] => {
                return self
                    .ctx
                    .params
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(p))
                    .map_or(ItemType::Unknown(p.clone()), |(_, t)| ItemType::Known(*t));
            }
            [Tok::Global(g)] => {
                return match g.as_str() {
                    "TRANCOUNT" | "ROWCOUNT" => ItemType::Known(SqlType::Int),
                    "SPID" => ItemType::Known(SqlType::SmallInt),
                    "DBTS" => ItemType::Known(SqlType::VarBinary(Some(8))),
                    "IDENTITY" => ItemType::Known(SqlType::Decimal {
                        precision: 38,
                        scale: 0,
                        numeric: true,
                    }),
                    "VERSION" => ItemType::Known(SqlType::NVarChar(Some(300))),
                    _ => ItemType::Unknown(g.clone()),
                };
            }
            _ => {}
        }
        if let Some(Tok::Word(f)) = expr.first()
            && expr.get(1).is_some_and(|t| t.is_op("("))
            && close_paren(expr, 1).ok() == Some(expr.len() - 1)
        {
            let args = &expr[2..expr.len() - 1];
            let upper = f.to_ascii_uppercase();
            let known = match upper.as_str() {
                "CAST" => find_top_word(args, 0, &["AS"])
                    .and_then(|at| SqlType::parse(&type_text(&args[at + 1..]))),
                "CONVERT" => split_commas(args)
                    .first()
                    .and_then(|t| SqlType::parse(&type_text(t))),
                "COUNT" => Some(SqlType::Int),
                "COUNT_BIG" => Some(SqlType::BigInt),
                "MIN_ACTIVE_ROWVERSION" => Some(SqlType::Binary(8)),
                "CHANGE_TRACKING_CURRENT_VERSION" | "CHANGE_TRACKING_MIN_VALID_VERSION" => {
                    Some(SqlType::BigInt)
                }
                "OBJECT_ID" => Some(SqlType::Int),
                "SCOPE_IDENTITY" => Some(SqlType::Decimal {
                    precision: 38,
                    scale: 0,
                    numeric: true,
                }),
                "SYSUTCDATETIME" | "SYSDATETIME" => Some(SqlType::DateTime2(7)),
                "GETUTCDATE" | "GETDATE" => Some(SqlType::DateTime),
                "LEN" => Some(SqlType::Int),
                "MIN" | "MAX" | "ISNULL" | "COALESCE" | "UPPER" | "LOWER" | "LTRIM" | "RTRIM" => {
                    let first_arg = split_commas(args).first().copied().unwrap_or(&[]);
                    self.column_type(first_arg, tables)
                }
                _ => None,
            };
            if let Some(t) = known {
                return ItemType::Known(t);
            }
        }
        if expr
            .iter()
            .all(|t| matches!(t, Tok::Word(_) | Tok::Quoted(_)) || t.is_op("."))
        {
            // CHANGETABLE's computed columns have no store origin: typed from the change table.
            if change_column(expr).is_some()
                && let Some(t) = self.column_type(expr, tables)
            {
                return ItemType::Known(t);
            }
            return ItemType::FromStore;
        }
        let text: Vec<String> = expr.iter().map(Tok::text).collect();
        ItemType::Unknown(text.join(" "))
    }

    /// The catalog type of a column reference among the statement's tables.
    fn column_type(&self, tokens: &[Tok], tables: &[String]) -> Option<SqlType> {
        let (parts, end) = read_name(tokens, 0).ok()?;
        if end != tokens.len() {
            return None;
        }
        let column = parts.last()?;
        let mut found = tables
            .iter()
            .filter_map(|t| self.catalog.table(t))
            .filter_map(|t| t.column(column));
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Some(first.ty)
    }
}

fn is_arithmetic(t: &Tok) -> bool {
    ["+", "-", "*", "/", "%"].iter().any(|o| t.is_op(o))
}

fn is_comparison(op: &str) -> bool {
    ["=", "<", ">", "<=", ">=", "<>", "!=", "!<", "!>"].contains(&op)
}

/// A numeric literal for the store: integers as they are; decimals (`12.50`, or integers beyond
/// 64 bits) as text compared by value, so no digit is lost to a float; `1e3` is a float.
fn number_sql(n: &str) -> String {
    let float = n.contains(['e', 'E']);
    if !float && (n.contains('.') || n.parse::<i64>().is_err()) {
        typed(
            format!("'{n}'"),
            SqlType::Decimal {
                precision: 38,
                scale: 0,
                numeric: true,
            },
        )
    } else {
        n.to_string()
    }
}

/// Gives an expression of type `ty` SQL Server's comparison rules in the store: text compares
/// under the Latin1_General_CI_AS collation, decimals (kept as text) by value.
fn typed(sql: String, ty: SqlType) -> String {
    match ty {
        SqlType::Decimal { .. } => format!("CAST({sql} AS TEXT) COLLATE TSQL_DECIMAL"),
        t if t.is_text() => format!("{sql} COLLATE TSQL_CI"),
        _ => sql,
    }
}

fn is_keyword_before_paren(w: &str) -> bool {
    let u = w.to_ascii_uppercase();
    matches!(
        u.as_str(),
        "IN" | "VALUES"
            | "EXISTS"
            | "AND"
            | "OR"
            | "NOT"
            | "ON"
            | "AS"
            | "WHEN"
            | "THEN"
            | "ELSE"
            | "FROM"
            | "WHERE"
            | "SELECT"
            | "BY"
            | "IS"
            | "LIKE"
            | "BETWEEN"
            | "UNION"
            | "ALL"
            | "JOIN"
            | "SET"
            | "INTO"
            | "CASE"
            | "HAVING"
            | "DISTINCT"
    ) || REFUSED.contains(&u.as_str()) && !matches!(u.as_str(), "CAST" | "CONVERT" | "REPLACE")
}

/// Drops a trailing `AS alias` or bare alias from a select-list item.
fn strip_alias(item: &[Tok]) -> &[Tok] {
    let n = item.len();
    if n >= 3 && item[n - 2].is_word("AS") {
        return &item[..n - 2];
    }
    if n >= 2 {
        let last_is_name = matches!(&item[n - 1], Tok::Quoted(_))
            || matches!(&item[n - 1], Tok::Word(w) if !PASS.contains(&w.to_ascii_uppercase().as_str()));
        let before_ok = !item[n - 2].is_op(".")
            && !matches!(item[n - 2], Tok::Op(_) if !item[n - 2].is_op(")"));
        if last_is_name && before_ok {
            return &item[..n - 1];
        }
    }
    item
}

/// The alias of a select-list item, if any.
fn item_alias(item: &[Tok]) -> Option<String> {
    let stripped = strip_alias(item);
    if stripped.len() == item.len() {
        return None;
    }
    match item.last() {
        Some(Tok::Word(w) | Tok::Quoted(w)) => Some(w.clone()),
        Some(Tok::Str { text, .. }) => Some(text.clone()),
        _ => None,
    }
}

fn type_text(tokens: &[Tok]) -> String {
    tokens.iter().map(Tok::text).collect::<Vec<_>>().join("")
}

/// The column name when `expr` is a bare reference to one of CHANGETABLE's `SYS_CHANGE_…`
/// columns.
fn change_column(expr: &[Tok]) -> Option<String> {
    let (parts, end) = read_name(expr, 0).ok()?;
    let last = parts.last()?;
    (end == expr.len() && last.to_ascii_uppercase().starts_with("SYS_CHANGE_"))
        .then(|| last.clone())
}

/// Table names referenced in FROM/JOIN of a token run (a CHANGETABLE stands for its table's
/// change table).
fn referenced_tables(tokens: &[Tok]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_from = false;
    while i < tokens.len() {
        let t = &tokens[i];
        let after_comma = in_from && t.is_op(",");
        if t.is_word("FROM")
            || t.is_word("JOIN")
            || t.is_word("UPDATE")
            || t.is_word("INTO")
            || after_comma
        {
            if t.is_word("FROM") {
                in_from = true;
            }
            if tokens.get(i + 1).is_some_and(|t| t.is_word("CHANGETABLE"))
                && tokens.get(i + 2).is_some_and(|t| t.is_op("("))
                && tokens.get(i + 3).is_some_and(|t| t.is_word("CHANGES"))
            {
                if let Ok((parts, _)) = read_name(tokens, i + 4)
                    && let Ok(name) = table_name(&parts)
                {
                    out.push(super::catalog::change_table_name(&name));
                }
                i += 2;
                continue;
            }
            if let Ok((parts, end)) = read_name(tokens, i + 1) {
                if let Ok(name) = table_name(&parts) {
                    out.push(name);
                }
                i = end;
                continue;
            }
        } else if t.is_word("WHERE") || t.is_word("ORDER") || t.is_word("GROUP") {
            in_from = false;
        }
        i += 1;
    }
    out
}

/// Reads `TOP (expr)` / `TOP n` at `i`; returns the LIMIT text and the index after it.
fn read_top(e: &Emitter<'_>, tokens: &[Tok], i: usize) -> Result<(String, usize)> {
    let (limit, end) = if tokens.get(i + 1).is_some_and(|t| t.is_op("(")) {
        let close = close_paren(tokens, i + 1)?;
        (e.expr(&tokens[i + 2..close])?, close + 1)
    } else {
        match tokens.get(i + 1) {
            Some(Tok::Num(n)) => (n.clone(), i + 2),
            Some(Tok::Param(p)) => (e.expr(std::slice::from_ref(&Tok::Param(p.clone())))?, i + 2),
            _ => return Err(SqlError::syntax("TOP")),
        }
    };
    if tokens
        .get(end)
        .is_some_and(|t| t.is_word("PERCENT") || t.is_word("WITH"))
    {
        return Err(SqlError::unsupported("TOP … PERCENT / WITH TIES"));
    }
    Ok((limit, end))
}

fn translate_select(tokens: &[Tok], catalog: &Catalog, ctx: &Context) -> Result<Statement> {
    let e = Emitter {
        catalog,
        ctx,
        tables: referenced_tables(tokens),
    };
    let mut i = 1;
    let mut head = vec!["SELECT".to_string()];
    if tokens.get(i).is_some_and(|t| t.is_word("DISTINCT")) {
        head.push("DISTINCT".into());
        i += 1;
    }
    let mut limit = None;
    if tokens.get(i).is_some_and(|t| t.is_word("TOP")) {
        let (l, end) = read_top(&e, tokens, i)?;
        limit = Some(l);
        i = end;
    }
    // TOP anywhere else (subqueries) is not translated.
    if tokens[i..]
        .iter()
        .any(|t| t.is_word("TOP") || t.is_word("INTO"))
    {
        return Err(SqlError::unsupported("TOP in subqueries or SELECT … INTO"));
    }
    let list_end = find_top_word(tokens, i, &["FROM"]).unwrap_or(tokens.len());
    let tables = referenced_tables(&tokens[list_end..]);
    let list = &tokens[i..list_end];
    let items_tokens = split_commas(list);
    let mut items = Vec::new();
    let mut names = Vec::new();
    let mut list_sql = Vec::new();
    for item in &items_tokens {
        if item.is_empty() {
            return Err(SqlError::syntax(","));
        }
        let item_type = e.item_type(item, &tables);
        let body = strip_alias(item);
        // A bare column keeps the query's spelling as its name, as in SQL Server.
        let alias = item_alias(item)
            .or_else(|| match (&item_type, read_name(body, 0)) {
                (ItemType::FromStore, Ok((parts, end))) if end == body.len() => {
                    parts.last().cloned()
                }
                _ => None,
            })
            .or_else(|| change_column(body));
        items.push(item_type);
        let mut sql = e.expr(body)?;
        if let Some(a) = &alias {
            sql = format!("{sql} AS {}", q(a));
        }
        names.push(alias);
        list_sql.push(sql);
    }
    let rest = e.expr(&tokens[list_end..])?;
    let mut sql = format!("{} {} {}", head.join(" "), list_sql.join(", "), rest);
    if let Some(l) = limit {
        sql = format!("{sql} LIMIT {l}");
    }
    Ok(Statement::Query {
        sql,
        items,
        names,
        write: false,
        dml: false,
    })
}

/// Parses an OUTPUT clause: returns the RETURNING list and the item types.
fn output_clause(
    e: &Emitter<'_>,
    list: &[Tok],
    table: &TableDef,
    allow: &str,
) -> Result<Returning> {
    let mut sql = Vec::new();
    let mut items = Vec::new();
    let mut names = Vec::new();
    for item in split_commas(list) {
        let alias = item_alias(item);
        let body = strip_alias(item);
        let (prefix, column) = match body {
            [Tok::Word(p), Tok::Op(d), c] if d == "." => (p.to_ascii_uppercase(), c),
            _ => {
                return Err(SqlError::unsupported(
                    "OUTPUT items other than INSERTED.column / DELETED.column",
                ));
            }
        };
        if prefix != allow {
            return Err(SqlError::unsupported(format!(
                "OUTPUT {prefix}.… in this statement"
            )));
        }
        let columns: Vec<&ColumnDef> = match column {
            Tok::Op(s) if s == "*" => table.columns.iter().collect(),
            Tok::Word(c) | Tok::Quoted(c) => {
                vec![table.column(c).ok_or_else(|| invalid_column(c))?]
            }
            _ => return Err(SqlError::syntax(&column.text())),
        };
        for c in columns {
            let name = alias.clone().unwrap_or_else(|| c.name.clone());
            sql.push(format!("{} AS {}", q(&c.name), q(&name)));
            items.push(ItemType::Known(c.ty));
            names.push(Some(name));
        }
    }
    let _ = e;
    Ok((sql.join(", "), items, names))
}

/// Wraps a value assigned to `column` so the store canonicalizes and checks it.
fn store_expr(sql: &str, table: &TableDef, column: &ColumnDef) -> String {
    format!(
        "__store({sql}, '{}', '{}', '{}')",
        column.ty.name(),
        table.display.replace('\'', "''"),
        column.name.replace('\'', "''")
    )
}

/// An OUTPUT clause parsed into the RETURNING list, result types and names.
type Returning = (String, Vec<ItemType>, Vec<Option<String>>);

/// INSERT/UPDATE/DELETE: with OUTPUT it returns rows (RETURNING), otherwise a row count.
fn dml_statement(sql: String, table: &str, returning: Option<Returning>) -> Statement {
    match returning {
        Some((ret, items, names)) => Statement::Query {
            sql: format!("{sql} RETURNING {ret}"),
            items,
            names,
            write: true,
            dml: true,
        },
        None => Statement::Dml {
            sql,
            table: table.to_string(),
        },
    }
}

/// Error 207.
pub fn invalid_column(name: &str) -> SqlError {
    SqlError::new(207, 1, 16, format!("Invalid column name '{name}'."))
}

fn translate_insert(tokens: &[Tok], catalog: &Catalog, ctx: &Context) -> Result<Statement> {
    let e = Emitter {
        catalog,
        ctx,
        tables: referenced_tables(tokens),
    };
    let mut i = 1;
    if tokens.get(i).is_some_and(|t| t.is_word("INTO")) {
        i += 1;
    }
    let (parts, end) = read_name(tokens, i)?;
    let table = existing_table(catalog, &parts)?;
    i = end;
    let columns: Vec<&ColumnDef> = if tokens.get(i).is_some_and(|t| t.is_op("(")) {
        let close = close_paren(tokens, i)?;
        let mut cols = Vec::new();
        for c in split_commas(&tokens[i + 1..close]) {
            let (cp, cend) = read_name(c, 0)?;
            if cend != c.len() {
                return Err(SqlError::syntax(&c[cend].text()));
            }
            let name = cp.last().cloned().unwrap_or_default();
            let def = table.column(&name).ok_or_else(|| invalid_column(&name))?;
            if def.ty == SqlType::RowVersion {
                return Err(SqlError::new(
                    273,
                    1,
                    16,
                    "Cannot insert an explicit value into a timestamp column. Use INSERT with a column list to exclude the timestamp column, or insert a DEFAULT into the timestamp column.",
                ));
            }
            if def.identity {
                return Err(SqlError::new(
                    544,
                    1,
                    16,
                    format!(
                        "Cannot insert explicit value for identity column in table '{}' when IDENTITY_INSERT is set to OFF.",
                        table.name
                    ),
                ));
            }
            cols.push(def);
        }
        i = close + 1;
        cols
    } else {
        table
            .columns
            .iter()
            .filter(|c| c.ty != SqlType::RowVersion && !c.identity)
            .collect()
    };
    let mut returning = None;
    if tokens.get(i).is_some_and(|t| t.is_word("OUTPUT")) {
        let values_at = find_top_word(tokens, i, &["VALUES", "DEFAULT", "SELECT"])
            .ok_or_else(|| SqlError::syntax("OUTPUT"))?;
        returning = Some(output_clause(
            &e,
            &tokens[i + 1..values_at],
            table,
            "INSERTED",
        )?);
        i = values_at;
    }
    let body = if tokens.get(i).is_some_and(|t| t.is_word("VALUES")) {
        let mut rows = Vec::new();
        let tuples = split_commas(&tokens[i + 1..]);
        if tuples.len() > 1000 {
            return Err(SqlError::new(
                10738,
                1,
                15,
                "The number of row value expressions in the INSERT statement exceeds the maximum allowed number of 1000 row values.",
            ));
        }
        for tuple in tuples {
            if !(tuple.first().is_some_and(|t| t.is_op("("))
                && close_paren(tuple, 0).ok() == Some(tuple.len() - 1))
            {
                return Err(SqlError::syntax(
                    &tuple.first().map(Tok::text).unwrap_or_default(),
                ));
            }
            let values = split_commas(&tuple[1..tuple.len() - 1]);
            if values.len() != columns.len() {
                return Err(SqlError::new(
                    110,
                    1,
                    15,
                    "There are fewer columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.",
                ));
            }
            let mut out = Vec::new();
            for (v, c) in values.iter().zip(&columns) {
                if v.len() == 1 && v[0].is_word("DEFAULT") {
                    return Err(SqlError::unsupported("DEFAULT in VALUES"));
                }
                out.push(store_expr(&e.expr(v)?, table, c));
            }
            rows.push(format!("({})", out.join(", ")));
        }
        let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
        format!("({}) VALUES {}", names.join(", "), rows.join(", "))
    } else if tokens.get(i).is_some_and(|t| t.is_word("DEFAULT"))
        && tokens.get(i + 1).is_some_and(|t| t.is_word("VALUES"))
        && tokens.len() == i + 2
    {
        "DEFAULT VALUES".to_string()
    } else {
        return Err(SqlError::unsupported("INSERT without VALUES"));
    };
    let sql = format!("INSERT INTO {} {body}", q(&table.name));
    Ok(dml_statement(sql, &table.name, returning))
}

fn translate_update(tokens: &[Tok], catalog: &Catalog, ctx: &Context) -> Result<Statement> {
    let e = Emitter {
        catalog,
        ctx,
        tables: referenced_tables(tokens),
    };
    if tokens.get(1).is_some_and(|t| t.is_word("TOP")) {
        return Err(SqlError::unsupported("UPDATE TOP"));
    }
    let (parts, mut i) = read_name(tokens, 1)?;
    let table = existing_table(catalog, &parts)?;
    if tokens.get(i).is_some_and(|t| t.is_word("WITH"))
        && tokens.get(i + 1).is_some_and(|t| t.is_op("("))
    {
        i = close_paren(tokens, i + 1)? + 1;
    }
    if !tokens.get(i).is_some_and(|t| t.is_word("SET")) {
        return Err(SqlError::syntax(
            &tokens.get(i).map(Tok::text).unwrap_or_default(),
        ));
    }
    let set_end =
        find_top_word(tokens, i + 1, &["OUTPUT", "WHERE", "FROM"]).unwrap_or(tokens.len());
    if tokens.get(set_end).is_some_and(|t| t.is_word("FROM")) {
        return Err(SqlError::unsupported("UPDATE … FROM"));
    }
    let mut sets = Vec::new();
    for item in split_commas(&tokens[i + 1..set_end]) {
        let eq = item
            .iter()
            .position(|t| matches!(t, Tok::Op(_)))
            .ok_or_else(|| SqlError::syntax("SET"))?;
        if !item[eq].is_op("=") && !item[eq].is_op(".") {
            return Err(SqlError::unsupported(format!(
                "`{}` in SET",
                item[eq].text()
            )));
        }
        let (cp, cend) = read_name(item, 0)?;
        if !item.get(cend).is_some_and(|t| t.is_op("=")) {
            return Err(SqlError::syntax(
                &item.get(cend).map(Tok::text).unwrap_or_default(),
            ));
        }
        let name = cp.last().cloned().unwrap_or_default();
        let def = table.column(&name).ok_or_else(|| invalid_column(&name))?;
        if def.ty == SqlType::RowVersion {
            return Err(SqlError::new(
                272,
                1,
                16,
                "Cannot update a timestamp column.",
            ));
        }
        if def.identity {
            return Err(SqlError::new(
                8102,
                1,
                16,
                format!("Cannot update identity column '{}'.", def.name),
            ));
        }
        sets.push(format!(
            "{} = {}",
            q(&def.name),
            store_expr(&e.expr(&item[cend + 1..])?, table, def)
        ));
    }
    if let Some(rv) = table.columns.iter().find(|c| c.ty == SqlType::RowVersion) {
        sets.push(format!("{} = __next_rv()", q(&rv.name)));
    }
    let mut j = set_end;
    let mut returning = None;
    if tokens.get(j).is_some_and(|t| t.is_word("OUTPUT")) {
        let end = find_top_word(tokens, j, &["WHERE"]).unwrap_or(tokens.len());
        returning = Some(output_clause(&e, &tokens[j + 1..end], table, "INSERTED")?);
        j = end;
    }
    let where_sql = e.expr(&tokens[j..])?;
    let sql = format!(
        "UPDATE {} SET {} {}",
        q(&table.name),
        sets.join(", "),
        where_sql
    );
    Ok(dml_statement(sql, &table.name, returning))
}

fn translate_delete(tokens: &[Tok], catalog: &Catalog, ctx: &Context) -> Result<Statement> {
    let e = Emitter {
        catalog,
        ctx,
        tables: referenced_tables(tokens),
    };
    let mut i = 1;
    if tokens.get(i).is_some_and(|t| t.is_word("TOP")) {
        return Err(SqlError::unsupported("DELETE TOP"));
    }
    if tokens.get(i).is_some_and(|t| t.is_word("FROM")) {
        i += 1;
    }
    let (parts, mut i) = read_name(tokens, i)?;
    let table = existing_table(catalog, &parts)?;
    let mut returning = None;
    if tokens.get(i).is_some_and(|t| t.is_word("OUTPUT")) {
        let end = find_top_word(tokens, i, &["WHERE"]).unwrap_or(tokens.len());
        returning = Some(output_clause(&e, &tokens[i + 1..end], table, "DELETED")?);
        i = end;
    }
    if tokens.get(i).is_some_and(|t| !t.is_word("WHERE")) {
        return Err(SqlError::unsupported(format!(
            "`{}` in DELETE",
            tokens[i].text()
        )));
    }
    let sql = format!("DELETE FROM {} {}", q(&table.name), e.expr(&tokens[i..])?);
    Ok(dml_statement(sql, &table.name, returning))
}

fn translate_create_table(tokens: &[Tok]) -> Result<Statement> {
    let (parts, i) = read_name(tokens, 2)?;
    let name = table_name(&parts)?;
    let display = if parts.len() == 1 {
        format!("dbo.{}", parts[0])
    } else {
        parts[parts.len() - 2..].join(".")
    };
    if !tokens.get(i).is_some_and(|t| t.is_op("(")) {
        return Err(SqlError::syntax(
            &tokens.get(i).map(Tok::text).unwrap_or_default(),
        ));
    }
    let close = close_paren(tokens, i)?;
    if close + 1 != tokens.len() {
        return Err(SqlError::unsupported("table options after the column list"));
    }
    let mut table = TableDef {
        name: name.clone(),
        display,
        columns: Vec::new(),
        primary_key: Vec::new(),
        primary_key_name: None,
        unique: Vec::new(),
    };
    let mut column_sql = Vec::new();
    let mut table_constraints = Vec::new();
    for def in split_commas(&tokens[i + 1..close]) {
        let mut d = def;
        let mut constraint_name = None;
        if d.first().is_some_and(|t| t.is_word("CONSTRAINT")) {
            constraint_name = d.get(1).map(|t| match t {
                Tok::Word(w) | Tok::Quoted(w) => w.clone(),
                other => other.text(),
            });
            d = &d[2.min(d.len())..];
        }
        let head = d.first().map(|t| match t {
            Tok::Word(w) => w.to_ascii_uppercase(),
            _ => String::new(),
        });
        match head.as_deref() {
            Some("PRIMARY") | Some("UNIQUE") => {
                let primary = head.as_deref() == Some("PRIMARY");
                let open = d
                    .iter()
                    .position(|t| t.is_op("("))
                    .ok_or_else(|| SqlError::syntax("KEY"))?;
                let end = close_paren(d, open)?;
                let cols: Vec<String> = split_commas(&d[open + 1..end])
                    .iter()
                    .filter_map(|c| match c.first() {
                        Some(Tok::Word(w) | Tok::Quoted(w)) => Some(w.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect();
                let quoted: Vec<String> = cols.iter().map(|c| q(c)).collect();
                let cname = constraint_name.unwrap_or_else(|| {
                    format!("{}_{}", if primary { "PK" } else { "UQ" }, table.name)
                });
                if primary {
                    table_constraints.push(format!("PRIMARY KEY ({})", quoted.join(", ")));
                }
                if primary {
                    table.primary_key = cols;
                    table.primary_key_name = Some(cname);
                } else {
                    table.unique.push((cname, cols, false));
                }
            }
            Some("FOREIGN") => {
                let refs = d
                    .iter()
                    .position(|t| t.is_word("REFERENCES"))
                    .ok_or_else(|| SqlError::syntax("FOREIGN"))?;
                let open = d
                    .iter()
                    .position(|t| t.is_op("("))
                    .ok_or_else(|| SqlError::syntax("KEY"))?;
                let end = close_paren(d, open)?;
                let cols: Vec<String> = split_commas(&d[open + 1..end])
                    .iter()
                    .map(|c| c.iter().map(Tok::text).collect::<String>())
                    .map(|c| q(&c.trim_matches(['[', ']']).to_ascii_lowercase()))
                    .collect();
                let (rparts, rend) = read_name(d, refs + 1)?;
                let rname = table_name(&rparts)?;
                let mut rcols = String::new();
                if d.get(rend).is_some_and(|t| t.is_op("(")) {
                    let rclose = close_paren(d, rend)?;
                    let list: Vec<String> = split_commas(&d[rend + 1..rclose])
                        .iter()
                        .map(|c| c.iter().map(Tok::text).collect::<String>())
                        .map(|c| q(&c.trim_matches(['[', ']']).to_ascii_lowercase()))
                        .collect();
                    rcols = format!("({})", list.join(", "));
                    if rclose + 1 != d.len() {
                        return Err(SqlError::unsupported("foreign key actions"));
                    }
                }
                table_constraints.push(format!(
                    "FOREIGN KEY ({}) REFERENCES {}{}",
                    cols.join(", "),
                    q(&rname),
                    rcols
                ));
            }
            Some("CHECK") | Some("INDEX") => {
                return Err(SqlError::unsupported(format!(
                    "{} constraints",
                    head.unwrap_or_default()
                )));
            }
            _ => {
                let (sql, col, pk, unique) = column_definition(d, &table)?;
                if pk {
                    table.primary_key = vec![col.name.to_ascii_lowercase()];
                    table.primary_key_name = constraint_name.clone();
                }
                if unique {
                    table.unique.push((
                        constraint_name
                            .clone()
                            .unwrap_or_else(|| format!("UQ_{}_{}", table.name, col.name)),
                        vec![col.name.to_ascii_lowercase()],
                        false,
                    ));
                }
                column_sql.push(sql);
                table.columns.push(col);
            }
        }
    }
    if table
        .columns
        .iter()
        .filter(|c| c.ty == SqlType::RowVersion)
        .count()
        > 1
    {
        return Err(SqlError::new(
            2738,
            2,
            16,
            "A table can only have one timestamp column.",
        ));
    }
    column_sql.extend(table_constraints);
    let mut sql = vec![format!(
        "CREATE TABLE {} ({})",
        q(&name),
        column_sql.join(", ")
    )];
    // UNIQUE constraints as unique indexes that, like SQL Server's, admit one NULL only.
    for (constraint, cols, _) in &table.unique {
        sql.push(format!(
            "CREATE UNIQUE INDEX {} ON {} ({})",
            q(&format!("{name}.{}", constraint.to_ascii_lowercase())),
            q(&name),
            unique_key_sql(&table, cols).join(", ")
        ));
    }
    // Change readers page by rowversion: index it as a SQL Server schema would.
    if let Some(rv) = table.columns.iter().find(|c| c.ty == SqlType::RowVersion) {
        let rv = rv.name.to_ascii_lowercase();
        sql.push(format!(
            "CREATE INDEX {} ON {} ({})",
            q(&format!("{name}.__rowversion")),
            q(&name),
            q(&rv)
        ));
    }
    Ok(Statement::CreateTable { sql, table })
}

/// One column definition: (store DDL, catalog entry, is primary key, is unique).
fn column_definition(d: &[Tok], table: &TableDef) -> Result<(String, ColumnDef, bool, bool)> {
    let name = match d.first() {
        Some(Tok::Word(w) | Tok::Quoted(w)) => w.clone(),
        _ => {
            return Err(SqlError::syntax(
                &d.first().map(Tok::text).unwrap_or_default(),
            ));
        }
    };
    let mut i = 1;
    let type_start = i;
    i += 1;
    if d.get(i).is_some_and(|t| t.is_op("(")) {
        i = close_paren(d, i)? + 1;
    }
    let ty_text = type_text(&d[type_start.min(d.len())..i.min(d.len())]);
    let ty = SqlType::parse(&ty_text)
        .ok_or_else(|| SqlError::unsupported(format!("the column type `{ty_text}`")))?;
    let mut nullable = true;
    let mut pk = false;
    let mut unique = false;
    let mut identity = false;
    let mut default = None;
    while i < d.len() {
        let t = &d[i];
        if t.is_word("NOT") && d.get(i + 1).is_some_and(|n| n.is_word("NULL")) {
            nullable = false;
            i += 2;
        } else if t.is_word("NULL") {
            i += 1;
        } else if t.is_word("PRIMARY") && d.get(i + 1).is_some_and(|n| n.is_word("KEY")) {
            pk = true;
            nullable = false;
            i += 2;
        } else if t.is_word("UNIQUE") {
            unique = true;
            i += 1;
        } else if t.is_word("CLUSTERED") || t.is_word("NONCLUSTERED") {
            i += 1;
        } else if t.is_word("CONSTRAINT") {
            i += 2;
        } else if t.is_word("IDENTITY") {
            identity = true;
            i += 1;
            if d.get(i).is_some_and(|n| n.is_op("(")) {
                let close = close_paren(d, i)?;
                let args: Vec<String> = d[i + 1..close].iter().map(Tok::text).collect();
                if args.join("") != "1,1" {
                    return Err(SqlError::unsupported(
                        "IDENTITY with a seed or increment other than (1,1)",
                    ));
                }
                i = close + 1;
            }
        } else if t.is_word("DEFAULT") {
            let start = i + 1;
            let mut end = start;
            if d.get(start).is_some_and(|n| n.is_op("(")) {
                end = close_paren(d, start)? + 1;
            } else if d.get(start).is_some() {
                end = start + 1;
                if d.get(end).is_some_and(|n| n.is_op("(")) {
                    end = close_paren(d, end)? + 1;
                }
            }
            default = Some(d[start..end].to_vec());
            i = end;
        } else if t.is_word("ROWGUIDCOL") {
            i += 1;
        } else {
            return Err(SqlError::unsupported(format!(
                "`{}` in a column definition",
                t.text()
            )));
        }
    }
    let mut sql = vec![q(&name)];
    if identity {
        if !pk
            || !matches!(
                ty,
                SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt
            )
        {
            return Err(SqlError::unsupported(
                "IDENTITY on a column that is not an integer PRIMARY KEY",
            ));
        }
        sql.push("INTEGER PRIMARY KEY AUTOINCREMENT".into());
    } else {
        // SQLite wants numbers in type arguments: NVARCHAR(max) is declared NVARCHAR_MAX.
        // Decimals are kept as canonical text (TEXT affinity: never converted to a float) and
        // compared by value.
        sql.push(store_type(ty));
        if !nullable || ty == SqlType::RowVersion {
            sql.push("NOT NULL".into());
        }
        if pk {
            sql.push("PRIMARY KEY".into());
        }
    }
    let col = ColumnDef {
        name: name.clone(),
        ty,
        nullable: nullable && !identity && ty != SqlType::RowVersion,
        identity,
    };
    if ty == SqlType::RowVersion {
        sql.push("DEFAULT (__next_rv())".into());
    } else if let Some(def) = default {
        let inner: &[Tok] = if def.first().is_some_and(|t| t.is_op("("))
            && close_paren(&def, 0).ok() == Some(def.len() - 1)
        {
            &def[1..def.len() - 1]
        } else {
            &def
        };
        let inner: &[Tok] = if inner.first().is_some_and(|t| t.is_op("("))
            && close_paren(inner, 0).ok() == Some(inner.len() - 1)
        {
            &inner[1..inner.len() - 1]
        } else {
            inner
        };
        let catalog = Catalog::default();
        let ctx = Context::default();
        let e = Emitter {
            catalog: &catalog,
            ctx: &ctx,
            tables: Vec::new(),
        };
        let expr = match inner {
            [Tok::Word(f), Tok::Op(o), Tok::Op(c)] if o == "(" && c == ")" => e.function(f, &[])?,
            [Tok::Str { .. }] | [Tok::Num(_)] | [Tok::Op(_), Tok::Num(_)] => e.expr(inner)?,
            _ => return Err(SqlError::unsupported("this DEFAULT expression")),
        };
        sql.push(format!("DEFAULT ({})", store_expr(&expr, table, &col)));
    }
    Ok((sql.join(" "), col, pk, unique))
}

/// A column type as the store declares it: decimals as canonical text compared by value, text
/// under the SQL Server collation, `(max)` as `_MAX` (SQLite wants numbers in type arguments).
pub fn store_type(ty: SqlType) -> String {
    match ty {
        SqlType::Decimal {
            precision, scale, ..
        } => format!("DECIMAL_TEXT({precision},{scale}) COLLATE TSQL_DECIMAL"),
        t if t.is_text() => format!("{} COLLATE TSQL_CI", t.name().replace("(max)", "_MAX")),
        t => t.name().replace("(max)", "_MAX"),
    }
}

/// Key expressions of a unique index: nullable columns map NULL to one sentinel value so that a
/// second NULL is a duplicate, as in SQL Server (a sentinel blob no text or number equals).
fn unique_key_sql(table: &TableDef, cols: &[String]) -> Vec<String> {
    cols.iter()
        .map(|c| match table.column(c) {
            Some(def) if def.nullable && def.ty.is_text() => {
                format!("IFNULL({}, X'00FF') COLLATE TSQL_CI", q(&def.name))
            }
            Some(def) if def.nullable => format!("IFNULL({}, X'00FF')", q(&def.name)),
            _ => q(c),
        })
        .collect()
}

fn translate_create_index(
    tokens: &[Tok],
    words: &[String],
    catalog: &Catalog,
) -> Result<Statement> {
    let mut i = 1;
    let mut unique = false;
    if words.get(i).map(String::as_str) == Some("UNIQUE") {
        unique = true;
        i += 1;
    }
    if matches!(
        words.get(i).map(String::as_str),
        Some("CLUSTERED" | "NONCLUSTERED")
    ) {
        i += 1;
    }
    if words.get(i).map(String::as_str) != Some("INDEX") {
        return Err(unsupported_statement(tokens));
    }
    let (iparts, end) = read_name(tokens, i + 1)?;
    if !tokens.get(end).is_some_and(|t| t.is_word("ON")) {
        return Err(SqlError::syntax(
            &tokens.get(end).map(Tok::text).unwrap_or_default(),
        ));
    }
    let (tparts, open) = read_name(tokens, end + 1)?;
    let table = existing_table(catalog, &tparts)?;
    if !tokens.get(open).is_some_and(|t| t.is_op("(")) {
        return Err(SqlError::syntax("ON"));
    }
    let close = close_paren(tokens, open)?;
    let filter = match tokens.get(close + 1) {
        None => None,
        Some(t) if t.is_word("WHERE") => {
            let e = Emitter {
                catalog,
                ctx: &Context::default(),
                tables: vec![table.name.clone()],
            };
            Some(e.expr(&tokens[close + 1..])?)
        }
        Some(_) => {
            return Err(SqlError::unsupported("index options (INCLUDE, WITH)"));
        }
    };
    let mut columns = Vec::new();
    let mut sql_cols = Vec::new();
    for c in split_commas(&tokens[open + 1..close]) {
        let name = match c.first() {
            Some(Tok::Word(w) | Tok::Quoted(w)) => w.clone(),
            _ => {
                return Err(SqlError::syntax(
                    &c.first().map(Tok::text).unwrap_or_default(),
                ));
            }
        };
        let def = table.column(&name).ok_or_else(|| {
            SqlError::new(
                1911,
                1,
                16,
                format!("Column name '{name}' does not exist in the target table or view."),
            )
        })?;
        let dir = match c.get(1) {
            Some(t) if t.is_word("DESC") => " DESC",
            Some(t) if t.is_word("ASC") => "",
            None => "",
            Some(t) => return Err(SqlError::syntax(&t.text())),
        };
        columns.push(def.name.to_ascii_lowercase());
        sql_cols.push(format!("{}{dir}", q(&def.name.to_ascii_lowercase())));
    }
    let index_name = iparts.last().cloned().unwrap_or_default();
    if unique && filter.is_none() {
        sql_cols = unique_key_sql(table, &columns);
    }
    let sql = format!(
        "CREATE {}INDEX {} ON {} ({}){}",
        if unique { "UNIQUE " } else { "" },
        q(&format!(
            "{}.{}",
            table.name,
            index_name.to_ascii_lowercase()
        )),
        q(&table.name),
        sql_cols.join(", "),
        filter.map(|f| format!(" {f}")).unwrap_or_default()
    );
    Ok(Statement::CreateIndex {
        sql,
        table: table.name.clone(),
        name: index_name,
        columns,
        unique,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        let stmt = translate(
            &tokenize("CREATE TABLE [dbo].[t] ([id] BIGINT NOT NULL PRIMARY KEY, [name] NVARCHAR(50) NULL, [rv] ROWVERSION)").unwrap(),
            &c,
            &Context::default(),
        )
        .unwrap();
        match stmt {
            Statement::CreateTable { table, .. } => c.insert(table),
            other => panic!("{other:?}"),
        }
        c
    }

    fn one(sql: &str, c: &Catalog) -> Result<Statement> {
        let ctx = Context {
            params: vec![
                ("@P1".into(), SqlType::BigInt),
                ("@P2".into(), SqlType::BigInt),
            ],
            min_active_rowversion: 77,
            ..Context::default()
        };
        translate(&tokenize(sql)?, c, &ctx)
    }

    #[test]
    fn tokenizes_brackets_national_strings_and_params() {
        let t = tokenize("SELECT [a b], N'it''s', @P1, @@TRANCOUNT -- x\n/* y */").unwrap();
        assert_eq!(t[1], Tok::Quoted("a b".into()));
        assert_eq!(
            t[3],
            Tok::Str {
                text: "it's".into(),
                national: true
            }
        );
        assert_eq!(t[5], Tok::Param("@P1".into()));
        assert_eq!(t[7], Tok::Global("TRANCOUNT".into()));
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn splits_batches_without_semicolons() {
        let s = split(
            tokenize("BEGIN TRAN UPDATE t SET a = 1 WHERE b = 2 INSERT INTO t (a) SELECT 1 COMMIT")
                .unwrap(),
        );
        assert_eq!(s.len(), 4);
        let s = split(tokenize("CREATE TABLE t (a INT); INSERT INTO t VALUES (1)").unwrap());
        assert_eq!(s.len(), 2);
        // `DROP TABLE IF EXISTS` is one statement; an IF after a whole DROP starts another.
        let s = split(tokenize("DROP TABLE IF EXISTS [dbo].[t] SELECT 1").unwrap());
        assert_eq!(s.len(), 2);
        let s = split(tokenize("DROP TABLE t IF 1 = 1 SELECT 1").unwrap());
        assert_eq!(s[0].len(), 3);
    }

    #[test]
    fn translates_the_rowversion_reader() {
        let c = catalog();
        let s = one("SELECT TOP (@P1) [name], [id], [rv] FROM [dbo].[t] WHERE [rv] > CAST(@P2 AS BINARY(8)) AND [rv] < MIN_ACTIVE_ROWVERSION() ORDER BY [rv]", &c).unwrap();
        match s {
            Statement::Query { sql, items, .. } => {
                assert_eq!(
                    sql,
                    "SELECT \"name\" AS \"name\", \"id\" AS \"id\", \"rv\" AS \"rv\" FROM \"t\" WHERE \"rv\" > __rv(__cast(@P2, 'BINARY(8)')) AND \"rv\" < 77 ORDER BY \"rv\" LIMIT @P1"
                );
                assert_eq!(items, vec![ItemType::FromStore; 3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn insert_output_becomes_returning() {
        let c = catalog();
        match one(
            "INSERT INTO [dbo].[t] ([id], [name]) OUTPUT INSERTED.[id] VALUES (@P1, N'x')",
            &c,
        )
        .unwrap()
        {
            Statement::Query { sql, items, .. } => {
                assert!(sql.ends_with("RETURNING \"id\" AS \"id\""), "{sql}");
                assert_eq!(items, vec![ItemType::Known(SqlType::BigInt)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_bumps_the_rowversion() {
        let c = catalog();
        match one("UPDATE [dbo].[t] SET [name] = @P1 WHERE [id] = @P2", &c).unwrap() {
            Statement::Dml { sql, .. } => assert!(sql.contains("\"rv\" = __next_rv()"), "{sql}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_it_does_not_translate() {
        let c = catalog();
        for sql in [
            "MERGE t USING s ON 1 = 1 WHEN MATCHED THEN DELETE",
            "SELECT id FROM t CROSS APPLY x",
            "SELECT SOUNDEX(name) FROM t",
            "EXEC sp_who",
            "SELECT id FROM t ORDER BY id OFFSET 5 ROWS",
        ] {
            let err = one(sql, &c).unwrap_err();
            assert_eq!(err.number, 102, "{sql}: {err:?}");
        }
        assert_eq!(one("SELECT * FROM nope", &c).unwrap_err().number, 208);
        assert_eq!(one("SELECT @P9", &c).unwrap_err().number, 137);
    }

    /// Every statement shape the adapter emits (src/mssql/corpus.sql) translates against the
    /// seed contact table, with placeholders filled in.
    #[test]
    fn every_corpus_shape_translates() {
        let mut c = Catalog::default();
        for stmt in split(tokenize(super::super::SEED_SCHEMA).unwrap()) {
            if let Statement::CreateTable { table, .. } =
                translate(&stmt, &c, &Context::default()).unwrap()
            {
                c.insert(table);
            }
        }
        // The change-tracking shapes read the table with change tracking on.
        let tracked = c.table("hb_contacts").cloned().expect("the seed table");
        c.insert(crate::sim::mssql::catalog::change_table_def(&tracked));
        let corpus = include_str!("../../mssql/corpus.sql");
        let mut shapes = 0;
        for block in corpus.split("\n-- name: ").skip(1) {
            let name = block.lines().next().unwrap_or_default().trim().to_string();
            let sql = block
                .lines()
                .skip(1)
                .find(|l| !l.starts_with("--") && !l.trim().is_empty())
                .unwrap_or_else(|| panic!("shape {name} has a statement"))
                .replace("[schema].[table]", "[dbo].[hb_contacts]")
                .replace("[key]", "[numero_asociado]")
                .replace("[col1]", "[firstname]")
                .replace("[col2]", "[email]");
            let params: Vec<(String, SqlType)> = (1..=9)
                .map(|i| (format!("@P{i}"), SqlType::BigInt))
                .collect();
            let ctx = Context {
                params,
                ..Context::default()
            };
            let tokens = tokenize(&sql).unwrap();
            for stmt in split(tokens) {
                translate(&stmt, &c, &ctx).unwrap_or_else(|e| panic!("shape {name}: {e}"));
            }
            shapes += 1;
        }
        assert!(shapes >= 10, "the corpus lists the adapter's shapes");
    }

    #[test]
    fn date_columns_compare_as_dates() {
        let mut c = Catalog::default();
        let create = "CREATE TABLE d ([id] INT NOT NULL PRIMARY KEY, [born] DATE NULL, [seen] DATETIME2 NULL)";
        if let Statement::CreateTable { table, .. } = one(create, &c).unwrap() {
            c.insert(table);
        }
        match one(
            "SELECT [id] FROM d WHERE [seen] >= '2024-01-01' AND [born] = @P1",
            &c,
        )
        .unwrap()
        {
            Statement::Query { sql, .. } => assert!(
                sql.contains("\"seen\" >= __cast('2024-01-01', 'DATETIME2(7)')")
                    && sql.contains("\"born\" = __cast(@P1, 'DATE')"),
                "{sql}"
            ),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Any token soup is answered with a translation or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(parts in proptest::collection::vec(proptest::sample::select(vec![
            "SELECT", "TOP", "(", ")", "@P1", "[id]", "[name]", ",", "FROM", "[dbo].[t]", "t", "WHERE",
            "=", "N'x'", "'y'", "1", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "OUTPUT",
            "INSERTED.[id]", "CAST", "AS", "BIGINT", "ORDER", "BY", "CREATE", "TABLE", "INDEX", "ON",
            "PRIMARY", "KEY", "DEFAULT", "IDENTITY", "*", ".", ";", "BEGIN", "TRAN", "COMMIT", "@@TRANCOUNT",
            "MIN_ACTIVE_ROWVERSION", "NVARCHAR", "DECIMAL", "NOT", "NULL", "UNIQUE", "CONSTRAINT", "[",
            "'", "--", "/*", "+", "WITH", "DROP", "IF", "EXISTS",
        ]), 0..24)) {
            let c = catalog();
            if let Ok(tokens) = tokenize(&parts.join(" ")) {
                for stmt in split(tokens) {
                    let _ = one(&stmt.iter().map(Tok::text).collect::<Vec<_>>().join(" "), &c);
                }
            }
        }
    }

    #[test]
    fn hex_literals_decimals_and_use() {
        let t = tokenize("SELECT 0x0aFF, 0x123, 0x, 12.50").unwrap();
        assert_eq!(t[1], Tok::Hex(vec![0x0A, 0xFF]));
        assert_eq!(t[3], Tok::Hex(vec![0x01, 0x23]));
        assert_eq!(t[5], Tok::Hex(vec![]));
        assert!(tokenize("SELECT 0x12G").is_err());
        let c = catalog();
        match one(
            "SELECT 0x0102 AS [b], 12.50 AS [d] FROM t WHERE [rv] > 0x01",
            &c,
        )
        .unwrap()
        {
            Statement::Query { sql, items, .. } => {
                assert!(sql.contains("X'0102'"), "{sql}");
                assert!(
                    sql.contains("CAST('12.50' AS TEXT) COLLATE TSQL_DECIMAL"),
                    "{sql}"
                );
                assert!(sql.contains("\"rv\" > __rv(X'01')"), "{sql}");
                assert_eq!(items[0], ItemType::Known(SqlType::VarBinary(Some(2))));
                assert_eq!(
                    items[1],
                    ItemType::Known(SqlType::Decimal {
                        precision: 4,
                        scale: 2,
                        numeric: true
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            one("USE [hubsync]", &c).unwrap(),
            Statement::Use("hubsync".into())
        );
        assert_eq!(one("USE a b", &c).unwrap_err().number, 102);
    }

    #[test]
    fn types_literals_and_functions() {
        let c = catalog();
        match one(
            "SELECT 1 AS [ok], @@TRANCOUNT AS [n], COUNT(*), CAST(1 AS BIGINT), MAX([id]) FROM t",
            &c,
        )
        .unwrap()
        {
            Statement::Query { items, names, .. } => {
                assert_eq!(items[0], ItemType::Known(SqlType::Int));
                assert_eq!(items[1], ItemType::Known(SqlType::Int));
                assert_eq!(items[2], ItemType::Known(SqlType::Int));
                assert_eq!(items[3], ItemType::Known(SqlType::BigInt));
                assert_eq!(items[4], ItemType::Known(SqlType::BigInt));
                assert_eq!(names[0].as_deref(), Some("ok"));
            }
            other => panic!("{other:?}"),
        }
    }
}
