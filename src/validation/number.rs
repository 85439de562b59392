//! Amounts as written in Costa Rica — `₡1.250.000,00`, `1,250,000.00`, `1 250 000`, `1250000` —
//! read into a plain decimal string (`1250000.00`), with exact comparison helpers.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::Invalid;

/// Reads an amount into canonical form: optional `-`, digits without leading zeros, `.` and the
/// fractional digits as written. With `scale`, the fraction is padded or trimmed of zeros to
/// exactly that many digits; more significant digits than that are refused.
/// A value already in that form is returned as it is, without copying.
pub fn parse(input: &str, scale: Option<u8>) -> Result<Cow<'_, str>, Invalid> {
    let value = input.trim();
    if let Some(canonical) = already_canonical(value, scale) {
        return Ok(canonical);
    }
    let invalid = || {
        Invalid::new(
            "number",
            format!("{value:?} is not a number (e.g. 1250000.00, ₡1.250.000,00 or 1,250,000.00)"),
        )
    };
    let mut body = value;
    for prefix in ["₡", "¢", "CRC", "crc"] {
        body = body.trim_start_matches(prefix).trim_start();
    }
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, body),
    };
    let compact: String = body
        .chars()
        .filter(|c| !(c.is_whitespace() || *c == '\u{a0}' || *c == '\u{202f}'))
        .collect();
    if compact.is_empty()
        || !compact
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return Err(invalid());
    }
    let (int_raw, frac) = split_decimal(&compact, scale).ok_or_else(invalid)?;
    let int_digits = ungroup(int_raw).ok_or_else(invalid)?;
    if int_digits.is_empty() && frac.is_empty() {
        return Err(invalid());
    }
    let trimmed = int_digits.trim_start_matches('0');
    let int_part = if trimmed.is_empty() { "0" } else { trimmed };
    let frac = match scale {
        // `1.000` would read back as a thousands group (one thousand): after a 1–3 digit integer
        // part, a fourth decimal keeps three decimals unambiguous (`01,000` → `1.0000`).
        None if frac.len() == 3 && int_part != "0" && int_part.len() <= 3 => format!("{frac}0"),
        None => frac.to_string(),
        Some(scale) => {
            let scale = usize::from(scale);
            if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
                return Err(Invalid::new(
                    "number",
                    format!("{value:?} has more than {scale} decimals"),
                ));
            }
            let kept = &frac[..frac.len().min(scale)];
            format!("{kept:0<scale$}")
        }
    };
    let is_zero = int_part == "0" && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(int_part.len() + frac.len() + 2);
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(int_part);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(Cow::Owned(out))
}

/// The common case of a value already in canonical form (`1250000.00`), without re-parsing.
fn already_canonical(value: &str, scale: Option<u8>) -> Option<Cow<'_, str>> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok_int = !int.is_empty() && digits(int) && (int.len() == 1 || !int.starts_with('0'));
    if !ok_int || !digits(frac) || (value.contains('.') && frac.is_empty()) {
        return None;
    }
    let is_zero = int == "0" && frac.bytes().all(|b| b == b'0');
    if is_zero && value.contains('.') && scale.is_none() {
        return None;
    }
    match scale {
        Some(s) if usize::from(s) == frac.len() => Some(Cow::Borrowed(value)),
        Some(s) if frac.is_empty() => Some(if s == 0 {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(format!("{value}.{}", "0".repeat(usize::from(s))))
        }),
        Some(_) => None,
        // A single `.` before 3 digits after 1–3 digits reads as a group separator.
        None if frac.len() == 3 && int.len() <= 3 => None,
        None => Some(Cow::Borrowed(value)),
    }
}

