//! Delivery: builds each request (URL and query, headers, authorization,
//! body), signs it, sends it within the deadline, classifies the answer by
//! the response mode, logs the attempt and schedules the retry.
//!
//! This module owns the outbound HTTP. It must never put a secret in an
//! attempt log, and never decide what to deliver (routing did).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::model::ids::{AttemptId, ConfigId, TenantId};
use crate::model::timestamp;
use crate::pipeline::client::Sent;
use crate::pipeline::configs::{ActiveConfig, ConfigCache};
use crate::pipeline::decide::{Pause, decide};
use crate::pipeline::fair::{Bounds, FairQueue, Refused};
use crate::pipeline::job::{DeliveryJob, Handoff, LEASE_MS};
use crate::pipeline::lock;
use crate::pipeline::notice::{FailedDelivery, Notices};
use crate::pipeline::outage::through_outage;
use crate::sandbox::Sandbox;
use crate::store::{self, AttemptOutcome, DeliveryStatus, FailureStreak, NewAttempt, Recorded, Store, StoreError, Unwritten};
use crate::telemetry::{self, streak::Streak, throttle::Throttle, traces};

/// Sends deliveries. They wait in one queue per configuration within one
/// per tenant, served in turn: at most `concurrency` requests in flight in
/// all, per tenant at most a quarter of those, per configuration at most
/// its `max_in_flight`, at most `rate_limit` a second. A slow endpoint or a
/// tenant's backlog makes its own queue long and uses up its own share
/// only; what does not fit waits in the store, and the retry poller fetches
/// only what there is room for.
pub struct Deliverer {
    store: Store,
    sandbox: Arc<Sandbox>,
    configs: Arc<ConfigCache>,
    /// Requests in flight, all endpoints.
    permits: Arc<Semaphore>,
    /// Requests sent and not yet answered (the permits count also the
    /// sender waiting for its next turn).
    in_flight: AtomicUsize,
    /// Of those, the deliveries handed on unwritten, by address, where
    /// [`Deliverer::show_waiting`] sees them as it sees the queued ones.
    sending_unwritten: Mutex<HashMap<usize, Arc<Unwritten>>>,
    /// Attempts answered and being recorded. A request's slot is given
    /// back once it is answered, not once it is recorded: the store's
    /// latency must not cap a receiver's rate at `max_in_flight` over it.
    recording: Arc<Semaphore>,
    queue: FairQueue<TenantId, ConfigId, DeliveryJob>,
    /// Open circuit breakers, per configuration.
    breakers: Mutex<HashMap<ConfigId, Breaker>>,
    notices: Notices,
}

/// One request counted in flight until dropped (answered, or the attempt
/// abandoned); a delivery handed on unwritten is meanwhile where the sweep
/// that shows waiting deliveries finds it. Dropped before the attempt is
/// recorded, under the lock the sweep marks under: the recording sees
/// whether it was shown.
struct InFlight<'a> {
    deliverer: &'a Deliverer,
    unwritten: Option<usize>,
}

impl<'a> InFlight<'a> {
    fn start(deliverer: &'a Deliverer, job: &DeliveryJob) -> Self {
        deliverer.in_flight.fetch_add(1, Ordering::Relaxed);
        let unwritten = job.unwritten.as_ref().map(|u| {
            let key = Arc::as_ptr(u) as usize;
            lock(&deliverer.sending_unwritten).insert(key, u.clone());
            key
        });
        Self { deliverer, unwritten }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.deliverer.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = self.unwritten {
            lock(&self.deliverer.sending_unwritten).remove(&key);
        }
    }
}

/// What a node's senders hold at one moment.
#[derive(Debug, Clone, Copy)]
pub struct SenderLoad {
    /// Requests to receivers in flight.
    pub in_flight: usize,
    /// Deliveries queued in memory for a sender.
    pub queued: usize,
    /// Configurations whose breaker holds their deliveries.
    pub breakers_open: usize,
}

