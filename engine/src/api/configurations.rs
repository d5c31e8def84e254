//! `/v1/configurations`: create, read, replace, delete, enable and disable
//! export configurations, rotate their signing secret, send a test event,
//! and recover a window of failures. Every change after creation is guarded
//! by the version the caller read (`If-Match`, answered in `ETag`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiError;
use super::doc::ConfigurationInput;
use super::extract::{Auth, PageQuery, Query, body_bytes, id, if_match, parse_json, parse_optional_json, unix_ms};
use super::views::{ConfigScriptView, ConfigStatsView, ConfigurationView, Page, PreviewLineView, RecoverView, TestSendView};
use crate::model::auth::Scope;
use crate::model::export::{ConfigInput, DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE, SigningSecret};
use crate::model::ids::{ConfigId, ScriptId};
use crate::pipeline::preview::Window;
use crate::pipeline::replay::RecoverRequest;
use crate::service::{App, AppError, Candidate, parse_spec};

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_config, list_configs))
        .routes(routes!(get_config, update_config, delete_config))
        .routes(routes!(enable_config))
        .routes(routes!(disable_config))
        .routes(routes!(rotate_secret))
        .routes(routes!(test_config))
        .routes(routes!(recover_config))
        .routes(routes!(config_scripts))
        .routes(routes!(config_stats))
        .routes(routes!(preview_config))
}

/// A configuration's answer, with its version as the `ETag`.
struct Versioned(StatusCode, ConfigurationView);

impl IntoResponse for Versioned {
    fn into_response(self) -> Response {
        let Versioned(status, view) = self;
        let etag = HeaderValue::from_str(&format!("\"{}\"", view.version));
        let mut r = (status, Json(view)).into_response();
        if let Ok(v) = etag {
            r.headers_mut().insert(header::ETAG, v);
        }
        r
    }
}

/// Create a configuration (disabled)
///
/// Every field is validated on save. Secrets (tokens, private keys, PKCS#12
/// passwords, the signing secret) are never shown again, nor are the values
/// of credential-named headers and query parameters (the endpoint's own
/// query included), shown as `***`. Credentials in the endpoint's userinfo
/// are refused. The signing secret is generated when not given and shown
/// once in this answer.
#[utoipa::path(post, path = "/v1/configurations", tag = "configurations",
    request_body = ConfigurationInput,
    responses((status = 201, body = ConfigurationView, headers(("etag" = String, description = "the version")))),
    security(("bearer" = ["configurations:write"])))]
async fn create_config(State(app): State<Arc<App>>, auth: Auth, body: Result<Bytes, BytesRejection>) -> Result<Versioned, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let input: ConfigInput = parse_json(&body_bytes(body).await?)?;
    let (record, spec) = app.create_config(p, input).await?;
    // Shown once: answers never carry it again.
    Ok(Versioned(StatusCode::CREATED, ConfigurationView::new(&record, &spec).with_secret(&spec)))
}

/// List configurations
#[utoipa::path(get, path = "/v1/configurations", tag = "configurations", params(PageQuery),
    responses((status = 200, body = Page<ConfigurationView>)),
    security(("bearer" = ["configurations:read"])))]
async fn list_configs(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ConfigurationView>>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let page = app.list_configs(&p.tenant, &q.page()).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in &page.items {
        items.push(ConfigurationView::new(record, &parse_spec(record)?));
    }
    Ok(Json(Page { items, next_cursor: page.next_cursor }))
}

/// Get a configuration (ETag: its version)
#[utoipa::path(get, path = "/v1/configurations/{id}", tag = "configurations", params(("id" = String, Path)),
    responses((status = 200, body = ConfigurationView, headers(("etag" = String, description = "the version")))),
    security(("bearer" = ["configurations:read"])))]
async fn get_config(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Versioned, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let record = app.get_config(&p.tenant, &id(&raw, ConfigId::parse)?).await?;
    Ok(Versioned(StatusCode::OK, ConfigurationView::new(&record, &parse_spec(&record)?)))
}

/// Replace a configuration (If-Match: version)
///
/// Validated as on creation. A secret left out or sent back as `***` keeps
/// the stored one; `headers` or `query` left out keep all stored ones.
///
/// Error codes: `if_match_required` (428), `stale_version` (409), and the
/// validation codes of creation (422).
#[utoipa::path(put, path = "/v1/configurations/{id}", tag = "configurations",
    params(("id" = String, Path), ("if-match" = String, Header, description = "the version read, e.g. \"3\"")),
    request_body = ConfigurationInput,
    responses((status = 200, body = ConfigurationView, headers(("etag" = String, description = "the new version")))),
    security(("bearer" = ["configurations:write"])))]
