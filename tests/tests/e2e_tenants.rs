//! Tenant isolation and key scopes, over the real API: a key of one tenant
//! reaches nothing of another, and a key does only what its scopes allow.

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::Receiver;

const ALL: &[&str] = &["admin"];

/// Everything one tenant owns, created through the API.
struct Owned {
    script: String,
    config: String,
    config_version: i64,
    event: String,
    delivery: String,
    attempt: String,
    key: String,
}

async fn populate(api: &Api, rx: &Receiver, event_id: &str) -> Owned {
    let script = api.upload_script("paid-orders").await;
    let config = api
        .enabled_config(json!({
            "name": "orders",
            "endpoint": rx.url,
            "event_types": ["order.*"],
            "script": {"id": script, "params": {"min_amount": "1"}},
        }))
        .await;
    let config = config["id"].as_str().expect("id").to_owned();
    api.ingest(&[event_body(event_id, "order.paid", "emea", json!({"amount": 10}))]).await;
    let event = api.wait_for(&format!("/v1/events/{event_id}"), |e| e["deliveries"][0]["status"] == "succeeded").await;
    let delivery = event["deliveries"][0]["id"].as_str().expect("delivery id").to_owned();
    let attempts = api.get(&format!("/v1/attempts?delivery_id={delivery}")).await.expect(200);
    let attempt = attempts["items"][0]["id"].as_str().expect("attempt id").to_owned();
    let key = api.post("/v1/keys", &json!({"name": "reader", "scopes": ["logs:read"]})).await.expect(201);
    let version = api.get(&format!("/v1/configurations/{config}")).await.expect(200)["version"].as_i64().expect("version");
    Owned {
        script,
        config,
        config_version: version,
        event: event_id.to_owned(),
        delivery,
        attempt,
        key: key["id"].as_str().expect("key id").to_owned(),
    }
}

