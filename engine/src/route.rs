//! Routing: which configurations take an event, and what each one's script
//! decides. The decisions are recorded on deliveries; those to deliver are
//! handed to [`crate::deliver`].
//!
//! This module owns matching and the per-tenant cache of active
//! configurations. It must never send anything over the network, and never
//! look at another tenant's configurations for an event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deliver::{Deliverer, DeliveryJob};
use crate::destination::DestinationPolicy;
use crate::event::Event;
use crate::export::ExportConfig;
use crate::fair::{Bounds, FairQueue};
use crate::ids::{ConfigId, ScriptId, TenantId};
use crate::penalty::Penalty;
use crate::sandbox::{Decision, OutcomeResult, Params, Sandbox, Script, ScriptError};
use crate::store::{self, DeliveryStatus, NewDelivery, Routed, Store, StoreError};

/// How long a sender holds a delivery it was handed before another may
/// claim it.
pub const LEASE_MS: i64 = 5 * 60 * 1000;

/// A configuration ready to route and deliver: parsed, with its script
/// compiled.
pub struct ActiveConfig {
    pub id: ConfigId,
    pub tenant: TenantId,
    pub version: i64,
    pub enabled: bool,
    pub spec: ExportConfig,
    /// `Err` holds why the script could not be loaded; deliveries then
    /// record a script error instead of guessing.
    pub script: Option<Result<Arc<Script>, String>>,
    pub params: Arc<Params>,
    /// The script's pauses, shared by the tenant's configurations that run it.
    pub penalty: Arc<Penalty>,
    /// The HTTP client for this configuration's TLS and certificate
    /// settings; `Err` says why none could be built (each attempt then
    /// fails with that reason, and no other configuration notices).
    pub client: Result<reqwest::Client, String>,
}

/// Active configurations by tenant, loaded on first use and dropped whenever
/// one of the tenant's configurations changes.
pub struct ConfigCache {
    store: Store,
    sandbox: Arc<Sandbox>,
    shared_client: reqwest::Client,
    /// Where deliveries may connect; every configuration's client obeys it.
    destinations: Arc<DestinationPolicy>,
    by_tenant: Mutex<HashMap<TenantId, Arc<Vec<Arc<ActiveConfig>>>>>,
    by_id: Mutex<HashMap<ConfigId, Arc<ActiveConfig>>>,
    /// Pauses by tenant and script: a script's cost is its tenant's alone,
    /// even where two tenants uploaded the same bytes.
    penalties: Mutex<HashMap<(TenantId, ScriptId), Arc<Penalty>>>,
}

impl ConfigCache {
    pub fn new(store: Store, sandbox: Arc<Sandbox>, shared_client: reqwest::Client, destinations: Arc<DestinationPolicy>) -> Self {
        Self {
            store,
            sandbox,
            shared_client,
            destinations,
            by_tenant: Mutex::default(),
            by_id: Mutex::default(),
            penalties: Mutex::default(),
        }
    }

    /// Forgets what is cached for `tenant` (after any configuration change).
    pub fn invalidate(&self, tenant: &TenantId, config: Option<&ConfigId>) {
        lock(&self.by_tenant).remove(tenant);
        if let Some(id) = config {
            lock(&self.by_id).remove(id);
        }
    }

    /// Checks that a configuration's HTTP client can be built (its CA
    /// bundle and client certificate load): refused at save, never found
    /// out while routing.
    pub fn check_client(&self, spec: &ExportConfig) -> Result<(), crate::export::ConfigError> {
        crate::deliver::client_for(spec, &self.shared_client, &self.destinations).map(drop).map_err(|e| {
            let field = if matches!(spec.tls, crate::export::Tls::System) { "authorization" } else { "tls" };
            crate::export::ConfigError {
                code: "invalid_tls",
                field: field.into(),
                reason: format!("cannot be used: {}", describe_error(&e)),
            }
        })
    }

    /// Forgets everything cached.
    pub fn invalidate_all(&self) {
        lock(&self.by_tenant).clear();
        lock(&self.by_id).clear();
    }

