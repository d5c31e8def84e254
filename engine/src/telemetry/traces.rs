//! Traces: one per event, exported over OTLP/HTTP (JSON) when
//! `otlp_endpoint` is set; nothing is built or sent otherwise. An event's
//! spans: `ingest` (the root: the event stored), `route` (matched against
//! its tenant's configurations), a `script` span for each script run on it,
//! and an `attempt` span for each delivery attempt.
//!
//! The ids are the event's own: the trace id and the `ingest` and `route`
//! span ids are derived from (tenant, event id), so whichever node routes,
//! retries or replays the event, before or after a restart, continues the
//! same trace without storing a context. Log lines about an event carry
//! [`trace_id`] beside its id. Like the rest of `telemetry`, this module
//! imports nothing of sluice.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};

static TRACING: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// How long finished spans wait to be sent together.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// Starts exporting spans to the OTLP/HTTP collector at `endpoint` (its
/// base URL: `/v1/traces` is added). Spans are sent by the SDK's own
/// thread, through `runtime`'s HTTP client.
pub fn install(endpoint: &str, runtime: tokio::runtime::Handle) -> Result<(), String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_http_client(Client { http, runtime })
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_id_generator(EventIds(RandomIdGenerator::default()))
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("sluice").build())
        .build();
    let tracer = provider.tracer("sluice");
    TRACING.set((provider, tracer)).map_err(|_| "traces are already exported".to_owned())
}

/// Sends the spans not yet sent (at shutdown).
pub fn flush() {
    if let Some((provider, _)) = TRACING.get() {
        let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// The id of the event's trace (32 hex digits), for log lines.
pub fn trace_id(tenant: &str, event_id: &str) -> String {
    EventTrace::of(tenant, event_id).trace.to_string()
}

/// An event's trace id and the ids of its `ingest` and `route` spans.
#[derive(Debug, Clone, Copy)]
struct EventTrace {
    trace: TraceId,
    ingest: SpanId,
    route: SpanId,
}

impl EventTrace {
    fn of(tenant: &str, event_id: &str) -> Self {
        let h = Sha256::new().chain_update(tenant).chain_update([0]).chain_update(event_id).finalize();
        let bytes = |range: std::ops::Range<usize>| -> [u8; 8] { h[range].try_into().unwrap_or_default() };
        let (high, low) = (bytes(0..8), bytes(8..16));
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&high);
        trace[8..].copy_from_slice(&low);
        Self { trace: TraceId::from_bytes(trace), ingest: SpanId::from_bytes(bytes(16..24)), route: SpanId::from_bytes(bytes(24..32)) }
    }

    /// A context whose parent is `span` of this trace.
    fn under(&self, span: SpanId) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(self.trace, span, TraceFlags::SAMPLED, true, TraceState::default()))
    }
}

