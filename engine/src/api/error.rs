//! The one mapping from engine errors to HTTP answers: a status, a stable
//! `code` for programs, a `message` for people.
//!
//! Every failure an API client can see goes through here. It must never
//! answer a client's mistake with a 5xx, nor put a secret in a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::pipeline::replay::ReplayError;
use crate::sandbox::LoadError;
use crate::service::{AppError, StoreError};
use crate::telemetry::{self, throttle::Throttle};

/// An error answer: a status, a stable code, a message for humans.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// What failed underneath, for the server's log only: a client is told
    /// the code and message, the operator why (a full disk, say).
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, cause: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // During an outage every request fails alike: one line a while
            // per code; the metric counts each.
            telemetry::api_server_error(self.code);
            if let Some(held_back) = throttle(self.code).pass() {
                tracing::error!(code = self.code, message = %self.message, cause = self.cause, held_back,
                    "request failed (and held_back more alike since the last such line, not logged)");
            }
        }
        let body = axum::Json(super::views::ErrorBody { code: self.code, message: self.message, field: self.field });
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Unavailable for a moment: a poster's retry loop need not guess.
            return (self.status, [(axum::http::header::RETRY_AFTER, "1")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

/// The log's throttle for one server-side error code.
fn throttle(code: &str) -> &'static Throttle {
    static UNAVAILABLE: Throttle = Throttle::new();
    static SHUTTING_DOWN: Throttle = Throttle::new();
    static INTERNAL: Throttle = Throttle::new();
    match code {
        "store_unavailable" => &UNAVAILABLE,
        "shutting_down" => &SHUTTING_DOWN,
        _ => &INTERNAL,
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
            e if e.is_unavailable() => Self {
                cause: Some(e.to_string()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database cannot be reached or cannot take writes just now; retry shortly (events posted again with the \
                     same ids are stored once)",
                )
            },
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => e.into(),
            AppError::Config(e) => {
                let field = (!e.field.is_empty()).then(|| e.field.clone());
                Self { field, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.to_string()) }
            }
            AppError::Script(e) => e.into(),
            AppError::Replay(e) => e.into(),
            AppError::Explain(e) => Self::new(StatusCode::CONFLICT, e.code(), e.to_string()),
            AppError::Preview(e) => {
                let status = match e {
                    crate::service::PreviewError::Running => StatusCode::CONFLICT,
                    crate::service::PreviewError::UnknownScript(_) => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Self::new(status, e.code(), e.to_string())
            }
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
