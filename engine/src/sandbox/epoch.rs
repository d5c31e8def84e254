//! The wall-clock backstop's clock: a thread that advances the engine's
//! epoch every [`TICK`] while scripts run, so that a script past its
//! deadline is interrupted, and sleeps while none has run for a while.
//!
//! It owns that thread and the count of scripts running. It must never run
//! guest code nor make a script wait: taking [`EpochTicker::running`] is two
//! atomic operations, and a system call only when the thread sleeps. An idle
//! engine used to be woken 200 times a second by it alone (the other threads
//! together about 40).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while a script runs.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// How long the clock goes on ticking after the last script ended: under
/// load scripts follow one another closely, and a clock stopped and woken
/// between each two would cost a system call per script.
pub(super) const IDLE_BEFORE_SLEEP: Duration = Duration::from_secs(1);

/// Advances the epoch while a script may run; stops when dropped.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

struct Shared {
    /// Scripts running (or being instantiated) now.
    running: AtomicUsize,
    /// Whether the thread sleeps, or is about to, until a script starts.
    asleep: AtomicBool,
    stop: AtomicBool,
    /// Ticks so far: the tests' way to see whether the clock goes.
    ticks: AtomicU64,
}

/// A script counted as running, until dropped.
pub(super) struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl EpochTicker {
    /// Starts the clock of `engine`, sleeping after `idle` without a script.
    pub(super) fn start(engine: &Engine, idle: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            running: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        });
        let (engine, ticking) = (engine.weak(), shared.clone());
        let idle_ticks = idle.as_millis().div_ceil(TICK.as_millis()).max(1) as u64;
        let handle = std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || tick(&engine, &ticking, idle_ticks))?;
        Ok(Self { shared, thread: handle.thread().clone() })
    }

    /// Counts a script as running while the guard lives, waking the clock
    /// if it sleeps. Taken before the script's first instruction.
    pub(super) fn running(&self) -> Running<'_> {
        self.shared.running.fetch_add(1, SeqCst);
        // Ordered after the count: a clock that saw no script running has
        // already said it sleeps, and is woken here.
        if self.shared.asleep.load(SeqCst) && self.shared.asleep.swap(false, SeqCst) {
            self.thread.unpark();
        }
        Running(&self.shared)
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(SeqCst)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}

/// The clock's thread: a tick every [`TICK`], and a sleep once `idle_ticks`
/// have passed with no script running.
fn tick(engine: &EngineWeak, shared: &Shared, idle_ticks: u64) {
    let mut idle = 0;
    while !shared.stop.load(SeqCst) {
        std::thread::sleep(TICK);
        let Some(engine) = engine.upgrade() else { return };
        engine.increment_epoch();
        shared.ticks.fetch_add(1, SeqCst);
        if shared.running.load(SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < idle_ticks {
            continue;
        }
        idle = 0;
        // Said before the count is read again: a script that starts after
        // this read sees it and wakes the thread (`EpochTicker::running`).
        shared.asleep.store(true, SeqCst);
        while shared.running.load(SeqCst) == 0 && shared.asleep.load(SeqCst) && !shared.stop.load(SeqCst) {
            std::thread::park();
        }
        shared.asleep.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Waits up to 2 s for `ticker`'s clock to go (`true`) or stand still.
    fn settles(ticker: &EpochTicker, going: bool) -> bool {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let before = ticker.ticks();
            std::thread::sleep(TICK * 8);
            if (ticker.ticks() > before) == going {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_clock_sleeps_without_scripts_and_goes_while_one_runs() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(&engine, TICK * 4).expect("thread");
        assert!(settles(&ticker, false), "an idle clock sleeps");

        let running = ticker.running();
        assert!(settles(&ticker, true), "a script wakes it");
        // Well past the idle time, still going while the script runs.
        std::thread::sleep(TICK * 20);
        let before = ticker.ticks();
        std::thread::sleep(TICK * 8);
        assert!(ticker.ticks() > before, "it does not sleep under a running script");

        drop(running);
        assert!(settles(&ticker, false), "and sleeps again after it");
        // Many scripts starting and ending at once leave it consistent.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        drop(ticker.running());
                    }
                });
            }
        });
        assert_eq!(ticker.shared.running.load(SeqCst), 0);
        let _running = ticker.running();
        assert!(settles(&ticker, true), "woken after the storm");
    }

    #[test]
    fn dropping_the_ticker_ends_a_sleeping_thread() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(&engine, TICK).expect("thread");
        assert!(settles(&ticker, false));
        let shared = ticker.shared.clone();
        drop(ticker);
        let until = Instant::now() + Duration::from_secs(2);
        // The thread holds the other reference until it returns.
        while Arc::strong_count(&shared) > 1 && Instant::now() < until {
            std::thread::sleep(TICK);
        }
        assert_eq!(Arc::strong_count(&shared), 1, "the thread ended");
    }
}