/// Splits into integer part (possibly with group separators) and fraction digits. With a scale of
/// 3, a single `.` before 3 digits is the decimal point (the canonical form), not a group.
fn split_decimal(s: &str, scale: Option<u8>) -> Option<(&str, &str)> {
    let dots = s.matches('.').count();
    let commas = s.matches(',').count();
    let decimal = match (dots, commas) {
        (0, 0) => return Some((s, "")),
        // Both kinds: the last one is the decimal separator.
        (_, _) if dots > 0 && commas > 0 => {
            let last = s.rfind(['.', ','])?;
            let sep = s[last..].chars().next()?;
            if s.matches(sep).count() > 1 {
                return None;
            }
            last
        }
        // One kind, several times: group separators only.
        (d, c) if d + c > 1 => return Some((s, "")),
        // One separator: thousands when 3 digits follow and 1–3 non-zero-led digits precede.
        _ => {
            let at = s.find(['.', ','])?;
            let (before, after) = (&s[..at], &s[at + 1..]);
            let canonical_point = scale == Some(3) && s.as_bytes()[at] == b'.';
            if after.len() == 3
                && (1..=3).contains(&before.len())
                && !before.starts_with('0')
                && !canonical_point
            {
                return Some((s, ""));
            }
            at
        }
    };
    let frac = &s[decimal + 1..];
    frac.bytes()
        .all(|b| b.is_ascii_digit())
        .then_some((&s[..decimal], frac))
}

/// Removes group separators, checking that groups after the first have 3 digits.
fn ungroup(int_raw: &str) -> Option<String> {
    if !int_raw.contains(['.', ',']) {
        return Some(int_raw.to_string());
    }
    let sep = if int_raw.contains('.') { '.' } else { ',' };
    if int_raw.contains(if sep == '.' { ',' } else { '.' }) {
        return None;
    }
    let mut groups = int_raw.split(sep);
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 || first.starts_with('0') {
        return None;
    }
    let mut out = first.to_string();
    for g in groups {
        if g.len() != 3 {
            return None;
        }
        out.push_str(g);
    }
    Some(out)
}

/// Significant digits of a plain decimal (`-`, digits, one `.` and digits, as SQL Server and
/// the `number` transform write it): (integer digits, fractional digits without trailing
/// zeros). `0.50` → (0, 1), `-1250000.00` → (7, 0), `1.505` → (1, 3). `None` for anything else
/// (grouped or currency amounts go through [`parse`] first).
pub fn digit_counts(plain: &str) -> Option<(usize, usize)> {
    let unsigned = plain.strip_prefix('-').unwrap_or(plain);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (unsigned.ends_with('.')) {
        return None;
    }
    Some((
        int.trim_start_matches('0').len(),
        frac.trim_end_matches('0').len(),
    ))
}

/// Compares two canonical numbers exactly.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (na, ia, fa) = parts(a);
    let (nb, ib, fb) = parts(b);
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| compare_fractions(fa, fb));
    match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Compares fraction digits as if both were padded with zeros to the same width.
