//! Routing: which configurations take an event, and what each one's script
//! decides. The decisions are recorded on deliveries; those to deliver are
//! handed to [`crate::deliver`].
//!
//! This module owns matching and the per-tenant cache of active
//! configurations. It must never send anything over the network, and never
//! look at another tenant's configurations for an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::deliver::DeliveryJob;
use crate::destination::DestinationPolicy;
use crate::event::Event;
use crate::export::ExportConfig;
use crate::ids::{ConfigId, DeliveryId, TenantId};
use crate::sandbox::{Decision, OutcomeResult, Params, Sandbox, Script};
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
    /// The HTTP client for this configuration's TLS and certificate settings.
    pub client: reqwest::Client,
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
        }
    }

    /// Forgets what is cached for `tenant` (after any configuration change).
    pub fn invalidate(&self, tenant: &TenantId, config: Option<&ConfigId>) {
        lock(&self.by_tenant).remove(tenant);
        if let Some(id) = config {
            lock(&self.by_id).remove(id);
        }
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
            active.push(self.activate(record).await?);
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
        let spec: ExportConfig = serde_json::from_str(&record.spec)
            .map_err(|e| StoreError::Corrupt(format!("configuration {}: {e}", record.id)))?;
        let script = match &spec.script {
            None => None,
            Some(s) => Some(match self.store.script_code(&record.tenant_id, &s.id).await {
                Ok(code) => load_code(&self.sandbox, &code).map_err(|e| e.to_string()),
                Err(e) => Err(format!("script {} unavailable: {e}", s.id)),
            }),
        };
        let params = Arc::new(spec.script.as_ref().map(|s| s.params.clone()).unwrap_or_default());
        let client = crate::deliver::client_for(&spec, &self.shared_client, &self.destinations)
            .map_err(|e| StoreError::Corrupt(format!("configuration {}: {e}", record.id)))?;
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
            client,
        });
        lock(&self.by_id).insert(record.id, active.clone());
        Ok(active)
    }
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
pub struct Router {
    store: Store,
    sandbox: Arc<Sandbox>,
    configs: Arc<ConfigCache>,
    deliver: mpsc::Sender<DeliveryJob>,
}

/// Events routed per batch.
const BATCH: usize = 256;

impl Router {
    pub fn new(store: Store, sandbox: Arc<Sandbox>, configs: Arc<ConfigCache>, deliver: mpsc::Sender<DeliveryJob>) -> Arc<Self> {
        Arc::new(Self { store, sandbox, configs, deliver })
    }

    /// Runs until the job channel closes.
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<RouteJob>) {
        // A few batches in flight, so that one batch's scripts run while
        // another commits.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(4));
        let mut batch = Vec::with_capacity(BATCH);
        while jobs.recv_many(&mut batch, BATCH).await > 0 {
            let work = std::mem::take(&mut batch);
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.route_batch(work).await {
                    tracing::error!(error = %e, "routing a batch failed; its events stay unrouted until the recovery scan");
                }
                drop(permit);
            });
        }
    }

    async fn route_batch(self: Arc<Self>, jobs: Vec<RouteJob>) -> Result<(), StoreError> {
        // Configurations first (async), then every script of the batch on one blocking thread.
        let mut work = Vec::with_capacity(jobs.len());
        for job in jobs {
            let configs = self.configs.enabled(&job.tenant).await?;
            work.push((job, configs));
        }
        let sandbox = self.sandbox.clone();
        let routed = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(job, configs)| {
                    let decided = decide_all(&sandbox, &configs, &job.event);
                    (job, decided)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("routing thread: {e}")))?;

        self.record(routed).await
    }

    /// Records a batch's decisions in one write, then hands its deliveries
    /// to the senders.
    async fn record(&self, routed: Vec<(RouteJob, Decided)>) -> Result<(), StoreError> {
        let rows = routed
            .iter()
            .map(|(job, decided)| Routed {
                tenant: job.tenant.clone(),
                event_seq: job.seq,
                deliveries: decided.iter().map(|(_, d)| d.clone()).collect(),
            })
            .collect();
        let recorded = self.store.record_routing(rows).await?;
        for ((job, decided), recorded) in routed.into_iter().zip(recorded) {
            // Not recorded: another path routed the event first and its
            // deliveries stand.
            if !recorded {
                continue;
            }
            for (config, d) in decided {
                if d.status != DeliveryStatus::Pending {
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
                };
                if self.deliver.send(delivery).await.is_err() {
                    return Ok(()); // shutting down: the leases expire and a restart sends them
                }
            }
        }
        Ok(())
    }
}

/// The delivery rows for one event: one per matching configuration.
pub fn decide_all(sandbox: &Sandbox, configs: &[Arc<ActiveConfig>], event: &Event) -> Decided {
    let now = store::now_ms();
    configs
        .iter()
        .filter(|c| c.spec.selects(&event.event_type, &event.organization_unit))
        .map(|config| (config.clone(), decide(sandbox, config, event, now)))
        .collect()
}

/// One configuration's decision on an event, whether it selects the event
/// or not: its script runs (when it has one) and the delivery row records
/// the outcome. A pending row is due at `now` and leased to the sender the
/// router hands it to.
pub fn decide(sandbox: &Sandbox, config: &ActiveConfig, event: &Event, now: i64) -> NewDelivery {
    let mut d = NewDelivery {
        id: DeliveryId::generate(),
        config_id: config.id.clone(),
        config_version: config.version,
        status: DeliveryStatus::Pending,
        reason: None,
        error_kind: None,
        script_logs: None,
        body: None,
        headers: None,
        next_attempt_at: Some(now),
        lease_until: Some(now + LEASE_MS),
    };
    match &config.script {
        None => {}
        Some(Err(why)) => {
            d.status = DeliveryStatus::ScriptError;
            d.error_kind = Some("unavailable".into());
            d.reason = Some(why.clone());
        }
        Some(Ok(script)) => {
            let outcome = sandbox.run(script, &config.params, event);
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
