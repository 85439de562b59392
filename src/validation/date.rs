//! Dates as Costa Ricans write them — ISO `1980-09-05`, `05/09/1980`, `5-9-80`, `5 de setiembre
//! de 1980` — read day-first (never US month-first), and the date-of-birth rule.

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate};

use super::Invalid;
use super::text::fold;

const MONTHS: [(&str, u32); 25] = [
    ("enero", 1),
    ("ene", 1),
    ("febrero", 2),
    ("feb", 2),
    ("marzo", 3),
    ("mar", 3),
    ("abril", 4),
    ("abr", 4),
    ("mayo", 5),
    ("may", 5),
    ("junio", 6),
    ("jun", 6),
    ("julio", 7),
    ("jul", 7),
    ("agosto", 8),
    ("ago", 8),
    ("setiembre", 9),
    ("septiembre", 9),
    ("set", 9),
    ("sep", 9),
    ("sept", 9),
    ("octubre", 10),
    ("noviembre", 11),
    ("diciembre", 12),
    ("dic", 12),
];

fn month_number(word: &str) -> Option<u32> {
    match word {
        "oct" => Some(10),
        "nov" => Some(11),
        _ => MONTHS.iter().find(|(n, _)| *n == word).map(|(_, m)| *m),
    }
}

/// Reads a date. Two-digit years are taken as the most recent year not after `today`'s year
/// (`5/9/80` → 1980, `5/9/05` → 2005 when today is in 2026).
pub fn parse(input: &str, today: NaiveDate) -> Result<NaiveDate, Invalid> {
    let value = input.trim();
    parse_inner(value, today).ok_or_else(|| {
        Invalid::new(
            "date",
            format!(
                "{value:?} is not a date (expected YYYY-MM-DD, dd/mm/yyyy or \"5 de setiembre de \
                 1980\")"
            ),
        )
    })
}

fn parse_inner(value: &str, today: NaiveDate) -> Option<NaiveDate> {
    // ISO date, or a SQL datetime whose date part is what matters.
    if value.len() >= 10
        && value.is_char_boundary(10)
        && value.as_bytes()[4] == b'-'
        && value.as_bytes()[7] == b'-'
    {
        let rest = &value[10..];
        if rest.is_empty() || rest.starts_with('T') || rest.starts_with(' ') {
            return iso_digits(&value.as_bytes()[..10]).map_or_else(
                || NaiveDate::parse_from_str(&value[..10], "%Y-%m-%d").ok(),
                |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d),
            );
        }
    }
    let folded = fold(value);
    let words: Vec<&str> = folded
        .split(' ')
        .filter(|w| !matches!(*w, "de" | "del"))
        .collect();
    // The folded key turns `/` and `-` into spaces but drops `.`; split dotted dates first.
    let words: Vec<&str> = if words.len() == 1 && value.contains('.') {
        value.split('.').collect()
    } else {
        words
    };
    let [a, b, c] = words.as_slice() else {
        return None;
    };
    if a.len() == 4 {
        // Year first: 1980/09/05.
        return NaiveDate::from_ymd_opt(a.parse().ok()?, b.parse().ok()?, c.parse().ok()?);
    }
    let day: u32 = number(a)?;
    let month = number(b).or_else(|| month_number(b))?;
    let year = year(c, today)?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// `YYYY-MM-DD` made of ASCII digits only (the form HubSpot and SQL Server give), read
/// directly; other shapes are left to chrono.
fn iso_digits(b: &[u8]) -> Option<(i32, u32, u32)> {
    let digits = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    Some((year, digits(5..7)?, digits(8..10)?))
}

fn number(word: &str) -> Option<u32> {
    if word.is_empty() || word.len() > 2 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

fn year(word: &str, today: NaiveDate) -> Option<i32> {
    if !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match word.len() {
        4 => word.parse().ok(),
        2 => {
            let yy: i32 = word.parse().ok()?;
            let century = today.year() - today.year() % 100;
            let year = century + yy;
            Some(if year > today.year() {
                year - 100
            } else {
                year
            })
        }
        _ => None,
    }
}

/// HubSpot's date form, `YYYY-MM-DD`.
pub fn format(date: NaiveDate) -> String {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return format!("{year:04}-{:02}-{:02}", date.month(), date.day());
    }
    let mut out = String::with_capacity(10);
    push_digits(&mut out, year.unsigned_abs(), 4);
    out.push('-');
    push_digits(&mut out, date.month(), 2);
    out.push('-');
    push_digits(&mut out, date.day(), 2);
    out
}

