//! The embedded default when its process or its database fails. A crash
//! loop: a steady stream of events while the single SQLite node is killed
//! (SIGKILL: no shutdown code runs) every few seconds for a minute and
//! started again; every event answered 2xx is delivered, and a delivery
//! repeated after a crash carries the same id. A database another process
//! holds locked, or a disk that is full: posts are answered 503 (together,
//! said once in the log) until it lets go or there is room, then delivered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_tests::engine::{Answer, Engine, event_body};
use sluice_tests::receiver::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_survives_a_minute_of_kills() {
    let mut engine = Engine::start().await;
    let rx = Receiver::start().await;
    engine.admin().enabled_config(json!({"name": "all", "endpoint": rx.url, "event_types": ["*"]})).await;

    let url = Arc::new(Mutex::new(engine.url.clone()));
    let accepted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let (url, accepted, stop) = (url.clone(), accepted.clone(), stop.clone());
        let key = engine.admin();
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            let mut n = 0u64;
            let (mut refused, mut sent) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<_> =
                    (0..10).map(|i| event_body(&format!("crash-{}", n + i), "order.paid", "emea", json!({"n": n + i}))).collect();
                let ids: Vec<String> = batch.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
                n += 10;
                sent += 1;
                let base = url.lock().expect("url").clone();
                let answer = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(key.key().expect("admin key"))
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&batch).expect("JSON"))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => accepted.lock().expect("accepted").extend(ids),
                    // Down, or killed mid-request: not answered 2xx, so not promised.
                    _ => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (sent, refused)
        })
    };

    let started = tokio::time::Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(60) {
        // Every 2 to 5 s, at a varying point of the pipeline's work.
        tokio::time::sleep(Duration::from_millis(2000 + (kills * 700) % 3000)).await;
        engine.restart().await; // SIGKILL, then start on the same data
        *url.lock().expect("url") = engine.url.clone();
        kills += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, refused) = poster.await.expect("poster");
    let accepted = accepted.lock().expect("accepted").clone();
    assert!(kills >= 10, "{kills} kills");
    assert!(accepted.len() > 1000, "a steady load: {} accepted of {sent} requests ({refused} refused)", accepted.len());

    // Every accepted event arrives; repeats carry the event's own id.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = rx.received();
        let mut copies: HashMap<String, usize> = HashMap::new();
        for r in &got {
            let id = r.json()["id"].as_str().expect("body id").to_owned();
            assert_eq!(r.header("idempotency-key"), Some(id.as_str()), "a repeat carries the same id");
            assert_eq!(r.header("webhook-id"), Some(id.as_str()));
            *copies.entry(id).or_default() += 1;
        }
        let missing: Vec<&String> = accepted.iter().filter(|id| !copies.contains_key(*id)).collect();
        if missing.is_empty() {
            let repeats: usize = copies.values().map(|c| c - 1).sum();
            eprintln!("{} accepted, {} received, {repeats} repeats after {kills} kills", accepted.len(), got.len());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted events never arrived, e.g. {:?}; log:\n{}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(5)],
            engine.log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The database held locked by another process (an operator's `sqlite3`
/// shell in a write transaction, say) for longer than the writer waits for
/// it (10 s): posts are answered `503 store_unavailable` with `Retry-After`
/// (the store's condition, not the request's: it was a 500) and nothing of
/// them is stored; posts that came together are answered together, after
/// one wait for the lock, not one wait each after one another (the last of
/// eight was answered after 80 s); the log says it once, not once per post;
/// reads go on meanwhile; once the lock is let go the same posts are
/// accepted (not duplicates) and delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_another_process_holds_locked_answers_503_until_let_go() {
    use sqlx::Connection;
    let engine = Engine::start().await;
    let rx = Receiver::start().await;
    let api = engine.admin();
    api.enabled_config(json!({"name": "all", "endpoint": rx.url, "event_types": ["*"]})).await;
    api.ingest(&[event_body("before", "order.paid", "emea", json!({}))]).await;
    rx.wait_for(1).await;

    let url = format!("sqlite://{}", engine.data_dir().join("data/sluice.db").display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.expect("open the engine's database");
    sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut holder).await.expect("lock the database");
    let during: Vec<_> = (0..8).map(|i| event_body(&format!("during-{i}"), "order.paid", "emea", json!({}))).collect();
    let posts: Vec<_> = during
        .iter()
        .map(|event| {
            let (api, event) = (api.clone(), event.clone());
            // Each with the client's 30-s timeout: one wait for the lock each,
            // one after another, would run out of it.
            tokio::spawn(async move { api.post("/v1/events", &event).await })
        })
        .collect();
    for post in posts {
        let answer = post.await.expect("a post");
        expect_unavailable(answer);
    }
    api.get("/v1/events/before").await.expect(200);
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.expect("let go");

    for event in &during {
        let stored = api.post("/v1/events", event).await.expect(202);
        assert_eq!(stored["events"][0]["status"], "accepted", "nothing of the refused post was stored: {stored}");
    }
    rx.wait_for(9).await;
    let ids = received_ids(&rx, Duration::from_secs(2)).await;
    let mut expected: Vec<String> = (0..8).map(|i| format!("during-{i}")).collect();
    expected.insert(0, "before".into());
    assert_eq!(ids, expected);
    let metrics = api.request(reqwest::Method::GET, "/metrics").send().await.and_then(|r| r.error_for_status()).expect("/metrics");
    let metrics = metrics.text().await.expect("metrics text");
    assert!(metrics.contains("sluice_api_server_errors_total{code=\"store_unavailable\"} 8"), "each refusal counted:\n{metrics}");
    let log = engine.log();
    assert!(log.contains("database is locked"), "the log says why");
    let said = |what: &str| log.lines().filter(|line| line.contains(what)).count();
    assert_eq!(said("sqlite: cannot begin a write transaction"), 1, "one wait for the lock, its jobs answered together:\n{log}");
    assert_eq!(said("error: request failed"), 1, "eight refusals alike, one line:\n{log}");
}

