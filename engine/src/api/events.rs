//! `/v1/events`: ingest (one event or a batch), the event log, and replay.
//! A 2xx to an ingest means the events are durably stored; routing and
//! delivery follow in the pipeline.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::doc::EventInput as EventInputSchema;
use super::extract::{Auth, Query, body_bytes, id, page, parse_json, parse_optional_json, time_filter};
use super::views::{DeliveryView, EventView, IngestView, IngestedView, Page, ReplayView};
use crate::model::auth::Scope;
use crate::model::event::{EventId, EventInput, RESERVED_TYPE_PREFIX};
use crate::model::ids::ConfigId;
use crate::service::{App, EventFilter, EventStatus, Ingested, StoreError};
use crate::telemetry;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(ingest, list_events)).routes(routes!(get_event)).routes(routes!(replay_event))
}

/// Ingest one event or a batch (array)
///
/// The answer lists each event's id (generated when left out) and whether
/// it was `accepted` or a `duplicate` of one the tenant already has. A 202
/// means every event is stored durably; a refusal stores none of them.
///
/// Error codes: `malformed_json`, `invalid_request`, `unknown_field`,
/// `empty_batch`, `invalid_event` (400 or 422, with the event's index in a
/// batch), `reserved_event_type` (422: `sluice.*` types are sluice's own
/// notices), `batch_too_large`, `payload_too_large` (413), `quota_exceeded` (429),
/// `store_unavailable` (503, with `Retry-After`: the database is unreachable
/// or cannot take writes, a full disk say; post the same events again).
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = EventInputSchema, description = "one event, or an array of them"),
    responses((status = 202, body = IngestView)),
    security(("bearer" = ["events:write"])))]
async fn ingest(
    State(app): State<Arc<App>>,
    auth: Auth,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestView>), ApiError> {
    let answer = store_events(&app, auth, body).await;
    match &answer {
        Ok((_, Json(view))) => {
            let accepted = view.events.iter().filter(|e| e.status == ACCEPTED).count() as u64;
            telemetry::events_ingested(accepted, view.events.len() as u64 - accepted);
        }
        Err(e) => telemetry::ingest_refused(e.code),
    }
    answer
}

const ACCEPTED: &str = "accepted";

async fn store_events(app: &App, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<(StatusCode, Json<IngestView>), ApiError> {
    let p = auth.require(Scope::EventsWrite)?;
    let body = body_bytes(body).await?;
    let single = body.trim_ascii_start().first() == Some(&b'{');
    // Most requests hold one well-formed event: parsed once. Anything else
    // (a batch, an error to report) takes the path that tells each case.
    let inputs = match single.then(|| serde_json::from_slice::<EventInput>(&body).ok()).flatten() {
        Some(one) => vec![one],
        None => parse_events(&body, single, app.limits().max_batch)?,
    };
    let mut events = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = position(single, i);
        let event = input
            .validate(|| EventId::parse(&format!("evt_{}", uuid::Uuid::now_v7().simple())).expect("a generated id is valid"))
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", format!("{at}{e}")))?;
        if event.event_type.is_reserved() {
            let why = format!("{at}event types starting with `{RESERVED_TYPE_PREFIX}` are sluice's own notices");
            let refused = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reserved_event_type", why);
            return Err(ApiError { field: Some("type".into()), ..refused });
        }
        events.push(event);
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let results = app.ingest(&p.tenant, events).await?;
    let events = ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| IngestedView { id, status: if matches!(r, Ingested::Stored { .. }) { ACCEPTED } else { "duplicate" } })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(IngestView { events })))
}

/// Parses an ingest body, one event object (`single`: it starts with `{`)
/// or an array of them, each event's error naming its index in a batch. Parsed as raw JSON down to
/// each event, so that every payload keeps the posted bytes (number
/// spelling, key order) through to receivers.
fn parse_events(body: &[u8], single: bool, max_batch: usize) -> Result<Vec<EventInput>, ApiError> {
    let raw: &RawValue = parse_json(body)?;
    let items: Vec<&RawValue> = match raw.get().trim_start().as_bytes().first() {
        Some(b'[') => parse_json(raw.get().as_bytes())?,
        Some(b'{') => vec![raw],
        _ => return Err(ApiError::bad_request("invalid_request", "post one event object or an array of events")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "the batch holds no events"));
    }
    if items.len() > max_batch {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", format!("at most {max_batch} events per request")));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_str(item.get()).map_err(|e| {
                let at = position(single, i);
                let code = if e.to_string().starts_with("unknown field") { "unknown_field" } else { "invalid_event" };
                ApiError::new(StatusCode::BAD_REQUEST, code, format!("{at}{e}"))
            })
        })
        .collect()
}

