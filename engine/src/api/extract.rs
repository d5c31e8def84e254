//! Reading requests at the edge: the caller's key, JSON bodies, query
//! strings, ids in paths and `If-Match`, each refused with a clear 4xx.
//!
//! Handlers receive parsed values and trust them. Nothing here calls the
//! engine beyond authenticating the key.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::model::auth::{Principal, Scope};
use crate::model::ids::IdError;
use crate::service::{App, PageRequest};

/// An id from the path or a filter. A malformed id names nothing: it is
/// answered as an unknown one.
pub fn id<T>(raw: &str, parse: fn(&str) -> Result<T, IdError>) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))
}

/// An optional JSON body: empty or blank reads as `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { parse_json(body) }
}

/// An RFC 3339 time as Unix milliseconds.
pub fn unix_ms(raw: &str) -> Option<i64> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
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

/// `limit` and `cursor`: a list without filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> PageRequest {
        page(self.limit, &self.cursor)
    }
}

/// A page request from a list's `limit` and `cursor`.
pub fn page(limit: Option<u32>, cursor: &Option<String>) -> PageRequest {
    PageRequest { limit: limit.unwrap_or(50), cursor: cursor.clone() }
}

/// A time filter (`since`, `until`): RFC 3339.
pub fn time_filter(raw: &Option<String>, name: &str) -> Result<Option<i64>, ApiError> {
    raw.as_deref()
        .map(|t| unix_ms(t).ok_or_else(|| ApiError::bad_request("invalid_filter", format!("`{name}` must be an RFC 3339 time"))))
        .transpose()
}
