//! `/metrics`: a known workload (deliveries that succeed, that fail and
//! retry, that a script filters; duplicates and refusals at ingest) moves
//! each counter by exactly its amount, read with a Prometheus parser
//! written apart from the engine's exporter; who may read the metrics on
//! the API's listener, and the keyless listener of their own.

use std::time::Duration;

use prometheus_parse::{Scrape, Value as Metric};
use serde_json::json;
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};

/// One scrape of `/metrics`, parsed.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(url: &str, key: Option<&str>) -> Metrics {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let answer = request.send().await.expect("scrape /metrics");
        assert_eq!(answer.status(), 200);
        let content_type = answer.headers()["content-type"].to_str().expect("content type").to_owned();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let text = answer.text().await.expect("metrics text");
        Metrics(Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the Prometheus text format"))
    }

    /// The value of the sample `name` with exactly these labels (0 when
    /// it has not appeared yet, as Prometheus reads a counter never moved).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(scalar)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().copied().unwrap_or(0.0)
    }

    /// `name` summed over every label set (a histogram's `_count` over kinds).
    fn total(&self, name: &str) -> f64 {
        self.0.samples.iter().filter(|s| s.metric == name).filter_map(scalar).sum()
    }

    fn has_histogram(&self, name: &str) -> bool {
        self.0.samples.iter().any(|s| s.metric == name && matches!(&s.value, Metric::Histogram(b) if !b.is_empty()))
    }
}

