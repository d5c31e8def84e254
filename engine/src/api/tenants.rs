//! `/v1/tenants`: the operator's admin keys create tenants and their first
//! keys. A tenant's own admin keys must never reach other tenants.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, PageQuery, Query, body_bytes, id, parse_json};
use super::keys::{KeyInput, make_key};
use super::views::{CreatedKeyView, Page, TenantView};
use crate::model::auth::{Principal, Scope};
use crate::model::ids::TenantId;
use crate::service::App;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(create_tenant, list_tenants)).routes(routes!(update_tenant)).routes(routes!(create_tenant_key))
}

/// Tenants are managed by the operator's admin keys only.
pub fn require_operator<'a>(app: &App, auth: &'a Auth) -> Result<&'a Principal, ApiError> {
    require_operator_scope(app, auth, Scope::Admin)
}

/// The operation is the whole node's: a key of the operator's with `scope`.
pub fn require_operator_scope<'a>(app: &App, auth: &'a Auth, scope: Scope) -> Result<&'a Principal, ApiError> {
    let p = auth.require(scope)?;
    if !app.is_operator(&p.tenant) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("only the operator's keys with `{scope}` may do this")));
    }
    Ok(p)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantInput {
    /// 1 to 100 characters.
    name: String,
    /// Events per calendar month (UTC); left out: unlimited.
    #[schema(minimum = 0)]
    monthly_quota: Option<i64>,
}

/// Create a tenant (operator admins)
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = TenantInput,
    responses((status = 201, body = TenantView)),
    security(("bearer" = ["admin"])))]
async fn create_tenant(
    State(app): State<Arc<App>>,
    auth: Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    require_operator(&app, &auth)?;
    let input = tenant_input(body).await?;
    let record = app.create_tenant(input.name.trim(), input.monthly_quota).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

async fn tenant_input(body: Result<Bytes, BytesRejection>) -> Result<TenantInput, ApiError> {
    let input: TenantInput = parse_json(&body_bytes(body).await?)?;
    if input.name.trim().is_empty() || input.name.len() > 100 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", "a tenant name has 1 to 100 characters"));
    }
    if input.monthly_quota.is_some_and(|q| q < 0) {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_quota", "the quota is a number of events, 0 or more"));
    }
    Ok(input)
}

/// Rename a tenant or change its monthly quota (operator admins)
///
/// Takes effect at once: ingest checks the new quota from the next request.
#[utoipa::path(put, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    request_body = TenantInput,
    responses((status = 200, body = TenantView)),
    security(("bearer" = ["admin"])))]
async fn update_tenant(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TenantView>, ApiError> {
    require_operator(&app, &auth)?;
    let id = id(&raw, TenantId::parse)?;
    let input = tenant_input(body).await?;
    Ok(Json(app.update_tenant(&id, input.name.trim(), input.monthly_quota).await?.into()))
}

/// List tenants (operator admins)
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery),
    responses((status = 200, body = Page<TenantView>)),
    security(("bearer" = ["admin"])))]
async fn list_tenants(State(app): State<Arc<App>>, auth: Auth, Query(q): Query<PageQuery>) -> Result<Json<Page<TenantView>>, ApiError> {
    require_operator(&app, &auth)?;
    Ok(Json(Page::of(app.list_tenants(&q.page()).await?, TenantView::from)))
}

/// Create a key in a tenant (operator admins)
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "tenants", params(("id" = String, Path)),
    request_body = KeyInput,
    responses((status = 201, body = CreatedKeyView)),
    security(("bearer" = ["admin"])))]
async fn create_tenant_key(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    require_operator(&app, &auth)?;
    make_key(&app, id(&raw, TenantId::parse)?, body).await
}
