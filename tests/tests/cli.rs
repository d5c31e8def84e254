//! The admin command line against a live engine: every command, read both
//! as its table and as `--json`; refusals show the API's code and message;
//! text from the server cannot drive the terminal; completions generate.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use serde_json::{Value, json};
use sluice_tests::engine::{ADMIN_KEY, Engine, binary, event_body};
use sluice_tests::receiver::Receiver;

/// What one `sluice …` run printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert!(self.ok, "the command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {}", self.stdout))
    }

    fn table(&self) -> &str {
        assert!(self.ok, "the command failed: {}", self.stderr);
        &self.stdout
    }
}

/// The value on a record table's line for `name`.
fn field<'t>(table: &'t str, name: &str) -> Option<&'t str> {
    table.lines().find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')).map(str::trim))
}

/// Runs `sluice ARGS` against the engine with `key`.
async fn sluice_with(engine: &Engine, key: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(binary())
        .args(args)
        .env("SLUICE_URL", &engine.url)
        .env("SLUICE_KEY", key)
        .output()
        .await
        .expect("run sluice");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sluice(engine: &Engine, args: &[&str]) -> Run {
    sluice_with(engine, ADMIN_KEY, args).await
}

/// `sluice events tail ARGS`, once it says it has read where the
/// deliveries stand (anything after that is news to it).
async fn start_tail(engine: &Engine, args: &[&str]) -> tokio::process::Child {
    let mut tail = tokio::process::Command::new(binary())
        .args(["events", "tail", "--every-ms", "100"])
        .args(args)
        .env("SLUICE_URL", &engine.url)
        .env("SLUICE_KEY", ADMIN_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the tail");
    let mut notes = tokio::io::BufReader::new(tail.stderr.take().expect("stderr")).lines();
    let note = tokio::time::timeout(Duration::from_secs(20), notes.next_line()).await.expect("the tail starts").expect("stderr");
    assert_eq!(note.as_deref(), Some("following deliveries (Ctrl-C to stop)"));
    tail
}

/// Both forms of one command: its table, and its `--json`.
async fn both(engine: &Engine, args: &[&str]) -> (String, Value) {
    let table = sluice(engine, args).await.table().to_owned();
    let mut with_json = args.to_vec();
    with_json.push("--json");
    (table, sluice(engine, &with_json).await.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_from_files_through_their_whole_life() {
    let engine = Engine::start().await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let toml = dir.path().join("orders.toml");
    std::fs::write(
        &toml,
        format!("name = \"orders\"\nendpoint = \"{}/hooks\"\nevent_types = [\"order.*\"]\n\n[retry]\nmax_attempts = 3\ninitial_backoff_ms = 1000\nmax_backoff_ms = 60000\n", rx.url),
    )
    .expect("write the file");

    let created = sluice(&engine, &["configurations", "create", toml.to_str().expect("path"), "--json"]).await.json();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created["signing"]["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "shown once at creation: {created}");
    assert_eq!(created["retry"]["max_attempts"], 3);
    // As a table: the secret on its line, shown this once.
    let other = dir.path().join("refunds.toml");
    std::fs::write(&other, format!("name = \"refunds\"\nendpoint = \"{}/r\"\nevent_types = [\"refund.*\"]\n", rx.url)).expect("write");
    let second = sluice(&engine, &["configurations", "create", other.to_str().expect("path")]).await.table().to_owned();
    assert!(field(&second, "signing.secret").is_some_and(|s| s.starts_with("whsec_")), "{second}");
    let second_id = field(&second, "id").expect("id").to_owned();
    let deleted = sluice(&engine, &["configurations", "delete", &second_id, "--json"]).await.json();
    assert_eq!(deleted["deleted"], second_id.as_str());

    let (table, list) = both(&engine, &["configurations", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let header = table.lines().next().expect("a header");
    for column in ["ID", "NAME", "STATUS", "ENDPOINT", "EVENT TYPES", "VERSION"] {
        assert!(header.contains(column), "{header}");
    }
    let row = table.lines().nth(1).expect("a row");
    assert!(row.contains(&id) && row.contains("orders") && row.contains("disabled") && row.contains("order.*"), "{row}");

    let (table, shown) = both(&engine, &["configurations", "show", &id]).await;
    assert_eq!(shown["name"], "orders");
    assert!(!shown.to_string().contains("whsec_") && !table.contains("whsec_"), "never shown again: {shown}");
    assert!(table.lines().any(|l| l.starts_with("retry.max_attempts") && l.trim_end().ends_with('3')), "{table}");

    // Update at the version it has now, from JSON on standard input's stead: a file.
    let json_file = dir.path().join("orders.json");
    std::fs::write(&json_file, json!({"name": "orders v2", "endpoint": format!("{}/v2", rx.url), "event_types": ["order.*"]}).to_string())
        .expect("write the file");
    let updated = sluice(&engine, &["configurations", "update", &id, json_file.to_str().expect("path"), "--json"]).await.json();
    assert_eq!((updated["name"].as_str(), updated["version"].as_i64()), (Some("orders v2"), Some(2)));
    let updated = sluice(&engine, &["configurations", "update", &id, json_file.to_str().expect("path")]).await.table().to_owned();
    assert_eq!(field(&updated, "version"), Some("3"), "{updated}");

    let (table, enabled) = both(&engine, &["configurations", "enable", &id]).await;
    assert_eq!(enabled["status"], "enabled");
    assert!(table.contains("enabled"));
    let tested = sluice(&engine, &["configurations", "test", &id, "--json"]).await.json();
    assert_eq!(tested["attempt"]["succeeded"], true, "{tested}");
    assert_eq!(rx.wait_for(1).await[0].uri.path(), "/v2");
    let tested = sluice(&engine, &["configurations", "test", &id]).await.table().to_owned();
    assert_eq!(field(&tested, "attempt.succeeded"), Some("yes"), "{tested}");
    assert_eq!(field(&tested, "attempt.response_status"), Some("200"), "{tested}");
    let rotated = sluice(&engine, &["configurations", "rotate-secret", &id, "--grace-seconds", "60", "--json"]).await.json();
    assert!(rotated["signing"]["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{rotated}");
    let rotated = sluice(&engine, &["configurations", "rotate-secret", &id]).await.table().to_owned();
    assert!(field(&rotated, "signing.secret").is_some_and(|s| s.starts_with("whsec_")), "{rotated}");
    let (table, stats) = both(&engine, &["configurations", "stats", &id]).await;
    assert!(stats["last_hour"].is_object(), "{stats}");
    assert!(table.contains("last_hour"), "{table}");
    let (table, recovered) = both(&engine, &["configurations", "recover", &id, "--since", "2020-01-01T00:00:00Z"]).await;
    assert!(recovered.is_object(), "{recovered}");
    assert!(!table.is_empty());
    let (table, disabled) = both(&engine, &["configurations", "disable", &id]).await;
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(field(&table, "status"), Some("disabled"), "{table}");

    // A refusal: the API's status, code and message, and a failing exit.
    let stale = sluice(&engine, &["configurations", "show", "cfg_nope"]).await;
    assert!(!stale.ok);
    assert!(stale.stderr.contains("404") && stale.stderr.contains("not_found"), "{}", stale.stderr);
    std::fs::write(&json_file, json!({"name": "x", "endpoint": "ftp://nowhere", "event_types": ["a"]}).to_string()).expect("write");
    let invalid = sluice(&engine, &["configurations", "create", json_file.to_str().expect("path")]).await;
    assert!(!invalid.ok && invalid.stderr.contains("422") && invalid.stderr.contains("field `endpoint`"), "{}", invalid.stderr);

    sluice(&engine, &["configurations", "delete", &id]).await.table();
    assert_eq!(sluice(&engine, &["configurations", "list", "--json"]).await.json(), json!([]));
    assert_eq!(sluice(&engine, &["configurations", "list"]).await.table().trim(), "(none)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deliveries_and_a_live_tail() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let rx = Receiver::start().await;
    let config = api.enabled_config(json!({"name": "all", "endpoint": rx.url, "event_types": ["*"]})).await;
    let config_id = config["id"].as_str().expect("id").to_owned();

    // The tail starts, then three events arrive: it prints each delivery
    // as it is made and as it settles, and stops after --max lines.
    let tail = start_tail(&engine, &["--json", "--max", "3", "--configuration", &config_id]).await;
    let events: Vec<Value> = (0..3).map(|i| event_body(&format!("t{i}"), "order.paid", "emea", json!({"n": i}))).collect();
    api.ingest(&events).await;
    rx.wait_for(3).await;
    api.wait_for("/v1/events?status=pending", |page| page["items"].as_array().is_some_and(Vec::is_empty)).await;
    let out =
        tokio::time::timeout(Duration::from_secs(20), tail.wait_with_output()).await.expect("the tail stops after --max").expect("tail");
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|d| d["configuration_id"] == config_id.as_str()), "{lines:?}");

    let (table, listed) = both(&engine, &["events", "list", "--type", "order.paid", "--limit", "2"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "--limit holds");
    assert_eq!(listed[0]["id"], "t2");
    assert!(table.lines().nth(1).is_some_and(|row| row.starts_with("t2") && row.contains("order.paid") && row.contains("emea")), "{table}");
    let none = sluice(&engine, &["events", "list", "--type", "other.type", "--json"]).await.json();
    assert_eq!(none, json!([]));

    let (table, event) = both(&engine, &["events", "show", "t1"]).await;
    assert_eq!(event["deliveries"][0]["status"], "succeeded");
    assert!(table.contains("deliveries:") && table.contains("succeeded"), "{table}");
    let delivery = event["deliveries"][0]["id"].as_str().expect("delivery id").to_owned();

    let (table, shown) = both(&engine, &["deliveries", "show", &delivery]).await;
    assert_eq!(shown["attempts_made"][0]["response_status"], 200);
    assert!(table.contains("attempts_made:") && table.contains("succeeded"), "{table}");
    let (table, listed) = both(&engine, &["deliveries", "list", "--configuration", &config_id, "--status", "succeeded"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert_eq!(table.lines().filter(|l| l.contains(&config_id) && l.contains("succeeded")).count(), 3, "{table}");
    let (table, explained) = both(&engine, &["deliveries", "explain", &delivery]).await;
    assert!(explained.is_object(), "{explained}");
    assert!(!table.is_empty());

    // The tail as a table: a header, then a row per change.
    let table_tail = start_tail(&engine, &["--max", "1"]).await;

    // Each run of a replay sends again: once as a table, once as JSON.
    let table = sluice(&engine, &["events", "replay", "t0"]).await.table().to_owned();
    assert!(table.contains(&config_id) && table.contains("pending"), "{table}");
    let replayed = sluice(&engine, &["events", "replay", "t1", "--json"]).await.json();
    assert_eq!(replayed["deliveries"].as_array().map(Vec::len), Some(1), "{replayed}");
    rx.wait_for(5).await;
    let out = tokio::time::timeout(Duration::from_secs(20), table_tail.wait_with_output()).await.expect("the tail stops").expect("tail");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = printed.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("UPDATED") && h.contains("DELIVERY") && h.contains("STATUS")), "{printed}");
    assert!(lines.next().is_some_and(|row| row.contains(&config_id) && row.contains("t0")), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tenants_scripts_and_completions() {
    let engine = Engine::start().await;
    let created = sluice(&engine, &["keys", "create", "--name", "deployer", "--scope", "events:write", "--scope", "logs:read", "--json"])
        .await
        .json();
    let secret = created["secret"].as_str().expect("the secret, shown once").to_owned();
    let key_id = created["id"].as_str().expect("key id").to_owned();
    let (table, keys) = both(&engine, &["keys", "list"]).await;
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(table.contains("deployer") && table.contains("events:write, logs:read"), "{table}");
    assert!(!table.contains(&secret) && !keys.to_string().contains(&secret), "a key's secret is never listed");
    // The new key works, until revoked.
    assert!(sluice_with(&engine, &secret, &["events", "list", "--json"]).await.ok);
    let revoked = sluice(&engine, &["keys", "revoke", &key_id, "--json"]).await.json();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let another = sluice(&engine, &["keys", "create", "--name", "short-lived", "--scope", "logs:read"]).await.table().to_owned();
    assert!(field(&another, "secret").is_some_and(|s| s.starts_with("sk_")), "{another}");
    let another_id = field(&another, "key.id").or_else(|| field(&another, "id")).expect("key id").to_owned();
    let revoked = sluice(&engine, &["keys", "revoke", &another_id]).await.table().to_owned();
    assert!(field(&revoked, "revoked_at").is_some_and(|t| t != "-"), "{revoked}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = sluice_with(&engine, &secret, &["events", "list"]).await;
    assert!(!refused.ok && refused.stderr.contains("401"), "{}", refused.stderr);

    let tenant = sluice(&engine, &["tenants", "create", "acme", "--quota", "1000", "--json"]).await.json();
    let tenant_id = tenant["id"].as_str().expect("tenant id").to_owned();
    let (table, tenants) = both(&engine, &["tenants", "list"]).await;
    assert_eq!(tenants.as_array().map(Vec::len), Some(2));
    assert!(tenants.as_array().is_some_and(|t| t.iter().any(|t| t["monthly_quota"] == 1000)));
    assert!(table.lines().any(|l| l.contains("acme") && l.contains("1000")), "{table}");
    let updated = sluice(&engine, &["tenants", "update", &tenant_id, "--name", "acme corp", "--json"]).await.json();
    assert_eq!((updated["name"].as_str(), &updated["monthly_quota"]), (Some("acme corp"), &Value::Null));
    let updated = sluice(&engine, &["tenants", "update", &tenant_id, "--name", "acme", "--quota", "5"]).await.table().to_owned();
    assert_eq!((field(&updated, "name"), field(&updated, "monthly_quota")), (Some("acme"), Some("5")), "{updated}");
    let created = sluice(&engine, &["tenants", "create", "beta"]).await.table().to_owned();
    assert!(field(&created, "id").is_some_and(|id| id.starts_with("ten_")), "{created}");

    let script = engine.admin().upload_script("paid-orders").await;
    let (table, scripts) = both(&engine, &["scripts", "list"]).await;
    assert_eq!(scripts[0]["id"], script.as_str());
    assert!(table.contains("paid-orders"), "{table}");
    let (_, shown) = both(&engine, &["scripts", "show", &script]).await;
    assert_eq!(shown["wit_version"], "0.1.0");
    let second = engine.admin().upload_script("paid-orders").await;
    let deleted = sluice(&engine, &["scripts", "delete", &second, "--json"]).await.json();
    assert_eq!(deleted["deleted"], second.as_str());
    sluice(&engine, &["scripts", "delete", &script]).await.table();
    assert_eq!(sluice(&engine, &["scripts", "list", "--json"]).await.json(), json!([]));

    // Text from the server is shown escaped: a name cannot clear the screen.
    engine.admin().post("/v1/keys", &json!({"name": "evil\u{1b}[2J\u{7}", "scopes": ["logs:read"]})).await.expect(201);
    let table = sluice(&engine, &["keys", "list"]).await.table().to_owned();
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}'), "raw control characters printed");
    assert!(table.contains("evil\\u{1b}[2J\\u{7}"), "{table}");

    let no_key = tokio::process::Command::new(binary())
        .args(["keys", "list"])
        .env("SLUICE_URL", &engine.url)
        .env_remove("SLUICE_KEY")
        .output()
        .await
        .expect("run");
    assert!(!no_key.status.success() && String::from_utf8_lossy(&no_key.stderr).contains("SLUICE_KEY"));

    let completions = sluice(&engine, &["completions", "bash"]).await;
    assert!(completions.ok && completions.stdout.contains("configurations") && completions.stdout.contains("rotate-secret"));
}