    /// The tenant's enabled configurations.
    pub async fn enabled(&self, tenant: &TenantId) -> Result<Arc<Vec<Arc<ActiveConfig>>>, StoreError> {
        if let Some(hit) = lock(&self.by_tenant).get(tenant) {
            return Ok(hit.clone());
        }
        let mut active = Vec::new();
        for record in self.store.enabled_configs(tenant).await? {
            match self.activate(record).await {
                Ok(config) => active.push(config),
                // One unreadable row must not stop the tenant's others.
                Err(StoreError::Corrupt(why)) => {
                    tracing::error!(%tenant, why, "skipping an unreadable configuration")
                }
                Err(e) => return Err(e),
            }
        }
        let active = Arc::new(active);
        lock(&self.by_tenant).insert(tenant.clone(), active.clone());
        Ok(active)
    }

    /// One configuration, enabled or not (pending deliveries still need it).
    pub async fn get(&self, tenant: &TenantId, id: &ConfigId) -> Result<Arc<ActiveConfig>, StoreError> {
        if let Some(hit) = lock(&self.by_id).get(id).filter(|c| &c.tenant == tenant) {
            return Ok(hit.clone());
        }
        let record = self.store.get_config(tenant, id).await?;
        self.activate(record).await
    }

    async fn activate(&self, record: store::ConfigRecord) -> Result<Arc<ActiveConfig>, StoreError> {
        if let Some(hit) = lock(&self.by_id).get(&record.id).filter(|c| c.version == record.version) {
            return Ok(hit.clone());
        }
        let spec: ExportConfig =
            serde_json::from_str(&record.spec).map_err(|e| StoreError::Corrupt(format!("configuration {}: {e}", record.id)))?;
        let script = match &spec.script {
            None => None,
            Some(s) => Some(match self.store.script_code(&record.tenant_id, &s.id).await {
                // Compiling can take a good part of a second: not on the
                // threads that serve everyone's requests.
                Ok(code) => {
                    let sandbox = self.sandbox.clone();
                    match tokio::task::spawn_blocking(move || load_code(&sandbox, &code)).await {
                        Ok(loaded) => loaded.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("loading script {} failed: {e}", s.id)),
                    }
                }
                Err(e) => Err(format!("script {} unavailable: {e}", s.id)),
            }),
        };
        let params = Arc::new(spec.script.as_ref().map(|s| s.params.clone()).unwrap_or_default());
        let client = crate::deliver::client_for(&spec, &self.shared_client, &self.destinations).map_err(|e| {
            tracing::error!(configuration = %record.id, error = %e, "the configuration's TLS settings cannot be used; its deliveries fail");
            format!("the configuration's TLS settings cannot be used: {e}")
        });
        let penalty = match &spec.script {
            Some(s) => lock(&self.penalties).entry((record.tenant_id.clone(), s.id.clone())).or_default().clone(),
            None => Arc::default(),
        };
        if let Some((true, expires_at)) = spec.authorization.certificate_expiring(time::OffsetDateTime::now_utc()) {
            tracing::warn!(configuration = %record.id, %expires_at, "the client certificate expires within 30 days (or has expired): upload a new one");
        }
        let active = Arc::new(ActiveConfig {
            id: record.id.clone(),
            tenant: record.tenant_id,
            version: record.version,
            enabled: record.enabled,
            spec,
            script,
            params,
            penalty,
            client,
        });
        lock(&self.by_id).insert(record.id, active.clone());
        Ok(active)
    }
}

/// An error with its causes, for a caller to read.
fn describe_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An event's decisions: a delivery row per configuration that took it.
type Decided = Vec<(Arc<ActiveConfig>, NewDelivery)>;

/// An accepted event waiting to be routed.
pub struct RouteJob {
    pub tenant: TenantId,
    pub seq: i64,
    pub event: Arc<Event>,
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
    deliver: Arc<Deliverer>,
    /// One queue per tenant (the key within it is the tenant itself).
    queue: FairQueue<TenantId, (), RouteJob>,
    /// Events queued and not yet routed, so that the recovery scan does not
    /// queue them twice.
    queued: Mutex<HashSet<i64>>,
}

