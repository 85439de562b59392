//! Text helpers shared by transforms and lookups: trimming, space collapsing, title case, the
//! folded comparison key (no accents, lowercase, no punctuation), and the characters no text
//! field may carry (control, bidi and zero-width characters).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Collapses every run of whitespace to one space and trims the ends.
pub fn collapse_spaces(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// True when `collapse_spaces` would return the value unchanged: single ASCII spaces between
/// words and no whitespace at the ends.
pub fn is_collapsed(value: &str) -> bool {
    let mut after_space = true;
    for c in value.chars() {
        if c.is_whitespace() {
            if c != ' ' || after_space {
                return false;
            }
            after_space = true;
        } else {
            after_space = false;
        }
    }
    !after_space || value.is_empty()
}

/// Capitalises the first letter of every word and lowercases the rest: `maría  JOSÉ` →
/// `María  José` (spacing kept).
pub fn title(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut start_of_word = true;
    for c in value.chars() {
        if c.is_alphabetic() {
            if start_of_word {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start_of_word = false;
        } else {
            out.push(c);
            start_of_word = !(c == '\'' || c == '’');
        }
    }
    out
}

/// The comparison key for names and synonyms: NFKD, combining marks dropped (á→a, ñ→n), lowercase,
/// `-`/`_`/`/` as spaces, other punctuation dropped, whitespace collapsed.
/// `San  José.`, `SAN JOSE` and `san josé` all give `san jose`.
pub fn fold(value: &str) -> String {
    if value.is_ascii() {
        return fold_chars(value.chars(), value.len());
    }
    fold_chars(value.nfkd(), value.len())
}

fn fold_chars(chars: impl Iterator<Item = char>, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut pending_space = false;
    for c in chars {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else if c.is_whitespace() || matches!(c, '-' | '_' | '/') {
            pending_space = true;
        }
        // Other punctuation (.,;:()'") is dropped without breaking the word.
    }
    out
}

/// A character a text field refuses: where it is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsafe {
    /// 1-based character position in the value.
    pub position: usize,
    pub char: char,
    pub kind: &'static str,
}

impl Unsafe {
    /// `U+202E (a bidi override) at character 5`: the value itself is not repeated.
    pub fn describe(&self) -> String {
        format!(
            "U+{:04X} ({}) at character {}",
            u32::from(self.char),
            self.kind,
            self.position
        )
    }
}

/// What kind of refused character `c` is, if it is one. Tab, line feed and carriage return are
/// allowed in `multiline` fields (addresses, notes), never in single-line ones (names, ids).
pub fn unsafe_kind(c: char, multiline: bool) -> Option<&'static str> {
    match c {
        '\t' | '\n' | '\r' if multiline => None,
        '\u{0}'..='\u{1f}' | '\u{7f}' => Some("a control character"),
        '\u{80}'..='\u{9f}' => Some("a C1 control character"),
        '\u{202a}'..='\u{202e}' => Some("a bidi embedding or override"),
        '\u{2066}'..='\u{2069}' => Some("a bidi isolate"),
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => Some("a zero-width character"),
        // What stands for a NUL once queued (PostgreSQL cannot store U+0000), or for bytes
        // lost in a bad encoding.
        '\u{fffd}' => Some("a replacement character: a NUL or undecodable byte at the source"),
        _ => None,
    }
}

/// The first refused character of `value` (see [`unsafe_kind`]).
pub fn find_unsafe(value: &str, multiline: bool) -> Option<Unsafe> {
    // Printable ASCII, the common case, has none.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    value.chars().enumerate().find_map(|(i, c)| {
        unsafe_kind(c, multiline).map(|kind| Unsafe {
            position: i + 1,
            char: c,
            kind,
        })
    })
}

