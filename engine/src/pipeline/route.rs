//! Routing: which configurations take an event, and what each one's script
//! decides. The decisions are recorded on deliveries; those to deliver are
//! handed to the deliverer through [`Handoff`](crate::pipeline::job::Handoff)
//! unwritten, and their first attempt writes their rows, settled (one row
//! written once instead of twice). Until then the event stays unrouted,
//! claimed by this node since it was stored, and held in memory
//! ([`EventHold`]): the recovery scan routes it again ("resumed", writing
//! the rows that are missing) only once this node let it go (a write
//! failed) or, on another node, once the claim ran out (this node died).
//!
//! This module owns matching and the per-tenant cache of active
//! configurations. It must never send anything over the network, and never
//! look at another tenant's configurations for an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::model::event::Event;
use crate::model::ids::TenantId;
use crate::model::timestamp;
use crate::pipeline::configs::ConfigCache;
use crate::pipeline::decide::{Decided, decide_all};
use crate::pipeline::fair::{Bounds, FairQueue};
use crate::pipeline::job::{DeliveryJob, EventHold, Handoff, Held};
use crate::pipeline::outage::through_outage;
use crate::sandbox::Sandbox;
use crate::store::{DeliveryStatus, Epoch, NewDelivery, ROUTING_CLAIM_MS, Routed, Store, StoreError};
use crate::telemetry::{throttle::Throttle, traces};

/// An accepted event waiting to be routed.
pub struct RouteJob {
    pub tenant: TenantId,
    pub seq: i64,
    pub event: Arc<Event>,
    /// This node's claim on it, taken as it stored it. `None`: found by
    /// the recovery scan, routed "resumed": every row written (but those
    /// already written), nothing handed on, the retry poller sends what is
    /// pending.
    pub claim: Option<Claim>,
}

/// The claim a node takes on an event it stores, for its own routing.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// When (ms; read before the store's own clock, so judged short).
    pub at: i64,
    /// In which of this node's epochs.
    pub epoch: Epoch,
}

impl RouteJob {
    /// Whether its routing may hand deliveries on unwritten: this node's
    /// claim on it stands (taken in its `present` epoch: no other node took
    /// it over) and has more than half of its time to run (a delivery it
    /// hands on is written, or shown, well before the claim runs out and
    /// another node could route the event).
    fn may_hand_on(&self, now: i64, present: Epoch) -> bool {
        self.claim.is_some_and(|c| c.epoch == present && now - c.at < ROUTING_CLAIM_MS / 2)
    }
}

/// A job in its tenant's queue, with the hold that keeps the recovery scan
/// from queuing its event again.
struct Queued {
    job: RouteJob,
    hold: Arc<EventHold>,
}

/// Routes events: matches, runs scripts (on blocking threads: a script may
/// use its whole budget), records the decisions and hands deliveries on.
///
/// Events wait in one queue per tenant, and the workers serve the tenants
/// in turn, a batch at a time: a tenant with a backlog or costly scripts
/// makes its own queue long, and holds at most half of the workers.
pub struct Router {
    store: Store,
    sandbox: Arc<Sandbox>,
    configs: Arc<ConfigCache>,
    deliver: Arc<dyn Handoff>,
    /// One queue per tenant (the key within it is the tenant itself).
    queue: FairQueue<TenantId, (), Queued>,
    /// The events this node holds, so that the recovery scan does not
    /// route them again.
    held: Held,
    /// Events queued or being routed.
    routing: AtomicUsize,
}

/// Events one worker routes per turn.
const BATCH: usize = 128;
/// Events one tenant may have waiting; its producers wait (backpressure)
/// or leave the rest to the recovery scan. A tenant posting faster than it
/// is routed keeps its queue full, and each of its events then waits a
/// full queue's time. 512 is four routing batches, and a whole ingest
/// request at the default limit (500 events); 4096 held batched posters'
/// events 2.7 times as long at the same rate (see tests/LOAD.md).
const PER_TENANT: usize = 512;
/// Events all tenants together may have waiting.
const TOTAL: usize = 32_768;
/// How long a batch's deliveries wait in all for room in their send
/// queues: a short stall of the senders slows the tenant's routing (and so
/// its posters) instead of sending its deliveries to the store to wait.
const HAND_WAIT: Duration = Duration::from_secs(1);

/// Why an event was not queued: it stays stored and unrouted, and the
/// recovery scan queues it later.
#[derive(Debug)]
pub struct NotQueued;

