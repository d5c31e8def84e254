//! A script's lifecycle end to end: versions uploaded under one name and
//! pinned by configurations, the configuration's script history, and
//! recorded decisions explained by running them again. A real engine
//! process (on the backend `SLUICE_TEST_BACKEND` names), scripts built from
//! source, receivers on 127.0.0.1.

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::receiver::Receiver;

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn upload(api: &Api, name: &str, script: &str) -> Value {
    api.post_raw(&format!("/v1/scripts?name={name}"), "application/wasm", sluice_tests::script_bytes(script)).await.expect(201)
}

/// The event's one delivery, once decided and sent (or not sent).
async fn settled_delivery(api: &Api, event: &str) -> Value {
    let event = api
        .wait_for(&format!("/v1/events/{event}"), |e| {
            e["deliveries"].as_array().is_some_and(|d| d.len() == 1 && d[0]["status"] != "pending")
        })
        .await;
    event["deliveries"][0].clone()
}

async fn explain(api: &Api, delivery: &Value) -> Value {
    api.get(&format!("/v1/deliveries/{}/explain", id_of(delivery))).await.expect(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_under_one_name_are_numbered_versions_that_configurations_pin() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let key = api.get("/v1/keys").await.expect(200)["items"][0]["id"].clone();
    let v1 = upload(&api, "orders", "paid-orders").await;
    let v2 = upload(&api, "orders", "store-router").await;
    let other = upload(&api, "shapes", "reshape").await;
    assert_eq!((v1["version"].as_i64(), v2["version"].as_i64(), other["version"].as_i64()), (Some(1), Some(2), Some(1)));
    assert_eq!(v1["created_by"], key, "the uploading key: {v1}");
    assert_eq!(v1["name"], "orders");
    assert_ne!(v1["sha256"], v2["sha256"]);

    // Listed: every version, newest first; by name, only that name's.
    let orders = api.list_all("/v1/scripts?name=orders").await;
    assert_eq!(orders.iter().map(|s| s["version"].as_i64().unwrap_or(0)).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(orders.iter().map(id_of).collect::<Vec<_>>(), [id_of(&v2), id_of(&v1)]);
    assert_eq!(api.list_all("/v1/scripts").await.len(), 3);
    assert!(api.list_all("/v1/scripts?name=nothing").await.is_empty());

    // A configuration runs the version it names; moving it is a guarded change, recorded.
    let receiver = Receiver::start().await;
    let created = api
        .enabled_config(json!({
            "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
            "script": {"id": id_of(&v1), "params": {"min_amount": "100"}},
        }))
        .await;
    let config = id_of(&created);
    let current = api.get(&format!("/v1/configurations/{config}")).await.expect(200);
    let version = current["version"].as_i64().expect("version");
    let mut moved = json!({
        "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
        "script": {"id": id_of(&v2), "params": {"units": "emea"}},
    });
    api.put(&format!("/v1/configurations/{config}"), version - 1, &moved).await.expect_error(409, "stale_version");
    let updated = api.put(&format!("/v1/configurations/{config}"), version, &moved).await.expect(200);
    assert_eq!(updated["script"]["id"], v2["id"]);
    // Saving the same script and parameters again records no change.
    let updated_version = updated["version"].as_i64().expect("version");
    api.put(&format!("/v1/configurations/{config}"), updated_version, &moved).await.expect(200);

    let history = api.get(&format!("/v1/configurations/{config}/scripts")).await.expect(200);
    let history = history.as_array().expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["script_id"], v2["id"]);
    assert_eq!(history[0]["params"], json!({"units": "emea"}));
    assert_eq!(history[0]["configuration_version"], updated_version);
    assert_eq!(history[0]["changed_by"], key);
    assert_eq!(history[1]["script_id"], v1["id"]);
    assert_eq!(history[1]["params"], json!({"min_amount": "100"}));
    assert_eq!(history[1]["configuration_version"], 1);
    assert_eq!(history[1]["script_sha256"], v1["sha256"]);

    // Removing the script is a change too.
    moved.as_object_mut().expect("object").remove("script");
    let plain = api.put(&format!("/v1/configurations/{config}"), updated_version + 1, &moved).await.expect(200);
    let history = api.get(&format!("/v1/configurations/{config}/scripts")).await.expect(200);
    assert_eq!(history[0]["configuration_version"], plain["version"]);
    assert!(history[0].get("script_id").is_none(), "{history}");

    // The old versions stay runnable; another tenant sees none of it.
    let tried = api
        .post(
            &format!("/v1/scripts/{}/test", id_of(&v1)),
            &json!({"event": event_body("t", "order.paid", "x", json!({"amount": 5})), "params": {"min_amount": "1"}}),
        )
        .await
        .expect(200);
    assert_eq!(tried["decision"]["action"], "deliver", "{tried}");
    let (_, stranger) = api.tenant_with_key("stranger", &["admin"]).await;
    let stranger = engine.api(&stranger);
    assert!(stranger.list_all("/v1/scripts?name=orders").await.is_empty());
    stranger.get(&format!("/v1/configurations/{config}/scripts")).await.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_runs_the_recorded_script_again_and_finds_the_same_decision() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let paid_orders = id_of(&upload(&api, "paid", "paid-orders").await);
    let looping = id_of(&upload(&api, "loop", "hostile-loop").await);
    let receiver = Receiver::start().await;
    let created = api
        .enabled_config(json!({
            "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
            "script": {"id": paid_orders, "params": {"min_amount": "100"}},
        }))
        .await;
    api.enabled_config(json!({"name": "loop", "endpoint": receiver.url, "event_types": ["spin"], "script": {"id": looping}})).await;
    api.enabled_config(json!({"name": "plain", "endpoint": receiver.url, "event_types": ["note"]})).await;

    api.ingest(&[
        event_body("big", "order.paid", "x", json!({"amount": 150})),
        event_body("small", "order.paid", "x", json!({"amount": 50})),
        event_body("broken", "order.paid", "x", json!({"total": 50})),
        event_body("spin", "spin", "x", json!({})),
        event_body("note", "note", "x", json!({})),
    ])
    .await;
    let big = settled_delivery(&api, "big").await;
    let small = settled_delivery(&api, "small").await;
    let broken = settled_delivery(&api, "broken").await;
    let spin = settled_delivery(&api, "spin").await;
    let note = settled_delivery(&api, "note").await;
    assert_eq!(
        [&big, &small, &broken, &spin, &note].map(|d| d["status"].as_str().unwrap_or_default().to_owned()),
        ["succeeded", "filtered", "script_error", "script_error", "succeeded"]
    );
    assert_eq!(spin["error_kind"], "out_of_fuel", "{spin}");
    assert!(spin["fuel_used"].as_i64().is_some_and(|f| f >= 20_000_000), "the whole budget: {spin}");
    assert!(big["fuel_used"].as_i64().is_some_and(|f| f > 0), "{big}");
    assert!(note.get("fuel_used").is_none(), "no script ran: {note}");

    // Each is decided again exactly as recorded, fuel to the unit.
    for (delivery, action) in [(&big, "deliver"), (&small, "skip"), (&broken, "error"), (&spin, "error"), (&note, "deliver")] {
        let explained = explain(&api, delivery).await;
        assert_eq!(explained["identical"], true, "{explained}");
        assert_eq!(explained["differences"], json!([]));
        assert_eq!(explained["recorded"]["action"], action, "{explained}");
        assert_eq!(explained["again"]["action"], action);
        assert_eq!(explained["again"]["fuel_used"], delivery["fuel_used"].clone(), "{explained}");
        assert_eq!(explained["recorded"]["logs"], explained["again"]["logs"]);
    }
    let small_explained = explain(&api, &small).await;
    assert_eq!(small_explained["again"]["reason"], "amount 50 is below 100");
    assert_eq!(small_explained["params"], json!({"min_amount": "100"}));
    assert_eq!(small_explained["script"]["id"], paid_orders.as_str());
    assert_eq!(small_explained["script"]["version"], 1);
    let spin_explained = explain(&api, &spin).await;
    assert_eq!(spin_explained["again"]["error_kind"], "out_of_fuel", "a budget exhaustion is reproduced: {spin_explained}");
    assert!(explain(&api, &note).await.get("script").is_none());

    // After the parameters change, the old decisions are still explained
    // with the parameters they ran with; new ones with the new.
    let config = id_of(&created);
    let version = api.get(&format!("/v1/configurations/{config}")).await.expect(200)["version"].as_i64().expect("version");
    let lower = json!({
        "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
        "script": {"id": paid_orders, "params": {"min_amount": "10"}},
    });
    api.put(&format!("/v1/configurations/{config}"), version, &lower).await.expect(200);
    let again = explain(&api, &small).await;
    assert_eq!((again["identical"].clone(), again["params"].clone()), (json!(true), json!({"min_amount": "100"})), "{again}");
    api.ingest(&[event_body("small-now", "order.paid", "x", json!({"amount": 50}))]).await;
    let delivered = settled_delivery(&api, "small-now").await;
    assert_eq!(delivered["status"], "succeeded");
    let now = explain(&api, &delivered).await;
    assert_eq!((now["identical"].clone(), now["params"].clone()), (json!(true), json!({"min_amount": "10"})), "{now}");

    // Its script deleted, a decision cannot be run again, and says why.
    let version = api.get(&format!("/v1/configurations/{config}")).await.expect(200)["version"].as_i64().expect("version");
    api.put(
        &format!("/v1/configurations/{config}"),
        version,
        &json!({"name": "paid", "endpoint": receiver.url, "event_types": ["order.*"]}),
    )
    .await
    .expect(200);
    api.delete(&format!("/v1/scripts/{paid_orders}")).await.expect(204);
    let gone = api.get(&format!("/v1/deliveries/{}/explain", id_of(&small))).await.expect_error(409, "script_deleted");
    let sha256 = small_explained["script"]["sha256"].as_str().expect("sha256");
    assert!(gone["message"].as_str().is_some_and(|m| m.contains(sha256)), "the recorded hash is kept: {gone}");
    api.get("/v1/deliveries/dlv_00000000000000000000000000000000/explain").await.expect_error(404, "not_found");
    // Another tenant's delivery is not found, not explained.
    let (_, stranger) = api.tenant_with_key("stranger", &["admin"]).await;
    engine.api(&stranger).get(&format!("/v1/deliveries/{}/explain", id_of(&big))).await.expect_error(404, "not_found");
}

/// A pseudo-random amount per event index, 0 to 199: the same every run.
fn amount(i: u64) -> u64 {
    (i.wrapping_mul(2654435761) >> 7) % 200
}

fn lines_of<'a>(lines: &'a [Value], change: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["change"] == change).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_over_stored_events_reports_exactly_the_decisions_a_candidate_changes() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let paid_v1 = id_of(&upload(&api, "paid", "paid-orders").await);
    let reshape = id_of(&upload(&api, "paid", "reshape").await);
    let receiver = Receiver::start().await;
    let config = id_of(
        &api.enabled_config(json!({
            "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
            "script": {"id": paid_v1, "params": {"min_amount": "100"}},
        }))
        .await,
    );
    const N: u64 = 1000;
    for batch in (0..N).collect::<Vec<_>>().chunks(250) {
        let events: Vec<Value> =
            batch.iter().map(|&i| event_body(&format!("o{i}"), "order.paid", "x", json!({"amount": amount(i)}))).collect();
        api.ingest(&events).await;
    }
    let delivered = (0..N).filter(|&i| amount(i) >= 100).count();
    receiver.wait_for(delivered).await;
    // A delivery's row is written with its first attempt, just after the
    // receiver answered.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let deliveries_before = loop {
        let recorded = api.list_all(&format!("/v1/deliveries?configuration_id={config}")).await.len();
        if recorded == N as usize {
            break recorded;
        }
        assert!(tokio::time::Instant::now() < deadline, "{recorded} of {N} deliveries recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    // A lower threshold: the events between 50 and 100 are newly delivered, the rest unchanged.
    let lines = api
        .post_lines(
            &format!("/v1/configurations/{config}/preview"),
            &json!({"candidate": {"params": {"min_amount": "50"}}, "window": {"last": N}}),
        )
        .await;
    let (summary, events) = lines.split_last().expect("a summary line");
    assert_eq!(events.len(), N as usize);
    let mut expected: Vec<String> = (0..N).filter(|&i| (50..100).contains(&amount(i))).map(|i| format!("o{i}")).collect();
    let mut newly: Vec<String> =
        lines_of(events, "newly_delivered").iter().map(|l| l["event_id"].as_str().unwrap_or_default().to_owned()).collect();
    expected.sort();
    newly.sort();
    assert!(!expected.is_empty());
    assert_eq!(newly, expected, "exactly the events whose decision changes");
    let s = &summary["summary"];
    assert_eq!(s["events"], N);
    assert_eq!(s["newly_delivered"], expected.len());
    assert_eq!(s["unchanged"], N as usize - expected.len());
    assert_eq!((s["newly_skipped"].as_u64(), s["new_errors"].as_u64(), s["changed_request"].as_u64()), (Some(0), Some(0), Some(0)));
    let one = lines_of(events, "newly_delivered")[0];
    assert_eq!(one["current"]["action"], "skip");
    assert_eq!(one["candidate"]["action"], "deliver");
    assert!(one["current"]["fuel_used"].as_u64().is_some_and(|f| f > 0) && one["candidate"]["fuel_used"].as_u64().is_some_and(|f| f > 0));
    assert!(s["current_fuel"].as_u64().is_some_and(|f| f > 0), "{s}");

    // Another version, on named events, one of them not stored: the request's body changes.
    let lines = api
        .post_lines(
            &format!("/v1/configurations/{config}/preview"),
            &json!({"candidate": {"script_id": reshape}, "window": {"event_ids": ["o1", "never-sent", "o2"]}}),
        )
        .await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[1],
        json!({"event_id": "never-sent", "change": "not_stored", "message": "no such event stored: never received, or purged by retention"})
    );
    for line in [&lines[0], &lines[2]] {
        let index: u64 = line["event_id"].as_str().and_then(|id| id[1..].parse().ok()).expect("o<i>");
        if amount(index) >= 100 {
            assert_eq!(line["change"], "changed_request", "{line}");
            assert!(line["body_changes"].as_array().is_some_and(|c| !c.is_empty()), "{line}");
        } else {
            assert_eq!(line["change"], "newly_delivered", "{line}");
        }
    }
    assert_eq!(lines[3]["summary"]["not_stored"], 1);

    // Nothing was sent, nothing stored.
    assert_eq!(receiver.settle(std::time::Duration::from_millis(300)).await.len(), delivered, "a preview sends nothing");
    assert_eq!(api.list_all(&format!("/v1/deliveries?configuration_id={config}")).await.len(), deliveries_before, "and stores nothing");

    // Bad requests, each with its code; another tenant's configuration is not found.
    let path = format!("/v1/configurations/{config}/preview");
    api.post(&path, &json!({"window": {"last": 10_001}})).await.expect_error(422, "window_too_large");
    api.post(&path, &json!({"window": {"last": 5, "event_ids": ["o1"]}})).await.expect_error(422, "invalid_window");
    api.post(&path, &json!({"window": {"since": "yesterday"}})).await.expect_error(422, "invalid_window");
    api.post(&path, &json!({"candidate": {"script_id": "scr_00000000000000000000000000000000"}})).await.expect_error(422, "unknown_script");
    api.post(&path, &json!({"candidate": {"params": {"": "x"}}})).await.expect_error(422, "invalid_script_params");
    api.post(&path, &json!({"candidate": {"bogus": 1}})).await.expect_error(400, "unknown_field");
    let (_, stranger) = api.tenant_with_key("stranger", &["admin"]).await;
    engine.api(&stranger).post(&path, &json!({})).await.expect_error(404, "not_found");

    // One preview per tenant at a time: one whose client stops reading
    // holds its turn; once that client is gone, the turn is free again.
    let held = api
        .request(reqwest::Method::POST, &path)
        .header("content-type", "application/json")
        .body(json!({"window": {"last": N}}).to_string())
        .send()
        .await
        .expect("held preview");
    assert_eq!(held.status(), 200);
    api.post(&path, &json!({"window": {"last": 1}})).await.expect_error(409, "preview_running");
    drop(held);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer =
            api.request(reqwest::Method::POST, &path).header("content-type", "application/json").body("{}").send().await.expect("preview");
        if answer.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the turn of a preview whose client left is never freed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_saved_before_script_history_get_a_first_record_at_start() {
    let mut engine = Engine::start().await;
    let api = engine.admin();
    let script = upload(&api, "paid", "paid-orders").await;
    let receiver = Receiver::start().await;
    let config = id_of(
        &api.enabled_config(json!({
            "name": "paid", "endpoint": receiver.url, "event_types": ["order.*"],
            "script": {"id": id_of(&script), "params": {"min_amount": "7"}},
        }))
        .await,
    );
    let version = api.get(&format!("/v1/configurations/{config}")).await.expect(200)["version"].clone();
    // As an older version left it: no history at all.
    engine.kill().await;
    engine.execute_sql("DELETE FROM configuration_scripts").await;
    engine.restart().await;
    let api = engine.admin();
    let history = api.get(&format!("/v1/configurations/{config}/scripts")).await.expect(200);
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history[0]["configuration_version"], version);
    assert_eq!(history[0]["script_id"], script["id"]);
    assert_eq!(history[0]["script_sha256"], script["sha256"]);
    assert_eq!(history[0]["params"], json!({"min_amount": "7"}));
    assert!(history[0].get("changed_by").is_none(), "recorded at start, by no key: {history}");

    // Decisions made from then on are explained.
    api.ingest(&[event_body("after", "order.paid", "x", json!({"amount": 3}))]).await;
    let skipped = settled_delivery(&api, "after").await;
    let explained = explain(&api, &skipped).await;
    assert_eq!(
        (explained["identical"].clone(), explained["again"]["reason"].clone()),
        (json!(true), json!("amount 3 is below 7")),
        "{explained}"
    );
}