async fn update_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Versioned, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let expected = if_match(&headers)?
        .ok_or_else(|| ApiError::new(StatusCode::PRECONDITION_REQUIRED, "if_match_required", "quote the version you read in `If-Match`"))?;
    let input: ConfigInput = parse_json(&body_bytes(body).await?)?;
    let (record, spec) = app.update_config(p, &config_id, expected, input).await?;
    Ok(Versioned(StatusCode::OK, ConfigurationView::new(&record, &spec)))
}

/// Delete a configuration (If-Match optional)
#[utoipa::path(delete, path = "/v1/configurations/{id}", tag = "configurations",
    params(("id" = String, Path), ("if-match" = Option<String>, Header)),
    responses((status = 204, description = "deleted")),
    security(("bearer" = ["configurations:write"])))]
async fn delete_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    app.delete_config(&p.tenant, &id(&raw, ConfigId::parse)?, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(app: Arc<App>, auth: Auth, raw: String, headers: HeaderMap, enabled: bool) -> Result<Versioned, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let record = app.set_enabled(&p.tenant, &config_id, if_match(&headers)?, enabled).await?;
    Ok(Versioned(StatusCode::OK, ConfigurationView::new(&record, &parse_spec(&record)?)))
}

/// Enable a configuration
///
/// Events ingested from now on are routed to it. If-Match optional.
#[utoipa::path(post, path = "/v1/configurations/{id}/enable", tag = "configurations",
    params(("id" = String, Path), ("if-match" = Option<String>, Header)),
    responses((status = 200, body = ConfigurationView)),
    security(("bearer" = ["configurations:write"])))]
async fn enable_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Versioned, ApiError> {
    set_enabled(app, auth, raw, headers, true).await
}

/// Disable a configuration
///
/// Its pending deliveries wait; events ingested meanwhile are not routed to
/// it (see `recover`). If-Match optional.
#[utoipa::path(post, path = "/v1/configurations/{id}/disable", tag = "configurations",
    params(("id" = String, Path), ("if-match" = Option<String>, Header)),
    responses((status = 200, body = ConfigurationView)),
    security(("bearer" = ["configurations:write"])))]
async fn disable_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Versioned, ApiError> {
    set_enabled(app, auth, raw, headers, false).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct TestSendInput {
    /// The event to send, as posted to `/v1/events`; left out, one the
    /// configuration selects is made up.
    #[schema(value_type = Option<Object>)]
    event: Option<Box<serde_json::value::RawValue>>,
}

/// Send one event through the configuration now
///
/// Sends one event to the configuration now, enabled or not, through its
/// script: the given one, or one made up that it selects (its first event
/// type, `order.*` giving `order.test`; its first included organization
/// unit). Stores nothing. `decision.status` is `deliver`, `filtered`,
/// `script_error` or `not_selected`; `attempt` is null unless a request was
/// sent.
#[utoipa::path(post, path = "/v1/configurations/{id}/test", tag = "configurations", params(("id" = String, Path)),
    request_body(content = Option<TestSendInput>, description = "optional"),
    responses((status = 200, body = TestSendView)),
    security(("bearer" = ["configurations:write"])))]
async fn test_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TestSendView>, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let input: TestSendInput = parse_optional_json(&body_bytes(body).await?)?;
    let event = input.event.map(|raw| super::scripts::sample_event(raw.get())).transpose()?;
    Ok(Json(app.test_send(&p.tenant, &config_id, event).await?.into()))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    /// `whsec_` and base64 of 24 to 64 bytes; left out, one is generated.
    #[schema(pattern = "^whsec_")]
    secret: Option<String>,
    /// How long the replaced secret keeps signing (default one day, at most seven).
    #[schema(maximum = 604_800_000)]
    grace_period_ms: Option<u64>,
}

/// Rotate the signing secret
///
/// Makes `secret` (or a generated one) the signing secret and shows it once
/// in the answer (`signing.secret`). The replaced secret keeps signing, as a
/// second `v1,` signature, until `signing.previous_secret_expires_at`.
/// If-Match optional.
#[utoipa::path(post, path = "/v1/configurations/{id}/rotate-secret", tag = "configurations",
    params(("id" = String, Path), ("if-match" = Option<String>, Header)),
    request_body(content = Option<RotateInput>, description = "optional"),
    responses((status = 200, body = ConfigurationView)),
    security(("bearer" = ["configurations:write"])))]
