//! Retention: the purge job that keeps stored data within its windows.
//! Attempt payloads (request and response bodies) go after
//! [`Retention::payloads`]; events go after [`Retention::events`], together
//! with their deliveries, attempts (and so the attempt headers) and
//! payloads. An event that is still pending (not routed yet, or with a
//! delivery still pending) is kept whatever its age: purging it would lose
//! a delivery the engine promised.
//!
//! This module owns when and how much is purged. It must never read the
//! clock inside the store: cutoffs are computed here and passed down, so
//! tests choose them. It deletes in small chunks, one write job each, so
//! that ingest and delivery never wait long behind a purge.

use std::time::Duration;

use crate::model::timestamp;
use crate::store::{EventCursor, PayloadCursor, PurgedEvents, Store, StoreError};

/// The retention windows and how often they are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long events, deliveries and attempts are kept.
    pub events: Duration,
    /// How long attempt payloads are kept.
    pub payloads: Duration,
    /// Time between two purges; the first runs shortly after start.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self { events: Duration::from_secs(60 * DAY), payloads: Duration::from_secs(15 * DAY), interval: Duration::from_secs(3600) }
    }
}

/// Attempts walked per write job of the payload purge.
const PAYLOAD_CHUNK: i64 = 1_000;
/// Events read per write job, and so at most deleted (each with its
/// deliveries, attempts and payloads: a few rows to a few hundred).
const EVENT_CHUNK: i64 = 200;
/// The first purge waits this long after start (or the interval, if
/// shorter), leaving start-up to the recovery scan.
const FIRST_RUN: Duration = Duration::from_secs(10);

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Payloads older than the payload window.
    pub payloads: u64,
    /// Events older than the event window, and what went with them.
    pub events: PurgedEvents,
}

/// Purges every `retention.interval`, the first time shortly after start,
/// until the store closes.
pub async fn run(store: Store, retention: Retention) {
    // A zero interval would purge in a busy loop.
    let interval = retention.interval.max(Duration::from_secs(1));
    tokio::time::sleep(interval.min(FIRST_RUN)).await;
    loop {
        match purge_once(&store, &retention, timestamp::now_ms()).await {
            Ok(p) if p == Purged::default() => tracing::debug!("retention purge: nothing to remove"),
            Ok(p) => tracing::info!(
                payloads = p.payloads + p.events.payloads,
                events = p.events.events,
                deliveries = p.events.deliveries,
                attempts = p.events.attempts,
                "retention purge"
            ),
            Err(StoreError::Closed) => return,
            Err(e) => tracing::error!(error = %e, "retention purge failed; it runs again at the next interval"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Removes what is past each window at `now` (Unix ms), chunk by chunk.
pub async fn purge_once(store: &Store, retention: &Retention, now: i64) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    let payload_cutoff = now.saturating_sub(millis(retention.payloads));
    let mut from = PayloadCursor::default();
    loop {
        let chunk = store.purge_payloads(payload_cutoff, PAYLOAD_CHUNK, &from).await?;
        purged.payloads += chunk.payloads;
        match chunk.resume {
            Some(next) => from = next,
            None => break,
        }
    }
    let event_cutoff = now.saturating_sub(millis(retention.events));
    let mut from = EventCursor::from(i64::MIN);
    loop {
        let (chunk, resume) = store.purge_events(event_cutoff, EVENT_CHUNK, from).await?;
        purged.events.events += chunk.events;
        purged.events.deliveries += chunk.deliveries;
        purged.events.attempts += chunk.attempts;
        purged.events.payloads += chunk.payloads;
        match resume {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(purged)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
