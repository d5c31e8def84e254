//! Delivery: builds each request (URL and query, headers, authorization,
//! body), signs it, sends it within the deadline, classifies the answer by
//! the response mode, logs the attempt and schedules the retry.
//!
//! This module owns the outbound HTTP. It must never put a secret in an
//! attempt log, and never decide what to deliver (routing did).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::fair::{Bounds, FairQueue, Refused};

use crate::destination::{self, DestinationPolicy};
use crate::event::Event;
use crate::export::{Authorization, ExportConfig, ResponseMode, Tls};
use crate::ids::{AttemptId, ConfigId, DeliveryId, TenantId};
use crate::route::{self, ActiveConfig, ConfigCache, LEASE_MS, Pause};
use crate::sandbox::{Header, Sandbox};
use crate::sign;
use crate::store::{self, AttemptOutcome, DeliveryStatus, DueDelivery, FailureStreak, NewAttempt, Store, StoreError};

/// Most response-body bytes kept in the payload log.
const MAX_LOGGED_RESPONSE: usize = 64 << 10;
/// What a redacted value reads as.
pub const REDACTED: &str = "***";

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
        }
    }
}

/// The client every configuration without its own TLS settings shares.
/// Like every delivery client, it connects only where `destinations`
/// allows, directly, and follows no redirect.
pub fn shared_client(destinations: &Arc<DestinationPolicy>) -> reqwest::Client {
    destination::guard(reqwest::Client::builder(), destinations)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(256)
        .build()
        .expect("the default TLS backend initializes")
}

