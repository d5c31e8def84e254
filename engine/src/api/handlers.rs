//! One function per endpoint: authenticate, check the scope, parse, call the
//! engine, shape the answer. Every data query is bound to the caller's tenant.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ApiError, Auth, Query, body_bytes, if_match, parse_json};
use crate::model::auth::{KeySecret, Scope};
use crate::model::event::{EventId, EventInput};
use crate::model::export::{ConfigInput, DEFAULT_ROTATION_GRACE, ExportConfig, MAX_ROTATION_GRACE, SigningSecret};
use crate::model::ids::{AttemptId, ConfigId, DeliveryId, IdError, KeyId, ScriptId, TenantId};
use crate::pipeline::replay::RecoverRequest;
use crate::sandbox::Params;
use crate::service::{
    App, AppError, AttemptFilter, ConfigRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, EventFilter, EventRecord, EventStatus,
    Ingested, NewKey, Page, PageRequest, StoreError, parse_spec,
};

type AppState = State<Arc<App>>;

fn id<T>(raw: &str, parse: fn(&str) -> Result<T, IdError>) -> Result<T, ApiError> {
    // A malformed id names nothing: answer as for an unknown one.
    parse(raw).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))
}

/// `limit` and `cursor`, shared by every list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    // Filters; each list reads those it knows and refuses the others.
    #[serde(rename = "type")]
    event_type: Option<String>,
    organization_unit: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    configuration_id: Option<String>,
    event_id: Option<String>,
    delivery_id: Option<String>,
}

impl ListQuery {
    fn page(&self) -> PageRequest {
        PageRequest { limit: self.limit.unwrap_or(50), cursor: self.cursor.clone() }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let given = [
            ("type", self.event_type.is_some()),
            ("organization_unit", self.organization_unit.is_some()),
            ("status", self.status.is_some()),
            ("since", self.since.is_some()),
            ("until", self.until.is_some()),
            ("configuration_id", self.configuration_id.is_some()),
            ("event_id", self.event_id.is_some()),
            ("delivery_id", self.delivery_id.is_some()),
        ];
        match given.iter().find(|(name, set)| *set && !allowed.contains(name)) {
            Some((name, _)) => Err(ApiError::bad_request("unknown_filter", format!("`{name}` is not a filter of this list"))),
            None => Ok(()),
        }
    }

    fn time(raw: &Option<String>, name: &str) -> Result<Option<i64>, ApiError> {
        raw.as_deref()
            .map(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .map_err(|_| ApiError::bad_request("invalid_filter", format!("`{name}` must be an RFC 3339 time")))
            })
            .transpose()
    }
}

fn page_json<T>(page: Page<T>, f: impl Fn(T) -> Value) -> Json<Value> {
    let mut out = json!({"items": page.items.into_iter().map(f).collect::<Vec<_>>()});
    if let Some(c) = page.next_cursor {
        out["next_cursor"] = c.into();
    }
    Json(out)
}

fn rfc3339_ms(ms: i64) -> Value {
    crate::model::timestamp::rfc3339::format(ms).into()
}

// Health and the document.

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): AppState) -> Result<&'static str, ApiError> {
    app.ready().await?;
    Ok("ready")
}

pub async fn openapi() -> Json<Value> {
    Json(super::openapi_document())
}

// Scripts.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    name: Option<String>,
}

pub async fn upload_script(
    State(app): AppState,
    auth: Auth,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
    let record = app.upload_script(&p.tenant, &name, &bytes).await?;
    Ok((StatusCode::CREATED, Json(json!(record))).into_response())
}

pub async fn list_scripts(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    q.only(&[])?;
    Ok(page_json(app.list_scripts(&p.tenant, &q.page()).await?, |s| json!(s)))
}

pub async fn get_script(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let record = app.get_script(&p.tenant, &id(&raw, ScriptId::parse)?).await.map_err(|_| ApiError::not_found("script"))?;
    Ok(Json(json!(record)))
}

