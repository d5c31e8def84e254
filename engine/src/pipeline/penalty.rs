//! A script's fair share after it used up its budget: one per tenant and
//! script (two tenants who upload the same bytes are two scripts here).
//!
//! A call that exhausts its budget (fuel, or the wall-clock backstop) pauses
//! the script for `factor` times as long as the call ran, so a script that
//! keeps doing so gets at most `1 / (1 + factor)` of a core. While paused,
//! its events are not decided: each gets a slot of its own later on, one
//! pause apart, and waits for it in the store as an undecided delivery.
//! Those decisions run a few at a time (the script's lane); each that
//! decides without exhausting brings the next few forward, so that a
//! script well again is not held back by the slots.
//!
//! This module owns that bookkeeping. It must never sleep or block: a pause
//! parks the script's own events, never a thread that others need. The wait
//! changes when a decision is made, never what it is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// The pause state of one tenant's script.
pub struct Penalty {
    state: Mutex<State>,
    /// Deferred decisions running at once.
    lane: Arc<Semaphore>,
}

impl Default for Penalty {
    fn default() -> Self {
        Self { state: Mutex::default(), lane: Arc::new(Semaphore::new(Self::LANE)) }
    }
}

#[derive(Default)]
struct State {
    /// No call before this.
    not_before: Option<Instant>,
    /// What one exhausting call costs, pause included: the spacing of slots.
    period: Duration,
    /// The next free slot for a deferred decision.
    next_slot: Option<Instant>,
}

impl Penalty {
    /// The longest single pause, however often the script exhausts.
    const MAX_PAUSE: Duration = Duration::from_secs(10);
    /// The furthest ahead a deferred decision is scheduled; past that the
    /// slot is re-taken when it comes due.
    const MAX_DEFER: Duration = Duration::from_secs(300);
    /// Deferred decisions of one script running at once.
    const LANE: usize = 2;

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the script stays paused (for tests: callers ask [`Penalty::defer`]).
    #[cfg(test)]
    fn remaining(&self) -> Duration {
        self.lock().not_before.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    /// When paused, a slot for one more deferred decision: how long from
    /// now it should wait. `None`: not paused, decide now.
    pub fn defer(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut s = self.lock();
        let not_before = s.not_before.filter(|t| *t > now)?;
        let slot = s.next_slot.map_or(not_before, |n| n.max(not_before));
        s.next_slot = Some(slot + s.period.max(Duration::from_millis(10)));
        Some((slot - now).min(Self::MAX_DEFER))
    }

    /// Records a call that ran for `ran`: an exhausting one pauses the
    /// script; one that decided lets later deferrals come sooner.
    pub fn record(&self, ran: Duration, exhausted: bool, factor: u32) {
        let now = Instant::now();
        let mut s = self.lock();
        if !exhausted {
            s.next_slot = None;
            return;
        }
        let pause = (ran * factor).min(Self::MAX_PAUSE);
        s.not_before = Some(now + pause);
        s.period = ran + pause;
    }

    /// The lane deferred decisions wait for, so that a backlog of them
    /// runs a few at a time and the sender stays with the rest.
    pub fn lane(&self) -> Arc<Semaphore> {
        self.lane.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausting_call_pauses_and_spreads_deferrals() {
        let p = Penalty::default();
        assert_eq!(p.defer(), None, "not paused: decide now");
        p.record(Duration::from_millis(20), true, 9);
        assert!(p.remaining() > Duration::from_millis(100));
        let first = p.defer().expect("paused");
        let second = p.defer().expect("paused");
        assert!(second >= first + Duration::from_millis(190), "{first:?} then {second:?}: one period apart");
    }

    #[test]
    fn a_call_that_decides_clears_the_slot_queue() {
        let p = Penalty::default();
        p.record(Duration::from_millis(1), true, 9);
        p.defer();
        p.defer();
        std::thread::sleep(Duration::from_millis(15));
        p.record(Duration::from_millis(1), false, 9);
        assert_eq!(p.defer(), None);
    }

    #[test]
    fn pauses_are_capped() {
        let p = Penalty::default();
        p.record(Duration::from_secs(5), true, 9);
        assert!(p.remaining() <= Duration::from_secs(10));
    }
}
