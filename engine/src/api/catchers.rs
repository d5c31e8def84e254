//! `/v1/catchers`: hosted catchers, test endpoints on the engine itself
//! that record what they receive and answer as asked; and `/catch/{token}`,
//! where they receive. A configuration pointed at one of this engine's
//! catchers is delivered to in-process (see `pipeline::catcher`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, body_bytes, id, parse_optional_json};
use super::views::{CatcherView, CaughtView, CreatedCatcherView};
use crate::model::auth::Scope;
use crate::model::ids::{CatcherId, CaughtId};
use crate::model::timestamp::now_ms;
use crate::service::{App, CatcherRequest, Caught};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_catcher, list_catchers))
        .routes(routes!(delete_catcher))
        .routes(routes!(caught))
        .routes(routes!(catch))
}

/// Catchers one tenant may have at once.
const MAX_CATCHERS: usize = 20;

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CatcherInput {
    /// 1 to 100 characters (default `catcher`).
    name: Option<String>,
    /// The status it answers with, 100 to 599 (default 200).
    status: Option<u16>,
    /// The body it answers with, at most 4 KiB (default `[ACK]`).
    body: Option<String>,
}

/// Create a hosted catcher
///
/// A test endpoint on the engine itself: point a configuration at its
/// `url` and every delivery is recorded here (the newest 100, the first
/// 64 KiB of each body), answered with `status` and `body`. The URL is
/// shown once. At most 20 per tenant (`too_many_catchers`).
#[utoipa::path(post, path = "/v1/catchers", tag = "catchers",
    request_body = CatcherInput,
    responses((status = 201, body = CreatedCatcherView)),
    security(("bearer" = ["configurations:write"])))]
async fn create_catcher(
    State(app): State<Arc<App>>,
    auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedCatcherView>), ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let input: CatcherInput = parse_optional_json(&body_bytes(body).await?)?;
    let name = input.name.unwrap_or_else(|| "catcher".into());
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_catcher", m);
    if name.trim().is_empty() || name.len() > 100 {
        return Err(invalid("a catcher's name has 1 to 100 characters"));
    }
    let answer_status = input.status.unwrap_or(200);
    if !(100..=599).contains(&answer_status) {
        return Err(invalid("`status` is an HTTP status, 100 to 599"));
    }
    let answer_body = input.body.unwrap_or_else(|| "[ACK]".into());
    if answer_body.len() > 4096 {
        return Err(invalid("`body` is at most 4 KiB"));
    }
    // Each keeps up to 100 requests: a tenant's catchers are bounded too.
    if app.list_catchers(&p.tenant).await?.len() >= MAX_CATCHERS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_catchers",
            format!("a tenant has at most {MAX_CATCHERS} catchers; delete one first"),
        ));
    }
    let (record, token) = app.create_catcher(&p.tenant, CatcherRequest { name, answer_status, answer_body }).await?;
    let url = format!("{}{}{token}", super::portal_links::public_base(&app, &headers), crate::pipeline::catcher::PATH);
    Ok((StatusCode::CREATED, Json(CreatedCatcherView { catcher: record.into(), url })))
}

/// List the tenant's hosted catchers
#[utoipa::path(get, path = "/v1/catchers", tag = "catchers",
    responses((status = 200, body = Vec<CatcherView>)),
    security(("bearer" = ["configurations:read"])))]
async fn list_catchers(State(app): State<Arc<App>>, auth: Auth) -> Result<Json<Vec<CatcherView>>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    Ok(Json(app.list_catchers(&p.tenant).await?.into_iter().map(CatcherView::from).collect()))
}

/// Delete a hosted catcher and what it recorded
#[utoipa::path(delete, path = "/v1/catchers/{id}", tag = "catchers", params(("id" = String, Path)),
    responses((status = 204)),
    security(("bearer" = ["configurations:write"])))]
async fn delete_catcher(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    app.delete_catcher(&p.tenant, &id(&raw, CatcherId::parse)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a hosted catcher received, newest first
///
/// Each request with its signature checked against the signing secrets
/// (current and previous) of the tenant's configurations.
#[utoipa::path(get, path = "/v1/catchers/{id}/requests", tag = "catchers", params(("id" = String, Path)),
    responses((status = 200, body = Vec<CaughtView>)),
    security(("bearer" = ["logs:read"])))]
async fn caught(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<Vec<CaughtView>>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    Ok(Json(app.caught(&p.tenant, &id(&raw, CatcherId::parse)?).await?.into_iter().map(CaughtView::from).collect()))
}

/// A hosted catcher receives a request
///
/// Anyone holding the URL may post to it; the request is recorded as
/// received (credentials redacted) and answered as the catcher says.
#[utoipa::path(post, path = "/catch/{token}", tag = "catchers", params(("token" = String, Path)), security(()),
    responses((status = 200, description = "the catcher's answer", body = String, content_type = "text/plain")))]
async fn catch(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body).await?;
    let caught = Caught {
        id: CaughtId::generate(),
        received_at: now_ms(),
        method: "POST".into(),
        uri: uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
        headers: crate::pipeline::request::headers_json(&headers, true),
        body: body.to_vec(),
        body_size: 0,
    };
    match app.catch(&token, caught).await? {
        Some(catcher) => {
            let status = u16::try_from(catcher.answer_status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
            Ok((status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], catcher.answer_body).into_response())
        }
        None => Err(ApiError::not_found("catcher")),
    }
}