pub async fn delete_script(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let p = auth.require(Scope::ScriptsWrite)?;
    app.delete_script(&p.tenant, &id(&raw, ScriptId::parse)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptTest {
    event: Box<serde_json::value::RawValue>,
    #[serde(default)]
    params: Params,
}

pub async fn test_script(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ScriptsWrite)?;
    let script_id = id(&raw, ScriptId::parse)?;
    let req: ScriptTest = parse_json(&body_bytes(body).await?)?;
    let event = EventInput::from_json(req.event.get())
        .and_then(|e| e.validate(|| EventId::parse("evt_test").expect("a valid literal id")))
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", e.to_string()))?;
    let script = app.script(&p.tenant, &script_id).await.map_err(|_| ApiError::not_found("script"))??;
    let outcome = app
        .run_script(script, Arc::new(req.params), event)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(json!(outcome)))
}

// Configurations.

fn config_json(record: &ConfigRecord, spec: &ExportConfig) -> Value {
    let mut v = spec.view();
    v["id"] = json!(record.id);
    v["version"] = json!(record.version);
    v["status"] = json!(if record.enabled { "enabled" } else { "disabled" });
    if let Some(reason) = &record.disabled_reason {
        v["disabled_reason"] = json!(reason);
    }
    v["created_at"] = rfc3339_ms(record.created_at);
    v["updated_at"] = rfc3339_ms(record.updated_at);
    v
}

fn with_etag(status: StatusCode, version: i64, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

pub async fn create_config(State(app): AppState, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let input: ConfigInput = parse_json(&body_bytes(body).await?)?;
    let (record, spec) = app.create_config(&p.tenant, input).await?;
    let mut body = config_json(&record, &spec);
    // Shown once: answers never carry it again.
    body["signing"]["secret"] = json!(spec.signing.secret.expose());
    Ok(with_etag(StatusCode::CREATED, record.version, body))
}

pub async fn list_configs(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    q.only(&[])?;
    let page = app.list_configs(&p.tenant, &q.page()).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in &page.items {
        items.push(config_json(record, &parse_spec(record)?));
    }
    let mut out = json!({"items": items});
    if let Some(c) = page.next_cursor {
        out["next_cursor"] = c.into();
    }
    Ok(Json(out))
}

pub async fn get_config(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let record = app.get_config(&p.tenant, &id(&raw, ConfigId::parse)?).await?;
    Ok(with_etag(StatusCode::OK, record.version, config_json(&record, &parse_spec(&record)?)))
}

pub async fn update_config(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let expected = if_match(&headers)?
        .ok_or_else(|| ApiError::new(StatusCode::PRECONDITION_REQUIRED, "if_match_required", "quote the version you read in `If-Match`"))?;
    let input: ConfigInput = parse_json(&body_bytes(body).await?)?;
    let (record, spec) = app.update_config(&p.tenant, &config_id, expected, input).await?;
    Ok(with_etag(StatusCode::OK, record.version, config_json(&record, &spec)))
}

async fn set_enabled(app: Arc<App>, auth: Auth, raw: String, headers: HeaderMap, enabled: bool) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let record = app.set_enabled(&p.tenant, &config_id, if_match(&headers)?, enabled).await?;
    Ok(with_etag(StatusCode::OK, record.version, config_json(&record, &parse_spec(&record)?)))
}

pub async fn enable_config(State(app): AppState, auth: Auth, Path(raw): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    set_enabled(app, auth, raw, headers, true).await
}

