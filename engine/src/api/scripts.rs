//! `/v1/scripts`: upload, list, read, delete, and try a script on a sample
//! event. Uploads are validated and compiled by the engine; this file only
//! reads the request and shapes the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, Query, body_bytes, id, page, parse_json};
use super::views::{Page, ScriptRunView, ScriptView};
use crate::model::auth::Scope;
use crate::model::event::{EventId, EventInput};
use crate::model::ids::ScriptId;
use crate::sandbox::Params;
use crate::service::App;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(get_script, delete_script)).routes(routes!(test_script))
}

/// `POST` and `GET /v1/scripts`, under the script size limit.
pub fn upload_router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(upload_script, list_scripts))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// 1 to 100 characters (default `script`).
    name: Option<String>,
}

/// Upload a script, as the next version of its name
///
/// Uploading under a name already used makes that name's next version
/// (1, 2, …); earlier versions stay stored, listed and runnable, and a
/// configuration runs the exact version (id) it names. The body is a WebAssembly component (or a core module built with the
/// SDK, componentized on upload) implementing `sluice:event-export@0.1.x`.
/// It is validated and compiled before the answer.
///
/// Error codes: `unsupported_media_type` (415), `script_too_large` (413),
/// `invalid_name`, `invalid_wasm`, `world_mismatch`,
/// `unsupported_wit_version` (422).
#[utoipa::path(post, path = "/v1/scripts", tag = "scripts", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = ScriptView)),
    security(("bearer" = ["scripts:write"])))]
async fn upload_script(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ScriptView>), ApiError> {
    let p = auth.require(Scope::ScriptsWrite)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the script as `Content-Type: application/wasm`",
        ));
    }
    let bytes = body_bytes(body).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "script_too_large",
                format!("scripts are limited to {} bytes", app.max_script_bytes()),
            )
        } else {
            e
        }
    })?;
    let name = q.name.unwrap_or_else(|| "script".into());
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_name", "a script name has 1 to 100 characters"));
    }
    let record = app.upload_script(p, &name, &bytes).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this name's versions.
    name: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// List scripts, every version, newest first
#[utoipa::path(get, path = "/v1/scripts", tag = "scripts", params(ListQuery),
    responses((status = 200, body = Page<ScriptView>)),
    security(("bearer" = ["configurations:read"])))]
async fn list_scripts(State(app): State<Arc<App>>, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Page<ScriptView>>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let scripts = app.list_scripts(&p.tenant, q.name.as_deref(), &page(q.limit, &q.cursor)).await?;
    Ok(Json(Page::of(scripts, ScriptView::from)))
}

/// Get a script
#[utoipa::path(get, path = "/v1/scripts/{id}", tag = "scripts", params(("id" = String, Path)),
    responses((status = 200, body = ScriptView)),
    security(("bearer" = ["configurations:read"])))]
async fn get_script(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<ScriptView>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let record = app.get_script(&p.tenant, &id(&raw, ScriptId::parse)?).await.map_err(|_| ApiError::not_found("script"))?;
    Ok(Json(record.into()))
}

/// Delete a script no configuration uses
///
/// Error codes: `not_found` (404), `script_in_use` (409).
#[utoipa::path(delete, path = "/v1/scripts/{id}", tag = "scripts", params(("id" = String, Path)),
    responses((status = 204, description = "deleted")),
    security(("bearer" = ["scripts:write"])))]
async fn delete_script(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let p = auth.require(Scope::ScriptsWrite)?;
    app.delete_script(&p.tenant, &id(&raw, ScriptId::parse)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScriptTest {
    /// An event as posted to `/v1/events`.
    #[schema(value_type = Object)]
    event: Box<serde_json::value::RawValue>,
    /// The parameters a configuration would give the script.
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    params: Params,
}

/// Run a script on a sample event
///
/// Runs under the same limits as live routing; stores and sends nothing.
/// Error codes: `not_found` (404), `invalid_event` (422).
#[utoipa::path(post, path = "/v1/scripts/{id}/test", tag = "scripts", params(("id" = String, Path)),
    request_body = ScriptTest,
    responses((status = 200, body = ScriptRunView)),
    security(("bearer" = ["scripts:write"])))]
async fn test_script(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ScriptRunView>, ApiError> {
    let p = auth.require(Scope::ScriptsWrite)?;
    let script_id = id(&raw, ScriptId::parse)?;
    let req: ScriptTest = parse_json(&body_bytes(body).await?)?;
    let event = sample_event(req.event.get())?;
    let script = app.script(&p.tenant, &script_id).await.map_err(|_| ApiError::not_found("script"))??;
    let outcome = app
        .run_script(script, Arc::new(req.params), event)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(outcome.into()))
}

/// An event given to try something on: validated as on ingest, `evt_test`
/// when it has no id.
pub fn sample_event(json: &str) -> Result<crate::model::event::Event, ApiError> {
    EventInput::from_json(json)
        .and_then(|e| e.validate(|| EventId::parse("evt_test").expect("a valid literal id")))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", e.to_string()))
}
