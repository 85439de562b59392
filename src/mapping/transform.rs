//! Named transforms of a field's transform chain: parsed once from config, applied SQL → HubSpot
//! (normalising any accepted written form) and inverted HubSpot → SQL where they have an inverse.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;

use super::object::{EmailSettings, EnumValue, IdnDomains, SqlType};
use crate::validation::cedula::{self, IdKind, KindSet};
use crate::validation::phone::{self, PhoneForm};
use crate::validation::placeholder::ValueKind;
use crate::validation::territory::{Level, territory};
use crate::validation::text::{collapse_spaces, fold, is_collapsed, title};
use crate::validation::{self, Invalid, Note, date, number};

/// Names accepted in `transform:` lists.
pub const TRANSFORMS: &[&str] = &[
    "trim",
    "collapse_spaces",
    "upper",
    "lower",
    "title",
    "email",
    "cedula_cr",
    "phone_cr",
    "date",
    "number",
    "enum",
    "territory_cr",
];

/// A value map: any synonym (folded) → HubSpot option value, and HubSpot value → SQL code.
#[derive(Debug)]
pub struct EnumMap {
    values: Vec<EnumValue>,
    by_key: HashMap<String, usize>,
    by_hubspot: HashMap<String, usize>,
    /// Codes and synonyms exactly as written in config.
    by_written: HashMap<String, usize>,
}

impl EnumMap {
    /// Builds the map; two values claiming the same synonym is an error.
    pub fn new(values: &[EnumValue]) -> Result<EnumMap, String> {
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (i, v) in values.iter().enumerate() {
            for word in [&v.sql, &v.hubspot].into_iter().chain(&v.synonyms) {
                if let Some(&j) = by_key.get(&fold(word))
                    && j != i
                {
                    return Err(format!(
                        "{word:?} names both {:?} and {:?}",
                        values[j].hubspot, v.hubspot
                    ));
                }
                by_key.insert(fold(word), i);
            }
        }
        let by_hubspot = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.hubspot.clone(), i))
            .collect();
        let mut by_written = HashMap::new();
        for (i, v) in values.iter().enumerate() {
            for word in std::iter::once(&v.sql).chain(&v.synonyms) {
                by_written.entry(word.clone()).or_insert(i);
            }
        }
        Ok(EnumMap {
            by_written,
            values: values.to_vec(),
            by_key,
            by_hubspot,
        })
    }

    fn lookup(&self, value: &str) -> Result<&EnumValue, Invalid> {
        let i = self
            .by_hubspot
            .get(value)
            .or_else(|| self.by_written.get(value))
            .or_else(|| self.by_key.get(&fold(value)));
        i.map(|&i| &self.values[i]).ok_or_else(|| {
            let options: Vec<&str> = self.values.iter().map(|v| v.hubspot.as_str()).collect();
            Invalid::new(
                "enum",
                format!("{value:?} is not one of: {}", options.join(", ")),
            )
        })
    }
}

/// `value` narrowed to the slice `f` picks from it (a trimmed view), without copying when borrowed.
fn narrow<'a>(value: Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(f(s)),
        Cow::Owned(s) => {
            let picked = f(&s);
            if picked.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(picked.to_string())
            }
        }
    }
}

/// True when the value has two spaces in a row, a tab or line break, or whitespace at either
/// end: what `collapse_spaces` is applied to (other values are kept as they are).
fn needs_collapsing(value: &str) -> bool {
    let mut after_space = false;
    for &b in value.as_bytes() {
        match b {
            b'\t' | b'\n' | b'\r' => return true,
            b' ' if after_space => return true,
            b' ' => after_space = true,
            _ => after_space = false,
        }
    }
    value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace)
}

/// Lowercase; an ASCII value without capitals is kept as it is.
fn lowercase(value: Cow<'_, str>) -> Cow<'_, str> {
    if value
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        value
    } else {
        Cow::Owned(value.to_lowercase())
    }
}

/// Runs a normaliser that may return (a slice of) its input, keeping a borrowed input borrowed.
fn normalize_with<'a>(
    value: Cow<'a, str>,
    f: impl for<'s> FnOnce(&'s str) -> Result<Cow<'s, str>, Invalid>,
) -> Result<Cow<'a, str>, Invalid> {
    match value {
        Cow::Borrowed(s) => f(s),
        Cow::Owned(s) => Ok(match f(&s)? {
            Cow::Owned(v) => Cow::Owned(v),
            // A borrowed result is a slice of `s`: the same length means all of it.
            Cow::Borrowed(v) if v.len() == s.len() => Cow::Owned(s),
            Cow::Borrowed(v) => Cow::Owned(v.to_string()),
        }),
    }
}