/// A client honouring a configuration's TLS trust and client certificate.
/// An endpoint that is a literal address `destinations` refuses (saved
/// before the policy changed; literal addresses never reach the resolver)
/// gets a client whose every send fails, saying why.
pub fn client_for(
    spec: &ExportConfig,
    shared: &reqwest::Client,
    destinations: &Arc<DestinationPolicy>,
) -> Result<reqwest::Client, reqwest::Error> {
    let custom_tls = !matches!(spec.tls, Tls::System);
    let cert = matches!(spec.authorization, Authorization::ClientCertificate { .. });
    let forbidden = reqwest::Url::parse(&spec.endpoint).ok().and_then(|url| destinations.check_url(&url).err());
    if !custom_tls && !cert && forbidden.is_none() {
        return Ok(shared.clone());
    }
    let mut b = destination::guard(reqwest::Client::builder(), destinations).user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
    if let Some(forbidden) = forbidden {
        b = destination::refuse(b, forbidden);
    }
    match &spec.tls {
        Tls::System => {}
        Tls::CustomCa { ca_pem } => {
            b = b.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())? {
                b = b.add_root_certificate(cert);
            }
        }
        Tls::TrustAll => b = b.danger_accept_invalid_certs(true),
    }
    if let Authorization::ClientCertificate { certificate_pem, private_key_pem, .. } = &spec.authorization {
        let pem = format!("{certificate_pem}\n{private_key_pem}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes())?);
    }
    b.build()
}

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
    /// Attempts answered and being recorded. A request's slot is given
    /// back once it is answered, not once it is recorded: the store's
    /// latency must not cap a receiver's rate at `max_in_flight` over it.
    recording: Arc<Semaphore>,
    queue: FairQueue<TenantId, ConfigId, DeliveryJob>,
    /// Open circuit breakers, per configuration.
    breakers: Mutex<HashMap<ConfigId, Breaker>>,
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
/// budget (see [`crate::penalty`]).
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
const BREAKER_AFTER: i64 = 20;
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

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Deliverer {
    pub fn new(store: Store, sandbox: Arc<Sandbox>, configs: Arc<ConfigCache>, concurrency: usize) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        let queued = concurrency * QUEUED_PER_SLOT;
        Arc::new(Self {
            store,
            sandbox,
            configs,
            permits: Arc::new(Semaphore::new(concurrency)),
            recording: Arc::new(Semaphore::new(concurrency)),
            queue: FairQueue::new(Bounds {
                per_key: queued / CONFIG_SHARE,
                per_group: queued / TENANT_SHARE,
                total: queued,
                group_workers: concurrency / TENANT_SHARE,
            }),
            breakers: Mutex::default(),
        })
    }

    /// Starts sending what is queued, and the retry poller (every `poll`).
    pub fn start(self: &Arc<Self>, poll: Duration) {
        tokio::spawn(self.clone().send_in_turn());
        tokio::spawn(self.clone().poll_due(poll));
    }

    /// Queues a delivery to send, waiting until `deadline` for room in its
    /// configuration's and tenant's queues. What still does not fit waits
    /// in the store, and the poller fetches it when there is room: the
    /// longer the queue ahead of it, the later it comes due, so that a slow
    /// endpoint's backlog is not read again and again. `false`: shutting
    /// down (the lease expires and a restart sends it).
    pub async fn hand(&self, job: DeliveryJob, deadline: tokio::time::Instant) -> bool {
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
                let later = store::now_ms() + jittered(wait);
                tokio::spawn(async move { store.release_delivery(&job.tenant, &job.delivery, later).await });
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
                    let (delivery, attempt) = (job.delivery.clone(), job.attempt);
                    let deliverer = turn.deliverer.clone();
                    if let Err(e) = deliverer.attempt(job, turn).await {
                        tracing::error!(%delivery, attempt, error = %e, "recording an attempt failed; the lease will expire and it is retried");
                    }
                }
            });
        }
    }

    /// Claims deliveries whose retry is due (or whose sender died) and
    /// queues them, every `every`: as many as there is room for, none of a
    /// tenant or configuration whose queue is full (those wait in the store).
    async fn poll_due(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
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
                let due = match self.store.claim_due(store::now_ms(), LEASE_MS, room, &skip).await {
                    Ok(due) => due,
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming due deliveries failed");
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
        }
    }

    /// Makes one attempt in `turn`, which is given back as soon as the
    /// request is answered (or no request is to be made).
    async fn attempt(&self, mut job: DeliveryJob, turn: Turn) -> Result<(), StoreError> {
        let config = match self.configs.get(&job.tenant, &job.config).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => {
                return self.store.record_attempt(unsent(&job, "the configuration was deleted")).await.map(drop);
            }
            Err(StoreError::Corrupt(why)) => {
                tracing::error!(configuration = %job.config, why, "a delivery's configuration is unreadable");
                return self.store.record_attempt(unsent(&job, "the configuration is unreadable")).await.map(drop);
            }
            Err(e) => return Err(e),
        };
        if !config.enabled {
            // Held until the configuration is enabled again: the claim
            // query skips deliveries of disabled configurations.
            return self.store.release_delivery(&job.tenant, &job.delivery, store::now_ms()).await;
        }
        if job.undecided && !self.decide_deferred(&config, &mut job).await? {
            return Ok(());
        }
        // A configuration without a usable client has nothing to probe:
        // each of its deliveries fails at once, saying why.
        let admission = if config.client.is_ok() { self.admit(&config.id) } else { Admission::Send { probe: false } };
        let probe = match admission {
            Admission::Send { probe } => probe,
            Admission::Defer(until) => return self.store.release_delivery(&job.tenant, &job.delivery, until).await,
        };
        let spec = &config.spec;
        if let Some(limit) = spec.rate_limit {
            // The store keeps the slots: the limit holds for all nodes together.
            let wait = self.store.reserve_send_slot(&config.id, Duration::from_secs(1) / limit.per_second.max(1)).await?;
            if wait > MAX_SLOT_WAIT {
                // A long backlog waits in the store, not under a lease that
                // could run out (and let another sender take it) meanwhile.
                let at = store::now_ms() + wait.as_millis() as i64;
                return self.store.release_delivery(&job.tenant, &job.delivery, at).await;
            }
            tokio::time::sleep(wait).await;
        }
        let sent = send_once(&config, &job).await;
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
            (AttemptOutcome::Retry, Some(store::now_ms() + wait.as_millis() as i64))
        } else {
            (AttemptOutcome::Failed, None)
        };
        let attempt = NewAttempt {
            id: AttemptId::generate(),
            tenant_id: job.tenant.clone(),
            delivery_id: job.delivery.clone(),
            config_id: job.config.clone(),
            number: i64::from(job.attempt),
            started_at,
            duration_ms,
            method: "POST".into(),
            uri: request.logged_uri,
            response_status: status.map(|s| i64::from(s.as_u16())),
            outcome,
            error,
            request_headers: headers_json(&request.headers, true),
            response_headers,
            request_body: String::from_utf8(request.body).ok(),
            response_body,
            next_attempt_at,
        };
        let streak = self.record(attempt).await;
        drop(recording);
        let streak = streak?;
        let disable = if gone { Some("the endpoint answered 410 Gone".to_owned()) } else { self.count_outcome(&config, streak, probe) };
        if let Some(reason) = disable {
            self.disable(&config, &reason).await?;
        }
        Ok(())
    }

    /// Records an attempt. One whose log cannot be stored (text the
    /// database refuses, a row too large) is recorded again without its
    /// bodies and headers, so that the delivery still gets its state.
    async fn record(&self, attempt: NewAttempt) -> Result<FailureStreak, StoreError> {
        match self.store.record_attempt(attempt.clone()).await {
            Err(StoreError::Closed) => Err(StoreError::Closed),
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
            let at = store::now_ms() + jittered(wait);
            self.store.release_delivery(&job.tenant, &job.delivery, at).await?;
            return Ok(false);
        }
        let (sandbox, on, event) = (self.sandbox.clone(), config.clone(), job.event.clone());
        let decided = tokio::task::spawn_blocking(move || route::decide(&sandbox, &on, &event, store::now_ms(), Pause::Ignore)).await;
        let mut d = decided.map_err(|e| StoreError::Corrupt(format!("a script thread failed: {e}")))?;
        d.id = job.delivery.clone();
        if !matches!(d.error_kind.as_deref(), Some("out_of_fuel" | "timeout")) {
            // It decided without exhausting: the next few of its deferred
            // events need not wait for their slots. A few, so that a script
            // that only sometimes decides brings back little at a time.
            self.store.hurry_undecided(&job.tenant, &config.id, store::now_ms(), HURRY).await?;
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
        let now = store::now_ms();
        let breakers = lock(&self.breakers);
        breakers.iter().filter(|(_, b)| now < b.paused_until || b.probe_out(now)).map(|(id, _)| id.clone()).collect()
    }

    fn admit(&self, config: &ConfigId) -> Admission {
        let mut breakers = lock(&self.breakers);
        let Some(breaker) = breakers.get_mut(config) else {
            return Admission::Send { probe: false };
        };
        let now = store::now_ms();
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
        let now = store::now_ms();
        if streak.failures >= BREAKER_AFTER {
            let breaker = breakers.entry(config.id.clone()).or_insert_with(|| {
                tracing::warn!(configuration = %config.id, failures = streak.failures, "endpoint failing: holding its deliveries, probing it alone");
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
        Ok(())
    }
}

/// How long the receiver asks to wait (`Retry-After`: seconds, or an HTTP date).
fn retry_after(headers: &reqwest::header::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One request and its answer, classified by the configuration's response mode.
pub struct Sent {
    pub request: Request,
    /// Unix ms.
    pub started_at: i64,
    pub duration_ms: i64,
    pub status: Option<reqwest::StatusCode>,
    /// JSON object.
    pub response_headers: Option<String>,
    /// As received, cut after [`MAX_LOGGED_RESPONSE`]; it need not be UTF-8.
    pub response_body: Option<Vec<u8>>,
    pub retry_after: Option<Duration>,
    pub succeeded: bool,
    /// Why it failed, for the attempt log.
    pub error: Option<String>,
}

/// Builds, signs and sends one request for `job`, within the deadline.
pub async fn send_once(config: &ActiveConfig, job: &DeliveryJob) -> Sent {
    let spec = &config.spec;
    let request = build(spec, job);
    let started_at = store::now_ms();
    let client = match &config.client {
        Ok(client) => client,
        Err(why) => {
            let error = Some(why.clone());
            return Sent {
                request,
                started_at,
                duration_ms: 0,
                status: None,
                response_headers: None,
                response_body: None,
                retry_after: None,
                succeeded: false,
                error,
            };
        }
    };
    let clock = Instant::now();
    let sent =
        client.post(request.url.clone()).headers(request.headers.clone()).body(request.body.clone()).timeout(spec.deadline()).send().await;
    let (status, response_headers, response_body, error, retry_after) = match sent {
        Ok(response) => {
            let status = response.status();
            let headers = headers_json(response.headers(), false);
            let retry_after = retry_after(response.headers(), std::time::SystemTime::now());
            let body = read_capped(response, spec.deadline().saturating_sub(clock.elapsed())).await;
            (Some(status), Some(headers), body, None, retry_after)
        }
        Err(e) => (None, None, None, Some(describe(&e)), None),
    };
    let duration_ms = clock.elapsed().as_millis() as i64;
    let succeeded = match (status, spec.response_mode) {
        (Some(s), ResponseMode::Loose) => s.is_success(),
        (Some(s), ResponseMode::Normal) => {
            s == reqwest::StatusCode::OK && response_body.as_deref().map(<[u8]>::trim_ascii) == Some(b"[ACK]".as_slice())
        }
        (None, _) => false,
    };
    let error = error.or_else(|| {
        (!succeeded).then(|| match (status, spec.response_mode) {
            (Some(s), ResponseMode::Normal) if s.is_success() => format!("answered {s} without the body [ACK]"),
            (Some(s), _) => format!("answered {s}"),
            (None, _) => "no answer".into(),
        })
    });
    Sent { request, started_at, duration_ms, status, response_headers, response_body, retry_after, succeeded, error }
}

/// Request headers as logged: credentials redacted.
pub fn logged_headers(request: &Request) -> String {
    headers_json(&request.headers, true)
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
        started_at: store::now_ms(),
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
    }
}

/// A request ready to send, and its URI as logged.
pub struct Request {
    pub url: reqwest::Url,
    pub logged_uri: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// The body receivers get when the script does not replace it: the event
/// in the shape it was posted.
pub fn default_body(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&event.envelope()).unwrap_or_default()
}

/// Builds the request for one attempt. Everything here was validated when
/// the configuration was saved, so failures only drop the offending part.
pub fn build(spec: &ExportConfig, job: &DeliveryJob) -> Request {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

    let body = match &job.body {
        Some(b) => b.clone().into_bytes(),
        None => default_body(&job.event),
    };
    let mut url = reqwest::Url::parse(&spec.endpoint).expect("endpoints are validated on save");
    // The endpoint's own query may carry a credential (`?token=…`).
    let mut logged = reqwest::Url::parse(&redact_url(&spec.endpoint)).unwrap_or_else(|_| {
        let mut bare = url.clone();
        bare.set_query(None);
        bare
    });
    if !spec.query.is_empty() {
        let mut q = url.query_pairs_mut();
        let mut lq = logged.query_pairs_mut();
        for (k, v) in &spec.query {
            q.append_pair(k, v);
            lq.append_pair(k, if is_secret_name(k) { REDACTED } else { v });
        }
    }

    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    };
    for (k, v) in &spec.headers {
        put(k, v);
    }
    if let Some(script_headers) = job.headers.as_deref().and_then(|h| serde_json::from_str::<Vec<Header>>(h).ok()) {
        for h in script_headers {
            put(&h.name, &h.value);
        }
    }
    put("content-type", "application/json");
    put("idempotency-key", job.event.id.as_str());
    // Who caused the event, for receivers that audit it.
    if let Some(source) = &job.event.source {
        if let Some(user) = &source.user {
            put("sluice-source-user", user);
        }
        if let Some(application) = &source.application {
            put("sluice-source-application", application);
        }
    }
    match &spec.authorization {
        Authorization::Bearer { token } => put("authorization", &format!("Bearer {token}")),
        Authorization::Token { token } => put("authorization", token),
        Authorization::None | Authorization::ClientCertificate { .. } => {}
    }
    let now = store::now_ms();
    let secrets = spec.signing.secrets_at(now);
    for (name, value) in sign::headers(&spec.signing.profiles, &secrets, job.event.id.as_str(), now / 1000, &body) {
        put(name, &value);
    }
    Request { url, logged_uri: logged.to_string(), headers, body }
}

/// Header or parameter names whose values are credentials: configured
/// ones are shown as [`REDACTED`] and sealed at rest, logged ones redacted.
/// `sig` (signed URLs) and `code` (function keys) count only as whole names.
pub fn is_secret_name(name: &str) -> bool {
    // Header names arrive lowercase already; query parameter names may not.
    let lower;
    let n = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = name.to_ascii_lowercase();
        lower.as_str()
    } else {
        name
    };
    (["auth", "token", "secret", "key", "password", "passwd", "cookie", "session", "credential", "signature"].iter().any(|s| n.contains(s))
        || ["sig", "code"].contains(&n))
        && n != "idempotency-key"
}

/// One parameter of a URL's query, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam<'a> {
    /// The name as written (maybe percent-encoded).
    pub raw_name: &'a str,
    /// The name decoded, for [`is_secret_name`].
    pub name: String,
    /// The value as written; `None` for a bare `?flag`.
    pub raw_value: Option<&'a str>,
}

