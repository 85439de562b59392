//! `hubsync validate` and `hubsync check-config` run as a user would: the built binary on the
//! shipped `config.yaml` and checked-in example files.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::HOSTILE;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `hubsync --config CONFIG ARGS`; a call with `--unmask` in `ARGS` asks for personal data on
/// stdout, which is then scanned for secrets only.
fn hubsync(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    // The shipped config interpolates ${SQL_SERVER}; validate needs no connection.
    let env = [("SQL_SERVER", "server=tcp:unused,1433")];
    let cwd = Path::new(env!("CARGO_MANIFEST_DIR"));
    if args.contains(&"--unmask") {
        crate::support::hubsync_unmasked(&all, &env, cwd)
    } else {
        crate::support::hubsync(&all, &env, cwd)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shipped config with `edit` applied to its text, in a temp dir.
fn edited_config(dir: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let original = std::fs::read_to_string(repo("config.yaml")).unwrap();
    let edited = edit(&original);
    assert_ne!(edited, original, "the edit must change the config");
    let path = dir.join("config.yaml");
    std::fs::write(&path, edited).unwrap();
    path
}

/// `validate` of the example file as of its reviewed day, with `extra` arguments.
fn validate_example(extra: &[&str]) -> Output {
    let mut args = vec!["--today", "2026-11-23"];
    args.extend_from_slice(extra);
    let input = repo("tests/data/contacts.jsonl");
    validate_with(&repo("config.yaml"), &input, &args)
}

#[test]
fn validate_example_file_matches_the_reviewed_expected_output() {
    // The reviewed file shows the mapped values: asked for with --unmask.
    let out = validate_example(&["--unmask"]);
    let expected = std::fs::read_to_string(repo("tests/data/contacts.expected.jsonl")).unwrap();
    let stdout = text(&out.stdout);
    for (i, (got, want)) in stdout.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "output line {} differs", i + 1);
    }
    assert_eq!(stdout.lines().count(), expected.lines().count());
    assert_eq!(out.status.code(), Some(1), "some records are rejected");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("records: 16, valid: 4, rejected: 12, warnings: 5"),
        "{stderr}"
    );
    assert!(stderr.contains("required 8"), "{stderr}");
}

/// Without `--unmask` every mapped value is hidden, an email down to `a***@domain`, and the
/// messages are masked; fields, rules, verdicts and empty values are those of the unmasked
/// output. (Like every run, its output is also scanned for emails and cédulas in clear.)
#[test]
fn validate_masks_every_value_unless_unmasked() {
    let parse = |out: &Output| -> Vec<serde_json::Value> {
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let masked = validate_example(&[]);
    let clear = validate_example(&["--unmask"]);
    assert_eq!(masked.status.code(), clear.status.code());
    let (masked, clear) = (parse(&masked), parse(&clear));
    assert_eq!(masked.len(), clear.len());
    let rules = |v: &serde_json::Value, kind: &str| -> Vec<(String, String)> {
        v[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["field"].to_string(), i["rule"].to_string()))
            .collect()
    };
    for (m, c) in masked.iter().zip(&clear) {
        for key in ["line", "valid"] {
            assert_eq!(m[key], c[key], "{m}");
        }
        for kind in ["errors", "warnings"] {
            assert_eq!(rules(m, kind), rules(c, kind), "{m}");
        }
        let (mp, cp) = (
            m["properties"].as_object().unwrap(),
            c["properties"].as_object(),
        );
        assert_eq!(
            Some(mp.keys().collect::<Vec<_>>()),
            cp.map(|p| p.keys().collect())
        );
        for (name, value) in mp {
            let original = &c["properties"][name];
            match original.as_str() {
                None => assert!(value.is_null(), "{name}: {m}"),
                Some(v) if v.contains('@') => {
                    let domain = v.split_once('@').unwrap().1;
                    assert_eq!(value.as_str(), Some(&*format!("{}***@{domain}", &v[..1])));
                }
                Some(_) => assert_eq!(value, "***", "{name}: {m}"),
            }
        }
    }
}

#[test]
fn validate_reads_csv_with_sql_column_headers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("members.csv");
    std::fs::write(
        &input,
        "numero_asociado,no__de_cedula,firstname,lastname,email,telefono_habitacion,provincia,canton,distrito\n\
         2001,1-0234-0567,José,Peña,JOSE@EXAMPLE.COM,2222-3333,Heredia,Barba,San Pablo\n\
         2002,,Ana,\"Núñez, hija\",ana@example.com,,,,\n",
    )
    .unwrap();
    let out = validate_with(&repo("config.yaml"), &input, &["--unmask"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 2);
    assert_eq!(lines[0]["valid"], true, "{}", lines[0]);
    assert_eq!(lines[0]["properties"]["email"], "jose@example.com");
    assert_eq!(lines[0]["properties"]["no__de_cedula"], "102340567");
    assert_eq!(
        lines[0]["properties"]["telefono_habitacion"],
        "+50622223333"
    );
    assert_eq!(lines[0]["properties"]["canton"], "Barva");
    assert_eq!(lines[1]["line"], 3);
    assert_eq!(lines[1]["record_key"], "2002");
    assert_eq!(lines[1]["properties"]["lastname"], "Núñez, hija");
    assert_eq!(
        lines[1]["errors"],
        serde_json::json!([{"field": "no__de_cedula", "rule": "required", "message": "is required but empty"}])
    );
}

