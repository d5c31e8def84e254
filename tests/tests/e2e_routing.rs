//! Scripted routing end to end: a real engine process with a real SQLite
//! file, scripts built from source and uploaded over the API, receivers that
//! are real HTTP servers on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::{Received, Receiver};
use sluice_tests::verify;

fn ids(requests: &[Received]) -> BTreeSet<String> {
    requests.iter().map(|r| r.header("webhook-id").unwrap_or_default().to_owned()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_routing_delivers_exactly_the_expected_requests() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let paid_orders = api.upload_script("paid-orders").await;
    let reshape = api.upload_script("reshape").await;

    let (paid_rx, reshape_rx, plain_rx) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let paid = api
        .enabled_config(json!({
            "name": "paid orders over 100",
            "endpoint": format!("{}/hooks/paid", paid_rx.url),
            "event_types": ["order.paid"],
            "script": {"id": paid_orders, "params": {"min_amount": "100"}},
            "headers": {"X-Custom": "custom-value"},
            "query": {"key": "abc"},
            "authorization": {"type": "bearer", "token": "receiver-token-123"},
        }))
        .await;
    let reshaped = api
        .enabled_config(json!({
            "name": "orders reshaped for emea",
            "endpoint": reshape_rx.url,
            "event_types": ["order.*"],
            "organization_units": {"include": ["emea"], "exclude": ["emea/nl/store-13"]},
            "script": {"id": reshape},
        }))
        .await;
    api.enabled_config(json!({
        "name": "customers, no script",
        "endpoint": plain_rx.url,
        "event_types": ["customer.created"],
    }))
    .await;

    api.ingest(&[
        event_body("e1", "order.paid", "emea/nl/store-12", json!({"amount": 150})),
        event_body("e2", "order.paid", "emea/nl/store-12", json!({"amount": 5})),
        event_body("e3", "order.shipped", "us/ca", json!({"amount": 999})),
        event_body("e4", "order.paid", "emea/nl/store-13", json!({"amount": 500})),
        event_body("e5", "customer.created", "emea", json!({"name": "Ada"})),
    ])
    .await;

    paid_rx.wait_for(2).await;
    reshape_rx.wait_for(2).await;
    plain_rx.wait_for(1).await;
    // Nothing else may arrive: give stragglers time to show up.
    let (paid_got, reshape_got, plain_got) = (paid_rx.settle(Duration::from_millis(500)).await, reshape_rx.received(), plain_rx.received());
    assert_eq!(ids(&paid_got), set(&["e1", "e4"]));
    assert_eq!(paid_got.len(), 2, "each event once");
    assert_eq!(ids(&reshape_got), set(&["e1", "e2"]));
    assert_eq!(reshape_got.len(), 2, "each event once");
    assert_eq!(ids(&plain_got), set(&["e5"]));
    assert_eq!(plain_got.len(), 1);

    // Untransformed: the event envelope, custom header and query, auth, signature.
    let secret = paid["signing"]["secret"].as_str().expect("secret shown on create");
    for r in &paid_got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri.path(), "/hooks/paid");
        assert_eq!(r.uri.query(), Some("key=abc"));
        assert_eq!(r.header("x-custom"), Some("custom-value"));
        assert_eq!(r.header("authorization"), Some("Bearer receiver-token-123"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let id = r.header("webhook-id").expect("webhook-id");
        assert_eq!(r.header("idempotency-key"), Some(id));
        let body = r.json();
        assert_eq!(body["id"], id);
        assert_eq!(body["type"], "order.paid");
        assert!(body["payload"]["amount"].as_i64().is_some_and(|a| a >= 100), "{body}");
        assert!(verify::standard_webhooks(secret, r), "signature of {id} verifies");
        assert!(!verify::standard_webhooks("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", r), "another secret does not");
    }

    // Transformed: the script's body and header, signed as sent.
    let secret = reshaped["signing"]["secret"].as_str().expect("secret shown on create");
    for r in &reshape_got {
        let body = r.json();
        assert_eq!(body["EventType"], "OrderPaid");
        assert_eq!(body["EventCategory"], "OrderEvents");
        assert_eq!(body["EventId"], r.header("webhook-id").expect("id"));
        assert!(body["Data"]["amount"].is_number(), "{body}");
        assert!(body.get("payload").is_none(), "the original envelope is gone: {body}");
        assert_eq!(r.header("x-event-category"), Some("OrderEvents"));
        assert!(verify::standard_webhooks(secret, r));
    }

    // The log: e2 was filtered by the script, with its reason and log lines.
    let paid_id = paid["id"].as_str().expect("id");
    let e2 = api.get("/v1/events/e2").await.expect(200);
    let deliveries = e2["deliveries"].as_array().expect("deliveries of e2");
    assert_eq!(deliveries.len(), 2, "{e2}");
    let filtered = deliveries.iter().find(|d| d["configuration_id"] == paid_id).expect("paid delivery");
    assert_eq!(filtered["status"], "filtered");
    assert!(filtered["reason"].as_str().is_some_and(|r| r.contains("below")), "{filtered}");
    assert!(!filtered["script_logs"].as_array().expect("log lines").is_empty());
    let other = deliveries.iter().find(|d| d["configuration_id"] != paid_id).expect("reshape delivery");
    assert_eq!(other["status"], "succeeded");

    // e3 matched no configuration.
    let e3 = api.get("/v1/events/e3").await.expect(200);
    assert_eq!(e3["deliveries"], json!([]));

    // Attempts: one per delivered request, the token redacted everywhere.
    let attempts = api.get(&format!("/v1/attempts?configuration_id={paid_id}")).await.expect(200);
    let attempts = attempts["items"].as_array().expect("items").clone();
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a["response_status"], 200);
        assert_eq!(a["outcome"], "succeeded");
        assert_eq!(a["method"], "POST");
        // A query parameter named like a credential is redacted too.
        assert!(a["uri"].as_str().is_some_and(|u| u.ends_with("/hooks/paid?key=***")), "{a}");
        assert_eq!(a["request_headers"]["authorization"], "***");
        let one = api.get(&format!("/v1/attempts/{}", a["id"].as_str().expect("id"))).await.expect(200);
        assert!(one["request_body"].as_str().is_some_and(|b| b.contains("\"amount\"")), "payload log: {one}");
        assert!(!one.to_string().contains("receiver-token-123"), "token leaked: {one}");
    }
    let config = api.get(&format!("/v1/configurations/{paid_id}")).await.expect(200);
    assert!(!config.to_string().contains("receiver-token-123"));
    assert!(config["signing"].get("secret").is_none(), "the signing secret is shown once only: {config}");
    assert!(!engine.log().contains("receiver-token-123"), "token in the engine log");

    // Filters on the event list.
    let paid_events = api.get("/v1/events?type=order.paid").await.expect(200);
    assert_eq!(paid_events["items"].as_array().map(Vec::len), Some(3));
    let emea = api.get("/v1/events?organization_unit=emea/nl").await.expect(200);
    assert_eq!(emea["items"].as_array().map(Vec::len), Some(3));
    let by_status = api.get(&format!("/v1/deliveries?configuration_id={paid_id}&status=filtered")).await.expect(200);
    assert_eq!(by_status["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_scripts_are_recorded_with_their_kind_and_nothing_is_sent() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let mut configs = Vec::new();
    for (script, kind) in [("hostile-panic", "trapped"), ("hostile-loop", "out_of_fuel"), ("hostile-memory", "out_of_memory")] {
        let id = api.upload_script(script).await;
        let c = api.enabled_config(json!({"name": script, "endpoint": rx.url, "event_types": ["*"], "script": {"id": id}})).await;
        configs.push((c["id"].as_str().expect("id").to_owned(), kind));
    }
    api.ingest(&[event_body("boom", "order.paid", "emea", json!({"amount": 1}))]).await;
    let event = api
        .wait_for("/v1/events/boom", |e| {
            e["deliveries"].as_array().is_some_and(|d| d.len() == 3 && d.iter().all(|d| d["status"] != "pending"))
        })
        .await;
    for (config, kind) in configs {
        let d = event["deliveries"].as_array().and_then(|ds| ds.iter().find(|d| d["configuration_id"] == config.as_str()));
        let d = d.expect("a delivery per configuration");
        assert_eq!(d["status"], "script_error", "{d}");
        assert_eq!(d["error_kind"], kind, "{d}");
    }
    assert!(rx.settle(Duration::from_millis(300)).await.is_empty(), "nothing is delivered when the script fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_and_every_attempt_logged() {
    use sluice_tests::receiver::Behaviour;
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await;
    let config = api
        .enabled_config(json!({
            "name": "flaky",
            "endpoint": rx.url,
            "event_types": ["flaky.*"],
            "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 200},
        }))
        .await;
    api.ingest(&[event_body("flaky-1", "flaky.thing", "emea", json!({}))]).await;
    rx.wait_for(2).await;
    rx.set(Behaviour { status: 200, delay: Duration::ZERO });
    let event = api.wait_for("/v1/events/flaky-1", |e| e["deliveries"][0]["status"] == "succeeded").await;
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["attempts"], 3);
    let attempts = api.get(&format!("/v1/attempts?delivery_id={}", delivery["id"].as_str().expect("id"))).await.expect(200);
    let outcomes: Vec<(Value, Value)> =
        attempts["items"].as_array().expect("items").iter().map(|a| (a["response_status"].clone(), a["outcome"].clone())).collect();
    // Newest first.
    assert_eq!(outcomes, vec![(json!(200), json!("succeeded")), (json!(503), json!("retry")), (json!(503), json!("retry"))]);
    let _ = config;

    // A receiver that never recovers: the delivery ends failed after the last attempt.
    let dead = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    api.enabled_config(json!({
        "name": "dead",
        "endpoint": dead.url,
        "event_types": ["dead.*"],
        "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100},
    }))
    .await;
    api.ingest(&[event_body("dead-1", "dead.letter", "emea", json!({}))]).await;
    let event = api.wait_for("/v1/events/dead-1", |e| e["deliveries"][0]["status"] == "failed").await;
    assert_eq!(event["deliveries"][0]["attempts"], 2);
    assert_eq!(dead.settle(Duration::from_millis(300)).await.len(), 2, "no attempt after the last");
}
