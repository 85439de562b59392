//! Costa Rican identity numbers: cédula física, cédula jurídica, DIMEX and NITE, normalised to
//! their canonical digits from the written forms people use. There is no check digit, so the
//! checks are structural.

use std::borrow::Cow;
use std::fmt;

use super::{Invalid, Note};

/// Kind of identity document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// Cédula de identidad, 9 digits `PTTTTAAAA`.
    Fisica,
    /// Cédula jurídica, 10 digits `C-TTT-NNNNNN`.
    Juridica,
    /// Residence document for foreigners, 11–12 digits starting with 1.
    Dimex,
    /// Número de Identificación Tributario Especial, 10 digits.
    Nite,
}

impl IdKind {
    pub const ALL: [IdKind; 4] = [
        IdKind::Fisica,
        IdKind::Juridica,
        IdKind::Dimex,
        IdKind::Nite,
    ];

    /// The config name (`fisica`, `juridica`, `dimex`, `nite`).
    pub fn name(self) -> &'static str {
        match self {
            IdKind::Fisica => "fisica",
            IdKind::Juridica => "juridica",
            IdKind::Dimex => "dimex",
            IdKind::Nite => "nite",
        }
    }

    pub fn from_name(name: &str) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Fisica => "cédula física",
            IdKind::Juridica => "cédula jurídica",
            IdKind::Dimex => "DIMEX",
            IdKind::Nite => "NITE",
        })
    }
}

/// The identity kinds a field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u8);

impl KindSet {
    pub fn of(kinds: &[IdKind]) -> Self {
        Self(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    pub fn contains(self, kind: IdKind) -> bool {
        self.0 & kind.bit() != 0
    }

    fn describe(self) -> String {
        let names: Vec<String> = IdKind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .map(|k| k.to_string())
            .collect();
        names.join(", ")
    }
}

/// Normalises an identity number to its canonical digits and checks that its kind is accepted.
/// Accepted forms: `102340567`, `1-0234-0567`, `1 0234 0567`, `1.0234.0567`, `01-0234-0567`,
/// `0102340567`, the short form `1-234-567`; `3-101-123456` / `3-101-12345`; DIMEX
/// `155812994816`; NITE 10 digits. A value already canonical is returned without copying.
pub fn normalize(input: &str, accepted: KindSet) -> Result<(Cow<'_, str>, Option<Note>), Invalid> {
    let value = input.trim();
    // The canonical física, as SQL Server and HubSpot hold it.
    if value.len() == 9
        && accepted.contains(IdKind::Fisica)
        && value.bytes().all(|b| b.is_ascii_digit())
        && !value.starts_with('0')
    {
        return Ok((Cow::Borrowed(value), zero_group_note(value)));
    }
    // The display form `P-TTTT-AAAA` (one kind of separator), read as the general case below
    // would read it.
    if let Some(canonical) = grouped_fisica(value).filter(|_| accepted.contains(IdKind::Fisica)) {
        let note = zero_group_note(&canonical);
        return Ok((Cow::Owned(canonical), note));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, ' ' | '-' | '.')))
    {
        return Err(Invalid::new(
            "cedula",
            format!("{value:?} contains {c:?}; an identity number has only digits and separators"),
        ));
    }
    let groups: Vec<&str> = value
        .split([' ', '-', '.'])
        .filter(|g| !g.is_empty())
        .collect();
    let digits: String = groups.concat();
    let mut candidates = candidates(&digits, &groups);
    if let Some(i) = candidates.iter().position(|(k, _)| accepted.contains(*k)) {
        let (kind, canonical) = candidates.swap_remove(i);
        let note = (kind == IdKind::Fisica)
            .then(|| zero_group_note(&canonical))
            .flatten();
        return Ok((Cow::Owned(canonical), note));
    }
    let bad_juridica = digits.len() == 10
        && !digits.starts_with('0')
        && accepted.contains(IdKind::Juridica)
        && !juridica_class_type(&digits[..1], &digits[1..4]);
    if let Some((kind, _)) = candidates.first().filter(|_| !bad_juridica) {
        return Err(Invalid::new(
            "cedula",
            format!(
                "{value:?} is a {kind}, which this field does not accept (accepted: {})",
                accepted.describe()
            ),
        ));
    }
    let message = if groups.len() == 1 && matches!(digits.len(), 7 | 8) {
        format!(
            "{value:?} has {} digits without separators and cannot be expanded reliably; write the \
             cédula as P-TTTT-AAAA (9 digits)",
            digits.len()
        )
    } else if digits.len() == 9 && digits.starts_with('0') {
        format!("{value:?}: a 9-digit cédula física never starts with 0")
    } else if matches!(digits.len(), 11 | 12) {
        format!("{value:?}: a DIMEX has 11 or 12 digits and starts with 1")
    } else if bad_juridica {
        format!(
            "{value:?}: {}-{} is not a known cédula jurídica class and type",
            &digits[..1],
            &digits[1..4]
        )
    } else {
        format!(
            "{value:?} is not a valid identity number (accepted: {})",
            accepted.describe()
        )
    };
    Err(Invalid::new("cedula", message))
}

