//! Costa Rican telephone numbers: normalised to E.164 `+506XXXXXXXX` by length (never by
//! stripping a `506` that is part of an 8-digit number), with the extension cut off.

use super::{Invalid, Note};

/// How the SQL side stores phone numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneForm {
    /// 8 digits (10 for service numbers), no country code: `88888888`.
    #[default]
    National,
    /// `+50688888888`, the same as HubSpot.
    E164,
}

/// Normalises a phone number to E.164. `service` allows 10-digit 800/900/905/909 numbers.
/// An extension (`ext. 12`, `x12`, `#12`) is cut off and reported in the note.
pub fn normalize(input: &str, service: bool) -> Result<(String, Option<Note>), Invalid> {
    let value = input.trim();
    // The national 8-digit form, as SQL Server holds it.
    if value.len() == 8
        && value.bytes().all(|b| b.is_ascii_digit())
        && (b'2'..=b'8').contains(&value.as_bytes()[0])
    {
        return Ok((e164(value), None));
    }
    let (number, extension) = split_extension(value);
    if let Some(c) = number.chars().find(|c| {
        !(c.is_ascii_digit() || c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')' | '/' | '+'))
    }) {
        return Err(Invalid::new(
            "phone",
            format!("{value:?} contains {c:?}; a phone number has only digits and separators"),
        ));
    }
    let plus = number.trim_start().starts_with('+');
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let national = if plus {
        match digits.strip_prefix("506") {
            Some(rest) => rest,
            None => {
                return Err(Invalid::new(
                    "phone",
                    format!("{value:?} is not a Costa Rican number (country code +506)"),
                ));
            }
        }
    } else if let Some(rest) = digits
        .strip_prefix("00506")
        .or_else(|| digits.strip_prefix("011506"))
    {
        rest
    } else if digits.len() == 11 && digits.starts_with("506")
        || digits.len() == 13 && digits.starts_with("506") && is_service(&digits[3..])
    {
        &digits[3..]
    } else if digits.starts_with("00") || digits.starts_with("011") {
        return Err(Invalid::new(
            "phone",
            format!("{value:?} is not a Costa Rican number (country code +506)"),
        ));
    } else {
        &digits
    };
    let e164 = national_to_e164(value, national, service)?;
    let note = extension.map(|ext| Note {
        rule: "phone",
        message: format!("extension {ext} is not part of the number and was left out"),
    });
    Ok((e164, note))
}

fn national_to_e164(value: &str, national: &str, service: bool) -> Result<String, Invalid> {
    let first = national.as_bytes().first().copied().unwrap_or(b'0');
    match national.len() {
        8 if (b'2'..=b'8').contains(&first) => Ok(e164(national)),
        8 => Err(Invalid::new(
            "phone",
            format!("{value:?}: 8-digit Costa Rican numbers start with 2 to 8"),
        )),
        10 if is_service(national) => {
            if service {
                Ok(e164(national))
            } else {
                Err(Invalid::new(
                    "phone",
                    format!(
                        "{value:?} is a service number (800/90x), which this field does not accept"
                    ),
                ))
            }
        }
        7 => {
            let hint = match first {
                b'2' | b'4' | b'5' | b'6' | b'7' => Some('2'),
                b'3' | b'8' | b'9' => Some('8'),
                _ => None,
            };
            Err(Invalid::new(
                "phone",
                match hint {
                    Some(prefix) => format!(
                        "{value:?} is a 7-digit number from before 2008; the current number is \
                         probably {prefix}{national}"
                    ),
                    None => format!("{value:?} has 7 digits; Costa Rican numbers have 8"),
                },
            ))
        }
        n => Err(Invalid::new(
            "phone",
            format!("{value:?} has {n} digits; Costa Rican numbers have 8"),
        )),
    }
}

/// `+506` followed by the national digits.
fn e164(national: &str) -> String {
    let mut out = String::with_capacity(4 + national.len());
    out.push_str("+506");
    out.push_str(national);
    out
}

fn is_service(national: &str) -> bool {
    national.len() == 10
        && ["800", "900", "905", "909"]
            .iter()
            .any(|p| national.starts_with(p))
}

