//! Tests of the compiled mapper on the shipped `config.yaml` contact mapping.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::config::{Need, load_str};
use crate::validation::territory::territory;

const CONFIG: &str = include_str!("../../config.yaml");

fn contacts_config(edit: impl Fn(&str) -> String) -> ObjectConfig {
    let text = edit(CONFIG);
    let env = |name: &str| (name == "SQL_SERVER").then(|| "server=tcp:db,1433".to_string());
    let mut config = load_str(&text, Need::Nothing, &env).unwrap_or_else(|e| panic!("{e}"));
    config.objects.remove("contacts").expect("contacts object")
}

fn mapper() -> Mapper {
    edited_mapper("", "")
}

/// The shipped mapping with the first `from` of its config text replaced by `to`.
fn edited_mapper(from: &str, to: &str) -> Mapper {
    let config = contacts_config(|c| {
        assert!(c.contains(from), "the config has no {from:?}");
        c.replacen(from, to, 1)
    });
    Mapper::new(&config)
        .unwrap()
        .with_today(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap())
}

fn row(value: serde_json::Value) -> SqlRow {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn member() -> SqlRow {
    row(json!({
        "numero_asociado": 1001,
        "no__de_cedula": "1-0234-0567",
        "firstname": " María  José ",
        "lastname": "Núñez",
        "email": "Maria@Example.com",
        "hs_whatsapp_phone_number": "8812-3456",
        "telefono_habitacion": null,
        "date_of_birth": "05/09/1980",
        "marital_status": 2,
        "provincia": "san jose",
        "canton": "ESCAZU",
        "distrito": "san rafael",
        "salario_neto_semanal_o_quincenal": "350000.00",
        "salario_bruto_semanal_o_quincenal": "₡420.000,00",
        "frecuencia_deposito_de_su_salario": "Quincenal",
    }))
}

fn prop<'a>(m: &'a Mapped, name: &str) -> Option<&'a str> {
    m.properties.get(name).and_then(|v| v.as_deref())
}

#[test]
fn default_mapping_normalises_a_member_for_hubspot() {
    let m = mapper().to_hubspot(&member());
    assert!(m.is_valid(), "{:?}", m.errors);
    assert_eq!(m.record_key.as_deref(), Some("1001"));
    assert_eq!(prop(&m, "numero_asociado"), Some("1001"));
    assert_eq!(prop(&m, "no__de_cedula"), Some("102340567"));
    assert_eq!(prop(&m, "firstname"), Some("María José"));
    assert_eq!(prop(&m, "email"), Some("maria@example.com"));
    assert_eq!(prop(&m, "hs_whatsapp_phone_number"), Some("+50688123456"));
    assert_eq!(m.properties.get("telefono_habitacion"), Some(&None));
    assert_eq!(prop(&m, "date_of_birth"), Some("1980-09-05"));
    assert_eq!(prop(&m, "marital_status"), Some("Casado"));
    assert_eq!(prop(&m, "provincia"), Some("San José"));
    assert_eq!(prop(&m, "canton"), Some("Escazú"));
    assert_eq!(prop(&m, "distrito"), Some("San Rafael"));
    assert_eq!(
        prop(&m, "salario_bruto_semanal_o_quincenal"),
        Some("420000.00")
    );
    assert_eq!(
        prop(&m, "frecuencia_deposito_de_su_salario"),
        Some("quincenal")
    );
    assert_eq!(m.properties.len(), mapper().fields().count());
}

#[test]
fn marital_status_codes_and_synonyms_map_to_the_hubspot_options() {
    let mapper = mapper();
    for (input, expected) in [
        (json!(1), "Soltero"),
        (json!("2"), "Casado"),
        (json!("divorciada"), "Divorciado"),
        (json!("V"), "Viudo"),
        (json!("Unión libre"), "Unión Libre"),
        (json!("union de hecho"), "Unión Libre"),
        (json!("Compañera"), "Unión Libre"),
        (json!("UL"), "Unión Libre"),
    ] {
        let mut r = member();
        r.insert("marital_status".into(), input.clone());
        let m = mapper.to_hubspot(&r);
        assert_eq!(prop(&m, "marital_status"), Some(expected), "{input}");
    }
}