/// The digits of `P-TTTT-AAAA`, `P TTTT AAAA` or `P.TTTT.AAAA` with P in 1–9.
fn grouped_fisica(value: &str) -> Option<String> {
    let b = value.as_bytes();
    let shaped = b.len() == 11
        && matches!(b[1], b' ' | b'-' | b'.')
        && b[6] == b[1]
        && (b'1'..=b'9').contains(&b[0])
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 1 || i == 6 || c.is_ascii_digit());
    shaped.then(|| [&value[..1], &value[2..6], &value[7..]].concat())
}

/// Every (kind, canonical digits) reading of the input, most specific first.
fn candidates(digits: &str, groups: &[&str]) -> Vec<(IdKind, String)> {
    let mut out = Vec::new();
    let first = digits.as_bytes().first().copied().unwrap_or(b'0');
    match digits.len() {
        9 if first != b'0' => out.push((IdKind::Fisica, digits.to_string())),
        10 if first == b'0' && digits.as_bytes()[1] != b'0' => {
            out.push((IdKind::Fisica, digits[1..].to_string()));
        }
        10 if first != b'0' => {
            if juridica_class_type(&digits[..1], &digits[1..4]) {
                out.push((IdKind::Juridica, digits.to_string()));
            }
            out.push((IdKind::Nite, digits.to_string()));
        }
        11 | 12 if first == b'1' => out.push((IdKind::Dimex, digits.to_string())),
        _ => {}
    }
    if let [p, t, a] = groups {
        // Old short form of the cédula física: province 1–2 digits, tomo and asiento 1–4 each.
        if out.iter().all(|(k, _)| *k != IdKind::Fisica)
            && (1..=2).contains(&p.len())
            && (1..=4).contains(&t.len())
            && (1..=4).contains(&a.len())
        {
            let province = p.trim_start_matches('0');
            if province.len() == 1 {
                out.push((IdKind::Fisica, format!("{province}{t:0>4}{a:0>4}")));
            }
        }
        // Cédula jurídica with a short sequence: `3-101-12345` → `3101012345`.
        if out.iter().all(|(k, _)| *k != IdKind::Juridica)
            && p.len() == 1
            && t.len() == 3
            && (1..=6).contains(&a.len())
            && juridica_class_type(p, t)
        {
            out.push((IdKind::Juridica, format!("{p}{t}{a:0>6}")));
        }
    }
    out
}

/// Class/type pairs of the Registro Nacional list (python-stdnum's set).
fn juridica_class_type(class: &str, kind: &str) -> bool {
    let Ok(kind) = kind.parse::<u16>() else {
        return false;
    };
    match class {
        "2" => matches!(kind, 100 | 200 | 300 | 400),
        "3" => matches!(kind, 2..=14 | 101..=110),
        "4" => kind == 0,
        "5" => kind == 1,
        _ => false,
    }
}

fn zero_group_note(canonical: &str) -> Option<Note> {
    let (tomo, asiento) = (&canonical[1..5], &canonical[5..9]);
    (tomo == "0000" || asiento == "0000").then(|| Note {
        rule: "cedula",
        message: format!("{canonical}: tomo or asiento 0000 is unusual; check the number"),
    })
}

