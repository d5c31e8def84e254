//! A configuration's decision on an event: whether it selects the event,
//! and what its script says (deliver, and in what shape; skip, and why; or
//! which error), as the delivery row that records it. Routing decides on
//! arrival; delivery decides what was deferred while a script was paused.
//!
//! It runs scripts; it must never write to the store or send anything.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::model::event::Event;
use crate::model::timestamp;
use crate::pipeline::configs::ActiveConfig;
use crate::pipeline::job::LEASE_MS;
use crate::sandbox::{Decision, Outcome, OutcomeResult, Sandbox, ScriptError};
use crate::store::{DeliveryStatus, NewDelivery};
use crate::telemetry::{self, RoutingOutcome, traces};

/// An event's decisions: a delivery row per configuration that took it.
pub type Decided = Vec<(Arc<ActiveConfig>, NewDelivery)>;

/// The delivery rows for one event: one per matching configuration.
pub fn decide_all(sandbox: &Sandbox, configs: &[Arc<ActiveConfig>], event: &Event) -> Decided {
    let now = timestamp::now_ms();
    configs
        .iter()
        .filter(|c| c.spec.selects(&event.event_type, &event.organization_unit))
        .map(|config| (config.clone(), decide(sandbox, config, event, now, Pause::Defer)))
        .collect()
}

/// What [`decide`] does when the configuration's script is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Records the delivery undecided, due at the script's next slot.
    Defer,
    /// Runs the script anyway (a deferred decision whose turn it is, a test).
    Ignore,
}

/// One configuration's decision on an event, whether it selects the event
/// or not: its script runs (when it has one) and the delivery row records
/// the outcome. A pending row is due at `now` and leased to the sender the
/// router hands it to; an undecided one waits for its script's slot.
pub fn decide(sandbox: &Sandbox, config: &ActiveConfig, event: &Event, now: i64, pause: Pause) -> NewDelivery {
    let mut d = NewDelivery::due_now(config.id.clone(), config.version, now, now + LEASE_MS);
    match &config.script {
        None => {}
        Some(Err(why)) => {
            d.status = DeliveryStatus::ScriptError;
            d.error_kind = Some("unavailable".into());
            d.reason = Some(why.clone());
        }
        Some(Ok(script)) => {
            if pause == Pause::Defer
                && let Some(wait) = config.penalty.defer()
            {
                d.undecided = true;
                d.next_attempt_at = Some(now + wait.as_millis() as i64);
                d.lease_until = None;
                telemetry::routing_decision(RoutingOutcome::Deferred);
                return d;
            }
            let (started, began) = (Instant::now(), SystemTime::now());
            let outcome = sandbox.run(script, &config.params, event);
            let took = started.elapsed();
            let decision = match &outcome.result {
                OutcomeResult::Decision(Decision::Deliver { .. }) => "deliver",
                OutcomeResult::Decision(Decision::Skip { .. }) => "skip",
                OutcomeResult::Error(e) => e.kind(),
            };
            let (tenant, configuration) = (config.tenant.as_str(), config.id.as_str());
            traces::script(tenant, event.id.as_str(), configuration, decision, outcome.fuel_used, (began, began + took));
            let exhausted = matches!(outcome.result, OutcomeResult::Error(ScriptError::OutOfFuel { .. } | ScriptError::Timeout { .. }));
            config.penalty.record(took, exhausted, sandbox.exhaustion_penalty());
            telemetry::script_run(took, outcome.fuel_used);
            record_outcome(&mut d, outcome);
        }
    }
    if d.status != DeliveryStatus::Pending {
        d.next_attempt_at = None;
        d.lease_until = None;
    }
    telemetry::routing_decision(match d.status {
        DeliveryStatus::Filtered => RoutingOutcome::Filtered,
        DeliveryStatus::ScriptError => RoutingOutcome::ScriptError,
        _ => RoutingOutcome::Deliver,
    });
    d
}

/// What a script's run records on its delivery: the decision (a skip's
/// reason, a delivery's body and headers) or the error, the log lines, the
/// fuel.
pub fn record_outcome(d: &mut NewDelivery, outcome: Outcome) {
    d.fuel_used = Some(outcome.fuel_used as i64);
    if !outcome.logs.is_empty() {
        d.script_logs = serde_json::to_string(&outcome.logs).ok();
    }
    match outcome.result {
        OutcomeResult::Decision(Decision::Skip { reason }) => {
            d.status = DeliveryStatus::Filtered;
            d.reason = Some(reason);
        }
        OutcomeResult::Decision(Decision::Deliver { body, headers }) => {
            d.body = body.map(|b| b.get().to_owned());
            if !headers.is_empty() {
                d.headers = serde_json::to_string(&headers).ok();
            }
        }
        OutcomeResult::Error(e) => {
            d.status = DeliveryStatus::ScriptError;
            d.error_kind = Some(e.kind().to_owned());
            d.reason = Some(e.to_string());
        }
    }
}
