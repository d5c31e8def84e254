//! The durable write path alone, on a SQLite file: what each delivered
//! event costs the store (accept it, record its decision, log its one
//! successful attempt), without HTTP, scripts or signing around it.
//!
//! Posters work concurrently as in production, so write groups form as they
//! do under load. `cargo bench -p sluice --bench store`; the figure is wall
//! time per event, which the single writer thread bounds.
//!
//! Beside it, the retry poller's claim among many enabled configurations,
//! few of them with anything waiting: it runs on the same writer at every
//! poll, whatever the load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::Keyring;
use sluice::store::{self, AttemptOutcome, ClaimSkip, ConfigWrite, Ingested, NewAttempt, NewDelivery, Routed, Store};
use sluice::{AttemptId, ConfigId, TenantId};
use sluice::{Event, EventInput};

/// Concurrent posters: as `sluice-load` runs by default, where each event
/// waits for three commits in a row and the figure is their latency; and
/// enough that the writer thread is never idle, where the figure is what
/// one writer can take at most, whatever the cores around it (the ceiling
/// a node on a large machine would meet).
const POSTERS: [usize; 2] = [64, 2048];

/// A 500-byte `order.paid` event, as `sluice-load` posts.
fn event(id: &str) -> Event {
    let json = serde_json::json!({
        "id": id, "type": "order.paid", "organization_unit": "emea/nl",
        "occurred_at": "2026-11-22T10:00:00Z",
        "payload": {"order_id": "ord_8f1b2c", "amount": 129.95, "currency": "EUR", "note": "x".repeat(400)},
    })
    .to_string();
    EventInput::from_json(&json).and_then(|i| i.validate(|| unreachable!())).expect("valid event")
}

/// A store on a SQLite file in a scratch directory (removed when the
/// directory is dropped), and a tenant in it.
fn scratch(runtime: &tokio::runtime::Runtime) -> (tempfile::TempDir, Store, TenantId) {
    let dir = tempfile::tempdir().expect("scratch directory");
    let keys = Arc::new(Keyring::new(&"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=".parse().expect("key"), &[]));
    let store = runtime.block_on(Store::open_sqlite(&dir.path().join("sluice.db"), keys)).expect("store");
    let tenant = runtime.block_on(store.create_tenant("bench", None)).expect("tenant").id;
    (dir, store, tenant)
}

/// One event's walk through the store.
async fn deliver_one(store: &Store, tenant: &TenantId, config: &ConfigId, id: String) {
    let seq = match store.ingest(tenant, None, vec![event(&id)]).await.expect("ingest")[..] {
        [Ingested::Stored { seq }] => seq,
        ref other => panic!("{other:?}"),
    };
    let now = store::now_ms();
    // Handed straight to a sender, as routing does: the attempt writes the row.
    let delivery = NewDelivery::due_now(config.clone(), 1, now, now + 300_000);
    let delivery_id = delivery.id.clone();
    let routed = Routed { tenant: tenant.clone(), event_seq: seq, deliveries: Vec::new(), handed: 1, resumed: false, epoch: store.epoch() };
    assert_eq!(store.record_routing(vec![routed]).await.expect("routing"), vec![true]);
    store
        .record_attempt(NewAttempt {
            id: AttemptId::generate(),
            tenant_id: tenant.clone(),
            delivery_id,
            config_id: config.clone(),
            number: 1,
            started_at: now,
            duration_ms: 2,
            method: "POST".into(),
            uri: "http://127.0.0.1:9/orders".into(),
            response_status: Some(200),
            outcome: AttemptOutcome::Succeeded,
            error: None,
            request_headers: r#"{"content-type":"application/json","webhook-id":"msg_0000000000000000000000000000","webhook-signature":"v1,***","webhook-timestamp":"1764000000"}"#.into(),
            response_headers: Some(r#"{"content-length":"5"}"#.into()),
            request_body: Some("x".repeat(500)),
            response_body: Some(b"[ACK]".to_vec()),
            next_attempt_at: None,
            unwritten: Some(store.unwritten(tenant.clone(), seq, delivery, 1, store.epoch())),
        })
        .await
        .expect("attempt");
}

fn write_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (_dir, store, tenant) = scratch(&runtime);
    let config = ConfigId::generate();
    let mut next = 0u64;

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(10));
    for posters in POSTERS {
        group.bench_function(format!("sqlite: accept, route, log one attempt ({posters} posters)"), |b| {
            b.iter_custom(|events| {
                let first = next;
                next += events;
                runtime.block_on(async {
                    let started = Instant::now();
                    let mut running = tokio::task::JoinSet::new();
                    for p in 0..posters as u64 {
                        let (store, tenant, config) = (store.clone(), tenant.clone(), config.clone());
                        running.spawn(async move {
                            let mut n = first + p;
                            while n < first + events {
                                // Each poster its own run of ids, as `sluice-load` posts them:
                                // the event-id index takes them at as many places.
                                deliver_one(&store, &tenant, &config, format!("evt_{p:04}_{n:012}")).await;
                                n += posters as u64;
                            }
                        });
                    }
                    running.join_all().await;
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
    runtime.block_on(store.close());
}

/// Enabled configurations for the claim bench, and how many of them have
/// a delivery waiting (its retry due in an hour).
const CONFIGS: usize = 20_000;
const WAITING: usize = 100;

fn claim(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (_dir, store, tenant) = scratch(&runtime);
    runtime.block_on(async {
        let in_an_hour = store::now_ms() + 3_600_000;
        for i in 0..CONFIGS {
            let id = ConfigId::generate();
            let write =
                ConfigWrite { name: format!("c{i}"), script_id: None, script_params: "{}".into(), spec: "{}".into(), changed_by: None };
            store.insert_config(&tenant, &id, &write).await.expect("configuration");
            store.set_config_enabled(&tenant, &id, None, true, None).await.expect("enabled");
            if i % (CONFIGS / WAITING) == 0 {
                let seq = match store.ingest(&tenant, None, vec![event(&format!("evt_{i}"))]).await.expect("ingest")[..] {
                    [Ingested::Stored { seq }] => seq,
                    ref other => panic!("{other:?}"),
                };
                let mut waiting = NewDelivery::due_now(id, 1, in_an_hour, in_an_hour);
                waiting.lease_until = None;
                let routed = Routed {
                    tenant: tenant.clone(),
                    event_seq: seq,
                    deliveries: vec![waiting],
                    handed: 0,
                    resumed: false,
                    epoch: store.epoch(),
                };
                assert_eq!(store.record_routing(vec![routed]).await.expect("routing"), vec![true]);
            }
        }
    });

    let mut group = c.benchmark_group("store");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function(format!("sqlite: claim with {CONFIGS} configurations enabled, {WAITING} waiting, none due"), |b| {
        b.iter(|| {
            let due = runtime.block_on(store.claim_due(store::now_ms(), 60_000, 256, &ClaimSkip::default())).expect("claim");
            assert!(due.is_empty());
        })
    });
    group.finish();
    runtime.block_on(store.close());
}

criterion_group!(benches, write_path, claim);
criterion_main!(benches);
