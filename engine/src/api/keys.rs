//! `/v1/keys`: a tenant's API keys. A key's secret is shown once, in the
//! answer that creates it; only its hash is stored.

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
use super::views::{CreatedKeyView, KeyView, Page};
use crate::model::auth::{KeySecret, Scope};
use crate::model::ids::{KeyId, TenantId};
use crate::service::{App, NewKey, StoreError};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    /// 1 to 100 characters.
    name: String,
    /// `events:write`, `configurations:read`, `configurations:write`,
    /// `scripts:write`, `logs:read`, `metrics:read` (operator), `admin`; at
    /// least one.
    #[schema(value_type = Vec<String>, min_items = 1)]
    scopes: Vec<Scope>,
}

/// Makes a key in `tenant` from a `KeyInput` body (also for operators,
/// in any tenant: see `tenants`).
pub async fn make_key(
    app: &App,
    tenant: TenantId,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let input: KeyInput = parse_json(&body_bytes(body).await?)?;
    if input.scopes.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_scopes", "a key needs at least one scope"));
    }
    if input.name.is_empty() || input.name.len() > 100 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", "a key name has 1 to 100 characters"));
    }
    let secret = KeySecret::generate();
    let record = app
        .create_key(NewKey {
            id: KeyId::generate(),
            tenant_id: tenant,
            name: input.name,
            prefix: secret.display_prefix(),
            hash: secret.hash(),
            scopes: input.scopes,
            expires_at: None,
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("tenant"),
            e => e.into(),
        })?;
    // The only time the secret is shown.
    Ok((StatusCode::CREATED, Json(CreatedKeyView { key: record.into(), secret: secret.expose().to_owned() })))
}

/// Create an API key in the caller's tenant
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = KeyInput,
    responses((status = 201, body = CreatedKeyView)),
    security(("bearer" = ["admin"])))]
async fn create_key(
    State(app): State<Arc<App>>,
    auth: Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    let p = auth.require(Scope::Admin)?;
    make_key(&app, p.tenant.clone(), body).await
}

/// List the tenant's API keys
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = Page<KeyView>)),
    security(("bearer" = ["admin"])))]
async fn list_keys(State(app): State<Arc<App>>, auth: Auth, Query(q): Query<PageQuery>) -> Result<Json<Page<KeyView>>, ApiError> {
    let p = auth.require(Scope::Admin)?;
    Ok(Json(Page::of(app.list_keys(&p.tenant, &q.page()).await?, KeyView::from)))
}

/// Revoke an API key
///
/// At once, on every node. Revoking a revoked key answers it unchanged.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView)),
    security(("bearer" = ["admin"])))]
async fn revoke_key(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<KeyView>, ApiError> {
    let p = auth.require(Scope::Admin)?;
    Ok(Json(app.revoke_key(&p.tenant, &id(&raw, KeyId::parse)?).await?.into()))
}
