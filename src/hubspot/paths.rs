//! Every HubSpot API path hubsync calls, built for the configured API version: the legacy
//! numeric `v3` (`/crm/v3/objects/contacts/…`) or a date version, which sits after the API
//! family (`/crm/objects/2026-09/contacts/…`, `/crm/properties/2026-09/contacts`).

use std::fmt;

use serde::Deserialize;

use super::error::HubSpotError;

/// A HubSpot API version hubsync can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ApiVersion {
    /// The legacy numeric paths; unsupported from September 2027.
    V3,
    /// The first date version: the v3 shapes (207 for partial batches) on dated paths.
    V2026_03,
    /// The default. Partial batches answer 200/201 with `numErrors`/`errors` in the body; writes obey the
    /// portal's validation rules.
    #[default]
    V2026_09,
}

impl ApiVersion {
    /// Every supported version, newest first.
    pub const ALL: [ApiVersion; 3] = [Self::V2026_09, Self::V2026_03, Self::V3];

    /// The version as it appears in paths and in `hubspot.api_version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V3 => "v3",
            Self::V2026_03 => "2026-03",
            Self::V2026_09 => "2026-09",
        }
    }

    /// Whether a batch that partly fails answers 207 Multi-Status (before `2026-09`) rather than
    /// its success status with the errors folded into the body.
    pub fn multi_status(self) -> bool {
        !matches!(self, Self::V2026_09)
    }

    /// Whether writes obey the portal's conditionally required properties and the create
    /// form's required fields (from `2026-09` on).
    pub fn enforces_required(self) -> bool {
        matches!(self, Self::V2026_09)
    }

    /// `GET /crm/properties/{v}/{object}` etc.: the path of `family` (objects, properties,
    /// property-validations) for this version.
    fn crm(self, family: &str) -> String {
        match self {
            Self::V3 => format!("/crm/v3/{family}"),
            dated => format!("/crm/{family}/{}", dated.as_str()),
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == text.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "unknown HubSpot API version `{text}`: use one of {}",
                    known.join(", ")
                )
            })
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// The batch operations hubsync sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    Create,
    Update,
    Upsert,
    Read,
    Archive,
}

impl BatchOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::Read => "read",
            Self::Archive => "archive",
        }
    }
}

/// The path builder for one API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Paths {
    pub version: ApiVersion,
}

impl Paths {
    pub fn new(version: ApiVersion) -> Self {
        Self { version }
    }

    /// `…/objects/{object}` (list, and the root of the others).
    pub fn objects(&self, object: &str) -> Result<String, HubSpotError> {
        Ok(format!("{}/{}", self.version.crm("objects"), name(object)?))
    }

    /// `…/objects/{object}/batch/{op}`.
    pub fn batch(&self, object: &str, op: BatchOp) -> Result<String, HubSpotError> {
        Ok(format!("{}/batch/{}", self.objects(object)?, op.name()))
    }

    /// `…/objects/{object}/search`.
    pub fn search(&self, object: &str) -> Result<String, HubSpotError> {
        Ok(format!("{}/search", self.objects(object)?))
    }

    /// `…/properties/{object}`: the object's property definitions.
    pub fn properties(&self, object: &str) -> Result<String, HubSpotError> {
        Ok(format!(
            "{}/{}",
            self.version.crm("properties"),
            name(object)?
        ))
    }

    /// `…/property-validations/{objectTypeId}` (contacts are `0-1`): the portal's rules.
    pub fn property_validations(&self, object_type_id: &str) -> Result<String, HubSpotError> {
        Ok(format!(
            "{}/{}",
            self.version.crm("property-validations"),
            name(object_type_id)?
        ))
    }

    /// The account's daily API usage and its reset time.
    pub fn account_usage(&self) -> String {
        format!(
            "/account-info/{}/api-usage/daily/private-apps",
            self.version.as_str()
        )
    }
}

/// An object name or type id, refused when it could alter the path.
fn name(object: &str) -> Result<&str, HubSpotError> {
    if object.is_empty()
        || !object
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(HubSpotError::Config(format!(
            "HubSpot object type `{object}` is not a valid name"
        )));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(version: ApiVersion) -> Vec<String> {
        let p = Paths::new(version);
        vec![
            p.objects("contacts").unwrap(),
            p.batch("contacts", BatchOp::Update).unwrap(),
            p.search("contacts").unwrap(),
            p.properties("contacts").unwrap(),
            p.property_validations("0-1").unwrap(),
            p.account_usage(),
        ]
    }

    #[test]
    fn date_versions_sit_after_the_api_family() {
        assert_eq!(
            all(ApiVersion::V2026_09),
            [
                "/crm/objects/2026-09/contacts",
                "/crm/objects/2026-09/contacts/batch/update",
                "/crm/objects/2026-09/contacts/search",
                "/crm/properties/2026-09/contacts",
                "/crm/property-validations/2026-09/0-1",
                "/account-info/2026-09/api-usage/daily/private-apps",
            ]
        );
        assert_eq!(
            Paths::new(ApiVersion::V2026_03)
                .batch("0-1", BatchOp::Create)
                .unwrap(),
            "/crm/objects/2026-03/0-1/batch/create"
        );
    }

    #[test]
    fn v3_keeps_the_numeric_prefix() {
        assert_eq!(
            all(ApiVersion::V3),
            [
                "/crm/v3/objects/contacts",
                "/crm/v3/objects/contacts/batch/update",
                "/crm/v3/objects/contacts/search",
                "/crm/v3/properties/contacts",
                "/crm/v3/property-validations/0-1",
                "/account-info/v3/api-usage/daily/private-apps",
            ]
        );
    }

    #[test]
    fn versions_parse_and_unknown_ones_are_named() {
        assert_eq!("2026-09".parse(), Ok(ApiVersion::V2026_09));
        assert_eq!("2026-03".parse(), Ok(ApiVersion::V2026_03));
        assert_eq!("v3".parse(), Ok(ApiVersion::V3));
        assert_eq!(ApiVersion::default(), ApiVersion::V2026_09);
        let err = "2025-09".parse::<ApiVersion>().unwrap_err();
        assert!(
            err.contains("`2025-09`") && err.contains("2026-09, 2026-03, v3"),
            "{err}"
        );
        assert!("v4".parse::<ApiVersion>().is_err());
        assert!(ApiVersion::V2026_03.multi_status() && !ApiVersion::V2026_09.multi_status());
    }

    #[test]
    fn object_names_cannot_alter_the_path() {
        let p = Paths::default();
        assert!(p.objects("2-123").is_ok());
        assert!(p.objects("../properties").is_err());
        assert!(p.properties("").is_err());
        assert!(p.property_validations("0-1/x").is_err());
    }
}
