//! The portal's write rules as the simulator enforces them: property validation rules (set
//! through HubSpot's property-validations API: MAX_LENGTH, MIN_LENGTH, ALPHANUMERIC, REGEX,
//! PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE, MIN_NUMBER, MAX_NUMBER, DECIMAL,
//! EMAIL_ALLOWED_DOMAINS, EMAIL_BLOCKED_DOMAINS) and conditionally required properties (set by a
//! portal admin in HubSpot's UI; the simulator's admin API stands in for it). Pure.
//!
//! Property validation rules apply to API writes of every version (HubSpot enforces them for
//! integrations since July 2023); conditionally required properties only from `2026-09` (the
//! "CRM API write validation enforcement" changelog). The error codes are HubSpot's where one is
//! published (`INVALID_ALPHA`) and descriptive otherwise [I].

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::batch::parse;
use super::errors::{Reply, bad_request};
use super::store::Store;
use super::validate::PropertyError;

/// Every rule type the property-validations API names (its path enum).
pub const RULE_TYPES: [&str; 27] = [
    "AFTER_DATETIME_DURATION",
    "AFTER_DURATION",
    "ALPHANUMERIC",
    "BEFORE_DATETIME_DURATION",
    "BEFORE_DURATION",
    "DAYS_OF_WEEK",
    "DECIMAL",
    "DOMAIN",
    "EMAIL",
    "EMAIL_ALLOWED_DOMAINS",
    "EMAIL_BLOCKED_DOMAINS",
    "END_DATE",
    "END_DATETIME",
    "FORMAT",
    "MAX_LENGTH",
    "MAX_NUMBER",
    "MIN_LENGTH",
    "MIN_NUMBER",
    "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
    "REGEX",
    "SPECIAL_CHARACTERS",
    "START_DATE",
    "START_DATETIME",
    "URL",
    "URL_ALLOWED_DOMAINS",
    "URL_BLOCKED_DOMAINS",
    "WHITESPACE",
];

/// One rule of one property, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRule {
    pub rule_type: String,
    pub rule_arguments: Vec<String>,
    #[serde(default)]
    pub should_apply_normalization: bool,
}

/// A property that must have a value when another property has one of some values (`when`),
/// or on every create (no `when`: a required field of the create-record form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredRule {
    pub property: String,
    #[serde(default)]
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub property: String,
    #[serde(rename = "is")]
    pub values: Vec<String>,
}

/// The body of `PUT …/rule-type/{ruleType}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleInput {
    pub rule_arguments: Vec<String>,
    #[serde(default)]
    pub should_apply_normalization: bool,
}

/// The portal's rules.
#[derive(Debug, Default, Clone)]
pub struct PortalRules {
    /// Property → its rules, one per rule type.
    validations: BTreeMap<String, Vec<(ValidationRule, Option<Regex>)>>,
    pub required: Vec<RequiredRule>,
}

impl PortalRules {
    /// Sets (or replaces) the rule of `rule_type` on `property`; `Err` names what is wrong
    /// with the arguments.
    pub fn put(&mut self, property: &str, rule_type: &str, input: RuleInput) -> Result<(), String> {
        if !RULE_TYPES.contains(&rule_type) {
            return Err(format!("Unknown ruleType {rule_type}"));
        }
        let pattern = check_arguments(rule_type, &input.rule_arguments)?;
        let rule = ValidationRule {
            rule_type: rule_type.to_owned(),
            rule_arguments: input.rule_arguments,
            should_apply_normalization: input.should_apply_normalization,
        };
        let rules = self.validations.entry(property.to_owned()).or_default();
        rules.retain(|(r, _)| r.rule_type != rule_type);
        rules.push((rule, pattern));
        Ok(())
    }

    /// Removes the rule of `rule_type` on `property`; false when there was none.
    pub fn delete(&mut self, property: &str, rule_type: &str) -> bool {
        let Some(rules) = self.validations.get_mut(property) else {
            return false;
        };
        let before = rules.len();
        rules.retain(|(r, _)| r.rule_type != rule_type);
        let removed = rules.len() != before;
        if rules.is_empty() {
            self.validations.remove(property);
        }
        removed
    }

    /// `GET …/property-validations/{objectTypeId}`: every property with rules.
    pub fn list_json(&self) -> Value {
        let results: Vec<Value> = self
            .validations
            .iter()
            .map(|(name, rules)| json!({"propertyName": name, "propertyValidationRules": rules_json(rules)}))
            .collect();
        json!({ "results": results })
    }

