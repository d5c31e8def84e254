//! The pipeline, in the order an event walks it once it is stored:
//!
//! - [`route`]: per-tenant queues ([`fair`]); each event matched against
//!   the tenant's [`configs`] and decided ([`decide`], the script running
//!   in the sandbox, paused by [`penalty`] when it keeps exhausting its
//!   budget); the decisions recorded, deliveries handed on as [`job`]s;
//! - [`deliver`]: per-configuration gates (in-flight, rate limit, breaker),
//!   the retry poller; each attempt's [`request`] built and signed, sent by
//!   the [`client`] behind the [`destination`] guard (or handed in-process
//!   to one of the engine's own hosted catchers: [`catcher`]), then recorded
//!   (through a short store outage: [`outage`]);
//! - [`notice`]: a tenant's own trouble (a configuration disabled, a
//!   delivery failed, a receiver down) raised as events of `sluice.*` types;
//! - [`replay`] and [`retention`]: sending again on demand, and purging
//!   what is old; [`explain`]: deciding a recorded delivery again;
//!   [`preview`]: what another script would decide on stored events.
//!
//! Route and deliver never import each other: what both need (the job,
//! the ready-made configuration, the decision) sits in the modules beneath.

pub mod catcher;
pub mod client;
pub mod configs;
pub mod decide;
pub mod deliver;
pub mod destination;
pub mod explain;
pub mod fair;
pub mod job;
pub mod notice;
pub mod outage;
pub mod penalty;
pub mod preview;
pub mod replay;
pub mod request;
pub mod retention;
pub mod route;

/// A lock whose holder panicked is still good: every critical section in
/// the pipeline leaves its map whole, so the poison is ignored.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
