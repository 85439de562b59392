//! Masking of personal data for log output: `m***@example.com`, `1-****-**78`. On by default;
//! `logging.mask_personal_data: false` turns it off (for debugging on a secured host).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns masking on or off for the whole process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `maria.rojas@example.com` → `m***@example.com`; text without `@` is masked whole.
pub fn email(value: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(value);
    }
    match value.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            Cow::Owned(format!("{first}***@{domain}"))
        }
        None => Cow::Owned("***".into()),
    }
}

/// Identity numbers keep their first and last two digits: `112345678` → `1-****-**78`,
/// `155812345678` (DIMEX) → `1**********78`.
pub fn identity(value: &str) -> Cow<'_, str> {
    if !enabled() {
        return Cow::Borrowed(value);
    }
    let digits: Vec<char> = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let n = digits.len();
    if n < 4 {
        return Cow::Owned("*".repeat(n.max(1)));
    }
    let last2: String = digits[n - 2..].iter().collect();
    if n == 9 {
        return Cow::Owned(format!("{}-****-**{last2}", digits[0]));
    }
    Cow::Owned(format!("{}{}{last2}", digits[0], "*".repeat(n - 3)))
}

/// Masks a value of unknown kind: emails and identity-number-shaped values (9–12 digits, with
/// or without dashes, dots or spaces); anything else is returned as it is.
pub fn value(value: &str) -> Cow<'_, str> {
    if value.contains('@') {
        return email(value);
    }
    let digits = value.chars().filter(|c| c.is_ascii_digit()).count();
    let only_id_chars = value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ' '));
    if only_id_chars && (9..=12).contains(&digits) && !value.trim_start().starts_with('+') {
        return identity(value);
    }
    Cow::Borrowed(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_identity_numbers() {
        assert_eq!(email("maria@example.com"), "m***@example.com");
        assert_eq!(email("not-an-email"), "***");
        assert_eq!(identity("112345678"), "1-****-**78");
        assert_eq!(identity("1-1234-5678"), "1-****-**78");
        assert_eq!(identity("155812345678"), "1*********78");
        assert_eq!(identity("12"), "**");
        assert_eq!(value("ana@x.cr"), "a***@x.cr");
        assert_eq!(value("1-1234-5678"), "1-****-**78");
        assert_eq!(value("San José"), "San José");
        assert_eq!(value("+50688887777"), "+50688887777");
    }
}