    /// `GET …/property-validations/{objectTypeId}/{propertyName}`.
    pub fn property_json(&self, property: &str) -> Value {
        let rules = self
            .validations
            .get(property)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        json!({ "results": rules_json(rules) })
    }

    /// Every validation rule a written non-empty value breaks.
    pub fn value_problems(&self, name: &str, value: &str) -> Vec<PropertyError> {
        let Some(rules) = self.validations.get(name) else {
            return Vec::new();
        };
        rules
            .iter()
            .filter_map(|(rule, pattern)| {
                let checked = if rule.should_apply_normalization {
                    value.trim()
                } else {
                    value
                };
                breaks(rule, pattern.as_ref(), checked).map(|(code, message)| PropertyError {
                    name: name.to_owned(),
                    code,
                    message,
                })
            })
            .collect()
    }

    /// Required properties missing from the record a write would leave (`after`: the stored
    /// values with the write applied). `creating` adds the create-form requirements.
    pub fn required_problems(
        &self,
        after: &BTreeMap<String, String>,
        creating: bool,
    ) -> Vec<PropertyError> {
        let has = |p: &str| after.get(p).is_some_and(|v| !v.is_empty());
        self.required
            .iter()
            .filter(|rule| !has(&rule.property))
            .filter_map(|rule| match &rule.when {
                None if creating => Some(PropertyError {
                    name: rule.property.clone(),
                    code: "REQUIRED_PROPERTY_MISSING",
                    message: format!("{} is required to create a record", rule.property),
                }),
                None => None,
                Some(when) => {
                    let current = after.get(&when.property)?;
                    when.values.contains(current).then(|| PropertyError {
                        name: rule.property.clone(),
                        code: "CONDITIONALLY_REQUIRED_PROPERTY_MISSING",
                        message: format!(
                            "{} is required when {} is {current}",
                            rule.property, when.property
                        ),
                    })
                }
            })
            .collect()
    }
}

/// `GET …/property-validations/{objectTypeId}[/{propertyName}]`.
pub fn get(store: &Store, property: Option<&str>, corr: &str) -> Reply {
    match property {
        None => Reply::json(200, store.rules.list_json()),
        Some(name) if store.property(name).is_some() => {
            Reply::json(200, store.rules.property_json(name))
        }
        Some(name) => Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Unable to find property {name}"),
            corr,
        ),
    }
}

/// `GET …/property-validations/{objectTypeId}/{propertyName}/rule-type/{ruleType}`.
pub fn get_rule(store: &Store, property: &str, rule_type: &str, corr: &str) -> Reply {
    let rule = store
        .rules
        .validations
        .get(property)
        .and_then(|rules| rules.iter().find(|(r, _)| r.rule_type == rule_type));
    match rule {
        Some((rule, _)) => Reply::json(200, serde_json::to_value(rule).unwrap_or(Value::Null)),
        None => Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Property {property} has no {rule_type} rule"),
            corr,
        ),
    }
}

/// `PUT …/property-validations/{objectTypeId}/{propertyName}/rule-type/{ruleType}` → 204.
pub fn put(store: &mut Store, property: &str, rule_type: &str, body: &[u8], corr: &str) -> Reply {
    if store.property(property).is_none() {
        return Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Unable to find property {property}"),
            corr,
        );
    }
    let input: RuleInput = match parse(body, corr) {
        Ok(input) => input,
        Err(reply) => return reply,
    };
    match store.rules.put(property, rule_type, input) {
        Ok(()) => Reply::empty(204),
        Err(message) => bad_request(message, corr),
    }
}

/// `DELETE …/rule-type/{ruleType}` → 204, or 404 when the property has no such rule.
pub fn delete(store: &mut Store, property: &str, rule_type: &str, corr: &str) -> Reply {
    if store.rules.delete(property, rule_type) {
        Reply::empty(204)
    } else {
        Reply::error(
            404,
            "OBJECT_NOT_FOUND",
            format!("Property {property} has no {rule_type} rule"),
            corr,
        )
    }
}

