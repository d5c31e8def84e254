//! The engine's shared state and the operations the API performs on it:
//! ingest, script upload, configuration changes. Each keeps the caches and
//! the pipeline consistent with the store.
//!
//! This module owns the pipeline's wiring (store → router → deliverer). It
//! must never speak HTTP to callers: the API layer maps its errors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::model::auth::{KeyHash, Principal};
use crate::model::event::Event;
use crate::model::export::{ConfigError, ConfigInput, ExportConfig, SigningSecret};
use crate::model::ids::{AttemptId, ConfigId, DeliveryId, KeyId, ScriptId, TenantId};
use crate::model::timestamp;
use crate::pipeline::client;
use crate::pipeline::configs::{self, ConfigCache};
use crate::pipeline::decide::{Pause, decide};
use crate::pipeline::deliver::Deliverer;
use crate::pipeline::destination::DestinationPolicy;
use crate::pipeline::job::DeliveryJob;
use crate::pipeline::replay::{RecoverRequest, Recovered, ReplayError, Replayed, Replayer};
use crate::pipeline::retention::{self, Retention};
use crate::pipeline::route::{RouteJob, Router};
use crate::sandbox::{LoadError, Sandbox, Script};
use crate::sandbox::{Outcome, Params};
use crate::store::{self, ConfigWrite, Store};
// The store's vocabulary the API speaks through this door.
pub use crate::store::{
    AttemptFilter, AttemptRecord, ConfigRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, EventFilter, EventRecord, EventStatus,
    EventTypeRecord, Ingested, KeyRecord, NewKey, Page, PageRequest, ScriptRecord, StoreError, TenantRecord,
};

/// Limits the engine enforces on callers.
#[derive(Debug, Clone)]
pub struct AppLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one ingest request.
    pub max_batch: usize,
    /// Deliveries in flight at once.
    pub delivery_concurrency: usize,
    /// How often due retries are looked for.
    pub poll_interval: Duration,

    /// How long stored events and payloads are kept, and how often the
    /// purge runs.
    pub retention: Retention,
    /// Which reserved address ranges endpoints may reach (none by default).
    pub destinations: Arc<DestinationPolicy>,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 500,
            delivery_concurrency: 512,
            poll_interval: Duration::from_millis(250),

            retention: Retention::default(),
            destinations: Arc::default(),
        }
    }
}

pub struct App {
    store: Store,
    sandbox: Arc<Sandbox>,
    configs: Arc<ConfigCache>,
    limits: AppLimits,
    /// The tenant whose admin keys manage tenants.
    operator: TenantId,
    router: Arc<Router>,
    replayer: Replayer,
    /// Live keys by hash, and tenants' quotas: read on every request.
    keys: Recent<KeyHash, Principal>,
    /// Hashes no live key has, so that a client retrying a wrong or revoked
    /// key (or a flood of random ones) does not reach the database each time.
    misses: Recent<KeyHash, ()>,
    quotas: Recent<TenantId, Option<i64>>,
    /// Script compilations running at once (uploads, tests).
    compiles: tokio::sync::Semaphore,
}

/// How long a remembered key or quota is trusted. Changes made through this
/// node take effect at once; this bounds how long one made elsewhere (another
/// node, or the database edited by hand) goes unseen.
const RECENT_TTL: Duration = Duration::from_secs(10);

/// How long an unknown key is remembered as unknown, and how many are: a
/// key made through this node clears its entry, one made through another
/// node works after at most this long.
const MISS_TTL: Duration = Duration::from_secs(2);
const MAX_MISSES: usize = 10_000;

/// Answers remembered for a short while, at most `capacity` of them.
struct Recent<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::default() }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            // Expired entries first; if all are fresh (a flood), start over:
            // the cost is a few more lookups, never unbounded memory.
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    fn forget(&self, keep: impl Fn(&K, &V) -> bool) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, (_, v)| keep(k, v));
    }
}

/// Why an operation failed, for the API to map.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Script(#[from] LoadError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// How long an ingest request waits for room in the routing queue before
/// leaving its events to the recovery scan.
const ROUTE_QUEUE_WAIT: Duration = Duration::from_secs(2);

