//! Helpers shared by the end-to-end tests: the scripts built from source by
//! `scripts/build.sh`, events in the JSON shape services post, the engine
//! as a real process, and receivers as real HTTP (and HTTPS) servers.

pub mod browser;
pub mod engine;
pub mod proxy;
pub mod receiver;
pub mod tls;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use sluice::sandbox::Params;
use sluice::{Event, EventInput};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The component `scripts/build.sh` made for the script crate `name`.
/// Fails loudly, never skips, when the scripts were not built.
pub fn script_bytes(name: &str) -> Vec<u8> {
    let path = root().join("target/scripts").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/build.sh first", path.display()))
}

/// The core module (before componentization) of the script crate `name`.
pub fn core_module_bytes(name: &str) -> Vec<u8> {
    let path = root().join("target/wasm/wasm32-unknown-unknown/wasm-release").join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/build.sh first", path.display()))
}

/// An event from its JSON text, validated as the engine does at ingest.
pub fn event_json(json: serde_json::Value) -> Event {
    EventInput::from_json(&json.to_string())
        .and_then(|input| input.validate(|| sluice::EventId::parse("evt_generated").expect("literal id")))
        .expect("test event is valid")
}

/// An event of `event_type` in `unit` with `payload`.
pub fn event(event_type: &str, unit: &str, payload: serde_json::Value) -> Event {
    event_json(serde_json::json!({
        "id": "evt_1",
        "type": event_type,
        "organization_unit": unit,
        "occurred_at": "2026-11-22T11:30:00+01:00",
        "source": {"application": "shop", "user": "customer/1000"},
        "related": ["evt_0"],
        "payload": payload,
    }))
}

/// Script parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> Arc<Params> {
    Arc::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}
