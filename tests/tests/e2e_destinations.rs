//! Destination safety end to end: an engine that allows no reserved address
//! range refuses to save literal loopback and link-local endpoints, and a
//! hostname that resolves to loopback ends in failed attempts that say why,
//! while the receiver listening there gets nothing.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, LOOPBACK, event_body};
use sluice_tests::receiver::Receiver;

/// The engine's setting for "no reserved range allowed" (its default; the
/// harness allows loopback unless told otherwise).
const NOTHING_ALLOWED: (&str, &str) = ("SLUICE_ALLOW_DESTINATIONS", "");

fn config(name: &str, endpoint: &str, types: &str) -> Value {
    json!({
        "name": name,
        "endpoint": endpoint,
        "event_types": [types],
        "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100},
    })
}

/// The errors of a delivery's attempts, newest first.
async fn attempt_errors(api: &Api, delivery: &Value) -> Vec<String> {
    let id = delivery["id"].as_str().expect("delivery id");
    let attempts = api.get(&format!("/v1/attempts?delivery_id={id}")).await.expect(200);
    attempts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            assert_eq!(a["response_status"], Value::Null, "no answer came: {a}");
            a["error"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_destinations_are_refused_at_save_and_at_send() {
    let engine = Engine::start_with(&[NOTHING_ALLOWED]).await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let port = rx.url.rsplit(':').next().expect("receiver port").to_owned();

    // (a) A literal loopback endpoint is refused when saved.
    let refused = api
        .post("/v1/configurations", &config("loopback", &format!("http://127.0.0.1:{port}/hook"), "a.*"))
        .await
        .expect_error(422, "destination_forbidden");
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("127.0.0.1 (loopback range)") && message.contains("allow_destinations"), "{message}");

    // (c) The cloud metadata address, in any spelling, is refused too.
    for endpoint in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::1]:9/",
        "http://10.0.0.1/",
        "http://2130706433/",
    ] {
        let refused = api.post("/v1/configurations", &config("metadata", endpoint, "a.*")).await.expect_error(422, "destination_forbidden");
        assert!(refused["message"].as_str().is_some_and(|m| m.contains("range")), "{endpoint}: {refused}");
    }

    // (b) A hostname passes the save (what it resolves to can change) ...
    let by_name = config("by name", &format!("http://localhost:{port}/hook"), "b.*");
    let created = api.post("/v1/configurations", &by_name).await.expect(201);
    let id = created["id"].as_str().expect("configuration id");
    // ... and an update may not point it at a literal reserved address.
    let version = created["version"].as_i64().expect("version");
    api.put(&format!("/v1/configurations/{id}"), version, &config("by name", "http://169.254.169.254/", "b.*"))
        .await
        .expect_error(422, "destination_forbidden");
    api.post(&format!("/v1/configurations/{id}/enable"), &json!({})).await.expect(200);

    // ... but every send resolves it, finds only loopback, and fails saying so.
    api.ingest(&[event_body("dest-1", "b.thing", "emea", json!({}))]).await;
    let event = api.wait_for("/v1/events/dest-1", |e| e["deliveries"][0]["status"] == "failed").await;
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["attempts"], 2, "a refused send is an ordinary failed attempt, retried per the policy");
    let errors = attempt_errors(&api, delivery).await;
    assert_eq!(errors.len(), 2);
    for error in &errors {
        assert!(error.contains("destination_forbidden: localhost resolves to") && error.contains("127.0.0.1 (loopback range)"), "{error}");
    }
    assert!(rx.settle(Duration::from_millis(300)).await.is_empty(), "nothing reached the receiver");
    assert_eq!(rx.arrived(), 0, "no request reached the receiver, not even cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_endpoint_saved_while_allowed_is_refused_once_the_range_is_not() {
    let mut engine = Engine::start_with(&[("SLUICE_ALLOW_DESTINATIONS", LOOPBACK)]).await;
    let rx = Receiver::start().await;
    let created = engine.admin().post("/v1/configurations", &config("literal", &format!("{}/hook", rx.url), "c.*")).await.expect(201);
    let id = created["id"].as_str().expect("configuration id").to_owned();

    // The operator narrows the policy: the saved endpoint stays, sends to it fail.
    engine.restart_with(&[NOTHING_ALLOWED]).await;
    let api = engine.admin();
    api.post(&format!("/v1/configurations/{id}/enable"), &json!({})).await.expect(200);
    api.ingest(&[event_body("dest-2", "c.thing", "emea", json!({}))]).await;
    let event = api.wait_for("/v1/events/dest-2", |e| e["deliveries"][0]["status"] == "failed").await;
    for error in attempt_errors(&api, &event["deliveries"][0]).await {
        assert!(error.contains("destination_forbidden: 127.0.0.1 (loopback range)"), "{error}");
    }
    assert!(rx.settle(Duration::from_millis(300)).await.is_empty(), "nothing reached the receiver");
    assert_eq!(rx.arrived(), 0, "no request reached the receiver, not even cut off");
}
