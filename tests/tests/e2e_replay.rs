//! Replay, recovery and the retention purge end to end: a real engine
//! process, scripts built from source, receivers on 127.0.0.1.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::{Behaviour, Received, Receiver};
use sluice_tests::verify;

fn webhook_ids(requests: &[Received]) -> Vec<String> {
    requests.iter().map(|r| r.header("webhook-id").unwrap_or_default().to_owned()).collect()
}

/// Now, as RFC 3339 with milliseconds (the engine's clock is this machine's).
fn now_rfc3339() -> String {
    time::OffsetDateTime::from(SystemTime::now()).format(&time::format_description::well_known::Rfc3339).expect("formats")
}

const ANSWERING: Behaviour = Behaviour { status: 200, delay: Duration::ZERO };
const FAILING: Behaviour = Behaviour { status: 500, delay: Duration::ZERO };

/// Waits until the event's deliveries are all settled (none pending) and
/// there are `n` of them; returns the event.
async fn settled(api: &Api, event: &str, n: usize) -> Value {
    api.wait_for(&format!("/v1/events/{event}"), |e| {
        e["deliveries"].as_array().is_some_and(|d| d.len() == n && d.iter().all(|d| d["status"] != "pending"))
    })
    .await
}

fn delivery_to<'a>(event: &'a Value, config: &str) -> Vec<&'a Value> {
    event["deliveries"].as_array().expect("deliveries").iter().filter(|d| d["configuration_id"] == config).collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_the_recorded_decision_again_with_the_same_event_id() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let reshape = api.upload_script("reshape").await;
    let paid_orders = api.upload_script("paid-orders").await;
    let (reshaped_rx, plain_rx, filtered_rx) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let reshaped = api
        .enabled_config(json!({"name": "reshaped", "endpoint": reshaped_rx.url, "event_types": ["order.*"], "script": {"id": reshape}}))
        .await;
    let plain = api.enabled_config(json!({"name": "plain", "endpoint": plain_rx.url, "event_types": ["order.*"]})).await;
    let filtering = api
        .enabled_config(json!({
            "name": "paid over 100",
            "endpoint": filtered_rx.url,
            "event_types": ["order.paid"],
            "script": {"id": paid_orders, "params": {"min_amount": "100"}},
        }))
        .await;
    let customers = api.enabled_config(json!({"name": "customers", "endpoint": plain_rx.url, "event_types": ["customer.*"]})).await;
    let (reshaped_id, plain_id, filtering_id) = (id_of(&reshaped), id_of(&plain), id_of(&filtering));

    api.ingest(&[event_body("e1", "order.paid", "emea/nl", json!({"amount": 50}))]).await;
    let first = settled(&api, "e1", 3).await;
    let originals: Vec<Received> = [reshaped_rx.wait_for(1).await, plain_rx.wait_for(1).await].concat();

    // Replay to every configuration that sent it; the filtered one is left out.
    let replayed = api.post_raw("/v1/events/e1/replay", "application/json", "").await.expect(202);
    assert_eq!(replayed["event_id"], "e1");
    let new = replayed["deliveries"].as_array().expect("deliveries").clone();
    assert_eq!(new.len(), 2, "{replayed}");
    for d in &new {
        let config = d["configuration_id"].as_str().expect("configuration");
        assert!(config == reshaped_id || config == plain_id, "{d}");
        assert_eq!(d["status"], "pending");
        assert_eq!(d["replay_of"], id_of(delivery_to(&first, config)[0]), "names the delivery it replays");
    }
    assert_eq!(replayed["skipped"], json!([{"configuration_id": filtering_id, "reason": "filtered"}]));

    // Each receiver gets the same event id, idempotency key and body as the
    // first time (the reshaped one: the script's body, not run again), signed anew.
    let again = [reshaped_rx.wait_for(2).await, plain_rx.wait_for(2).await];
    for (requests, created) in again.iter().zip([&reshaped, &plain]) {
        let secret = created["signing"]["secret"].as_str().expect("secret");
        assert_eq!(webhook_ids(requests), ["e1", "e1"]);
        let (before, after) = (&requests[0], &requests[1]);
        assert_eq!(after.header("idempotency-key"), Some("e1"));
        assert_eq!(after.body, before.body, "the recorded decision is sent again");
        assert!(verify::standard_webhooks(secret, after), "the replay is signed");
    }
    assert!(originals[0].json().get("EventType").is_some(), "the reshaped body: {}", originals[0].json());
    // Received is not yet recorded: the attempts are logged after the answer.
    let event = settled(&api, "e1", 5).await;
    let replay = api.get(&format!("/v1/deliveries/{}", id_of(&new[0]))).await.expect(200);
    assert_eq!(replay["replay_of"], new[0]["replay_of"], "{replay}");
    assert_eq!(event["deliveries"].as_array().map(|d| d.iter().filter(|d| d.get("replay_of").is_some()).count()), Some(2));

    // To one configuration only.
    let one = api.post("/v1/events/e1/replay", &json!({"configuration_id": plain_id})).await.expect(202);
    assert_eq!(one["deliveries"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["deliveries"][0]["configuration_id"], plain_id.as_str());
    assert_eq!(webhook_ids(&plain_rx.wait_for(3).await), ["e1", "e1", "e1"]);
    settled(&api, "e1", 6).await;
    assert_eq!(reshaped_rx.settle(Duration::from_millis(500)).await.len(), 2, "the other configuration is left alone");

    // Naming the filtering configuration: its script decides again (and filters again); nothing is sent.
    let redecided = api.post("/v1/events/e1/replay", &json!({"configuration_id": filtering_id})).await.expect(202);
    assert_eq!(redecided["deliveries"][0]["status"], "filtered", "{redecided}");
    assert_eq!(redecided["deliveries"][0]["replay_of"], id_of(delivery_to(&first, &filtering_id)[0]));
    assert!(filtered_rx.settle(Duration::from_millis(300)).await.is_empty());

    // Refusals, each with its code.
    api.post("/v1/events/e1/replay", &json!({"configuration_id": id_of(&customers)})).await.expect_error(422, "not_matched");
    api.post("/v1/events/e1/replay", &json!({"configuration_id": "cfg_00000000000000000000000000000000"}))
        .await
        .expect_error(404, "not_found");
    api.post("/v1/events/nope/replay", &json!({})).await.expect_error(404, "not_found");
    api.post("/v1/events/e1/replay", &json!({"configuration": plain_id})).await.expect_error(400, "unknown_field");
    api.post_raw("/v1/events/e1/replay", "application/json", "{").await.expect_error(400, "malformed_json");
    api.post(&format!("/v1/configurations/{plain_id}/disable"), &json!({})).await.expect(200);
    api.post("/v1/events/e1/replay", &json!({"configuration_id": plain_id})).await.expect_error(409, "configuration_disabled");
    let rest = api.post("/v1/events/e1/replay", &json!({})).await.expect(202);
    let skipped: Vec<&Value> = rest["skipped"].as_array().expect("skipped").iter().collect();
    assert!(skipped.contains(&&json!({"configuration_id": plain_id, "reason": "configuration_disabled"})), "{rest}");
    // Reading logs is not enough to replay.
    let (_, reader) = api.tenant_with_key("readers", &["logs:read"]).await;
    engine.api(&reader).post("/v1/events/e1/replay", &json!({})).await.expect_error(403, "forbidden");

    // Both operations are described, with their bodies and answers.
    let doc = engine.anonymous().get("/v1/openapi.json").await.expect(200);
    for path in ["/v1/events/{id}/replay", "/v1/configurations/{id}/recover"] {
        let op = &doc["paths"][path]["post"];
        assert_eq!(op["x-scope"], "configurations:write", "{path}: {op}");
        assert!(op["description"].as_str().is_some_and(|d| d.contains("replay_of")), "{path}: {op}");
        assert!(op["requestBody"]["content"]["application/json"]["schema"].is_object(), "{path}: {op}");
        assert!(op["responses"]["202"]["content"].is_object() && op["responses"]["default"].is_object(), "{path}: {op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_replay_or_recover_what_is_not_its_own() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let rx = Receiver::start().await;
    let config = operator.enabled_config(json!({"name": "orders", "endpoint": rx.url, "event_types": ["order.*"]})).await;
    let config_id = id_of(&config);
    operator.ingest(&[event_body("shared-id", "order.paid", "emea", json!({}))]).await;
    settled(&operator, "shared-id", 1).await;

    let (_, key) = operator.tenant_with_key("other", &["admin"]).await;
    let other = engine.api(&key);
    other.post("/v1/events/shared-id/replay", &json!({})).await.expect_error(404, "not_found");
    other
        .post(&format!("/v1/configurations/{config_id}/recover"), &json!({"since": "2020-01-01T00:00:00Z"}))
        .await
        .expect_error(404, "not_found");
    // Its own event with the same id, naming the operator's configuration.
    other.ingest(&[event_body("shared-id", "order.paid", "emea", json!({}))]).await;
    other.wait_for("/v1/events/shared-id", |e| e["routed"] == true).await;
    other.post("/v1/events/shared-id/replay", &json!({"configuration_id": config_id})).await.expect_error(404, "not_found");
    let own = other.post("/v1/events/shared-id/replay", &json!({})).await.expect(202);
    assert_eq!(own["deliveries"], json!([]), "its event has no deliveries: {own}");
    assert_eq!(rx.settle(Duration::from_millis(500)).await.len(), 1, "the operator's receiver got the original only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_redelivers_exactly_the_failed_deliveries_of_the_window() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let config = api
        .enabled_config(json!({
            "name": "fragile",
            "endpoint": rx.url,
            "event_types": ["order.*"],
            "retry": {"max_attempts": 1, "initial_backoff_ms": 50, "max_backoff_ms": 100},
        }))
        .await;
    let recover = format!("/v1/configurations/{}/recover", id_of(&config));
    let since = now_rfc3339();

    api.ingest(&[event_body("ok-1", "order.paid", "emea", json!({}))]).await;
    settled(&api, "ok-1", 1).await;
    rx.set(FAILING);
    api.ingest(&[event_body("f-1", "order.paid", "emea", json!({})), event_body("f-2", "order.paid", "emea", json!({}))]).await;
    settled(&api, "f-1", 1).await;
    settled(&api, "f-2", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let until = now_rfc3339();
    tokio::time::sleep(Duration::from_millis(50)).await;
    api.ingest(&[event_body("f-3", "order.paid", "emea", json!({}))]).await;
    let f3 = settled(&api, "f-3", 1).await;
    assert_eq!(f3["deliveries"][0]["status"], "failed");
    assert_eq!(rx.received().len(), 4);
    rx.set(ANSWERING);

    // The window holds ok-1, f-1 and f-2: only the two failed ones go again.
    let recovered = api.post(&recover, &json!({"since": since, "until": until})).await.expect(202);
    assert_eq!(recovered["failed_requeued"], 2, "{recovered}");
    assert_eq!(recovered["truncated"], false);
    assert_eq!(recovered["max_deliveries"], 10_000);
    assert!(recovered.get("disabled_period").is_none());
    rx.wait_for(6).await;
    let mut again = webhook_ids(&rx.settle(Duration::from_millis(500)).await[4..]);
    again.sort();
    assert_eq!(again, ["f-1", "f-2"]);
    assert_eq!(rx.received().len(), 6, "nothing else is sent");
    for id in ["f-1", "f-2"] {
        let event = settled(&api, id, 2).await;
        let (old, new) = (&event["deliveries"][0], &event["deliveries"][1]);
        assert_eq!((&old["status"], &new["status"]), (&json!("failed"), &json!("succeeded")), "{event}");
        assert_eq!(new["replay_of"], old["id"]);
        assert_eq!(new["attempts"], 1, "a fresh retry budget");
    }
    // A recovered event no longer counts as failed; f-3 still does.
    let failed = api.get("/v1/events?status=failed").await.expect(200);
    assert_eq!(failed["items"].as_array().map(|i| i.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()), Some(vec![json!("f-3")]));

    // Again over the same window: nothing left to do. Up to now: f-3.
    let twice = api.post(&recover, &json!({"since": since, "until": until})).await.expect(202);
    assert_eq!(twice["failed_requeued"], 0, "{twice}");
    let rest = api.post(&recover, &json!({"since": since})).await.expect(202);
    assert_eq!(rest["failed_requeued"], 1, "{rest}");
    assert_eq!(webhook_ids(&rx.wait_for(7).await)[6], "f-3");

    // Refusals.
    api.post(&recover, &json!({"since": until, "until": since})).await.expect_error(422, "invalid_window");
    api.post(&recover, &json!({"since": "yesterday"})).await.expect_error(422, "invalid_window");
    api.post(&recover, &json!({})).await.expect_error(400, "invalid_request");
    api.post(&recover, &json!({"since": since, "from": since})).await.expect_error(400, "unknown_field");
    api.post(&format!("/v1/configurations/{}/disable", id_of(&config)), &json!({})).await.expect(200);
    api.post(&recover, &json!({"since": since})).await.expect_error(409, "configuration_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_routes_the_events_that_arrived_while_the_configuration_was_disabled() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let script = api.upload_script("paid-orders").await;
    let config = api
        .enabled_config(json!({
            "name": "paid orders",
            "endpoint": rx.url,
            "event_types": ["order.paid"],
            "script": {"id": script, "params": {"min_amount": "100"}},
        }))
        .await;
    let config_id = id_of(&config);
    let recover = format!("/v1/configurations/{config_id}/recover");
    let since = now_rfc3339();
    api.ingest(&[event_body("d-1", "order.paid", "emea", json!({"amount": 150}))]).await;
    settled(&api, "d-1", 1).await;

    api.post(&format!("/v1/configurations/{config_id}/disable"), &json!({})).await.expect(200);
    api.ingest(&[
        event_body("d-2", "order.paid", "emea", json!({"amount": 200})),
        event_body("d-3", "order.paid", "emea", json!({"amount": 5})),
        event_body("d-4", "customer.created", "emea", json!({"amount": 999})),
    ])
    .await;
    for id in ["d-2", "d-3", "d-4"] {
        let event = api.wait_for(&format!("/v1/events/{id}"), |e| e["routed"] == true).await;
        assert_eq!(event["deliveries"], json!([]), "disabled: not routed to it");
    }
    api.post(&format!("/v1/configurations/{config_id}/enable"), &json!({})).await.expect(200);
    assert_eq!(rx.settle(Duration::from_millis(300)).await.len(), 1);

    // Without the flag, only failed deliveries count: there are none.
    let plain = api.post(&recover, &json!({"since": since})).await.expect(202);
    assert_eq!((plain["failed_requeued"].clone(), plain.get("disabled_period")), (json!(0), None), "{plain}");

    let recovered = api.post(&recover, &json!({"since": since, "include_disabled_period": true})).await.expect(202);
    assert_eq!(recovered["disabled_period"], json!({"pending": 1, "filtered": 1, "script_error": 0}), "{recovered}");
    assert_eq!(recovered["truncated"], false);
    rx.wait_for(2).await;
    let got = rx.settle(Duration::from_millis(500)).await;
    assert_eq!(webhook_ids(&got), ["d-1", "d-2"], "d-1 once, d-2 now, d-3 filtered, d-4 not selected");
    assert!(verify::standard_webhooks(config["signing"]["secret"].as_str().expect("secret"), &got[1]));
    let d3 = api.get("/v1/events/d-3").await.expect(200);
    assert_eq!(d3["deliveries"][0]["status"], "filtered", "recorded the normal way: {d3}");
    assert!(d3["deliveries"][0]["reason"].as_str().is_some_and(|r| r.contains("below")), "{d3}");
    assert!(d3["deliveries"][0].get("replay_of").is_none());
    assert_eq!(api.get("/v1/events/d-4").await.expect(200)["deliveries"], json!([]));

    let twice = api.post(&recover, &json!({"since": since, "include_disabled_period": true})).await.expect(202);
    assert_eq!(twice["disabled_period"], json!({"pending": 0, "filtered": 0, "script_error": 0}), "{twice}");
    assert_eq!(rx.settle(Duration::from_millis(300)).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_job_enforces_the_configured_windows() {
    let engine =
        Engine::start_with(&[("SLUICE_RETENTION_PAYLOADS", "1s"), ("SLUICE_RETENTION_EVENTS", "5s"), ("SLUICE_PURGE_INTERVAL", "1s")])
            .await;
    let api = engine.admin();
    let (ok_rx, busy_rx) = (Receiver::start().await, Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await);
    api.enabled_config(json!({"name": "ok", "endpoint": ok_rx.url, "event_types": ["ok.*"]})).await;
    api.enabled_config(json!({
        "name": "busy",
        "endpoint": busy_rx.url,
        "event_types": ["busy.*"],
        "retry": {"max_attempts": 5, "initial_backoff_ms": 3_600_000, "max_backoff_ms": 3_600_000},
    }))
    .await;
    api.ingest(&[event_body("done", "ok.thing", "emea", json!({})), event_body("retrying", "busy.thing", "emea", json!({}))]).await;
    let done = settled(&api, "done", 1).await;
    api.wait_for("/v1/events/retrying", |e| e["deliveries"][0]["attempts"] == 1).await;
    let attempts = api.get(&format!("/v1/attempts?delivery_id={}", id_of(&done["deliveries"][0]))).await.expect(200);
    let attempt = format!("/v1/attempts/{}", id_of(&attempts["items"][0]));
    assert!(api.get(&attempt).await.expect(200)["request_body"].is_string(), "the payload is logged");

    // Past a second the bodies go; the attempt and its headers stay.
    let purged = api.wait_for(&attempt, |a| a.get("request_body").is_none()).await;
    assert!(purged["request_headers"].is_object(), "{purged}");
    // Past five seconds the event goes with its delivery and attempt; the pending one stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get("/v1/events/done").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the old event was never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.get(&attempt).await.expect_error(404, "not_found");
    let retrying = api.get("/v1/events/retrying").await.expect(200);
    assert_eq!(retrying["deliveries"][0]["status"], "pending", "{retrying}");
}