impl App {
    /// Wires the pipeline and starts its tasks: the router, the deliverer,
    /// the retry poller, the retention purge, and a scan that routes events
    /// accepted before a restart.
    pub async fn start(store: Store, sandbox: Arc<Sandbox>, limits: AppLimits) -> Result<Arc<Self>, StoreError> {
        let operator = store.operator_tenant().await?.ok_or_else(|| StoreError::Corrupt("no operator tenant: bootstrap first".into()))?;
        // Nothing of this node's is in flight before it starts.
        let released = store.release_leases().await?;
        if released > 0 {
            tracing::info!(released, "deliveries left in flight by the previous run are due again");
        }
        let configs = Arc::new(ConfigCache::new(
            store.clone(),
            sandbox.clone(),
            client::shared_client(&limits.destinations),
            limits.destinations.clone(),
        ));
        let deliverer = Deliverer::new(store.clone(), sandbox.clone(), configs.clone(), limits.delivery_concurrency);
        deliverer.start(limits.poll_interval);
        // Routing workers wait on the store as often as on the CPU: twice
        // as many as cores keeps both busy.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let router = Router::start(store.clone(), sandbox.clone(), configs.clone(), deliverer, workers);
        tokio::spawn(retention::run(store.clone(), limits.retention));

        let replayer = Replayer::new(store.clone(), configs.clone(), sandbox.clone());
        let app = Arc::new(Self {
            store,
            sandbox,
            configs,
            limits,
            operator,
            router,
            replayer,
            keys: Recent::new(RECENT_TTL, 100_000),
            misses: Recent::new(MISS_TTL, MAX_MISSES),
            quotas: Recent::new(RECENT_TTL, 100_000),
            compiles: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        });
        tokio::spawn(app.clone().route_unrouted());
        if let Some(changes) = app.store.watch().await? {
            tokio::spawn(app.clone().follow_changes(changes));
        }
        Ok(app)
    }

    /// Replays one event (see [`crate::pipeline::replay`]).
    pub async fn replay_event(&self, tenant: &TenantId, event_id: &str, only: Option<&ConfigId>) -> Result<Replayed, ReplayError> {
        self.replayer.replay_event(tenant, event_id, only).await
    }

    /// Recovers a configuration's failures over a window (see [`crate::pipeline::replay`]).
    pub async fn recover(&self, tenant: &TenantId, id: &ConfigId, request: RecoverRequest) -> Result<Recovered, ReplayError> {
        self.replayer.recover(tenant, id, request).await
    }

    /// Drops what this node cached of what other nodes change.
    async fn follow_changes(self: Arc<Self>, mut changes: mpsc::Receiver<store::Change>) {
        while let Some(change) = changes.recv().await {
            match change {
                store::Change::Config { tenant, id } => self.configs.invalidate(&tenant, Some(&id)),
                store::Change::Key { id } => self.keys.forget(|_, p| p.key != id),
                store::Change::Tenant { id } => self.quotas.forget(|t, _| *t != id),
                store::Change::Lost => {
                    self.configs.invalidate_all();
                    self.keys.forget(|_, _| false);
                    self.misses.forget(|_, _| false);
                    self.quotas.forget(|_, _| false);
                }
            }
        }
    }

    /// Routes events that were accepted but not routed: at start-up (the
    /// process died in between), then every half minute for events the
    /// live path left (a tenant's full routing queue, a failed write). A
    /// pass that found a tenant's queue full comes back sooner.
    async fn route_unrouted(self: Arc<Self>) {
        let mut before = i64::MAX;
        loop {
            let complete = self.route_unrouted_once(before).await;
            tokio::time::sleep(Duration::from_secs(if complete { 30 } else { 1 })).await;
            if complete {
                before = timestamp::now_ms() - 30_000;
            }
        }
    }