thread_local! {
    /// The ids the next span built on this thread takes (the event's own),
    /// instead of random ones.
    static NEXT_IDS: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Random ids, except where a span of an event's own is being built.
#[derive(Debug)]
struct EventIds(RandomIdGenerator);

impl IdGenerator for EventIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .with(|n| {
                let (trace, span) = n.get();
                n.set((None, span));
                trace
            })
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .with(|n| {
                let (trace, span) = n.get();
                n.set((trace, None));
                span
            })
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// Builds and ends one span, from `started` to `ended`.
fn span(
    tracer: &SdkTracer,
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    ids: (Option<TraceId>, Option<SpanId>),
    attributes: Vec<KeyValue>,
    (started, ended): (SystemTime, SystemTime),
) {
    NEXT_IDS.with(|n| n.set(ids));
    let builder = SpanBuilder::from_name(name).with_kind(kind).with_start_time(started).with_attributes(attributes);
    let mut span = tracer.build_with_context(builder, parent);
    NEXT_IDS.with(|n| n.set((None, None)));
    span.end_with_timestamp(ended.max(started));
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACING.get().map(|(_, tracer)| tracer)
}

/// The event stored: the root of its trace.
pub fn ingest(tenant: &str, event_id: &str, event_type: &str, during: (SystemTime, SystemTime)) {
    let Some(tracer) = tracer() else { return };
    let t = EventTrace::of(tenant, event_id);
    let attributes = vec![
        KeyValue::new("sluice.tenant", tenant.to_owned()),
        KeyValue::new("sluice.event_id", event_id.to_owned()),
        KeyValue::new("sluice.event_type", event_type.to_owned()),
    ];
    span(tracer, "ingest", SpanKind::Server, &Context::new(), (Some(t.trace), Some(t.ingest)), attributes, during);
}

/// The event matched against its tenant's configurations: `selected` took it.
pub fn route(tenant: &str, event_id: &str, selected: usize, during: (SystemTime, SystemTime)) {
    let Some(tracer) = tracer() else { return };
    let t = EventTrace::of(tenant, event_id);
    let attributes = vec![KeyValue::new("sluice.event_id", event_id.to_owned()), KeyValue::new("sluice.configurations", selected as i64)];
    span(tracer, "route", SpanKind::Internal, &t.under(t.ingest), (None, Some(t.route)), attributes, during);
}

/// A configuration's script run on the event, and what it decided.
pub fn script(tenant: &str, event_id: &str, configuration: &str, decision: &'static str, fuel: u64, during: (SystemTime, SystemTime)) {
    let Some(tracer) = tracer() else { return };
    let t = EventTrace::of(tenant, event_id);
    let attributes = vec![
        KeyValue::new("sluice.configuration_id", configuration.to_owned()),
        KeyValue::new("sluice.decision", decision),
        KeyValue::new("sluice.fuel", fuel as i64),
    ];
    span(tracer, "script", SpanKind::Internal, &t.under(t.route), (None, None), attributes, during);
}

/// One delivery attempt of the event.
pub struct Attempt<'a> {
    pub tenant: &'a str,
    pub event_id: &'a str,
    pub delivery_id: &'a str,
    pub configuration: &'a str,
    pub number: u32,
    pub status: Option<u16>,
    pub outcome: &'static str,
    /// Unix ms, and how long it took.
    pub started_at: i64,
    pub duration_ms: i64,
}

pub fn attempt(a: &Attempt<'_>) {
    let Some(tracer) = tracer() else { return };
    let t = EventTrace::of(a.tenant, a.event_id);
    let mut attributes = vec![
        KeyValue::new("sluice.delivery_id", a.delivery_id.to_owned()),
        KeyValue::new("sluice.configuration_id", a.configuration.to_owned()),
        KeyValue::new("sluice.attempt", i64::from(a.number)),
        KeyValue::new("sluice.outcome", a.outcome),
    ];
    if let Some(status) = a.status {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
    }
    let started = UNIX_EPOCH + Duration::from_millis(a.started_at.max(0) as u64);
    let ended = started + Duration::from_millis(a.duration_ms.max(0) as u64);
    span(tracer, "attempt", SpanKind::Client, &t.under(t.route), (None, None), attributes, (started, ended));
}

/// The exporter's HTTP client: the engine's reqwest, run on the engine's
/// runtime (the SDK's export thread has none of its own).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let response = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let (status, headers) = (response.status(), response.headers().clone());
            Ok::<_, reqwest::Error>((status, headers, response.bytes().await?))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_ids_are_its_own_and_differ_between_tenants() {
        let a = EventTrace::of("ten_1", "evt_1");
        let again = EventTrace::of("ten_1", "evt_1");
        assert_eq!((a.trace, a.ingest, a.route), (again.trace, again.ingest, again.route));
        assert_ne!(a.trace, EventTrace::of("ten_2", "evt_1").trace);
        assert_ne!(a.trace, EventTrace::of("ten_1", "evt_2").trace);
        assert_ne!(a.ingest, a.route);
        assert_eq!(trace_id("ten_1", "evt_1").len(), 32);
    }
}
