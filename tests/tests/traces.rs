//! Traces over OTLP/HTTP: a collector of the test's own (an HTTP server
//! reading the OTLP JSON encoding) sees one trace per event, its `ingest`
//! root, the `route` beneath it, and the script runs and every attempt
//! beneath the route, each carrying the event's or delivery's id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, Value>,
}

/// A minimal OTLP/HTTP collector: every span posted to `/v1/traces`.
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    url: String,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
                    let body: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    let mut kept = kept.lock().expect("collector lock");
                    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            for s in scope["spans"].as_array().into_iter().flatten() {
                                let attributes = s["attributes"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .map(|a| {
                                        let v = &a["value"];
                                        let value = v.get("stringValue").or_else(|| v.get("intValue")).cloned().unwrap_or(Value::Null);
                                        (a["key"].as_str().unwrap_or_default().to_owned(), value)
                                    })
                                    .collect();
                                kept.push(Span {
                                    trace: s["traceId"].as_str().unwrap_or_default().to_lowercase(),
                                    id: s["spanId"].as_str().unwrap_or_default().to_lowercase(),
                                    parent: s["parentSpanId"].as_str().unwrap_or_default().to_lowercase(),
                                    name: s["name"].as_str().unwrap_or_default().to_owned(),
                                    attributes,
                                });
                            }
                        }
                    }
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { spans, url }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("collector lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_has_one_trace_linking_ingest_routing_scripts_and_attempts() {
    let collector = Collector::start().await;
    let engine = Engine::start_with(&[("SLUICE_OTLP_ENDPOINT", &collector.url)]).await;
    let api = engine.admin();
    let ok = Receiver::start().await;
    let failing = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let script = api.upload_script("paid-orders").await;
    let large = api
        .enabled_config(json!({"name": "large", "endpoint": ok.url, "event_types": ["order.paid"], "script": {"id": script, "params": {"min_amount": "100"}}}))
        .await;
    let down = api
        .enabled_config(json!({
            "name": "down",
            "endpoint": failing.url,
            "event_types": ["order.paid"],
            "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100},
        }))
        .await;
    // "big" is delivered by "large" (1 attempt) and fails twice at "down";
    // "small" is skipped by the script and fails twice at "down".
    api.ingest(&[
        event_body("big", "order.paid", "emea", json!({"amount": 150})),
        event_body("small", "order.paid", "emea", json!({"amount": 50})),
    ])
    .await;
    api.wait_for("/v1/events?status=pending", |page| page["items"].as_array().is_some_and(Vec::is_empty)).await;

    let expected_attempts = [("big", 3), ("small", 2)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans();
        let attempts = spans.iter().filter(|s| s.name == "attempt").count();
        if attempts >= 5 && spans.iter().filter(|s| s.name == "ingest").count() >= 2 {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "the collector has {} spans: {spans:#?}", spans.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The two posted events' traces (a notice, were one stored, would be
    // an event with a trace of its own).
    let posted: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "ingest" && ["big", "small"].iter().any(|e| s.attributes["sluice.event_id"] == *e))
        .map(|s| s.trace.as_str())
        .collect();
    let mut traces: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in spans.iter().filter(|s| posted.contains(&s.trace.as_str())) {
        traces.entry(s.trace.as_str()).or_default().push(s);
    }
    assert_eq!(traces.len(), 2, "one trace per event: {traces:#?}");
    for (event, attempts) in expected_attempts {
        let (_, trace) = traces
            .iter()
            .find(|(_, spans)| spans.iter().any(|s| s.name == "ingest" && s.attributes["sluice.event_id"] == event))
            .unwrap_or_else(|| panic!("no trace for {event}"));
        let named = |name: &str| trace.iter().filter(|s| s.name == name).copied().collect::<Vec<_>>();
        let (ingest, route, scripts, attempt_spans) = (named("ingest"), named("route"), named("script"), named("attempt"));
        assert_eq!((ingest.len(), route.len(), scripts.len()), (1, 1, 1), "{event}: {trace:#?}");
        assert!(ingest[0].parent.is_empty(), "{event}: the ingest span is the root");
        assert_eq!(route[0].parent, ingest[0].id, "{event}: routing under ingest");
        assert_eq!(route[0].attributes["sluice.configurations"], json!("2"), "{event}: both configurations selected it");
        assert_eq!(scripts[0].parent, route[0].id, "{event}: the script run under routing");
        assert_eq!(scripts[0].attributes["sluice.configuration_id"], large["id"]);
        assert_eq!(scripts[0].attributes["sluice.decision"], if event == "big" { "deliver" } else { "skip" });
        assert_eq!(attempt_spans.len(), attempts, "{event}: {attempt_spans:#?}");
        assert!(attempt_spans.iter().all(|a| a.parent == route[0].id), "{event}: attempts under routing");
        let to_down = attempt_spans.iter().filter(|a| a.attributes["sluice.configuration_id"] == down["id"]).count();
        assert_eq!(to_down, 2, "{event}: both attempts at the failing receiver");
        assert!(attempt_spans.iter().all(|a| a.attributes["sluice.delivery_id"].as_str().is_some_and(|d| d.starts_with("dlv_"))));
    }
}