#[test]
fn malformed_input_exits_65_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"numero_asociado\": 1}\n{\"numero_asociado\": 2,, }\n",
    )
    .unwrap();
    let out = validate_file(&input);
    assert_eq!(out.status.code(), Some(65));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 2, column 23"), "{stderr}");

    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "numero_asociado,email\n1,a@example.com\n2,b@example.com,extra\n",
    )
    .unwrap();
    let out = validate_file(&csv);
    assert_eq!(out.status.code(), Some(65));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 3: 3 columns, expected 2"), "{stderr}");

    let missing = dir.path().join("absent.jsonl");
    let out = validate_file(&missing);
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn all_valid_input_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ok.jsonl");
    std::fs::write(
        &input,
        "{\"numero_asociado\": 3001, \"no__de_cedula\": \"402340567\", \"firstname\": \"Íñigo\", \"lastname\": \"Ruiz\", \"email\": \"inigo@example.com\"}\n\n",
    )
    .unwrap();
    let out = hubsync(
        &repo("config.yaml"),
        &[
            "validate",
            "--object",
            "contacts",
            "--input",
            input.to_str().unwrap(),
            "--format",
            "table",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("records: 1, valid: 1, rejected: 0"));
}

#[test]
fn a_new_field_in_config_maps_a_new_column_without_code_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = edited_config(dir.path(), |c| {
        c.replace(
            "    fields:\n",
            "    fields:\n      - { sql: ocupacion, hubspot: jobtitle, transform: [collapse_spaces, title], rules: [\"max_length:50\"] }\n",
        )
    });
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"numero_asociado\": 4001, \"no__de_cedula\": \"102340567\", \"firstname\": \"Ana\", \"lastname\": \"Mora\", \"email\": \"ana@example.com\", \"ocupacion\": \"  maestra   de ESCUELA \"}\n",
    )
    .unwrap();
    let out = validate_with(&config, &input, &["--unmask"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["properties"]["jobtitle"], "Maestra De Escuela");
}

#[test]
fn check_config_reports_unknown_transform_and_rule_names_by_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = edited_config(dir.path(), |c| {
        c.replace(
            "transform: [phone_cr], rules: [placeholder] }\n      - { sql: telefono_oficina",
            "transform: [phone_cr, foo], rules: [placeholder, bar] }\n      - { sql: telefono_oficina",
        )
    });
    let out = hubsync(&config, &["check-config"]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("objects.contacts.fields[6].transform[1]: unknown transform \"foo\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("objects.contacts.fields[6].rules[1]: unknown rule \"bar\""),
        "{stderr}"
    );
    // validate refuses the same config with exit 78.
    let input = repo("tests/data/contacts.jsonl");
    let out = validate_with(&config, &input, &[]);
    assert_eq!(out.status.code(), Some(78));
}

/// `hubsync validate --object contacts --input FILE` with the shipped config.
fn validate_file(input: &Path) -> Output {
    validate_with(&repo("config.yaml"), input, &[])
}

/// `hubsync validate --object contacts --input FILE` with `config` and `extra` arguments.
fn validate_with(config: &Path, input: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "validate",
        "--object",
        "contacts",
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    hubsync(config, &args)
}

fn hostile_member(field: &str, value: &str, key: usize) -> serde_json::Value {
    let mut member = serde_json::json!({
        "numero_asociado": 4000 + key, "no__de_cedula": "402340567", "firstname": "Íñigo",
        "lastname": "Ruiz", "email": format!("inigo{key}@example.com"),
    });
    if field == "porcentaje__beneficiario_1_" {
        member["nombre_y_apellidos__beneficiario_01_"] = "Luis Mora".into();
        member["numero_de_cedula__beneficiario_1_"] = "203450678".into();
    }
    member[field] = value.into();
    member
}

#[test]
fn hostile_text_numbers_and_emails_are_rejected_naming_record_field_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.jsonl");
    let mut lines: Vec<String> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, (field, value, _))| hostile_member(field, value, i).to_string())
        .collect();
    // An internationalised domain is converted, not rejected (the shipped default).
    lines.push(hostile_member("email", "Ana@Correo.Café.CR", 99).to_string());
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = validate_file(&input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), HOSTILE.len() + 1);
    for (i, (field, value, rule)) in HOSTILE.iter().enumerate() {
        let r = &results[i];
        assert_eq!(r["record_key"], (4000 + i).to_string(), "{r}");
        assert_eq!(r["valid"], false, "{value:?} passed: {r}");
        let errors: Vec<(&str, &str)> = r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
            .collect();
        assert_eq!(errors, [(*field, *rule)], "{value:?}: {r}");
        assert!(
            r["properties"].get(field).is_none(),
            "{value:?} would be sent: {r}"
        );
    }
    let idn = &results[HOSTILE.len()];
    assert_eq!(idn["valid"], true, "{idn}");
    // Masked, the domain still shows the conversion.
    assert_eq!(idn["properties"]["email"], "a***@correo.xn--caf-dma.cr");
    assert_eq!(idn["warnings"][0]["rule"], "email_domain");

    // With `idn_domains: reject` the same address is refused.
    let config = edited_config(dir.path(), |c| {
        c.replace("idn_domains: punycode", "idn_domains: reject")
    });
    std::fs::write(&input, lines.last().unwrap()).unwrap();
    let out = validate_with(&config, &input, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(r["errors"][0]["field"], "email", "{r}");
    assert_eq!(r["errors"][0]["rule"], "email_domain", "{r}");
}
