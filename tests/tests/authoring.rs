//! The script author's loop as an integrator runs it, from a folder outside
//! this repository: `sluice script new`, `cargo test` in the new crate,
//! `sluice script build`, `push` to a live engine, `preview` against a
//! configuration, then the configuration switched to the new version and
//! live events decided by it. Real cargo builds (native and wasm), a real
//! engine, a receiver on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use sluice_tests::engine::{ADMIN_KEY, Engine, binary, event_body};
use sluice_tests::receiver::Receiver;

/// Runs a command to completion; panics with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A command as an integrator's shell would run it: none of the variables
/// this test's own cargo set, one shared build folder (so that reruns build
/// incrementally).
fn clean(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO") || name.starts_with("RUSTC") || name == "RUSTFLAGS" || name == "RUSTDOCFLAGS" {
            cmd.env_remove(&name);
        }
    }
    cmd.env("CARGO_TARGET_DIR", sluice_tests::root().join("target/authoring"));
    cmd
}

/// The largest initial size, in 64-KiB pages, of a memory the component's
/// core modules define.
fn initial_memory_pages(component: &[u8]) -> u64 {
    let mut pages = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::MemorySection(memories) = payload.expect("a valid component") {
            for memory in memories {
                pages = pages.max(memory.expect("a memory type").initial);
            }
        }
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authoring_loop_runs_from_a_folder_of_its_own() {
    let outside = tempfile::tempdir().expect("a folder outside the repository");
    let crate_dir = outside.path().join("big-orders");
    let sluice = binary();

    // new: a crate that builds as it is, its native test passing.
    let made = run(clean(&sluice, outside.path()).args(["script", "new", "big-orders"]));
    assert_eq!(stdout(&made), "big-orders");
    assert!(crate_dir.join("sample-event.json").exists());
    let tested = run(clean("cargo", &crate_dir).args(["test", "--quiet"]));
    assert!(String::from_utf8_lossy(&tested.stdout).contains("1 passed"), "{}", String::from_utf8_lossy(&tested.stdout));

    // build: one step to a component the engine accepts; test runs it on the sample.
    let built = run(clean(&sluice, &crate_dir).args(["script", "build"]));
    let component = stdout(&built);
    assert!(component.ends_with("big-orders.wasm"), "{component}");
    // The scaffold's 64 KiB stack (not Rust's 1 MiB) reached the linker:
    // the memory starts at two pages, its data and its stack.
    let bytes = std::fs::read(&component).expect("the component");
    assert!((1..=2).contains(&initial_memory_pages(&bytes)), "{} pages", initial_memory_pages(&bytes));
    let tried =
        run(clean(&sluice, &crate_dir).args(["script", "test", &component, "--event", "sample-event.json", "--param", "min_amount=100"]));
    let tried: Value = serde_json::from_slice(&tried.stdout).expect("the outcome as JSON");
    assert_eq!(tried["decision"]["action"], "deliver", "{tried}");

    // A live engine whose configuration delivers every order (no script).
    let engine = Engine::start().await;
    let api = engine.admin();
    let receiver = Receiver::start().await;
    let config = api.enabled_config(json!({"name": "orders", "endpoint": receiver.url, "event_types": ["order.*"]})).await;
    let config = config["id"].as_str().expect("configuration id").to_owned();
    let amounts: Vec<u64> = (0..20).map(|i| i * 10).collect();
    let events: Vec<Value> = amounts.iter().map(|a| event_body(&format!("before-{a}"), "order.paid", "x", json!({"amount": a}))).collect();
    api.ingest(&events).await;
    receiver.wait_for(amounts.len()).await;

    // push: the next version of its name, to the server the environment names.
    let server = |cmd: &mut Command| {
        cmd.env("SLUICE_URL", &engine.url).env("SLUICE_KEY", ADMIN_KEY);
    };
    let mut push = clean(&sluice, &crate_dir);
    server(push.args(["script", "push", &component]));
    let pushed: Value = serde_json::from_str(&stdout(&run(&mut push))).expect("the script as JSON");
    assert_eq!((pushed["name"].as_str(), pushed["version"].as_i64()), (Some("big-orders"), Some(1)), "{pushed}");
    let script = pushed["id"].as_str().expect("script id").to_owned();

    // preview: what the new script would change on the stored events.
    let mut preview = clean(&sluice, &crate_dir);
    server(preview.args([
        "script",
        "preview",
        "--configuration",
        &config,
        "--script",
        &script,
        "--param",
        "min_amount=100",
        "--last",
        "50",
    ]));
    let previewed = stdout(&run(&mut preview));
    let mut lines = previewed.lines();
    let summary: Value = serde_json::from_str(lines.next().expect("a summary line")).expect("the summary as JSON");
    let below = amounts.iter().filter(|&&a| a < 100).count();
    assert_eq!(summary["events"], amounts.len(), "{summary}");
    assert_eq!(summary["newly_skipped"], below, "{summary}");
    assert_eq!(summary["unchanged"], amounts.len() - below);
    let shown: Vec<&str> = lines.collect();
    assert_eq!(shown.len(), 10, "the first ten changes: {previewed}");
    assert!(shown.iter().all(|l| l.contains("newly_skipped: deliver -> skip (amount ")), "{previewed}");
    assert_eq!(receiver.arrived(), amounts.len(), "a preview sends nothing");

    // The configuration switched to the new version: live events are decided by it.
    let current = api.get(&format!("/v1/configurations/{config}")).await.expect(200);
    let version = current["version"].as_i64().expect("version");
    let switched = json!({
        "name": "orders", "endpoint": receiver.url, "event_types": ["order.*"],
        "script": {"id": script, "params": {"min_amount": "100"}},
    });
    api.put(&format!("/v1/configurations/{config}"), version, &switched).await.expect(200);
    api.ingest(&[
        event_body("after-50", "order.paid", "x", json!({"amount": 50})),
        event_body("after-150", "order.paid", "x", json!({"amount": 150})),
    ])
    .await;
    let skipped = api
        .wait_for("/v1/events/after-50", |e| e["deliveries"].as_array().is_some_and(|d| d.len() == 1 && d[0]["status"] != "pending"))
        .await;
    assert_eq!(skipped["deliveries"][0]["status"], "filtered");
    assert_eq!(skipped["deliveries"][0]["reason"], "amount 50 is below 100");
    let arrived = receiver.wait_for(amounts.len() + 1).await;
    assert_eq!(arrived.last().and_then(|r| r.header("webhook-id")), Some("after-150"));
}