impl Router {
    /// Starts `workers` routing workers.
    pub fn start(store: Store, sandbox: Arc<Sandbox>, configs: Arc<ConfigCache>, deliver: Arc<dyn Handoff>, workers: usize) -> Arc<Self> {
        let workers = workers.max(2);
        let router = Arc::new(Self {
            store,
            sandbox,
            configs,
            deliver,
            queue: FairQueue::new(Bounds { per_key: PER_TENANT, per_group: PER_TENANT, total: TOTAL, group_workers: workers / 2 }),
            held: Held::default(),
            routing: AtomicUsize::new(0),
        });
        for _ in 0..workers {
            tokio::spawn(router.clone().work());
        }
        router
    }

    /// Queues an event for routing, waiting up to `wait` while its tenant's
    /// queue is full. An event this node holds already (queued, being
    /// routed, or with rows handed on unwritten) is left alone.
    pub async fn queue(&self, job: RouteJob, wait: Duration) -> Result<(), NotQueued> {
        let Some(hold) = EventHold::take(&self.held, job.seq) else { return Ok(()) };
        let tenant = job.tenant.clone();
        self.routing.fetch_add(1, Ordering::Relaxed);
        match self.queue.push(&tenant, &(), usize::MAX, Queued { job, hold }, wait).await {
            Ok(()) => Ok(()),
            Err(_) => {
                // The refused job and its hold are dropped: the event is the scan's.
                self.routing.fetch_sub(1, Ordering::Relaxed);
                Err(NotQueued)
            }
        }
    }

    /// Events waiting in memory for a routing worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether events wait for routing (or are being routed): previews
    /// hold back meanwhile.
    pub fn busy(&self) -> bool {
        self.routing.load(Ordering::Relaxed) > 0
    }

    async fn work(self: Arc<Self>) {
        while let Some((tenant, (), jobs)) = self.queue.next(BATCH).await {
            let n = jobs.len();
            self.route_batch(&tenant, jobs).await;
            self.routing.fetch_sub(n, Ordering::Relaxed);
            self.queue.done(&tenant, &());
        }
    }