/// `url` split at its query: what comes before the `?`, and the query's
/// parameters as written (everything after the `?`, a fragment included,
/// so that nothing is ever shown unredacted).
pub fn query_params(url: &str) -> (&str, Option<Vec<QueryParam<'_>>>) {
    let Some((base, query)) = url.split_once('?') else { return (url, None) };
    let params = query
        .split('&')
        .map(|piece| {
            let (raw_name, raw_value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (piece, None),
            };
            QueryParam { raw_name, name: percent_decode(raw_name), raw_value }
        })
        .collect();
    (base, Some(params))
}

/// `base?params`, the parameters written back as they are.
pub fn join_query(base: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut out = base.to_owned();
    for (i, (name, value)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// `url` with the value of each credential parameter of its query (by
/// [`is_secret_name`]) shown as [`REDACTED`], everything else as written.
pub fn redact_url(url: &str) -> String {
    let (base, Some(params)) = query_params(url) else { return url.to_owned() };
    let shown: Vec<(&str, Option<&str>)> = params
        .iter()
        .map(|p| (p.raw_name, if is_secret_name(&p.name) && p.raw_value.is_some() { Some(REDACTED) } else { p.raw_value }))
        .collect();
    join_query(base, &shown)
}

/// `%XX` and `+` decoded (as forms and query strings write names).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => match hex::decode(&bytes[i + 1..i + 3]) {
                Ok(b) => {
                    out.extend_from_slice(&b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headers as a JSON object; with `redact`, credential values read `***`.
fn headers_json(headers: &reqwest::header::HeaderMap, redact: bool) -> String {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let shown = if redact && is_secret_name(name) && name != "webhook-signature" && name != "x-signature" {
            std::borrow::Cow::Borrowed(REDACTED)
        } else {
            String::from_utf8_lossy(value.as_bytes())
        };
        out.insert(name, shown);
    }
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".into())
}

/// Reads at most [`MAX_LOGGED_RESPONSE`] bytes of the answer within `budget`.
async fn read_capped(mut response: reqwest::Response, budget: Duration) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_LOGGED_RESPONSE.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(budget.max(Duration::from_millis(100)), read).await;
    Some(body)
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "deadline exceeded"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The source chain explains (refused, TLS, DNS) without the URL, which may carry a key.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { what.to_owned() } else { format!("{what}: {cause}") }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("value"));
            retry_after(&h, now)
        };
        assert_eq!(with("120"), Some(Duration::from_secs(120)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(with("Tue, 14 Nov 2023 22:14:20 GMT"), Some(Duration::from_secs(60)));
        assert_eq!(with("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn credential_names_are_recognized() {
        for n in ["Authorization", "X-Api-Key", "x-auth-token", "Cookie", "key"] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["content-type", "idempotency-key", "x-tenant", "store", "zipcode", "design"] {
            assert!(!is_secret_name(n), "{n}");
        }
        for n in ["sig", "Code", "access_token", "apikey"] {
            assert!(is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn credentials_in_an_endpoints_query_are_redacted_and_the_rest_kept_as_written() {
        assert_eq!(redact_url("https://x.example/hook?token=abc&a=b%20c&flag"), "https://x.example/hook?token=***&a=b%20c&flag");
        assert_eq!(
            redact_url("https://x.example/hook?api%5Fkey=abc&sig=s1&code=c1"),
            "https://x.example/hook?api%5Fkey=***&sig=***&code=***"
        );
        assert_eq!(redact_url("https://x.example/hook"), "https://x.example/hook");
        assert_eq!(
            redact_url("https://x.example/h?token=abc#frag"),
            "https://x.example/h?token=***",
            "a fragment never shows a credential"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%aé"), "%aé", "never splits a character");
    }

    #[test]
    fn the_logged_uri_hides_the_endpoints_own_credentials_and_the_request_keeps_them() {
        let spec: ExportConfig = serde_json::from_value::<crate::export::ConfigInput>(serde_json::json!({
            "name": "n", "endpoint": "https://x.example/hook?token=abc&v=1", "event_types": ["*"],
            "query": {"key": "k-123", "page": "2"}, "headers": {"X-Api-Key": "h-456"}
        }))
        .expect("shape")
        .validate(None)
        .expect("valid");
        let event = crate::event::EventInput::from_json(
            r#"{"type": "a.b", "organization_unit": "x", "occurred_at": "2026-01-01T00:00:00Z", "payload": {}}"#,
        )
        .and_then(|e| e.validate(|| crate::event::EventId::parse("evt_1").expect("id")))
        .expect("event");
        let job = DeliveryJob {
            tenant: TenantId::generate(),
            delivery: DeliveryId::generate(),
            config: ConfigId::generate(),
            event: Arc::new(event),
            body: None,
            headers: None,
            attempt: 1,
            undecided: false,
        };
        let request = build(&spec, &job);
        assert_eq!(request.url.as_str(), "https://x.example/hook?token=abc&v=1&key=k-123&page=2");
        assert_eq!(request.logged_uri, "https://x.example/hook?token=***&v=1&key=***&page=2");
        assert_eq!(request.headers["x-api-key"], "h-456");
        let logged = logged_headers(&request);
        assert!(!logged.contains("h-456") && logged.contains(r#""x-api-key":"***""#), "{logged}");
    }
}
