//! Faults of one tenant's making, over the real engine: each test has
//! tenant A do the bad thing (a looping script, a configuration the engine
//! cannot use, receivers that answer slowly, a configuration deleted under
//! its deliveries) while tenant B goes about its business. B's events all
//! arrive; A's own deliveries end in a clear, recorded state. Bounds are
//! generous and nothing asserts on timings.
//!
//! Runs on SQLite, and on PostgreSQL with `SLUICE_TEST_BACKEND=postgres`.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};

async fn two_tenants(engine: &Engine) -> (Api, Api) {
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", &["admin"]).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", &["admin"]).await;
    (engine.api(&key_a), engine.api(&key_b))
}

fn events(prefix: &str, event_type: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| event_body(&format!("{prefix}-{i}"), event_type, "emea", json!({"n": i}))).collect()
}

/// Polls until every delivery of `api`'s tenant satisfies `ended`, and
/// returns them; fails with the first that does not after 60 s.
async fn deliveries_when(api: &Api, expected: usize, ended: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = api.list_all("/v1/deliveries").await;
        let open = all.iter().find(|d| !ended(d));
        if all.len() >= expected && open.is_none() {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of {expected} deliveries, one still open: {open:?}", all.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_script_stalls_no_one_else() {
    let engine = Engine::start().await;
    let (a, b) = two_tenants(&engine).await;
    let rx_a = Receiver::start().await;
    let rx_b = Receiver::start().await;
    let looping = a.upload_script("hostile-loop").await;
    a.enabled_config(json!({"name": "loop", "endpoint": rx_a.url, "event_types": ["*"], "script": {"id": looping}})).await;
    // B runs the very same bytes, on events the script lets through: its
    // pauses are B's own, not shared with A through the module's hash.
    let same_bytes = b.upload_script("hostile-loop").await;
    b.enabled_config(json!({"name": "benign", "endpoint": rx_b.url, "event_types": ["benign"], "script": {"id": same_bytes}})).await;
    b.enabled_config(json!({"name": "plain", "endpoint": rx_b.url, "event_types": ["order.*"]})).await;

    for batch in 0..4 {
        a.ingest(&events(&format!("a{batch}"), "order.paid", 500)).await;
    }
    b.ingest(&events("b-plain", "order.paid", 20)).await;
    b.ingest(&events("b-benign", "benign", 20)).await;
    let got = rx_b.wait_for(40).await;
    assert_eq!(got.len(), 40, "B's events all arrive, once each");

    // A's events are all routed; each of A's deliveries is either decided
    // (the script ran out of fuel: recorded as such) or waits, recorded as
    // undecided, for its script's next slot. Nothing reached A's receiver.
    let all = deliveries_when(&a, 2000, |d| d["status"] == "script_error" || (d["status"] == "pending" && d["undecided"] == true)).await;
    assert_eq!(all.len(), 2000, "one delivery per event");
    let exhausted = all.iter().filter(|d| d["error_kind"] == "out_of_fuel").count();
    assert!(exhausted >= 1, "the script ran and its exhaustion was recorded");
    assert!(all.iter().all(|d| d["status"] != "script_error" || d["error_kind"] == "out_of_fuel"), "no other error");
    assert_eq!(rx_a.arrived(), 0);
    let b_deliveries = b.list_all("/v1/deliveries").await;
    assert!(b_deliveries.iter().all(|d| d["status"] == "succeeded" && d.get("undecided").is_none()), "B never waited on A's pauses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_the_engine_cannot_use_fails_only_its_own_deliveries() {
    let engine = Engine::start().await;
    let (a, b) = two_tenants(&engine).await;
    let rx_a = Receiver::start().await;
    let rx_b = Receiver::start().await;

    // Refused at save: PEM-shaped, but no certificate inside.
    let bogus_ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let spec = json!({"name": "bad tls", "endpoint": rx_a.url, "event_types": ["*"], "tls": {"trust": "custom_ca", "ca_pem": bogus_ca}});
    let e = a.post("/v1/configurations", &spec).await.expect_error(422, "invalid_tls");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("tls")), "{e}");

    // A row saved before that check existed: the engine loads it, and only
    // its own deliveries fail, each with the reason recorded.
    let created = a.post("/v1/configurations", &json!({"name": "old row", "endpoint": rx_a.url, "event_types": ["*"], "retry": {"max_attempts": 1, "initial_backoff_ms": 1000, "max_backoff_ms": 1000}})).await.expect(201);
    let id = created["id"].as_str().expect("id");
    engine.edit_stored_config(id, |spec| spec["tls"] = json!({"trust": "custom_ca", "ca_pem": bogus_ca})).await;
    a.post(&format!("/v1/configurations/{id}/enable"), &json!({})).await.expect(200);
    a.enabled_config(json!({"name": "fine", "endpoint": rx_a.url, "event_types": ["order.*"]})).await;
    b.enabled_config(json!({"name": "b", "endpoint": rx_b.url, "event_types": ["*"]})).await;

    // Both post at once, interleaved.
    for round in 0..10 {
        a.ingest(&events(&format!("a{round}"), "order.paid", 20)).await;
        b.ingest(&events(&format!("b{round}"), "order.paid", 20)).await;
    }
    assert_eq!(rx_b.wait_for(200).await.len(), 200, "every one of B's events");
    assert_eq!(rx_a.wait_for(200).await.len(), 200, "and every one of A's through its good configuration");
    let all = deliveries_when(&a, 400, |d| d["status"] == "succeeded" || d["status"] == "failed").await;
    let failed: Vec<&Value> = all.iter().filter(|d| d["configuration_id"] == id).collect();
    assert_eq!(failed.len(), 200);
    assert!(failed.iter().all(|d| d["status"] == "failed" && d["attempts"] == 1), "{:?}", failed[0]);
    let attempts = a.get(&format!("/v1/attempts?delivery_id={}", failed[0]["id"].as_str().expect("id"))).await.expect(200);
    let error = attempts["items"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("TLS settings cannot be used"), "the reason is recorded: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receivers_of_one_tenant_hold_no_one_elses_senders() {
    // A small node, so that the slow tenant could take all of it.
    let engine = Engine::start_with(&[("SLUICE_DELIVERY_CONCURRENCY", "64")]).await;
    let (a, b) = two_tenants(&engine).await;
    let slow = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(4) }).await;
    let fast = Receiver::start().await;
    for i in 0..10 {
        a.enabled_config(json!({"name": format!("slow {i}"), "endpoint": slow.url, "event_types": ["*"], "deadline": "PT10S"})).await;
    }
    b.enabled_config(json!({"name": "fast", "endpoint": fast.url, "event_types": ["*"]})).await;
    for batch in 0..6 {
        a.ingest(&events(&format!("a{batch}"), "order.paid", 500)).await;
    }
    // A's backlog fills every sender it may hold (a quarter of 64).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slow.arrived() < 16 {
        assert!(tokio::time::Instant::now() < deadline, "{} of A's requests in flight", slow.arrived());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.ingest(&events("b", "order.paid", 20)).await;
    assert_eq!(fast.wait_for(20).await.len(), 20, "B's events all arrive while A's receivers hang");

    // A's deliveries progress at its own receivers' pace, and each has a
    // recorded state meanwhile: none failed, none lost.
    assert!(slow.arrived() > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let a_deliveries = a.list_all("/v1/deliveries").await;
        assert!(a_deliveries.iter().all(|d| d["status"] == "pending" || d["status"] == "succeeded"));
        if a_deliveries.len() == 30_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of A's 30,000 deliveries recorded", a_deliveries.len());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_configuration_ends_its_open_deliveries() {
    let engine = Engine::start().await;
    let (a, b) = two_tenants(&engine).await;
    let failing = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let hanging = Receiver::with(Behaviour { status: 500, delay: Duration::from_secs(3) }).await;
    let rx_b = Receiver::start().await;
    let retried = a
        .enabled_config(json!({"name": "retried", "endpoint": failing.url, "event_types": ["order.*"], "retry": {"max_attempts": 10, "initial_backoff_ms": 60000, "max_backoff_ms": 60000}}))
        .await;
    let in_flight = a
        .enabled_config(json!({"name": "in flight", "endpoint": hanging.url, "event_types": ["order.*"], "retry": {"max_attempts": 10, "initial_backoff_ms": 60000, "max_backoff_ms": 60000}}))
        .await;
    b.enabled_config(json!({"name": "b", "endpoint": rx_b.url, "event_types": ["*"]})).await;
    a.ingest(&events("a", "order.paid", 1)).await;
    failing.wait_for(1).await;
    // One delivery waits for its retry, the other is in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hanging.arrived() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the hanging receiver was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for config in [&retried, &in_flight] {
        a.delete(&format!("/v1/configurations/{}", config["id"].as_str().expect("id"))).await.expect(204);
    }
    b.ingest(&events("b", "order.paid", 5)).await;
    rx_b.wait_for(5).await;

    let ended = a
        .wait_for("/v1/events/a-0", |e| {
            e["deliveries"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["status"] == "failed"))
        })
        .await;
    for d in ended["deliveries"].as_array().expect("deliveries") {
        assert_eq!(d["error_kind"], "configuration_deleted", "{d}");
    }
    let pending = a.list_all("/v1/events?status=pending").await;
    assert!(pending.is_empty(), "the event no longer waits on them: {pending:?}");
    // The request that was in flight finishes later; its late result is
    // logged, and does not bring the delivery back to life.
    hanging.wait_for(1).await;
    let in_flight_id = in_flight["id"].as_str().expect("id");
    a.wait_for(&format!("/v1/attempts?configuration_id={in_flight_id}"), |page| {
        page["items"].as_array().is_some_and(|items| !items.is_empty())
    })
    .await;
    let after = a.get("/v1/events/a-0").await.expect(200);
    assert!(after["deliveries"].as_array().expect("deliveries").iter().all(|d| d["status"] == "failed"), "{after}");
    assert_eq!(failing.settle(Duration::from_secs(2)).await.len(), 1, "no retry after the delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_well_again_decides_its_deferred_events_at_once() {
    // A budget ten times the default: a loop runs ten times as long, and
    // the pause after it is ten times as long too.
    let engine = Engine::start_with(&[("SLUICE_SCRIPT_FUEL", "200000000")]).await;
    let (a, b) = two_tenants(&engine).await;
    let rx_a = Receiver::start().await;
    let rx_b = Receiver::start().await;
    let looping = a.upload_script("hostile-loop").await;
    a.enabled_config(json!({"name": "sometimes loops", "endpoint": rx_a.url, "event_types": ["*"], "script": {"id": looping}})).await;
    b.enabled_config(json!({"name": "b", "endpoint": rx_b.url, "event_types": ["*"]})).await;

    // One event sends the script into its loop, and pauses it; the 200
    // after it, which it lets through, are routed during the pause, each
    // to a slot of its own, a pause apart (a minute and more in all).
    let mut batch = vec![event_body("a-loop", "order.loop", "emea", json!({}))];
    batch.extend(events("a-benign", "benign", 200));
    a.ingest(&batch).await;
    b.ingest(&events("b", "order.paid", 10)).await;
    assert_eq!(rx_b.wait_for(10).await.len(), 10);
    // The first of them to be decided shows the script is well: the rest
    // come due at once instead of waiting for their slots.
    assert_eq!(rx_a.wait_for(200).await.len(), 200, "A's benign events arrive");
    let looped = a.wait_for("/v1/events/a-loop", |e| e["deliveries"][0]["status"] == "script_error").await;
    assert_eq!(looped["deliveries"][0]["error_kind"], "out_of_fuel");
}
