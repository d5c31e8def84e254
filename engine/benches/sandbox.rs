//! Sandbox benchmarks: a fresh instance and one call per event, as the
//! engine runs scripts in production.
//!
//! Needs the scripts built first: `./scripts/build.sh`, then
//! `cargo bench -p sluice --bench sandbox`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::sandbox::{Params, Sandbox, SandboxConfig, Script};
use sluice::{Event, EventInput};

fn script(sandbox: &Sandbox, name: &str) -> Arc<Script> {
    let path = format!("{}/../target/scripts/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run ./scripts/build.sh first"));
    sandbox.load(&bytes).expect("bench script loads")
}

/// An `order.paid` event whose JSON is about 1 KB.
fn event_1kb() -> Event {
    let lines: Vec<_> = (0..8)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:05}"), "name": "Blue widget, large", "qty": i + 1, "price": 19.95}))
        .collect();
    let payload = serde_json::json!({
        "order_id": "ord_8f1b2c", "amount": 250.0, "currency": "EUR",
        "customer": {"name": "Ann Example", "email": "ann@example.com", "phone": "+31 6 1234 5678"},
        "shipping": {"street": "Main street 1", "city": "Amsterdam", "country": "NL"},
        "lines": lines,
    });
    let json = serde_json::json!({
        "id": "evt_0001", "type": "order.paid", "organization_unit": "emea/nl/store-12",
        "occurred_at": "2026-11-22T10:00:00Z", "source": {"application": "shop", "user": "customer/1"},
        "payload": payload,
    })
    .to_string();
    assert!((900..1200).contains(&json.len()), "event is {} bytes", json.len());
    EventInput::from_json(&json).and_then(|i| i.validate(|| unreachable!())).expect("valid event")
}

fn params() -> Arc<Params> {
    Arc::new([("min_amount".to_owned(), "100".to_owned())].into_iter().collect())
}

fn fresh_instance(c: &mut Criterion) {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let (event, params) = (event_1kb(), params());
    let mut group = c.benchmark_group("fresh_instance");
    group.throughput(Throughput::Elements(1));
    for name in ["paid-orders", "redact-pii"] {
        let script = script(&sandbox, name);
        assert!(sandbox.run(&script, &params, &event).decision().is_ok_and(|d| d.is_deliver()));
        group.bench_function(name, |b| b.iter(|| sandbox.run(&script, &params, &event)));
    }
    group.finish();
}

/// Runs `good` on `threads` threads for `iters` calls in total and returns
/// the time taken, while `beside` (if any) runs in a loop on one more thread.
fn run_parallel(sandbox: &Arc<Sandbox>, good: &Arc<Script>, threads: u64, beside: Option<&Arc<Script>>, iters: u64) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = beside.map(|script| {
        let (sandbox, script, stop) = (sandbox.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            let (event, params) = (event_1kb(), params());
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(sandbox.run(&script, &params, &event).decision().is_err());
                runs += 1;
            }
            runs
        })
    });
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (sandbox, script) = (sandbox.clone(), good.clone());
            std::thread::spawn(move || {
                let (event, params) = (event_1kb(), params());
                for _ in 0..iters / threads {
                    std::hint::black_box(sandbox.run(&script, &params, &event));
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().expect("worker"));
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = hostile {
        h.join().expect("hostile thread");
    }
    elapsed
}

fn throughput(c: &mut Criterion) {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).expect("sandbox"));
    let paid = script(&sandbox, "paid-orders");
    let looping = script(&sandbox, "hostile-loop");
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));
    group.bench_function("paid-orders/2-threads", |b| b.iter_custom(|n| run_parallel(&sandbox, &paid, 2, None, n)));
    group.bench_function("paid-orders/1-thread", |b| b.iter_custom(|n| run_parallel(&sandbox, &paid, 1, None, n)));
    group.bench_function("paid-orders/1-thread-beside-hostile-loop", |b| {
        b.iter_custom(|n| run_parallel(&sandbox, &paid, 1, Some(&looping), n))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = fresh_instance, throughput
}
criterion_main!(benches);
