//! Bad input over the real API: each mistake gets its own status and stable
//! code, and nothing is stored or half-written.

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};

async fn event_count(api: &Api) -> usize {
    api.list_all("/v1/events").await.len()
}

fn config(endpoint: &str) -> Value {
    json!({"name": "c", "endpoint": endpoint, "event_types": ["order.*"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused_and_nothing_stored() {
    let engine = Engine::start().await;
    let api = engine.admin();
    for body in [r#"{"id": "e1", "type": "order.paid""#, "not json", r#"[{"id": "e1",}]"#] {
        api.post_raw("/v1/events", "application/json", body).await.expect_error(400, "malformed_json");
    }
    api.post_raw("/v1/configurations", "application/json", "{\"name\": ").await.expect_error(400, "malformed_json");
    api.post_raw("/v1/events", "application/json", "42").await.expect_error(400, "invalid_request");
    api.post("/v1/events", &json!([])).await.expect_error(400, "empty_batch");
    assert_eq!(event_count(&api).await, 0);
    assert!(api.list_all("/v1/configurations").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_where_they_matter() {
    let engine = Engine::start().await;
    let api = engine.admin();
    // A misspelt configuration field would silently do nothing: refused.
    let mut c = config("http://127.0.0.1:9/hook");
    c["evnet_types"] = json!(["order.paid"]);
    let e = api.post("/v1/configurations", &c).await.expect_error(400, "unknown_field");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("evnet_types")), "{e}");
    let mut c = config("http://127.0.0.1:9/hook");
    c["authorization"] = json!({"type": "bearer", "tokne": "x"});
    api.post("/v1/configurations", &c).await.expect_error(400, "unknown_field");

    // An unknown event field in one event of a batch refuses the whole batch.
    let good = event_body("ok-1", "order.paid", "emea", json!({}));
    let mut bad = event_body("bad-1", "order.paid", "emea", json!({}));
    bad["colour"] = json!("red");
    let e = api.post("/v1/events", &json!([good, bad])).await.expect_error(400, "unknown_field");
    assert!(e["message"].as_str().is_some_and(|m| m.starts_with("event 1:")), "names the event: {e}");
    assert_eq!(event_count(&api).await, 0, "all or nothing");

    // Invalid values (not unknown fields) get their own code.
    let mut bad = event_body("bad-2", "order.paid", "emea", json!({}));
    bad["occurred_at"] = json!("yesterday");
    api.post("/v1/events", &bad).await.expect_error(422, "invalid_event");
    // Unknown query filters are refused too, not ignored.
    api.get("/v1/events?colour=red").await.expect_error(400, "unknown_filter");
    api.get("/v1/nowhere").await.expect_error(404, "not_found");
    assert_eq!(event_count(&api).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_batches_are_refused() {
    let engine =
        Engine::start_with(&[("SLUICE_MAX_BODY_BYTES", "4096"), ("SLUICE_MAX_BATCH", "10"), ("SLUICE_MAX_SCRIPT_BYTES", "65536")]).await;
    let api = engine.admin();
    let big = event_body("big", "order.paid", "emea", json!({"blob": "x".repeat(5000)}));
    api.post("/v1/events", &big).await.expect_error(413, "payload_too_large");
    let batch: Vec<Value> = (0..11).map(|i| event_body(&format!("b{i}"), "order.paid", "emea", json!({}))).collect();
    api.post("/v1/events", &json!(batch)).await.expect_error(413, "batch_too_large");
    assert_eq!(event_count(&api).await, 0);
    // Just under both limits passes.
    api.ingest(&batch[..10]).await;
    assert_eq!(event_count(&api).await, 10);

    // paid-orders is over 100 KB: over this engine's script cap.
    let answer = api.post_raw("/v1/scripts?name=big", "application/wasm", sluice_tests::script_bytes("paid-orders")).await;
    answer.expect_error(413, "script_too_large");
    let small = api.post_raw("/v1/scripts?name=small", "application/wasm", sluice_tests::script_bytes("store-router")).await;
    small.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_and_type_patterns_are_refused() {
    let engine = Engine::start().await;
    let api = engine.admin();
    for endpoint in ["not a url", "ftp://127.0.0.1/x", "http://", "/relative/path", "http://user:pw@127.0.0.1/x"] {
        let e = api.post("/v1/configurations", &config(endpoint)).await.expect_error(422, "invalid_endpoint");
        assert!(!e.to_string().contains("pw@"), "credentials echoed: {e}");
    }
    for pattern in ["order.*.paid", "ord er", "", "*order", "order..paid"] {
        let mut c = config("http://127.0.0.1:9/hook");
        c["event_types"] = json!([pattern]);
        api.post("/v1/configurations", &c).await.expect_error(422, "invalid_event_type_pattern");
    }
    assert!(api.list_all("/v1/configurations").await.is_empty(), "nothing half-written");
    // The good forms pass.
    let mut c = config("https://hooks.example.com/in");
    c["event_types"] = json!(["order.*", "customer.created", "*"]);
    api.post("/v1/configurations", &c).await.expect(201);
    // Names are unique per tenant.
    let e = api.post("/v1/configurations", &c).await.expect_error(409, "conflict");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("name")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_is_refused() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let created = api.post("/v1/configurations", &config("http://127.0.0.1:9/a")).await;
    assert_eq!(created.headers.get("etag").and_then(|v| v.to_str().ok()), Some("\"1\""));
    let created = created.expect(201);
    let path = format!("/v1/configurations/{}", created["id"].as_str().expect("id"));
    assert_eq!(created["status"], "disabled", "created disabled");

    // Without If-Match an update is refused: blind overwrites lose changes.
    let update = config("http://127.0.0.1:9/b");
    let answer = api.send("PUT", &path, Some(("application/json", update.to_string().into_bytes())), &[]).await;
    answer.expect_error(428, "if_match_required");

    let updated = api.put(&path, 1, &update).await.expect(200);
    assert_eq!((updated["version"].as_i64(), updated["endpoint"].as_str()), (Some(2), Some("http://127.0.0.1:9/b")));
    // A writer still holding version 1 is refused and changes nothing.
    let e = api.put(&path, 1, &config("http://127.0.0.1:9/c")).await.expect_error(409, "stale_version");
    assert!(e["message"].as_str().is_some_and(|m| m.contains('2')), "names the current version: {e}");
    let now = api.get(&path).await.expect(200);
    assert_eq!((now["version"].as_i64(), now["endpoint"].as_str()), (Some(2), Some("http://127.0.0.1:9/b")));
    // Enable and delete honour If-Match too.
    let answer = api.send("POST", &format!("{path}/enable"), None, &[("if-match", "\"1\"")]).await;
    answer.expect_error(409, "stale_version");
    let answer = api.send("DELETE", &path, None, &[("if-match", "\"1\"")]).await;
    answer.expect_error(409, "stale_version");
    api.send("PUT", &path, Some(("application/json", update.to_string().into_bytes())), &[("if-match", "soon")])
        .await
        .expect_error(400, "invalid_if_match");
    api.get(&path).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_that_do_not_implement_the_world_are_refused() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let e = api
        .post_raw("/v1/scripts?name=bad", "application/wasm", sluice_tests::script_bytes("hostile-nonconforming"))
        .await
        .expect_error(422, "world_mismatch");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("sluice:event-export/filter@0.1.0")), "names what is missing: {e}");
    api.post_raw("/v1/scripts?name=junk", "application/wasm", b"\0asm junk".to_vec()).await.expect_error(422, "invalid_wasm");
    api.post_raw("/v1/scripts?name=text", "text/plain", "hello").await.expect_error(415, "unsupported_media_type");
    assert!(api.list_all("/v1/scripts").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_use_cannot_be_deleted() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let script = api.upload_script("paid-orders").await;
    let mut c = config("http://127.0.0.1:9/hook");
    c["script"] = json!({"id": script});
    let created = api.post("/v1/configurations", &c).await.expect(201);
    api.delete(&format!("/v1/scripts/{script}")).await.expect_error(409, "script_in_use");
    api.get(&format!("/v1/scripts/{script}")).await.expect(200);
    // Once no configuration uses it, it goes.
    api.delete(&format!("/v1/configurations/{}", created["id"].as_str().expect("id"))).await.expect(204);
    api.delete(&format!("/v1/scripts/{script}")).await.expect(204);
    api.get(&format!("/v1/scripts/{script}")).await.expect_error(404, "not_found");
    // A configuration cannot name a script that does not exist.
    api.post("/v1/configurations", &c).await.expect_error(422, "unknown_reference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_monthly_quota_gets_429_and_nothing_is_stored() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let tenant = operator.post("/v1/tenants", &json!({"name": "small", "monthly_quota": 3})).await.expect(201);
    let key = operator
        .post(&format!("/v1/tenants/{}/keys", tenant["id"].as_str().expect("id")), &json!({"name": "k", "scopes": ["admin"]}))
        .await
        .expect(201);
    let api = engine.api(key["secret"].as_str().expect("secret"));
    let events: Vec<Value> = (0..4).map(|i| event_body(&format!("q{i}"), "order.paid", "emea", json!({}))).collect();
    api.ingest(&events[..2]).await;
    // Two more would make four: the whole batch is refused.
    api.post("/v1/events", &json!(events[2..4])).await.expect_error(429, "quota_exceeded");
    assert_eq!(event_count(&api).await, 2);
    // Repeats of stored ids do not count; one more new event fits.
    let answer = api.post("/v1/events", &json!([events[0], events[2]])).await.expect(202);
    assert_eq!(answer["events"], json!([{"id": "q0", "status": "duplicate"}, {"id": "q2", "status": "accepted"}]));
    api.post("/v1/events", &events[3]).await.expect_error(429, "quota_exceeded");
    assert_eq!(event_count(&api).await, 3);

    // The operator raises the quota: the next request fits at once.
    let id = tenant["id"].as_str().expect("id");
    api.put(&format!("/v1/tenants/{id}"), 1, &json!({"name": "small", "monthly_quota": 10})).await.expect_error(403, "forbidden");
    for bad in [json!({"name": "small", "monthly_quota": -1}), json!({"name": "", "monthly_quota": 1})] {
        assert_eq!(operator.put(&format!("/v1/tenants/{id}"), 1, &bad).await.status, 422, "{bad}");
    }
    let raised = operator.put(&format!("/v1/tenants/{id}"), 1, &json!({"name": "small", "monthly_quota": 4})).await.expect(200);
    assert_eq!(raised["monthly_quota"], 4);
    api.ingest(&events[3..4]).await;
    assert_eq!(event_count(&api).await, 4);
    operator.put("/v1/tenants/ten_00000000000000000000000000000000", 1, &json!({"name": "x"})).await.expect_error(404, "not_found");
}
