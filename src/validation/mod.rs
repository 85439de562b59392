//! Business-rule validation: generic rules and Costa Rica rules (cédulas, phones, territory,
//! dates, amounts, beneficiaries, placeholders). Pure code, no I/O.

pub mod cedula;
pub mod date;
pub mod number;
pub mod phone;
pub mod placeholder;
pub mod record;
pub mod territory;
pub mod text;

use serde::Serialize;

/// One failed rule on one field of one record, as reported to operators and stored on rejected
/// queue items: `{"field": "email", "rule": "email", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Issue {
    /// SQL column (SQL → HubSpot) or HubSpot property (HubSpot → SQL) the issue is about.
    pub field: String,
    /// Rule or transform that failed (`required`, `email`, `cedula`, `phone`, `territory`, …).
    pub rule: String,
    /// Human message naming the value and what was expected.
    pub message: String,
}

/// A value that failed a rule: the rule's name and a message. The mapper adds the field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rule: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

/// A note attached to a value that was accepted (e.g. an extension cut from a phone number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub rule: &'static str,
    pub message: String,
}

/// Checks an email address (already trimmed and lowercased): HTML5 syntax via `validator`, and a
/// dot in the domain (HubSpot refuses addresses on bare host names).
pub fn email(value: &str) -> Result<(), Invalid> {
    use validator::ValidateEmail;
    let domain_has_dot = value
        .rsplit_once('@')
        .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
    if value.validate_email() && domain_has_dot {
        Ok(())
    } else {
        Err(Invalid::new(
            "email",
            format!("{value:?} is not a valid email address"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_ordinary_addresses_and_refuses_malformed_ones() {
        assert!(email("maria.rojas@example.co.cr").is_ok());
        assert!(email("jose+coop@correo.example.com").is_ok());
        for bad in [
            "maria.rojas",
            "maria@",
            "@example.com",
            "maria rojas@example.com",
            "maria@localhost",
            "maria@@example.com",
            "maria@example.com.",
        ] {
            let err = email(bad).expect_err(bad);
            assert_eq!(err.rule, "email");
            assert!(err.message.contains(bad), "{}", err.message);
        }
    }
}