#[test]
fn every_failure_is_reported_with_field_and_rule() {
    let mut r = member();
    r.insert("email".into(), json!("not-an-email"));
    r.insert("no__de_cedula".into(), json!("1234567"));
    r.insert("hs_whatsapp_phone_number".into(), json!("234-5678"));
    r.insert("firstname".into(), json!(null));
    let m = mapper().to_hubspot(&r);
    let got: Vec<(&str, &str)> = m
        .errors
        .iter()
        .map(|i| (i.field.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("no__de_cedula", "cedula"),
            ("firstname", "required"),
            ("email", "email"),
            ("hs_whatsapp_phone_number", "phone"),
        ]
    );
    assert!(
        !m.properties.contains_key("email"),
        "invalid values are left out"
    );
}

#[test]
fn placeholders_are_cleared_with_a_warning_in_every_kind_of_field() {
    let mut r = member();
    for (column, value) in [
        ("hs_whatsapp_phone_number", "2212-0000"),
        ("telefono_habitacion", "8888-8888"),
        ("telefono_oficina", "12345678"),
        ("date_of_birth", "N/A"),
        ("marital_status", "no indica"),
        ("salario_neto_semanal_o_quincenal", "pendiente"),
        ("salario_bruto_semanal_o_quincenal", "ND"),
        ("frecuencia_deposito_de_su_salario", "Sin dato"),
        ("nombre_y_apellidos__beneficiario_01_", "n/a"),
        ("numero_de_cedula__beneficiario_1_", "000000000"),
        ("porcentaje__beneficiario_1_", "N/D"),
    ] {
        r.insert(column.into(), json!(value));
    }
    let m = mapper().to_hubspot(&r);
    assert!(m.is_valid(), "{:?}", m.errors);
    let cleared: Vec<&str> = m
        .warnings
        .iter()
        .filter(|w| w.rule == "placeholder")
        .map(|w| w.field.as_str())
        .collect();
    assert_eq!(cleared.len(), 11, "{cleared:?}");
    assert_eq!(m.properties.get("date_of_birth"), Some(&None));
    assert_eq!(m.properties.get("porcentaje__beneficiario_1_"), Some(&None));
}

#[test]
fn a_cleared_required_identity_number_fails_required() {
    for placeholder in ["123456789", "0-0000-0000", "N/A"] {
        let mut r = member();
        r.insert("no__de_cedula".into(), json!(placeholder));
        let m = mapper().to_hubspot(&r);
        assert_eq!(m.warnings[0].rule, "placeholder", "{placeholder}");
        assert_eq!(m.errors.len(), 1, "{placeholder}: {:?}", m.errors);
        assert_eq!(
            (m.errors[0].field.as_str(), m.errors[0].rule.as_str()),
            ("no__de_cedula", "required")
        );
    }
}

#[test]
fn drop_field_leaves_the_value_out_with_a_warning() {
    let mapper = edited_mapper(
        "transform: [phone_cr], rules: [placeholder] }\n      - { sql: telefono_habitacion",
        "transform: [phone_cr], rules: [placeholder], on_invalid: drop_field }\n      - { sql: telefono_habitacion",
    );
    let mut r = member();
    r.insert("hs_whatsapp_phone_number".into(), json!("12"));
    let m = mapper.to_hubspot(&r);
    assert!(m.is_valid(), "{:?}", m.errors);
    assert!(!m.properties.contains_key("hs_whatsapp_phone_number"));
    assert_eq!(m.warnings[0].field, "hs_whatsapp_phone_number");
    assert!(m.warnings[0].message.ends_with("the field was left out"));
}

#[test]
fn duplicate_emails_in_a_batch_name_the_first_record() {
    let mapper = mapper();
    let mut second = member();
    second.insert("numero_asociado".into(), json!(1002));
    second.insert("email".into(), json!(" MARIA@example.com"));
    let mut third = member();
    third.insert("numero_asociado".into(), json!(1003));
    third.insert("email".into(), json!("other@example.com"));
    let mut batch = vec![
        mapper.to_hubspot(&member()),
        mapper.to_hubspot(&second),
        mapper.to_hubspot(&third),
    ];
    mapper.reject_duplicates(&mut batch);
    assert!(batch[0].is_valid());
    assert!(batch[2].is_valid());
    assert_eq!(batch[1].errors.len(), 1);
    assert_eq!(batch[1].errors[0].rule, "duplicate");
    assert_eq!(batch[1].errors[0].field, "email");
    assert!(batch[1].errors[0].message.contains("record 1001"));
}