async fn rotate_secret(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Versioned, ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let input: RotateInput = parse_optional_json(&body_bytes(body).await?)?;
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
    // Shown once, like at creation.
    Ok(Versioned(StatusCode::OK, ConfigurationView::new(&record, &spec).with_secret(&spec)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoverInput {
    #[schema(format = DateTime)]
    since: String,
    /// Default: now.
    #[schema(format = DateTime)]
    until: Option<String>,
    /// Also route the events that arrived while the configuration was disabled.
    #[serde(default)]
    include_disabled_period: bool,
}

/// Re-queue failed deliveries of a time window (and events missed while disabled)
///
/// Works on the events the tenant received from `since` (inclusive) to
/// `until` (exclusive, default now). Each event whose newest delivery to
/// this configuration `failed` is replayed as by `POST
/// /v1/events/{id}/replay` (recorded decision, same event id, `replay_of`).
/// With `include_disabled_period`, events that have no delivery to it at all
/// (they arrived while it was disabled) and that it selects now (event
/// types, organization units) are routed to it: its script decides as on
/// ingest, and filtered or errored decisions are recorded like any other.
/// Events from before the configuration was created are left alone.
///
/// The configuration must be enabled. One call adds at most
/// `max_deliveries` (10,000) deliveries; `truncated` says more remained:
/// call again with the same window, what was re-queued no longer qualifies.
///
/// Error codes: `not_found` (404), `configuration_disabled` (409),
/// `invalid_window` (422: not RFC 3339, or `since` not before `until`).
#[utoipa::path(post, path = "/v1/configurations/{id}/recover", tag = "configurations", params(("id" = String, Path)),
    request_body = RecoverInput,
    responses((status = 202, description = "queued", body = RecoverView)),
    security(("bearer" = ["configurations:write"])))]
async fn recover_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RecoverView>), ApiError> {
    let p = auth.require(Scope::ConfigurationsWrite)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let input: RecoverInput = parse_json(&body_bytes(body).await?)?;
    let time = |raw: &str, name: &str| {
        unix_ms(raw)
            .ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_window", format!("`{name}` must be an RFC 3339 time")))
    };
    let request = RecoverRequest {
        since: time(&input.since, "since")?,
        until: match &input.until {
            Some(until) => time(until, "until")?,
            None => crate::model::timestamp::now_ms(),
        },
        include_disabled_period: input.include_disabled_period,
    };
    Ok((StatusCode::ACCEPTED, Json(app.recover(&p.tenant, &config_id, request).await?.into())))
}

/// A configuration's script history, newest first
///
/// One entry per change of the script version or its parameters, with the
/// configuration version it took effect at and the key that made it. A
/// delivery decided at configuration version v ran the newest entry at or
/// before v (what `GET /v1/deliveries/{id}/explain` runs again). Kept after
/// the configuration is deleted, while its deliveries are.
#[utoipa::path(get, path = "/v1/configurations/{id}/scripts", tag = "configurations", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ConfigScriptView>)),
    security(("bearer" = ["configurations:read"])))]
async fn config_scripts(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<Vec<ConfigScriptView>>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    let history = app.config_scripts(&p.tenant, &id(&raw, ConfigId::parse)?).await?;
    Ok(Json(history.into_iter().map(ConfigScriptView::from).collect()))
}

/// How a configuration is doing
///
/// Its deliveries made in the last hour and day by status (counted up to
/// 100,000 each; `capped` beyond), the success rate among those settled,
/// when its oldest pending delivery was made, and whether its receiver is
/// failing (failed attempts in a row, across nodes) or taken to be down
/// (the breaker holds deliveries back and one probe at a time goes out).
#[utoipa::path(get, path = "/v1/configurations/{id}/stats", tag = "configurations", params(("id" = String, Path)),
    responses((status = 200, body = ConfigStatsView)),
    security(("bearer" = ["configurations:read"])))]
