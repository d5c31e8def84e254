//! `/v1/deliveries`: the delivery log, one row per event and configuration
//! that selected it, with its state.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, Query, id, page, time_filter};
use super::views::{DeliveryView, ExplainView, Page};
use crate::model::auth::Scope;
use crate::model::ids::{ConfigId, DeliveryId};
use crate::service::{App, DeliveryFilter, DeliveryStatus};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list_deliveries)).routes(routes!(get_delivery)).routes(routes!(explain_delivery))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// Items per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    configuration_id: Option<String>,
    event_id: Option<String>,
    /// `pending`, `filtered`, `script_error`, `succeeded` or `failed`.
    status: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<String>,
    /// Created before (RFC 3339).
    until: Option<String>,
}

/// List deliveries
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveriesQuery),
    responses((status = 200, body = Page<DeliveryView>)),
    security(("bearer" = ["logs:read"])))]
async fn list_deliveries(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_filter", "status is one of pending, filtered, script_error, succeeded, failed")
            })
        })
        .transpose()?;
    let filter = DeliveryFilter {
        configuration_id: q.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?,
        event_id: q.event_id.clone(),
        status,
        created_after: time_filter(&q.since, "since")?,
        created_before: time_filter(&q.until, "until")?,
    };
    Ok(Json(Page::of(app.list_deliveries(&p.tenant, &filter, &page(q.limit, &q.cursor)).await?, DeliveryView::new)))
}

/// Get a delivery, with the body and headers its script decided
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView)),
    security(("bearer" = ["logs:read"])))]
async fn get_delivery(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<DeliveryView>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    Ok(Json(DeliveryView::detailed(app.get_delivery(&p.tenant, &id(&raw, DeliveryId::parse)?).await?)))
}

/// Decide a delivery again, and compare
///
/// Runs the script version and parameters the delivery's configuration
/// ran when it decided (its script history says which) on the stored
/// event, under the same limits, sending and storing nothing, and sets the
/// decision beside the recorded one: the same version decides the same,
/// fuel and an exhausted budget included (only a wall-clock timeout
/// depends on the machine). Error codes: `not_found` (404),
/// `not_decided`, `not_recorded`, `script_deleted` (409).
#[utoipa::path(get, path = "/v1/deliveries/{id}/explain", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, body = ExplainView)),
    security(("bearer" = ["logs:read"])))]
async fn explain_delivery(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<ExplainView>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    Ok(Json(app.explain_delivery(&p.tenant, &id(&raw, DeliveryId::parse)?).await?.into()))
}
