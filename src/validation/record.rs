//! Rules over several fields of one record: provincia–cantón–distrito consistency, one amount not
//! greater than another (net ≤ gross salary), and beneficiaries (complete, distinct from the
//! member, percentages summing to exactly 100).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::{number, territory::territory};

/// One entry of `record_rules:`; field names are HubSpot property names. The mapper compiles
/// them to field indexes (`RecordRule<usize>`) so that checking a record looks nothing up by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordRule<K = String> {
    /// The three levels exist and nest; distrito names are resolved within the cantón.
    Territory {
        provincia: K,
        canton: K,
        distrito: K,
    },
    /// `field` ≤ `than` when both are present.
    NotGreater { field: K, than: K },
    /// Groups of (name, cédula, percentage).
    Beneficiaries {
        #[serde(default = "none")]
        member_cedula: Option<K>,
        groups: Vec<BeneficiaryFields<K>>,
    },
}

fn none<K>() -> Option<K> {
    None
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeneficiaryFields<K = String> {
    pub name: K,
    pub cedula: K,
    pub percentage: K,
}

impl RecordRule {
    /// Every property the rule reads.
    pub fn properties(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.each_key(|k| out.push(k.as_str()));
        out
    }
}

impl<K> RecordRule<K> {
    fn each_key<'k>(&'k self, mut f: impl FnMut(&'k K)) {
        match self {
            RecordRule::Territory {
                provincia,
                canton,
                distrito,
            } => [provincia, canton, distrito].into_iter().for_each(f),
            RecordRule::NotGreater { field, than } => [field, than].into_iter().for_each(f),
            RecordRule::Beneficiaries {
                member_cedula,
                groups,
            } => {
                member_cedula.iter().for_each(&mut f);
                for g in groups {
                    [&g.name, &g.cedula, &g.percentage]
                        .into_iter()
                        .for_each(&mut f);
                }
            }
        }
    }

    /// The same rule naming its fields by `f(name)`; `None` when `f` does not know one.
    pub fn try_map_keys<J>(&self, mut f: impl FnMut(&K) -> Option<J>) -> Option<RecordRule<J>> {
        Some(match self {
            RecordRule::Territory {
                provincia,
                canton,
                distrito,
            } => RecordRule::Territory {
                provincia: f(provincia)?,
                canton: f(canton)?,
                distrito: f(distrito)?,
            },
            RecordRule::NotGreater { field, than } => RecordRule::NotGreater {
                field: f(field)?,
                than: f(than)?,
            },
            RecordRule::Beneficiaries {
                member_cedula,
                groups,
            } => RecordRule::Beneficiaries {
                member_cedula: match member_cedula {
                    Some(m) => Some(f(m)?),
                    None => None,
                },
                groups: groups
                    .iter()
                    .map(|g| {
                        Some(BeneficiaryFields {
                            name: f(&g.name)?,
                            cedula: f(&g.cedula)?,
                            percentage: f(&g.percentage)?,
                        })
                    })
                    .collect::<Option<_>>()?,
            },
        })
    }
}

/// The values of one record as the rules see them, by key (property name or field index).
pub trait Record {
    type Key;
    /// The value, `None` when empty or absent.
    fn get(&self, key: &Self::Key) -> Option<&str>;
    /// True for properties that already failed their own rules (they are absent), so that one
    /// bad value is not reported twice.
    fn failed(&self, key: &Self::Key) -> bool;
    /// The property name, for messages.
    fn name<'s>(&'s self, key: &'s Self::Key) -> &'s str;
    /// Replaces the value with an official name.
    fn set(&mut self, key: &Self::Key, value: &'static str);
    /// Leaves the property out of the record.
    fn remove(&mut self, key: &Self::Key);
}

/// Values of one record by property; `None` = empty.
pub type Values = BTreeMap<String, Option<String>>;

/// Receives each failure: property, rule, message.
pub type Report<'a> = dyn FnMut(&str, &'static str, String) + 'a;

/// `Values` with the properties that failed their own rules.
struct Named<'v, 'f> {
    values: &'v mut Values,
    failed: &'f dyn Fn(&str) -> bool,
}

impl Record for Named<'_, '_> {
    type Key = String;

    fn get(&self, key: &String) -> Option<&str> {
        self.values.get(key).and_then(|v| v.as_deref())
    }

    fn failed(&self, key: &String) -> bool {
        (self.failed)(key)
    }

    fn name<'s>(&'s self, key: &'s String) -> &'s str {
        key
    }

    fn set(&mut self, key: &String, value: &'static str) {
        self.values.insert(key.clone(), Some(value.to_string()));
    }

    fn remove(&mut self, key: &String) {
        self.values.remove(key);
    }
}

/// Applies a record rule to values by property name. `failed(p)` is true for properties that
/// already failed their own rules (they are absent from `values`).
pub fn apply(
    rule: &RecordRule,
    values: &mut Values,
    failed: &dyn Fn(&str) -> bool,
    report: &mut Report,
) {
    check(
        rule,
        &mut Named { values, failed },
        &mut |k, rule, message| report(k, rule, message),
    );
}

/// Applies a record rule to a record; `report` receives the key, rule and message of each failure.
pub fn check<R: Record>(
    rule: &RecordRule<R::Key>,
    record: &mut R,
    report: &mut dyn FnMut(&R::Key, &'static str, String),
) {
    match rule {
        RecordRule::Territory {
            provincia,
            canton,
            distrito,
        } => check_territory(record, [provincia, canton, distrito], report),
        RecordRule::NotGreater { field, than } => {
            if let (Some(a), Some(b)) = (record.get(field), record.get(than))
                && number::compare(a, b) == Ordering::Greater
            {
                let message = format!(
                    "{} {a} is greater than {} {b}",
                    record.name(field),
                    record.name(than)
                );
                report(field, "not_greater", message);
            }
        }
        RecordRule::Beneficiaries {
            member_cedula,
            groups,
        } => check_beneficiaries(record, member_cedula.as_ref(), groups, report),
    }
}

fn check_territory<R: Record>(
    record: &mut R,
    [provincia, canton, distrito]: [&R::Key; 3],
    report: &mut dyn FnMut(&R::Key, &'static str, String),
) {
    let t = territory();
    let p = record.get(provincia).and_then(|v| t.provincia(v).ok());
    let c = record.get(canton).and_then(|v| t.canton(v).ok());
    if let (Some(p), Some(c)) = (p, c)
        && c.provincia != p.code
    {
        let actual = t
            .provincia_by_code(&c.provincia)
            .map_or("?", |x| x.name.as_str());
        report(
            canton,
            "territory",
            format!("cantón {} is in provincia {actual}, not {}", c.name, p.name),
        );
    }
    let Some(d_value) = record.get(distrito) else {
        return;
    };
    let is_code = d_value.len() == 5 && d_value.bytes().all(|b| b.is_ascii_digit());
    if !is_code && c.is_none() && record.failed(canton) {
        return;
    }
    let found = t.distrito(d_value, c);
    let renamed = found.as_ref().is_ok_and(|d| d_value != d.name);
    match found {
        Ok(d) => {
            if let Some(c) = c.filter(|c| c.code != d.canton) {
                let actual = t.canton_by_code(&d.canton).map_or("?", |x| x.name.as_str());
                report(
                    distrito,
                    "territory",
                    format!(
                        "distrito {} ({}) is in cantón {actual}, not {}",
                        d.name, d.code, c.name
                    ),
                );
            }
            if renamed {
                record.set(distrito, &d.name);
            }
        }
        Err(e) => {
            record.remove(distrito);
            report(distrito, e.rule, e.message);
        }
    }
}

fn check_beneficiaries<R: Record>(
    record: &R,
    member_cedula: Option<&R::Key>,
    groups: &[BeneficiaryFields<R::Key>],
    report: &mut dyn FnMut(&R::Key, &'static str, String),
) {
    let member = member_cedula.and_then(|m| record.get(m));
    let mut total = 0i64;
    let mut present = Vec::new();
    let mut percentages_ok = true;
    for (i, g) in groups.iter().enumerate() {
        let n = i + 1;
        let fields = [&g.name, &g.cedula, &g.percentage];
        if fields
            .iter()
            .all(|f| record.get(f).is_none() && !record.failed(f))
        {
            continue;
        }
        present.push(n);
        for (field, what) in [
            (&g.name, "name"),
            (&g.cedula, "cédula"),
            (&g.percentage, "percentage"),
        ] {
            if record.get(field).is_none() && !record.failed(field) {
                report(
                    field,
                    "beneficiary",
                    format!("beneficiary {n} has other data but no {what}"),
                );
            }
        }
        if record.failed(&g.percentage) {
            percentages_ok = false;
        }
        if let Some(pct) = record.get(&g.percentage) {
            match number::hundredths(pct) {
                Some(h) if h > 0 && h <= 10_000 => total += h,
                Some(_) => {
                    percentages_ok = false;
                    report(
                        &g.percentage,
                        "beneficiary",
                        format!("beneficiary {n}: percentage {pct} is not in (0, 100]"),
                    );
                }
                None => {
                    percentages_ok = false;
                    report(
                        &g.percentage,
                        "beneficiary",
                        format!("beneficiary {n}: percentage {pct} has more than two decimals"),
                    );
                }
            }
        } else {
            percentages_ok = false;
        }
        if let (Some(ced), Some(member)) = (record.get(&g.cedula), member)
            && ced == member
        {
            report(
                &g.cedula,
                "beneficiary",
                format!("beneficiary {n} has the member's own cédula {ced}"),
            );
        }
    }
    if percentages_ok && !present.is_empty() && total != 10_000 {
        let first = &groups[present[0] - 1].percentage;
        let list: Vec<String> = present.iter().map(|n| n.to_string()).collect();
        report(
            first,
            "beneficiaries_total",
            format!(
                "the percentages of beneficiaries {} add up to {}.{:02}, not 100",
                list.join(", "),
                total / 100,
                total % 100
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        rule: &RecordRule,
        pairs: &[(&str, &str)],
    ) -> (Values, Vec<(String, &'static str, String)>) {
        let mut values: Values = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (!v.is_empty()).then(|| v.to_string())))
            .collect();
        let mut issues = Vec::new();
        apply(rule, &mut values, &|_| false, &mut |f, r, m| {
            issues.push((f.to_string(), r, m))
        });
        (values, issues)
    }

    fn territory_rule() -> RecordRule {
        RecordRule::Territory {
            provincia: "provincia".into(),
            canton: "canton".into(),
            distrito: "distrito".into(),
        }
    }

    #[test]
    fn consistent_territory_resolves_the_distrito_name() {
        let (values, issues) = run(
            &territory_rule(),
            &[
                ("provincia", "San José"),
                ("canton", "Escazú"),
                ("distrito", "san rafael"),
            ],
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(values["distrito"].as_deref(), Some("San Rafael"));
    }

    #[test]
    fn canton_outside_provincia_and_distrito_outside_canton_are_reported() {
        let (_, issues) = run(
            &territory_rule(),
            &[
                ("provincia", "Alajuela"),
                ("canton", "Escazú"),
                ("distrito", "10109"),
            ],
        );
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert_eq!(issues[0].0, "canton");
        assert!(
            issues[0]
                .2
                .contains("is in provincia San José, not Alajuela")
        );
        assert_eq!(issues[1].0, "distrito");
        assert!(
            issues[1]
                .2
                .contains("Pavas (10109) is in cantón San José, not Escazú")
        );
    }

    #[test]
    fn unknown_distrito_name_is_reported_and_removed() {
        let (values, issues) = run(
            &territory_rule(),
            &[
                ("provincia", "Cartago"),
                ("canton", "Cartago"),
                ("distrito", "Narnia"),
            ],
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].1, "territory");
        assert!(!values.contains_key("distrito"));
    }

    #[test]
    fn net_salary_not_greater_than_gross() {
        let rule = RecordRule::NotGreater {
            field: "neto".into(),
            than: "bruto".into(),
        };
        assert!(
            run(&rule, &[("neto", "300000.00"), ("bruto", "350000.00")])
                .1
                .is_empty()
        );
        assert!(
            run(&rule, &[("neto", "350000.00"), ("bruto", "350000")])
                .1
                .is_empty()
        );
        assert!(
            run(&rule, &[("neto", "300000.00"), ("bruto", "")])
                .1
                .is_empty()
        );
        let (_, issues) = run(&rule, &[("neto", "400000.00"), ("bruto", "350000.00")]);
        assert_eq!(issues[0].0, "neto");
        assert_eq!(issues[0].1, "not_greater");
    }

    fn beneficiaries() -> RecordRule {
        RecordRule::Beneficiaries {
            member_cedula: Some("cedula".into()),
            groups: (1..=3)
                .map(|n| BeneficiaryFields {
                    name: format!("b{n}_name"),
                    cedula: format!("b{n}_cedula"),
                    percentage: format!("b{n}_pct"),
                })
                .collect(),
        }
    }

    #[test]
    fn beneficiaries_summing_to_100_or_absent_are_valid() {
        assert!(
            run(&beneficiaries(), &[("cedula", "102340567")])
                .1
                .is_empty()
        );
        let (_, issues) = run(
            &beneficiaries(),
            &[
                ("cedula", "102340567"),
                ("b1_name", "Ana"),
                ("b1_cedula", "203450678"),
                ("b1_pct", "33.33"),
                ("b2_name", "Luis"),
                ("b2_cedula", "304560789"),
                ("b2_pct", "33.33"),
                ("b3_name", "Eva"),
                ("b3_cedula", "405670890"),
                ("b3_pct", "33.34"),
            ],
        );
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn beneficiary_problems_are_all_reported() {
        let (_, issues) = run(
            &beneficiaries(),
            &[
                ("cedula", "102340567"),
                ("b1_name", "Ana"),
                ("b1_cedula", "102340567"),
                ("b1_pct", "60"),
                ("b2_pct", "30"),
            ],
        );
        let rules: Vec<(&str, &str)> = issues.iter().map(|(f, r, _)| (f.as_str(), *r)).collect();
        assert_eq!(
            rules,
            [
                ("b1_cedula", "beneficiary"),
                ("b2_name", "beneficiary"),
                ("b2_cedula", "beneficiary"),
                ("b1_pct", "beneficiaries_total"),
            ]
        );
        assert!(issues[0].2.contains("member's own cédula"));
        assert!(
            issues[3].2.contains("add up to 90.00, not 100"),
            "{}",
            issues[3].2
        );
    }

    #[test]
    fn percentages_out_of_range() {
        let (_, issues) = run(
            &beneficiaries(),
            &[
                ("b1_name", "Ana"),
                ("b1_cedula", "203450678"),
                ("b1_pct", "0"),
            ],
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].2.contains("not in (0, 100]"));
        let (_, issues) = run(
            &beneficiaries(),
            &[
                ("b1_name", "Ana"),
                ("b1_cedula", "203450678"),
                ("b1_pct", "100.5"),
            ],
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
    }
}
