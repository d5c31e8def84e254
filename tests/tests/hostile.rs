//! Hostile scripts end in their own error kind within their limits, the
//! engine keeps running, and other scripts keep deciding correctly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice::sandbox::{Limits, LoadError, Sandbox, SandboxConfig, ScriptError};
use sluice_tests::{event, params, script_bytes};

fn sandbox(limits: Limits) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxConfig { limits, max_concurrent_calls: 8, ..SandboxConfig::default() }).expect("sandbox"))
}

/// Runs `name` on a hostile event and returns the error; then checks the
/// same script still decides on a benign event and paid-orders is unharmed.
fn hostile_error(sandbox: &Sandbox, name: &str, p: &[(&str, &str)]) -> ScriptError {
    let script = sandbox.load(&script_bytes(name)).expect("hostile scripts still implement the world");
    let outcome = sandbox.run(&script, &params(p), &event("order.paid", "emea", json!({"amount": 1})));
    let error = outcome.decision().expect_err("hostile event must fail").clone();

    let benign = sandbox.run(&script, &params(p), &event("benign", "emea", json!({})));
    assert!(benign.decision().expect("benign event decides").is_deliver(), "{name} after its failure");
    let good = sandbox.load(&script_bytes("paid-orders")).expect("loads");
    let after = sandbox.run(&good, &params(&[("min_amount", "1")]), &event("order.paid", "", json!({"amount": 2})));
    assert!(after.decision().expect("paid-orders decides").is_deliver(), "paid-orders after {name}");
    error
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let limits = Limits { fuel: 5_000_000, ..Limits::default() };
    let error = hostile_error(&sandbox(limits), "hostile-loop", &[]);
    assert_eq!(error, ScriptError::OutOfFuel { budget: 5_000_000 });
}

#[test]
fn fuel_exhaustion_is_reproducible() {
    let sandbox = sandbox(Limits { fuel: 1_000_000, ..Limits::default() });
    let script = sandbox.load(&script_bytes("hostile-loop")).expect("loads");
    for _ in 0..3 {
        let outcome = sandbox.run(&script, &params(&[]), &event("order.paid", "", json!({})));
        assert_eq!(outcome.fuel_used, 1_000_000);
        assert_eq!(outcome.decision().expect_err("fails").kind(), "out_of_fuel");
    }
}

#[test]
fn wall_clock_cap_stops_a_script_with_a_huge_budget() {
    let limits = Limits { fuel: u64::MAX / 2, wall_clock: Duration::from_millis(50), ..Limits::default() };
    let error = hostile_error(&sandbox(limits), "hostile-loop", &[]);
    assert_eq!(error, ScriptError::Timeout { limit_ms: 50 });
}

/// The clock behind the wall-clock cap sleeps while no script runs (an idle
/// engine is not woken 200 times a second); a script that starts after such
/// a sleep is still stopped at its cap, and so are several at once.
#[test]
fn wall_clock_cap_holds_after_the_sandbox_sat_idle() {
    let limits = Limits { fuel: u64::MAX / 2, wall_clock: Duration::from_millis(50), ..Limits::default() };
    let sandbox = sandbox(limits);
    let script = sandbox.load(&script_bytes("hostile-loop")).expect("loads");
    for _ in 0..2 {
        // Longer than the clock ticks on after the last script (1 s).
        std::thread::sleep(Duration::from_millis(1_500));
        let (done, results) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let (sandbox, script, done) = (sandbox.clone(), script.clone(), done.clone());
            std::thread::spawn(move || {
                let outcome = sandbox.run(&script, &params(&[]), &event("order.paid", "", json!({})));
                let _ = done.send(outcome.decision().cloned().map_err(Clone::clone));
            });
        }
        for _ in 0..3 {
            // A clock that stayed asleep would leave the scripts running.
            let result = results.recv_timeout(Duration::from_secs(10)).expect("the script was stopped");
            assert_eq!(result.expect_err("stopped"), ScriptError::Timeout { limit_ms: 50 });
        }
    }
}

