//! Runs one script on a 1 KB event many times, for profilers that count
//! instructions (the machines are too noisy for timers):
//!
//!     valgrind --tool=callgrind target/release/examples/sandbox_profile paid-orders 2000
//!
//! The script is a name from `target/scripts/` or a path ending in `.wasm`.
//! Prints the fuel per call so a change in the guest shows up too.

use std::sync::Arc;

use sluice::EventInput;
use sluice::sandbox::{Params, Sandbox, SandboxConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "paid-orders".into());
    let runs: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    // A name from `target/scripts/`, or the path of any script (to compare builds).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/scripts");
    let path = if name.ends_with(".wasm") { name.clone() } else { format!("{dir}/{name}.wasm") };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run ./scripts/build.sh first"));
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let script = sandbox.load(&bytes).expect("script loads");
    let lines: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:05}"), "name": "Blue widget, large", "qty": i + 1, "price": 19.95}))
        .collect();
    let event = serde_json::json!({
        "id": "evt_0001", "type": "order.paid", "organization_unit": "emea/nl/store-12",
        "occurred_at": "2026-11-22T10:00:00Z", "source": {"application": "shop", "user": "customer/1"},
        "payload": {
            "order_id": "ord_8f1b2c", "amount": 250.0, "currency": "EUR",
            "customer": {"name": "Ann Example", "email": "ann@example.com", "phone": "+31 6 1234 5678"},
            "shipping": {"street": "Main street 1", "city": "Amsterdam", "country": "NL"},
            "lines": lines,
        },
    });
    let event =
        EventInput::from_json(&event.to_string()).and_then(|i| i.validate(|| unreachable!("the event has an id"))).expect("valid event");
    let params: Arc<Params> = Arc::new([("min_amount".to_owned(), "100".to_owned())].into_iter().collect());
    let mut fuel = 0;
    for _ in 0..runs {
        fuel = std::hint::black_box(sandbox.run(&script, &params, &event)).fuel_used;
    }
    println!("{name}: {runs} runs, {fuel} fuel per call");
}