    /// Routes one tenant's batch. Whatever fails stays unrouted, for the
    /// recovery scan; nothing here fails another tenant's events.
    async fn route_batch(&self, tenant: &TenantId, jobs: Vec<Queued>) {
        let configs = match self.configs.enabled(tenant).await {
            Ok(configs) => configs,
            Err(e) => {
                tracing::error!(%tenant, events = jobs.len(), error = %e, "loading configurations failed; the events wait for the recovery scan");
                return;
            }
        };
        let sandbox = self.sandbox.clone();
        let routed = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|queued| {
                    let (job, started) = (&queued.job, SystemTime::now());
                    let decided = decide_all(&sandbox, &configs, &job.event);
                    traces::route(job.tenant.as_str(), job.event.id.as_str(), decided.len(), (started, SystemTime::now()));
                    (queued, decided)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match routed {
            Ok(routed) => self.record(routed).await,
            Err(e) => {
                tracing::error!(%tenant, error = %e, "a routing thread failed; its events wait for the recovery scan")
            }
        }
    }

    /// Records a batch's decisions in one write, then hands its deliveries
    /// to the senders. When the write fails, each event is written alone,
    /// so that one bad row fails only its own event; an event that still
    /// cannot be written is recorded without the details that failed.
    async fn record(&self, routed: Vec<(Queued, Decided)>) {
        // Whether each may be handed on is decided at the write that
        // succeeds: a write that waited for the store may find a claim over.
        let batch = &routed;
        let written = through_outage("a routing batch", || async move {
            let (now, epoch) = (timestamp::now_ms(), self.store.epoch());
            let rows: Vec<Routed> = batch.iter().map(|(q, decided)| routed_row(&q.job, decided, q.job.may_hand_on(now, epoch))).collect();
            self.store.record_routing(rows).await.map(|recorded| (recorded, now, epoch))
        })
        .await;
        let (recorded, now, epoch) = match written {
            Ok(written) => written,
            Err(StoreError::Closed) => return,
            // Not these rows' fault: one by one they would fail the same,
            // each a write on a store that takes none.
            Err(e) if e.is_unavailable() => {
                static UNAVAILABLE: Throttle = Throttle::new();
                if let Some(held_back) = UNAVAILABLE.pass() {
                    tracing::error!(events = routed.len(), error = %e, held_back,
                        "recording a routing batch failed; its events wait for the recovery scan \
                         (and held_back more batches alike since the last such line, not logged)");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(events = routed.len(), error = %e, "recording a routing batch failed; recording its events one by one");
                let (now, epoch) = (timestamp::now_ms(), self.store.epoch());
                let mut recorded = Vec::with_capacity(routed.len());
                for (q, decided) in &routed {
                    recorded.push(self.record_alone(&q.job, decided, now, epoch).await);
                }
                (recorded, now, epoch)
            }
        };
        let deadline = tokio::time::Instant::now() + HAND_WAIT;
        for ((Queued { job, hold }, decided), recorded) in routed.into_iter().zip(recorded) {
            // Not recorded: another path routed the event first and its
            // deliveries stand (or it could not be written at all).
            if !recorded || !job.may_hand_on(now, epoch) {
                continue;
            }
            // Every delivery decided has a row once all are written.
            let awaiting = decided.len() as i64;
            for (config, d) in decided {
                if !hands_on(&d) {
                    continue;
                }
                let delivery = DeliveryJob {
                    tenant: job.tenant.clone(),
                    delivery: d.id.clone(),
                    config: config.id.clone(),
                    event: job.event.clone(),
                    // Read from `unwritten`, which keeps them for the row.
                    body: None,
                    headers: None,
                    attempt: 1,
                    undecided: false,
                    unwritten: Some(self.store.unwritten(job.tenant.clone(), job.seq, d, awaiting, epoch)),
                    hold: Some(hold.clone()),
                };
                if !self.deliver.hand(delivery, deadline).await {
                    return; // shutting down: a restart routes the rest, resumed
                }
            }
        }
    }

    /// `true`: recorded with its deliveries to hand on unwritten.
    async fn record_alone(&self, job: &RouteJob, decided: &Decided, now: i64, epoch: Epoch) -> bool {
        match self.store.record_routing(vec![routed_row(job, decided, job.may_hand_on(now, epoch))]).await {
            Ok(recorded) => return recorded.first().copied().unwrap_or(false),
            Err(StoreError::Closed) => return false,
            Err(e) => {
                tracing::warn!(event = %job.event.id, trace_id = traces::trace_id(job.tenant.as_str(), job.event.id.as_str()), error = %e,
                    "recording an event's routing failed; recording it without the script's output")
            }
        }
        // Every row written now, none handed on: its pending deliveries are
        // due and the retry poller sends them.
        let mut row = routed_row(job, decided, false);
        for d in &mut row.deliveries {
            d.script_logs = None;
            d.reason = Some("the script's decision could not be stored".into());
            if d.status == DeliveryStatus::Pending && !d.undecided && (d.body.is_some() || d.headers.is_some()) {
                // Sending without the script's body would send what it replaced.
                d.status = DeliveryStatus::ScriptError;
                d.error_kind = Some("unrecordable".into());
                d.next_attempt_at = None;
            }
            d.body = None;
            d.headers = None;
        }
        if let Err(e) = self.store.record_routing(vec![row]).await {
            tracing::error!(event = %job.event.id, trace_id = traces::trace_id(job.tenant.as_str(), job.event.id.as_str()), error = %e,
                "recording an event's routing failed; it waits for the recovery scan");
        }
        false
    }
}

/// Whether routing hands the delivery straight to a sender: decided to
/// send (an undecided one waits in the store for its script's turn).
fn hands_on(d: &NewDelivery) -> bool {
    d.status == DeliveryStatus::Pending && !d.undecided
}

/// The rows routing writes for `job`: all but those it hands on (if it
/// may: else all, due without a lease, for the retry poller, as a resumed
/// routing that adds only the rows missing).
fn routed_row(job: &RouteJob, decided: &Decided, may_hand_on: bool) -> Routed {
    let mut deliveries = Vec::with_capacity(decided.len());
    let mut handed = 0;
    for (_, d) in decided {
        if may_hand_on && hands_on(d) {
            handed += 1;
            continue;
        }
        deliveries.push(NewDelivery { lease_until: None, ..d.clone() });
    }
    let epoch = job.claim.map(|c| c.epoch).unwrap_or_default();
    Routed { tenant: job.tenant.clone(), event_seq: job.seq, deliveries, handed, resumed: !may_hand_on, epoch }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_fresh_events_hand_deliveries_on() {
        let json =
            r#"{"id": "e1", "type": "order.paid", "organization_unit": "emea", "occurred_at": "2026-11-22T11:30:00Z", "payload": {}}"#;
        let event = crate::model::event::EventInput::from_json(json).unwrap().validate(|| unreachable!("the id is given")).unwrap();
        let (then, present) = (Epoch::nth(1), Epoch::nth(2));
        let job = |at: Option<i64>, epoch| RouteJob {
            tenant: TenantId::generate(),
            seq: 1,
            event: Arc::new(event.clone()),
            claim: at.map(|at| Claim { at, epoch }),
        };
        let now = 1_000_000_000;
        assert!(job(Some(now), present).may_hand_on(now, present));
        assert!(job(Some(now - ROUTING_CLAIM_MS / 2 + 1), present).may_hand_on(now, present));
        assert!(!job(Some(now - ROUTING_CLAIM_MS / 2), present).may_hand_on(now, present), "half its claim gone: routed in full");
        assert!(!job(None, present).may_hand_on(now, present), "found by the scan: resumed");
        assert!(!job(Some(now), then).may_hand_on(now, present), "claimed before the node was taken for dead: resumed");
    }
}
