//! The change reader's cursor (stored as JSON in `sync_cursors.cursor_value`) and where a poll
//! starts from it: the last rowversion, or the `(modified_at, key)` high-water mark moved back by
//! the overlap window in the configured time zone. Pure code.

use std::time::Duration;

use chrono::{NaiveDateTime, TimeZone};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::value::format_binary;

/// A rowversion value (8 bytes, big-endian on the wire), serialized as `"0x00000000000007D1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rowversion(pub u64);

impl Rowversion {
    pub fn hex(self) -> String {
        format_binary(&self.0.to_be_bytes())
    }

    pub fn parse(text: &str) -> Option<Self> {
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))?;
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl Serialize for Rowversion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Rowversion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("bad rowversion {text:?}, expected 0x…"))
        })
    }
}

/// How far the change reader has read; JSON like `{"mode":"rowversion","rowversion":"0x…"}` or
/// `{"mode":"modified_at","modified_at":"2024-03-09T14:05:00","key":1042}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChangeCursor {
    /// Every row with a rowversion up to this one has been read.
    Rowversion { rowversion: Rowversion },
    /// Every row up to `(modified_at, key)` in that order has been read (local time).
    ModifiedAt {
        modified_at: NaiveDateTime,
        key: Value,
    },
    /// Change tracking: every change up to `version` has been read. An unfinished poll also
    /// names the (version, key) of the last change it read; an unfinished full read
    /// (`scanning`: the first poll, or a resync) the last key it read of the rows as of
    /// `version`.
    ChangeTracking {
        version: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_version: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_key: Option<Value>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        scanning: bool,
    },
}

impl ChangeCursor {
    /// Change tracking, caught up: every change up to `version` read.
    pub fn tracked(version: i64) -> Self {
        Self::ChangeTracking {
            version,
            after_version: None,
            after_key: None,
            scanning: false,
        }
    }

    /// Change tracking, mid-poll: changes after `base` read up to `(version, key)`.
    pub fn tracked_after(base: i64, (version, key): (i64, Value)) -> Self {
        Self::ChangeTracking {
            version: base,
            after_version: Some(version),
            after_key: Some(key),
            scanning: false,
        }
    }

    /// Change tracking's full read as of `version`, up to `after_key`.
    pub fn scanning(version: i64, after_key: Option<Value>) -> Self {
        Self::ChangeTracking {
            version,
            after_version: None,
            after_key,
            scanning: true,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("invalid change cursor: {e}"))
    }
}

/// Where the next page is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// Rows with a rowversion above this.
    Rowversion(u64),
    /// Rows with modified_at at or after this (first page of a modified_at poll).
    From(NaiveDateTime),
    /// Rows after this `(modified_at, key)`.
    After(NaiveDateTime, Value),
    /// Change tracking: changes after version `base`, after `(version, key)` when given.
    Changes {
        base: i64,
        after: Option<(i64, Value)>,
    },
    /// Change tracking's full read of the rows as of `version`, after `key` when given.
    Scan { version: i64, after: Option<Value> },
}

impl Position {
    /// The position right after the row a cursor names.
    pub fn of(cursor: &ChangeCursor) -> Self {
        match cursor {
            ChangeCursor::Rowversion { rowversion } => Self::Rowversion(rowversion.0),
            ChangeCursor::ModifiedAt { modified_at, key } => Self::After(*modified_at, key.clone()),
            ChangeCursor::ChangeTracking {
                version,
                after_key,
                scanning: true,
                ..
            } => Self::Scan {
                version: *version,
                after: after_key.clone(),
            },
            ChangeCursor::ChangeTracking {
                version,
                after_version,
                after_key,
                ..
            } => Self::Changes {
                base: *version,
                after: after_version.zip(after_key.clone()),
            },
        }
    }
}

/// The start of the overlap window: `high_water − overlap`, computed on the real (UTC) time line
/// of `zone` so that a daylight-saving change cannot shorten the window.
pub fn overlap_start(
    high_water: NaiveDateTime,
    overlap: Duration,
    zone: chrono_tz::Tz,
) -> NaiveDateTime {
    let overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero());
    match zone.from_local_datetime(&high_water).earliest() {
        Some(t) => (t - overlap).naive_local(),
        None => high_water - overlap,
    }
}

/// The local `modified_at` as UTC in `zone` (the earlier instant when ambiguous).
pub fn local_to_utc(
    local: NaiveDateTime,
    zone: chrono_tz::Tz,
) -> Option<chrono::DateTime<chrono::Utc>> {
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The earliest time a modified_at poll reads when nothing was stored yet.
pub fn beginning_of_time() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    #[test]
    fn cursors_round_trip_through_json() {
        let c = ChangeCursor::Rowversion {
            rowversion: Rowversion(2001),
        };
        assert_eq!(
            c.to_json(),
            json!({"mode": "rowversion", "rowversion": "0x00000000000007D1"})
        );
        assert_eq!(ChangeCursor::from_json(&c.to_json()).unwrap(), c);
        let m = ChangeCursor::ModifiedAt {
            modified_at: dt("2024-03-09T14:05:00"),
            key: json!(1042),
        };
        assert_eq!(
            m.to_json(),
            json!({"mode": "modified_at", "modified_at": "2024-03-09T14:05:00", "key": 1042})
        );
        assert_eq!(ChangeCursor::from_json(&m.to_json()).unwrap(), m);
        assert!(
            ChangeCursor::from_json(&json!({"mode": "rowversion", "rowversion": "7D1"})).is_err()
        );
        assert!(ChangeCursor::from_json(&json!({"mode": "lsn"})).is_err());
        let done = ChangeCursor::ChangeTracking {
            version: 42,
            after_version: None,
            after_key: None,
            scanning: false,
        };
        assert_eq!(
            done.to_json(),
            json!({"mode": "change_tracking", "version": 42})
        );
        assert_eq!(ChangeCursor::from_json(&done.to_json()).unwrap(), done);
        let mid = json!({"mode": "change_tracking", "version": 42, "after_version": 45, "after_key": 1042});
        let parsed = ChangeCursor::from_json(&mid).unwrap();
        assert_eq!(
            Position::of(&parsed),
            Position::Changes {
                base: 42,
                after: Some((45, json!(1042)))
            }
        );
        let scan =
            json!({"mode": "change_tracking", "version": 42, "after_key": 7, "scanning": true});
        assert_eq!(
            Position::of(&ChangeCursor::from_json(&scan).unwrap()),
            Position::Scan {
                version: 42,
                after: Some(json!(7))
            }
        );
    }

    #[test]
    fn overlap_is_measured_on_the_real_time_line() {
        let cr = chrono_tz::America::Costa_Rica;
        assert_eq!(
            overlap_start(dt("2024-03-09T14:05:00"), Duration::from_secs(600), cr),
            dt("2024-03-09T13:55:00")
        );
        // New York springs forward at 02:00 on 2024-03-10: one real hour before 03:30 EDT is
        // 01:30 EST, not the nonexistent 02:30.
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            overlap_start(dt("2024-03-10T03:30:00"), Duration::from_secs(3600), ny),
            dt("2024-03-10T01:30:00")
        );
        assert_eq!(
            local_to_utc(dt("2024-03-09T14:05:00"), cr)
                .unwrap()
                .to_rfc3339(),
            "2024-03-09T20:05:00+00:00"
        );
    }
}