/// Deliveries waiting in memory per request in flight (all endpoints).
const QUEUED_PER_SLOT: usize = 8;
/// The part of the node's delivery capacity one tenant may hold: however
/// many requests of one tenant hang, the rest stays for the others.
const TENANT_SHARE: usize = 4;
/// The part of the queued deliveries one configuration may hold.
const CONFIG_SHARE: usize = 8;
/// How long a delivery that found its queue full waits in the store, per
/// turn of its configuration's queue ahead of it, up to [`MAX_BUSY_RETRY`]
/// (plus as much again at random, so that a backlog does not come back
/// all at once).
const BUSY_RETRY: Duration = Duration::from_secs(1);
const MAX_BUSY_RETRY: Duration = Duration::from_secs(30);
/// Deferred decisions brought forward after one that did not exhaust its
/// budget (see [`crate::pipeline::penalty`]).
const HURRY: i64 = 16;
/// Longest wait for a rate-limit slot while holding the delivery's lease
/// (far shorter than [`LEASE_MS`]).
const MAX_SLOT_WAIT: Duration = Duration::from_secs(60);

/// A slot of the send queue taken for one turn, with its request permit:
/// both given back when dropped.
struct Turn {
    deliverer: Arc<Deliverer>,
    tenant: TenantId,
    config: ConfigId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.deliverer.queue.done(&self.tenant, &self.config);
    }
}

/// A configuration's circuit breaker: after [`BREAKER_AFTER`] failed
/// attempts in a row (counted by the store, across nodes) the endpoint is
/// taken to be down, and only one delivery at a time probes it from this
/// node, each pause twice as long as the last (up to [`MAX_PAUSE_MS`]). The
/// others wait in the store without an attempt, so a down receiver costs
/// neither it nor sluice a request per delivery, and no delivery spends its
/// attempts while it is down. The pauses are this node's own: each node
/// probes for itself.
#[derive(Debug, Clone, Copy)]
struct Breaker {
    /// No attempt before this, Unix ms.
    paused_until: i64,
    pause_ms: i64,
    /// When the probe in flight was sent (breaker half open); one lost
    /// longer than [`PROBE_LOST_MS`] no longer holds the others back.
    probe_sent: Option<i64>,
}

impl Breaker {
    /// Whether a probe is in flight and not yet given up for lost.
    fn probe_out(&self, now: i64) -> bool {
        self.probe_sent.is_some_and(|sent| now - sent < PROBE_LOST_MS)
    }
}

/// Failed attempts in a row after which the breaker opens.
pub const BREAKER_AFTER: i64 = 20;
const FIRST_PAUSE_MS: i64 = 1_000;
const MAX_PAUSE_MS: i64 = 30_000;
const PROBE_LOST_MS: i64 = 60_000;

/// Whether a delivery may be attempted now.
enum Admission {
    Send {
        probe: bool,
    },
    /// Wait in the store until then (Unix ms).
    Defer(i64),
}