/// One compiled transform.
#[derive(Debug, Clone)]
pub enum Step {
    Trim,
    CollapseSpaces,
    Upper,
    Lower,
    Title,
    Email,
    Cedula(KindSet),
    Phone { service: bool },
    Date,
    Number { scale: Option<u8> },
    Enum(Arc<EnumMap>),
    Territory(Level),
}

/// What the transforms need from outside the value.
pub struct Context {
    pub today: NaiveDate,
    pub phone_form: PhoneForm,
    pub email: EmailSettings,
}

impl Step {
    /// Parses `name` or `name:argument`.
    pub fn parse(
        spec: &str,
        default_kinds: KindSet,
        enums: &HashMap<String, Arc<EnumMap>>,
    ) -> Result<Step, String> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (spec.trim(), None),
        };
        let no_arg = |step: Step| match arg {
            None => Ok(step),
            Some(a) => Err(format!("transform {name:?} takes no argument (got {a:?})")),
        };
        match name {
            "trim" => no_arg(Step::Trim),
            "collapse_spaces" => no_arg(Step::CollapseSpaces),
            "upper" => no_arg(Step::Upper),
            "lower" => no_arg(Step::Lower),
            "title" => no_arg(Step::Title),
            "email" => no_arg(Step::Email),
            "date" => no_arg(Step::Date),
            "cedula_cr" => match arg {
                None => Ok(Step::Cedula(default_kinds)),
                Some(list) => {
                    let mut kinds = Vec::new();
                    for k in list.split([',', '+']) {
                        kinds.push(IdKind::from_name(k.trim()).ok_or_else(|| {
                            format!(
                                "unknown identity kind {k:?} (known: fisica, juridica, dimex, nite)"
                            )
                        })?);
                    }
                    Ok(Step::Cedula(KindSet::of(&kinds)))
                }
            },
            "phone_cr" => match arg {
                None => Ok(Step::Phone { service: false }),
                Some("service") => Ok(Step::Phone { service: true }),
                Some(a) => Err(format!(
                    "phone_cr takes no argument or \"service\" (got {a:?})"
                )),
            },
            "number" => match arg {
                None => Ok(Step::Number { scale: None }),
                Some(a) => a
                    .parse::<u8>()
                    .ok()
                    .filter(|s| *s <= 12)
                    .map(|s| Step::Number { scale: Some(s) })
                    .ok_or_else(|| format!("number:<decimals> needs 0 to 12 (got {a:?})")),
            },
            "enum" => {
                let Some(map) = arg else {
                    return Err("enum needs the name of a map in `enums:` (enum:<name>)".into());
                };
                enums
                    .get(map)
                    .map(|m| Step::Enum(m.clone()))
                    .ok_or_else(|| format!("no enumeration {map:?} in this object's `enums:`"))
            }
            "territory_cr" => arg
                .and_then(Level::from_name)
                .map(Step::Territory)
                .ok_or_else(|| {
                    "territory_cr needs a level: territory_cr:provincia, :canton or :distrito"
                        .to_string()
                }),
            other => Err(format!(
                "unknown transform {other:?} (known: {})",
                TRANSFORMS.join(", ")
            )),
        }
    }

    /// SQL → HubSpot (and normalisation of HubSpot values before writing them back). A value
    /// the transform leaves as it is comes back borrowed, and looked-up values (enum options,
    /// official territory names) are borrowed from the mapping, so nothing is copied for them.
    pub fn apply<'a>(
        &'a self,
        value: impl Into<Cow<'a, str>>,
        ctx: &Context,
        notes: &mut Vec<Note>,
    ) -> Result<Cow<'a, str>, Invalid> {
        let value = value.into();
        Ok(match self {
            Step::Trim => narrow(value, str::trim),
            Step::CollapseSpaces => {
                if needs_collapsing(&value) {
                    Cow::Owned(collapse_spaces(&value))
                } else {
                    value
                }
            }
            Step::Upper => {
                if value
                    .bytes()
                    .all(|b| b.is_ascii() && !b.is_ascii_lowercase())
                {
                    value
                } else {
                    Cow::Owned(value.to_uppercase())
                }
            }
            Step::Lower => lowercase(value),
            Step::Title => Cow::Owned(title(&value)),
            Step::Email => {
                let value = lowercase(narrow(value, str::trim));
                let email = ctx.email;
                let reject = email.idn_domains == IdnDomains::Reject;
                match validation::email_to_ascii(&value, reject, email.unicode_local_part)? {
                    None => value,
                    Some(ascii) => {
                        notes.push(Note {
                            rule: "email_domain",
                            message: format!(
                                "internationalised domain converted to its ASCII form {:?}",
                                ascii.rsplit_once('@').map_or("", |(_, d)| d)
                            ),
                        });
                        Cow::Owned(ascii)
                    }
                }
            }
            Step::Cedula(kinds) => normalize_with(value, |v| {
                let (v, note) = cedula::normalize(v, *kinds)?;
                notes.extend(note);
                Ok(v)
            })?,
            Step::Phone { service } => {
                let (v, note) = phone::normalize(&value, *service)?;
                notes.extend(note);
                Cow::Owned(v)
            }
            Step::Date => normalize_with(value, |v| {
                Ok(date::format_or_keep(v.trim(), date::parse(v, ctx.today)?))
            })?,
            Step::Number { scale } => normalize_with(value, |v| number::parse(v, *scale))?,
            Step::Enum(map) => Cow::Borrowed(map.lookup(&value)?.hubspot.as_str()),
            Step::Territory(level) => {
                let t = territory();
                match level {
                    Level::Provincia => Cow::Borrowed(t.provincia(&value)?.name.as_str()),
                    Level::Canton => Cow::Borrowed(t.canton(&value)?.name.as_str()),
                    // Names are resolved within their cantón by the `territory` record rule.
                    Level::Distrito if value.trim().bytes().all(|b| b.is_ascii_digit()) => {
                        Cow::Borrowed(t.distrito(&value, None)?.name.as_str())
                    }
                    Level::Distrito if is_collapsed(&value) => value,
                    Level::Distrito => Cow::Owned(collapse_spaces(&value)),
                }
            }
        })
    }

    /// HubSpot → SQL form of an already normalised value.
    pub fn invert(&self, value: String, ctx: &Context) -> String {
        match self {
            Step::Phone { .. } => phone::to_form(&value, ctx.phone_form),
            Step::Enum(map) => map.lookup(&value).map(|v| v.sql.clone()).unwrap_or(value),
            _ => value,
        }
    }

    /// The SQL type this transform implies for the column.
    pub fn sql_type(&self) -> Option<SqlType> {
        match self {
            Step::Date => Some(SqlType::Date),
            Step::Number { .. } => Some(SqlType::Decimal(None)),
            _ => None,
        }
    }

    /// Which placeholder list applies to values of this transform.
    pub fn value_kind(&self) -> Option<ValueKind> {
        match self {
            Step::Phone { .. } => Some(ValueKind::Phone),
            Step::Cedula(_) => Some(ValueKind::Identity),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            phone_form: PhoneForm::National,
            email: EmailSettings::default(),
        }
    }

    fn enums() -> HashMap<String, Arc<EnumMap>> {
        let values = vec![
            EnumValue {
                sql: "1".into(),
                hubspot: "Soltero".into(),
                synonyms: vec!["soltera".into(), "S".into()],
            },
            EnumValue {
                sql: "5".into(),
                hubspot: "Unión Libre".into(),
                synonyms: vec!["UL".into(), "unión de hecho".into()],
            },
        ];
        [(
            "marital".to_string(),
            Arc::new(EnumMap::new(&values).unwrap()),
        )]
        .into()
    }

    fn apply(spec: &str, input: &str) -> Result<String, Invalid> {
        let kinds = KindSet::of(&[IdKind::Fisica, IdKind::Dimex]);
        let step = Step::parse(spec, kinds, &enums()).unwrap();
        step.apply(input.to_string(), &ctx(), &mut Vec::new())
            .map(Cow::into_owned)
    }

    fn invert(spec: &str, value: &str) -> String {
        let kinds = KindSet::of(&[IdKind::Fisica]);
        Step::parse(spec, kinds, &enums())
            .unwrap()
            .invert(value.to_string(), &ctx())
    }

    #[test]
    fn text_transforms() {
        assert_eq!(apply("trim", "  Ana ").unwrap(), "Ana");
        assert_eq!(
            apply("collapse_spaces", " Ana \t María ").unwrap(),
            "Ana María"
        );
        assert_eq!(apply("upper", "núñez").unwrap(), "NÚÑEZ");
        assert_eq!(apply("lower", "NÚÑEZ").unwrap(), "núñez");
        assert_eq!(apply("title", "josé ÁNGEL").unwrap(), "José Ángel");
        assert_eq!(
            apply("email", " Ana.Nunez@Example.COM ").unwrap(),
            "ana.nunez@example.com"
        );
    }

    #[test]
    fn costa_rica_transforms() {
        assert_eq!(apply("cedula_cr", "1-234-567").unwrap(), "102340567");
        assert_eq!(
            apply("cedula_cr:juridica", "3-101-12345").unwrap(),
            "3101012345"
        );
        assert_eq!(
            apply("cedula_cr", "3-101-123456").unwrap_err().rule,
            "cedula"
        );
        assert_eq!(apply("phone_cr", "8888-1234").unwrap(), "+50688881234");
        assert_eq!(apply("phone_cr", "800-123-4567").unwrap_err().rule, "phone");
        assert_eq!(
            apply("phone_cr:service", "800-123-4567").unwrap(),
            "+5068001234567"
        );
        assert_eq!(
            apply("date", "5 de setiembre de 1980").unwrap(),
            "1980-09-05"
        );
        assert_eq!(apply("number", "₡1.250.000,00").unwrap(), "1250000.00");
        assert_eq!(apply("number:2", "1250000").unwrap(), "1250000.00");
        assert_eq!(apply("territory_cr:provincia", "CR-L").unwrap(), "Limón");
        assert_eq!(
            apply("territory_cr:canton", "valverde vega").unwrap(),
            "Sarchí"
        );
        assert_eq!(
            apply("territory_cr:distrito", "61201").unwrap(),
            "Monteverde"
        );
        assert_eq!(
            apply("territory_cr:distrito", " san  rafael ").unwrap(),
            "san rafael"
        );
        assert_eq!(
            apply("territory_cr:distrito", "60109").unwrap_err().rule,
            "territory"
        );
    }

    #[test]
    fn enum_maps_codes_labels_and_synonyms() {
        assert_eq!(apply("enum:marital", "1").unwrap(), "Soltero");
        assert_eq!(apply("enum:marital", "SOLTERA").unwrap(), "Soltero");
        assert_eq!(
            apply("enum:marital", "Union de hecho").unwrap(),
            "Unión Libre"
        );
        assert_eq!(apply("enum:marital", "Unión Libre").unwrap(), "Unión Libre");
        let e = apply("enum:marital", "casado").unwrap_err();
        assert_eq!(e.message, "\"casado\" is not one of: Soltero, Unión Libre");
        assert_eq!(invert("enum:marital", "Unión Libre"), "5");
    }

    #[test]
    fn inverses_give_the_sql_form() {
        assert_eq!(invert("phone_cr", "+50688881234"), "88881234");
        assert_eq!(invert("cedula_cr", "102340567"), "102340567");
        assert_eq!(invert("date", "1980-09-05"), "1980-09-05");
    }

    #[test]
    fn bad_specs_are_explained() {
        let kinds = KindSet::of(&[IdKind::Fisica]);
        let err = |spec: &str| Step::parse(spec, kinds, &enums()).unwrap_err();
        assert!(err("foo").starts_with("unknown transform \"foo\""));
        assert!(err("trim:x").contains("takes no argument"));
        assert!(err("cedula_cr:pasaporte").contains("unknown identity kind"));
        assert!(err("phone_cr:mobile").contains("service"));
        assert!(err("number:x").contains("0 to 12"));
        assert!(err("enum").contains("enum:<name>"));
        assert!(err("enum:colors").contains("no enumeration \"colors\""));
        assert!(err("territory_cr").contains("needs a level"));
        assert!(err("territory_cr:barrio").contains("needs a level"));
    }

    #[test]
    fn an_enum_synonym_claimed_twice_is_refused() {
        let values = vec![
            EnumValue {
                sql: "1".into(),
                hubspot: "Soltero".into(),
                synonyms: vec!["S".into()],
            },
            EnumValue {
                sql: "7".into(),
                hubspot: "Separado".into(),
                synonyms: vec!["s".into()],
            },
        ];
        let e = EnumMap::new(&values).unwrap_err();
        assert!(e.contains("names both \"Soltero\" and \"Separado\""), "{e}");
    }
}
