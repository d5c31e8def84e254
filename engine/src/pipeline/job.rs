//! The messages between routing and delivery: a delivery to attempt, and
//! how long a sender may hold one. Routing makes them, the retry poller
//! reads them back from the store, the deliverer sends them.
//!
//! Plain data: it must never do I/O or decide anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    /// The script's replacement body (JSON text), if any.
    pub body: Option<String>,
    /// JSON array of headers the script added.
    pub headers: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Its script was paused when it was routed: it decides first.
    pub undecided: bool,
    /// Routing handed it on without writing its row: whatever ends its
    /// first turn (the attempt, or a release) writes it.
    pub unwritten: Option<Arc<Unwritten>>,
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