/// How long a delivery handed on unwritten waits in a send queue, for a
/// rate limit's slot, or for its receiver's answer, before a row shows it
/// (see [`Deliverer::show`]).
const UNWRITTEN_WAIT: Duration = Duration::from_secs(1);

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Deliverer {
    pub fn new(store: Store, sandbox: Arc<Sandbox>, configs: Arc<ConfigCache>, concurrency: usize, notices: Notices) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        let queued = concurrency * QUEUED_PER_SLOT;
        Arc::new(Self {
            store,
            sandbox,
            configs,
            permits: Arc::new(Semaphore::new(concurrency)),
            in_flight: AtomicUsize::new(0),
            sending_unwritten: Mutex::default(),
            recording: Arc::new(Semaphore::new(concurrency)),
            queue: FairQueue::new(Bounds {
                per_key: queued / CONFIG_SHARE,
                per_group: queued / TENANT_SHARE,
                total: queued,
                group_workers: concurrency / TENANT_SHARE,
            }),
            breakers: Mutex::default(),
            notices,
        })
    }

    /// What this node's senders hold now.
    pub fn load(&self) -> SenderLoad {
        SenderLoad {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: self.queue.len(),
            breakers_open: lock(&self.breakers).len(),
        }
    }

    /// Starts sending what is queued, and the retry poller (every `poll`).
    pub fn start(self: &Arc<Self>, poll: Duration) {
        tokio::spawn(self.clone().send_in_turn());
        tokio::spawn(self.clone().poll_due(poll));
        tokio::spawn(self.clone().show_waiting());
    }

    /// Queues a delivery to send, waiting until `deadline` for room in its
    /// configuration's and tenant's queues. What still does not fit waits
    /// in the store, and the poller fetches it when there is room: the
    /// longer the queue ahead of it, the later it comes due, so that a slow
    /// endpoint's backlog is not read again and again. `false`: shutting
    /// down (the lease expires and a restart sends it).
    async fn hand_job(&self, job: DeliveryJob, deadline: tokio::time::Instant) -> bool {
        let limit = match self.configs.get(&job.tenant, &job.config).await {
            Ok(config) => config.spec.max_in_flight as usize,
            // The attempt records why (deleted, unreadable).
            Err(_) => 1,
        };
        let (tenant, config) = (job.tenant.clone(), job.config.clone());
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.queue.push(&tenant, &config, limit, job, wait).await {
            Ok(()) => true,
            Err(Refused::Full(job)) => {
                let turns = self.queue.waiting(&tenant, &config) / limit.max(1);
                let wait = (BUSY_RETRY * (1 + turns as u32)).min(MAX_BUSY_RETRY);
                let store = self.store.clone();
                let later = timestamp::now_ms() + jittered(wait);
                tokio::spawn(async move { release(&store, &job, later).await });
                true
            }
            Err(Refused::Closed(_)) => false,
        }
    }

    /// Sends queued deliveries, each turn's as soon as a request may start.
    async fn send_in_turn(self: Arc<Self>) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
            let Some((tenant, config, jobs)) = self.queue.next(1).await else { return };
            // Hands the turn back however the attempt ends, a panic included,
            // so that a configuration never loses a slot for good.
            let turn = Turn { deliverer: self.clone(), tenant, config, _permit: permit };
            tokio::spawn(async move {
                // One job per turn (`next(1)`).
                if let Some(job) = jobs.into_iter().next() {
                    let (delivery, attempt, event) = (job.delivery.clone(), job.attempt, job.event.clone());
                    let tenant = job.tenant.clone();
                    let deliverer = turn.deliverer.clone();
                    if let Err(e) = deliverer.attempt(job, turn).await {
                        // A store that cannot take writes fails every attempt
                        // alike: one line a while, not one per attempt.
                        static UNRECORDED: Throttle = Throttle::new();
                        if let Some(held_back) = UNRECORDED.pass() {
                            let trace_id = traces::trace_id(tenant.as_str(), event.id.as_str());
                            tracing::error!(%delivery, event = %event.id, trace_id, attempt, error = %e, held_back,
                                "recording an attempt failed; the lease will expire and it is retried \
                                 (and held_back more alike since the last such line, not logged)");
                        }
                    }
                }
            });
        }
    }

    /// Claims deliveries whose retry is due (or whose sender died) and
    /// queues them, every `every`: as many as there is room for, none of a
    /// tenant or configuration whose queue is full (those wait in the store).
    /// Claims that take long (very many configurations with retries
    /// waiting, a busy store) are made less often: see [`poll_pause`].
    async fn poll_due(self: Arc<Self>, every: Duration) {
        let mut failing = Streak::default();
        loop {
            let mut claiming = Duration::ZERO;
            loop {
                let room = self.queue.room().min(256) as i64;
                if room == 0 {
                    break;
                }
                let (tenants, mut configs) = self.queue.full();
                // A configuration whose breaker holds its deliveries gets
                // none claimed until its probe may go: claiming them only
                // to hand them back would rewrite its whole backlog every
                // pause, on the writer everyone shares.
                configs.extend(self.held());
                let skip = store::ClaimSkip { tenants, configs };
                let started = std::time::Instant::now();
                let claimed = self.store.claim_due(timestamp::now_ms(), LEASE_MS, room, &skip).await;
                claiming += started.elapsed();
                let due = match claimed {
                    Ok(due) => {
                        if let Some(failures) = failing.succeeded() {
                            tracing::info!(failures, "claiming due deliveries works again");
                        }
                        due
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        if let Some(failures) = failing.failed() {
                            tracing::error!(error = %e, failures, "claiming due deliveries failed; retried every poll, logged ever more rarely");
                        }
                        break;
                    }
                };
                let n = due.len() as i64;
                let now = tokio::time::Instant::now();
                for d in due {
                    if !self.hand(d.into(), now).await {
                        return;
                    }
                }
                if n < room {
                    break;
                }
            }
            tokio::time::sleep(poll_pause(every, claiming)).await;
        }
    }

    /// Makes one attempt in `turn`, which is given back as soon as the
    /// request is answered (or no request is to be made).
    async fn attempt(&self, mut job: DeliveryJob, turn: Turn) -> Result<(), StoreError> {
        let config = match self.configs.get(&job.tenant, &job.config).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => return self.record_unsent(&job, "the configuration was deleted").await,
            Err(StoreError::Corrupt(why)) => {
                tracing::error!(configuration = %job.config, why, "a delivery's configuration is unreadable");
                return self.record_unsent(&job, "the configuration is unreadable").await;
            }
            Err(e) => return Err(e),
        };
        if !config.enabled {
            // Held until the configuration is enabled again: the claim
            // query skips deliveries of disabled configurations.
            return release(&self.store, &job, timestamp::now_ms()).await;
        }
        if job.undecided && !self.decide_deferred(&config, &mut job).await? {
            return Ok(());
        }
        // A configuration without a usable client has nothing to probe:
        // each of its deliveries fails at once, saying why.
        let admission = if config.client.is_ok() { self.admit(&config.id) } else { Admission::Send { probe: false } };
        let probe = match admission {
            Admission::Send { probe } => probe,
            Admission::Defer(until) => return release(&self.store, &job, until).await,
        };
        let spec = &config.spec;
        if let Some(limit) = spec.rate_limit {
            // The store keeps the slots: the limit holds for all nodes together.
            let wait = self.store.reserve_send_slot(&config.id, Duration::from_secs(1) / limit.per_second.max(1)).await?;
            if wait > MAX_SLOT_WAIT {
                // A long backlog waits in the store, not under a lease that
                // could run out (and let another sender take it) meanwhile.
                let at = timestamp::now_ms() + wait.as_millis() as i64;
                return release(&self.store, &job, at).await;
            }
            if let Some(u) = job.unwritten.as_ref().filter(|u| wait > UNWRITTEN_WAIT && u.mark_shown()) {
                self.show(vec![u.clone()]).await;
            }
            tokio::time::sleep(wait).await;
        }
        let sent = {
            let _sending = InFlight::start(self, &job);
            config.send(&self.store, &job).await
        };
        // Answered: the receiver's slot is free while the attempt is
        // recorded, if there is room to record it.
        let recording = self.recording.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        drop(turn);
        let Sent { request, started_at, duration_ms, status, response_headers, response_body, retry_after, succeeded, error } = sent;
        let gone = status == Some(reqwest::StatusCode::GONE);
        let (outcome, next_attempt_at) = if succeeded {
            (AttemptOutcome::Succeeded, None)
        } else if job.attempt < spec.retry.max_attempts && !gone {
            let backoff = spec.retry.backoff(job.attempt + 1, random_fraction());
            let wait = backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
            (AttemptOutcome::Retry, Some(timestamp::now_ms() + wait.as_millis() as i64))
        } else {
            (AttemptOutcome::Failed, None)
        };
        telemetry::attempt(outcome.as_str(), status.map(|s| s.as_u16()), Some(Duration::from_millis(duration_ms.max(0) as u64)));
        traces::attempt(&traces::Attempt {
            tenant: job.tenant.as_str(),
            event_id: job.event.id.as_str(),
            delivery_id: job.delivery.as_str(),
            configuration: job.config.as_str(),
            number: job.attempt,
            status: status.map(|s| s.as_u16()),
            outcome: outcome.as_str(),
            started_at,
            duration_ms,
        });
        let failure = error.clone();
        let attempt = NewAttempt {
            id: AttemptId::generate(),
            tenant_id: job.tenant.clone(),
            delivery_id: job.delivery.clone(),
            config_id: job.config.clone(),
            number: i64::from(job.attempt),
            started_at,
            duration_ms,
            method: "POST".into(),
            uri: request.uri,
            response_status: status.map(|s| i64::from(s.as_u16())),
            outcome,
            error,
            request_headers: request.headers,
            response_headers,
            // The send is over: the body is normally the log's alone by now,
            // and then taken back without a copy.
            request_body: String::from_utf8(request.body.into()).ok(),
            response_body,
            next_attempt_at,
            unwritten: job.unwritten.clone(),
        };
        let recorded = self.record(attempt).await;
        drop(recording);
        let Recorded::Logged(streak) = recorded? else {
            // The nodes that took this one for dead send this delivery
            // again: what its receiver said is theirs to count and tell.
            return Ok(());
        };
        if outcome == AttemptOutcome::Failed {
            let failed = FailedDelivery {
                delivery: &job.delivery,
                event_id: job.event.id.as_str(),
                event_type: job.event.event_type.as_str(),
                config: &job.config,
                attempts: job.attempt,
                status: status.map(|s| s.as_u16()),
                error: failure.as_deref(),
            };
            self.notices.delivery_failed(&job.tenant, &failed);
        }
        let disable = if gone { Some("the endpoint answered 410 Gone".to_owned()) } else { self.count_outcome(&config, streak, probe) };
        if let Some(reason) = disable {
            self.disable(&config, &reason).await?;
        }
        Ok(())
    }

    /// Records the attempt of a delivery whose configuration is gone: no
    /// request is made, the delivery fails saying why.
    async fn record_unsent(&self, job: &DeliveryJob, why: &str) -> Result<(), StoreError> {
        telemetry::attempt(AttemptOutcome::Failed.as_str(), None, None);
        self.store.record_attempt(unsent(job, why)).await.map(drop)
    }

    /// Records an attempt. One whose log cannot be stored (text the
    /// database refuses, a row too large) is recorded again without its
    /// bodies and headers, so that the delivery still gets its state.
    /// While the store cannot take writes the record waits for it
    /// ([`through_outage`]), holding its recording slot, so that sends stop
    /// piling up outcomes nobody can write.
    async fn record(&self, attempt: NewAttempt) -> Result<Recorded, StoreError> {
        let recorded = through_outage("an attempt's record", || self.store.record_attempt(attempt.clone())).await;
        match recorded {
            // Not the log's fault: without its details it would fail the same.
            Err(e) if matches!(e, StoreError::Closed) || e.is_unavailable() => Err(e),
            Err(e) => {
                tracing::warn!(delivery = %attempt.delivery_id, error = %e, "an attempt's log could not be stored; storing it without its details");
                let bare = NewAttempt {
                    id: AttemptId::generate(),
                    error: Some(format!(
                        "{}; the attempt's details could not be stored",
                        attempt.response_status.map_or_else(|| "no answer".to_owned(), |s| format!("answered {s}"))
                    )),
                    request_headers: "{}".into(),
                    response_headers: None,
                    request_body: None,
                    response_body: None,
                    ..attempt
                };
                self.store.record_attempt(bare).await
            }
            ok => ok,
        }
    }

    /// Writes rows showing deliveries handed on unwritten that wait long
    /// (in a send queue, for a rate limit's slot), pending and held by this
    /// sender, which keeps them: a long wait in memory would hide them from
    /// the API, and could outlast their events' claims. Their attempts then
    /// settle these rows. A write that fails leaves them to the claims.
    /// (Each marked [`Unwritten::shown`] first, by the caller.)
    async fn show(&self, waiting: Vec<Arc<Unwritten>>) {
        if waiting.is_empty() {
            return;
        }
        let (count, now) = (waiting.len(), timestamp::now_ms());
        if let Err(e) = self.store.write_pending(waiting, now, Some(now + LEASE_MS)).await {
            tracing::warn!(deliveries = count, error = %e, "writing rows of waiting deliveries failed; their events' claims cover them");
        }
    }

    /// Every [`UNWRITTEN_WAIT`], shows the deliveries handed on unwritten
    /// that have waited that long in the send queues, or for their
    /// receivers' answers: a slow receiver would otherwise leave its event
    /// unrouted to readers (and to other nodes' recovery scans) until it
    /// answers or its deadline passes. A request goes on while its row is
    /// written, and its attempt settles the row whichever is written first.
    async fn show_waiting(self: Arc<Self>) {
        let mut tick = tokio::time::interval(UNWRITTEN_WAIT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let before = timestamp::now_ms() - UNWRITTEN_WAIT.as_millis() as i64;
            let mut waiting = Vec::new();
            // Marked under the queues' lock, then the senders': a mark is
            // made before its attempt is recorded or not at all (see
            // `InFlight`), and that write knows whether it meets a row.
            self.queue.each(|job| {
                if let Some(u) = job.unwritten.as_ref().filter(|u| u.routed_at < before && u.mark_shown()) {
                    waiting.push(u.clone());
                }
            });
            {
                let sending = lock(&self.sending_unwritten);
                waiting.extend(sending.values().filter(|u| u.routed_at < before && u.mark_shown()).cloned());
            }
            self.show(waiting).await;
        }
    }

    /// Runs the script of a delivery routed while it was paused, when its
    /// turn has come, and records the decision. `true`: the delivery is to
    /// be sent now (with the script's body and headers in `job`).
    async fn decide_deferred(&self, config: &Arc<ActiveConfig>, job: &mut DeliveryJob) -> Result<bool, StoreError> {
        // Paused: a slot later. Else its turn in the script's lane; the
        // script may have exhausted again meanwhile.
        let paused = config.penalty.defer();
        let _lane = match paused {
            None => Some(config.penalty.lane().acquire_owned().await.map_err(|_| StoreError::Closed)?),
            Some(_) => None,
        };
        if let Some(wait) = paused.or_else(|| config.penalty.defer()) {
            let at = timestamp::now_ms() + jittered(wait);
            release(&self.store, job, at).await?;
            return Ok(false);
        }
        let (sandbox, on, event) = (self.sandbox.clone(), config.clone(), job.event.clone());
        let decided = tokio::task::spawn_blocking(move || decide(&sandbox, &on, &event, timestamp::now_ms(), Pause::Ignore)).await;
        let mut d = decided.map_err(|e| StoreError::Corrupt(format!("a script thread failed: {e}")))?;
        d.id = job.delivery.clone();
        if !matches!(d.error_kind.as_deref(), Some("out_of_fuel" | "timeout")) {
            // It decided without exhausting: the next few of its deferred
            // events need not wait for their slots. A few, so that a script
            // that only sometimes decides brings back little at a time.
            self.store.hurry_undecided(&job.tenant, &config.id, timestamp::now_ms(), HURRY).await?;
        }
        let pending = d.status == DeliveryStatus::Pending;
        let (body, headers) = (d.body.clone(), d.headers.clone());
        if !self.store.record_decision(&job.tenant, d).await? || !pending {
            return Ok(false);
        }
        job.body = body;
        job.headers = headers;
        job.undecided = false;
        Ok(true)
    }

    /// Whether the configuration's breaker lets a delivery through now.
    /// The configurations whose breaker holds their deliveries now: paused,
    /// or waiting for the answer to its probe.
    fn held(&self) -> Vec<ConfigId> {
        let now = timestamp::now_ms();
        let breakers = lock(&self.breakers);
        breakers.iter().filter(|(_, b)| now < b.paused_until || b.probe_out(now)).map(|(id, _)| id.clone()).collect()
    }

    fn admit(&self, config: &ConfigId) -> Admission {
        let mut breakers = lock(&self.breakers);
        let Some(breaker) = breakers.get_mut(config) else {
            return Admission::Send { probe: false };
        };
        let now = timestamp::now_ms();
        if now < breaker.paused_until || breaker.probe_out(now) {
            // Spread over a quarter pause, so the held ones do not all come due at once.
            let jitter = (random_fraction() * breaker.pause_ms as f64 / 4.0) as i64;
            return Admission::Defer(breaker.paused_until.max(now + breaker.pause_ms / 2) + jitter);
        }
        breaker.probe_sent = Some(now);
        Admission::Send { probe: true }
    }

    /// Keeps the configuration's breaker after an attempt that left its
    /// failure streak at `streak`; says why to disable the configuration
    /// when the streak passes its `auto_disable` threshold.
    fn count_outcome(&self, config: &ActiveConfig, streak: FailureStreak, probe: bool) -> Option<String> {
        let mut breakers = lock(&self.breakers);
        if streak.failures == 0 {
            breakers.remove(&config.id);
            return None;
        }
        let now = timestamp::now_ms();
        if streak.failures >= BREAKER_AFTER {
            let breaker = breakers.entry(config.id.clone()).or_insert_with(|| {
                tracing::warn!(configuration = %config.id, failures = streak.failures, "endpoint failing: holding its deliveries, probing it alone");
                self.notices.receiver_down(&config.tenant, &config.id, streak.failures, streak.since);
                Breaker { paused_until: 0, pause_ms: FIRST_PAUSE_MS, probe_sent: None }
            });
            if probe {
                breaker.probe_sent = None;
                breaker.pause_ms = (breaker.pause_ms * 2).min(MAX_PAUSE_MS);
            }
            if probe || breaker.paused_until == 0 {
                breaker.paused_until = now + breaker.pause_ms;
            }
        }
        let rule = config.spec.auto_disable;
        let failing_for = now - streak.since;
        if rule.after_failures == 0 || streak.failures < i64::from(rule.after_failures) || failing_for < rule.failing_for_ms as i64 {
            return None;
        }
        breakers.remove(&config.id);
        Some(format!("{} failed attempts in a row over {} s, no success", streak.failures, failing_for / 1000))
    }

    async fn disable(&self, config: &ActiveConfig, reason: &str) -> Result<(), StoreError> {
        match self.store.set_config_enabled(&config.tenant, &config.id, None, false, Some(reason)).await {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.configs.invalidate(&config.tenant, Some(&config.id));
        tracing::warn!(configuration = %config.id, reason, "configuration disabled");
        self.notices.configuration_disabled(&config.tenant, &config.id, &config.spec.name, reason, timestamp::now_ms());
        Ok(())
    }
}

