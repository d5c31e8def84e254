//! Liveness, readiness and the API's own description: the public
//! operations, answered without a key.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use crate::service::App;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(openapi))
}

/// Liveness: the process answers
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain")))]
async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.ready().await?;
    Ok("ready")
}

/// This document
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> Json<&'static serde_json::Value> {
    Json(super::document())
}