/// A sample's one number (a histogram's buckets are not one).
fn scalar(s: &prometheus_parse::Sample) -> Option<f64> {
    match s.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => Some(v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_moves_each_counter_by_exactly_its_amount() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let url = format!("{}/metrics", engine.url);
    let key = api.key().map(str::to_owned);
    let ok = Receiver::start().await;
    let failing = Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await;
    let script = api.upload_script("paid-orders").await;
    api.enabled_config(json!({"name": "all", "endpoint": ok.url, "event_types": ["order.paid"]})).await;
    api.enabled_config(json!({
        "name": "large orders",
        "endpoint": ok.url,
        "event_types": ["order.paid"],
        "script": {"id": script, "params": {"min_amount": "100"}},
    }))
    .await;
    api.enabled_config(json!({
        "name": "down",
        "endpoint": failing.url,
        "event_types": ["order.paid"],
        "organization_units": {"include": ["emea"]},
        "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100},
    }))
    .await;
    let before = Metrics::scrape(&url, key.as_deref()).await;

    // Six events: all six to "all"; three of them large enough for "large
    // orders" (the script filters the other three); two in emea for "down",
    // whose receiver fails each of its two attempts.
    let amounts = [10, 50, 150, 200, 300, 20];
    let events: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| event_body(&format!("m{i}"), "order.paid", if i < 2 { "emea" } else { "us" }, json!({"amount": amount})))
        .collect();
    api.ingest(&events).await;
    let again = api.post("/v1/events", &json!([events[0]])).await.expect(202);
    assert_eq!(again["events"][0]["status"], "duplicate");
    api.post_raw("/v1/events", "application/json", "[]").await.expect_error(400, "empty_batch");
    api.post_raw("/v1/events", "application/json", "{").await.expect_error(400, "malformed_json");
    api.wait_for("/v1/events?status=pending", |page| page["items"].as_array().is_some_and(Vec::is_empty)).await;
    let deliveries = api.list_all("/v1/deliveries").await;
    assert_eq!(deliveries.len(), 6 + 6 + 2, "one delivery per configuration that selected an event");

    let after = Metrics::scrape(&url, key.as_deref()).await;
    let moved = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    assert_eq!(moved("sluice_events_ingested_total", &[("outcome", "accepted")]), 6.0);
    assert_eq!(moved("sluice_events_ingested_total", &[("outcome", "duplicate")]), 1.0);
    assert_eq!(moved("sluice_ingest_refused_total", &[("code", "empty_batch")]), 1.0);
    assert_eq!(moved("sluice_ingest_refused_total", &[("code", "malformed_json")]), 1.0);
    assert_eq!(moved("sluice_routing_decisions_total", &[("outcome", "deliver")]), 6.0 + 3.0 + 2.0);
    assert_eq!(moved("sluice_routing_decisions_total", &[("outcome", "filtered")]), 3.0);
    assert_eq!(moved("sluice_routing_decisions_total", &[("outcome", "script_error")]), 0.0);
    assert_eq!(moved("sluice_script_run_seconds_count", &[]), 6.0, "the script ran on each event of its configuration");
    assert_eq!(moved("sluice_script_fuel_count", &[]), 6.0);
    assert!(moved("sluice_script_fuel_sum", &[]) > 0.0);
    assert_eq!(moved("sluice_attempts_total", &[("outcome", "succeeded"), ("status_class", "2xx")]), 9.0);
    assert_eq!(moved("sluice_attempts_total", &[("outcome", "retry"), ("status_class", "5xx")]), 2.0);
    assert_eq!(moved("sluice_attempts_total", &[("outcome", "failed"), ("status_class", "5xx")]), 2.0);
    assert_eq!(moved("sluice_attempt_duration_seconds_count", &[]), 13.0, "every attempt made is timed");
    assert!(after.total("sluice_store_commit_seconds_count") > before.total("sluice_store_commit_seconds_count"));
    assert!(after.has_histogram("sluice_attempt_duration_seconds") && after.has_histogram("sluice_store_write_group_size"));
    assert_eq!(ok.received().len(), 9);
    assert_eq!(failing.received().len(), 4);

    // The dashboard in the repository reads only metrics the engine has.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/grafana-dashboard.json")).expect("the dashboard");
    let served: std::collections::BTreeSet<&str> = after.0.samples.iter().map(|s| s.metric.as_str()).collect();
    let mut used = 0;
    for name in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("sluice_")) {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name);
        assert!(served.contains(name) || served.contains(base), "the dashboard reads {name}, which /metrics does not serve");
        used += 1;
    }
    assert!(used >= 14, "{used} metric references in the dashboard");

    // Gauges, read at the scrape: nothing left pending, three enabled.
    assert_eq!(after.value("sluice_deliveries_pending", &[]), 0.0);
    assert_eq!(after.value("sluice_oldest_pending_delivery_age_seconds", &[]), 0.0);
    assert_eq!(after.value("sluice_configurations", &[("state", "enabled")]), 3.0);
    assert_eq!(after.value("sluice_configurations", &[("state", "disabled")]), 0.0);
    assert_eq!(after.value("sluice_deliveries_in_flight", &[]), 0.0);
    assert_eq!(after.value("sluice_queue_depth", &[("queue", "routing")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_shows_while_a_receiver_holds_deliveries_back() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let url = format!("{}/metrics", engine.url);
    let key = api.key().map(str::to_owned);
    let slow = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(3) }).await;
    api.enabled_config(json!({"name": "slow", "endpoint": slow.url, "event_types": ["*"], "max_in_flight": 1, "deadline": "PT10S"})).await;
    let events: Vec<_> = (0..3).map(|i| event_body(&format!("b{i}"), "order.paid", "us", json!({}))).collect();
    api.ingest(&events).await;
    while slow.arrived() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let during = Metrics::scrape(&url, key.as_deref()).await;
    assert_eq!(during.value("sluice_deliveries_pending", &[]), 3.0);
    assert!(during.value("sluice_oldest_pending_delivery_age_seconds", &[]) >= 1.0);
    assert_eq!(during.value("sluice_deliveries_in_flight", &[]), 1.0, "one request at a time to this receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operators_keys_read_metrics_on_the_api_and_a_listener_of_their_own_needs_none() {
    let engine = Engine::start_with(&[("SLUICE_METRICS_LISTEN", "127.0.0.1:0")]).await;
    let admin = engine.admin();
    engine.anonymous().get("/metrics").await.expect_error(401, "unauthorized");
    let scraper = admin.post("/v1/keys", &json!({"name": "prometheus", "scopes": ["metrics:read"]})).await.expect(201);
    let scraper = scraper["secret"].as_str().expect("secret").to_owned();
    Metrics::scrape(&format!("{}/metrics", engine.url), Some(&scraper)).await;
    let logs_only = admin.post("/v1/keys", &json!({"name": "logs", "scopes": ["logs:read"]})).await.expect(201);
    engine.api(logs_only["secret"].as_str().expect("secret")).get("/metrics").await.expect_error(403, "forbidden");
    // A tenant's own admin key, even with `metrics:read`, sees no node-wide figures.
    let (_, tenant_key) = admin.tenant_with_key("acme", &["admin", "metrics:read"]).await;
    engine.api(&tenant_key).get("/metrics").await.expect_error(403, "forbidden");

    let open = engine.metrics_url.clone().expect("the engine printed its metrics listener");
    let metrics = Metrics::scrape(&open, None).await;
    assert_eq!(metrics.value("sluice_configurations", &[("state", "enabled")]), 0.0);
    assert!(metrics.0.docs.contains_key("sluice_configurations"), "described: {:?}", metrics.0.docs.keys());
    // Nothing but /metrics there: the API stays behind its keys.
    let other = reqwest::get(open.replace("/metrics", "/v1/configurations")).await.expect("request");
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_turned_off_are_not_served() {
    let engine = Engine::start_with(&[("SLUICE_METRICS", "false")]).await;
    engine.admin().get("/metrics").await.expect_error(404, "metrics_off");
}
