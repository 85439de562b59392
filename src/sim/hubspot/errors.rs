//! HubSpot's error bodies (auth, validation, conflict, not found, rate limits) and the reply type
//! the simulator's endpoint logic returns. Pure.

use serde_json::{Value, json};

use super::validate::PropertyError;

/// An HTTP answer: status and optional JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, body: None }
    }

    /// HubSpot's standard error body: `{"status":"error","message","correlationId","category"}`.
    pub fn error(
        status: u16,
        category: &str,
        message: impl Into<String>,
        correlation: &str,
    ) -> Self {
        Self::json(status, error_body(category, &message.into(), correlation))
    }
}

/// The standard error object; extra fields are added by the callers.
pub fn error_body(category: &str, message: &str, correlation: &str) -> Value {
    json!({"status": "error", "message": message, "correlationId": correlation, "category": category})
}

/// 401 for a missing or wrong token.
pub fn unauthorized(correlation: &str) -> Reply {
    Reply::error(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you \
         can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        correlation,
    )
}

/// 403 for a token without `crm.objects.contacts.write`.
pub fn missing_scope(correlation: &str) -> Reply {
    let mut body = error_body(
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. Read more about \
         required scopes here: https://developers.hubspot.com/scopes.",
        correlation,
    );
    body["errors"] = json!([{"message": "One or more of the following scopes are required.",
        "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]}}]);
    Reply::json(403, body)
}

/// 404 for a single record that does not exist (or not in the state asked for).
pub fn object_not_found(correlation: &str) -> Reply {
    Reply::error(404, "OBJECT_NOT_FOUND", "resource not found", correlation)
}

/// A 400 VALIDATION_ERROR with a plain message.
pub fn bad_request(message: impl Into<String>, correlation: &str) -> Reply {
    Reply::error(400, "VALIDATION_ERROR", message, correlation)
}

/// Which rate limit a 429 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    TenSecondly,
    Daily,
    Secondly,
}

/// 429 body for the given policy (search's secondly limit has HubSpot's search wording).
pub fn rate_limited(policy: Policy, correlation: &str) -> Reply {
    let (message, name) = match policy {
        Policy::TenSecondly => (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        ),
        Policy::Daily => ("You have reached your daily limit.", "DAILY"),
        Policy::Secondly => ("You have reached your secondly limit.", "SECONDLY"),
    };
    Reply::json(
        429,
        json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
               "correlationId": correlation, "policyName": name, "requestId": correlation,
               "category": "RATE_LIMITS"}),
    )
}

/// The body of a validation failure: HubSpot's `Property values were not valid: [...]` message
/// plus one `errors[]` entry per property.
pub fn validation_body(problems: &[PropertyError], correlation: &str) -> Value {
    let details: Vec<Value> = problems
        .iter()
        .map(|p| {
            json!({"isValid": false, "message": p.message, "error": p.code, "name": p.name,
                   "localizedErrorMessage": p.message, "portalId": PORTAL_ID})
        })
        .collect();
    let message = format!("Property values were not valid: {}", Value::Array(details));
    let errors: Vec<Value> = problems
        .iter()
        .map(|p| json!({"message": p.message, "code": p.code, "context": {"propertyName": [p.name]}}))
        .collect();
    let mut body = error_body("VALIDATION_ERROR", &message, correlation);
    body["errors"] = Value::Array(errors);
    body
}

/// 409 for a create (or email change) that hits an existing contact's email.
pub fn conflict(existing_id: u64, correlation: &str) -> Reply {
    Reply::error(
        409,
        "CONFLICT",
        format!("Contact already exists. Existing ID: {existing_id}"),
        correlation,
    )
}

/// The simulated account's portal id.
pub const PORTAL_ID: u64 = 4_020_117;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_message_embeds_the_json_array() {
        let problems = [PropertyError {
            name: "marital_status".into(),
            code: "INVALID_OPTION",
            message: "x was not one of the allowed options: [a]".into(),
        }];
        let body = validation_body(&problems, "c1");
        let message = body["message"].as_str().unwrap_or_default();
        let array = message.strip_prefix("Property values were not valid: ");
        let parsed: Value = serde_json::from_str(array.unwrap_or("null")).unwrap_or_default();
        assert_eq!(parsed[0]["error"], "INVALID_OPTION");
        assert_eq!(parsed[0]["name"], "marital_status");
        assert_eq!(
            body["errors"][0]["context"]["propertyName"][0],
            "marital_status"
        );
        assert_eq!(body["category"], "VALIDATION_ERROR");
    }

    #[test]
    fn rate_limit_bodies_name_the_policy() {
        let ten = rate_limited(Policy::TenSecondly, "c");
        assert_eq!(ten.status, 429);
        let body = ten.body.unwrap_or_default();
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(body["errorType"], "RATE_LIMIT");
        let daily = rate_limited(Policy::Daily, "c").body.unwrap_or_default();
        assert_eq!(daily["message"], "You have reached your daily limit.");
    }
}
