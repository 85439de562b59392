//! systemd `EnvironmentFile=` files (`/etc/hubsync/hubsync.env`), read the way systemd reads them
//! (systemd.exec(5)), so `check-config --env-file` sees exactly the variables the service gets,
//! without any of them on a command line.
//!
//! - `KEY=VALUE` per line; empty lines and lines starting with `#` or `;` are comments.
//! - Whitespace around the key and before the value is dropped; so is trailing whitespace of an
//!   unquoted value.
//! - `'…'` keeps everything literally; `"…"` understands `\"`, `\\`, `\$` and `` \` `` (any other
//!   backslash stays), and may span lines; outside quotes a backslash takes the next character
//!   literally. A backslash at the end of a line continues the value on the next line.
//! - Quoted and unquoted parts run together: `A="x y"z` is `x yz`.
//! - `export KEY=…` is not systemd syntax (systemd ignores the line): refused here.
//!
//! Errors name line numbers and keys, never values.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;

/// Reads an environment file: a regular file, not readable or writable by group or others
/// (it holds secrets; systemd reads it as root, so `0600 root:root` is enough).
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let (text, meta) = super::input::read_bounded(path)?;
    let refuse = |reason: String| ConfigError::Refused {
        path: path.display().to_string(),
        reason,
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {mode:04o} lets group or others read or write these secrets; \
             make it `chmod 600` (owner root: systemd reads it as root)"
        )));
    }
    parse(&text).map_err(refuse)
}

/// Parses environment file text into variables (a later assignment of a key wins).
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        Single,
        Double,
        DoubleEscape,
        Comment,
        CommentEscape,
    }
    let mut vars = BTreeMap::new();
    let mut state = State::PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Length of `value` without the trailing whitespace of its unquoted tail.
    let mut trimmed_len = 0;
    let mut line = 1;
    let mut key_line = 1;
    let mut finish = |key: &mut String,
                      value: &mut String,
                      trimmed_len: usize,
                      at: usize|
     -> Result<(), String> {
        value.truncate(trimmed_len);
        let k = std::mem::take(key);
        let k = k.trim_end();
        if let Some(rest) = k.strip_prefix("export ") {
            return Err(format!(
                "line {at}: `export {}` is shell syntax systemd does not understand; write `{}=…`",
                rest.trim(),
                rest.trim()
            ));
        }
        if !crate::mapping::is_identifier(k) {
            // The text is not shown: a stray line of a secret may look like a key.
            return Err(format!(
                "line {at}: the key is not a variable name (letters, digits and `_`, not \
                 starting with a digit)"
            ));
        }
        vars.insert(k.to_string(), std::mem::take(value));
        Ok(())
    };
    for c in text.chars() {
        match state {
            State::PreKey => match c {
                '#' | ';' => state = State::Comment,
                c if c.is_whitespace() => {}
                c => {
                    key.push(c);
                    key_line = line;
                    state = State::Key;
                }
            },
            State::Key => match c {
                '=' => {
                    value.clear();
                    trimmed_len = 0;
                    state = State::PreValue;
                }
                '\n' => {
                    return Err(format!(
                        "line {key_line}: no `=`; each line is KEY=VALUE (systemd ignores it)"
                    ));
                }
                c => key.push(c),
            },
            State::PreValue => match c {
                '\n' => {
                    finish(&mut key, &mut value, trimmed_len, key_line)?;
                    state = State::PreKey;
                }
                '\'' => state = State::Single,
                '"' => state = State::Double,
                '\\' => state = State::ValueEscape,
                c if c.is_whitespace() => {}
                c => {
                    value.push(c);
                    trimmed_len = value.len();
                    state = State::Value;
                }
            },
            State::Value => match c {
                '\n' => {
                    finish(&mut key, &mut value, trimmed_len, key_line)?;
                    state = State::PreKey;
                }
                '\\' => state = State::ValueEscape,
                c => {
                    value.push(c);
                    if !c.is_whitespace() {
                        trimmed_len = value.len();
                    }
                }
            },
            State::ValueEscape => {
                // Backslash-newline continues the line; otherwise the character is literal.
                if c != '\n' {
                    value.push(c);
                    trimmed_len = value.len();
                }
                state = State::Value;
            }
            State::Single => match c {
                '\'' => {
                    trimmed_len = value.len();
                    state = State::PreValue;
                }
                c => value.push(c),
            },
            State::Double => match c {
                '"' => {
                    trimmed_len = value.len();
                    state = State::PreValue;
                }
                '\\' => state = State::DoubleEscape,
                c => value.push(c),
            },
            State::DoubleEscape => {
                match c {
                    '"' | '\\' | '`' | '$' => value.push(c),
                    '\n' => {}
                    c => {
                        value.push('\\');
                        value.push(c);
                    }
                }
                state = State::Double;
            }
            State::Comment => match c {
                '\\' => state = State::CommentEscape,
                '\n' => state = State::PreKey,
                _ => {}
            },
            State::CommentEscape => state = State::Comment,
        }
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        State::PreKey | State::Comment | State::CommentEscape => {}
        State::Key => {
            return Err(format!(
                "line {key_line}: no `=`; each line is KEY=VALUE (systemd ignores it)"
            ));
        }
        State::Single | State::Double | State::DoubleEscape => {
            return Err(format!(
                "line {key_line}: the quoted value of {} is not closed",
                key.trim_end()
            ));
        }
        State::PreValue | State::Value | State::ValueEscape => {
            finish(&mut key, &mut value, trimmed_len, key_line)?;
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        let vars = parse(text).unwrap();
        assert_eq!(vars.len(), 1, "{vars:?}");
        vars.into_values().next().unwrap()
    }

    #[test]
    fn reads_assignments_and_skips_comments() {
        let vars = parse(
            "# secrets\n; also a comment\n\nA=1\n  B = two words  \nC=\nD=x=y#not a comment\n",
        )
        .unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "");
        assert_eq!(vars["D"], "x=y#not a comment");
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn quotes_and_escapes_as_systemd_reads_them() {
        assert_eq!(one("P='a \"b\" \\n $x #y'\n"), "a \"b\" \\n $x #y");
        assert_eq!(
            one(r#"P="a \"b\" \\ \$x \`c\` \n""#),
            "a \"b\" \\ $x `c` \\n"
        );
        assert_eq!(one("P=\"two\nlines\"\n"), "two\nlines");
        assert_eq!(one("P=\"x y\"z 'w'\n"), "x yz 'w'");
        assert_eq!(one("P=a\\ b\\\\c\\'\n"), "a b\\c'");
        assert_eq!(one("P=one \\\n two\n"), "one  two");
        assert_eq!(one("P=  '  kept  '  \n"), "  kept  ");
        assert_eq!(one("P=last"), "last");
        assert_eq!(one("P=\"it's\" # and more\n"), "it's# and more");
    }

    #[test]
    fn refuses_what_systemd_would_ignore_without_showing_values() {
        let e = parse("export TOKEN=pat-secret\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("export"), "{e}");
        assert!(!e.contains("pat-secret"), "{e}");
        let e = parse("A=1\njust-a-secret-word\n").unwrap_err();
        assert!(
            e.contains("line 2") && !e.contains("just-a-secret-word"),
            "{e}"
        );
        let e = parse("A=\"open\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("not closed"), "{e}");
        assert!(parse("1A=x\n").is_err());
    }
}