/// Events one worker routes per turn.
const BATCH: usize = 128;
/// Events one tenant may have waiting; its producers wait (backpressure)
/// or leave the rest to the recovery scan.
const PER_TENANT: usize = 4096;
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
    pub fn start(store: Store, sandbox: Arc<Sandbox>, configs: Arc<ConfigCache>, deliver: Arc<Deliverer>, workers: usize) -> Arc<Self> {
        let workers = workers.max(2);
        let router = Arc::new(Self {
            store,
            sandbox,
            configs,
            deliver,
            queue: FairQueue::new(Bounds { per_key: PER_TENANT, per_group: PER_TENANT, total: TOTAL, group_workers: workers / 2 }),
            queued: Mutex::default(),
        });
        for _ in 0..workers {
            tokio::spawn(router.clone().work());
        }
        router
    }

    /// Queues an event for routing, waiting up to `wait` while its tenant's
    /// queue is full.
    pub async fn queue(&self, job: RouteJob, wait: Duration) -> Result<(), NotQueued> {
        let seq = job.seq;
        if !lock(&self.queued).insert(seq) {
            return Ok(()); // already waiting
        }
        let tenant = job.tenant.clone();
        match self.queue.push(&tenant, &(), usize::MAX, job, wait).await {
            Ok(()) => Ok(()),
            Err(_) => {
                lock(&self.queued).remove(&seq);
                Err(NotQueued)
            }
        }
    }

    async fn work(self: Arc<Self>) {
        while let Some((tenant, (), jobs)) = self.queue.next(BATCH).await {
            let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
            self.route_batch(&tenant, jobs).await;
            {
                let mut queued = lock(&self.queued);
                for seq in seqs {
                    queued.remove(&seq);
                }
            }
            self.queue.done(&tenant, &());
        }
    }

    /// Routes one tenant's batch. Whatever fails stays unrouted, for the
    /// recovery scan; nothing here fails another tenant's events.
    async fn route_batch(&self, tenant: &TenantId, jobs: Vec<RouteJob>) {
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
                .map(|job| {
                    let decided = decide_all(&sandbox, &configs, &job.event);
                    (job, decided)
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
    async fn record(&self, routed: Vec<(RouteJob, Decided)>) {
        let rows: Vec<Routed> = routed.iter().map(|(job, decided)| routed_row(job, decided)).collect();
        let recorded = match self.store.record_routing(rows).await {
            Ok(recorded) => recorded,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!(events = routed.len(), error = %e, "recording a routing batch failed; recording its events one by one");
                let mut recorded = Vec::with_capacity(routed.len());
                for (job, decided) in &routed {
                    recorded.push(self.record_alone(job, decided).await);
                }
                recorded
            }
        };
        let deadline = tokio::time::Instant::now() + HAND_WAIT;
        for ((job, decided), recorded) in routed.into_iter().zip(recorded) {
            // Not recorded: another path routed the event first and its
            // deliveries stand (or it could not be written at all).
            if !recorded {
                continue;
            }
            for (config, d) in decided {
                if d.status != DeliveryStatus::Pending || d.undecided {
                    continue;
                }
                let delivery = DeliveryJob {
                    tenant: job.tenant.clone(),
                    delivery: d.id,
                    config: config.id.clone(),
                    event: job.event.clone(),
                    body: d.body,
                    headers: d.headers,
                    attempt: 1,
                    undecided: false,
                };
                if !self.deliver.hand(delivery, deadline).await {
                    return; // shutting down: the leases expire and a restart sends them
                }
            }
        }
    }

    async fn record_alone(&self, job: &RouteJob, decided: &Decided) -> bool {
        match self.store.record_routing(vec![routed_row(job, decided)]).await {
            Ok(recorded) => return recorded.first().copied().unwrap_or(false),
            Err(StoreError::Closed) => return false,
            Err(e) => {
                tracing::warn!(event = %job.event.id, error = %e, "recording an event's routing failed; recording it without the script's output")
            }
        }
        let mut row = routed_row(job, decided);
        for d in &mut row.deliveries {
            d.script_logs = None;
            d.reason = Some("the script's decision could not be stored".into());
            if d.status == DeliveryStatus::Pending && !d.undecided && (d.body.is_some() || d.headers.is_some()) {
                // Sending without the script's body would send what it replaced.
                d.status = DeliveryStatus::ScriptError;
                d.error_kind = Some("unrecordable".into());
                d.next_attempt_at = None;
                d.lease_until = None;
            }
            d.body = None;
            d.headers = None;
        }
        match self.store.record_routing(vec![row]).await {
            // Recorded without details: its pending deliveries are due and
            // the retry poller sends them; nothing is handed on from here.
            Ok(_) => false,
            Err(e) => {
                tracing::error!(event = %job.event.id, error = %e, "recording an event's routing failed; it waits for the recovery scan");
                false
            }
        }
    }
}

fn routed_row(job: &RouteJob, decided: &Decided) -> Routed {
    Routed { tenant: job.tenant.clone(), event_seq: job.seq, deliveries: decided.iter().map(|(_, d)| d.clone()).collect() }
}

/// The delivery rows for one event: one per matching configuration.
pub fn decide_all(sandbox: &Sandbox, configs: &[Arc<ActiveConfig>], event: &Event) -> Decided {
    let now = store::now_ms();
    configs
        .iter()
        .filter(|c| c.spec.selects(&event.event_type, &event.organization_unit))
        .map(|config| (config.clone(), decide(sandbox, config, event, now, Pause::Defer)))
        .collect()
}

/// What [`decide`] does when the configuration's script is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Records the delivery undecided, due at the script's next slot.
    Defer,
    /// Runs the script anyway (a deferred decision whose turn it is, a test).
    Ignore,
}