/// Where an event's error is: nowhere to say for one event, its index in a
/// batch.
fn position(single: bool, i: usize) -> String {
    if single { String::new() } else { format!("event {i}: ") }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Items per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// An exact event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// An organization unit and everything under it.
    organization_unit: Option<String>,
    /// `pending`, `done` or `failed`.
    status: Option<String>,
    /// Received at or after (RFC 3339).
    since: Option<String>,
    /// Received before (RFC 3339).
    until: Option<String>,
}

/// List events
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = Page<EventView>)),
    security(("bearer" = ["logs:read"])))]
async fn list_events(State(app): State<Arc<App>>, auth: Auth, Query(q): Query<EventsQuery>) -> Result<Json<Page<EventView>>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<EventStatus>(serde_json::json!(s))
                .map_err(|_| ApiError::bad_request("invalid_filter", "status is one of pending, done, failed"))?,
        ),
    };
    let filter = EventFilter {
        event_type: q.event_type.clone(),
        organization_unit: q.organization_unit.as_ref().map(|ou| ou.trim_matches('/').to_owned()),
        received_after: time_filter(&q.since, "since")?,
        received_before: time_filter(&q.until, "until")?,
        status,
    };
    let mut page = page(q.limit, &q.cursor);
    if page.cursor.as_ref().is_some_and(|c| c.parse::<i64>().is_err()) {
        return Err(ApiError::bad_request("invalid_cursor", "not a cursor from this list"));
    }
    page.limit = page.limit.max(1);
    Ok(Json(Page::of(app.list_events(&p.tenant, &filter, &page).await?, EventView::new)))
}

/// Get an event with its deliveries
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = EventView)),
    security(("bearer" = ["logs:read"])))]
async fn get_event(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<EventView>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let (event, deliveries) = app.get_event(&p.tenant, &raw).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("event"),
        e => e.into(),
    })?;
    let deliveries = deliveries.into_iter().map(DeliveryView::new).collect();
    Ok(Json(EventView { deliveries: Some(deliveries), ..EventView::new(event) }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayInput {
    /// Replay to this configuration only (and let its script decide again
    /// when its newest delivery was filtered or errored).
    configuration_id: Option<String>,
}

/// Send an event again, keeping its id
///
/// Creates a new delivery (status `pending`, no attempts, due at once) of
/// the event to each configuration whose newest delivery of it `succeeded`
/// or `failed`, reusing the body and headers its script decided then: the
/// script does not run again. The receiver gets the same event id
/// (`webhook-id`, `idempotency-key`) and can dedupe. Each new delivery names
/// the one it replays in `replay_of`. Configurations whose newest delivery
/// is `pending`, `filtered` or `script_error`, or that are now disabled or
/// deleted, are listed in `skipped` with the reason.
///
/// With `configuration_id`, only that configuration: the event must have a
/// delivery to it (`not_matched` otherwise), it must be enabled, and its
/// newest delivery must not be pending. When that delivery was `filtered`
/// or `script_error`, the configuration's current script decides again (it
/// may have been fixed); the new delivery is then sent, filtered or errored
/// accordingly.
///
/// Error codes: `not_found` (404: no such event or configuration in the
/// tenant), `not_matched` (422), `event_not_routed`,
/// `configuration_disabled`, `delivery_pending` (409).
#[utoipa::path(post, path = "/v1/events/{id}/replay", tag = "events", params(("id" = String, Path)),
    request_body(content = Option<ReplayInput>, description = "optional"),
    responses((status = 202, description = "queued", body = ReplayView)),
    security(("bearer" = ["configurations:write"])))]
async fn replay_event(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ReplayView>), ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let input: ReplayInput = parse_optional_json(&body_bytes(body).await?)?;
    let only = input.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?;
    Ok((StatusCode::ACCEPTED, Json(app.replay_event(&p.tenant, &raw, only.as_ref()).await?.into())))
}
