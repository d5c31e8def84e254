//! Signatures as a receiver checks them, with code that is not sluice's: the
//! `standardwebhooks` library from PyPI (and Python's hmac for
//! `X-Signature`), run on each request a real receiver got. Then a secret
//! rotation: during the grace period both secrets verify, after it only the
//! new one; answers never show a secret again except the rotation's own.

use serde_json::{Value, json};
use sluice_tests::engine::Engine;
use sluice_tests::engine::{Api, event_body};
use sluice_tests::receiver::Receiver;
use sluice_tests::verify::with_library as verify;

async fn rotate(api: &Api, config: &str, body: Value) -> Value {
    api.post(&format!("/v1/configurations/{config}/rotate-secret"), &body).await.expect(200)
}

fn secret_of(answer: &Value) -> String {
    answer["signing"]["secret"].as_str().expect("the secret, shown once").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_independently_before_during_and_after_a_rotation() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let created = api
        .post(
            "/v1/configurations",
            &json!({
                "name": "signed",
                "endpoint": rx.url,
                "event_types": ["order.*"],
                "signing": {"profiles": ["standard_webhooks", "x_signature"]},
            }),
        )
        .await
        .expect(201);
    let config = created["id"].as_str().expect("id").to_owned();
    api.post(&format!("/v1/configurations/{config}/enable"), &json!({})).await.expect(200);
    let first = secret_of(&created);

    api.ingest(&[event_body("sig-1", "order.paid", "emea", json!({"amount": 5}))]).await;
    let got = rx.wait_for(1).await;
    assert_eq!(verify(&first, &got[0]), (Some(true), Some(true)));
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(verify(stranger, &got[0]), (Some(false), Some(false)), "a wrong secret must not verify");

    // Rotation with the default grace: both secrets verify the Standard
    // Webhooks signature; X-Signature carries the new secret's only.
    let rotated = rotate(&api, &config, json!({})).await;
    let second = secret_of(&rotated);
    assert_ne!(second, first);
    assert!(rotated["signing"]["previous_secret_expires_at"].is_string(), "{rotated}");
    api.ingest(&[event_body("sig-2", "order.paid", "emea", json!({"amount": 6}))]).await;
    let got = rx.wait_for(2).await;
    let during = got.iter().find(|r| r.header("webhook-id") == Some("sig-2")).expect("sig-2 arrived");
    assert_eq!(during.header("webhook-signature").map(|s| s.split(' ').count()), Some(2));
    assert_eq!(verify(&second, during), (Some(true), Some(true)));
    assert_eq!(verify(&first, during), (Some(true), Some(false)));

    // A rotation without grace: the replaced secret stops at once.
    let third = secret_of(&rotate(&api, &config, json!({"grace_period_ms": 0})).await);
    api.ingest(&[event_body("sig-3", "order.paid", "emea", json!({"amount": 7}))]).await;
    let got = rx.wait_for(3).await;
    let after = got.iter().find(|r| r.header("webhook-id") == Some("sig-3")).expect("sig-3 arrived");
    assert_eq!(verify(&third, after), (Some(true), Some(true)));
    assert_eq!(verify(&second, after), (Some(false), Some(false)));

    // No answer shows a secret again.
    let shown = api.get(&format!("/v1/configurations/{config}")).await.expect(200).to_string();
    assert!(!shown.contains("whsec_"), "{shown}");
    let listed = api.get("/v1/configurations").await.expect(200).to_string();
    assert!(!listed.contains("whsec_"), "{listed}");
    let attempts = api.get("/v1/attempts").await.expect(200).to_string();
    for secret in [&first, &second, &third] {
        assert!(!attempts.contains(secret.as_str()), "an attempt log shows a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_checks_its_input() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let created = api.post("/v1/configurations", &json!({"name": "r", "endpoint": rx.url, "event_types": ["*"]})).await.expect(201);
    let config = created["id"].as_str().expect("id");
    let path = format!("/v1/configurations/{config}/rotate-secret");
    api.post(&path, &json!({"secret": "not-a-secret"})).await.expect_error(422, "invalid_signing_secret");
    api.post(&path, &json!({"grace_period_ms": 8 * 24 * 3_600_000u64})).await.expect_error(422, "invalid_grace_period");
    api.post(&path, &json!({"graze": 1})).await.expect_error(400, "unknown_field");
    let chosen = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rotated = rotate(&api, config, json!({"secret": chosen})).await;
    assert_eq!(secret_of(&rotated), chosen);
    // A stale version is refused.
    api.send("POST", &path, Some(("application/json", b"{}".to_vec())), &[("if-match", &created["version"].to_string())])
        .await
        .expect_error(409, "stale_version");
}
