//! SQL identifiers taken from configuration: validated against `^[A-Za-z_][A-Za-z0-9_]*$`
//! (optionally `schema.table`) and always emitted bracket-quoted.

use std::fmt;

/// Longest identifier SQL Server accepts.
const MAX_LEN: usize = 128;

/// A column, table or schema name that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

/// Why an identifier from configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identifier {value:?} is refused: {rule}")]
pub struct IdentError {
    pub value: String,
    pub rule: &'static str,
}

impl Ident {
    /// Accepts only `^[A-Za-z_][A-Za-z0-9_]*$`, at most 128 characters.
    pub fn parse(value: &str) -> Result<Self, IdentError> {
        let refuse = |rule| {
            Err(IdentError {
                value: value.to_string(),
                rule,
            })
        };
        let mut chars = value.chars();
        match chars.next() {
            None => return refuse("must not be empty"),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(_) => return refuse("must start with a letter or `_`"),
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return refuse("may contain only letters, digits and `_` (^[A-Za-z_][A-Za-z0-9_]*$)");
        }
        if value.len() > MAX_LEN {
            return refuse("must be at most 128 characters");
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `[name]` — safe because validation leaves no `]` to escape.
    pub fn quoted(&self) -> String {
        format!("[{}]", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table name, `table` or `schema.table`; the schema defaults to `dbo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Ident,
    pub table: Ident,
}

impl TableName {
    pub fn parse(value: &str) -> Result<Self, IdentError> {
        match value.split_once('.') {
            Some((schema, table)) => Ok(Self {
                schema: Ident::parse(schema)?,
                table: Ident::parse(table).map_err(|e| IdentError {
                    value: value.to_string(),
                    rule: e.rule,
                })?,
            }),
            None => Ok(Self {
                schema: Ident("dbo".into()),
                table: Ident::parse(value)?,
            }),
        }
    }

    /// `[schema].[table]`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.table.quoted())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_quotes_them() {
        assert_eq!(
            Ident::parse("numero_asociado").unwrap().quoted(),
            "[numero_asociado]"
        );
        assert_eq!(Ident::parse("_x9").unwrap().as_str(), "_x9");
        let t = TableName::parse("dbo.hb_contacts").unwrap();
        assert_eq!(t.quoted(), "[dbo].[hb_contacts]");
        assert_eq!(
            TableName::parse("socios").unwrap().quoted(),
            "[dbo].[socios]"
        );
    }

    #[test]
    fn refuses_hostile_and_malformed_names() {
        for bad in [
            "",
            "1abc",
            "a b",
            "name]; DROP TABLE x; --",
            "a]",
            "a'b",
            "a-b",
            "ñandú",
            "a.b",
            "[a]",
            "a;b",
            "a\u{0}",
        ] {
            assert!(Ident::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["a.b.c", ".t", "s.", "dbo.x]--", "x;y.t"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Ident::parse(&"a".repeat(129)).is_err());
        let err = Ident::parse("a b").unwrap_err();
        assert!(err.to_string().contains("\"a b\""), "{err}");
    }
}
