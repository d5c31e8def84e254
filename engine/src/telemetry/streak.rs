//! How a loop that retries a failing step (a poll, a listener) says so in
//! the log: its first failure, then the 2nd, 4th, 8th… in a row (an hour's
//! outage of the database is a dozen lines, not thousands), and once when
//! the step works again. It counts; it must never retry or wait itself.

/// Failures in a row of one repeated step.
#[derive(Debug, Default)]
pub struct Streak {
    failures: u64,
}

impl Streak {
    /// Counts a failure; `Some(n)` when this one, the `n`th in a row, is
    /// to be logged.
    pub fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        self.failures.is_power_of_two().then_some(self.failures)
    }

    /// Ends the streak; `Some(n)` once, when it had `n` failures, to say
    /// the step works again.
    pub fn succeeded(&mut self) -> Option<u64> {
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_logged_at_its_first_failure_then_ever_more_rarely_and_once_when_over() {
        let mut streak = Streak::default();
        assert_eq!(streak.succeeded(), None, "nothing failed");
        let logged: Vec<u64> = (0..100).filter_map(|_| streak.failed()).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(streak.succeeded(), Some(100));
        assert_eq!(streak.succeeded(), None, "said once");
        assert_eq!(streak.failed(), Some(1), "a new streak starts at one");
    }
}
