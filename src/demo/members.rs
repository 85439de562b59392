//! The demo's members: a seeded sample of realistic Costa Rican member rows (the benchmark's
//! generator) with a few more kinds of bad record mixed in, so the rejections have varied reasons;
//! and loading rows into a SQL Server table as a client's multi-row INSERT would.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::bench::validate::member_row;
use crate::mapping::SqlRow;

/// `n` member rows (`numero_asociado` 1..=n), the same for the same seed. About 1 in 20 has a
/// malformed email (from the generator); on top of that some have net salary above gross, a
/// cantón outside their provincia, beneficiary percentages not summing to 100, or a cédula of
/// the wrong length.
pub fn sample(n: u64, seed: u64) -> Vec<SqlRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut row = member_row(i, &mut rng);
            spoil(i, &mut row);
            row
        })
        .collect()
}

/// Makes some records invalid the way real data entry does.
fn spoil(i: u64, row: &mut SqlRow) {
    if i % 41 == 13 {
        // Net weekly/fortnightly salary above the gross one.
        let gross = row["salario_bruto_semanal_o_quincenal"]
            .as_str()
            .and_then(|g| g.split('.').next())
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(500_000);
        row.insert(
            "salario_neto_semanal_o_quincenal".into(),
            Value::String(format!("{}.00", gross + 25_000)),
        );
    }
    if i % 43 == 17 {
        // Escazú is a cantón of San José, not of Limón.
        row.insert("provincia".into(), "Limón".into());
        row.insert("canton".into(), "Escazú".into());
        row.insert("distrito".into(), "San Rafael".into());
    }
    if i % 47 == 19 {
        // Beneficiaries add up to 90 %.
        row.insert("porcentaje__beneficiario_2_".into(), "30.00".into());
    }
    if i % 53 == 23 {
        // A cédula missing digits.
        row.insert("no__de_cedula".into(), "1-2345".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Need, load_str};
    use crate::mapping::Mapper;

    fn mapper() -> Mapper {
        let config = load_str(super::super::config::SHIPPED, Need::Nothing, &|_| None).unwrap();
        Mapper::new(&config.objects["contacts"]).unwrap()
    }

    #[test]
    fn the_sample_is_mostly_valid_with_varied_reasons_for_the_rest() {
        let mapper = mapper();
        let rows = sample(3000, 1);
        assert_eq!(rows, sample(3000, 1), "seeded");
        let mut rules = std::collections::BTreeSet::new();
        let mut invalid = 0;
        for row in &rows {
            let mapped = mapper.to_hubspot(row);
            if !mapped.is_valid() {
                invalid += 1;
                rules.extend(mapped.errors.iter().map(|e| e.rule.clone()));
            }
        }
        assert!((200..600).contains(&invalid), "{invalid}");
        assert!(rules.len() >= 4, "{rules:?}");
        assert!(rules.contains("email"), "{rules:?}");
    }

    #[test]
    fn every_spoiled_kind_is_rejected() {
        let mapper = mapper();
        let rows = sample(60, 2);
        for i in [13usize, 17, 19, 23, 7] {
            assert!(!mapper.to_hubspot(&rows[i]).is_valid(), "member {i}");
        }
        assert!(mapper.to_hubspot(&rows[0]).is_valid());
    }
}
