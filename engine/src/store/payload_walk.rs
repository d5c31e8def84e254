//! The payload purge's walk over each tenant's attempts: which bodies go,
//! where each tenant's walk stops, given its attempts after the last stop
//! in id order (UUIDv7: creation order), and how many a chunk may walk.
//! Both backends feed it the rows and write what it says.
//!
//! This module owns where a walk stops. It must never read the clock or
//! the database: the cutoff and the rows are the caller's.

use super::PurgedPayloads;

/// One chunk of the purge, tenant after tenant, within a number of attempts
/// walked.
pub(super) struct Chunk {
    budget: i64,
    purged: PurgedPayloads,
}

impl Chunk {
    pub fn new(limit: i64) -> Self {
        Self { budget: limit.max(1), purged: PurgedPayloads { payloads: 0, done: true } }
    }

    /// How many of the next tenant's attempts to read, or `None` when the
    /// chunk has walked its share (the purge is then not done).
    pub fn next_fetch(&mut self) -> Option<i64> {
        if self.budget == 0 {
            self.purged.done = false;
            return None;
        }
        Some(self.budget)
    }

    /// Counts a tenant's step; false when the chunk must stop there.
    pub fn record(&mut self, step: &Step) -> bool {
        self.purged.payloads += step.clear.len() as u64;
        self.budget -= step.walked;
        if !step.finished {
            self.purged.done = false;
        }
        step.finished
    }

    pub fn finish(self) -> PurgedPayloads {
        self.purged
    }
}

/// One attempt as the walk sees it.
pub(super) struct Walked {
    pub id: String,
    pub started_at: i64,
    /// It still holds a request or response body.
    pub has_bodies: bool,
}

/// What one step of a tenant's walk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Step {
    /// Attempts whose bodies go.
    pub clear: Vec<String>,
    /// The last attempt walked past, if any: the next step starts after it.
    pub walked_to: Option<String>,
    /// Attempts walked past.
    pub walked: i64,
    /// Nothing older than the cutoff is left after this step: the walk met
    /// an attempt inside the window, or the tenant's last attempt.
    pub finished: bool,
}

/// Walks `rows` (at most `fetched` were asked for) up to the first attempt
/// started at or after `before`. An attempt is made and written within its
/// deadline of its id's time, far less than any retention window, so none
/// older can appear behind the stop later.
pub(super) fn step(rows: Vec<Walked>, before: i64, fetched: i64) -> Step {
    let mut step = Step { finished: (rows.len() as i64) < fetched, ..Step::default() };
    for row in rows {
        if row.started_at >= before {
            step.finished = true;
            break;
        }
        if row.has_bodies {
            step.clear.push(row.id.clone());
        }
        step.walked += 1;
        step.walked_to = Some(row.id);
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: &[(i64, bool)]) -> Vec<Walked> {
        spec.iter().enumerate().map(|(i, &(started_at, has_bodies))| Walked { id: format!("att_{i}"), started_at, has_bodies }).collect()
    }

    #[test]
    fn a_walk_clears_the_old_bodies_and_stops_at_the_first_recent_attempt() {
        let s = step(rows(&[(1, true), (2, false), (3, true), (10, true), (4, true)]), 10, 5);
        assert_eq!(s.clear, ["att_0", "att_2"]);
        assert_eq!((s.walked_to.as_deref(), s.walked, s.finished), (Some("att_2"), 3, true));
    }

    #[test]
    fn a_full_page_of_old_attempts_is_not_the_end() {
        let s = step(rows(&[(1, true), (2, true)]), 10, 2);
        assert_eq!((s.walked_to.as_deref(), s.walked, s.finished), (Some("att_1"), 2, false));
        let s = step(rows(&[(1, true)]), 10, 2);
        assert_eq!((s.walked, s.finished), (1, true), "the tenant's last attempt");
    }

    #[test]
    fn a_chunk_stops_at_its_share_and_says_whether_it_is_done() {
        let mut chunk = Chunk::new(3);
        assert_eq!(chunk.next_fetch(), Some(3));
        assert!(chunk.record(&step(rows(&[(1, true), (10, true)]), 10, 3)));
        assert_eq!(chunk.next_fetch(), Some(2));
        assert!(!chunk.record(&step(rows(&[(1, true), (2, false)]), 10, 2)));
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 2, done: false });

        let mut chunk = Chunk::new(2);
        assert!(chunk.record(&step(rows(&[(1, true), (2, true)]), 10, 3)));
        assert_eq!(chunk.next_fetch(), None, "its share walked");
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 2, done: false });

        let mut chunk = Chunk::new(5);
        assert!(chunk.record(&step(rows(&[(10, true)]), 10, 5)));
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 0, done: true });
    }

    #[test]
    fn nothing_old_leaves_the_stop_where_it_was() {
        assert_eq!(step(rows(&[(10, true)]), 10, 5), Step { finished: true, ..Step::default() });
        assert_eq!(step(Vec::new(), 10, 5), Step { finished: true, ..Step::default() });
    }
}