fn compare_fractions(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    let digit = |s: &str, i: usize| s.as_bytes().get(i).copied().unwrap_or(b'0');
    (0..width)
        .map(|i| digit(a, i).cmp(&digit(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn parts(canonical: &str) -> (bool, &str, &str) {
    let (negative, body) = match canonical.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, canonical),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let frac = frac.trim_end_matches('0');
    (negative && (int != "0" || !frac.is_empty()), int, frac)
}

/// A canonical number in hundredths (`33.33` → 3333), when it has at most two decimals.
pub fn hundredths(canonical: &str) -> Option<i64> {
    let (negative, int, frac) = parts(canonical);
    if frac.len() > 2 {
        return None;
    }
    let units: i64 = int.parse::<i64>().ok()?.checked_mul(100)?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        // Padded to two digits on the right: `5` → `50`.
        let mut padded = [b'0'; 2];
        padded[..frac.len()].copy_from_slice(frac.as_bytes());
        std::str::from_utf8(&padded).ok()?.parse().ok()?
    };
    let total = units.checked_add(frac)?;
    Some(if negative { -total } else { total })
}

/// True when the canonical number is greater than zero.
pub fn is_positive(canonical: &str) -> bool {
    compare(canonical, "0") == Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(input: &str) -> String {
        parse(input, None)
            .unwrap_or_else(|e| panic!("{input}: {}", e.message))
            .into_owned()
    }

    #[test]
    fn written_forms_from_the_reference() {
        for input in [
            "₡1.250.000,00",
            "1,250,000.00",
            "1250000.00",
            "₡ 1 250 000,00",
            "CRC 1.250.000,00",
            "1.250.000,00",
        ] {
            assert_eq!(num(input), "1250000.00", "{input}");
        }
        for input in [
            "1250000",
            "1.250.000",
            "1,250,000",
            "₡1.250.000",
            "1 250 000",
        ] {
            assert_eq!(num(input), "1250000", "{input}");
        }
        assert_eq!(num("350.50"), "350.50");
        assert_eq!(num("350,5"), "350.5");
        assert_eq!(num("0,125"), "0.125");
        assert_eq!(num("1250.000"), "1250.000");
        assert_eq!(num("01,000"), "1.0000", "leading zero: a decimal comma");
        assert_eq!(num("007"), "7");
        assert_eq!(num("-12,5"), "-12.5");
        assert_eq!(num("-0"), "0");
        assert_eq!(num(".5"), "0.5");
    }

    #[test]
    fn scale_pads_or_refuses_extra_decimals() {
        assert_eq!(parse("1250000", Some(2)).unwrap(), "1250000.00");
        assert_eq!(parse("₡1.250.000,5", Some(2)).unwrap(), "1250000.50");
        assert_eq!(parse("33.3300", Some(2)).unwrap(), "33.33");
        assert_eq!(parse("7", Some(0)).unwrap(), "7");
        let e = parse("33.3333", Some(2)).unwrap_err();
        assert!(e.message.contains("more than 2 decimals"), "{}", e.message);
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for bad in [
            "",
            "abc",
            "1.2.3,4,5",
            "12,34.56.78",
            "0,125.500",
            "1.25.000",
            "12 ₡",
            "1,2345,678",
            "--5",
            "$100",
            ".",
        ] {
            let e = parse(bad, None).unwrap_err();
            assert_eq!(e.rule, "number", "{bad}");
        }
    }

    #[test]
    fn compare_and_hundredths_are_exact() {
        assert_eq!(compare("100", "99.99"), Ordering::Greater);
        assert_eq!(compare("100.00", "100"), Ordering::Equal);
        assert_eq!(compare("-5", "3"), Ordering::Less);
        assert_eq!(compare("-5", "-3"), Ordering::Less);
        assert_eq!(compare("0.10", "0.09"), Ordering::Greater);
        assert_eq!(hundredths("33.33"), Some(3333));
        assert_eq!(hundredths("100"), Some(10000));
        assert_eq!(hundredths("0.5"), Some(50));
        assert_eq!(hundredths("0.125"), None);
        assert!(is_positive("0.01"));
        assert!(!is_positive("0.00"));
        assert!(!is_positive("-3"));
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(input in "[-₡ 0-9.,]{0,14}") {
            if let Ok(once) = parse(&input, None) {
                prop_assert_eq!(parse(&once, None).unwrap(), once.clone());
            }
            for scale in 0..=3 {
                if let Ok(once) = parse(&input, Some(scale)) {
                    prop_assert_eq!(&parse(&once, Some(scale)).unwrap(), &once);
                }
            }
        }

        #[test]
        fn costa_rican_and_english_grouping_read_the_same(units in 0u64..10_000_000_000, cents in 0u32..100) {
            let canonical = format!("{units}.{cents:02}");
            let digits = units.to_string();
            let mut groups = Vec::new();
            let mut end = digits.len();
            while end > 3 {
                groups.push(&digits[end - 3..end]);
                end -= 3;
            }
            groups.push(&digits[..end]);
            groups.reverse();
            let cr = format!("₡{},{cents:02}", groups.join("."));
            let en = format!("{}.{cents:02}", groups.join(","));
            prop_assert_eq!(parse(&cr, Some(2)).unwrap(), canonical.clone());
            prop_assert_eq!(parse(&en, Some(2)).unwrap(), canonical);
        }
    }
}
