//! Text helpers shared by transforms and lookups: trimming, space collapsing, title case and the
//! folded comparison key (no accents, lowercase, no punctuation).

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

#[cfg(test)]
mod tests {
    use super::*;

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
