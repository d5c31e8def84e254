//! Input the engine must keep as it came: a receiver answering with a NUL
//! or with bytes that are not UTF-8, names and descriptions holding a NUL,
//! payloads whose exact spelling matters, times past what the store holds,
//! a client sending half a request. Each case has tenant A do the odd
//! thing while tenant B's events all arrive, and A's own deliveries end in
//! a clear, recorded state. Runs on SQLite, and on PostgreSQL with
//! `SLUICE_TEST_BACKEND=postgres` (whose `text` refuses U+0000).

use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::Receiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALL: &[&str] = &["admin"];

/// A receiver answering 200 with exactly `body`, counting requests.
async fn raw_receiver(body: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Bytes::from_static(body) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count, server)
}

/// Tenant B: a receiver and a configuration taking `b.*` events; posts `n`
/// of them.
async fn tenant_b_posts(b: &Api, n: usize) -> Receiver {
    let rx = Receiver::start().await;
    b.enabled_config(json!({"name": "b", "endpoint": rx.url, "event_types": ["b.*"]})).await;
    let events: Vec<Value> = (0..n).map(|i| event_body(&format!("b-{i}"), "b.sent", "", json!({"i": i}))).collect();
    b.ingest(&events).await;
    rx
}

/// The delivery of `event` once it is no longer pending.
async fn settled_delivery(api: &Api, event: &str) -> Value {
    let found =
        api.wait_for(&format!("/v1/events/{event}"), |e| e["deliveries"][0]["status"].as_str().is_some_and(|s| s != "pending")).await;
    found["deliveries"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_nul_or_non_utf8_bytes_are_recorded_as_received() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let (a, b) = (engine.api(&key_a), engine.api(&key_b));

    const NUL: &[u8] = b"ok\0tail";
    const NOT_UTF8: &[u8] = b"\xff\xfe ok \0 \xc3";
    let (nul_url, nul_count, _nul) = raw_receiver(NUL).await;
    let (bytes_url, bytes_count, _bytes) = raw_receiver(NOT_UTF8).await;
    for (name, url) in [("nul", &nul_url), ("bytes", &bytes_url)] {
        a.enabled_config(json!({"name": name, "endpoint": url, "event_types": [format!("{name}.*")], "response_mode": "loose"})).await;
    }
    a.ingest(&[event_body("a-nul", "nul.sent", "", json!({})), event_body("a-bytes", "bytes.sent", "", json!({}))]).await;
    let rx_b = tenant_b_posts(&b, 5).await;

    for (event, body) in [("a-nul", NUL), ("a-bytes", NOT_UTF8)] {
        let delivery = settled_delivery(&a, event).await;
        assert_eq!(delivery["status"], "succeeded", "{event}: {delivery}");
        assert_eq!(delivery["attempts"], 1, "{event}: {delivery}");
        let id = delivery["id"].as_str().expect("delivery id");
        let attempts = a.get(&format!("/v1/attempts?delivery_id={id}")).await.expect(200);
        let items = attempts["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{event}: {attempts}");
        let attempt = a.get(&format!("/v1/attempts/{}", items[0]["id"].as_str().expect("attempt id"))).await.expect(200);
        assert_eq!(attempt["outcome"], "succeeded", "{attempt}");
        assert_eq!(attempt["response_body"], String::from_utf8_lossy(body).as_ref(), "{event}: the text, NUL kept: {attempt}");
        match std::str::from_utf8(body) {
            Ok(_) => assert!(attempt.get("response_body_base64").is_none(), "{attempt}"),
            Err(_) => {
                let exact = base64::engine::general_purpose::STANDARD
                    .decode(attempt["response_body_base64"].as_str().expect("the bytes, as base64"))
                    .expect("base64");
                assert_eq!(exact, body, "{event}: the exact bytes");
            }
        }
    }
    assert_eq!(rx_b.wait_for(5).await.len(), 5, "all of B's events arrive");
    // Recorded once: the delivery is not sent again when its lease runs out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(nul_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(bytes_count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_descriptions_with_nul_round_trip() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let odd = "a\0b \u{FFFF}0 end";
    let tenant = operator.post("/v1/tenants", &json!({"name": format!("tenant {odd}")})).await.expect(201);
    assert_eq!(tenant["name"], format!("tenant {odd}"));
    let tenant_id = tenant["id"].as_str().expect("tenant id");
    let listed = operator.list_all("/v1/tenants").await;
    assert!(listed.iter().any(|t| t["id"] == tenant_id && t["name"] == format!("tenant {odd}")), "{listed:?}");

    let key = operator.post(&format!("/v1/tenants/{tenant_id}/keys"), &json!({"name": odd, "scopes": ["admin"]})).await.expect(201);
    assert_eq!(key["name"], odd);
    let a = engine.api(key["secret"].as_str().expect("secret"));
    let keys = a.get("/v1/keys").await.expect(200);
    assert_eq!(keys["items"][0]["name"], odd, "{keys}");

    let described = a
        .send("PUT", "/v1/event-types/order.paid", Some(("application/json", json!({"description": odd}).to_string().into_bytes())), &[])
        .await;
    assert_eq!(described.expect(200)["description"], odd);
    let types = a.get("/v1/event-types").await.expect(200);
    assert!(types.to_string().contains("a\\u0000b"), "{types}");

    // Tenant B is not disturbed.
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let rx_b = tenant_b_posts(&engine.api(&key_b), 3).await;
    assert_eq!(rx_b.wait_for(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_reach_receivers_and_views_as_posted() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let (a, b) = (engine.api(&key_a), engine.api(&key_b));
    let rx = Receiver::start().await;
    a.enabled_config(json!({"name": "exact", "endpoint": rx.url, "event_types": ["x.*"]})).await;

    let payload = r#"{"n":1.10,"big":123456789012345678901234567890,"z":1e2,"a":[-0.0,"\u0000"]}"#;
    let single = format!(r#"{{"id":"one","type":"x.sent","occurred_at":"2026-11-22T11:30:00Z","payload":{payload}}}"#);
    a.post_raw("/v1/events", "application/json", single.clone()).await.expect(202);
    let batch = format!("[ {}, {} ]", single.replace("\"one\"", "\"two\""), single.replace("\"one\"", "\"three\""));
    a.post_raw("/v1/events", "application/json", batch).await.expect(202);
    let rx_b = tenant_b_posts(&b, 3).await;

    for got in rx.wait_for(3).await {
        let text = String::from_utf8(got.body.to_vec()).expect("UTF-8");
        assert!(text.contains(&format!(r#""payload":{payload}"#)), "the payload as posted: {text}");
    }
    for path in ["/v1/events/one", "/v1/events?type=x.sent"] {
        let raw = a.get(path).await;
        let text = raw.body.to_string();
        assert_eq!(raw.status, 200);
        // `body` went through a `Value`; check the bytes themselves.
        let bytes = reqwest::Client::new()
            .get(format!("{}{path}", engine.url))
            .bearer_auth(&key_a)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(bytes.contains(&format!(r#""payload":{payload}"#)), "{path} shows the payload as posted: {bytes} ({text})");
    }
    assert_eq!(rx_b.wait_for(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_errors_keep_their_codes() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let good = event_body("ok-1", "x.sent", "", json!({}));
    api.post_raw("/v1/events", "application/json", "{").await.expect_error(400, "malformed_json");
    api.post_raw("/v1/events", "application/json", "\"x\"").await.expect_error(400, "invalid_request");
    api.post_raw("/v1/events", "application/json", "[]").await.expect_error(400, "empty_batch");
    let mut extra = good.clone();
    extra["extra"] = json!(1);
    let e = api.post("/v1/events", &json!([good, extra])).await.expect_error(400, "unknown_field");
    assert!(e["message"].as_str().is_some_and(|m| m.starts_with("event 1:")), "{e}");
    let e = api.post("/v1/events", &json!([good, 5])).await.expect_error(400, "invalid_event");
    assert!(e["message"].as_str().is_some_and(|m| m.starts_with("event 1:")), "{e}");
    let many: Vec<Value> = (0..501).map(|i| event_body(&format!("m-{i}"), "x.sent", "", json!({}))).collect();
    api.post("/v1/events", &Value::from(many)).await.expect_error(413, "batch_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_the_store_cannot_hold_are_refused_at_the_edge() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let a = engine.api(&key_a);
    for at in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2262-04-12T00:00:00Z", "1677-09-21T00:00:00Z"] {
        let mut event = event_body("far", "x.sent", "", json!({}));
        event["occurred_at"] = json!(at);
        let e = a.post("/v1/events", &event).await.expect_error(422, "invalid_event");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("occurred_at")), "{at}: {e}");
    }
    let mut near_edge = event_body("edge", "x.sent", "", json!({}));
    near_edge["occurred_at"] = json!("2262-04-10T00:00:00Z");
    a.post("/v1/events", &json!([near_edge])).await.expect(202);
    let stored = a.get("/v1/events/edge").await.expect(200);
    assert_eq!(stored["occurred_at"], "2262-04-10T00:00:00Z");
    let rx_b = tenant_b_posts(&engine.api(&key_b), 3).await;
    assert_eq!(rx_b.wait_for(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_half_a_request_is_cut_off() {
    let engine = Engine::start_with(&[("SLUICE_HEADER_READ_TIMEOUT", "1s")]).await;
    let operator = engine.admin();
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let addr = engine.url.trim_start_matches("http://").to_owned();

    // Tenant A (or anyone) opens connections and sends half a request line.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(b"GET /v1/eve").await.expect("write");
        slow.push(stream);
    }
    let rx_b = tenant_b_posts(&engine.api(&key_b), 3).await;
    assert_eq!(rx_b.wait_for(3).await.len(), 3, "B is served meanwhile");

    let started = Instant::now();
    for mut stream in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection was not closed");
        // Closed without serving anything but, at most, an error status.
        let text = String::from_utf8_lossy(&rest);
        assert!(rest.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "closed after about the timeout: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_script_leaves_no_compiled_code_behind() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let (a, b) = (engine.api(&key_a), engine.api(&key_b));
    // Both tenants upload the same bytes: one compiled copy, kept while
    // either still has the script.
    let script_a = a.upload_script("paid-orders").await;
    let script_b = b.upload_script("paid-orders").await;
    let compiled = engine.data_dir().join("data/compiled");
    let cached = || std::fs::read_dir(&compiled).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached(), 1, "compiled once, cached on disk");
    a.delete(&format!("/v1/scripts/{script_a}")).await.expect(204);
    assert_eq!(cached(), 1, "B still runs it");
    b.get(&format!("/v1/scripts/{script_b}")).await.expect(200);
    b.delete(&format!("/v1/scripts/{script_b}")).await.expect(204);
    assert_eq!(cached(), 0, "the last copy's code is dropped with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_uploads_compiles_in_turn_while_others_are_served() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (_, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let (a, b) = (engine.api(&key_a), engine.api(&key_b));
    // A uploads every script it has, several times, all at once: each is
    // compiled (on a few blocking threads, never on the API's), none lost.
    let names = ["paid-orders", "redact-pii", "reshape", "store-router", "hostile-loop", "hostile-memory"];
    let uploads: Vec<_> = (0..3)
        .flat_map(|_| names)
        .map(|name| {
            let a = engine.api(&key_a);
            tokio::spawn(async move { a.upload_script(name).await })
        })
        .collect();
    let rx = tenant_b_posts(&b, 20).await;
    assert_eq!(rx.wait_for(20).await.len(), 20, "B's events all arrive during the burst");
    let mut ids = Vec::new();
    for upload in uploads {
        ids.push(upload.await.expect("the upload task"));
    }
    assert_eq!(ids.len(), 18);
    assert_eq!(a.list_all("/v1/scripts").await.len(), 18, "every upload stored");
}
