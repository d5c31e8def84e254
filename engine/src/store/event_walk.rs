//! The event purge's scan: the events received before the cutoff, in
//! arrival order from where the chunk before stopped, which of them may
//! go, and where the next chunk starts. Both backends run the scan's SQL
//! and delete what it says.
//!
//! This module owns where a scan stops. It must never read the clock or
//! the database: the cutoff and the rows are the caller's.

use super::EventCursor;
use super::rows::ROUTED;

/// The SQL that scans, for the event purge, the events received before
/// the cutoff in arrival order after a cursor (its time, then its
/// `seq`), at most a limit of them, each with whether it may go: routed,
/// and no delivery of it pending. The arguments are the backend's
/// placeholders for those four. (`received_at >=` first, for the index.)
pub(super) fn scan_sql([before, at, seq, limit]: [&str; 4]) -> String {
    format!(
        "SELECT e.seq, e.received_at,
                {ROUTED} AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')
         FROM events e
         WHERE e.received_at >= {at} AND (e.received_at, e.seq) > ({at}, {seq}) AND e.received_at < {before}
         ORDER BY e.received_at, e.seq LIMIT {limit}"
    )
}

/// One event as the event purge's scan read it.
pub(super) struct Scanned {
    pub seq: i64,
    pub received_at: i64,
    /// Routed, and none of its deliveries pending.
    pub may_go: bool,
}

/// Events the event purge reads per event it may delete: kept events
/// (not routed, or a delivery pending) are walked past, a few thousand a
/// chunk (about a millisecond), so that a long run of them costs a purge
/// few chunks, each of them short.
const READS_PER_EVENT: i64 = 20;

/// How many events a chunk that may delete `limit` reads at most.
pub(super) fn read_limit(limit: i64) -> i64 {
    limit.saturating_mul(READS_PER_EVENT)
}

/// The first `limit` events of a purge scan that may go, and where the
/// next scan starts: after the last of those if the limit cut the page
/// short, else after the last event read, unless the scan read fewer
/// than `read_limit` (no event before the cutoff is left).
pub(super) fn page(scanned: &[Scanned], limit: i64, read_limit: i64) -> (Vec<i64>, Option<EventCursor>) {
    let mut going = Vec::new();
    let mut last = None;
    for s in scanned {
        if going.len() as i64 >= limit {
            return (going, last);
        }
        last = Some(EventCursor { received_at: s.received_at, seq: s.seq });
        if s.may_go {
            going.push(s.seq);
        }
    }
    (going, last.filter(|_| scanned.len() as i64 >= read_limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events `seq` 1, 2, … received a millisecond apart; `true`: may go.
    fn scanned(may_go: &[bool]) -> Vec<Scanned> {
        may_go.iter().enumerate().map(|(i, &may_go)| Scanned { seq: i as i64 + 1, received_at: 100 + i as i64, may_go }).collect()
    }

    fn after(seq: i64) -> Option<EventCursor> {
        Some(EventCursor { received_at: 99 + seq, seq })
    }

    #[test]
    fn a_page_takes_the_events_that_may_go_up_to_the_limit_and_goes_on_after_the_last_taken() {
        assert_eq!(page(&scanned(&[false, true, true, true]), 2, 10), (vec![2, 3], after(3)));
    }

    #[test]
    fn a_full_read_of_kept_events_goes_on_after_them() {
        assert_eq!(page(&scanned(&[false, false, false]), 2, 3), (vec![], after(3)));
    }

    #[test]
    fn a_read_shorter_than_asked_for_is_the_end() {
        assert_eq!(page(&scanned(&[false, true]), 2, 10), (vec![2], None));
        assert_eq!(page(&scanned(&[true, true]), 2, 10), (vec![1, 2], None), "the limit met at the last event read");
        assert_eq!(page(&[], 2, 10), (vec![], None));
    }
}