pub async fn disable_config(State(app): AppState, auth: Auth, Path(raw): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    set_enabled(app, auth, raw, headers, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestSendInput {
    /// The event to send, as posted to `/v1/events`; left out, one the
    /// configuration selects is made up.
    event: Option<Box<serde_json::value::RawValue>>,
}

/// Sends one event to the configuration now and answers with what happened;
/// nothing is stored.
pub async fn test_config(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let body = body_bytes(body).await?;
    let input: TestSendInput = if body.iter().all(u8::is_ascii_whitespace) { TestSendInput::default() } else { parse_json(&body)? };
    let event = match input.event {
        None => None,
        Some(raw) => Some(
            EventInput::from_json(raw.get())
                .and_then(|e| e.validate(|| EventId::parse("evt_test").expect("a valid literal id")))
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", e.to_string()))?,
        ),
    };
    let report = app.test_send(&p.tenant, &config_id, event).await?;
    // The event as sent, payload as posted (see `EventView`).
    let event = RawValue::from_string(String::from_utf8_lossy(&crate::pipeline::request::default_body(&report.event)).into_owned())
        .unwrap_or_else(|_| RawValue::NULL.to_owned());
    let decision = match &report.decision {
        None => {
            json!({"status": "not_selected", "reason": "the configuration's event types or organization units do not select this event"})
        }
        Some(d) => json!({
            "status": if d.status == DeliveryStatus::Pending { "deliver" } else { d.status.as_str() },
            "reason": d.reason,
            "error_kind": d.error_kind,
            "script_logs": d.script_logs.as_deref().and_then(|l| serde_json::from_str::<Value>(l).ok()),
        }),
    };
    let attempt = report.sent.as_ref().map(|sent| {
        json!({
            "succeeded": sent.succeeded,
            "method": "POST",
            "uri": sent.request.logged_uri,
            "request_headers": serde_json::from_str::<Value>(&crate::pipeline::request::logged_headers(&sent.request)).unwrap_or_default(),
            "request_body": String::from_utf8_lossy(&sent.request.body),
            "response_status": sent.status.map(|s| s.as_u16()),
            "response_body": sent.response_body.as_deref().map(String::from_utf8_lossy),
            "duration_ms": sent.duration_ms,
            "error": sent.error,
        })
    });
    #[derive(serde::Serialize)]
    struct Report {
        event: Box<RawValue>,
        decision: Value,
        attempt: Option<Value>,
    }
    Ok(Json(Report { event, decision, attempt }).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    /// Left out: a new one is generated.
    secret: Option<String>,
    /// How long the replaced secret keeps signing (default one day).
    grace_period_ms: Option<u64>,
}

/// Rotates the signing secret; the answer shows the new one, once.
pub async fn rotate_secret(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let body = body_bytes(body).await?;
    let input: RotateInput = if body.iter().all(u8::is_ascii_whitespace) { RotateInput::default() } else { parse_json(&body)? };
    let grace = match input.grace_period_ms {
        None => DEFAULT_ROTATION_GRACE,
        Some(ms) if Duration::from_millis(ms) <= MAX_ROTATION_GRACE => Duration::from_millis(ms),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_grace_period",
                format!("grace_period_ms is at most {}", MAX_ROTATION_GRACE.as_millis()),
            ));
        }
    };
    let secret = input.secret.as_deref().map(SigningSecret::parse).transpose().map_err(AppError::from)?;
    let (record, spec) = app.rotate_secret(&p.tenant, &config_id, if_match(&headers)?, secret, grace).await?;
    let mut body = config_json(&record, &spec);
    // Shown once, like at creation.
    body["signing"]["secret"] = json!(spec.signing.secret.expose());
    Ok(with_etag(StatusCode::OK, record.version, body))
}

pub async fn delete_config(State(app): AppState, auth: Auth, Path(raw): Path<String>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    app.delete_config(&p.tenant, &id(&raw, ConfigId::parse)?, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// Event types.

pub async fn list_event_types(State(app): AppState, auth: Auth) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    Ok(Json(json!({"items": app.list_event_types(&p.tenant).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventTypeInput {
    description: Option<String>,
}

pub async fn put_event_type(
    State(app): AppState,
    auth: Auth,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let name = crate::model::event::EventType::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event_type", e.to_string()))?;
    let input: EventTypeInput = parse_json(&body_bytes(body).await?)?;
    Ok(Json(json!(app.put_event_type(&p.tenant, name.as_str(), input.description.as_deref()).await?)))
}

// Events.

pub async fn ingest(State(app): AppState, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::EventsWrite)?;
    let body = body_bytes(body).await?;
    // Parsed as raw JSON down to each event, so that every payload keeps
    // the posted bytes (number spelling, key order) through to receivers.
    let raw: &RawValue = parse_json(&body)?;
    let (items, single): (Vec<&RawValue>, bool) = match raw.get().trim_start().as_bytes().first() {
        Some(b'[') => (parse_json(raw.get().as_bytes())?, false),
        Some(b'{') => (vec![raw], true),
        _ => return Err(ApiError::bad_request("invalid_request", "post one event object or an array of events")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "the batch holds no events"));
    }
    if items.len() > app.limits().max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("at most {} events per request", app.limits().max_batch),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if single { String::new() } else { format!("event {i}: ") };
        let input: EventInput = serde_json::from_str(item.get()).map_err(|e| {
            let code = if e.to_string().starts_with("unknown field") { "unknown_field" } else { "invalid_event" };
            ApiError::new(StatusCode::BAD_REQUEST, code, format!("{at}{e}"))
        })?;
        let event = input
            .validate(|| EventId::parse(&format!("evt_{}", uuid::Uuid::now_v7().simple())).expect("a generated id is valid"))
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", format!("{at}{e}")))?;
        events.push(event);
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let results = app.ingest(&p.tenant, events).await?;
    let out: Vec<Value> = ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| json!({"id": id, "status": if matches!(r, Ingested::Stored { .. }) { "accepted" } else { "duplicate" }}))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({"events": out}))).into_response())
}