    /// One pass; `false` when a tenant's queue was full and some of its
    /// events were left for the next one.
    async fn route_unrouted_once(&self, received_before: i64) -> bool {
        let mut after = 0;
        let mut full = std::collections::HashSet::new();
        loop {
            match self.store.unrouted_events(after, received_before, 512).await {
                Ok(events) if events.is_empty() => return full.is_empty(),
                Ok(events) => {
                    for e in events {
                        after = e.seq;
                        if full.contains(&e.tenant_id) {
                            continue;
                        }
                        let tenant = e.tenant_id.clone();
                        let job = RouteJob { tenant: e.tenant_id, seq: e.seq, event: Arc::new(e.event) };
                        if self.router.queue(job, Duration::from_millis(100)).await.is_err() {
                            full.insert(tenant);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "scanning unrouted events failed");
                    return true;
                }
            }
        }
    }

    /// Who presents this key secret, if it is a live key.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, StoreError> {
        let hash = KeyHash::of(presented);
        if let Some(hit) = self.keys.get(&hash) {
            return Ok(Some(hit));
        }
        if self.misses.get(&hash).is_some() {
            return Ok(None);
        }
        let Some(key) = self.store.find_key(&hash).await? else {
            self.misses.put(hash, ());
            return Ok(None);
        };
        let principal = Principal { tenant: key.tenant_id, key: key.id, scopes: key.scopes };
        self.keys.put(hash, principal.clone());
        Ok(Some(principal))
    }

