//! The portal's write rules as hubsync checks them before sending: the property validation
//! rules HubSpot publishes (`GET /crm/property-validations/{version}/{objectTypeId}`) and the
//! conditionally required properties an operator declares in `portal_required` (HubSpot
//! enforces them on writes from `2026-09` on but offers no API to read them). A record that
//! breaks one is rejected before its batch is sent, naming the rule; clashes between the rules
//! and the mapping are reported at start, reload and `check-config`. Pure code.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

/// One property's rules, as the property-validations API lists them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyRules {
    pub property_name: String,
    #[serde(default)]
    pub property_validation_rules: Vec<ValidationRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRule {
    pub rule_type: String,
    #[serde(default)]
    pub rule_arguments: Vec<String>,
    #[serde(default)]
    pub should_apply_normalization: bool,
}

/// `{"results": [...]}` of the property-validations API.
#[derive(Debug, Deserialize)]
pub struct ValidationList {
    #[serde(default)]
    pub results: Vec<PropertyRules>,
}

/// A property the portal requires: always on create (no `when`), or whenever another property
/// has one of some values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredProperty {
    pub property: String,
    #[serde(default)]
    pub when: Option<RequiredWhen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredWhen {
    pub property: String,
    #[serde(rename = "is")]
    pub values: Vec<String>,
}

/// A record value that breaks a portal rule. The message never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: String,
    /// The portal's rule type (`PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE`, `REQUIRED`, …).
    pub rule: String,
    pub message: String,
}

/// What a value must satisfy, compiled once.
#[derive(Debug, Clone)]
enum Check {
    MaxLength(usize),
    MinLength(usize),
    Chars(Charset),
    Pattern(Regex, String),
    CountryCode,
    Min(f64),
    Max(f64),
    Decimals(usize),
    Domains { listed: Vec<String>, allowed: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Letters,
    Digits,
    LettersAndDigits,
}

#[derive(Debug, Clone)]
struct Compiled {
    rule_type: String,
    trim: bool,
    check: Check,
}

/// The rules of one object: compiled validation rules per property, plus the required ones.
#[derive(Debug, Clone, Default)]
pub struct PortalRules {
    by_property: BTreeMap<String, Vec<Compiled>>,
    /// Rules hubsync cannot check before sending: (property, rule type).
    unchecked: Vec<(String, String)>,
    required: Vec<RequiredProperty>,
}

impl PortalRules {
    /// Compiles the published rules and the declared required properties.
    pub fn new(published: Vec<PropertyRules>, required: Vec<RequiredProperty>) -> Self {
        let mut rules = Self {
            required,
            ..Self::default()
        };
        for property in published {
            for rule in property.property_validation_rules {
                match compile(&rule) {
                    Some(check) => rules
                        .by_property
                        .entry(property.property_name.clone())
                        .or_default()
                        .push(Compiled {
                            rule_type: rule.rule_type,
                            trim: rule.should_apply_normalization,
                            check,
                        }),
                    None => rules
                        .unchecked
                        .push((property.property_name.clone(), rule.rule_type)),
                }
            }
        }
        rules
    }

    pub fn is_empty(&self) -> bool {
        self.by_property.is_empty() && self.unchecked.is_empty() && self.required.is_empty()
    }

    /// Every rule the record's properties break. `properties` is the full mapped record (what
    /// SQL Server holds), which is what HubSpot's record becomes; required properties are
    /// judged on it, as on a create.
    pub fn check(&self, properties: &BTreeMap<String, Option<String>>) -> Vec<Violation> {
        let value = |p: &str| {
            properties
                .get(p)
                .and_then(|v| v.as_deref())
                .filter(|v| !v.is_empty())
        };
        let mut found = Vec::new();
        for (property, rules) in &self.by_property {
            let Some(v) = value(property) else { continue };
            for rule in rules {
                let v = if rule.trim { v.trim() } else { v };
                if let Some(message) = rule.check.failure(v) {
                    found.push(Violation {
                        property: property.clone(),
                        rule: rule.rule_type.clone(),
                        message,
                    });
                }
            }
        }
        for req in &self.required {
            if value(&req.property).is_some() {
                continue;
            }
            let message = match &req.when {
                None => "HubSpot requires it to create a record".to_owned(),
                Some(when) => match value(&when.property) {
                    Some(v) if when.values.iter().any(|x| x == v) => {
                        format!("HubSpot requires it when {} has this value", when.property)
                    }
                    _ => continue,
                },
            };
            found.push(Violation {
                property: req.property.clone(),
                rule: "REQUIRED".into(),
                message,
            });
        }
        found
    }

