//! Named field rules of a field's `rules:` list, parsed once from config and checked on the
//! transformed value.

use std::cmp::Ordering;

use regex::Regex;

use super::transform::Context;
use crate::validation::{Invalid, date, email, number};

/// Names accepted in `rules:` lists.
pub const RULES: &[&str] = &[
    "required",
    "email",
    "pattern",
    "numero_asociado",
    "max_length",
    "positive",
    "range",
    "birth_date",
    "placeholder",
];

/// One compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    Required,
    Email,
    Pattern(Regex),
    /// The pattern, and its digit-count bounds when it is `^[0-9]{min,max}$` (checked without
    /// running the regex).
    NumeroAsociado(Regex, Option<(usize, usize)>),
    MaxLength(usize),
    Positive,
    Range {
        min: Option<String>,
        max: Option<String>,
    },
    BirthDate,
    /// Clears deny-listed placeholder values (checked before the transforms).
    Placeholder,
}

impl Rule {
    /// Parses `name` or `name:argument`; `numero_asociado_pattern` is the object's setting.
    pub fn parse(spec: &str, numero_asociado_pattern: &str) -> Result<Rule, String> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (spec.trim(), None),
        };
        let no_arg = |rule: Rule| match arg {
            None => Ok(rule),
            Some(a) => Err(format!("rule {name:?} takes no argument (got {a:?})")),
        };
        match name {
            "required" => no_arg(Rule::Required),
            "email" => no_arg(Rule::Email),
            "positive" => no_arg(Rule::Positive),
            "birth_date" => no_arg(Rule::BirthDate),
            "placeholder" => no_arg(Rule::Placeholder),
            "numero_asociado" => no_arg(Rule::NumeroAsociado(
                Regex::new(numero_asociado_pattern)
                    .map_err(|e| format!("numero_asociado_pattern is not a valid regex: {e}"))?,
                digit_count_bounds(numero_asociado_pattern),
            )),
            "pattern" => {
                let re = arg.ok_or("pattern needs a regex: pattern:^[0-9]+$")?;
                Regex::new(re)
                    .map(Rule::Pattern)
                    .map_err(|e| format!("pattern is not a valid regex: {e}"))
            }
            "max_length" => arg
                .and_then(|a| a.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .map(Rule::MaxLength)
                .ok_or_else(|| "max_length needs a positive number: max_length:100".into()),
            "range" => {
                let a = arg.ok_or("range needs bounds: range:0..100, range:1.., range:..5")?;
                let (lo, hi) = a
                    .split_once("..")
                    .ok_or("range bounds are written min..max")?;
                let bound = |b: &str| -> Result<Option<String>, String> {
                    let b = b.trim();
                    if b.is_empty() {
                        Ok(None)
                    } else {
                        number::parse(b, None)
                            .map(|n| Some(n.into_owned()))
                            .map_err(|_| format!("range bound {b:?} is not a number"))
                    }
                };
                let (min, max) = (bound(lo)?, bound(hi)?);
                if let (Some(a), Some(b)) = (&min, &max)
                    && number::compare(a, b) == Ordering::Greater
                {
                    return Err(format!(
                        "range {a}..{b} is empty: the minimum is above the maximum"
                    ));
                }
                Ok(Rule::Range { min, max })
            }
            other => Err(format!(
                "unknown rule {other:?} (known: {})",
                RULES.join(", ")
            )),
        }
    }

    /// Checks a non-empty, transformed value.
    pub fn check(&self, value: &str, ctx: &Context) -> Result<(), Invalid> {
        let today = ctx.today;
        match self {
            Rule::Required | Rule::Placeholder => Ok(()),
            Rule::Email => email(value, ctx.email.unicode_local_part),
            Rule::Pattern(re) => {
                if re.is_match(value) {
                    Ok(())
                } else {
                    Err(Invalid::new(
                        "pattern",
                        format!("{value:?} does not match {}", re.as_str()),
                    ))
                }
            }
            Rule::NumeroAsociado(re, bounds) => {
                let matches = match bounds {
                    Some((min, max)) => {
                        (*min..=*max).contains(&value.len())
                            && value.bytes().all(|b| b.is_ascii_digit())
                    }
                    None => re.is_match(value),
                };
                if matches {
                    Ok(())
                } else {
                    Err(Invalid::new(
                        "numero_asociado",
                        format!("{value:?} is not a member number (pattern {})", re.as_str()),
                    ))
                }
            }
            Rule::MaxLength(max) => {
                let len = value.chars().count();
                if len <= *max {
                    Ok(())
                } else {
                    Err(Invalid::new(
                        "max_length",
                        format!("{len} characters, more than the {max} allowed"),
                    ))
                }
            }
            Rule::Positive => {
                let n = number::parse(value, None)?;
                if number::is_positive(&n) {
                    Ok(())
                } else {
                    Err(Invalid::new(
                        "positive",
                        format!("{value} must be greater than 0"),
                    ))
                }
            }
            Rule::Range { min, max } => {
                let n = number::parse(value, None)?;
                let below = min
                    .as_deref()
                    .is_some_and(|m| number::compare(&n, m) == Ordering::Less);
                let above = max
                    .as_deref()
                    .is_some_and(|m| number::compare(&n, m) == Ordering::Greater);
                if below || above {
                    Err(Invalid::new(
                        "range",
                        format!(
                            "{value} is outside {}..{}",
                            min.as_deref().unwrap_or(""),
                            max.as_deref().unwrap_or("")
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
            Rule::BirthDate => date::birth_date(date::parse(value, today)?, today),
        }
    }
}

/// `(min, max)` for a pattern of exactly the form `^[0-9]{min,max}$` (the default).
fn digit_count_bounds(pattern: &str) -> Option<(usize, usize)> {
    let counts = pattern.strip_prefix("^[0-9]{")?.strip_suffix("}$")?;
    let (min, max) = counts.split_once(',')?;
    let (min, max) = (min.parse().ok()?, max.parse().ok()?);
    (min <= max).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn today() -> Context {
        Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            phone_form: crate::validation::phone::PhoneForm::National,
            email: Default::default(),
        }
    }

    fn check(spec: &str, value: &str) -> Result<(), Invalid> {
        Rule::parse(spec, r"^[0-9]{1,10}$")
            .unwrap()
            .check(value, &today())
    }

    #[test]
    fn generic_rules() {
        assert!(check("email", "ana@example.com").is_ok());
        assert_eq!(check("email", "ana@").unwrap_err().rule, "email");
        assert!(check("pattern:^[A-Z]{2}$", "CR").is_ok());
        assert_eq!(
            check("pattern:^[A-Z]{2}$", "CRC").unwrap_err().rule,
            "pattern"
        );
        assert!(check("max_length:5", "Núñez").is_ok());
        let e = check("max_length:4", "Núñez").unwrap_err();
        assert_eq!(e.message, "5 characters, more than the 4 allowed");
        assert!(check("positive", "0.01").is_ok());
        assert_eq!(check("positive", "0").unwrap_err().rule, "positive");
        assert_eq!(check("positive", "-3").unwrap_err().rule, "positive");
        assert!(check("range:0..100", "100").is_ok());
        assert!(check("range:0..100", "0").is_ok());
        assert_eq!(check("range:0..100", "100.01").unwrap_err().rule, "range");
        assert_eq!(check("range:1..", "0.5").unwrap_err().rule, "range");
        assert!(check("range:..5", "-100").is_ok());
    }

    #[test]
    fn member_number_and_birth_date() {
        assert!(check("numero_asociado", "1").is_ok());
        assert!(check("numero_asociado", "1234567890").is_ok());
        for bad in ["", "12345678901", "A-77", "12 3"] {
            assert_eq!(
                check("numero_asociado", bad).unwrap_err().rule,
                "numero_asociado",
                "{bad}"
            );
        }
        assert_eq!(digit_count_bounds(r"^[0-9]{1,10}$"), Some((1, 10)));
        assert_eq!(digit_count_bounds(r"^[0-9]{3,10}x$"), None);
        assert_eq!(digit_count_bounds(r"^\d{1,10}$"), None);
        let short = Rule::parse("numero_asociado", r"^[0-9]{2,3}$").unwrap();
        for (value, ok) in [("1", false), ("12", true), ("123", true), ("1234", false)] {
            assert_eq!(short.check(value, &today()).is_ok(), ok, "{value}");
        }
        let custom = Rule::parse("numero_asociado", r"^A-[0-9]+$").unwrap();
        assert!(custom.check("A-77", &today()).is_ok());
        assert!(check("birth_date", "1980-09-05").is_ok());
        assert_eq!(
            check("birth_date", "2030-01-01").unwrap_err().rule,
            "birth_date"
        );
        assert_eq!(
            check("birth_date", "1900-01-01").unwrap_err().rule,
            "birth_date"
        );
    }

    #[test]
    fn bad_specs_are_explained() {
        let err = |spec: &str| Rule::parse(spec, "^[0-9]+$").unwrap_err();
        assert!(err("bar").starts_with("unknown rule \"bar\""));
        assert!(err("email:x").contains("takes no argument"));
        assert!(err("pattern").contains("needs a regex"));
        assert!(err("pattern:(").contains("not a valid regex"));
        assert!(err("max_length:0").contains("positive number"));
        assert!(err("range:5").contains("min..max"));
        assert!(err("range:a..b").contains("not a number"));
        assert!(err("range:10..1").contains("empty"));
        assert!(check("range:1..1", "1").is_ok());
        assert!(
            Rule::parse("numero_asociado", "(")
                .unwrap_err()
                .contains("not a valid regex")
        );
    }
}
