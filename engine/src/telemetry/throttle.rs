//! How one condition that many tasks meet at once (every request refused
//! while the database cannot take writes, every attempt that cannot be
//! recorded meanwhile) is said in the log: the first time at once, then at
//! most once a [`WINDOW`], with how many like it were not logged since.
//! The metrics count every occurrence; this only keeps the log readable
//! through an outage. It counts; it must never decide what happens.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per window for one throttled condition.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One condition's log lines: shared by every task that meets it (a
/// `static` beside the line it throttles).
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the next line may be logged, in ms since the process's first
    /// throttled line (0: at once). Monotonic: a wall clock set back would
    /// silence the line for as long.
    next_ms: AtomicU64,
    /// Occurrences not logged since the last line.
    held: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Self {
        Self { next_ms: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// Counts an occurrence; `Some(n)` when this one is to be logged, `n`
    /// being how many like it were not since the last line.
    pub fn pass(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let elapsed = START.get_or_init(Instant::now).elapsed();
        self.pass_at(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    fn pass_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let window = WINDOW.as_millis() as u64;
        // Of the tasks that find the window over, one wins the exchange.
        if now_ms >= next
            && self.next_ms.compare_exchange(next, now_ms.saturating_add(window), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_logged_at_once_then_once_a_window_with_what_was_held_back() {
        let throttle = Throttle::new();
        let window = WINDOW.as_millis() as u64;
        assert_eq!(throttle.pass_at(5), Some(0), "the first at once");
        let within: Vec<_> = (0..40).map(|i| throttle.pass_at(5 + i * (window / 40))).collect();
        assert!(within.iter().all(Option::is_none), "none within the window: {within:?}");
        assert_eq!(throttle.pass_at(5 + window), Some(40), "the next says how many it held back");
        assert_eq!(throttle.pass_at(5 + window + 1), None);
        assert_eq!(throttle.pass_at(10 * window), Some(1), "a later one at once, with the one held since");
    }

    #[test]
    fn of_many_threads_meeting_it_at_once_one_logs_and_none_is_uncounted() {
        let throttle = Throttle::new();
        let logged: Vec<Option<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| (0..100).map(|_| throttle.pass_at(1)).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 1, "one line for 800 at once");
        assert_eq!(throttle.pass_at(1 + WINDOW.as_millis() as u64), Some(799), "the rest counted");
    }
}
