//! The HTTP API under `/v1`: authentication, request parsing, and the one
//! mapping from engine errors to HTTP answers (`{code, message}`).
//!
//! This module owns everything HTTP-facing. It must never run SQL or
//! scripts itself: it calls [`crate::service`] only, and it must
//! never answer with a secret beyond the one-time key and signing secret
//! shown at creation.

mod handlers;
mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::auth::{Principal, Scope};
use crate::pipeline::replay::ReplayError;
use crate::sandbox::LoadError;
use crate::service::{App, AppError, StoreError};

pub use openapi::document as openapi_document;

/// The whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.limits().max_body_bytes;
    let script_limit = app.max_script_bytes();
    use handlers::*;
    let scripts = Router::new().route("/v1/scripts", post(upload_script).get(list_scripts)).layer(DefaultBodyLimit::max(script_limit));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/scripts/{id}", get(get_script).delete(delete_script))
        .route("/v1/scripts/{id}/test", post(test_script))
        .route("/v1/configurations", post(create_config).get(list_configs))
        .route("/v1/configurations/{id}", get(get_config).put(update_config).delete(delete_config))
        .route("/v1/configurations/{id}/enable", post(enable_config))
        .route("/v1/configurations/{id}/disable", post(disable_config))
        .route("/v1/configurations/{id}/recover", post(recover_config))
        .route("/v1/configurations/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/configurations/{id}/test", post(test_config))
        .route("/v1/event-types", get(list_event_types))
        .route("/v1/event-types/{name}", axum::routing::put(put_event_type))
        .route("/v1/events", post(ingest).get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/replay", post(replay_event))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/attempts", get(list_attempts))
        .route("/v1/attempts/{id}", get(get_attempt))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{id}/keys", post(create_tenant_key))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(scripts)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(app)
}

/// An error answer: a status, a stable code, a message for humans.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = serde_json::json!({"code": self.code, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict(what) => Self::new(StatusCode::CONFLICT, "conflict", format!("{what} is already taken")),
            StoreError::UnknownReference(what) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference", format!("unknown {what} for this tenant"))
            }
            StoreError::StaleVersion { current } => Self::new(
                StatusCode::CONFLICT,
                "stale_version",
                format!("the configuration changed meanwhile: its version is now {current}; re-read it and retry"),
            ),
            StoreError::InUse(n) => Self::new(
                StatusCode::CONFLICT,
                "script_in_use",
                format!("{n} configuration(s) use this script; point them elsewhere first"),
            ),
            StoreError::QuotaExceeded { quota, used } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!("the tenant's monthly quota of {quota} events is used up ({used} this month); nothing was stored"),
            ),
            StoreError::Closed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => e.into(),
            AppError::Config(e) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.to_string()),
            AppError::Script(e) => e.into(),
            AppError::Replay(e) => e.into(),
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        if let ReplayError::Store(e) = e {
            return e.into();
        }
        let status = match &e {
            ReplayError::UnknownEvent | ReplayError::UnknownConfiguration => StatusCode::NOT_FOUND,
            ReplayError::NotRouted | ReplayError::ConfigurationDisabled(_) | ReplayError::StillPending(_) => StatusCode::CONFLICT,
            ReplayError::NotMatched(_) | ReplayError::EmptyWindow | ReplayError::Store(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        let status = match e {
            LoadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// Parses a JSON body, telling malformed JSON from a wrong shape.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            }
            Category::Data if e.to_string().starts_with("unknown field") => ApiError::bad_request("unknown_field", e.to_string()),
            Category::Data => ApiError::bad_request("invalid_request", e.to_string()),
        }
    })
}

/// A body that may have been cut by the size limit.
pub async fn body_bytes(body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is over the size limit")
        } else {
            ApiError::bad_request("unreadable_body", r.body_text())
        }
    })
}

/// A query string, refused with a JSON error (`unknown_filter` for a name
/// the endpoint does not know, `invalid_query` otherwise).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::try_from_uri(&parts.uri).map(|q| Query(q.0)).map_err(|rejection| {
            let text = rejection.body_text();
            let code = if text.contains("unknown field") { "unknown_filter" } else { "invalid_query" };
            ApiError::bad_request(code, text)
        })
    }
}

/// The authenticated caller.
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the key has `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        if self.0.may(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this key lacks the `{scope}` scope")))
        }
    }
}

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("send `Authorization: Bearer <api key>`"))?;
        let principal = app.authenticate(presented.trim()).await?.ok_or_else(|| unauthorized("unknown or revoked API key"))?;
        Ok(Auth(principal))
    }
}

/// The version an update quotes in `If-Match` (`"3"`, `3` or `W/"3"`).
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = headers.get(axum::http::header::IF_MATCH) else { return Ok(None) };
    let text = raw.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid_if_match", "If-Match must carry the configuration's version, e.g. \"3\""))
}
