//! `/v1/attempts`: the attempt log, every request sent and what came back,
//! secrets redacted.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::extract::{Auth, Query, id, page, time_filter};
use super::views::{AttemptView, Page};
use crate::model::auth::Scope;
use crate::model::ids::{AttemptId, ConfigId, DeliveryId};
use crate::service::{App, AttemptFilter};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list_attempts)).routes(routes!(get_attempt))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AttemptsQuery {
    /// Items per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    configuration_id: Option<String>,
    delivery_id: Option<String>,
    /// Started at or after (RFC 3339).
    since: Option<String>,
    /// Started before (RFC 3339).
    until: Option<String>,
}

/// List attempts
#[utoipa::path(get, path = "/v1/attempts", tag = "attempts", params(AttemptsQuery),
    responses((status = 200, body = Page<AttemptView>)),
    security(("bearer" = ["logs:read"])))]
async fn list_attempts(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<AttemptsQuery>,
) -> Result<Json<Page<AttemptView>>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let filter = AttemptFilter {
        delivery_id: q.delivery_id.as_deref().map(|d| id(d, DeliveryId::parse)).transpose()?,
        configuration_id: q.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?,
        started_after: time_filter(&q.since, "since")?,
        started_before: time_filter(&q.until, "until")?,
    };
    Ok(Json(Page::of(app.list_attempts(&p.tenant, &filter, &page(q.limit, &q.cursor)).await?, AttemptView::from)))
}

/// Get an attempt with its bodies
#[utoipa::path(get, path = "/v1/attempts/{id}", tag = "attempts", params(("id" = String, Path)),
    responses((status = 200, body = AttemptView)),
    security(("bearer" = ["logs:read"])))]
async fn get_attempt(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<AttemptView>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    Ok(Json(app.get_attempt(&p.tenant, &id(&raw, AttemptId::parse)?).await?.into()))
}
