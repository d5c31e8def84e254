//! Explaining a recorded decision: the script version and parameters a
//! delivery's configuration ran (its script history says which) run again
//! on the stored event, and what they decide now set beside what was
//! recorded.
//!
//! A script is a pure function of the event and its parameters, and its
//! fuel counts the same on every run: the same version decides the same
//! again, an exhausted budget included. Only a wall-clock timeout depends on
//! the machine. This module runs and compares; it must never write to the
//! store or send anything.

use std::sync::Arc;

use crate::model::event::Event;
use crate::model::ids::{ConfigId, ScriptId};
use crate::pipeline::decide::record_outcome;
use crate::sandbox::{Params, Sandbox, Script};
use crate::store::{DeliveryRecord, DeliveryStatus, NewDelivery, ScriptRecord};

/// Why a delivery's decision cannot be run again.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("the delivery waits for its paused script to decide: nothing was decided yet")]
    Undecided,
    #[error("the delivery was decided before sluice recorded which script its configuration ran")]
    NotRecorded,
    #[error("script {id} (sha256 {}), which decided this delivery, was deleted", sha256.as_deref().unwrap_or("unknown"))]
    ScriptDeleted { id: ScriptId, sha256: Option<String> },
}

impl ExplainError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Undecided => "not_decided",
            Self::NotRecorded => "not_recorded",
            Self::ScriptDeleted { .. } => "script_deleted",
        }
    }
}

/// A recorded decision and the same decision made again.
#[derive(Debug)]
pub struct Explained {
    pub delivery: DeliveryRecord,
    /// The script version that decided; `None`: the configuration had none.
    pub script: Option<ScriptRecord>,
    pub params: Params,
    pub recorded: Verdict,
    pub again: Verdict,
}

/// What a decision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deliver,
    Skip,
    Error,
}

/// One decision, as recorded or as made again.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    /// A skip's reason, an error's message.
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    /// The body the script decided (JSON text), if it replaced it.
    pub body: Option<String>,
    /// JSON array of headers the script added.
    pub headers: Option<String>,
    /// The script's log lines, a JSON array.
    pub logs: serde_json::Value,
    /// `None`: not recorded (decided before fuel was recorded, or no script ran).
    pub fuel_used: Option<i64>,
}

impl Verdict {
    /// The decision a delivery records. A delivery's status goes on to say
    /// how sending went; what its script decided is deliver, skip or error.
    pub fn recorded(d: &DeliveryRecord) -> Self {
        let (action, reason, error_kind) = match d.status {
            DeliveryStatus::Filtered => (Action::Skip, d.reason.clone(), None),
            DeliveryStatus::ScriptError => (Action::Error, d.reason.clone(), d.error_kind.clone()),
            // A reason on these is the sending's (a deleted configuration).
            DeliveryStatus::Pending | DeliveryStatus::Succeeded | DeliveryStatus::Failed => (Action::Deliver, None, None),
        };
        Self {
            action,
            reason,
            error_kind,
            body: d.body.clone(),
            headers: d.headers.clone(),
            logs: d.script_logs.clone(),
            fuel_used: d.fuel_used,
        }
    }

    fn decided(d: NewDelivery) -> Self {
        let action = match d.status {
            DeliveryStatus::Filtered => Action::Skip,
            DeliveryStatus::ScriptError => Action::Error,
            _ => Action::Deliver,
        };
        let logs = d.script_logs.as_deref().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| serde_json::json!([]));
        Self {
            action,
            reason: (action != Action::Deliver).then_some(d.reason).flatten(),
            error_kind: d.error_kind,
            body: d.body,
            headers: d.headers,
            logs,
            fuel_used: d.fuel_used,
        }
    }

    /// The fields in which `again` differs from this recorded verdict. Fuel
    /// counts only when both have it.
    pub fn differences(&self, again: &Verdict) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("action", self.action == again.action);
        check("reason", self.reason == again.reason);
        check("error_kind", self.error_kind == again.error_kind);
        check("body", same_json(&self.body, &again.body));
        check("headers", same_json(&self.headers, &again.headers));
        check("logs", self.logs == again.logs);
        if let (Some(recorded), Some(now)) = (self.fuel_used, again.fuel_used) {
            check("fuel_used", recorded == now);
        }
        out
    }
}

/// Two optional JSON texts hold the same value (key order and spacing aside).
fn same_json(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a == b
                || serde_json::from_str::<serde_json::Value>(a)
                    .ok()
                    .zip(serde_json::from_str::<serde_json::Value>(b).ok())
                    .is_some_and(|(a, b)| a == b)
        }
        (a, b) => a == b,
    }
}

/// The script that ran, as well as it can be had again.
pub enum Ran<'a> {
    /// The configuration had no script: every selected event is delivered.
    NoScript,
    /// The script version could not be loaded (why); decided as routing
    /// decides then.
    Unavailable(String),
    Script(&'a Script),
}

/// Runs the decision again: the same call routing makes, under the same
/// limits, on a blocking thread of the caller's choosing.
pub fn decide_again(sandbox: &Sandbox, config: &ConfigId, version: i64, ran: Ran<'_>, params: &Arc<Params>, event: &Event) -> Verdict {
    let mut d = NewDelivery::due_now(config.clone(), version, 0, 0);
    match ran {
        Ran::NoScript => {}
        Ran::Unavailable(why) => {
            d.status = DeliveryStatus::ScriptError;
            d.error_kind = Some("unavailable".into());
            d.reason = Some(why);
        }
        Ran::Script(script) => record_outcome(&mut d, sandbox.run(script, params, event)),
    }
    Verdict::decided(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action) -> Verdict {
        Verdict {
            action,
            reason: None,
            error_kind: None,
            body: Some(r#"{"a":1,"b":2}"#.into()),
            headers: None,
            logs: serde_json::json!([]),
            fuel_used: Some(100),
        }
    }

    #[test]
    fn equal_json_bodies_written_differently_are_the_same() {
        let recorded = verdict(Action::Deliver);
        let again = Verdict { body: Some(r#"{ "b": 2, "a": 1 }"#.into()), ..recorded.clone() };
        assert!(recorded.differences(&again).is_empty());
    }

    #[test]
    fn each_differing_field_is_named_and_unrecorded_fuel_is_not_compared() {
        let recorded = Verdict { fuel_used: None, ..verdict(Action::Deliver) };
        let again =
            Verdict { action: Action::Skip, reason: Some("below threshold".into()), body: None, fuel_used: Some(5), ..recorded.clone() };
        assert_eq!(recorded.differences(&again), vec!["action", "reason", "body"]);
        let fuelled = verdict(Action::Deliver);
        assert_eq!(fuelled.differences(&Verdict { fuel_used: Some(101), ..fuelled.clone() }), vec!["fuel_used"]);
    }
}
