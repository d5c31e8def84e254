//! Each example script, built from source to a component, decides correctly
//! in the real sandbox.

use serde_json::{Value, json};
use sluice::sandbox::{Decision, Header, Outcome, Sandbox, SandboxConfig};
use sluice_tests::{core_module_bytes, event, params, script_bytes};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { max_concurrent_calls: 8, ..SandboxConfig::default() }).expect("sandbox")
}

fn body(outcome: &Outcome) -> Value {
    match outcome.decision().expect("a decision") {
        Decision::Deliver { body: Some(body), .. } => serde_json::from_str(body.get()).expect("JSON body"),
        other => panic!("expected a delivery with a body, got {other:?}"),
    }
}

fn headers(outcome: &Outcome) -> Vec<Header> {
    match outcome.decision().expect("a decision") {
        Decision::Deliver { headers, .. } => headers.clone(),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

fn skip_reason(outcome: &Outcome) -> String {
    match outcome.decision().expect("a decision") {
        Decision::Skip { reason } => reason.clone(),
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[test]
fn paid_orders_delivers_at_or_over_the_minimum() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("paid-orders")).expect("loads");
    assert_eq!(script.wit_version(), "0.1.0");
    let p = params(&[("min_amount", "100")]);
    for amount in [json!(100), json!(250.5), json!("100.00")] {
        let outcome = sandbox.run(&script, &p, &event("order.paid", "emea", json!({"amount": amount})));
        assert!(outcome.decision().expect("decision").is_deliver(), "{amount}: {outcome:?}");
        assert!(body_is_default(&outcome));
    }
    let under = sandbox.run(&script, &p, &event("order.paid", "emea", json!({"amount": 99.5})));
    assert_eq!(skip_reason(&under), "amount 99.5 is below 100");
    let other = sandbox.run(&script, &p, &event("order.created", "emea", json!({"amount": 500})));
    assert_eq!(skip_reason(&other), "type order.created is not order.paid");
    // The script's debug line reaches the host.
    assert!(under.logs.iter().any(|l| l.message == "order amount 99.5, minimum 100"), "{:?}", under.logs);
}

fn body_is_default(outcome: &Outcome) -> bool {
    matches!(outcome.decision(), Ok(Decision::Deliver { body: None, .. }))
}

#[test]
fn paid_orders_reports_its_own_errors() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("paid-orders")).expect("loads");
    let bad_param = sandbox.run(&script, &params(&[("min_amount", "lots")]), &event("order.paid", "", json!({"amount": 1})));
    let err = bad_param.decision().expect_err("script error");
    assert_eq!(err.kind(), "returned");
    assert!(err.to_string().contains("min_amount"), "{err}");
    let no_amount = sandbox.run(&script, &params(&[]), &event("order.paid", "", json!({"total": 1})));
    assert!(no_amount.decision().expect_err("script error").to_string().contains("amount"));
}

#[test]
fn store_router_routes_by_unit() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("store-router")).expect("loads");
    let p = params(&[("stores", "emea/nl, us/ny/store-1"), ("exclude", "emea/nl/outlet")]);
    let nl = sandbox.run(&script, &p, &event("order.paid", "emea/nl/store-12", json!({})));
    assert_eq!(headers(&nl), vec![Header { name: "x-store".into(), value: "store-12".into() }]);
    let ny = sandbox.run(&script, &p, &event("order.paid", "us/ny/store-1", json!({})));
    assert!(ny.decision().expect("decision").is_deliver());
    let outlet = sandbox.run(&script, &p, &event("order.paid", "emea/nl/outlet/a", json!({})));
    assert!(skip_reason(&outlet).contains("excluded"));
    let be = sandbox.run(&script, &p, &event("order.paid", "emea/be/store-3", json!({})));
    assert!(skip_reason(&be).contains("not routed here"));
    let sibling = sandbox.run(&script, &p, &event("order.paid", "us/ny/store-10", json!({})));
    assert!(!sibling.decision().expect("decision").is_deliver(), "store-10 is not under store-1");
}