    /// Where the rules and the mapping disagree, one line per property and rule. `uses`
    /// describes how the mapping writes each property.
    pub fn clashes(&self, uses: &[PortalUse]) -> Vec<String> {
        let written = |p: &str| uses.iter().find(|u| u.property == p);
        let mut lines = Vec::new();
        for (property, rules) in &self.by_property {
            let Some(u) = written(property) else { continue };
            for rule in rules {
                if let Some(why) = clash(&rule.check, u) {
                    lines.push(format!(
                        "property {property} ({}): portal rule {}: {why}; such records are rejected before sending",
                        u.field, rule.rule_type
                    ));
                }
            }
        }
        for (property, rule) in &self.unchecked {
            if let Some(u) = written(property) {
                lines.push(format!(
                    "property {property} ({}): portal rule {rule} is not checked by hubsync before sending; a record breaking it fails its batch call and is isolated",
                    u.field
                ));
            }
        }
        for req in &self.required {
            let cond = req
                .when
                .as_ref()
                .map(|w| format!(" when {} is one of {:?}", w.property, w.values))
                .unwrap_or_else(|| " on create".into());
            match written(&req.property) {
                None => lines.push(format!(
                    "property {}: the portal requires it{cond} but the mapping does not write it; such records are rejected before sending",
                    req.property
                )),
                Some(u) if !u.required => lines.push(format!(
                    "property {} ({}): the portal requires it{cond}; the field is optional in the mapping, so records without a value are rejected before sending",
                    req.property, u.field
                )),
                Some(_) => {}
            }
            if let Some(when) = &req.when
                && written(&when.property).is_none()
            {
                lines.push(format!(
                    "property {}: the portal's rule on {} depends on it, but the mapping does not write it, so hubsync cannot check the rule",
                    when.property, req.property
                ));
            }
        }
        lines
    }
}

/// How the mapping writes one property: for comparing with the portal's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortalUse {
    pub property: String,
    /// The SQL column it comes from.
    pub field: String,
    /// The longest value the mapping lets through (`max_length:<n>`), if bounded.
    pub max_length: Option<usize>,
    /// The value leaves as `+<country code><number>` (the `phone_cr` transform).
    pub international_phone: bool,
    /// The mapping requires a value.
    pub required: bool,
}

fn compile(rule: &ValidationRule) -> Option<Check> {
    let arg = rule.rule_arguments.first().map(|a| a.trim());
    let whole = || arg?.parse::<usize>().ok();
    let number = || arg?.parse::<f64>().ok();
    Some(match rule.rule_type.as_str() {
        "MAX_LENGTH" => Check::MaxLength(whole()?),
        "MIN_LENGTH" => Check::MinLength(whole()?),
        "DECIMAL" => Check::Decimals(whole()?),
        "MIN_NUMBER" => Check::Min(number()?),
        "MAX_NUMBER" => Check::Max(number()?),
        "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE" => Check::CountryCode,
        "ALPHANUMERIC" => Check::Chars(match arg? {
            "ALPHA_ONLY" => Charset::Letters,
            "NUMERIC_ONLY" => Charset::Digits,
            "ALPHANUMERIC" => Charset::LettersAndDigits,
            _ => return None,
        }),
        "REGEX" => {
            let source = arg?.to_owned();
            Check::Pattern(Regex::new(&format!("^(?:{source})$")).ok()?, source)
        }
        kind @ ("EMAIL_ALLOWED_DOMAINS" | "EMAIL_BLOCKED_DOMAINS") => Check::Domains {
            listed: rule
                .rule_arguments
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            allowed: kind == "EMAIL_ALLOWED_DOMAINS",
        },
        _ => return None,
    })
}

