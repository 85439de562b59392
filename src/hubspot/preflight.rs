//! Preflight: checks how hubsync means to use HubSpot properties against their definitions before
//! any record is sent (one bad property fails a whole batch). Pure code.

use std::fmt;

use super::types::{PropertyDef, PropertyDefs};

/// One property hubsync reads or writes, as the mapping uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyUse {
    pub name: String,
    /// Whether hubsync writes it (read-only properties may still be read).
    pub written: bool,
    /// Enumeration values hubsync may write (internal values, not labels).
    pub enum_values: Vec<String>,
    /// The HubSpot type the mapping produces (`string`, `number`, `date`, `datetime`, `bool`,
    /// `enumeration`, `phone_number`), if it cares.
    pub expected_type: Option<String>,
}

impl PropertyUse {
    pub fn read(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            written: false,
            enum_values: Vec::new(),
            expected_type: None,
        }
    }

    pub fn written(name: impl Into<String>) -> Self {
        Self {
            written: true,
            ..Self::read(name)
        }
    }

    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.expected_type = Some(kind.into());
        self
    }

    pub fn with_values<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.enum_values = values.into_iter().map(Into::into).collect();
        self
    }
}

/// One thing wrong with a property use; its `Display` names the property and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightProblem {
    Unknown {
        name: String,
    },
    ReadOnly {
        name: String,
    },
    BadOption {
        name: String,
        value: String,
        allowed: Vec<String>,
    },
    TypeMismatch {
        name: String,
        expected: String,
        actual: String,
    },
}

impl PreflightProblem {
    pub fn property(&self) -> &str {
        match self {
            Self::Unknown { name }
            | Self::ReadOnly { name }
            | Self::BadOption { name, .. }
            | Self::TypeMismatch { name, .. } => name,
        }
    }
}

impl fmt::Display for PreflightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { name } => write!(f, "HubSpot property `{name}` does not exist"),
            Self::ReadOnly { name } => {
                write!(
                    f,
                    "HubSpot property `{name}` is read-only and cannot be written"
                )
            }
            Self::BadOption {
                name,
                value,
                allowed,
            } => write!(
                f,
                "`{value}` is not an option of HubSpot enumeration property `{name}` (options: {})",
                allowed.join(", ")
            ),
            Self::TypeMismatch {
                name,
                expected,
                actual,
            } => write!(
                f,
                "HubSpot property `{name}` has type `{actual}`, the mapping writes `{expected}`"
            ),
        }
    }
}

/// Every problem with `uses` against `defs`, in the order of `uses`.
pub fn preflight(defs: &PropertyDefs, uses: &[PropertyUse]) -> Vec<PreflightProblem> {
    let mut problems = Vec::new();
    for u in uses {
        let Some(def) = defs.get(&u.name) else {
            problems.push(PreflightProblem::Unknown {
                name: u.name.clone(),
            });
            continue;
        };
        if u.written && def.read_only() {
            problems.push(PreflightProblem::ReadOnly {
                name: u.name.clone(),
            });
        }
        if let Some(expected) = &u.expected_type
            && !compatible(expected, def)
        {
            problems.push(PreflightProblem::TypeMismatch {
                name: u.name.clone(),
                expected: expected.clone(),
                actual: def.kind.clone(),
            });
        }
        if !def.options.is_empty() {
            let allowed: Vec<String> = def.options.iter().map(|o| o.value.clone()).collect();
            for value in &u.enum_values {
                // A multi-checkbox value is `a;b`: each part must be an option.
                let bad = value
                    .split(';')
                    .filter(|part| !part.is_empty())
                    .any(|part| !allowed.iter().any(|a| a == part));
                if bad {
                    problems.push(PreflightProblem::BadOption {
                        name: u.name.clone(),
                        value: value.clone(),
                        allowed: allowed.clone(),
                    });
                }
            }
        }
    }
    problems
}

/// Whether a value produced as `expected` can be written to `def`.
fn compatible(expected: &str, def: &PropertyDef) -> bool {
    let actual = def.kind.as_str();
    match expected {
        _ if expected == actual => true,
        // Text and phone numbers are both plain strings on the wire.
        "string" | "phone_number" => matches!(actual, "string" | "phone_number"),
        // Booleans may be `bool` or an enumeration shown as a checkbox.
        "bool" => actual == "enumeration" && def.field_type == "booleancheckbox",
        // A date at midnight UTC is a valid datetime.
        "date" => actual == "datetime",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::types::{ModificationMetadata, PropertyOption};

    fn def(name: &str, kind: &str) -> PropertyDef {
        PropertyDef {
            name: name.into(),
            label: name.into(),
            kind: kind.into(),
            field_type: String::new(),
            options: Vec::new(),
            has_unique_value: false,
            hidden: false,
            calculated: false,
            modification_metadata: None,
        }
    }

    fn defs() -> PropertyDefs {
        let mut estado = def("estado", "enumeration");
        estado.options = ["activo", "inactivo"]
            .into_iter()
            .map(|v| PropertyOption {
                label: v.to_uppercase(),
                value: v.into(),
                hidden: false,
            })
            .collect();
        let mut created = def("createdate", "datetime");
        created.modification_metadata = Some(ModificationMetadata {
            read_only_value: true,
            ..Default::default()
        });
        PropertyDefs::new(vec![
            def("email", "string"),
            def("saldo", "number"),
            def("fecha_ingreso", "date"),
            estado,
            created,
        ])
    }

    #[test]
    fn names_every_problem() {
        let uses = vec![
            PropertyUse::written("email").with_type("string"),
            PropertyUse::written("no_such").with_type("string"),
            PropertyUse::written("createdate"),
            PropertyUse::read("createdate"),
            PropertyUse::written("estado").with_values(["activo", "Activo", "activo;inactivo"]),
            PropertyUse::written("saldo").with_type("date"),
            PropertyUse::written("fecha_ingreso").with_type("date"),
        ];
        let problems = preflight(&defs(), &uses);
        assert_eq!(
            problems,
            vec![
                PreflightProblem::Unknown {
                    name: "no_such".into()
                },
                PreflightProblem::ReadOnly {
                    name: "createdate".into()
                },
                PreflightProblem::BadOption {
                    name: "estado".into(),
                    value: "Activo".into(),
                    allowed: vec!["activo".into(), "inactivo".into()],
                },
                PreflightProblem::TypeMismatch {
                    name: "saldo".into(),
                    expected: "date".into(),
                    actual: "number".into(),
                },
            ]
        );
        assert_eq!(
            problems[2].to_string(),
            "`Activo` is not an option of HubSpot enumeration property `estado` (options: activo, inactivo)"
        );
    }
}
