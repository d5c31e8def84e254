use std::sync::Arc;
use std::time::Instant;
use sluice::event::{EventInput};
use sluice::sandbox::{Params, Sandbox, SandboxConfig};

fn main() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let lines: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:05}"), "name": "Blue widget, large", "qty": i + 1, "price": 19.95}))
        .collect();
    let payload = serde_json::json!({"order_id": "ord_8f1b2c", "amount": 250.0, "currency": "EUR",
        "customer": {"name": "Ann Example", "email": "ann@example.com", "phone": "+31 6 1234 5678"},
        "shipping": {"street": "Main street 1", "city": "Amsterdam", "country": "NL"}, "lines": lines});
    let args: Vec<String> = std::env::args().collect();
    let ty = args.get(2).cloned().unwrap_or("order.paid".into());
    let json = serde_json::json!({"id": "evt_0001", "type": ty, "organization_unit": "emea/nl/store-12",
        "occurred_at": "2026-11-22T10:00:00Z", "payload": payload}).to_string();
    let event = EventInput::from_json(&json).unwrap().validate(|| unreachable!()).unwrap();
    let params: Arc<Params> = Arc::new([("min_amount".to_owned(), "100".to_owned())].into_iter().collect());
    let name = &args[1];
    let bytes = std::fs::read(format!("target/scripts/{name}.wasm")).unwrap();
    let script = sandbox.load(&bytes).unwrap();
    let o = sandbox.run(&script, &params, &event);
    println!("{:?} fuel {}", o.decision().map(|d| d.is_deliver()), o.fuel_used);
    for _ in 0..3 {
        let n = 20000;
        let t = Instant::now();
        for _ in 0..n { std::hint::black_box(sandbox.run(&script, &params, &event)); }
        println!("{name}: {:.2} us/call", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