/// Splits `8888-8888 ext. 12` into the number and the extension digits. The cut is at the first
/// `ext` (any case), `x` or `#`.
fn split_extension(value: &str) -> (&str, Option<String>) {
    let bytes = value.as_bytes();
    let cut = bytes
        .iter()
        .position(|b| matches!(b, b'x' | b'X' | b'#'))
        .map(|at| {
            // An `ext` starts one byte before its `x`, and no earlier marker can precede it.
            let ext = at > 0
                && bytes[at] != b'#'
                && bytes[at - 1].eq_ignore_ascii_case(&b'e')
                && bytes
                    .get(at + 1)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b't'));
            if ext { at - 1 } else { at }
        });
    match cut {
        Some(at) => {
            let ext: String = value[at..].chars().filter(char::is_ascii_digit).collect();
            (&value[..at], (!ext.is_empty()).then_some(ext))
        }
        None => (value, None),
    }
}

/// The SQL-side form of a normalised number.
pub fn to_form(e164: &str, form: PhoneForm) -> String {
    match form {
        PhoneForm::E164 => e164.to_string(),
        PhoneForm::National => e164.strip_prefix("+506").unwrap_or(e164).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e164(input: &str) -> String {
        normalize(input, false)
            .unwrap_or_else(|e| panic!("{input}: {}", e.message))
            .0
    }

    #[test]
    fn written_forms_from_the_reference() {
        for input in [
            "8888-8888",
            "8888 8888",
            "88888888",
            "+506 8888-8888",
            "+506 8888 8888",
            "(506) 8888 8888",
            "506-8888-8888",
            "00506 88888888",
            "011 506 8888 8888",
            "+50688888888",
        ] {
            assert_eq!(e164(input), "+50688888888", "{input}");
        }
        assert_eq!(e164("(506) 2222 2222"), "+50622222222");
    }

    #[test]
    fn an_eight_digit_number_starting_506_keeps_its_digits() {
        assert_eq!(e164("5060-1234"), "+50650601234");
        assert_eq!(e164("50601234"), "+50650601234");
    }

    #[test]
    fn eight_digit_numbers_start_with_2_to_8() {
        assert_eq!(e164("2222-3333"), "+50622223333");
        assert_eq!(e164("4000-1234"), "+50640001234");
        for bad in ["9888-8888", "1888-8888", "0888-8888"] {
            let e = normalize(bad, false).unwrap_err();
            assert!(
                e.message.contains("start with 2 to 8"),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[test]
    fn service_numbers_only_where_the_field_allows_them() {
        assert_eq!(normalize("800-123-4567", true).unwrap().0, "+5068001234567");
        assert_eq!(
            normalize("+506 905 123 4567", true).unwrap().0,
            "+5069051234567"
        );
        let e = normalize("800-123-4567", false).unwrap_err();
        assert!(e.message.contains("service number"), "{}", e.message);
        assert!(normalize("801-123-4567", true).is_err());
    }

    #[test]
    fn seven_digit_numbers_suggest_the_current_form() {
        let fixed = normalize("234-5678", false).unwrap_err();
        assert!(fixed.message.contains("22345678"), "{}", fixed.message);
        let mobile = normalize("381-2345", false).unwrap_err();
        assert!(mobile.message.contains("83812345"), "{}", mobile.message);
        let other = normalize("123-4567", false).unwrap_err();
        assert!(other.message.contains("7 digits"), "{}", other.message);
    }

    #[test]
    fn extensions_are_cut_off_with_a_note() {
        for input in [
            "2222-3333 ext. 123",
            "2222-3333 x123",
            "2222-3333 #123",
            "2222 3333 EXT 123",
        ] {
            let (number, note) = normalize(input, false).unwrap();
            assert_eq!(number, "+50622223333", "{input}");
            assert!(note.unwrap().message.contains("123"), "{input}");
        }
    }

    #[test]
    fn foreign_and_malformed_numbers_are_refused() {
        for bad in [
            "+1 305 555 1234",
            "0044 20 7946 0000",
            "8888-88AB",
            "88",
            "",
            "506",
        ] {
            let e = normalize(bad, true).unwrap_err();
            assert_eq!(e.rule, "phone", "{bad}");
        }
    }

    #[test]
    fn sql_side_form() {
        assert_eq!(to_form("+50688888888", PhoneForm::National), "88888888");
        assert_eq!(to_form("+50688888888", PhoneForm::E164), "+50688888888");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(input in "[0-9 +()#x.-]{0,18}") {
            if let Ok((once, _)) = normalize(&input, true) {
                prop_assert_eq!(normalize(&once, true).unwrap().0, once);
            }
        }

        #[test]
        fn national_form_round_trips(n in 20000000u32..90000000) {
            let e = normalize(&n.to_string(), false).unwrap().0;
            prop_assert_eq!(to_form(&e, PhoneForm::National), n.to_string());
            prop_assert_eq!(normalize(&to_form(&e, PhoneForm::National), false).unwrap().0, e);
        }
    }
}