#[test]
fn to_sql_writes_present_properties_in_the_sql_form() {
    let mapper = mapper();
    let props: Properties = [
        ("numero_asociado", Some("999")),
        ("hs_whatsapp_phone_number", Some("+506 8812 3456")),
        ("telefono_habitacion", None),
        ("marital_status", Some("Viudo")),
        ("date_of_birth", Some("1980-09-05")),
        ("salario_neto_semanal_o_quincenal", Some("350000")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    let out = mapper.to_sql(&props);
    assert!(out.is_valid(), "{:?}", out.errors);
    let expected = row(json!({
        "hs_whatsapp_phone_number": "88123456",
        "telefono_habitacion": null,
        "marital_status": 4,
        "date_of_birth": "1980-09-05",
        "salario_neto_semanal_o_quincenal": "350000.00",
    }));
    // numero_asociado is mapped to_hubspot only: HubSpot never overwrites the key.
    assert_eq!(out.columns, expected);
}

#[test]
fn to_sql_rejects_invalid_hubspot_values_naming_the_property() {
    let props: Properties = [
        ("email", Some("bad@")),
        ("marital_status", Some("Comprometido")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    let out = mapper().to_sql(&props);
    let got: Vec<(&str, &str)> = out
        .errors
        .iter()
        .map(|i| (i.field.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(got, [("email", "email"), ("marital_status", "enum")]);
    assert!(out.columns.is_empty());
}

#[test]
fn phone_sql_form_e164_keeps_the_country_code() {
    let mapper = edited_mapper("phone_sql_form: national", "phone_sql_form: e164");
    let props: Properties = [(
        "telefono_habitacion".to_string(),
        Some("22345678".to_string()),
    )]
    .into();
    let out = mapper.to_sql(&props);
    assert_eq!(out.columns["telefono_habitacion"], json!("+50622345678"));
}

#[test]
fn configuration_mistakes_are_reported_by_key_path() {
    let mut config = contacts_config(str::to_string);
    config.fields[2]
        .transform
        .extend(["foo".into(), "enum:nope".into()]);
    config.fields[2]
        .rules
        .extend(["bar".into(), "max_length:x".into()]);
    config.fields[12].hubspot = "distrito2".into();
    config.match_property = "correo".into();
    let err = Mapper::new(&config).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "fields[2].transform[1]",
            "fields[2].transform[2]",
            "fields[2].rules[2]",
            "fields[2].rules[3]",
            "match_property",
            "record_rules[0]",
            "fields[12].transform",
        ],
        "{err}"
    );
    assert!(err.problems[0].1.starts_with("unknown transform \"foo\""));
    assert!(err.problems[1].1.contains("no enumeration \"nope\""));
    assert!(err.problems[2].1.starts_with("unknown rule \"bar\""));
    assert!(
        err.problems[5]
            .1
            .contains("\"distrito\" is not the hubspot property")
    );

    let mut problems = crate::config::Problems::default();
    config.check("objects.contacts", &mut problems);
    let first = problems.iter().next().unwrap().to_string();
    assert!(
        first.starts_with("objects.contacts.fields[2].transform[1]: unknown transform \"foo\""),
        "{first}"
    );
}

#[test]
fn the_shipped_mapping_covers_the_seed_columns() {
    let mapper = mapper();
    let columns: Vec<&str> = mapper.fields().map(|f| f.sql.as_str()).collect();
    for c in [
        "numero_asociado",
        "no__de_cedula",
        "firstname",
        "lastname",
        "email",
        "hs_whatsapp_phone_number",
        "telefono_habitacion",
        "telefono_oficina",
        "date_of_birth",
        "marital_status",
        "provincia",
        "canton",
        "distrito",
        "salario_neto_semanal_o_quincenal",
        "salario_bruto_semanal_o_quincenal",
        "frecuencia_deposito_de_su_salario",
        "nombre_y_apellidos__beneficiario_05_",
        "numero_de_cedula__beneficiario_5_",
        "porcentaje__beneficiario_5_",
    ] {
        assert!(columns.contains(&c), "{c}");
    }
    assert_eq!(columns.len(), 31);
}

/// A valid member row in the SQL-side canonical form.
fn valid_row() -> impl Strategy<Value = SqlRow> {
    let names = prop::sample::select(vec![
        "María",
        "José Ángel",
        "Ñeco",
        "Íñigo",
        "Ana Lucía",
        "O'Neil",
    ]);
    let districts = territory().distritos().len();
    (
        (1u32..=9, 0u32..10_000, 0u32..10_000),
        names.clone(),
        names,
        "[a-z]{1,10}",
        (20_000_000u32..90_000_000, proptest::option::of(20_000_000u32..90_000_000)),
        0u32..36_500,
        1i64..=5,
        0..districts,
        (1u64..10_000_000, 0u64..10_000_000),
        prop::sample::select(vec!["semanal", "bisemanal", "quincenal", "mensual"]),
        proptest::option::of(1u32..=99),
    )
        .prop_map(
            |((p, t, a), first, last, user, (whatsapp, home), days, marital, d, (neto, extra), freq, pct)| {
                let t_data = territory();
                let distrito = &t_data.distritos()[d];
                let canton = t_data.canton_by_code(&distrito.canton).unwrap();
                let provincia = t_data.provincia_by_code(&canton.provincia).unwrap();
                let birth = NaiveDate::from_ymd_opt(1920, 1, 1).unwrap() + chrono::Days::new(u64::from(days));
                let bruto = neto + extra;
                let mut r = row(json!({
                    "numero_asociado": "77",
                    "no__de_cedula": format!("{p}{t:04}{a:04}"),
                    "firstname": first,
                    "lastname": last,
                    "email": format!("{user}@example.com"),
                    "hs_whatsapp_phone_number": whatsapp.to_string(),
                    "telefono_habitacion": home.map(|h| h.to_string()),
                    "date_of_birth": birth.format("%Y-%m-%d").to_string(),
                    "marital_status": marital,
                    "provincia": provincia.name,
                    "canton": canton.name,
                    "distrito": distrito.name,
                    "salario_neto_semanal_o_quincenal": format!("{}.{:02}", neto / 100, neto % 100),
                    "salario_bruto_semanal_o_quincenal": format!("{}.{:02}", bruto / 100, bruto % 100),
                    "frecuencia_deposito_de_su_salario": freq,
                }));
                if let Some(pct) = pct {
                    r.insert("nombre_y_apellidos__beneficiario_01_".into(), json!("Ana Núñez"));
                    r.insert("numero_de_cedula__beneficiario_1_".into(), json!("203450678"));
                    r.insert("porcentaje__beneficiario_1_".into(), json!(format!("{pct}.00")));
                    r.insert("nombre_y_apellidos__beneficiario_02_".into(), json!("Luis Peña"));
                    r.insert("numero_de_cedula__beneficiario_2_".into(), json!("155812994816"));
                    r.insert("porcentaje__beneficiario_2_".into(), json!(format!("{}.00", 100 - pct)));
                }
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_rows_survive_sql_to_hubspot_to_sql(r in valid_row()) {
        let mapper = mapper();
        let mapped = mapper.to_hubspot(&r);
        prop_assert!(mapped.is_valid(), "{:?}", mapped.errors);
        let back = mapper.to_sql(&mapped.properties);
        prop_assert!(back.is_valid(), "{:?}", back.errors);
        for f in mapper.fields().filter(|f| f.direction == Direction::Both) {
            let original = r.get(&f.sql).cloned().unwrap_or(Value::Null);
            prop_assert_eq!(back.columns.get(&f.sql), Some(&original), "{}", f.sql);
        }
        // And HubSpot → SQL → HubSpot gives the same properties again.
        let mut again_row = back.columns.clone();
        again_row.insert("numero_asociado".into(), json!("77"));
        prop_assert_eq!(mapper.to_hubspot(&again_row).properties, mapped.properties);
    }

    #[test]
    fn mapping_is_idempotent_on_its_own_output(s in "[ a-zA-ZáéíóúñÑ0-9./-]{0,20}") {
        // Every transform applied to its own output changes nothing.
        let ctx = Context { today: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), phone_form: crate::validation::phone::PhoneForm::National, email: Default::default() };
        let enums = std::collections::HashMap::new();
        let all = crate::validation::cedula::KindSet::of(&crate::validation::cedula::IdKind::ALL);
        for spec in ["trim", "collapse_spaces", "upper", "lower", "title", "email", "cedula_cr", "phone_cr:service", "date", "number", "number:2", "territory_cr:provincia", "territory_cr:canton", "territory_cr:distrito"] {
            let step = Step::parse(spec, all, &enums).unwrap();
            if let Ok(once) = step.apply(s.clone(), &ctx, &mut Vec::new()) {
                let twice = step.apply(once.clone(), &ctx, &mut Vec::new());
                prop_assert_eq!(twice, Ok(once), "{}", spec);
            }
        }
    }
}

/// The problems `load_str` reports, one per line, for the example with `from` (which must be
/// there) replaced by `to`.
fn problems_with(from: &str, to: &str) -> Vec<String> {
    assert!(CONFIG.contains(from), "{from}");
    let text = CONFIG.replace(from, to);
    match load_str(&text, Need::Nothing, &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .to_string()
            .lines()
            .skip(1)
            .map(|l| l.trim().to_string())
            .collect(),
    }
}

#[test]
fn archive_policy_and_modified_column_are_checked_by_key_path() {
    let problems_of = |archive: &str, detection: &str| {
        problems_with(
            "    on_hubspot_archive: { action: ignore }",
            &format!("    on_hubspot_archive: {archive}\n    change_detection: {detection}"),
        )
    };
    let rowversion = "{ mode: rowversion, column: rv, modified_column: modified_at }";
    for fine in [
        "{ action: ignore }",
        "{ action: delete, scan_every: 1m }",
        "{ action: set_column, column: activo, value: 0 }",
    ] {
        assert_eq!(
            problems_of(fine, rowversion),
            Vec::<String>::new(),
            "{fine}"
        );
    }
    let p = "objects.contacts.on_hubspot_archive";
    assert_eq!(
        problems_of("{ action: set_column }", rowversion),
        [
            format!("{p}.column: required by set_column"),
            format!("{p}.value: required by set_column")
        ]
    );
    let bad = problems_of(
        "{ action: set_column, column: 'a b', value: [1] }",
        rowversion,
    );
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with(&format!("{p}.column: ")), "{bad:?}");
    assert!(bad[1].starts_with(&format!("{p}.value: must be a single value")));
    assert_eq!(
        problems_of(
            "{ action: set_column, column: numero_asociado, value: 0 }",
            rowversion
        ),
        [format!(
            "{p}.column: must not be the key column (use action: delete)"
        )]
    );
    assert_eq!(
        problems_of("{ action: delete, column: activo }", rowversion),
        [format!("{p}.column: only used by set_column")]
    );
    let modified_at = "{ mode: modified_at, column: modified_at, modified_column: x }";
    let bad = problems_of("{ action: ignore }", modified_at);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with(
            "objects.contacts.change_detection.modified_column: only for mode rowversion"
        ),
        "{bad:?}"
    );
}

#[test]
fn change_tracking_mode_takes_no_column_and_the_other_modes_need_one() {
    let problems_of = |detection: &str| {
        problems_with(
            "    on_hubspot_archive: { action: ignore }",
            &format!(
                "    on_hubspot_archive: {{ action: ignore }}\n    change_detection: {detection}"
            ),
        )
    };
    let p = "objects.contacts.change_detection";
    assert_eq!(
        problems_of("{ mode: change_tracking }"),
        Vec::<String>::new()
    );
    assert_eq!(
        problems_of("{ mode: change_tracking, modified_column: modified_at }"),
        Vec::<String>::new()
    );
    assert_eq!(
        problems_of("{ mode: change_tracking, column: rv }"),
        [format!(
            "{p}.column: not for mode change_tracking: changes come from CHANGETABLE, not a column"
        )]
    );
    assert_eq!(
        problems_of("{ mode: rowversion }"),
        [format!(
            "{p}.column: required for mode rowversion: the rowversion column"
        )]
    );
    assert_eq!(
        problems_of("{ mode: modified_at }"),
        [format!(
            "{p}.column: required for mode modified_at: the modification-time column"
        )]
    );
}

fn rules_of(issues: &[Issue]) -> Vec<(&str, &str)> {
    issues
        .iter()
        .map(|i| (i.field.as_str(), i.rule.as_str()))
        .collect()
}

#[test]
fn control_bidi_and_zero_width_characters_reject_the_record_naming_field_and_rule() {
    let mapper = mapper();
    for (field, value) in [
        ("firstname", "Ana\u{0}"),
        ("lastname", "\u{1b}[2JRojas"),
        ("firstname", "Ana\u{202e}lexa"),
        ("lastname", "Ro\u{2066}jas"),
        ("lastname", "Mora\u{200b} Vargas"),
        ("firstname", "\u{feff}Ana"),
        ("firstname", "Ana\nMaría"),
        ("firstname", "Ana\u{85}"),
        ("email", "ana\u{200d}@example.com"),
        ("no__de_cedula", "1-0234-0567\u{2060}"),
    ] {
        let mut r = member();
        r.insert(field.into(), json!(value));
        let m = mapper.to_hubspot(&r);
        assert_eq!(rules_of(&m.errors), [(field, "text")], "{value:?}");
        let message = &m.errors[0].message;
        assert!(message.contains("U+"), "{message}");
        assert!(
            !message.contains(value),
            "the value is not repeated: {message}"
        );
        assert!(!m.properties.contains_key(field), "{value:?} is never sent");
    }
    // The other direction too: a HubSpot value is never written to SQL Server.
    let props: Properties = [("firstname".to_string(), Some("Ana\u{202e}".to_string()))].into();
    let out = mapper.to_sql(&props);
    assert_eq!(rules_of(&out.errors), [("firstname", "text")]);
    assert!(out.columns.is_empty());
}

#[test]
fn multiline_fields_take_line_breaks_and_strip_mode_removes_the_characters() {
    let mapper = edited_mapper(
        "rules: [placeholder, \"max_length:200\"] }\n      - { sql: numero_de_cedula__beneficiario_1_",
        "rules: [placeholder, \"max_length:200\"], multiline: true }\n      - { sql: numero_de_cedula__beneficiario_1_",
    );
    let mut r = member();
    r.insert(
        "nombre_y_apellidos__beneficiario_01_".into(),
        json!("Luis\tMora"),
    );
    r.insert(
        "numero_de_cedula__beneficiario_1_".into(),
        json!("2-0345-0678"),
    );
    r.insert("porcentaje__beneficiario_1_".into(), json!("100"));
    let m = mapper.to_hubspot(&r);
    assert!(m.errors.iter().all(|e| e.rule != "text"), "{:?}", m.errors);
    r.insert(
        "nombre_y_apellidos__beneficiario_01_".into(),
        json!("Luis\u{0}Mora"),
    );
    let m = mapper.to_hubspot(&r);
    assert!(rules_of(&m.errors).contains(&("nombre_y_apellidos__beneficiario_01_", "text")));

    let mapper = edited_mapper("unsafe_characters: reject", "unsafe_characters: strip");
    let mut r = member();
    r.insert("firstname".into(), json!("An\u{200b}a\u{202e}\tMaría"));
    let m = mapper.to_hubspot(&r);
    assert!(m.is_valid(), "{:?}", m.errors);
    assert_eq!(prop(&m, "firstname"), Some("Ana María"));
    assert_eq!(rules_of(&m.warnings), [("firstname", "text")]);
}

#[test]
fn internationalised_email_domains_are_converted_or_rejected_per_config() {
    let mut r = member();
    r.insert("email".into(), json!("Ana@Correo.Café.cr"));
    let m = mapper().to_hubspot(&r);
    assert!(m.is_valid(), "{:?}", m.errors);
    assert_eq!(prop(&m, "email"), Some("ana@correo.xn--caf-dma.cr"));
    assert_eq!(rules_of(&m.warnings), [("email", "email_domain")]);

    let m = edited_mapper("idn_domains: punycode", "idn_domains: reject").to_hubspot(&r);
    assert_eq!(rules_of(&m.errors), [("email", "email_domain")]);
    assert!(!m.properties.contains_key("email"));

    r.insert("email".into(), json!("josé@example.com"));
    let m = mapper().to_hubspot(&r);
    assert_eq!(rules_of(&m.errors), [("email", "email_local_part")]);
    let m = edited_mapper("unicode_local_part: false", "unicode_local_part: true").to_hubspot(&r);
    assert!(m.is_valid(), "{:?}", m.errors);
    assert_eq!(prop(&m, "email"), Some("josé@example.com"));
}

#[test]
fn numbers_that_do_not_fit_the_sql_column_are_rejected_naming_field_and_type() {
    let mapper = mapper();
    let mut r = member();
    r.insert(
        "salario_bruto_semanal_o_quincenal".into(),
        json!("9".repeat(50)),
    );
    let m = mapper.to_hubspot(&r);
    assert_eq!(
        rules_of(&m.errors),
        [("salario_bruto_semanal_o_quincenal", "sql_type")]
    );
    let message = &m.errors[0].message;
    assert!(
        message.contains("DECIMAL(18,2)") && message.contains("50 integer digits"),
        "{message}"
    );
    assert!(
        !message.contains("999999"),
        "the amount is not repeated: {message}"
    );
    // 16 integer digits is the most DECIMAL(18,2) holds.
    r.insert(
        "salario_bruto_semanal_o_quincenal".into(),
        json!("9".repeat(16)),
    );
    r.insert("salario_neto_semanal_o_quincenal".into(), json!("1"));
    assert!(mapper.to_hubspot(&r).is_valid());
    r.insert(
        "salario_bruto_semanal_o_quincenal".into(),
        json!("9".repeat(17)),
    );
    assert_eq!(mapper.to_hubspot(&r).errors[0].rule, "sql_type");

    // HubSpot → SQL: refused before the write, whatever the property's own rules allow.
    let props = |k: &str, v: &str| -> Properties { [(k.to_string(), Some(v.to_string()))].into() };
    let out = mapper.to_sql(&props("porcentaje__beneficiario_1_", "1000"));
    // (The beneficiary rule also misses the group's name and cédula.)
    assert_eq!(
        rules_of(&out.errors)[0],
        ("porcentaje__beneficiario_1_", "sql_type")
    );
    assert!(
        out.errors[0].message.contains("DECIMAL(5,2)"),
        "{}",
        out.errors[0].message
    );
    assert!(!out.columns.contains_key("porcentaje__beneficiario_1_"));
    assert!(
        mapper
            .to_sql(&props("porcentaje__beneficiario_1_", "100.00"))
            .errors
            .iter()
            .all(|e| e.rule != "sql_type")
    );
    assert!(
        mapper
            .to_sql(&props("salario_neto_semanal_o_quincenal", &"1".repeat(40)))
            .errors[0]
            .message
            .contains("DECIMAL(18,2)")
    );
}

#[test]
fn sql_types_parse_and_bound_their_values() {
    let t = |s: &str| SqlType::parse(s).unwrap();
    assert_eq!(t("decimal(18,2)"), SqlType::Decimal(Some((18, 2))));
    assert_eq!(t("NUMERIC( 5 , 2 )"), SqlType::Decimal(Some((5, 2))));
    assert_eq!(t("decimal(10)"), SqlType::Decimal(Some((10, 0))));
    assert_eq!(t("int"), SqlType::INT);
    for bad in [
        "decimal(39,2)",
        "decimal(5,6)",
        "decimal(0)",
        "decimal(a,b)",
        "varchar",
        "decimal(18,2",
    ] {
        assert!(SqlType::parse(bad).is_err(), "{bad}");
    }
    let fits = |ty: &str, v: &str| t(ty).check(v).map_err(|e| e.message);
    assert!(fits("decimal(18,2)", "9999999999999999.99").is_ok());
    assert!(fits("decimal(18,2)", "-9999999999999999.99").is_ok());
    assert!(
        fits("decimal(18,2)", "1.500").is_ok(),
        "trailing zeros past the scale fit"
    );
    assert!(
        fits("decimal(18,2)", "1.505")
            .unwrap_err()
            .contains("3 decimals")
    );
    assert!(
        fits("decimal(18,2)", "10000000000000000")
            .unwrap_err()
            .contains("17 integer digits")
    );
    assert!(fits("decimal(5,2)", "0.01").is_ok());
    assert!(fits("decimal", &"9".repeat(38)).is_ok());
    assert!(fits("decimal", &"9".repeat(39)).is_err());
    assert!(fits("decimal", &format!("1.{}", "5".repeat(38))).is_err());
    assert!(fits("int", "2147483647").is_ok());
    assert!(fits("int", "2147483648").unwrap_err().contains("INT"));
    assert!(
        fits("tinyint", "-1")
            .unwrap_err()
            .contains("TINYINT (0 to 255)")
    );
    assert!(fits("bigint", "9223372036854775808").is_err());
    assert!(fits("int", "1.5").unwrap_err().contains("whole number"));
    assert!(fits("text", &"9".repeat(100)).is_ok());
}

#[test]
fn an_unknown_sql_type_is_a_config_problem() {
    let text = CONFIG.replace("sql_type: int }", "sql_type: \"decimal(40,2)\" }");
    let env = |name: &str| (name == "SQL_SERVER").then(|| "server=tcp:db,1433".to_string());
    let err = load_str(&text, Need::Nothing, &env).unwrap_err();
    let all = err
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("fields[9].sql_type") && all.contains("precision"),
        "{all}"
    );
}

#[test]
fn erasure_policy_is_checked_by_key_path() {
    let problems_of = |erasure: &str| {
        problems_with(
            "    on_hubspot_erasure: { action: ignore }",
            &format!("    on_hubspot_erasure: {erasure}"),
        )
    };
    for fine in [
        "{ action: ignore }",
        "{ action: delete }",
        "{ action: anonymize }",
        "{ action: anonymize, neutral: { email: '', firstname: '(borrado)' } }",
        "{ action: set_column, column: borrado_hubspot, value: 1 }",
    ] {
        assert_eq!(problems_of(fine), Vec::<String>::new(), "{fine}");
    }
    let p = "objects.contacts.on_hubspot_erasure";
    assert_eq!(
        problems_of("{ action: set_column }"),
        [
            format!("{p}.column: required by set_column"),
            format!("{p}.value: required by set_column")
        ]
    );
    let bad = problems_of("{ action: set_column, column: 'a b', value: {x: 1} }");
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with(&format!("{p}.column: ")), "{bad:?}");
    assert!(bad[1].starts_with(&format!("{p}.value: must be a single value")));
    assert_eq!(
        problems_of("{ action: set_column, column: numero_asociado, value: 1 }"),
        [format!(
            "{p}.column: must not be the key column (use action: delete)"
        )]
    );
    assert_eq!(
        problems_of("{ action: delete, column: borrado, neutral: { email: '' } }"),
        [
            format!("{p}.neutral: only used by anonymize"),
            format!("{p}.column: only used by set_column"),
        ]
    );
    let bad = problems_of("{ action: anonymize, neutral: { provincia: 0 } }");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with(&format!("{p}.neutral.provincia: not a personal column")),
        "{bad:?}"
    );
    let bad = problems_of("{ action: forget }");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].starts_with(&format!("{p}.action: ")), "{bad:?}");
}

#[test]
fn personal_fields_follow_their_kind_unless_marked() {
    let config = contacts_config(|s| {
        s.replace(
            "{ sql: provincia, hubspot: provincia,",
            "{ sql: provincia, hubspot: provincia, personal: true,",
        )
        .replace(
            "{ sql: lastname, hubspot: lastname,",
            "{ sql: lastname, hubspot: lastname, personal: false,",
        )
    });
    let personal = config.personal_columns();
    assert!(personal.contains(&"provincia".to_string()), "{personal:?}");
    assert!(!personal.contains(&"lastname".to_string()), "{personal:?}");
    assert!(personal.contains(&"email".to_string()), "{personal:?}");
    assert!(
        !personal.contains(&"numero_asociado".to_string()),
        "{personal:?}"
    );
}
