//! Native unit tests of a script: run the filter function on the host, with
//! parameters, and inspect its decision and log lines.
//!
//! ```
//! use sluice_sdk::{Decision, Event, testing::TestHost};
//!
//! fn filter(event: &Event) -> Decision {
//!     match sluice_sdk::params::get("only") {
//!         Some(t) if t != event.event_type() => Decision::skip("other type"),
//!         _ => Decision::deliver(),
//!     }
//! }
//!
//! let run = TestHost::new().param("only", "order.paid").run(filter, &Event::builder("order.paid").build());
//! assert!(run.decision().is_deliver());
//! ```

use std::collections::BTreeMap;

use crate::export::IntoFilterResult;
use crate::host::NATIVE;
use crate::{Decision, Error, Event, Level};

/// The parameters a native run sees.
#[derive(Debug, Clone, Default)]
pub struct TestHost {
    params: BTreeMap<String, String>,
}

/// What a native run produced.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The decision, or the script's own error.
    pub result: Result<Decision, Error>,
    /// The log lines, in order.
    pub logs: Vec<(Level, String)>,
}

impl TestHost {
    /// A host with no parameters.
    pub fn new() -> TestHost {
        TestHost::default()
    }

    /// Sets a parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> TestHost {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Runs `filter` on `event` with these parameters.
    pub fn run<F, R>(&self, filter: F, event: &Event) -> TestRun
    where
        F: Fn(&Event) -> R,
        R: IntoFilterResult,
    {
        NATIVE.with(|n| {
            let mut n = n.borrow_mut();
            n.params = self.params.clone();
            n.logs.clear();
        });
        let result = filter(event).into_filter_result();
        let logs = NATIVE.with(|n| std::mem::take(&mut n.borrow_mut().logs));
        TestRun { result, logs }
    }
}

impl TestRun {
    /// The decision; panics with the script's error if it failed.
    #[track_caller]
    pub fn decision(&self) -> &Decision {
        match &self.result {
            Ok(d) => d,
            Err(e) => panic!("the script failed: {e}"),
        }
    }

    /// The script's error; panics if it decided.
    #[track_caller]
    pub fn error(&self) -> &Error {
        match &self.result {
            Ok(d) => panic!("the script decided {d:?} instead of failing"),
            Err(e) => e,
        }
    }

    /// Whether some log line at `level` contains `text`.
    pub fn logged(&self, level: Level, text: &str) -> bool {
        self.logs.iter().any(|(l, m)| *l == level && m.contains(text))
    }
}