/// A real full disk: the data directory on a file system of its own, 4 MB
/// big, filled by posts of 100 KB events until one is refused. The refused
/// post is answered `503 store_unavailable` with `Retry-After` and nothing
/// of it is stored; reads go on; the log says the disk is full. Once the
/// disk is grown the same post is accepted, not a duplicate, and every
/// event ever answered 202 reaches the receiver once, its delivery recorded
/// `succeeded` after one attempt: an attempt made while its record could
/// not be written (there was one, at the point the disk filled, in every
/// run tried) is recorded once there is room, not sent again (it was,
/// a minute later, by the recovery scan: twice to the receiver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_posts_until_grown_and_loses_none_it_accepted() {
    let engine = Engine::start_on_small_disk("4m").await;
    let rx = Receiver::start().await;
    let api = engine.admin();
    api.enabled_config(json!({"name": "all", "endpoint": rx.url, "event_types": ["*"]})).await;

    let filler = "x".repeat(100_000);
    let mut accepted = HashSet::new();
    let mut refused = None;
    for i in 0..200 {
        let id = format!("big-{i}");
        let event = event_body(&id, "order.paid", "emea", json!({"filler": filler}));
        let answer = api.post("/v1/events", &event).await;
        if answer.status == 202 {
            accepted.insert(id);
            continue;
        }
        expect_unavailable(answer);
        refused = Some((id, event));
        break;
    }
    let (refused_id, refused) = refused.expect("200 posts of 100 KB fill a 4-MB disk");
    assert!(accepted.len() >= 2, "the disk held some events first: {}", accepted.len());
    let some_accepted = accepted.iter().next().cloned().unwrap_or_default();
    api.get(&format!("/v1/events/{some_accepted}")).await.expect(200);
    api.get(&format!("/v1/events/{refused_id}")).await.expect_error(404, "not_found");
    assert!(engine.log().contains("database or disk is full"), "the log says why:\n{}", engine.log());

    engine.grow_disk("64m");
    let stored = api.post("/v1/events", &refused).await.expect(202);
    assert_eq!(stored["events"][0]["status"], "accepted", "nothing of the refused post was stored: {stored}");
    accepted.insert(refused_id);

    // Writes that met the full disk waited for room (a minute at most);
    // the recovery scan (every 30 s) routes what gave up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    for id in &accepted {
        loop {
            let event = api.get(&format!("/v1/events/{id}")).await.expect(200);
            let delivery = &event["deliveries"][0];
            if delivery["status"] == "succeeded" {
                assert_eq!(delivery["attempts"], 1, "{id}: {event}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never settled: {event}\n{}", engine.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ids = received_ids(&rx, Duration::from_millis(500)).await;
    let mut expected: Vec<String> = accepted.into_iter().collect();
    expected.sort();
    assert_eq!(ids, expected, "every event answered 202 delivered once, no other");
    let waited = engine.log().contains("a write waits for the store");
    eprintln!("{} events accepted; a write waited for room: {waited}", expected.len());
}

/// A write refused because the store cannot take it: `503
/// store_unavailable`, with `Retry-After: 1`.
fn expect_unavailable(answer: Answer) {
    let retry_after = answer.headers.get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    answer.expect_error(503, "store_unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
}

/// The event ids the receiver got once nothing more arrived for `quiet`
/// (a repeat shows as the same id twice), sorted.
async fn received_ids(rx: &Receiver, quiet: Duration) -> Vec<String> {
    let mut ids: Vec<String> = rx.settle(quiet).await.iter().map(|r| r.json()["id"].as_str().expect("body id").to_owned()).collect();
    ids.sort();
    ids
}
