//! Operational notices: a tenant's configuration that selects `sluice.*`
//! hears of the tenant's own trouble (a delivery that exhausted its
//! attempts, a configuration disabled, a receiver down) as signed
//! deliveries, verified with the Standard Webhooks library like any other;
//! another tenant hears nothing of it; services cannot post the reserved
//! types; a failing receiver of notices raises no notice about them.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};
use sluice_tests::verify::with_library;

/// A configuration that delivers the tenant's notices to `rx`; its secret.
async fn notices_to(api: &Api, rx: &Receiver) -> String {
    let ops = api.enabled_config(json!({"name": "ops", "endpoint": rx.url, "event_types": ["sluice.*"]})).await;
    ops["signing"]["secret"].as_str().expect("the secret, shown once").to_owned()
}

/// The notices `rx` got, each checked with the Standard Webhooks library.
fn notices(rx: &Receiver, secret: &str) -> Vec<Value> {
    rx.received()
        .iter()
        .map(|r| {
            assert_eq!(with_library(secret, r).0, Some(true), "a notice's signature verifies");
            r.json()
        })
        .collect()
}

async fn wait_for_notice(rx: &Receiver, secret: &str, event_type: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = notices(rx, secret).into_iter().find(|n| n["type"] == event_type) {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {event_type} notice; got {:?}", notices(rx, secret));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_and_the_configuration_it_disabled_are_told_to_the_tenant_alone() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let (_, key) = admin.tenant_with_key("acme", &["admin"]).await;
    let acme = engine.api(&key);
    let ops_rx = Receiver::start().await;
    let secret = notices_to(&acme, &ops_rx).await;
    // Another tenant's notice receiver: it must hear nothing of acme's trouble.
    let (_, other_key) = admin.tenant_with_key("other", &["admin"]).await;
    let other_rx = Receiver::start().await;
    notices_to(&engine.api(&other_key), &other_rx).await;

    let failing = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let flaky = acme
        .enabled_config(json!({
            "name": "flaky",
            "endpoint": failing.url,
            "event_types": ["order.*"],
            "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 100},
            "auto_disable": {"after_failures": 2, "failing_for_ms": 0},
        }))
        .await;
    let flaky_id = flaky["id"].as_str().expect("id");
    acme.ingest(&[event_body("o-1", "order.paid", "emea", json!({"amount": 1}))]).await;

    let failed = wait_for_notice(&ops_rx, &secret, "sluice.delivery.failed").await;
    assert_eq!(failed["payload"]["event_id"], "o-1");
    assert_eq!(failed["payload"]["event_type"], "order.paid");
    assert_eq!(failed["payload"]["configuration_id"], flaky_id);
    assert_eq!(failed["payload"]["attempts"], 2);
    assert_eq!(failed["payload"]["response_status"], 500);
    let delivery = acme.get("/v1/events/o-1").await.expect(200)["deliveries"][0].clone();
    assert_eq!(failed["payload"]["delivery_id"], delivery["id"]);
    assert_eq!(delivery["status"], "failed");

    let disabled = wait_for_notice(&ops_rx, &secret, "sluice.configuration.disabled").await;
    assert_eq!(disabled["payload"]["configuration_id"], flaky_id);
    assert_eq!(disabled["payload"]["configuration_name"], "flaky");
    assert!(disabled["payload"]["reason"].as_str().is_some_and(|r| r.contains("failed attempts in a row")), "{disabled}");
    assert_eq!(acme.get(&format!("/v1/configurations/{flaky_id}")).await.expect(200)["status"], "disabled");

    // Notices are the tenant's own events, listed like any.
    let listed = acme.get("/v1/events?type=sluice.delivery.failed").await.expect(200);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ops_rx.received().len(), 2, "one notice each: {:?}", notices(&ops_rx, &secret));
    assert!(other_rx.received().is_empty(), "another tenant hears nothing of it");
    assert!(engine.api(&other_key).get("/v1/events").await.expect(200)["items"].as_array().is_some_and(Vec::is_empty));

    // Services cannot post the reserved types.
    let refused = acme.post("/v1/events", &event_body("fake", "sluice.delivery.failed", "emea", json!({}))).await;
    let body = refused.expect_error(422, "reserved_event_type");
    assert_eq!(body["field"], "type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_is_told_once_per_streak_and_failing_notices_raise_no_more() {
    let engine = Engine::start().await;
    let api = engine.admin();
    // The notices' own receiver fails too: their failures raise nothing.
    let ops_rx = Receiver::with(Behaviour { status: 503, delay: Duration::ZERO }).await;
    let ops = api
        .enabled_config(json!({
            "name": "ops",
            "endpoint": ops_rx.url,
            "event_types": ["sluice.*"],
            "retry": {"max_attempts": 1, "initial_backoff_ms": 50, "max_backoff_ms": 100},
            "auto_disable": {"after_failures": 0},
        }))
        .await;
    let failing = Receiver::with(Behaviour { status: 500, delay: Duration::ZERO }).await;
    let down = api
        .enabled_config(json!({
            "name": "down",
            "endpoint": failing.url,
            "event_types": ["order.*"],
            "retry": {"max_attempts": 1, "initial_backoff_ms": 50, "max_backoff_ms": 100},
            "auto_disable": {"after_failures": 0},
        }))
        .await;
    let down_id = down["id"].as_str().expect("id");
    // 25 deliveries failing once each: the breaker opens at the 20th.
    let events: Vec<Value> = (0..25).map(|i| event_body(&format!("d{i}"), "order.paid", "emea", json!({}))).collect();
    api.ingest(&events).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let notice = loop {
        // The notices' own (failing) receiver may be told of too.
        let found = api.list_all("/v1/events?type=sluice.receiver.down").await;
        if let Some(n) = found.into_iter().find(|n| n["payload"]["configuration_id"] == down_id) {
            break n;
        }
        assert!(tokio::time::Instant::now() < deadline, "no receiver.down notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(notice["payload"]["failed_attempts"].as_i64().is_some_and(|n| n >= 20), "{notice}");
    // The notices reached the (failing) ops receiver, signed like any delivery.
    ops_rx.wait_for(1).await;
    let secret = ops["signing"]["secret"].as_str().expect("secret");
    assert!(ops_rx.received().iter().all(|r| with_library(secret, r).0 == Some(true)));

    // Every order that failed told of itself (the breaker's probes go on
    // failing meanwhile: the two counts meet between them), and no notice
    // told of a notice, though the notices' own receiver fails each one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let told = api.list_all("/v1/events?type=sluice.delivery.failed").await;
        let failed_orders = api.list_all(&format!("/v1/deliveries?configuration_id={down_id}&status=failed")).await;
        assert!(told.iter().all(|n| n["payload"]["event_type"] == "order.paid"), "a notice about a notice: {told:?}");
        if told.len() == failed_orders.len() && told.len() >= 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} notices for {} failed deliveries", told.len(), failed_orders.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down_notices = api.list_all("/v1/events?type=sluice.receiver.down").await;
    assert_eq!(down_notices.iter().filter(|n| n["payload"]["configuration_id"] == down_id).count(), 1, "one notice per streak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_quota_is_told_at_80_and_100_percent_and_notices_use_none_of_it() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let tenant = admin.post("/v1/tenants", &json!({"name": "metered", "monthly_quota": 10})).await.expect(201);
    let tenant_id = tenant["id"].as_str().expect("tenant id");
    let key = admin.post(&format!("/v1/tenants/{tenant_id}/keys"), &json!({"name": "k", "scopes": ["admin"]})).await.expect(201);
    let api = engine.api(key["secret"].as_str().expect("secret"));
    let ops_rx = Receiver::start().await;
    let secret = notices_to(&api, &ops_rx).await;
    let events: Vec<Value> = (0..10).map(|i| event_body(&format!("q{i}"), "order.paid", "emea", json!({}))).collect();

    api.ingest(&events[..7]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ops_rx.received().is_empty(), "70 % is not yet worth telling");
    api.ingest(&events[7..8]).await;
    let at_80 = wait_for_notice(&ops_rx, &secret, "sluice.quota.reached").await;
    assert_eq!((at_80["payload"]["percent"].as_i64(), at_80["payload"]["events"].as_i64()), (Some(80), Some(8)));
    assert_eq!(at_80["payload"]["monthly_quota"], 10);
    api.ingest(&events[8..9]).await;
    // The notice did not use the quota: the tenant's tenth event still fits.
    api.ingest(&events[9..10]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !notices(&ops_rx, &secret).iter().any(|n| n["payload"]["percent"] == 100) {
        assert!(tokio::time::Instant::now() < deadline, "no 100 % notice: {:?}", notices(&ops_rx, &secret));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.post("/v1/events", &json!([event_body("q10", "order.paid", "emea", json!({}))])).await.expect_error(429, "quota_exceeded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told: Vec<i64> = notices(&ops_rx, &secret).iter().filter_map(|n| n["payload"]["percent"].as_i64()).collect();
    assert_eq!(told, [80, 100], "each once, the refusal adding none");
}

/// A self-signed client certificate and its key (PEM), valid for `days`.
fn client_certificate(days: i64) -> Value {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.distinguished_name.push(rcgen::DnType::CommonName, "sluice client");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    json!({"type": "client_certificate", "certificate_pem": cert.pem(), "private_key_pem": key.serialize_pem()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_near_its_expiry_is_told_once() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let ops_rx = Receiver::start().await;
    let secret = notices_to(&api, &ops_rx).await;
    let rx = Receiver::start().await;
    let spec = |name: &str, days: i64| json!({"name": name, "endpoint": rx.url, "event_types": ["x.*"], "authorization": client_certificate(days)});
    let soon = api.post("/v1/configurations", &spec("soon", 10)).await.expect(201);
    api.post("/v1/configurations", &spec("later", 100)).await.expect(201);
    let notice = wait_for_notice(&ops_rx, &secret, "sluice.certificate.expiring").await;
    assert_eq!(notice["payload"]["configuration_id"], soon["id"]);
    assert_eq!(notice["payload"]["configuration_name"], "soon");
    assert_eq!(
        notice["payload"]["expires_at"].as_str().map(|t| &t[..10]),
        soon["authorization"]["certificate_expires_at"].as_str().map(|t| &t[..10])
    );
    // Saved again with the same certificate: not told twice.
    let id = soon["id"].as_str().expect("id");
    let current = api.get(&format!("/v1/configurations/{id}")).await.expect(200);
    api.put(
        &format!("/v1/configurations/{id}"),
        current["version"].as_i64().expect("version"),
        &json!({"name": "soon", "endpoint": rx.url, "event_types": ["x.*"]}),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told = api.list_all("/v1/events?type=sluice.certificate.expiring").await;
    assert_eq!(told.len(), 1, "{told:?}");
}