fn ids_in(list: &Value) -> Vec<String> {
    list["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reaches_nothing_of_another() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (tenant_a, key_a) = operator.tenant_with_key("tenant a", ALL).await;
    let (tenant_b, key_b) = operator.tenant_with_key("tenant b", ALL).await;
    let (a, b) = (engine.api(&key_a), engine.api(&key_b));
    let rx = Receiver::start().await;
    let owned_b = populate(&b, &rx, "shared-id").await;

    // Every endpoint that names one of B's objects answers A with 404, never
    // 403 (which would confirm the object exists).
    let config_body = json!({"name": "stolen", "endpoint": rx.url, "event_types": ["*"]});
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/scripts/{}", owned_b.script), None),
        ("DELETE", format!("/v1/scripts/{}", owned_b.script), None),
        ("POST", format!("/v1/scripts/{}/test", owned_b.script), Some(json!({"event": event_body("x", "order.paid", "emea", json!({}))}))),
        ("GET", format!("/v1/configurations/{}", owned_b.config), None),
        ("PUT", format!("/v1/configurations/{}", owned_b.config), Some(config_body.clone())),
        ("DELETE", format!("/v1/configurations/{}", owned_b.config), None),
        ("POST", format!("/v1/configurations/{}/enable", owned_b.config), None),
        ("POST", format!("/v1/configurations/{}/disable", owned_b.config), None),
        ("GET", format!("/v1/events/{}", owned_b.event), None),
        ("GET", format!("/v1/deliveries/{}", owned_b.delivery), None),
        ("GET", format!("/v1/attempts/{}", owned_b.attempt), None),
        ("DELETE", format!("/v1/keys/{}", owned_b.key), None),
    ];
    for (method, path, body) in attempts {
        let headers: &[(&str, &str)] = if method == "PUT" { &[("if-match", "\"1\"")] } else { &[] };
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let answer = a.send(method, &path, body, headers).await;
        assert_eq!(answer.status, 404, "{method} {path} by another tenant: {}", answer.body);
        assert_eq!(answer.body["code"], "not_found", "{method} {path}");
    }

    // Lists show A nothing of B's.
    for list in ["/v1/scripts", "/v1/configurations", "/v1/events", "/v1/deliveries", "/v1/attempts"] {
        let seen = ids_in(&a.get(list).await.expect(200));
        assert!(seen.is_empty(), "{list} shows another tenant's objects: {seen:?}");
    }
    let keys = a.get("/v1/keys").await.expect(200);
    let keys = keys["items"].as_array().expect("items");
    assert!(!keys.is_empty() && keys.iter().all(|k| k["tenant_id"] == tenant_a.as_str()), "{keys:?}");
    let filtered = a.get(&format!("/v1/deliveries?configuration_id={}", owned_b.config)).await.expect(200);
    assert!(ids_in(&filtered).is_empty());
    let types = a.get("/v1/event-types").await.expect(200);
    assert_eq!(types["items"], json!([]), "event types are per tenant");

    // A configuration of A cannot use B's script.
    let answer = a
        .post("/v1/configurations", &json!({"name": "x", "endpoint": rx.url, "event_types": ["*"], "script": {"id": owned_b.script}}))
        .await;
    answer.expect_error(422, "unknown_reference");

    // Event ids are per tenant: A's event with B's id is A's own.
    let answer = a.post("/v1/events", &event_body("shared-id", "order.paid", "emea", json!({"amount": 10}))).await.expect(202);
    assert_eq!(answer["events"][0]["status"], "accepted");
    let mine = a.get("/v1/events/shared-id").await.expect(200);
    assert_eq!(mine["deliveries"], json!([]), "A has no configuration: {mine}");

    // A tenant's admin is not the operator.
    a.get("/v1/tenants").await.expect_error(403, "forbidden");
    a.post("/v1/tenants", &json!({"name": "mine"})).await.expect_error(403, "forbidden");
    a.post(&format!("/v1/tenants/{tenant_b}/keys"), &json!({"name": "x", "scopes": ["admin"]})).await.expect_error(403, "forbidden");

    // B's objects are all still there, unchanged, and B's key still works.
    b.get(&format!("/v1/scripts/{}", owned_b.script)).await.expect(200);
    let config = b.get(&format!("/v1/configurations/{}", owned_b.config)).await.expect(200);
    assert_eq!((config["version"].as_i64(), config["status"].as_str()), (Some(owned_b.config_version), Some("enabled")));
    let keys = ids_in(&b.get("/v1/keys").await.expect(200));
    assert!(keys.contains(&owned_b.key));
    let b_event = b.get("/v1/events/shared-id").await.expect(200);
    assert_eq!(b_event["payload"]["amount"], 10);
    assert_eq!(b_event["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(rx.received().len(), 1, "only B's event reached B's receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_do_only_what_their_scopes_allow() {
    let engine = Engine::start().await;
    let operator = engine.admin();
    let (_, admin_key) = operator.tenant_with_key("scoped", ALL).await;
    let admin = engine.api(&admin_key);
    let make = |scopes: Value| {
        let admin = admin.clone();
        async move {
            let key = admin.post("/v1/keys", &json!({"name": "k", "scopes": scopes})).await.expect(201);
            assert!(key["secret"].as_str().is_some_and(|s| s.starts_with("sk_")), "the secret is shown on creation");
            (key["id"].as_str().expect("id").to_owned(), key["secret"].as_str().expect("secret").to_owned())
        }
    };
    let (_, writer) = make(json!(["events:write"])).await;
    let (_, reader) = make(json!(["configurations:read", "logs:read"])).await;
    let (writer, reader) = (engine.api(&writer), engine.api(&reader));
    let rx = Receiver::start().await;
    let config = json!({"name": "c", "endpoint": rx.url, "event_types": ["*"]});

    // events:write posts events and nothing else.
    writer.post("/v1/events", &event_body("s1", "order.paid", "emea", json!({}))).await.expect(202);
    writer.get("/v1/events").await.expect_error(403, "forbidden");
    writer.get("/v1/configurations").await.expect_error(403, "forbidden");
    writer.post("/v1/configurations", &config).await.expect_error(403, "forbidden");
    writer.post_raw("/v1/scripts", "application/wasm", sluice_tests::script_bytes("paid-orders")).await.expect_error(403, "forbidden");
    writer.post("/v1/keys", &json!({"name": "escalate", "scopes": ["admin"]})).await.expect_error(403, "forbidden");

    // Readers read and change nothing.
    reader.get("/v1/events/s1").await.expect(200);
    reader.get("/v1/configurations").await.expect(200);
    reader.post("/v1/configurations", &config).await.expect_error(403, "forbidden");
    reader.post("/v1/events", &event_body("s2", "order.paid", "emea", json!({}))).await.expect_error(403, "forbidden");
    reader.get("/v1/keys").await.expect_error(403, "forbidden");
    assert_eq!(admin.get("/v1/events/s2").await.status, 404, "a refused ingest stores nothing");

    // No key, an unknown key, a revoked key: 401.
    engine.anonymous().get("/v1/events").await.expect_error(401, "unauthorized");
    engine.api("sk_not_a_key_of_this_engine_at_all_000000").get("/v1/events").await.expect_error(401, "unauthorized");
    let (revoked_id, revoked_secret) = make(json!(["logs:read"])).await;
    let revoked = engine.api(&revoked_secret);
    revoked.get("/v1/events").await.expect(200);
    admin.delete(&format!("/v1/keys/{revoked_id}")).await.expect(200);
    revoked.get("/v1/events").await.expect_error(401, "unauthorized");

    // Keys are listed without their secrets.
    let keys = admin.get("/v1/keys").await.expect(200);
    assert!(!keys.to_string().contains(&revoked_secret), "a secret in the key list");
}