/// One configuration's decision on an event, whether it selects the event
/// or not: its script runs (when it has one) and the delivery row records
/// the outcome. A pending row is due at `now` and leased to the sender the
/// router hands it to; an undecided one waits for its script's slot.
pub fn decide(sandbox: &Sandbox, config: &ActiveConfig, event: &Event, now: i64, pause: Pause) -> NewDelivery {
    let mut d = NewDelivery::due_now(config.id.clone(), config.version, now, now + LEASE_MS);
    match &config.script {
        None => {}
        Some(Err(why)) => {
            d.status = DeliveryStatus::ScriptError;
            d.error_kind = Some("unavailable".into());
            d.reason = Some(why.clone());
        }
        Some(Ok(script)) => {
            if pause == Pause::Defer
                && let Some(wait) = config.penalty.defer()
            {
                d.undecided = true;
                d.next_attempt_at = Some(now + wait.as_millis() as i64);
                d.lease_until = None;
                return d;
            }
            let started = Instant::now();
            let outcome = sandbox.run(script, &config.params, event);
            let exhausted = matches!(outcome.result, OutcomeResult::Error(ScriptError::OutOfFuel { .. } | ScriptError::Timeout { .. }));
            config.penalty.record(started.elapsed(), exhausted, sandbox.exhaustion_penalty());
            if !outcome.logs.is_empty() {
                d.script_logs = serde_json::to_string(&outcome.logs).ok();
            }
            match outcome.result {
                OutcomeResult::Decision(Decision::Skip { reason }) => {
                    d.status = DeliveryStatus::Filtered;
                    d.reason = Some(reason);
                }
                OutcomeResult::Decision(Decision::Deliver { body, headers }) => {
                    d.body = body.map(|b| b.get().to_owned());
                    if !headers.is_empty() {
                        d.headers = serde_json::to_string(&headers).ok();
                    }
                }
                OutcomeResult::Error(e) => {
                    d.status = DeliveryStatus::ScriptError;
                    d.error_kind = Some(e.kind().to_owned());
                    d.reason = Some(e.to_string());
                }
            }
        }
    }
    if d.status != DeliveryStatus::Pending {
        d.next_attempt_at = None;
        d.lease_until = None;
    }
    d
}

/// Loads a script's code: the stored machine code when this build can use
/// it, else compiles the uploaded bytes.
pub fn load_code(sandbox: &Sandbox, code: &store::ScriptCode) -> Result<Arc<crate::sandbox::Script>, crate::sandbox::LoadError> {
    if let Some(script) = code.compiled.as_ref().and_then(|c| sandbox.load_precompiled(crate::sandbox::Sha256::of(&code.bytes), c)) {
        return Ok(script);
    }
    sandbox.load(&code.bytes)
}
