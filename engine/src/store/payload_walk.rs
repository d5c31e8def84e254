//! The payload purge's walk over each tenant's attempts: which bodies go,
//! where each tenant's walk stops, given its attempts after the last stop
//! in id order (UUIDv7: creation order), and how far a chunk goes, tenant
//! after tenant from where the chunk before it stopped. Both backends feed
//! it the rows and write what it says.
//!
//! This module owns where a walk stops. It must never read the clock or
//! the database: the cutoff and the rows are the caller's.

use super::{PayloadCursor, PurgedPayloads};

/// One chunk of the purge, tenant after tenant, within a share of work:
/// each attempt walked counts one, and so does a tenant whose walk found
/// nothing, so that a chunk's time on the writer is bounded however many
/// tenants there are.
pub(super) struct Chunk {
    budget: i64,
    payloads: u64,
    /// The last tenant whose walk finished (at first: the cursor's).
    after: String,
    /// Stopped before the tenants ran out: a tenant's walk went unfinished
    /// or the share was used up.
    cut: bool,
}

impl Chunk {
    pub fn new(limit: i64, from: &PayloadCursor) -> Self {
        Self { budget: limit.max(1), payloads: 0, after: from.after.clone(), cut: false }
    }

    /// The tenant the chunk's list starts after (`""`: the first).
    pub fn after(&self) -> &str {
        &self.after
    }

    /// How many tenants to list: one more than the chunk can visit, so
    /// that visiting every tenant listed means there are no more.
    pub fn tenants_to_list(&self) -> i64 {
        self.budget + 1
    }

    /// How many of the next tenant's attempts to read, or `None` when the
    /// chunk has used its share (the purge then goes on in the next).
    pub fn next_fetch(&mut self) -> Option<i64> {
        if self.budget <= 0 {
            self.cut = true;
            return None;
        }
        Some(self.budget)
    }

    /// Counts `tenant`'s step; false when the chunk must stop there.
    pub fn record(&mut self, tenant: &str, step: &Step) -> bool {
        self.payloads += step.clear.len() as u64;
        self.budget -= step.walked.max(1);
        match step.finished {
            true => self.after = tenant.to_owned(),
            false => self.cut = true,
        }
        step.finished
    }

    pub fn finish(self) -> PurgedPayloads {
        PurgedPayloads { payloads: self.payloads, resume: self.cut.then_some(PayloadCursor { after: self.after }) }
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

    fn resume_after(tenant: &str) -> Option<PayloadCursor> {
        Some(PayloadCursor { after: tenant.to_owned() })
    }

    #[test]
    fn a_chunk_stops_at_its_share_and_says_where_the_next_goes_on() {
        // `a` finishes with one old attempt; `b`'s walk is cut: the next
        // chunk starts after `a`, at `b` again.
        let mut chunk = Chunk::new(3, &PayloadCursor::default());
        assert_eq!((chunk.after(), chunk.tenants_to_list()), ("", 4));
        assert_eq!(chunk.next_fetch(), Some(3));
        assert!(chunk.record("a", &step(rows(&[(1, true), (10, true)]), 10, 3)));
        assert_eq!(chunk.next_fetch(), Some(2));
        assert!(!chunk.record("b", &step(rows(&[(1, true), (2, false)]), 10, 2)));
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 2, resume: resume_after("a") });

        // Its share walked by `a`: the next starts after it.
        let mut chunk = Chunk::new(2, &PayloadCursor::default());
        assert!(chunk.record("a", &step(rows(&[(1, true), (2, true)]), 10, 3)));
        assert_eq!(chunk.next_fetch(), None, "its share walked");
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 2, resume: resume_after("a") });

        // Every tenant listed visited: the purge is done.
        let mut chunk = Chunk::new(5, &PayloadCursor { after: "a".into() });
        assert_eq!(chunk.after(), "a");
        assert!(chunk.record("b", &step(rows(&[(10, true)]), 10, 5)));
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 0, resume: None });
    }

    #[test]
    fn tenants_with_nothing_to_purge_use_up_a_share_too() {
        let mut chunk = Chunk::new(3, &PayloadCursor::default());
        for tenant in ["a", "b", "c"] {
            assert!(chunk.next_fetch().is_some(), "{tenant}");
            assert!(chunk.record(tenant, &step(Vec::new(), 10, 3)));
        }
        assert_eq!(chunk.next_fetch(), None, "a fourth tenant listed waits for the next chunk");
        assert_eq!(chunk.finish(), PurgedPayloads { payloads: 0, resume: resume_after("c") });
    }

    #[test]
    fn nothing_old_leaves_the_stop_where_it_was() {
        assert_eq!(step(rows(&[(10, true)]), 10, 5), Step { finished: true, ..Step::default() });
        assert_eq!(step(Vec::new(), 10, 5), Step { finished: true, ..Step::default() });
    }
}