/// `value` itself when it already is `date` in HubSpot's form, otherwise the formatted date.
pub fn format_or_keep(value: &str, date: NaiveDate) -> Cow<'_, str> {
    let same = value.len() == 10
        && value.as_bytes()[4] == b'-'
        && value.as_bytes()[7] == b'-'
        && iso_digits(value.as_bytes())
            .is_some_and(|(y, m, d)| (y, m, d) == (date.year(), date.month(), date.day()));
    if same {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format(date))
    }
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for p in (0..width).rev() {
        let digit = (n / 10u32.pow(p) % 10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

/// A date of birth is not in the future and gives an age of at most 120 years.
pub fn birth_date(date: NaiveDate, today: NaiveDate) -> Result<(), Invalid> {
    if date > today {
        return Err(Invalid::new(
            "birth_date",
            format!("date of birth {} is in the future", format(date)),
        ));
    }
    let age = today.years_since(date).unwrap_or(0);
    if age > 120 {
        return Err(Invalid::new(
            "birth_date",
            format!(
                "date of birth {} gives an age of {age}, over 120",
                format(date)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn iso(input: &str) -> String {
        format(parse(input, today()).unwrap_or_else(|e| panic!("{input}: {}", e.message)))
    }

    #[test]
    fn written_forms_are_read_day_first() {
        for input in [
            "1980-09-05",
            "1980-09-05T00:00:00",
            "1980-09-05T00:00:00.0000000",
            "1980-09-05 00:00:00",
            "05/09/1980",
            "5/9/1980",
            "05-09-1980",
            "05.09.1980",
            "5/9/80",
            "5 de setiembre de 1980",
            "5 de Septiembre de 1980",
            "5 SETIEMBRE 1980",
            "05-set-1980",
            "5 sep 1980",
            "5 de sept. de 1980",
            "1980/09/05",
        ] {
            assert_eq!(iso(input), "1980-09-05", "{input}");
        }
        assert_eq!(iso("12/01/1975"), "1975-01-12");
        assert_eq!(iso("1 de diciembre de 1999"), "1999-12-01");
        assert_eq!(iso("31 oct 2001"), "2001-10-31");
        assert_eq!(iso("2 NOV 2001"), "2001-11-02");
        assert_eq!(iso("3 de Enero de 1950"), "1950-01-03");
    }

    #[test]
    fn two_digit_years_are_the_latest_not_after_today() {
        assert_eq!(iso("5/9/05"), "2005-09-05");
        assert_eq!(iso("5/9/26"), "2026-09-05");
        assert_eq!(iso("5/9/27"), "1927-09-05");
    }

    #[test]
    fn impossible_and_us_style_dates_are_refused() {
        for bad in [
            "31/02/1980",
            "09/31/1980",
            "1980-13-01",
            "5 de brumario de 1980",
            "ayer",
            "",
            "5/9",
        ] {
            let e = parse(bad, today()).unwrap_err();
            assert_eq!(e.rule, "date", "{bad}");
        }
    }

    #[test]
    fn birth_date_not_in_future_and_age_at_most_120() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert!(birth_date(d("1980-09-05"), today()).is_ok());
        assert!(birth_date(d("2026-11-23"), today()).is_ok());
        assert!(birth_date(d("1906-11-22"), today()).is_ok());
        let future = birth_date(d("2026-11-24"), today()).unwrap_err();
        assert!(future.message.contains("future"));
        let old = birth_date(d("1905-11-23"), today()).unwrap_err();
        assert!(old.message.contains("over 120"), "{}", old.message);
    }

    proptest! {
        #[test]
        fn formatted_dates_read_back_unchanged(days in 0i64..60000) {
            let date = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Days::new(days as u64);
            prop_assert_eq!(parse(&format(date), today()).unwrap(), date);
            let dmy = date.format("%d/%m/%Y").to_string();
            prop_assert_eq!(parse(&dmy, today()).unwrap(), date);
        }
    }
}