impl Check {
    /// Why `v` fails the check (never quoting it), or None.
    fn failure(&self, v: &str) -> Option<String> {
        let chars = v.chars().count();
        let decimal = || v.parse::<f64>().ok();
        match self {
            Check::MaxLength(n) if chars > *n => {
                Some(format!("{chars} characters, at most {n} allowed"))
            }
            Check::MinLength(n) if chars < *n => {
                Some(format!("{chars} characters, at least {n} required"))
            }
            Check::Chars(set) => {
                let ok = |c: char| match set {
                    Charset::Letters => c.is_alphabetic(),
                    Charset::Digits => c.is_ascii_digit(),
                    Charset::LettersAndDigits => c.is_alphanumeric(),
                };
                (!v.chars().all(ok)).then(|| {
                    match set {
                        Charset::Letters => "only letters allowed",
                        Charset::Digits => "only digits allowed",
                        Charset::LettersAndDigits => "only letters and digits allowed",
                    }
                    .to_owned()
                })
            }
            Check::Pattern(re, source) => {
                (!re.is_match(v)).then(|| format!("does not match the pattern {source}"))
            }
            Check::CountryCode => {
                let b = v.as_bytes();
                let explicit = b.len() > 1 && b[0] == b'+' && (b'1'..=b'9').contains(&b[1]);
                (!explicit).then(|| "must start with + and a country code".to_owned())
            }
            Check::Min(min) => decimal()
                .filter(|x| x < min)
                .map(|_| format!("below the portal's minimum {min}")),
            Check::Max(max) => decimal()
                .filter(|x| x > max)
                .map(|_| format!("above the portal's maximum {max}")),
            Check::Decimals(places) => {
                let have = v.split_once('.').map_or(0, |(_, f)| f.len());
                (have > *places).then(|| format!("{have} decimal places, at most {places} allowed"))
            }
            Check::Domains { listed, allowed } => {
                let domain = v.rsplit_once('@')?.1.to_ascii_lowercase();
                (listed.contains(&domain) != *allowed).then(|| {
                    if *allowed {
                        "the email's domain is not one the portal allows".to_owned()
                    } else {
                        "the email's domain is one the portal blocks".to_owned()
                    }
                })
            }
            _ => None,
        }
    }
}

/// How `check` and the mapping disagree for one property, if they do.
fn clash(check: &Check, u: &PortalUse) -> Option<String> {
    match check {
        Check::CountryCode if !u.international_phone => Some(
            "it wants an explicit country code, but the mapping sends the value as SQL Server holds it (no phone_cr transform)"
                .into(),
        ),
        Check::MaxLength(n) => match u.max_length {
            Some(m) if m <= *n => None,
            Some(m) => Some(format!("the mapping allows {m} characters, the portal {n}")),
            None => Some(format!("the mapping does not bound the length, the portal allows {n} characters")),
        },
        Check::Chars(Charset::Digits | Charset::Letters) if u.international_phone => {
            Some("the mapping sends phone numbers with a leading +".into())
        }
        Check::Pattern(_, source) => Some(format!("values must match the portal's pattern {source}")),
        Check::MinLength(n) => Some(format!("values shorter than {n} characters are refused")),
        _ => None,
    }
}