#[test]
fn redact_pii_masks_personal_data() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("redact-pii")).expect("loads");
    let payload = json!({
        "order": "o-1", "amount": 12.5,
        "customer": {"name": "Ann Example", "email": "ann@example.com", "phone": "+31 6 1234 5678", "tier": "gold"},
        "contacts": ["bob@example.org"],
        "iban": "NL00BANK0123456789",
    });
    let outcome = sandbox.run(&script, &params(&[("fields", "iban")]), &event("order.paid", "emea", payload));
    let masked = body(&outcome);
    let text = masked.to_string();
    for secret in ["Ann Example", "ann@", "1234 5678", "bob@", "NL00BANK0123456789"] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
    assert_eq!(masked["customer"]["tier"], "gold");
    assert_eq!(masked["amount"], 12.5);
    assert_eq!(masked["order"], "o-1");
    let count = headers(&outcome).into_iter().find(|h| h.name == "x-redacted-fields").expect("count header");
    assert!(count.value.parse::<u32>().expect("a number") >= 5, "{count:?}");
}

#[test]
fn reshape_builds_the_receivers_body() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("reshape")).expect("loads");
    let outcome = sandbox.run(&script, &params(&[]), &event("order.paid", "emea/nl", json!({"amount": 5})));
    let reshaped = body(&outcome);
    assert_eq!(reshaped["EventType"], "OrderPaid");
    assert_eq!(reshaped["EventCategory"], "OrderEvents");
    // occurred_at was posted with +01:00; scripts see it in UTC.
    assert_eq!(reshaped["EventDateUtc"], "2026-11-22T10:30:00Z");
    assert_eq!(reshaped["EventId"], "evt_1");
    assert_eq!(reshaped["User"], "customer/1000");
    assert_eq!(reshaped["Data"], json!({"amount": 5}));
    assert_eq!(headers(&outcome), vec![Header { name: "x-event-category".into(), value: "OrderEvents".into() }]);
}

#[test]
fn decisions_are_reproducible_to_the_fuel_unit() {
    let sandbox = sandbox();
    let script = sandbox.load(&script_bytes("redact-pii")).expect("loads");
    let e = event("order.paid", "emea", json!({"customer": {"email": "a@b.c"}}));
    let p = params(&[]);
    let first = sandbox.run(&script, &p, &e);
    for _ in 0..5 {
        let again = sandbox.run(&script, &p, &e);
        assert_eq!(again.fuel_used, first.fuel_used);
        assert_eq!(again.decision().expect("decision"), first.decision().expect("decision"));
    }
}

#[test]
fn core_modules_are_componentized_on_load() {
    let sandbox = sandbox();
    let from_core = sandbox.load(&core_module_bytes("paid-orders")).expect("core module loads");
    let from_component = sandbox.load(&script_bytes("paid-orders")).expect("component loads");
    assert_ne!(from_core.sha256(), from_component.sha256());
    let (p, e) = (params(&[("min_amount", "10")]), event("order.paid", "", json!({"amount": 5})));
    assert_eq!(
        sandbox.run(&from_core, &p, &e).decision().expect("decision"),
        sandbox.run(&from_component, &p, &e).decision().expect("decision"),
    );
}

#[test]
fn compiled_scripts_survive_a_restart_through_the_disk_cache() {
    let dir = std::env::temp_dir().join(format!("sluice-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = SandboxConfig { cache_dir: Some(dir.clone()), max_concurrent_calls: 4, ..SandboxConfig::default() };
    let bytes = script_bytes("store-router");
    let sha = {
        let sandbox = Sandbox::new(config.clone()).expect("sandbox");
        sandbox.load(&bytes).expect("loads").sha256().to_string()
    };
    let cached = dir.join(format!("{sha}.cwasm"));
    assert!(cached.is_file(), "no serialized code at {}", cached.display());

    let p = params(&[("stores", "emea")]);
    let e = event("x", "emea/nl", json!({}));
    let restarted = Sandbox::new(config.clone()).expect("sandbox");
    let script = restarted.load(&bytes).expect("loads from the disk cache");
    assert!(restarted.run(&script, &p, &e).decision().expect("decision").is_deliver());

    // A damaged cache file costs a recompile, not a refusal.
    std::fs::write(&cached, b"garbage").expect("overwrite");
    let again = Sandbox::new(config).expect("sandbox");
    let script = again.load(&bytes).expect("recompiles");
    assert!(again.run(&script, &p, &e).decision().expect("decision").is_deliver());
    let _ = std::fs::remove_dir_all(&dir);
}
