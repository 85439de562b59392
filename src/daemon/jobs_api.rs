//! The job API on the service listener (`/api/v1/…`, JSON in and out, documented in
//! `deploy/openapi/hubsync-jobs.yaml`): start, show, list and cancel jobs, and the schedules'
//! next runs. On only with `service.api_token`: every call but the document needs it as a
//! bearer token, compared in constant time; a missing or wrong one gets the same 401.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::http::{Access, AppState, Route};
use crate::config::Config;
use crate::jobs::schedule::Schedule;
use crate::jobs::store::{self, Cancelled, Created, Requester};
use crate::jobs::{FieldError, list_limit, parse_request};

/// The OpenAPI document of every route the listener serves.
pub const OPENAPI: &str = include_str!("../../deploy/openapi/hubsync-jobs.yaml");

/// What the job API needs besides the queue: the token's digest and the running
/// configuration's objects and schedules (a reload replaces them).
pub struct Api {
    token_digest: [u8; 32],
    view: RwLock<View>,
    /// Woken when a job is queued, so this instance's runner starts it at once.
    pub wake: Arc<tokio::sync::Notify>,
}

struct View {
    objects: Vec<String>,
    schedules: Vec<Schedule>,
    zone: chrono_tz::Tz,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Api {
    /// The API of `config`, or None (API off) when it sets no token.
    pub fn new(config: &Config, wake: Arc<tokio::sync::Notify>) -> Option<Arc<Api>> {
        let token: &SecretString = config.service.api_token.as_ref()?;
        Some(Arc::new(Api {
            token_digest: digest(token.expose_secret().as_bytes()),
            view: RwLock::new(View::of(config)),
            wake,
        }))
    }

    /// Takes the objects and schedules of a reloaded configuration.
    pub fn update(&self, config: &Config) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = View::of(config);
    }

    /// Whether `presented` is the token. Both are hashed first, so neither the comparison's
    /// time nor its length tells anything about the token.
    fn accepts(&self, presented: &[u8]) -> bool {
        bool::from(digest(presented).ct_eq(&self.token_digest))
    }
}

impl View {
    fn of(config: &Config) -> View {
        View {
            objects: config.objects.keys().cloned().collect(),
            schedules: config.schedules(),
            zone: config.sql_server.zone(),
        }
    }
}

/// The job API's routes.
pub fn routes() -> Vec<Route> {
    let route = |path, method, access, handler| Route {
        path,
        method,
        access,
        handler,
    };
    vec![
        route("/api/v1/jobs", Method::POST, Access::Token, post(start_job)),
        route("/api/v1/jobs", Method::GET, Access::Token, get(list_jobs)),
        route(
            "/api/v1/jobs/{id}",
            Method::GET,
            Access::Token,
            get(show_job),
        ),
        route(
            "/api/v1/jobs/{id}/cancel",
            Method::POST,
            Access::Token,
            post(cancel_job),
        ),
        route(
            "/api/v1/schedules",
            Method::GET,
            Access::Token,
            get(schedules),
        ),
        route(
            "/api/v1/openapi.yaml",
            Method::GET,
            Access::Open,
            get(openapi),
        ),
    ]
}

/// A JSON error answer: `{"error": CODE, …extra}`.
fn error(code: StatusCode, error: &str, extra: Value) -> Response {
    let mut body = json!({ "error": error });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (code, Json(body)).into_response()
}

fn invalid(fields: Vec<FieldError>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
        json!({ "fields": fields }),
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "JOB_NOT_FOUND", json!({}))
}

fn database(e: &sqlx::Error) -> Response {
    tracing::warn!(error = %crate::pg::describe(e), "job API: queue database error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        json!({}),
    )
}

/// The bearer token check in front of every guarded route. The answer to a missing, malformed
/// or wrong token is the same.
pub async fn require_token(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let Some(api) = &s.api else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|t| api.accepts(t)) {
        return next.run(request).await;
    }
    tracing::warn!(method = %request.method(), path = %request.uri().path(),
        "job API call refused: no valid token");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "UNAUTHORIZED" })),
    )
        .into_response()
}

/// Why a call cannot be served yet.
enum Unready {
    ApiOff,
    NoDatabase,
}

impl IntoResponse for Unready {
    fn into_response(self) -> Response {
        match self {
            Unready::ApiOff => not_found(),
            Unready::NoDatabase => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
                json!({}),
            ),
        }
    }
}

/// The queue database and the API, or why not.
fn ready(s: &AppState) -> Result<(&crate::queue::Queue, &Api), Unready> {
    let api = s.api.as_deref().ok_or(Unready::ApiOff)?;
    let queue = s.queue.get().ok_or(Unready::NoDatabase)?;
    Ok((queue, api))
}

