//! Placeholder values ("unknown" written as a value): a configurable deny-list of phones, identity
//! numbers and texts, plus numbers made of one repeated digit. A placeholder clears the field with
//! a warning instead of being sent as data.

use std::collections::HashSet;

use serde::Deserialize;

use super::text::fold;

/// `validation.placeholders:` of an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaceholderSettings {
    /// Phone numbers (compared on their national digits), e.g. `22120000`.
    pub phones: Vec<String>,
    /// Identity numbers (compared on their digits), e.g. `123456789`.
    pub ids: Vec<String>,
    /// Texts meaning "unknown", compared case- and accent-insensitively, e.g. `no indica`.
    pub texts: Vec<String>,
    /// Phones and identity numbers made of one repeated digit (`8888-8888`, `0-0000-0000`).
    pub repeated_digits: bool,
}

impl Default for PlaceholderSettings {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            phones: strings(&["22120000", "12345678"]),
            ids: strings(&["000000000", "123456789"]),
            texts: strings(&[
                "N/A",
                "NA",
                "ND",
                "N/D",
                "no indica",
                "sin dato",
                "sin datos",
                "pendiente",
            ]),
            repeated_digits: true,
        }
    }
}

/// What kind of value a field holds, for the placeholder comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Phone,
    Identity,
    Text,
}

/// The deny-list, compiled for lookups.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    phones: HashSet<String>,
    ids: HashSet<String>,
    texts: HashSet<String>,
    longest_text: usize,
    /// Every text placeholder has a letter, so values without letters skip the text check.
    texts_need_letters: bool,
    /// First characters of the folded texts: a value starting with another ASCII letter is not
    /// a text placeholder, without folding it.
    first_chars: Vec<char>,
    /// The ASCII letters and digits of the folded texts, as bits: a value with any other ASCII
    /// letter or digit (`Sofía` has `f`) folds to something else, so it is not folded at all.
    text_chars: u128,
    repeated_digits: bool,
}

impl Placeholders {
    pub fn new(settings: &PlaceholderSettings) -> Self {
        let digits = |v: &str| v.chars().filter(char::is_ascii_digit).collect::<String>();
        Self {
            phones: settings.phones.iter().map(|p| digits(p)).collect(),
            ids: settings.ids.iter().map(|p| digits(p)).collect(),
            texts: settings.texts.iter().map(|t| fold(t)).collect(),
            longest_text: settings.texts.iter().map(|t| t.len()).max().unwrap_or(0),
            first_chars: settings
                .texts
                .iter()
                .filter_map(|t| fold(t).chars().next())
                .collect(),
            text_chars: settings
                .texts
                .iter()
                .flat_map(|t| fold(t).into_bytes())
                .filter(u8::is_ascii_alphanumeric)
                .fold(0, |bits, b| bits | (1 << b)),
            texts_need_letters: settings
                .texts
                .iter()
                .all(|t| t.chars().any(char::is_alphabetic)),
            repeated_digits: settings.repeated_digits,
        }
    }