/// The attempt recorded, without a request, when the configuration is gone
/// (deleted meanwhile) or cannot be read.
fn unsent(job: &DeliveryJob, why: &str) -> NewAttempt {
    NewAttempt {
        id: AttemptId::generate(),
        tenant_id: job.tenant.clone(),
        delivery_id: job.delivery.clone(),
        config_id: job.config.clone(),
        number: i64::from(job.attempt),
        started_at: timestamp::now_ms(),
        duration_ms: 0,
        method: "POST".into(),
        uri: String::new(),
        response_status: None,
        outcome: AttemptOutcome::Failed,
        error: Some(why.into()),
        request_headers: "{}".into(),
        response_headers: None,
        request_body: None,
        response_body: None,
        next_attempt_at: None,
        unwritten: job.unwritten.clone(),
    }
}

/// Hands a delivery back to the store unattempted, due at `at`: writes its
/// row if routing handed it on unwritten.
async fn release(store: &Store, job: &DeliveryJob, at: i64) -> Result<(), StoreError> {
    match &job.unwritten {
        Some(unwritten) => store.write_pending(vec![unwritten.clone()], at, None).await,
        None => store.release_delivery(&job.tenant, &job.delivery, at).await,
    }
}

/// How long the retry poller waits after a round whose claims took
/// `claiming`: `every`, or long enough that claims take at most a tenth of
/// the time. The claim is one write on the store every tenant shares; its
/// cost grows with the configurations that have retries waiting.
fn poll_pause(every: Duration, claiming: Duration) -> Duration {
    every.max(claiming * 9)
}

/// `wait` plus as much again at most, at random, in ms.
fn jittered(wait: Duration) -> i64 {
    let ms = wait.as_millis() as i64;
    ms + (random_fraction() * ms as f64) as i64
}

/// A uniform fraction in [0, 1) for retry jitter.
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl Handoff for Deliverer {
    fn hand(&self, job: DeliveryJob, deadline: tokio::time::Instant) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.hand_job(job, deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poller_waits_its_interval_or_long_enough_that_claims_take_a_tenth_of_the_time() {
        let every = Duration::from_millis(250);
        assert_eq!(poll_pause(every, Duration::from_millis(2)), every);
        assert_eq!(poll_pause(every, Duration::from_millis(100)), Duration::from_millis(900));
        let claiming = Duration::from_millis(66);
        let share = claiming.as_secs_f64() / (claiming + poll_pause(every, claiming)).as_secs_f64();
        assert!(share <= 0.1, "{share}");
    }
}
