//! Delivery when receivers misbehave: every way a request can fail ends in
//! the right retries and final state with the reason logged; `410 Gone` and
//! continuous failure disable a configuration, and enabling it resumes;
//! `Retry-After` is honoured; a hanging endpoint holds up no other, and its
//! events read routed while it holds them; the rate limit holds. Real engine process, real receivers on 127.0.0.1.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver, closing_listener, down_address};

const FAST_RETRY: &str = r#"{"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100}"#;

fn fast_retry() -> Value {
    serde_json::from_str(FAST_RETRY).expect("retry policy")
}

/// The delivery of `event` once `done` holds of it.
async fn delivery_when(api: &Api, event: &str, done: impl Fn(&Value) -> bool) -> Value {
    let found = api.wait_for(&format!("/v1/events/{event}"), |e| done(&e["deliveries"][0])).await;
    found["deliveries"][0].clone()
}

/// A delivery's attempts, oldest first.
async fn attempts_of(api: &Api, delivery: &Value) -> Vec<Value> {
    let id = delivery["id"].as_str().expect("delivery id");
    let page = api.get(&format!("/v1/attempts?delivery_id={id}")).await.expect(200);
    let mut items = page["items"].as_array().expect("items").clone();
    items.reverse();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_of_failing_is_retried_then_failed_with_its_reason() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let error_500 = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let no_ack = Receiver::start().await;
    no_ack.set_answer("OK", &[]);
    let hangs = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(5) }).await;
    let (closes, _closer) = closing_listener().await;
    let down = down_address().await;

    // (name, endpoint, extra configuration, what the attempt log must say: one of)
    let cases = [
        ("error-500", error_500.url.clone(), json!({}), &["answered 500"][..]),
        ("no-ack", no_ack.url.clone(), json!({"response_mode": "normal"}), &["without the body [ACK]"][..]),
        ("hangs", hangs.url.clone(), json!({"deadline": "PT0.3S"}), &["deadline exceeded"][..]),
        // Closed before or after reading the request, depending on timing;
        // closed before the connection was ready to send, hyper says so.
        ("closes", closes.clone(), json!({}), &["connection closed", "reset by peer", "connection was not ready"][..]),
        ("down", down.clone(), json!({}), &["connection failed"][..]),
    ];
    for (name, endpoint, extra, _) in &cases {
        let mut spec = json!({
            "name": name,
            "endpoint": endpoint,
            "event_types": [format!("{name}.*")],
            "retry": fast_retry(),
        });
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        api.enabled_config(spec).await;
        api.ingest(&[event_body(&format!("{name}-1"), &format!("{name}.happened"), "emea", json!({}))]).await;
    }
    for (name, _, _, reason) in &cases {
        let delivery = delivery_when(&api, &format!("{name}-1"), |d| d["status"] == "failed").await;
        assert_eq!(delivery["attempts"], 2, "{name}: {delivery}");
        let attempts = attempts_of(&api, &delivery).await;
        let outcomes: Vec<&Value> = attempts.iter().map(|a| &a["outcome"]).collect();
        assert_eq!(outcomes, [&json!("retry"), &json!("failed")], "{name}");
        for a in &attempts {
            let error = a["error"].as_str().unwrap_or_default();
            assert!(reason.iter().any(|r| error.contains(r)), "{name}: the attempt log says {error:?}, expected {reason:?}");
        }
    }
    // The receiver that does answer saw both attempts; the hanging one was cut off.
    assert_eq!(error_500.received().len(), 2);
    assert_eq!(no_ack.received().len(), 2);
    assert_eq!(hangs.arrived(), 2);
    assert!(hangs.received().is_empty(), "cut off at the deadline, never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_configuration_without_retrying() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::with(Behaviour { status: 410, delay: Duration::ZERO }).await;
    let config = api
        .enabled_config(json!({
            "name": "gone",
            "endpoint": rx.url,
            "event_types": ["gone.*"],
            "retry": {"max_attempts": 5, "initial_backoff_ms": 50, "max_backoff_ms": 100},
        }))
        .await;
    let id = config["id"].as_str().expect("id");
    api.ingest(&[event_body("gone-1", "gone.away", "emea", json!({}))]).await;
    let delivery = delivery_when(&api, "gone-1", |d| d["status"] == "failed").await;
    assert_eq!(delivery["attempts"], 1, "410 is final");
    let config = api.wait_for(&format!("/v1/configurations/{id}"), |c| c["status"] == "disabled").await;
    assert!(config["disabled_reason"].as_str().unwrap_or_default().contains("410"), "{config}");

    // While disabled, new events are not routed to it.
    api.ingest(&[event_body("gone-2", "gone.again", "emea", json!({}))]).await;
    let event = api.wait_for("/v1/events/gone-2", |e| e["routed"] == true).await;
    assert_eq!(event["deliveries"], json!([]), "{event}");
    assert_eq!(rx.settle(Duration::from_millis(300)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_failure_disables_and_enabling_resumes_the_held_deliveries() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let config = api
        .enabled_config(json!({
            "name": "failing",
            "endpoint": rx.url,
            "event_types": ["failing.*"],
            "retry": {"max_attempts": 20, "initial_backoff_ms": 50, "max_backoff_ms": 100},
            "auto_disable": {"after_failures": 3, "failing_for_ms": 0},
        }))
        .await;
    let id = config["id"].as_str().expect("id");
    api.ingest(&[event_body("failing-1", "failing.thing", "emea", json!({}))]).await;
    let config = api.wait_for(&format!("/v1/configurations/{id}"), |c| c["status"] == "disabled").await;
    let reason = config["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("3 failed attempts in a row"), "{reason}");

    // Held: still pending, and no attempt while disabled.
    let held = rx.settle(Duration::from_millis(500)).await.len();
    assert_eq!(held, 3);
    let delivery = delivery_when(&api, "failing-1", |_| true).await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempts"], 3);

    // The receiver recovers; enabling resumes the held delivery.
    rx.set(Behaviour { status: 200, delay: Duration::ZERO });
    let version = config["version"].as_i64().expect("version");
    api.send(
        "POST",
        &format!("/v1/configurations/{id}/enable"),
        Some(("application/json", b"{}".to_vec())),
        &[("if-match", &version.to_string())],
    )
    .await
    .expect(200);
    let delivery = delivery_when(&api, "failing-1", |d| d["status"] == "succeeded").await;
    assert_eq!(delivery["attempts"], 4);
    assert_eq!(rx.received().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await;
    rx.set_answer("busy", &[("retry-after", "2")]);
    api.enabled_config(json!({
        "name": "busy",
        "endpoint": rx.url,
        "event_types": ["busy.*"],
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 100},
    }))
    .await;
    api.ingest(&[event_body("busy-1", "busy.thing", "emea", json!({}))]).await;
    let delivery = delivery_when(&api, "busy-1", |d| d["attempts"] == 1).await;
    let attempts = attempts_of(&api, &delivery).await;
    let started = ms(&attempts[0]["started_at"]);
    let next = ms(&delivery["next_attempt_at"]);
    assert!(next - started >= 2000, "the retry is due {} ms after the attempt, not the 2 s asked", next - started);
    rx.set(Behaviour { status: 200, delay: Duration::ZERO });
    let delivery = delivery_when(&api, "busy-1", |d| d["status"] == "succeeded").await;
    let attempts = attempts_of(&api, &delivery).await;
    assert!(ms(&attempts[1]["started_at"]) - started >= 2000, "retried early: {attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_hold_up_another() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let hangs = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(30) }).await;
    let fine = Receiver::start().await;
    api.enabled_config(json!({
        "name": "hangs",
        "endpoint": hangs.url,
        "event_types": ["shared.*"],
        "deadline": 5000,
        "max_in_flight": 2,
        "retry": {"max_attempts": 1, "initial_backoff_ms": 50, "max_backoff_ms": 100},
    }))
    .await;
    api.enabled_config(json!({"name": "fine", "endpoint": fine.url, "event_types": ["shared.*"]})).await;
    let events: Vec<Value> = (0..60).map(|i| event_body(&format!("shared-{i}"), "shared.thing", "emea", json!({"i": i}))).collect();
    api.ingest(&events).await;
    fine.wait_for(60).await;
    // Every event reached the healthy endpoint while the hanging one held
    // at most its own two slots.
    assert!(hangs.arrived() <= 2, "{} requests reached the hanging endpoint at once", hangs.arrived());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_receiver_is_slow_to_answer_reads_routed_with_its_delivery_pending() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let slow = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(4) }).await;
    api.enabled_config(json!({"name": "slow", "endpoint": slow.url, "event_types": ["slow.*"], "deadline": 10000})).await;
    api.ingest(&[event_body("slow-1", "slow.thing", "emea", json!({}))]).await;
    // While the receiver holds the request, the event is routed and its
    // delivery pending (not an event that looks as if nothing happened).
    let during = api.wait_for("/v1/events/slow-1", |e| e["routed"] == true && e["deliveries"][0]["status"] == "pending").await;
    assert_eq!(during["deliveries"].as_array().map(Vec::len), Some(1), "{during}");
    assert!(slow.received().is_empty(), "read before the receiver answered");
    // Its answer settles the same delivery, after one attempt.
    let done = delivery_when(&api, "slow-1", |d| d["status"] == "succeeded").await;
    assert_eq!((done["id"].clone(), done["attempts"].clone()), (during["deliveries"][0]["id"].clone(), json!(1)));
    assert_eq!(attempts_of(&api, &done).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_requests() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    api.enabled_config(json!({
        "name": "limited",
        "endpoint": rx.url,
        "event_types": ["limited.*"],
        "rate_limit": {"per_second": 5},
    }))
    .await;
    let events: Vec<Value> = (0..12).map(|i| event_body(&format!("limited-{i}"), "limited.thing", "emea", json!({}))).collect();
    api.ingest(&events).await;
    let got = rx.wait_for(12).await;
    // 5 a second: any one-second window holds at most 6 starts (both ends
    // included). A slow machine only spreads them further.
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    for (i, first) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|t| t.duration_since(*first) < Duration::from_millis(900)).count();
        assert!(within <= 5, "{within} requests within a second of one another at 5/s");
    }
}

/// An RFC 3339 time from the API as Unix milliseconds.
fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_answers_with_the_attempt_and_stores_nothing() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let script = api.upload_script("paid-orders").await;
    let config = api
        .post(
            "/v1/configurations",
            &json!({
                "name": "try-me",
                "endpoint": rx.url,
                "event_types": ["order.*"],
                "authorization": {"type": "bearer", "token": "tok_live_hidden"},
            }),
        )
        .await
        .expect(201);
    let path = format!("/v1/configurations/{}/test", config["id"].as_str().expect("id"));
    let scripted = api
        .post(
            "/v1/configurations",
            &json!({
                "name": "try-my-script",
                "endpoint": rx.url,
                "event_types": ["order.paid"],
                "script": {"id": script, "params": {"min_amount": "0"}},
            }),
        )
        .await
        .expect(201);
    let scripted = format!("/v1/configurations/{}/test", scripted["id"].as_str().expect("id"));

    // Disabled (the default) still sends: a made-up event the configuration selects.
    let report = api.post(&path, &json!({})).await.expect(200);
    assert_eq!(report["event"]["type"], "order.test", "{report}");
    assert_eq!(report["decision"]["status"], "deliver", "{report}");
    assert_eq!(report["attempt"]["succeeded"], true, "{report}");
    assert_eq!(report["attempt"]["response_status"], 200);
    assert_eq!(report["attempt"]["request_headers"]["authorization"], "***", "{report}");
    assert!(!report.to_string().contains("tok_live_hidden"));
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("authorization"), Some("Bearer tok_live_hidden"));

    // A given event the script skips: the decision, and no request.
    let mut small = event_body("try-2", "order.paid", "emea", json!({"amount": -1}));
    small["source"] = json!({"application": "shop", "user": "clerk/7"});
    let report = api.post(&scripted, &json!({"event": small})).await.expect(200);
    assert_eq!(report["decision"]["status"], "filtered", "{report}");
    assert_eq!(report["attempt"], Value::Null);

    // A given event that goes: the source user travels in a header.
    let mut paid = event_body("try-3", "order.paid", "emea", json!({"amount": 5}));
    paid["source"] = json!({"application": "shop", "user": "clerk/7"});
    let report = api.post(&scripted, &json!({"event": paid})).await.expect(200);
    assert_eq!(report["attempt"]["succeeded"], true, "{report}");
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].header("sluice-source-user"), Some("clerk/7"));
    assert_eq!(got[1].header("idempotency-key"), Some("try-3"));

    // A failing endpoint: the reason, in the answer.
    rx.set(Behaviour { status: 500, delay: Duration::ZERO });
    let report = api.post(&path, &json!({})).await.expect(200);
    assert_eq!(report["attempt"]["succeeded"], false);
    assert_eq!(report["attempt"]["error"], "answered 500 Internal Server Error", "{report}");

    // Bad input is refused; nothing was stored.
    api.post(&path, &json!({"event": {"type": "order.paid"}})).await.expect_error(422, "invalid_event");
    assert_eq!(api.get("/v1/events").await.expect(200)["items"], json!([]));
    assert_eq!(api.get("/v1/attempts").await.expect(200)["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_is_probed_alone_and_its_deliveries_wait() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await;
    api.enabled_config(json!({
        "name": "down",
        "endpoint": rx.url,
        "event_types": ["down.*"],
        "retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 100},
        "auto_disable": {"after_failures": 0},
    }))
    .await;
    let events: Vec<Value> = (0..40).map(|i| event_body(&format!("down-{i}"), "down.thing", "emea", json!({}))).collect();
    api.ingest(&events).await;
    // Without the breaker, 40 deliveries retried every 50–100 ms would make
    // hundreds of attempts in these 3 s. With it: 20 failures (plus those
    // already in flight), then probes one at a time with growing pauses.
    let attempts = rx.settle(Duration::from_secs(3)).await.len();
    assert!((20..=60).contains(&attempts), "{attempts} attempts reached the down endpoint");
    let pending = api.get("/v1/deliveries?status=pending").await.expect(200);
    assert_eq!(pending["items"].as_array().map(Vec::len), Some(40), "every delivery waits, none spent its attempts");

    // Back up: the next probe succeeds and every held delivery goes.
    rx.set(Behaviour { status: 200, delay: Duration::ZERO });
    for i in 0..40 {
        delivery_when(&api, &format!("down-{i}"), |d| d["status"] == "succeeded").await;
    }
}
