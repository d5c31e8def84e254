//! The API's surface beyond routing: first start, the OpenAPI document,
//! script test runs, the event type catalog, filters and cursor pagination.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Engine, event_body};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_the_data_dir_and_prints_an_admin_key_once() {
    let cwd = tempfile::tempdir().expect("temporary directory");
    let start = || async {
        let mut child = tokio::process::Command::new(sluice_tests::engine::binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(cwd.path())
            .env_remove("SLUICE_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start sluice");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut printed = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("stdout") {
                let done = line.starts_with("listening on ");
                printed.push(line);
                if done {
                    break;
                }
            }
        })
        .await
        .expect("sluice started");
        (child, printed)
    };
    let (mut child, printed) = start().await;
    assert!(cwd.path().join("sluice-data/sluice.db").exists(), "the default data directory holds the database");
    let key = printed
        .iter()
        .find_map(|l| l.strip_prefix("first admin API key (shown once, keep it): "))
        .expect("the first admin key is printed")
        .to_owned();
    let url = printed.last().and_then(|l| l.strip_prefix("listening on ")).expect("address").to_owned();
    let answer = reqwest::Client::new()
        .get(format!("{url}/v1/keys"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), 200, "the printed key is an admin key");
    child.kill().await.expect("kill");

    // A second start reuses the store and prints no key.
    let (mut child, printed) = start().await;
    assert!(!printed.iter().any(|l| l.contains("sk_")), "a key printed twice: {printed:?}");
    child.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint() {
    let engine = Engine::start().await;
    // The document is public, like any API description.
    let doc = engine.anonymous().get("/v1/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/scripts", "post"),
        ("/v1/scripts/{id}", "delete"),
        ("/v1/scripts/{id}/test", "post"),
        ("/v1/configurations", "post"),
        ("/v1/configurations/{id}", "put"),
        ("/v1/configurations/{id}/enable", "post"),
        ("/v1/configurations/{id}/disable", "post"),
        ("/v1/event-types", "get"),
        ("/v1/events", "post"),
        ("/v1/events/{id}", "get"),
        ("/v1/deliveries", "get"),
        ("/v1/attempts/{id}", "get"),
        ("/v1/keys/{id}", "delete"),
        ("/v1/tenants", "post"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
}

/// The document against the running router, both ways: every documented
/// operation is served, every other method on a documented path is refused
/// with 405 (the engine's unit test holds the set of paths), each operation
/// documents the error answers it gives (401, 403 behind a key), and each
/// operation's scope is the one enforced: a key with only that scope passes
/// the check, a key with every other scope (admin aside) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_documented_operations_with_the_documented_scopes() {
    const SCOPES: [&str; 7] =
        ["events:write", "configurations:read", "configurations:write", "scripts:write", "logs:read", "metrics:read", "admin"];
    let engine = Engine::start().await;
    let admin = engine.admin();
    let mut only = std::collections::HashMap::new();
    let mut all_but = std::collections::HashMap::new();
    for scope in SCOPES {
        let key = admin.post("/v1/keys", &json!({"name": format!("only {scope}"), "scopes": [scope]})).await.expect(201);
        only.insert(scope, engine.api(key["secret"].as_str().expect("secret")));
        let others: Vec<&str> = SCOPES.into_iter().filter(|s| *s != scope && *s != "admin").collect();
        let key = admin.post("/v1/keys", &json!({"name": format!("all but {scope}"), "scopes": others})).await.expect(201);
        all_but.insert(scope, engine.api(key["secret"].as_str().expect("secret")));
    }

    let doc = engine.anonymous().get("/v1/openapi.json").await.expect(200);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Ids that name nothing: no request below changes anything.
        let concrete = path.replace("{id}", "x_1").replace("{name}", "order.paid").replace("{token}", "ct_none");
        for method in ["get", "post", "put", "delete", "patch"] {
            let verb = method.to_uppercase();
            let anonymous = engine.anonymous().send(&verb, &concrete, None, &[]).await;
            let Some(op) = item.get(method) else {
                assert_eq!(anonymous.status, 405, "{verb} {path} is served but not documented: {}", anonymous.body);
                continue;
            };
            checked += 1;
            // A hosted catcher that does not exist answers 404 itself, not the router.
            let own_404 = anonymous.status == 404 && anonymous.body["message"] == "no such catcher";
            assert!(own_404 || ![404, 405].contains(&anonymous.status), "{verb} {path} is documented but not served: {}", anonymous.status);
            let error = json!({"$ref": "#/components/schemas/Error"});
            assert_eq!(op["responses"]["default"]["content"]["application/json"]["schema"], error, "{verb} {path}");
            let Some(scope) = op["x-scope"].as_str() else {
                assert_eq!(op["security"], json!([]), "{verb} {path}");
                assert_ne!(anonymous.status, 401, "{verb} {path} is documented as public");
                assert!(op["responses"].get("401").is_none(), "{verb} {path} is public but documents 401");
                continue;
            };
            assert_eq!(op["security"], json!([{"bearer": [scope]}]), "{verb} {path}");
            for status in ["401", "403", "503"] {
                assert_eq!(op["responses"][status]["content"]["application/json"]["schema"], error, "{verb} {path} documents {status}");
            }
            assert!(op["responses"]["503"]["headers"].get("Retry-After").is_some(), "{verb} {path}");
            anonymous.expect_error(401, "unauthorized");
            let with = only[scope].send(&verb, &concrete, None, &[]).await;
            assert!(![401, 403].contains(&with.status), "{verb} {path}: a key with `{scope}` was refused: {}", with.body);
            all_but[scope].send(&verb, &concrete, None, &[]).await.expect_error(403, "forbidden");
        }
    }
    assert!(checked >= 34, "{checked} operations checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_can_be_tried_on_a_sample_event() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let script = api.upload_script("paid-orders").await;
    let info = api.get(&format!("/v1/scripts/{script}")).await.expect(200);
    assert_eq!(info["wit_version"], "0.1.0");
    assert_eq!(info["sha256"].as_str().map(str::len), Some(64));
    assert!(info.get("bytes").is_none(), "no bytes in the answer");
    let path = format!("/v1/scripts/{script}/test");
    let deliver = api
        .post(&path, &json!({"event": event_body("t1", "order.paid", "emea", json!({"amount": 200})), "params": {"min_amount": "100"}}))
        .await
        .expect(200);
    assert_eq!(deliver["decision"]["action"], "deliver", "{deliver}");
    let skip = api
        .post(&path, &json!({"event": event_body("t2", "order.paid", "emea", json!({"amount": 20})), "params": {"min_amount": "100"}}))
        .await
        .expect(200);
    assert_eq!(skip["decision"]["action"], "skip", "{skip}");
    assert!(!skip["logs"].as_array().expect("logs").is_empty());
    let bad = api.post(&path, &json!({"event": {"id": "x"}})).await;
    bad.expect_error(422, "invalid_event");
    // A test run stores no event.
    assert!(api.list_all("/v1/events").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_are_catalogued_and_lists_filter_and_paginate() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let events: Vec<Value> = (0..7)
        .map(|i| {
            let (t, ou) = if i % 2 == 0 { ("order.paid", "emea/nl") } else { ("customer.created", "us") };
            event_body(&format!("ev{i}"), t, ou, json!({"n": i}))
        })
        .collect();
    api.ingest(&events[..4]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    api.ingest(&events[4..]).await;
    // The split is taken from the engine's own record of when each event
    // arrived (1 ms after ev3's), and what each window holds is computed from
    // those records: a host clock stepping back between the two posts (seen
    // once on a CI machine) moves events across the split, not the test's
    // expectations off the engine's.
    let received: Vec<(String, String)> = api
        .list_all("/v1/events")
        .await
        .iter()
        .map(|e| (e["id"].as_str().expect("id").to_owned(), e["received_at"].as_str().expect("received_at").to_owned()))
        .collect();
    let ms = |t: &str| parse_time(t).unix_timestamp_nanos() / 1_000_000;
    let split = received.iter().find(|(id, _)| id == "ev3").map(|(_, t)| ms(t) + 1).expect("ev3 is listed");
    let between = format_time(time::OffsetDateTime::from_unix_timestamp_nanos(split * 1_000_000).expect("a time"));
    let after: Vec<&str> = received.iter().filter(|(_, t)| ms(t) >= split).map(|(id, _)| id.as_str()).collect();
    let before: Vec<&str> = received.iter().filter(|(_, t)| ms(t) < split).map(|(id, _)| id.as_str()).collect();
    assert!(["ev3", "ev2", "ev1", "ev0"].iter().all(|id| before.contains(id)), "{received:?}");

    // The catalog: seen types, plus described ones.
    api.send("PUT", "/v1/event-types/order.refunded", Some(("application/json", br#"{"description": "money back"}"#.to_vec())), &[])
        .await
        .expect(200);
    let types = api.get("/v1/event-types").await.expect(200);
    let names: Vec<&str> = types["items"].as_array().expect("items").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["customer.created", "order.paid", "order.refunded"]);
    api.send("PUT", "/v1/event-types/not%20a%20type", Some(("application/json", b"{}".to_vec())), &[])
        .await
        .expect_error(422, "invalid_event_type");

    // Cursor pagination: pages of 3, newest first, no repeats, nothing missed.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=3&cursor={c}"),
            None => "/v1/events?limit=3".to_owned(),
        };
        let page = api.get(&path).await.expect(200);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|e| e["id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["ev6", "ev5", "ev4", "ev3", "ev2", "ev1", "ev0"]);
    api.get("/v1/events?cursor=garbage").await.expect_error(400, "invalid_cursor");

    // Filters: type, unit (with its children), time range, and together.
    let ids = |v: Value| -> Vec<String> {
        v["items"].as_array().expect("items").iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect()
    };
    assert_eq!(ids(api.get("/v1/events?type=customer.created").await.expect(200)), ["ev5", "ev3", "ev1"]);
    assert_eq!(ids(api.get("/v1/events?organization_unit=emea").await.expect(200)), ["ev6", "ev4", "ev2", "ev0"]);
    assert_eq!(ids(api.get(&format!("/v1/events?since={between}")).await.expect(200)), after);
    assert_eq!(ids(api.get(&format!("/v1/events?until={between}")).await.expect(200)), before);
    let paid_after: Vec<&str> = after.iter().copied().filter(|id| ["ev6", "ev4", "ev2", "ev0"].contains(id)).collect();
    assert_eq!(ids(api.get(&format!("/v1/events?since={between}&type=order.paid")).await.expect(200)), paid_after);
    api.get("/v1/events?since=yesterday").await.expect_error(400, "invalid_filter");
    api.get("/v1/events?status=sideways").await.expect_error(400, "invalid_filter");
    api.get("/v1/deliveries?delivery_id=x").await.expect_error(400, "unknown_filter");
}

fn parse_time(t: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).expect("an RFC 3339 time")
}

fn format_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).expect("a formattable time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configurations_stats_count_its_deliveries_backlog_and_failing_receiver() {
    use sluice_tests::receiver::{Behaviour, Receiver};
    let engine = Engine::start().await;
    let api = engine.admin();
    let receiver = Receiver::start().await;
    let script = api.upload_script("paid-orders").await;
    let config = api
        .enabled_config(json!({
            "name": "erp", "endpoint": receiver.url, "event_types": ["order.*"],
            "script": {"id": script, "params": {"min_amount": "100"}},
            "retry": {"max_attempts": 10, "initial_backoff_ms": 60000, "max_backoff_ms": 60000},
        }))
        .await;
    let id = config["id"].as_str().unwrap();
    let stats = api.get(&format!("/v1/configurations/{id}/stats")).await.expect(200);
    assert_eq!(stats["last_hour"]["total"], 0);
    assert_eq!(stats["last_hour"]["success_rate"], Value::Null);
    assert_eq!(stats["oldest_pending_at"], Value::Null);
    assert_eq!(stats["receiver"]["state"], "up");

    let order = |n: usize, amount: i64| event_body(&format!("o-{n}"), "order.paid", "shop", json!({"amount": amount}));
    api.ingest(&[order(1, 150), order(2, 200), order(3, 300), order(4, 5), order(5, 6)]).await;
    receiver.wait_for(3).await;
    receiver.set(Behaviour { status: 500, delay: Duration::ZERO });
    api.ingest(&[order(6, 500), order(7, 700)]).await;
    let stats = api.wait_for(&format!("/v1/configurations/{id}/stats"), |s| s["receiver"]["failures"].as_i64().unwrap_or(0) >= 2).await;
    for window in ["last_hour", "last_day"] {
        let w = &stats[window];
        assert_eq!(w["total"], 7, "{stats}");
        assert_eq!(w["by_status"], json!({"succeeded": 3, "filtered": 2, "pending": 2}), "{stats}");
        assert_eq!(w["success_rate"], 1.0, "{stats}");
        assert_eq!(w["capped"], false);
    }
    assert_eq!(stats["receiver"]["state"], "failing", "{stats}");
    assert!(stats["receiver"]["failing_since"].is_string(), "{stats}");
    let pending = api.get(&format!("/v1/deliveries?configuration_id={id}&status=pending")).await.expect(200);
    let oldest = pending["items"].as_array().unwrap().iter().map(|d| d["created_at"].as_str().unwrap().to_owned()).min().unwrap();
    assert_eq!(stats["oldest_pending_at"], oldest.as_str(), "{stats}");

    // Another tenant's configuration is not found.
    let (_, other) = api.tenant_with_key("other", &["admin"]).await;
    engine.api(&other).get(&format!("/v1/configurations/{id}/stats")).await.expect_error(404, "not_found");
}
