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
/// with 405 (the engine's unit test holds the set of paths), and each
/// operation's scope is the one enforced: a key with only that scope passes
/// the check, a key with every other scope (admin aside) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_documented_operations_with_the_documented_scopes() {
    const SCOPES: [&str; 6] = ["events:write", "configurations:read", "configurations:write", "scripts:write", "logs:read", "admin"];
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
        let concrete = path.replace("{id}", "x_1").replace("{name}", "order.paid");
        for method in ["get", "post", "put", "delete", "patch"] {
            let verb = method.to_uppercase();
            let anonymous = engine.anonymous().send(&verb, &concrete, None, &[]).await;
            let Some(op) = item.get(method) else {
                assert_eq!(anonymous.status, 405, "{verb} {path} is served but not documented: {}", anonymous.body);
                continue;
            };
            checked += 1;
            assert!(![404, 405].contains(&anonymous.status), "{verb} {path} is documented but not served: {}", anonymous.status);
            let Some(scope) = op["x-scope"].as_str() else {
                assert_eq!(op["security"], json!([]), "{verb} {path}");
                assert_ne!(anonymous.status, 401, "{verb} {path} is documented as public");
                continue;
            };
            assert_eq!(op["security"], json!([{"bearer": [scope]}]), "{verb} {path}");
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
    let between = time_now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    api.ingest(&events[4..]).await;

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
    assert_eq!(ids(api.get(&format!("/v1/events?since={between}")).await.expect(200)), ["ev6", "ev5", "ev4"]);
    assert_eq!(ids(api.get(&format!("/v1/events?until={between}")).await.expect(200)), ["ev3", "ev2", "ev1", "ev0"]);
    assert_eq!(ids(api.get(&format!("/v1/events?since={between}&type=order.paid")).await.expect(200)), ["ev6", "ev4"]);
    api.get("/v1/events?since=yesterday").await.expect_error(400, "invalid_filter");
    api.get("/v1/events?status=sideways").await.expect_error(400, "invalid_filter");
    api.get("/v1/deliveries?delivery_id=x").await.expect_error(400, "unknown_filter");
}

fn time_now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("a formattable time")
}
