//! Durations in the configuration: `30s`, `5m`, `2h`, `1d`, `500ms` (humantime syntax), with an
//! error that shows the bad value and examples. Use with `#[serde(with = "…::duration")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

/// Parses a configuration duration, naming the value and the accepted forms on failure.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration `{text}` ({e}); write e.g. 500ms, 30s, 5m, 2h or 1d")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_explains() {
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86400));
        let e = parse("two minutes").unwrap_err();
        assert!(e.contains("two minutes") && e.contains("30s"), "{e}");
    }
}
