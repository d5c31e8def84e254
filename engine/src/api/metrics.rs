//! `/metrics`: the node's metrics in the Prometheus text format, on the
//! API's listener for the operator's keys with `metrics:read`, and (when
//! `metrics_listen` is set) on a listener of its own without a key, for a
//! scraper on a private network.
//!
//! It must never show one tenant's figures to another: the counts are the
//! whole node's, so only the operator reads them through the API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::Auth;
use super::tenants::require_operator_scope;
use crate::model::auth::Scope;
use crate::service::App;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// `/metrics` alone, without a key: served on `metrics_listen`.
pub fn open_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(|State(app): State<Arc<App>>| async move { render(&app).await }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "only /metrics is served here") })
        .with_state(app)
}

/// The node's metrics (operator keys)
///
/// Counters, histograms and gauges of the whole node in the Prometheus
/// text format (0.0.4): events ingested and refused, routing decisions,
/// script run time and fuel, attempts and their latency, the backlog, the
/// queues, the store's write groups.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
    security(("bearer" = ["metrics:read"])))]
async fn metrics(State(app): State<Arc<App>>, auth: Auth) -> Result<Response, ApiError> {
    require_operator_scope(&app, &auth, Scope::MetricsRead)?;
    Ok(render(&app).await)
}

async fn render(app: &App) -> Response {
    match app.metrics().await {
        Ok(Some(text)) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Ok(None) => ApiError::new(StatusCode::NOT_FOUND, "metrics_off", "this process records no metrics").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
