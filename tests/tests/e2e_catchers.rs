//! Hosted catchers end to end: test endpoints on the engine itself, which a
//! configuration reaches in-process while the destination guard keeps
//! refusing loopback for everything else; what they record, signed as any
//! delivery, checked independently.

use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{Value, json};
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::Received;
use sluice_tests::verify;

/// A caught request as the receiver-side checks read it.
fn as_received(caught: &Value) -> Received {
    let mut headers = HeaderMap::new();
    for (name, value) in caught["headers"].as_object().expect("headers") {
        headers.insert(HeaderName::try_from(name.as_str()).unwrap(), HeaderValue::from_str(value.as_str().unwrap()).unwrap());
    }
    Received {
        method: Method::POST,
        uri: caught["uri"].as_str().unwrap().parse::<Uri>().unwrap(),
        headers,
        body: caught["body"].as_str().unwrap().to_owned().into(),
        at: Instant::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_delivers_to_a_hosted_catcher_while_loopback_stays_refused() {
    // No reserved range allowed: loopback is refused as for any production engine.
    let engine = Engine::start_with(&[("SLUICE_ALLOW_DESTINATIONS", "")]).await;
    let api = engine.admin();
    let catcher = api.post("/v1/catchers", &json!({"name": "try-out"})).await.expect(201);
    let url = catcher["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/catch/ct_", engine.url)), "{url}");
    let id = catcher["id"].as_str().unwrap().to_owned();
    assert_eq!(catcher["status"], 200);
    assert_eq!(catcher["body"], "[ACK]");

    // The guard still refuses the engine's own API, and any other loopback URL.
    for endpoint in [format!("{}/v1/events", engine.url), format!("{}/catch/ct_not-here/x", engine.url)] {
        let refused = api.post("/v1/configurations", &json!({"name": "x", "endpoint": endpoint, "event_types": ["*"]})).await;
        refused.expect_error(422, "destination_forbidden");
    }

    let config = api
        .enabled_config(json!({"name": "to the catcher", "endpoint": url, "event_types": ["*"], "response_mode": "normal",
            "authorization": {"type": "bearer", "token": "tok-catch-1"}}))
        .await;
    let secret = config["signing"]["secret"].as_str().unwrap().to_owned();
    let config_id = config["id"].as_str().unwrap().to_owned();
    api.ingest(&[event_body("c-1", "order.paid", "shop", json!({"amount": 1}))]).await;
    let event =
        api.wait_for("/v1/events/c-1", |e| e["deliveries"].as_array().is_some_and(|d| d.iter().any(|d| d["status"] == "succeeded"))).await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let attempts = api.get(&format!("/v1/attempts?delivery_id={delivery}")).await.expect(200);
    assert_eq!(attempts["items"][0]["response_status"], 200, "{attempts}");

    let caught = api.get(&format!("/v1/catchers/{id}/requests")).await.expect(200);
    let first = &caught[0];
    assert_eq!(first["signature"], json!({"verdict": "valid", "configuration_id": config_id, "configuration": "to the catcher"}));
    assert_eq!(first["headers"]["authorization"], "***", "credentials are not kept: {first}");
    assert!(!caught.to_string().contains("tok-catch-1"));
    assert!(verify::standard_webhooks(&secret, &as_received(first)), "signed as any delivery: {first}");
    assert_eq!(serde_json::from_str::<Value>(first["body"].as_str().unwrap()).unwrap()["id"], "c-1");

    // Anyone with the URL may post; what is unsigned or forged says so.
    let http = reqwest::Client::new();
    let answer = http.post(&url).body("plain").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "[ACK]");
    http.post(&url)
        .header("webhook-id", "x")
        .header("webhook-timestamp", (time::OffsetDateTime::now_utc().unix_timestamp()).to_string())
        .header("webhook-signature", "v1,AAAA")
        .body("forged")
        .send()
        .await
        .unwrap();
    let caught = api.get(&format!("/v1/catchers/{id}/requests")).await.expect(200);
    assert_eq!(caught[0]["body"], "forged");
    assert_eq!(caught[0]["signature"]["verdict"], "invalid", "{}", caught[0]);
    assert_eq!(caught[1]["signature"], json!({"verdict": "unsigned"}));
    assert_eq!(http.post(format!("{}/catch/ct_unknown", engine.url)).send().await.unwrap().status(), 404);

    // It keeps the newest 100.
    for n in 0..105 {
        http.post(&url).body(format!("n{n}")).send().await.unwrap();
    }
    let caught = api.get(&format!("/v1/catchers/{id}/requests")).await.expect(200);
    assert_eq!(caught.as_array().unwrap().len(), 100);
    assert_eq!(caught[0]["body"], "n104");

    // Another tenant sees none of it.
    let (_, other) = api.tenant_with_key("other", &["admin"]).await;
    engine.api(&other).get(&format!("/v1/catchers/{id}/requests")).await.expect_error(404, "not_found");
    assert_eq!(engine.api(&other).get("/v1/catchers").await.expect(200), json!([]));

    // Deleted, the catcher answers 404: the delivery fails like any other.
    api.delete(&format!("/v1/catchers/{id}")).await.expect(204);
    api.ingest(&[event_body("c-2", "order.paid", "shop", json!({}))]).await;
    let event = api.wait_for("/v1/events/c-2", |e| e["deliveries"][0]["attempts"].as_i64().unwrap_or(0) >= 1).await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let attempts = api.get(&format!("/v1/attempts?delivery_id={delivery}")).await.expect(200);
    assert_eq!(attempts["items"][0]["response_status"], 404, "{attempts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catcher_answers_as_asked_and_refuses_nonsense() {
    let engine = Engine::start().await;
    let api = engine.admin();
    for (bad, why) in [(json!({"status": 42}), "status"), (json!({"name": ""}), "name"), (json!({"body": "x".repeat(5000)}), "body")] {
        let refused = api.post("/v1/catchers", &bad).await.expect_error(422, "invalid_catcher");
        assert!(refused["message"].as_str().unwrap().contains(why), "{refused}");
    }
    api.post("/v1/catchers", &json!({"nonsense": 1})).await.expect_error(400, "unknown_field");
    // At most 20 per tenant, each body kept up to 64 KiB.
    let mut made = Vec::new();
    for n in 0..20 {
        made.push(api.post("/v1/catchers", &json!({"name": format!("c{n}")})).await.expect(201));
    }
    api.post("/v1/catchers", &json!({})).await.expect_error(409, "too_many_catchers");
    let big = "x".repeat(100 << 10);
    assert_eq!(reqwest::Client::new().post(made[0]["url"].as_str().unwrap()).body(big).send().await.unwrap().status(), 200);
    let caught = api.get(&format!("/v1/catchers/{}/requests", made[0]["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(caught[0]["body"].as_str().unwrap().len(), 64 << 10);
    assert_eq!(caught[0]["body_size"], 100 << 10);
    assert_eq!(caught[0]["signature"]["verdict"], "not_checked", "{}", caught[0]["signature"]);
    for c in &made {
        api.delete(&format!("/v1/catchers/{}", c["id"].as_str().unwrap())).await.expect(204);
    }
    let failing = api.post("/v1/catchers", &json!({"name": "down", "status": 503, "body": "busy"})).await.expect(201);
    api.enabled_config(json!({"name": "retrying", "endpoint": failing["url"], "event_types": ["*"],
            "retry": {"max_attempts": 2, "initial_backoff_ms": 100, "max_backoff_ms": 100}}))
        .await;
    api.ingest(&[event_body("r-1", "order.paid", "shop", json!({}))]).await;
    let event = api.wait_for("/v1/events/r-1", |e| e["deliveries"][0]["status"] == "failed").await;
    assert_eq!(event["deliveries"][0]["attempts"], 2, "{event}");
    let caught = api.get(&format!("/v1/catchers/{}/requests", failing["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(caught.as_array().unwrap().len(), 2);
}
