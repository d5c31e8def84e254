//! `sluice script test` on real scripts built from source.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script(name: &str) -> PathBuf {
    let path = root().join("target/scripts").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing: run ./scripts/build.sh first", path.display());
    path
}

fn event_file(name: &str, json: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-cli-{}-{name}.json", std::process::id()));
    std::fs::write(&path, json).expect("write event");
    path
}

fn sluice(args: &[&std::ffi::OsStr]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).to_string())
}

const PAID: &str = r#"{"id":"evt-9","type":"order.paid","organization_unit":"emea/nl","occurred_at":"2026-11-22T10:00:00Z",
    "source":{"application":"shop"},"related":[],"payload":{"amount":150}}"#;

#[test]
fn prints_the_decision_and_logs_and_exits_zero() {
    let event = event_file("paid", PAID);
    let (code, json, _) = sluice(&[
        "script".as_ref(),
        "test".as_ref(),
        script("paid-orders").as_os_str(),
        "--event".as_ref(),
        event.as_os_str(),
        "--param".as_ref(),
        "min_amount=200".as_ref(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(json["decision"]["action"], "skip");
    assert_eq!(json["decision"]["reason"], "amount 150 is below 200");
    assert_eq!(json["logs"][0]["level"], "debug");
    assert!(json["fuel_used"].as_u64().expect("fuel") > 0);
}

#[test]
fn script_failure_exits_non_zero_with_the_kind() {
    let event = event_file("loop", PAID);
    let (code, json, stderr) = sluice(&[
        "script".as_ref(),
        "test".as_ref(),
        script("hostile-loop").as_os_str(),
        "--event".as_ref(),
        event.as_os_str(),
        "--fuel".as_ref(),
        "100000".as_ref(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(json["error"]["kind"], "out_of_fuel");
    assert!(stderr.contains("instruction budget"), "{stderr}");
}

#[test]
fn bad_event_file_and_refused_script_are_clear_errors() {
    let bad = event_file("bad", r#"{"type":"order.paid","occurred_at":"now","payload":{}}"#);
    let (code, _, stderr) =
        sluice(&["script".as_ref(), "test".as_ref(), script("paid-orders").as_os_str(), "--event".as_ref(), bad.as_os_str()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("occurred_at"), "{stderr}");

    let event = event_file("ok", PAID);
    let (code, _, stderr) =
        sluice(&["script".as_ref(), "test".as_ref(), script("hostile-nonconforming").as_os_str(), "--event".as_ref(), event.as_os_str()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not export `sluice:event-export/filter@0.1.0`"), "{stderr}");
}