/// An event as the API shows it: the posted shape, the payload as posted
/// (a `Value` would respell numbers and reorder keys).
#[derive(serde::Serialize)]
struct EventView<'a> {
    #[serde(flatten)]
    event: crate::model::event::Envelope<'a>,
    received_at: String,
    routed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<&'a [DeliveryRecord]>,
}

fn event_view(e: &EventRecord) -> EventView<'_> {
    EventView {
        event: e.event.envelope(),
        received_at: crate::model::timestamp::rfc3339::format(e.received_at),
        routed: e.routed,
        deliveries: None,
    }
}

pub async fn list_events(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    q.only(&["type", "organization_unit", "status", "since", "until"])?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<EventStatus>(json!(s))
                .map_err(|_| ApiError::bad_request("invalid_filter", "status is one of pending, done, failed"))?,
        ),
    };
    let filter = EventFilter {
        event_type: q.event_type.clone(),
        organization_unit: q.organization_unit.as_ref().map(|ou| ou.trim_matches('/').to_owned()),
        received_after: ListQuery::time(&q.since, "since")?,
        received_before: ListQuery::time(&q.until, "until")?,
        status,
    };
    let mut page = q.page();
    if page.cursor.as_ref().is_some_and(|c| c.parse::<i64>().is_err()) {
        return Err(ApiError::bad_request("invalid_cursor", "not a cursor from this list"));
    }
    page.limit = page.limit.max(1);
    let page = app.list_events(&p.tenant, &filter, &page).await?;
    let items: Vec<EventView<'_>> = page.items.iter().map(event_view).collect();
    Ok(Json(Page { items, next_cursor: page.next_cursor }).into_response())
}

pub async fn get_event(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let (event, deliveries) = app.get_event(&p.tenant, &raw).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("event"),
        e => e.into(),
    })?;
    Ok(Json(EventView { deliveries: Some(&deliveries), ..event_view(&event) }).into_response())
}

// Replay and recovery.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayInput {
    /// Replay to this configuration only (and let its script decide again
    /// when its newest delivery was filtered or errored).
    configuration_id: Option<String>,
}

/// Sends an event again, with its id; the body is optional.
pub async fn replay_event(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let body = body_bytes(body).await?;
    let input: ReplayInput = if body.iter().all(u8::is_ascii_whitespace) { ReplayInput::default() } else { parse_json(&body)? };
    let only = input.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?;
    let replayed = app.replay_event(&p.tenant, &raw, only.as_ref()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(replayed))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverInput {
    since: String,
    /// Default: now.
    until: Option<String>,
    #[serde(default)]
    include_disabled_period: bool,
}

/// Re-queues a configuration's failed deliveries of a window of events
/// (and, on request, routes the events it missed while disabled).
pub async fn recover_config(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let input: RecoverInput = parse_json(&body_bytes(body).await?)?;
    let time = |raw: &str, name: &str| {
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|_| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_window", format!("`{name}` must be an RFC 3339 time")))
    };
    let request = RecoverRequest {
        since: time(&input.since, "since")?,
        until: match &input.until {
            Some(until) => time(until, "until")?,
            None => crate::model::timestamp::now_ms(),
        },
        include_disabled_period: input.include_disabled_period,
    };
    let recovered = app.recover(&p.tenant, &config_id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(recovered))).into_response())
}

// Deliveries and attempts.