    /// Stores a new key; it works at once, even if its secret was tried
    /// (and remembered as unknown) just before.
    pub async fn create_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        let hash = key.hash.clone();
        let record = self.store.create_key(key).await?;
        self.misses.forget(|h, _| *h != hash);
        Ok(record)
    }

    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord, AppError> {
        let record = self.store.revoke_key(tenant, id).await?;
        self.keys.forget(|_, p| p.key != record.id);
        Ok(record)
    }

    async fn monthly_quota(&self, tenant: &TenantId) -> Result<Option<i64>, StoreError> {
        if let Some(hit) = self.quotas.get(tenant) {
            return Ok(hit);
        }
        let quota = self.store.get_tenant(tenant).await?.monthly_quota;
        self.quotas.put(tenant.clone(), quota);
        Ok(quota)
    }

    /// Stores a batch of validated events and queues the new ones for routing.
    pub async fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<Vec<Ingested>, AppError> {
        let quota = self.monthly_quota(tenant).await?;
        let kept: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
        let results = self.store.ingest(tenant, quota, events).await?;
        // The events are stored: from here nothing may fail the request. A
        // full routing queue of this tenant holds its answer back a little
        // (backpressure on its own posters), and past that the recovery
        // scan routes what is left.
        let mut left_for_scan = 0usize;
        for (event, result) in kept.into_iter().zip(&results) {
            if let Ingested::Stored { seq } = result {
                let job = RouteJob { tenant: tenant.clone(), seq: *seq, event };
                if left_for_scan > 0 || self.router.queue(job, ROUTE_QUEUE_WAIT).await.is_err() {
                    left_for_scan += 1;
                }
            }
        }
        if left_for_scan > 0 {
            tracing::warn!(events = left_for_scan, "routing queue full; events left for the recovery scan");
        }
        Ok(results)
    }

    pub async fn upload_script(&self, tenant: &TenantId, name: &str, bytes: &[u8]) -> Result<ScriptRecord, AppError> {
        let owned = bytes.to_vec();
        let (script, compiled) = self
            .compile(move |sandbox| {
                let script = sandbox.load(&owned)?;
                let compiled = script.compiled();
                Ok::<_, LoadError>((script, compiled))
            })
            .await?;
        let record = ScriptRecord {
            id: ScriptId::generate(),
            name: name.to_owned(),
            sha256: script.sha256().to_string(),
            size: bytes.len() as i64,
            wit_version: script.wit_version().to_owned(),
            created_at: timestamp::now_ms(),
        };
        self.store.insert_script(tenant, &record, bytes, compiled.as_deref()).await?;
        Ok(record)
    }

    /// Deletes a script, and its compiled code once no stored script (of
    /// any tenant: the cache is shared by content) has the same bytes.
    pub async fn delete_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<(), StoreError> {
        let record = self.store.get_script(tenant, id).await?;
        self.store.delete_script(tenant, id).await?;
        if !self.store.script_hash_used(&record.sha256).await?
            && let Some(sha256) = crate::sandbox::Sha256::parse(&record.sha256)
        {
            self.sandbox.forget(&sha256);
        }
        Ok(())
    }

    /// Runs a compilation on a blocking thread, a few at once: compiling
    /// takes seconds of CPU, which must neither stall the async workers
    /// (and every request they serve) nor pile up without bound.
    async fn compile<T: Send + 'static>(&self, work: impl FnOnce(&Sandbox) -> T + Send + 'static) -> T {
        let _permit = self.compiles.acquire().await.expect("the semaphore is never closed");
        let sandbox = self.sandbox.clone();
        match tokio::task::spawn_blocking(move || work(&sandbox)).await {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// A tenant's script, ready to run: from the cache, from the code the
    /// uploading node compiled, or compiled here from its bytes.
    pub async fn script(&self, tenant: &TenantId, id: &ScriptId) -> Result<Result<Arc<Script>, LoadError>, StoreError> {
        let code = self.store.script_code(tenant, id).await?;
        Ok(self.compile(move |sandbox| configs::load_code(sandbox, &code)).await)
    }

    pub async fn create_config(&self, tenant: &TenantId, input: ConfigInput) -> Result<(ConfigRecord, ExportConfig), AppError> {
        let spec = validate(input, None).await?;
        self.limits.destinations.validate_endpoint(&spec.endpoint)?;
        self.configs.check_client(&spec)?;
        let record = self.store.insert_config(tenant, &ConfigId::generate(), &write_of(&spec)).await?;
        self.configs.invalidate(tenant, Some(&record.id));
        Ok((record, spec))
    }

    pub async fn update_config(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: i64,
        input: ConfigInput,
    ) -> Result<(ConfigRecord, ExportConfig), AppError> {
        let current = self.store.get_config(tenant, id).await?;
        if current.version != expected {
            return Err(StoreError::StaleVersion { current: current.version }.into());
        }
        let previous = parse_spec(&current)?;
        let spec = validate(input, Some(previous)).await?;
        self.limits.destinations.validate_endpoint(&spec.endpoint)?;
        self.configs.check_client(&spec)?;
        let record = self.store.update_config(tenant, id, expected, &write_of(&spec)).await?;
        self.configs.invalidate(tenant, Some(id));
        Ok((record, spec))
    }

    /// Sends `event` (or a made-up one the configuration selects) to one
    /// configuration now, through its script, storing nothing: how an admin
    /// tries an endpoint. The configuration may be disabled.
    pub async fn test_send(&self, tenant: &TenantId, id: &ConfigId, event: Option<Event>) -> Result<TestSend, AppError> {
        let config = self.configs.get(tenant, id).await?;
        let event = Arc::new(event.unwrap_or_else(|| synthetic_event(&config.spec)));
        if !config.spec.selects(&event.event_type, &event.organization_unit) {
            return Ok(TestSend { event, decision: None, sent: None });
        }
        let (sandbox, routed, on) = (self.sandbox.clone(), event.clone(), config.clone());
        let decision = tokio::task::spawn_blocking(move || decide(&sandbox, &on, &routed, timestamp::now_ms(), Pause::Ignore))
            .await
            .map_err(|e| StoreError::Corrupt(format!("test send: {e}")))?;
        let sent = if decision.status == store::DeliveryStatus::Pending {
            let job = DeliveryJob {
                tenant: tenant.clone(),
                delivery: decision.id.clone(),
                config: config.id.clone(),
                event: event.clone(),
                body: decision.body.clone(),
                headers: decision.headers.clone(),
                attempt: 1,
                undecided: false,
            };
            Some(client::send_once(&config.spec, &config.client, &job).await)
        } else {
            None
        };
        Ok(TestSend { event, decision: Some(decision), sent })
    }

    /// Makes `secret` (or a new one) the configuration's signing secret; the
    /// replaced one keeps signing for `grace`.
    pub async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        secret: Option<SigningSecret>,
        grace: Duration,
    ) -> Result<(ConfigRecord, ExportConfig), AppError> {
        let current = self.store.get_config(tenant, id).await?;
        if expected.is_some_and(|v| v != current.version) {
            return Err(StoreError::StaleVersion { current: current.version }.into());
        }
        let mut spec = parse_spec(&current)?;
        spec.signing.rotate(secret.unwrap_or_else(SigningSecret::generate), grace, timestamp::now_ms());
        let record = self.store.update_config(tenant, id, current.version, &write_of(&spec)).await?;
        self.configs.invalidate(tenant, Some(id));
        Ok((record, spec))
    }

    pub async fn set_enabled(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        enabled: bool,
    ) -> Result<ConfigRecord, AppError> {
        let record = self.store.set_config_enabled(tenant, id, expected, enabled, Some("disabled by an admin")).await?;
        self.configs.invalidate(tenant, Some(id));
        Ok(record)
    }

    pub async fn delete_config(&self, tenant: &TenantId, id: &ConfigId, expected: Option<i64>) -> Result<(), AppError> {
        self.store.delete_config(tenant, id, expected).await?;
        self.configs.invalidate(tenant, Some(id));
        Ok(())
    }
}