async fn config_stats(State(app): State<Arc<App>>, auth: Auth, Path(raw): Path<String>) -> Result<Json<ConfigStatsView>, ApiError> {
    let p = auth.require(Scope::ConfigurationsRead)?;
    Ok(Json(ConfigStatsView::new(app.config_stats(&p.tenant, &id(&raw, ConfigId::parse)?).await?)))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct PreviewCandidate {
    /// A script version (id) of the tenant's; default: the configured one.
    #[schema(value_type = Option<String>)]
    script_id: Option<String>,
    /// Parameters; default: the configured ones.
    params: Option<std::collections::BTreeMap<String, String>>,
}

/// One of `last`, `since`/`until` or `event_ids`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct PreviewWindow {
    /// The last N events the configuration selected.
    last: Option<u64>,
    /// Events received at or after (RFC 3339) that the configuration selects now.
    since: Option<String>,
    /// Events received before (RFC 3339).
    until: Option<String>,
    /// These events, by id.
    event_ids: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    /// What to run instead of the configured script; what is left out stays.
    #[serde(default)]
    candidate: PreviewCandidate,
    /// Which stored events (default: the last 100 the configuration selected).
    #[serde(default)]
    window: PreviewWindow,
}

/// Events a preview runs on when the request names no window.
const DEFAULT_PREVIEW: u64 = 100;

/// Preview a candidate script over stored events
///
/// Runs the configured script and the candidate (another script version,
/// other parameters, or both) on each stored event of the window, sends
/// nothing and stores nothing, and streams one JSON line per event
/// (`application/x-ndjson`): both decisions with their fuel, how the
/// candidate's differs (`unchanged`, `changed_request`, `newly_delivered`,
/// `newly_skipped`, `new_error`; `not_stored` for a named event that is not
/// stored, never received or purged), where the request bodies differ (JSON
/// Pointers) and the headers if they do; then a last line
/// `{"summary": {…}}`, or `{"error": {…}}` if it had to stop. Previews run
/// below live routing in priority, one per tenant at a time.
///
/// Error codes: `not_found` (404), `preview_running` (409),
/// `invalid_window`, `window_too_large`, `invalid_script_params`,
/// `unknown_script` (422).
#[utoipa::path(post, path = "/v1/configurations/{id}/preview", tag = "configurations", params(("id" = String, Path)),
    request_body = PreviewRequest,
    responses((status = 200, content_type = "application/x-ndjson", body = PreviewLineView,
        description = "one line per event, then the summary")),
    security(("bearer" = ["logs:read"])))]
async fn preview_config(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = auth.require(Scope::LogsRead)?;
    let config_id = id(&raw, ConfigId::parse)?;
    let req: PreviewRequest = parse_optional_json(&body_bytes(body).await?)?;
    let window = preview_window(req.window, app.limits().preview_max_events)?;
    let script = req.candidate.script_id.as_deref().map(|s| id(s, ScriptId::parse)).transpose()?;
    if let Some(params) = &req.candidate.params {
        crate::model::export::check_script_params(params, "candidate.params").map_err(AppError::from)?;
    }
    let mut items = app.preview(&p.tenant, &config_id, Candidate { script, params: req.candidate.params }, window).await?;
    let (lines, stream) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        while let Some(item) = items.recv().await {
            let mut line = serde_json::to_vec(&PreviewLineView::from(item)).unwrap_or_else(|_| b"{}".to_vec());
            line.push(b'\n');
            if lines.send(Ok(Bytes::from(line))).await.is_err() {
                return; // the client went away: dropping `items` stops the preview
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(stream));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn preview_window(w: PreviewWindow, max: usize) -> Result<Window, ApiError> {
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_window", m.to_owned());
    let too_large =
        || ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "window_too_large", format!("a preview runs on at most {max} events"));
    let ranged = w.since.is_some() || w.until.is_some();
    match (w.last, ranged, w.event_ids) {
        (None, false, None) => Ok(Window::Last(DEFAULT_PREVIEW.min(max as u64) as usize)),
        (Some(0), false, None) => Err(invalid("`last` is at least 1")),
        (Some(n), false, None) if n > max as u64 => Err(too_large()),
        (Some(n), false, None) => Ok(Window::Last(n as usize)),
        (None, true, None) => {
            let time = |raw: &Option<String>, name: &str| {
                raw.as_deref().map(|t| unix_ms(t).ok_or_else(|| invalid(&format!("`{name}` is an RFC 3339 time")))).transpose()
            };
            let (since, until) = (time(&w.since, "since")?, time(&w.until, "until")?);
            if since.zip(until).is_some_and(|(s, u)| s >= u) {
                return Err(invalid("`since` is before `until`"));
            }
            Ok(Window::Received { since, until })
        }
        (None, false, Some(ids)) if ids.is_empty() => Err(invalid("`event_ids` names at least one event")),
        (None, false, Some(ids)) if ids.len() > max => Err(too_large()),
        (None, false, Some(ids)) => Ok(Window::Events(ids)),
        _ => Err(invalid("give one of `last`, `since`/`until` or `event_ids`")),
    }
}