/// `value` without its refused characters; in a single-line field a tab or line break becomes a
/// space instead, so words stay apart.
pub fn strip_unsafe(value: &str, multiline: bool) -> String {
    value
        .chars()
        .filter_map(|c| match unsafe_kind(c, multiline) {
            None => Some(c),
            Some(_) if matches!(c, '\t' | '\n' | '\r') => Some(' '),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bidi_and_zero_width_characters_are_found_with_their_position() {
        let found = |v: &str| find_unsafe(v, false).map(|u| (u.position, u.char));
        assert_eq!(found("María José Núñez"), None);
        assert_eq!(found("Ana\u{0}"), Some((4, '\u{0}')));
        assert_eq!(found("\u{1b}[31mAna"), Some((1, '\u{1b}')));
        assert_eq!(found("Ana\u{7f}"), Some((4, '\u{7f}')));
        assert_eq!(found("Ana\u{fffd}"), Some((4, '\u{fffd}')));
        assert_eq!(found("Ñu\u{85}"), Some((3, '\u{85}')));
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(found(&format!("á{c}b")), Some((2, c)), "{:X}", u32::from(c));
        }
        for c in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}'] {
            assert_eq!(found(&format!("ab{c}")), Some((3, c)), "{:X}", u32::from(c));
        }
        // Neighbours of the refused ranges pass: no-break space, LRM is not listed, ¡.
        for ok in [
            "a\u{a0}b",
            "¡Hola!",
            "a\u{2010}b",
            "a\u{2070}b",
            "a\u{200e}b",
        ] {
            assert_eq!(found(ok), None, "{ok:?}");
        }
        let e = find_unsafe("Ana\u{202e}lex", false).unwrap();
        assert_eq!(
            e.describe(),
            "U+202E (a bidi embedding or override) at character 4"
        );
        assert_eq!(e.kind, "a bidi embedding or override");
    }

    #[test]
    fn line_breaks_and_tabs_only_in_multiline_fields() {
        for v in ["Calle 5\nAvenida 3", "a\tb", "a\r\nb"] {
            assert!(find_unsafe(v, true).is_none(), "{v:?}");
            assert_eq!(find_unsafe(v, false).unwrap().kind, "a control character");
        }
        assert!(find_unsafe("a\n\u{0}", true).is_some());
    }

    #[test]
    fn stripping_removes_refused_characters_and_keeps_words_apart() {
        assert_eq!(
            strip_unsafe("An\u{200b}a\u{202e} Ro\u{0}jas", false),
            "Ana Rojas"
        );
        assert_eq!(strip_unsafe("Ana\tRojas\n", false), "Ana Rojas ");
        assert_eq!(strip_unsafe("Calle 5\nCasa\u{1b}", true), "Calle 5\nCasa");
        assert_eq!(strip_unsafe("plain", false), "plain");
    }

    #[test]
    fn collapse_spaces_trims_and_joins_runs() {
        assert_eq!(collapse_spaces("  María \t José  "), "María José");
        assert_eq!(collapse_spaces(""), "");
        for v in ["", "María José", "a b c"] {
            assert!(is_collapsed(v), "{v:?}");
            assert_eq!(collapse_spaces(v), v);
        }
        for v in [" a", "a ", "a  b", "a\tb", "a\u{a0}b", " "] {
            assert!(!is_collapsed(v), "{v:?}");
            assert_ne!(collapse_spaces(v), v);
        }
    }

    #[test]
    fn title_capitalises_words_with_accents_and_ñ() {
        assert_eq!(title("maría JOSÉ núñez"), "María José Núñez");
        assert_eq!(title("o'neil-ávila"), "O'neil-Ávila");
    }

    #[test]
    fn fold_ignores_case_accents_punctuation_and_spacing() {
        for v in ["SAN JOSE", "San Jose", "san josé", "San  José.", "san-josé"] {
            assert_eq!(fold(v), "san jose", "{v}");
        }
        assert_eq!(fold("Cañas"), "canas");
        assert_eq!(fold("San José (Pizote)"), "san jose pizote");
        // Decomposed input (NFD) folds the same as composed input.
        assert_eq!(fold("Lim\u{6f}\u{301}n"), "limon");
    }
}