/// What a test send did: the script's decision (`None`: the configuration
/// does not select the event) and the request, when there was one.
pub struct TestSend {
    pub event: Arc<Event>,
    pub decision: Option<store::NewDelivery>,
    pub sent: Option<client::Sent>,
}

/// An event the configuration selects: its first type (`order.*` gives
/// `order.test`), its first included organization unit.
fn synthetic_event(spec: &ExportConfig) -> Event {
    use crate::model::event::{EventId, EventType, OrgUnit};
    use crate::model::export::TypePattern;
    let event_type = match spec.event_types.first() {
        Some(TypePattern::Exact(t)) => t.clone(),
        Some(TypePattern::Prefix(p)) => EventType::parse(&format!("{p}test")).unwrap_or_else(|_| fallback_type()),
        Some(TypePattern::All) | None => fallback_type(),
    };
    let organization_unit =
        spec.organization_units.include.first().cloned().unwrap_or_else(|| OrgUnit::parse("test").expect("a valid literal unit"));
    Event {
        id: EventId::parse(&format!("test_{}", uuid::Uuid::now_v7().simple())).expect("a valid generated id"),
        event_type,
        organization_unit,
        occurred_at: time::OffsetDateTime::now_utc(),
        source: None,
        related: Vec::new(),
        payload: serde_json::value::RawValue::from_string(r#"{"test":true}"#.to_owned()).expect("valid JSON"),
    }
}

fn fallback_type() -> crate::model::event::EventType {
    crate::model::event::EventType::parse("sluice.test").expect("a valid literal type")
}

/// Validates a configuration on a blocking thread: unlocking a PKCS#12
/// client certificate and checking it can take a good part of a second.
async fn validate(input: ConfigInput, previous: Option<ExportConfig>) -> Result<ExportConfig, AppError> {
    tokio::task::spawn_blocking(move || input.validate(previous.as_ref()))
        .await
        .map_err(|e| StoreError::Corrupt(format!("validating a configuration: {e}")))?
        .map_err(AppError::from)
}

pub fn parse_spec(record: &ConfigRecord) -> Result<ExportConfig, StoreError> {
    serde_json::from_str(&record.spec).map_err(|e| StoreError::Corrupt(format!("configuration {}: {e}", record.id)))
}

fn write_of(spec: &ExportConfig) -> ConfigWrite {
    ConfigWrite {
        name: spec.name.clone(),
        script_id: spec.script.as_ref().map(|s| s.id.clone()),
        // Serializing plain data with string keys cannot fail.
        spec: serde_json::to_string(spec).expect("configuration serializes"),
    }
}

/// What the API reads, each a tenant's own rows (tenants: the operator's),
/// as the store keeps them. The API reaches the store only through these.
impl App {
    /// The limits this node was started with.
    pub fn limits(&self) -> &AppLimits {
        &self.limits
    }

    /// Largest script upload, in bytes.
    pub fn max_script_bytes(&self) -> usize {
        self.sandbox.max_script_bytes()
    }

    /// Whether `tenant` is the operator's, whose admins manage tenants.
    pub fn is_operator(&self, tenant: &TenantId) -> bool {
        *tenant == self.operator
    }

    /// Whether the store answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.tenant_count().await.map(drop)
    }

    /// Runs `script` on `event` once (on a blocking thread: a script may
    /// use its whole budget), recording nothing.
    pub async fn run_script(&self, script: Arc<Script>, params: Arc<Params>, event: Event) -> Result<Outcome, tokio::task::JoinError> {
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.run(&script, &params, &event)).await
    }

    pub async fn list_scripts(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ScriptRecord>, StoreError> {
        self.store.list_scripts(tenant, page).await
    }

    pub async fn get_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptRecord, StoreError> {
        self.store.get_script(tenant, id).await
    }

    pub async fn list_configs(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ConfigRecord>, StoreError> {
        self.store.list_configs(tenant, page).await
    }

    pub async fn get_config(&self, tenant: &TenantId, id: &ConfigId) -> Result<ConfigRecord, StoreError> {
        self.store.get_config(tenant, id).await
    }

    pub async fn list_event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeRecord>, StoreError> {
        self.store.list_event_types(tenant).await
    }

    pub async fn put_event_type(&self, tenant: &TenantId, name: &str, description: Option<&str>) -> Result<EventTypeRecord, StoreError> {
        self.store.put_event_type(tenant, name, description).await
    }

    pub async fn list_events(&self, tenant: &TenantId, filter: &EventFilter, page: &PageRequest) -> Result<Page<EventRecord>, StoreError> {
        self.store.list_events(tenant, filter, page).await
    }

    /// An event with its deliveries, oldest first.
    pub async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<(EventRecord, Vec<DeliveryRecord>), StoreError> {
        let event = self.store.get_event(tenant, id).await?;
        let deliveries = self.store.deliveries_of_event(tenant, event.seq).await?;
        Ok((event, deliveries))
    }

    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<DeliveryRecord>, StoreError> {
        self.store.list_deliveries(tenant, filter, page).await
    }

    pub async fn get_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<DeliveryRecord, StoreError> {
        self.store.get_delivery(tenant, id).await
    }

    pub async fn list_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> Result<Page<AttemptRecord>, StoreError> {
        self.store.list_attempts(tenant, filter, page).await
    }

    pub async fn get_attempt(&self, tenant: &TenantId, id: &AttemptId) -> Result<AttemptRecord, StoreError> {
        self.store.get_attempt(tenant, id).await
    }

    pub async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<KeyRecord>, StoreError> {
        self.store.list_keys(tenant, page).await
    }

    pub async fn create_tenant(&self, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord, StoreError> {
        self.store.create_tenant(name, monthly_quota).await
    }

    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<TenantRecord>, StoreError> {
        self.store.list_tenants(page).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_answers_stay_within_their_capacity_and_expire() {
        let misses: Recent<u32, ()> = Recent::new(Duration::from_secs(60), 100);
        for k in 0..10_000 {
            misses.put(k, ());
            assert!(misses.entries.lock().unwrap().len() <= 100, "after {k}");
        }
        assert!(misses.get(&9_999).is_some(), "the newest answer is kept");
        misses.forget(|k, _| *k != 9_999);
        assert!(misses.get(&9_999).is_none(), "a new key clears its miss");

        let short: Recent<u32, ()> = Recent::new(Duration::from_millis(20), 2);
        short.put(1, ());
        short.put(2, ());
        std::thread::sleep(Duration::from_millis(30));
        assert!(short.get(&1).is_none(), "expired");
        short.put(3, ());
        assert_eq!(short.entries.lock().unwrap().len(), 1, "expired entries make room first");
    }
}
