//! How a write the pipeline cannot cheaply make again rides out a short
//! store outage (another process's lock, a full disk, a database
//! restarting): an attempt's record (the request was made: lost, it would
//! be made again) and a routing batch's rows (lost, the events wait half a
//! minute or more for the recovery scan). Such a write is tried again while
//! the store answers that it is unavailable, for at most [`PATIENCE`], then
//! its failure is the caller's as before.
//!
//! It must never retry any other failure (a row the database refuses fails
//! the same every time), nor wait long enough for a lease or claim (five
//! minutes) to run out under the write.

use std::future::Future;
use std::time::Duration;

use crate::store::StoreError;
use crate::telemetry::throttle::Throttle;

/// How long a write waits for the store in all.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The first pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `write` until it does not fail for the store's being unavailable,
/// or until [`PATIENCE`] is spent; its last result. `what` names the write
/// in the log.
pub async fn through_outage<T, F, Fut>(what: &'static str, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    // Set at the first failure: a write that succeeds reads no clock.
    let mut give_up = None;
    let mut pause = FIRST_PAUSE;
    loop {
        let result = write().await;
        let Err(e) = &result else { return result };
        let now = tokio::time::Instant::now();
        if !e.is_unavailable() || now + pause >= *give_up.get_or_insert(now + PATIENCE) {
            return result;
        }
        static WAITING: Throttle = Throttle::new();
        if let Some(held_back) = WAITING.pass() {
            tracing::warn!(what, error = %e, held_back,
                "a write waits for the store, tried again for up to a minute (and held_back more alike since the last such line)");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