/// Display form of a canonical cédula física: `1-0234-0567`.
pub fn display_fisica(canonical: &str) -> String {
    if canonical.len() == 9 {
        format!(
            "{}-{}-{}",
            &canonical[..1],
            &canonical[1..5],
            &canonical[5..]
        )
    } else {
        canonical.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MEMBERS: KindSet = KindSet(0b0101); // física + DIMEX
    const ALL: KindSet = KindSet(0b1111);

    fn ok(input: &str, kinds: KindSet) -> String {
        normalize(input, kinds)
            .unwrap_or_else(|e| panic!("{input}: {}", e.message))
            .0
            .into_owned()
    }

    #[test]
    fn member_kinds_are_fisica_and_dimex() {
        assert_eq!(KindSet::of(&[IdKind::Fisica, IdKind::Dimex]), MEMBERS);
    }

    #[test]
    fn fisica_written_forms_from_the_reference() {
        for input in [
            "102340567",
            "1-0234-0567",
            "1 0234 0567",
            "1.0234.0567",
            "01-0234-0567",
            "0102340567",
            "1-234-567",
            "1 234 567",
            "  1-234-567 ",
        ] {
            assert_eq!(ok(input, MEMBERS), "102340567", "{input}");
        }
        assert_eq!(ok("8-0123-0456", MEMBERS), "801230456");
        assert_eq!(ok("9-12-3", MEMBERS), "900120003");
        assert_eq!(display_fisica("102340567"), "1-0234-0567");
    }

    #[test]
    fn fisica_never_starts_with_zero_and_short_unseparated_forms_are_refused() {
        let e = normalize("012345678", MEMBERS).unwrap_err();
        assert!(e.message.contains("never starts with 0"), "{}", e.message);
        for input in ["1234567", "12345678"] {
            let e = normalize(input, MEMBERS).unwrap_err();
            assert_eq!(e.rule, "cedula");
            assert!(e.message.contains("cannot be expanded"), "{}", e.message);
        }
        // Groups that do not fit 1–2 / 1–4 / 1–4.
        assert!(normalize("1-23456-7", MEMBERS).is_err());
        assert!(normalize("12-234-567", MEMBERS).is_err());
        assert!(normalize("1-234", MEMBERS).is_err());
        assert!(normalize("1-0234-0567x", MEMBERS).is_err());
        assert!(normalize("", MEMBERS).is_err());
    }

    #[test]
    fn zero_tomo_or_asiento_is_accepted_with_a_note() {
        let (value, note) = normalize("1-0000-0567", MEMBERS).unwrap();
        assert_eq!(value, "100000567");
        assert!(note.unwrap().message.contains("0000"));
        assert!(normalize("1-0234-0567", MEMBERS).unwrap().1.is_none());
    }

    #[test]
    fn dimex_has_11_or_12_digits_starting_with_1() {
        assert_eq!(ok("155812994816", MEMBERS), "155812994816");
        assert_eq!(ok("15581299481", MEMBERS), "15581299481");
        assert_eq!(ok("1558-1299-4816", MEMBERS), "155812994816");
        let e = normalize("255812994816", MEMBERS).unwrap_err();
        assert!(e.message.contains("starts with 1"), "{}", e.message);
        assert!(normalize("1558129948161", MEMBERS).is_err());
    }

    #[test]
    fn juridica_checks_class_and_type_and_pads_the_sequence() {
        let juridica = KindSet::of(&[IdKind::Juridica]);
        assert_eq!(ok("3-101-123456", juridica), "3101123456");
        assert_eq!(ok("3101123456", juridica), "3101123456");
        assert_eq!(ok("3-101-12345", juridica), "3101012345");
        assert_eq!(ok("3-004-045117", juridica), "3004045117");
        assert_eq!(ok("4-000-042139", juridica), "4000042139");
        assert_eq!(ok("2-100-042005", juridica), "2100042005");
        assert_eq!(ok("5-001-012345", juridica), "5001012345");
        for bad in [
            "3-201-123456",
            "3-015-123456",
            "6-101-123456",
            "2-101-123456",
        ] {
            let e = normalize(bad, juridica).unwrap_err();
            assert!(e.message.contains("class and type"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn nite_is_ten_digits_without_leading_zero() {
        let nite = KindSet::of(&[IdKind::Nite]);
        assert_eq!(ok("7012345678", nite), "7012345678");
        assert!(normalize("0012345678", nite).is_err());
        // A jurídica-shaped number is also a well-formed NITE.
        assert_eq!(ok("3101123456", nite), "3101123456");
    }

    #[test]
    fn a_kind_the_field_does_not_accept_is_named() {
        let e = normalize("3-101-123456", MEMBERS).unwrap_err();
        assert!(
            e.message.contains("cédula jurídica")
                && e.message.contains("accepted: cédula física, DIMEX"),
            "{}",
            e.message
        );
        assert_eq!(ok("3-101-123456", ALL), "3101123456");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(input in "[0-9 .-]{0,16}") {
            if let Ok((once, _)) = normalize(&input, ALL) {
                let (twice, _) = normalize(&once, ALL).unwrap();
                prop_assert_eq!(&once, &twice);
            }
        }

        #[test]
        fn every_written_form_of_a_fisica_gives_the_same_digits(
            p in 1u32..=9, t in 0u32..10000, a in 0u32..10000, sep in "[ .-]"
        ) {
            let canonical = format!("{p}{t:04}{a:04}");
            let dashed = format!("{p}{sep}{t:04}{sep}{a:04}");
            let padded = format!("0{p}{sep}{t:04}{sep}{a:04}");
            let short = format!("{p}{sep}{t}{sep}{a}");
            for input in [&canonical, &dashed, &padded, &short] {
                prop_assert_eq!(&normalize(input, MEMBERS).unwrap().0, &canonical);
            }
        }
    }
}
