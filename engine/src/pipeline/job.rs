//! The messages between routing and delivery: a delivery to attempt, and
//! how long a sender may hold one. Routing makes them, the retry poller
//! reads them back from the store, the deliverer sends them.
//!
//! Plain data: it must never do I/O or decide anything.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::model::event::Event;
use crate::model::ids::{ConfigId, DeliveryId, TenantId};
use crate::store::{DueDelivery, Unwritten};

/// How long a sender holds a delivery it was handed before another may
/// claim it.
pub const LEASE_MS: i64 = 5 * 60 * 1000;

/// One attempt to make.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub tenant: TenantId,
    pub delivery: DeliveryId,
    pub config: ConfigId,
    pub event: Arc<Event>,
    /// The script's replacement body (JSON text), if any; see
    /// [`DeliveryJob::body`].
    pub body: Option<String>,
    /// JSON array of headers the script added; see [`DeliveryJob::headers`].
    pub headers: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Its script was paused when it was routed: it decides first.
    pub undecided: bool,
    /// Routing handed it on without writing its row: whatever ends its
    /// first turn (the attempt, or a release) writes it.
    pub unwritten: Option<Arc<Unwritten>>,
    /// With `unwritten`: its event stays this node's until the row is
    /// written (the job is dropped after its first turn's write). Kept for
    /// its drop, never read.
    #[allow(dead_code)]
    pub hold: Option<Arc<EventHold>>,
}

/// The events this node holds: queued for routing, being routed, or with
/// deliveries handed on whose rows are unwritten.
pub type Held = Arc<Mutex<HashSet<i64>>>;

/// This node's hold on a stored event, from the moment it is queued for
/// routing until every row of that routing is written (each delivery handed
/// on unwritten has ended its first turn) or given up; the last clone's
/// drop lets it go. While held, the recovery scan leaves the event alone:
/// nothing on the node routes it twice.
pub struct EventHold {
    seq: i64,
    held: Held,
}

impl EventHold {
    /// Holds `seq`; `None` if it is held already.
    pub fn take(held: &Held, seq: i64) -> Option<Arc<Self>> {
        super::lock(held).insert(seq).then(|| Arc::new(Self { seq, held: held.clone() }))
    }
}

impl Drop for EventHold {
    fn drop(&mut self) {
        super::lock(&self.held).remove(&self.seq);
    }
}

impl std::fmt::Debug for EventHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHold").field("seq", &self.seq).finish()
    }
}

impl DeliveryJob {
    /// The script's replacement body: the job's own, or, handed on
    /// unwritten, the one its row is to hold (kept once, not copied).
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref().or_else(|| self.unwritten.as_ref()?.delivery.body.as_deref())
    }

    /// The headers the script added, as [`DeliveryJob::body`].
    pub fn headers(&self) -> Option<&str> {
        self.headers.as_deref().or_else(|| self.unwritten.as_ref()?.delivery.headers.as_deref())
    }
}

impl From<DueDelivery> for DeliveryJob {
    fn from(due: DueDelivery) -> Self {
        Self {
            tenant: due.tenant_id,
            delivery: due.delivery.id,
            config: due.delivery.configuration_id,
            event: Arc::new(due.event),
            body: due.delivery.body,
            headers: due.delivery.headers,
            attempt: due.delivery.attempts as u32 + 1,
            undecided: due.delivery.undecided,
            unwritten: None,
            hold: None,
        }
    }
}

/// Where routing hands the deliveries it decided to send: the deliverer's
/// queues. `hand` waits until `deadline` for room; `false` means the
/// deliverer has stopped, and the delivery waits in the store for the
/// retry poller of whichever node runs next.
pub trait Handoff: Send + Sync {
    fn hand(&self, job: DeliveryJob, deadline: tokio::time::Instant) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_held_once_until_its_last_hold_is_dropped() {
        let held = Held::default();
        let hold = EventHold::take(&held, 7).expect("not held yet");
        assert!(EventHold::take(&held, 7).is_none(), "held: the scan may not take it");
        let other = EventHold::take(&held, 8).expect("another event");
        // A delivery handed on keeps a clone after the routing job is done.
        let delivery = hold.clone();
        drop(hold);
        assert!(EventHold::take(&held, 7).is_none(), "a delivery still holds it");
        drop(delivery);
        assert!(EventHold::take(&held, 7).is_some(), "let go with its last hold");
        drop(other);
        assert!(super::super::lock(&held).is_empty());
    }
}
