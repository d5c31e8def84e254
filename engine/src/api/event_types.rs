//! `/v1/event-types`: the tenant's catalog of event types, filled as events
//! arrive and described by admins.

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
use super::extract::{Auth, body_bytes, parse_json};
use super::views::{EventTypeView, EventTypesView};
use crate::model::auth::Scope;
use crate::model::event::EventType;
use crate::service::App;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list_event_types)).routes(routes!(put_event_type))
}

/// The event types catalog
#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    responses((status = 200, body = EventTypesView)),
    security(("bearer" = ["configurations:read"])))]
async fn list_event_types(State(app): State<Arc<App>>, auth: Auth) -> Result<Json<EventTypesView>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let items = app.list_event_types(&p.tenant).await?.into_iter().map(EventTypeView::from).collect();
    Ok(Json(EventTypesView { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EventTypeInput {
    description: Option<String>,
}

/// Describe an event type
///
/// Error codes: `invalid_event_type` (422).
#[utoipa::path(put, path = "/v1/event-types/{name}", tag = "event-types", params(("name" = String, Path)),
    request_body = EventTypeInput,
    responses((status = 200, body = EventTypeView)),
    security(("bearer" = ["configurations:write"])))]
async fn put_event_type(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventTypeView>, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let name = EventType::parse(&name).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event_type", e.to_string()))?;
    let input: EventTypeInput = parse_json(&body_bytes(body).await?)?;
    Ok(Json(app.put_event_type(&p.tenant, name.as_str(), input.description.as_deref()).await?.into()))
}