fn rules_json(rules: &[(ValidationRule, Option<Regex>)]) -> Vec<Value> {
    rules
        .iter()
        .map(|(r, _)| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect()
}

/// The arguments a rule type takes; the compiled pattern of a REGEX rule.
fn check_arguments(rule_type: &str, args: &[String]) -> Result<Option<Regex>, String> {
    let one = || match args {
        [one] => Ok(one.as_str()),
        _ => Err(format!("{rule_type} takes exactly one argument")),
    };
    match rule_type {
        "MAX_LENGTH" | "MIN_LENGTH" | "DECIMAL" => one()?
            .parse::<u32>()
            .map(|_| None)
            .map_err(|_| format!("{rule_type} takes a whole number")),
        "MIN_NUMBER" | "MAX_NUMBER" => one()?
            .parse::<f64>()
            .map(|_| None)
            .map_err(|_| format!("{rule_type} takes a number")),
        "ALPHANUMERIC" => match one()? {
            "ALPHANUMERIC" | "ALPHA_ONLY" | "NUMERIC_ONLY" => Ok(None),
            other => Err(format!(
                "ALPHANUMERIC takes ALPHANUMERIC, ALPHA_ONLY or NUMERIC_ONLY, not {other}"
            )),
        },
        "REGEX" => Regex::new(&format!("^(?:{})$", one()?))
            .map(Some)
            .map_err(|e| format!("REGEX pattern does not compile: {e}")),
        "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE" if args.is_empty() => Ok(None),
        "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE" => {
            Err("PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE takes no arguments".into())
        }
        "EMAIL_ALLOWED_DOMAINS" | "EMAIL_BLOCKED_DOMAINS" if args.is_empty() => {
            Err(format!("{rule_type} takes at least one domain"))
        }
        _ => Ok(None),
    }
}

/// Whether `value` breaks `rule`: the error code and message. Rule types the simulator does
/// not model (dates relative to today, URL, FORMAT, …) accept every value.
fn breaks(
    rule: &ValidationRule,
    pattern: Option<&Regex>,
    value: &str,
) -> Option<(&'static str, String)> {
    let arg = rule
        .rule_arguments
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let number = |s: &str| s.parse::<f64>().ok();
    match rule.rule_type.as_str() {
        "MAX_LENGTH" => {
            let max: usize = arg.parse().ok()?;
            (value.chars().count() > max).then(|| {
                (
                    "INVALID_MAX_LENGTH",
                    format!("Enter no more than {max} characters"),
                )
            })
        }
        "MIN_LENGTH" => {
            let min: usize = arg.parse().ok()?;
            (value.chars().count() < min).then(|| {
                (
                    "INVALID_MIN_LENGTH",
                    format!("Enter at least {min} characters"),
                )
            })
        }
        "ALPHANUMERIC" => {
            let (ok, code, message): (fn(char) -> bool, _, _) = match arg {
                "ALPHA_ONLY" => (char::is_alphabetic, "INVALID_ALPHA", "Enter only letters"),
                "NUMERIC_ONLY" => (
                    |c: char| c.is_ascii_digit(),
                    "INVALID_NUMERIC",
                    "Enter only numbers",
                ),
                _ => (
                    char::is_alphanumeric,
                    "INVALID_ALPHANUMERIC",
                    "Enter only letters and numbers",
                ),
            };
            (!value.chars().all(ok)).then(|| (code, message.to_owned()))
        }
        "REGEX" => (!pattern?.is_match(value)).then(|| {
            (
                "INVALID_REGEX",
                format!("Enter a value matching {}", rule.rule_arguments[0]),
            )
        }),
        "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE" => {
            let mut chars = value.chars();
            let explicit =
                chars.next() == Some('+') && chars.next().is_some_and(|c| ('1'..='9').contains(&c));
            (!explicit).then(|| {
                (
                    "INVALID_PHONE_NUMBER_COUNTRY_CODE",
                    "Enter a phone number with a country code, starting with +".to_owned(),
                )
            })
        }
        "MIN_NUMBER" => (number(value)? < number(arg)?).then(|| {
            (
                "INVALID_MIN_NUMBER",
                format!("Enter a number of at least {arg}"),
            )
        }),
        "MAX_NUMBER" => (number(value)? > number(arg)?).then(|| {
            (
                "INVALID_MAX_NUMBER",
                format!("Enter a number of at most {arg}"),
            )
        }),
        "DECIMAL" => {
            let places: usize = arg.parse().ok()?;
            let decimals = value.split_once('.').map_or(0, |(_, f)| f.len());
            (decimals > places).then(|| {
                (
                    "INVALID_DECIMAL",
                    format!("Enter a number with at most {places} decimal places"),
                )
            })
        }
        "EMAIL_ALLOWED_DOMAINS" | "EMAIL_BLOCKED_DOMAINS" => {
            let domain = value.rsplit_once('@')?.1.to_lowercase();
            let listed = rule
                .rule_arguments
                .iter()
                .any(|d| d.trim().eq_ignore_ascii_case(&domain));
            let allowed_list = rule.rule_type == "EMAIL_ALLOWED_DOMAINS";
            (listed != allowed_list).then(|| {
                (
                    "INVALID_EMAIL_DOMAIN",
                    format!("Email addresses at {domain} are not allowed"),
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(property: &str, rule_type: &str, args: &[&str]) -> PortalRules {
        let mut rules = PortalRules::default();
        let input = RuleInput {
            rule_arguments: args.iter().map(|a| a.to_string()).collect(),
            should_apply_normalization: false,
        };
        rules.put(property, rule_type, input).unwrap();
        rules
    }

    fn codes(rules: &PortalRules, property: &str, value: &str) -> Vec<&'static str> {
        rules
            .value_problems(property, value)
            .into_iter()
            .map(|p| p.code)
            .collect()
    }

    #[test]
    fn phone_rule_wants_a_plus_and_a_country_code() {
        let r = rules("phone", "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE", &[]);
        assert!(codes(&r, "phone", "+50688888888").is_empty());
        assert_eq!(
            codes(&r, "phone", "88888888"),
            ["INVALID_PHONE_NUMBER_COUNTRY_CODE"]
        );
        assert_eq!(
            codes(&r, "phone", "+0 8888"),
            ["INVALID_PHONE_NUMBER_COUNTRY_CODE"]
        );
        assert!(codes(&r, "other", "88888888").is_empty());
    }

    #[test]
    fn length_alpha_regex_number_and_domain_rules() {
        let r = rules("n", "MAX_LENGTH", &["3"]);
        assert!(codes(&r, "n", "ñño").is_empty());
        assert_eq!(codes(&r, "n", "abcd"), ["INVALID_MAX_LENGTH"]);
        let r = rules("n", "ALPHANUMERIC", &["ALPHA_ONLY"]);
        assert_eq!(codes(&r, "n", "Ana1"), ["INVALID_ALPHA"]);
        assert!(codes(&r, "n", "Añá").is_empty());
        let r = rules("n", "REGEX", &["[0-9]{2}"]);
        assert!(codes(&r, "n", "12").is_empty());
        assert_eq!(codes(&r, "n", "123"), ["INVALID_REGEX"]);
        let r = rules("n", "MAX_NUMBER", &["100"]);
        assert_eq!(codes(&r, "n", "100.5"), ["INVALID_MAX_NUMBER"]);
        let r = rules("n", "DECIMAL", &["2"]);
        assert_eq!(codes(&r, "n", "1.234"), ["INVALID_DECIMAL"]);
        let r = rules("email", "EMAIL_BLOCKED_DOMAINS", &["spam.cr"]);
        assert_eq!(codes(&r, "email", "a@SPAM.cr"), ["INVALID_EMAIL_DOMAIN"]);
        assert!(codes(&r, "email", "a@coop.cr").is_empty());
    }

    #[test]
    fn bad_arguments_and_unknown_rule_types_are_refused() {
        let mut r = PortalRules::default();
        let input = |args: &[&str]| RuleInput {
            rule_arguments: args.iter().map(|a| a.to_string()).collect(),
            should_apply_normalization: false,
        };
        assert!(r.put("n", "MAX_LENGTH", input(&["x"])).is_err());
        assert!(r.put("n", "REGEX", input(&["("])).is_err());
        assert!(r.put("n", "NOT_A_RULE", input(&[])).is_err());
        assert!(r.put("n", "MAX_LENGTH", input(&["5"])).is_ok());
        // A second rule of the same type replaces the first.
        assert!(r.put("n", "MAX_LENGTH", input(&["9"])).is_ok());
        assert_eq!(r.property_json("n")["results"].as_array().unwrap().len(), 1);
        assert!(r.delete("n", "MAX_LENGTH"));
        assert_eq!(r.list_json(), json!({"results": []}));
    }

    #[test]
    fn required_rules_look_at_the_record_after_the_write() {
        let r = PortalRules {
            required: vec![
                RequiredRule {
                    property: "canton".into(),
                    when: Some(Condition {
                        property: "provincia".into(),
                        values: vec!["Cartago".into()],
                    }),
                },
                RequiredRule {
                    property: "lastname".into(),
                    when: None,
                },
            ],
            ..PortalRules::default()
        };
        let record = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let names = |after, creating| -> Vec<String> {
            r.required_problems(&after, creating)
                .into_iter()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(
            names(record(&[("provincia", "Cartago")]), false),
            ["canton"]
        );
        assert_eq!(
            names(record(&[("provincia", "Cartago")]), true),
            ["canton", "lastname"]
        );
        assert!(names(record(&[("provincia", "Limón")]), false).is_empty());
        assert!(
            names(
                record(&[("provincia", "Cartago"), ("canton", "Paraíso")]),
                false
            )
            .is_empty()
        );
    }
}