    /// True when `value` is a placeholder for a field of this kind. The cheap tests come first:
    /// most values are too long, start with another letter or are not numbers of a listed kind.
    pub fn matches(&self, value: &str, kind: ValueKind) -> bool {
        let first = value.trim_start().chars().next().unwrap_or(' ');
        let may_be_text = value.len() <= self.longest_text + 4
            && (!first.is_ascii_alphanumeric()
                || self.first_chars.contains(&first.to_ascii_lowercase()));
        let only_text_chars = || {
            value.bytes().all(|b| {
                !b.is_ascii_alphanumeric() || self.text_chars & (1 << b.to_ascii_lowercase()) != 0
            })
        };
        if may_be_text
            && only_text_chars()
            && (!self.texts_need_letters || value.chars().any(char::is_alphabetic))
            && self.texts.contains(&fold(value))
        {
            return true;
        }
        let list = match kind {
            ValueKind::Text => return false,
            ValueKind::Phone => &self.phones,
            ValueKind::Identity => &self.ids,
        };
        // The digits, or no match when the value has letters or too many digits.
        let mut buffer = [0u8; 24];
        let mut len = 0;
        for c in value.chars() {
            if c.is_alphabetic() {
                return false;
            }
            if c.is_ascii_digit() {
                if len == buffer.len() {
                    return false;
                }
                buffer[len] = c as u8;
                len += 1;
            }
        }
        let mut digits = std::str::from_utf8(&buffer[..len]).unwrap_or("");
        if kind == ValueKind::Phone {
            for prefix in ["00506", "011506"] {
                if let Some(rest) = digits.strip_prefix(prefix) {
                    digits = rest;
                }
            }
            if digits.len() == 11 && digits.starts_with("506") {
                digits = &digits[3..];
            }
        }
        if list.contains(digits) {
            return true;
        }
        let repeated =
            digits.len() >= 7 && digits.bytes().all(|b| Some(b) == digits.bytes().next());
        self.repeated_digits && repeated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Placeholders {
        Placeholders::new(&PlaceholderSettings::default())
    }

    #[test]
    fn default_phone_placeholders() {
        let p = defaults();
        for v in [
            "22120000",
            "2212-0000",
            "+506 2212 0000",
            "12345678",
            "0000-0000",
            "8888-8888",
            "9999 9999",
            "506 1111 1111",
        ] {
            assert!(p.matches(v, ValueKind::Phone), "{v}");
        }
        for v in ["2212-0001", "8888-8889", "5060-1234"] {
            assert!(!p.matches(v, ValueKind::Phone), "{v}");
        }
    }

    #[test]
    fn default_identity_placeholders() {
        let p = defaults();
        for v in [
            "000000000",
            "123456789",
            "1-1111-1111",
            "9-9999-9999",
            "0-0000-0000",
        ] {
            assert!(p.matches(v, ValueKind::Identity), "{v}");
        }
        assert!(!p.matches("1-0234-0567", ValueKind::Identity));
    }

    #[test]
    fn listed_identity_placeholders_do_not_depend_on_the_repeated_digit_rule() {
        let settings = PlaceholderSettings {
            repeated_digits: false,
            ..PlaceholderSettings::default()
        };
        let p = Placeholders::new(&settings);
        for v in ["000000000", "0-0000-0000", "123456789", "1-2345-6789"] {
            assert!(p.matches(v, ValueKind::Identity), "{v}");
        }
        assert!(!p.matches("1-1111-1111", ValueKind::Identity));
        for v in ["22120000", "2212-0000", "12345678"] {
            assert!(p.matches(v, ValueKind::Phone), "{v}");
        }
        assert!(!p.matches("8888-8888", ValueKind::Phone));
    }

    #[test]
    fn default_text_placeholders_in_any_case() {
        let p = defaults();
        for v in [
            "N/A",
            "n/a",
            "ND",
            "No indica",
            "SIN DATO",
            "pendiente",
            "Pendiente.",
        ] {
            assert!(p.matches(v, ValueKind::Text), "{v}");
            assert!(p.matches(v, ValueKind::Phone), "{v}");
        }
        for v in [
            "Nadia",
            "Andrés",
            "pendientes de pago",
            "Sofía",
            "Sin dato X",
        ] {
            assert!(!p.matches(v, ValueKind::Text), "{v}");
        }
    }

    #[test]
    fn the_deny_list_is_configurable() {
        let settings = PlaceholderSettings {
            phones: vec!["2000-0000".into()],
            ids: vec![],
            texts: vec!["desconocido".into()],
            repeated_digits: false,
        };
        let p = Placeholders::new(&settings);
        assert!(p.matches("20000000", ValueKind::Phone));
        assert!(!p.matches("22120000", ValueKind::Phone));
        assert!(!p.matches("8888-8888", ValueKind::Phone));
        assert!(p.matches("Desconocido", ValueKind::Text));
        assert!(!p.matches("N/A", ValueKind::Text));
    }
}