async fn start_job(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (queue, api) = match ready(&s) {
        Ok(r) => r,
        Err(why) => return why.into_response(),
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"));
    if !json_type {
        return invalid(vec![FieldError::new(
            "body",
            "send JSON (Content-Type: application/json)",
        )]);
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(vec![FieldError::new("body", format!("not JSON ({e})"))]),
    };
    let request = {
        let view = api.view.read().unwrap_or_else(|p| p.into_inner());
        let objects: Vec<&str> = view.objects.iter().map(String::as_str).collect();
        parse_request(&value, &objects)
    };
    let request = match request {
        Ok(r) => r,
        Err(fields) => return invalid(fields),
    };
    match store::create(queue.pool(), &request, Requester::Api).await {
        Ok(Created::Job(id)) => {
            api.wake.notify_one();
            tracing::info!(operation = "JOB", job_id = id, kind = %request.kind,
                object = %request.object, direction = %request.direction,
                dry_run = request.dry_run, status = "queued", requested_by = "api",
                "job queued");
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
                Json(json!({ "job_id": id, "status": "queued" })),
            )
                .into_response()
        }
        Ok(Created::Busy(id)) => error(
            StatusCode::CONFLICT,
            "JOB_ALREADY_RUNNING",
            json!({ "job_id": id, "message": format!(
                "a {} job of {} is queued or running", request.kind, request.object) }),
        ),
        // Only a schedule's request can find its run already started.
        Ok(Created::AlreadyFired) => error(StatusCode::CONFLICT, "JOB_ALREADY_RUNNING", json!({})),
        Err(e) => database(&e),
    }
}

/// A job id from the path; anything else names no job.
fn job_id(text: &str) -> Option<i64> {
    text.parse().ok().filter(|id| *id > 0)
}

async fn show_job(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let (queue, _) = match ready(&s) {
        Ok(r) => r,
        Err(why) => return why.into_response(),
    };
    let Some(id) = job_id(&id) else {
        return not_found();
    };
    match store::get(queue.pool(), id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => not_found(),
        Err(e) => database(&e),
    }
}

async fn list_jobs(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (queue, _) = match ready(&s) {
        Ok(r) => r,
        Err(why) => return why.into_response(),
    };
    let limit = match list_limit(query.get("limit").map(String::as_str)) {
        Ok(n) => n,
        Err(e) => return invalid(vec![e]),
    };
    match store::list(queue.pool(), limit).await {
        Ok(jobs) => Json(json!({ "jobs": jobs })).into_response(),
        Err(e) => database(&e),
    }
}

async fn cancel_job(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let (queue, _) = match ready(&s) {
        Ok(r) => r,
        Err(why) => return why.into_response(),
    };
    let Some(id) = job_id(&id) else {
        return not_found();
    };
    match store::cancel(queue.pool(), id).await {
        Ok(Cancelled::Done(job)) => {
            tracing::info!(
                operation = "JOB",
                job_id = id,
                status = job.status.as_str(),
                cancel_requested = true,
                "job cancel requested"
            );
            Json(job).into_response()
        }
        Ok(Cancelled::Finished(job)) => error(
            StatusCode::CONFLICT,
            "JOB_FINISHED",
            json!({ "job_id": id, "status": job.status }),
        ),
        Ok(Cancelled::NotFound) => not_found(),
        Err(e) => database(&e),
    }
}

async fn schedules(State(s): State<AppState>) -> Response {
    let Some(api) = &s.api else {
        return not_found();
    };
    let view = api.view.read().unwrap_or_else(|p| p.into_inner());
    let now = chrono::Utc::now();
    let list = crate::jobs::scheduler::views(&view.schedules, now, view.zone);
    Json(json!({ "schedules": list })).into_response()
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, method) of every operation the document describes.
    fn documented() -> Vec<(String, String)> {
        let doc: serde_yaml::Value = serde_yaml::from_str(OPENAPI).expect("the document is YAML");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_mapping().expect("paths");
        let mut out = Vec::new();
        for (path, item) in paths {
            for (method, _) in item.as_mapping().expect("path item") {
                out.push((
                    path.as_str().unwrap().to_string(),
                    method.as_str().unwrap().to_uppercase(),
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_route_the_router_has_is_in_the_openapi_document_and_no_other() {
        let mut served: Vec<(String, String)> = super::super::http::routes(true)
            .iter()
            .map(|r| (r.path.to_string(), r.method.to_string()))
            .collect();
        served.sort();
        assert_eq!(served, documented());
    }

    #[test]
    fn the_token_is_accepted_exactly() {
        let api = Api {
            token_digest: digest(b"0123456789abcdef"),
            view: RwLock::new(View {
                objects: vec![],
                schedules: vec![],
                zone: chrono_tz::UTC,
            }),
            wake: Arc::default(),
        };
        assert!(api.accepts(b"0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdefg",
            b"0123456789ABCDEF",
        ] {
            assert!(!api.accepts(wrong));
        }
    }
}