#[test]
fn memory_hog_hits_the_memory_cap() {
    let limits = Limits { memory_bytes: 8 << 20, ..Limits::default() };
    let error = hostile_error(&sandbox(limits), "hostile-memory", &[]);
    assert_eq!(error, ScriptError::OutOfMemory { limit: 8 << 20 });
}

#[test]
fn panic_is_a_trap_carrying_the_panic_message() {
    let error = hostile_error(&sandbox(Limits::default()), "hostile-panic", &[]);
    assert_eq!(error.kind(), "trapped");
    assert!(error.to_string().contains("hostile-panic refuses event evt_1"), "{error}");
}

#[test]
fn oversized_output_is_refused() {
    let limits = Limits { output_bytes: 64 << 10, ..Limits::default() };
    let error = hostile_error(&sandbox(limits), "hostile-output", &[("mode", "big"), ("size", "100000")]);
    assert_eq!(error, ScriptError::OutputTooLarge { size: 100_002, limit: 64 << 10 });
}

#[test]
fn invalid_output_is_refused_with_the_reason() {
    let sandbox = sandbox(Limits::default());
    let not_json = hostile_error(&sandbox, "hostile-output", &[("mode", "not-json")]);
    assert_eq!(not_json.kind(), "invalid_output");
    assert!(not_json.to_string().contains("body is not JSON"), "{not_json}");
    let bad_header = hostile_error(&sandbox, "hostile-output", &[("mode", "bad-header")]);
    assert_eq!(bad_header.kind(), "invalid_output");
    assert!(bad_header.to_string().contains("not a valid HTTP token"), "{bad_header}");
}

#[test]
fn module_that_does_not_implement_the_world_is_refused_at_load() {
    let sandbox = sandbox(Limits::default());
    let error = sandbox.load(&script_bytes("hostile-nonconforming")).expect_err("refused");
    assert!(matches!(error, LoadError::MissingExport { .. }), "{error:?}");
    assert_eq!(error.code(), "world_mismatch");
    let message = error.to_string();
    assert!(message.contains("sluice:event-export/filter@0.1.0"), "{message}");
    assert!(message.contains("evil:impostor/filter"), "names what it found: {message}");
}

#[test]
fn garbage_is_refused_at_load() {
    let sandbox = sandbox(Limits::default());
    assert_eq!(sandbox.load(b"hello").expect_err("refused"), LoadError::NotWasm);
    let truncated = &script_bytes("paid-orders")[..1000];
    assert_eq!(sandbox.load(truncated).expect_err("refused").code(), "invalid_wasm");
}

#[test]
fn hostile_scripts_beside_good_ones_do_not_change_their_decisions() {
    let sandbox = sandbox(Limits { fuel: 2_000_000, ..Limits::default() });
    let good = sandbox.load(&script_bytes("paid-orders")).expect("loads");
    let hostile: Vec<_> = ["hostile-loop", "hostile-memory", "hostile-panic"]
        .into_iter()
        .map(|name| sandbox.load(&script_bytes(name)).expect("loads"))
        .collect();
    let attackers: Vec<_> = hostile
        .into_iter()
        .map(|script| {
            let sandbox = sandbox.clone();
            std::thread::spawn(move || {
                (0..20).filter(|_| sandbox.run(&script, &params(&[]), &event("x", "", json!({}))).decision().is_err()).count()
            })
        })
        .collect();
    let p = params(&[("min_amount", "10")]);
    for i in 0..200 {
        let amount = i % 20;
        let outcome = sandbox.run(&good, &p, &event("order.paid", "", json!({"amount": amount})));
        assert_eq!(outcome.decision().expect("decides").is_deliver(), amount >= 10, "amount {amount}");
    }
    for attacker in attackers {
        assert_eq!(attacker.join().expect("attacker thread"), 20, "every hostile call fails");
    }
}