/// HubSpot's object type id for the property-validations API (`contacts` → `0-1`); custom
/// objects are given by id already.
pub fn object_type_id(object: &str) -> &str {
    match object {
        "contacts" => "0-1",
        "companies" => "0-2",
        "deals" => "0-3",
        "tickets" => "0-5",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(property: &str, rule_type: &str, args: &[&str]) -> PropertyRules {
        PropertyRules {
            property_name: property.into(),
            property_validation_rules: vec![ValidationRule {
                rule_type: rule_type.into(),
                rule_arguments: args.iter().map(|a| a.to_string()).collect(),
                should_apply_normalization: false,
            }],
        }
    }

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    fn broken(rules: &PortalRules, pairs: &[(&str, &str)]) -> Vec<String> {
        rules
            .check(&record(pairs))
            .into_iter()
            .map(|v| format!("{}:{}", v.property, v.rule))
            .collect()
    }

    #[test]
    fn a_phone_rule_rejects_national_numbers_and_names_itself() {
        let rules = PortalRules::new(
            vec![published(
                "telefono",
                "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
                &[],
            )],
            vec![],
        );
        assert!(broken(&rules, &[("telefono", "+50688888888")]).is_empty());
        let found = rules.check(&record(&[("telefono", "88888888")]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE");
        assert!(!found[0].message.contains("8888"), "{}", found[0].message);
        // An empty value is not checked.
        assert!(broken(&rules, &[("telefono", "")]).is_empty());
    }

    #[test]
    fn length_charset_pattern_number_and_domain_rules() {
        let rules = PortalRules::new(
            vec![
                published("a", "MAX_LENGTH", &["3"]),
                published("b", "ALPHANUMERIC", &["NUMERIC_ONLY"]),
                published("c", "REGEX", &["[A-Z]{2}-[0-9]+"]),
                published("d", "MIN_NUMBER", &["1"]),
                published("e", "DECIMAL", &["0"]),
                published("email", "EMAIL_ALLOWED_DOMAINS", &["coop.cr"]),
            ],
            vec![],
        );
        assert!(
            broken(
                &rules,
                &[
                    ("a", "ñño"),
                    ("b", "123"),
                    ("c", "CR-1"),
                    ("d", "1"),
                    ("e", "7"),
                    ("email", "x@COOP.cr")
                ]
            )
            .is_empty()
        );
        assert_eq!(
            broken(
                &rules,
                &[
                    ("a", "abcd"),
                    ("b", "12a"),
                    ("c", "cr-1"),
                    ("d", "0.5"),
                    ("e", "7.5"),
                    ("email", "x@gmail.com")
                ]
            ),
            [
                "a:MAX_LENGTH",
                "b:ALPHANUMERIC",
                "c:REGEX",
                "d:MIN_NUMBER",
                "e:DECIMAL",
                "email:EMAIL_ALLOWED_DOMAINS"
            ]
        );
    }

    #[test]
    fn required_properties_follow_their_condition() {
        let rules = PortalRules::new(
            vec![],
            vec![RequiredProperty {
                property: "canton".into(),
                when: Some(RequiredWhen {
                    property: "provincia".into(),
                    values: vec!["Cartago".into()],
                }),
            }],
        );
        assert_eq!(
            broken(&rules, &[("provincia", "Cartago")]),
            ["canton:REQUIRED"]
        );
        assert!(broken(&rules, &[("provincia", "Cartago"), ("canton", "Oreamuno")]).is_empty());
        assert!(broken(&rules, &[("provincia", "Limón")]).is_empty());
        assert!(broken(&rules, &[]).is_empty());
    }

    #[test]
    fn clashes_name_the_property_the_field_and_the_rule() {
        let rules = PortalRules::new(
            vec![
                published("telefono", "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE", &[]),
                published("movil", "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE", &[]),
                published("firstname", "MAX_LENGTH", &["50"]),
                published("lastname", "MAX_LENGTH", &["200"]),
                published("zip", "DAYS_OF_WEEK", &["MONDAY"]),
            ],
            vec![RequiredProperty {
                property: "canton".into(),
                when: Some(RequiredWhen {
                    property: "provincia".into(),
                    values: vec!["Cartago".into()],
                }),
            }],
        );
        let use_of = |p: &str, max, phone| PortalUse {
            property: p.into(),
            field: format!("col_{p}"),
            max_length: max,
            international_phone: phone,
            required: false,
        };
        let lines = rules.clashes(&[
            use_of("telefono", None, false),
            use_of("movil", None, true),
            use_of("firstname", Some(100), false),
            use_of("lastname", Some(100), false),
            use_of("zip", None, false),
            use_of("provincia", None, false),
        ]);
        let text = lines.join("\n");
        assert_eq!(lines.len(), 4, "{text}");
        assert!(text.contains("property telefono (col_telefono): portal rule PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE"), "{text}");
        assert!(text.contains("property firstname (col_firstname): portal rule MAX_LENGTH: the mapping allows 100 characters, the portal 50"), "{text}");
        assert!(
            text.contains("portal rule DAYS_OF_WEEK is not checked"),
            "{text}"
        );
        assert!(
            text.contains("property canton: the portal requires it when provincia"),
            "{text}"
        );
        assert!(
            !text.contains("movil") && !text.contains("lastname"),
            "{text}"
        );
    }

    #[test]
    fn published_answers_parse() {
        let body = r#"{"results":[{"propertyName":"zip","propertyValidationRules":[{"ruleType":"ALPHANUMERIC","ruleArguments":["NUMERIC_ONLY"],"shouldApplyNormalization":true}]}]}"#;
        let list: ValidationList = serde_json::from_str(body).unwrap();
        let rules = PortalRules::new(list.results, vec![]);
        assert_eq!(broken(&rules, &[("zip", " 10101 ")]), Vec::<String>::new());
        assert_eq!(broken(&rules, &[("zip", "1010A")]), ["zip:ALPHANUMERIC"]);
        assert_eq!(object_type_id("contacts"), "0-1");
        assert_eq!(object_type_id("2-123"), "2-123");
    }
}
