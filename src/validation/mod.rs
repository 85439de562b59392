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

use std::borrow::Cow;

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
/// dot in the domain (HubSpot refuses addresses on bare host names). The domain must be ASCII
/// (the `email` transform converts an internationalised one); non-ASCII letters before the `@`
/// pass only with `unicode_local_part`.
pub fn email(value: &str, unicode_local_part: bool) -> Result<(), Invalid> {
    use validator::ValidateEmail;
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Err(not_an_email(value));
    };
    if !domain.is_ascii() {
        return Err(Invalid::new(
            "email_domain",
            format!(
                "the domain of {value:?} is not ASCII: add the `email` transform, which \
                 converts it (validation.email.idn_domains: punycode)"
            ),
        ));
    }
    // With Unicode allowed before the @, the rest is checked as for an ASCII address.
    let checked = if local.is_ascii() {
        Cow::Borrowed(value)
    } else if !unicode_local_part {
        return Err(unicode_local(value));
    } else if local.chars().count() <= 64
        && local.chars().all(|c| c.is_ascii() || c.is_alphanumeric())
    {
        let ascii: String = local
            .chars()
            .map(|c| if c.is_ascii() { c } else { 'x' })
            .collect();
        Cow::Owned(format!("{ascii}@{domain}"))
    } else {
        return Err(not_an_email(value));
    };
    let domain_has_dot = domain.contains('.') && !domain.ends_with('.');
    if checked.validate_email() && domain_has_dot {
        Ok(())
    } else {
        Err(not_an_email(value))
    }
}

fn not_an_email(value: &str) -> Invalid {
    Invalid::new("email", format!("{value:?} is not a valid email address"))
}

fn unicode_local(value: &str) -> Invalid {
    Invalid::new(
        "email_local_part",
        format!(
            "{value:?} has non-ASCII characters before the @ (accepted only with \
             validation.email.unicode_local_part: true)"
        ),
    )
}

/// The ASCII form of an address whose domain is internationalised (`ana@correo.café.cr` →
/// `ana@correo.xn--caf-dma.cr`, IDNA with UTS #46 strict rules), or `None` when the domain is
/// ASCII already. With `reject`, or when IDNA refuses the domain, it fails rule `email_domain`;
/// non-ASCII before the `@` fails rule `email_local_part` unless `unicode_local_part`.
pub fn email_to_ascii(
    value: &str,
    reject: bool,
    unicode_local_part: bool,
) -> Result<Option<String>, Invalid> {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Ok(None);
    };
    if !local.is_ascii() && !unicode_local_part {
        return Err(unicode_local(value));
    }
    if domain.is_ascii() {
        return Ok(None);
    }
    if reject {
        return Err(Invalid::new(
            "email_domain",
            format!(
                "the domain of {value:?} is internationalised (non-ASCII); \
                 validation.email.idn_domains: punycode converts it"
            ),
        ));
    }
    match idna::domain_to_ascii_strict(domain) {
        Ok(ascii) => Ok(Some(format!("{local}@{ascii}"))),
        Err(_) => Err(Invalid::new(
            "email_domain",
            format!("the domain of {value:?} is not a valid internationalised domain name"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_ordinary_addresses_and_refuses_malformed_ones() {
        assert!(email("maria.rojas@example.co.cr", false).is_ok());
        assert!(email("jose+coop@correo.example.com", false).is_ok());
        for bad in [
            "maria.rojas",
            "maria@",
            "@example.com",
            "maria rojas@example.com",
            "maria@localhost",
            "maria@@example.com",
            "maria@example.com.",
        ] {
            let err = email(bad, false).expect_err(bad);
            assert_eq!(err.rule, "email");
            assert!(err.message.contains(bad), "{}", err.message);
        }
    }

    #[test]
    fn email_domains_must_be_ascii_and_local_parts_unless_allowed() {
        assert_eq!(
            email("ana@correo.café.cr", false).unwrap_err().rule,
            "email_domain"
        );
        assert!(email("ana@correo.xn--caf-dma.cr", false).is_ok());
        let e = email("josé@example.com", false).unwrap_err();
        assert_eq!(e.rule, "email_local_part");
        assert!(e.message.contains("unicode_local_part"), "{}", e.message);
        assert!(email("josé@example.com", true).is_ok());
        assert_eq!(email("jo sé@example.com", true).unwrap_err().rule, "email");
        assert_eq!(email("josé@example", true).unwrap_err().rule, "email");
    }

    #[test]
    fn internationalised_domains_become_punycode_or_are_rejected() {
        assert_eq!(email_to_ascii("ana@example.com", false, false), Ok(None));
        assert_eq!(
            email_to_ascii("ana@correo.café.cr", false, false),
            Ok(Some("ana@correo.xn--caf-dma.cr".into()))
        );
        assert_eq!(
            email_to_ascii("ana@bücher.example", false, false),
            Ok(Some("ana@xn--bcher-kva.example".into()))
        );
        let e = email_to_ascii("ana@correo.café.cr", true, false).unwrap_err();
        assert_eq!(e.rule, "email_domain");
        assert!(e.message.contains("idn_domains"), "{}", e.message);
        // A domain IDNA refuses (a label starting with a combining mark).
        assert_eq!(
            email_to_ascii("ana@\u{301}x.example", false, false)
                .unwrap_err()
                .rule,
            "email_domain"
        );
        assert_eq!(
            email_to_ascii("josé@café.cr", false, false)
                .unwrap_err()
                .rule,
            "email_local_part"
        );
        assert_eq!(
            email_to_ascii("josé@café.cr", false, true),
            Ok(Some("josé@xn--caf-dma.cr".into()))
        );
        assert_eq!(email_to_ascii("no-at-sign", false, false), Ok(None));
    }
}
