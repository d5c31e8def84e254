//! Durability: an event is safe from the moment ingest answers 2xx. The
//! engine is killed with SIGKILL in the middle of posting and delivering;
//! after a restart every accepted event reaches the receiver, and a repeated
//! delivery carries the same event id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_before_sigkill_are_delivered_after_restart() {
    let mut engine = Engine::start().await;
    let api = engine.admin();
    // Slow enough that most deliveries are in flight or queued at the kill.
    let rx = Receiver::with(Behaviour { status: 200, delay: Duration::from_millis(400) }).await;
    let script = api.upload_script("paid-orders").await;
    let config = api
        .enabled_config(json!({
            "name": "durable",
            "endpoint": rx.url,
            "event_types": ["order.*"],
            "script": {"id": script, "params": {"min_amount": "0"}},
        }))
        .await;

    // Four posters send batches of 25 until the engine dies under them.
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut posters = Vec::new();
    for poster in 0..4 {
        let (api, accepted) = (api.clone(), accepted.clone());
        posters.push(tokio::spawn(async move {
            for batch in 0.. {
                let events: Vec<_> =
                    (0..25).map(|i| event_body(&format!("p{poster}-b{batch}-{i}"), "order.paid", "emea", json!({"amount": i}))).collect();
                let Some(answer) = api.try_post("/v1/events", &json!(events)).await else { return };
                if answer.status != 202 {
                    return;
                }
                let mut accepted = accepted.lock().expect("lock");
                for e in answer.body["events"].as_array().expect("results") {
                    accepted.insert(e["id"].as_str().expect("id").to_owned());
                }
            }
        }));
    }
    // Let some batches land and some deliveries start, then kill.
    while accepted.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.kill().await;
    for p in posters {
        p.await.expect("poster");
    }
    let accepted = accepted.lock().expect("lock").clone();
    let before_restart = rx.received().len();
    assert!(before_restart < accepted.len(), "the kill must catch work in flight ({before_restart} of {})", accepted.len());

    rx.set(Behaviour { status: 200, delay: Duration::ZERO });
    engine.restart().await;
    let api = engine.admin();

    // Every accepted event arrives; a repeat carries the same id.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<String> = rx.received().iter().filter_map(|r| r.header("webhook-id").map(str::to_owned)).collect();
        if accepted.is_subset(&got) {
            break;
        }
        let missing = accepted.difference(&got).count();
        assert!(tokio::time::Instant::now() < deadline, "{missing} accepted events never arrived; log:\n{}", engine.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = rx.settle(Duration::from_millis(500)).await;
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        let id = r.header("webhook-id").expect("webhook-id").to_owned();
        assert_eq!(r.json()["id"], id.as_str(), "the body and the header name the same event");
        assert_eq!(r.header("idempotency-key"), Some(id.as_str()));
        *per_id.entry(id).or_default() += 1;
    }
    // Events the engine stored but whose answer the kill cut off may arrive
    // too; anything else would be invented.
    for id in per_id.keys() {
        assert!(id.starts_with('p') && id.contains("-b"), "unknown event {id} delivered");
    }
    let repeats = per_id.values().filter(|n| **n > 1).count();
    eprintln!("accepted {}, delivered {} distinct, {repeats} repeated, {before_restart} before the kill", accepted.len(), per_id.len());

    // The log agrees: every accepted event has one succeeded delivery, none stuck.
    let config_id = config["id"].as_str().expect("id");
    let deliveries = api.list_all(&format!("/v1/deliveries?configuration_id={config_id}")).await;
    let mut by_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &deliveries {
        by_event
            .entry(d["event_id"].as_str().expect("event id").to_owned())
            .or_default()
            .push(d["status"].as_str().expect("status").to_owned());
    }
    for id in &accepted {
        assert_eq!(by_event.get(id).map(Vec::as_slice), Some(&["succeeded".to_owned()][..]), "delivery of {id}");
    }
    assert_eq!(by_event.len(), per_id.len(), "one delivery per stored event, each delivered");
}