pub async fn list_deliveries(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    q.only(&["configuration_id", "event_id", "status", "since", "until"])?;
    let filter = DeliveryFilter {
        configuration_id: q.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?,
        event_id: q.event_id.clone(),
        status: q
            .status
            .as_deref()
            .map(|s| {
                DeliveryStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request("invalid_filter", "status is one of pending, filtered, script_error, succeeded, failed")
                })
            })
            .transpose()?,
        created_after: ListQuery::time(&q.since, "since")?,
        created_before: ListQuery::time(&q.until, "until")?,
    };
    Ok(page_json(app.list_deliveries(&p.tenant, &filter, &q.page()).await?, |d| json!(d)))
}

pub async fn get_delivery(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let d = app.get_delivery(&p.tenant, &id(&raw, DeliveryId::parse)?).await?;
    let mut v = json!(d);
    if let Some(body) = &d.body {
        v["body"] = serde_json::from_str(body).unwrap_or(Value::Null);
    }
    if let Some(headers) = &d.headers {
        v["headers"] = serde_json::from_str(headers).unwrap_or(Value::Null);
    }
    Ok(Json(v))
}

pub async fn list_attempts(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    q.only(&["configuration_id", "delivery_id", "since", "until"])?;
    let filter = AttemptFilter {
        delivery_id: q.delivery_id.as_deref().map(|d| id(d, DeliveryId::parse)).transpose()?,
        configuration_id: q.configuration_id.as_deref().map(|c| id(c, ConfigId::parse)).transpose()?,
        started_after: ListQuery::time(&q.since, "since")?,
        started_before: ListQuery::time(&q.until, "until")?,
    };
    Ok(page_json(app.list_attempts(&p.tenant, &filter, &q.page()).await?, |a| json!(a)))
}

pub async fn get_attempt(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    Ok(Json(json!(app.get_attempt(&p.tenant, &id(&raw, AttemptId::parse)?).await?)))
}

// Keys and tenants.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    name: String,
    scopes: Vec<Scope>,
}

async fn make_key(app: &App, tenant: TenantId, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
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
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("tenant"),
            e => e.into(),
        })?;
    let mut v = json!(record);
    // The only time the secret is shown.
    v["secret"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn create_key(State(app): AppState, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let p = auth.require(Scope::Admin)?;
    make_key(&app, p.tenant.clone(), body).await
}

pub async fn list_keys(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::Admin)?;
    q.only(&[])?;
    Ok(page_json(app.list_keys(&p.tenant, &q.page()).await?, |k| json!(k)))
}

pub async fn revoke_key(State(app): AppState, auth: Auth, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = auth.require(Scope::Admin)?;
    Ok(Json(json!(app.revoke_key(&p.tenant, &id(&raw, KeyId::parse)?).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantInput {
    name: String,
    monthly_quota: Option<i64>,
}

/// Tenants are managed by the operator's admin keys only: a tenant's own
/// admin must not reach other tenants.
fn require_operator<'a>(app: &App, auth: &'a Auth) -> Result<&'a crate::model::auth::Principal, ApiError> {
    let p = auth.require(Scope::Admin)?;
    if !app.is_operator(&p.tenant) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the operator's admin keys manage tenants"));
    }
    Ok(p)
}

pub async fn create_tenant(State(app): AppState, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    require_operator(&app, &auth)?;
    let input: TenantInput = parse_json(&body_bytes(body).await?)?;
    if input.name.trim().is_empty() || input.name.len() > 100 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", "a tenant name has 1 to 100 characters"));
    }
    if input.monthly_quota.is_some_and(|q| q < 0) {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_quota", "the quota is a number of events, 0 or more"));
    }
    let record = app.create_tenant(input.name.trim(), input.monthly_quota).await?;
    Ok((StatusCode::CREATED, Json(json!(record))).into_response())
}

pub async fn list_tenants(State(app): AppState, auth: Auth, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    require_operator(&app, &auth)?;
    q.only(&[])?;
    Ok(page_json(app.list_tenants(&q.page()).await?, |t| json!(t)))
}

pub async fn create_tenant_key(
    State(app): AppState,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_operator(&app, &auth)?;
    make_key(&app, id(&raw, TenantId::parse)?, body).await
}
