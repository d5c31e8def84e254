//! `/v1/portal-links`: single-use links that open the console for one
//! tenant with the scopes asked for, to hand to a customer. A link's token
//! is shown once, in the answer that makes it; only its hash is stored.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, body_bytes, id, parse_optional_json};
use super::tenants::require_operator;
use super::views::PortalLinkView;
use crate::model::auth::Scope;
use crate::model::ids::TenantId;
use crate::service::{App, PortalLinkRequest, StoreError};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(create_portal_link)).routes(routes!(create_tenant_portal_link))
}

/// The longest a link may wait to be opened, and a session may last.
const MAX_VALID: Duration = Duration::from_secs(24 * 3600);
const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PortalLinkInput {
    /// What the console session may do, as a key's scopes (default
    /// `configurations:read`, `configurations:write`, `logs:read`).
    #[schema(value_type = Option<Vec<String>>)]
    scopes: Option<Vec<Scope>>,
    /// How long the link may be opened, 60 to 86,400 (default 900).
    valid_for_seconds: Option<u64>,
    /// How long the session it opens lasts, 60 to 43,200 (default 3,600).
    session_seconds: Option<u64>,
}

/// Reads a link request and makes the link in `tenant`.
async fn make_link(
    app: &App,
    auth: &Auth,
    tenant: TenantId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PortalLinkView>), ApiError> {
    let input: PortalLinkInput = parse_optional_json(&body_bytes(body).await?)?;
    let scopes = input.scopes.unwrap_or_else(|| vec![Scope::ConfigurationsRead, Scope::ConfigurationsWrite, Scope::LogsRead]);
    if scopes.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_scopes", "a portal link needs at least one scope"));
    }
    let seconds = |raw: Option<u64>, default: u64, max: Duration, field: &str| {
        let d = Duration::from_secs(raw.unwrap_or(default));
        if d < Duration::from_secs(60) || d > max {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_duration",
                format!("`{field}` must be 60 to {} seconds", max.as_secs()),
            ));
        }
        Ok(d)
    };
    let request = PortalLinkRequest {
        scopes,
        valid_for: seconds(input.valid_for_seconds, 900, MAX_VALID, "valid_for_seconds")?,
        session_for: seconds(input.session_seconds, 3600, MAX_SESSION, "session_seconds")?,
    };
    let link = app.create_portal_link(&auth.0, tenant, request).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("tenant"),
        e => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(PortalLinkView::new(link, &public_base(app, headers)))))
}

/// Where the engine is reached from outside: the `public_url` setting, or
/// the `Host` the caller used.
pub fn public_base(app: &App, headers: &HeaderMap) -> String {
    if let Some(url) = &app.limits().public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

/// Make a portal link for the caller's tenant
///
/// The link opens a console session once, within `valid_for_seconds`,
/// bound to this tenant and the scopes asked for.
#[utoipa::path(post, path = "/v1/portal-links", tag = "keys",
    request_body = PortalLinkInput,
    responses((status = 201, body = PortalLinkView)),
    security(("bearer" = ["admin"])))]
async fn create_portal_link(
    State(app): State<Arc<App>>,
    auth: Auth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PortalLinkView>), ApiError> {
    let tenant = auth.require(Scope::Admin)?.tenant.clone();
    make_link(&app, &auth, tenant, &headers, body).await
}

/// Make a portal link for a tenant (operator admins)
#[utoipa::path(post, path = "/v1/tenants/{id}/portal-links", tag = "tenants", params(("id" = String, Path)),
    request_body = PortalLinkInput,
    responses((status = 201, body = PortalLinkView)),
    security(("bearer" = ["admin"])))]
async fn create_tenant_portal_link(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PortalLinkView>), ApiError> {
    require_operator(&app, &auth)?;
    make_link(&app, &auth, id(&raw, TenantId::parse)?, &headers, body).await
}
