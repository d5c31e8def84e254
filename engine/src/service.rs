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

use crate::model::auth::{KeyHash, KeySecret, PortalToken, Principal, Scope};
use crate::model::event::Event;
use crate::model::export::{ConfigError, ConfigInput, ExportConfig, SigningSecret};
use crate::model::ids::{AttemptId, ConfigId, DeliveryId, KeyId, PortalLinkId, ScriptId, TenantId};
use crate::model::timestamp;
use crate::pipeline::client;
use crate::pipeline::configs::{self, ConfigCache};
use crate::pipeline::decide::{Pause, decide};
use crate::pipeline::deliver::Deliverer;
use crate::pipeline::destination::DestinationPolicy;
use crate::pipeline::explain::{ExplainError, Explained, Ran, Verdict, decide_again};
use crate::pipeline::job::DeliveryJob;
use crate::pipeline::notice::{Notice, Notices};
use crate::pipeline::preview::{Item, Previewer, Side, Window};
use crate::pipeline::replay::{RecoverRequest, Recovered, ReplayError, Replayed, Replayer};
use crate::pipeline::retention::{self, Retention};
use crate::pipeline::route::{Claim, RouteJob, Router};
use crate::sandbox::{LoadError, Sandbox, Script};
use crate::sandbox::{Outcome, Params};
use crate::store::{self, ConfigWrite, Store};
use crate::telemetry::{self, streak::Streak, traces};
// The store's vocabulary the API speaks through this door.
pub use crate::store::{
    AttemptFilter, AttemptRecord, CatcherRecord, Caught, ConfigRecord, ConfigStats, DeliveryCounts, DeliveryFilter, DeliveryRecord,
    DeliveryStatus, EventFilter, EventRecord, EventStatus, EventTypeRecord, Ingested, KeyRecord, NewKey, Page, PageRequest, STATS_BOUND,
    ScriptRecord, StoreError, TenantRecord,
};

/// What a portal link is asked for.
#[derive(Debug, Clone)]
pub struct PortalLinkRequest {
    pub scopes: Vec<Scope>,
    /// How long the link may be opened.
    pub valid_for: Duration,
    /// How long the console session it opens lasts.
    pub session_for: Duration,
}

/// A portal link just made, with its token: the only time it is known.
#[derive(Debug)]
pub struct PortalLink {
    pub id: PortalLinkId,
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    pub token: PortalToken,
    pub expires_at: i64,
    pub session_for: Duration,
}

/// What a hosted catcher is asked to answer.
#[derive(Debug, Clone)]
pub struct CatcherRequest {
    pub name: String,
    pub answer_status: u16,
    pub answer_body: String,
}

/// A request a hosted catcher received, its signature checked against the
/// tenant's configurations' signing secrets.
#[derive(Debug)]
pub struct CheckedCatch {
    pub caught: store::Caught,
    pub signature: SignatureCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No signature header.
    Unsigned,
    /// Made with this configuration's current or previous secret.
    Valid { configuration: ConfigId, name: String },
    /// Signed, but by none of the tenant's configurations (or too old).
    Invalid { reason: String },
    /// Not checked: only the first part of the body was kept.
    NotChecked { reason: String },
}

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
    /// Most stored events one script preview runs on.
    pub preview_max_events: usize,

    /// How long stored events and payloads are kept, and how often the
    /// purge runs.
    pub retention: Retention,
    /// Which reserved address ranges endpoints may reach (none by default).
    pub destinations: Arc<DestinationPolicy>,
    /// Where the engine is reached from outside (portal links' URLs, the
    /// console's `Secure` cookies); `None`: the `Host` a caller used, over
    /// plain HTTP.
    pub public_url: Option<String>,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 500,
            delivery_concurrency: 512,
            poll_interval: Duration::from_millis(250),
            preview_max_events: 10_000,

            retention: Retention::default(),
            destinations: Arc::default(),
            public_url: None,
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
    deliverer: Arc<Deliverer>,
    replayer: Replayer,
    previewer: Arc<Previewer>,
    /// Live keys by hash, and tenants' quotas: read on every request.
    keys: Recent<KeyHash, (Principal, Option<i64>)>,
    /// Hashes no live key has, so that a client retrying a wrong or revoked
    /// key (or a flood of random ones) does not reach the database each time.
    misses: Recent<KeyHash, ()>,
    quotas: Recent<TenantId, Option<i64>>,
    /// Script compilations running at once (uploads, tests).
    compiles: tokio::sync::Semaphore,
    /// Raises the tenants' operational notices.
    notices: Notices,
    /// Per tenant, the month and the highest share of its quota told.
    quota_told: Mutex<HashMap<TenantId, (String, u8)>>,
    /// Client certificates told of (configuration, expiry).
    certificates_told: Mutex<std::collections::HashSet<(ConfigId, i64)>>,
}

/// How often every client certificate's expiry is checked.
const CERTIFICATE_CHECK_EVERY: Duration = Duration::from_secs(3600);

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
    #[error(transparent)]
    Explain(#[from] ExplainError),
    #[error(transparent)]
    Preview(#[from] PreviewError),
}

/// Why a preview cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("a preview of this tenant is running; wait for it to end")]
    Running,
    #[error("no such script in this tenant: {0}")]
    UnknownScript(ScriptId),
}

impl PreviewError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Running => "preview_running",
            Self::UnknownScript(_) => "unknown_script",
        }
    }
}

/// What a preview runs instead of the configuration's script: another
/// version, other parameters, or both (what is not given stays).
#[derive(Debug, Default)]
pub struct Candidate {
    pub script: Option<ScriptId>,
    pub params: Option<Params>,
}

/// How long an ingest request waits for room in the routing queue before
/// leaving its events to the recovery scan.
const ROUTE_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How often a node tells the others it is alive (PostgreSQL).
const HEARTBEAT: Duration = Duration::from_secs(5);

impl App {
    /// Wires the pipeline and starts its tasks: the router, the deliverer,
    /// the retry poller, the retention purge, and a scan that routes events
    /// accepted before a restart.
    pub async fn start(store: Store, sandbox: Arc<Sandbox>, limits: AppLimits) -> Result<Arc<Self>, StoreError> {
        let operator = store.operator_tenant().await?.ok_or_else(|| StoreError::Corrupt("no operator tenant: bootstrap first".into()))?;
        record_script_history(&store).await?;
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
        let (notices, raised) = Notices::channel();
        let deliverer = Deliverer::new(store.clone(), sandbox.clone(), configs.clone(), limits.delivery_concurrency, notices.clone());
        deliverer.start(limits.poll_interval);
        // Routing workers wait on the store as often as on the CPU: twice
        // as many as cores keeps both busy.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let router = Router::start(store.clone(), sandbox.clone(), configs.clone(), deliverer.clone(), workers);
        tokio::spawn(retention::run(store.clone(), limits.retention));

        let replayer = Replayer::new(store.clone(), configs.clone(), sandbox.clone());
        let routing = router.clone();
        let previewer = Previewer::start(sandbox.clone(), Arc::new(move || routing.busy()))
            .map_err(|e| StoreError::Setup(format!("cannot start the preview thread: {e}")))?;
        let app = Arc::new(Self {
            store,
            sandbox,
            configs,
            limits,
            operator,
            router,
            deliverer,
            replayer,
            previewer,
            keys: Recent::new(RECENT_TTL, 100_000),
            misses: Recent::new(MISS_TTL, MAX_MISSES),
            quotas: Recent::new(RECENT_TTL, 100_000),
            compiles: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            notices,
            quota_told: Mutex::default(),
            certificates_told: Mutex::default(),
        });
        tokio::spawn(app.clone().route_unrouted());
        if app.store.has_peers() {
            tokio::spawn(app.clone().keep_alive());
        }
        tokio::spawn(app.clone().store_notices(raised));
        tokio::spawn(app.clone().watch_certificates());
        if let Some(changes) = app.store.watch().await? {
            tokio::spawn(app.clone().follow_changes(changes));
        }
        Ok(app)
    }

    /// Starts a preview of `candidate` against the configuration's script
    /// over `window` (see [`crate::pipeline::preview`]); its items arrive on
    /// the receiver, the summary last. One per tenant at a time.
    pub async fn preview(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        candidate: Candidate,
        window: Window,
    ) -> Result<mpsc::Receiver<Item>, AppError> {
        let config = self.configs.get(tenant, id).await?;
        let script = match candidate.script {
            None => config.script.clone(),
            Some(script_id) => Some(match self.script(tenant, &script_id).await {
                Ok(loaded) => loaded.map_err(|e| e.to_string()),
                Err(StoreError::NotFound) => return Err(PreviewError::UnknownScript(script_id).into()),
                Err(e) => return Err(e.into()),
            }),
        };
        let params = candidate.params.map(Arc::new).unwrap_or_else(|| config.params.clone());
        let turn = self.previewer.turn(tenant).ok_or(PreviewError::Running)?;
        let (out, items) = mpsc::channel(64);
        self.previewer.run(turn, self.store.clone(), config, Side { script, params }, window, self.limits.preview_max_events, out);
        Ok(items)
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
                store::Change::Key { id } => self.keys.forget(|_, (p, _)| p.key != id),
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
    /// live path left (a tenant's full routing queue, a failed write) and
    /// another node's whose claim ran out (it died before writing all
    /// their rows). Those this node still holds, the router leaves alone. A
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

    /// Every [`HEARTBEAT`], says this node is alive, and releases what
    /// nodes silent for [`store::NODE_SILENT_MS`] held, so that their events
    /// and deliveries are taken over within a minute or so rather than when
    /// their claims run out. It judges others only once its own heartbeats
    /// have gone through for longer than that: after an outage of the
    /// database, every node that is alive has spoken again by then.
    async fn keep_alive(self: Arc<Self>) {
        let judge_after = Duration::from_millis(store::NODE_SILENT_MS as u64) + HEARTBEAT;
        let mut healthy_since: Option<std::time::Instant> = None;
        let mut failing = Streak::default();
        loop {
            let judge = healthy_since.is_some_and(|since| since.elapsed() >= judge_after);
            match self.store.keep_alive(judge).await {
                Ok(silent) => {
                    if let Some(failures) = failing.succeeded() {
                        tracing::info!(failures, "telling the other nodes this one is alive works again");
                    }
                    healthy_since.get_or_insert_with(std::time::Instant::now);
                    for node in silent {
                        tracing::warn!(node, "a node was silent too long; its events and deliveries are taken over");
                    }
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    healthy_since = None;
                    if let Some(failures) = failing.failed() {
                        tracing::warn!(error = %e, failures, "telling the other nodes this one is alive failed; logged ever more rarely");
                    }
                }
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }

    /// One pass; `false` when a tenant's queue was full and some of its
    /// events were left for the next one.
    async fn route_unrouted_once(&self, received_before: i64) -> bool {
        let mut after = 0;
        let mut full = std::collections::HashSet::new();
        loop {
            match self.store.unrouted_events(after, received_before, timestamp::now_ms(), 512).await {
                Ok(events) if events.is_empty() => return full.is_empty(),
                Ok(events) => {
                    for e in events {
                        after = e.seq;
                        if full.contains(&e.tenant_id) {
                            continue;
                        }
                        let tenant = e.tenant_id.clone();
                        let job = RouteJob { tenant: e.tenant_id, seq: e.seq, event: Arc::new(e.event), claim: None };
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
        if let Some((principal, expires_at)) = self.keys.get(&hash) {
            return Ok(expires_at.is_none_or(|at| at > timestamp::now_ms()).then_some(principal));
        }
        if self.misses.get(&hash).is_some() {
            return Ok(None);
        }
        let Some(key) = self.store.find_key(&hash).await? else {
            self.misses.put(hash, ());
            return Ok(None);
        };
        let principal = Principal { tenant: key.tenant_id, key: key.id, scopes: key.scopes };
        self.keys.put(hash, (principal.clone(), key.expires_at));
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

    /// Makes a single-use portal link into `tenant` for `scopes`; the token
    /// is returned once and only its hash is stored.
    pub async fn create_portal_link(&self, by: &Principal, tenant: TenantId, link: PortalLinkRequest) -> Result<PortalLink, StoreError> {
        let token = PortalToken::generate();
        let expires_at = timestamp::now_ms() + link.valid_for.as_millis() as i64;
        let id = PortalLinkId::generate();
        self.store
            .create_portal_link(store::NewPortalLink {
                id: id.clone(),
                tenant_id: tenant.clone(),
                hash: token.hash(),
                scopes: link.scopes.clone(),
                session_ms: link.session_for.as_millis() as i64,
                expires_at,
                created_by: Some(by.key.clone()),
            })
            .await?;
        Ok(PortalLink { id, tenant, scopes: link.scopes, token, expires_at, session_for: link.session_for })
    }

    /// Spends a portal link: a new key for the console session it opens,
    /// expiring with the session. `None` for an unknown, used or expired link.
    pub async fn redeem_portal_link(&self, token: &str) -> Result<Option<(KeySecret, KeyRecord)>, StoreError> {
        let secret = KeySecret::generate();
        let session = store::SessionKey { id: KeyId::generate(), prefix: secret.display_prefix(), hash: secret.hash() };
        match self.store.redeem_portal_link(&KeyHash::of(token), session).await {
            Ok(record) => {
                let hash = secret.hash();
                self.misses.forget(|h, _| *h != hash);
                Ok(Some((secret, record)))
            }
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes a hosted catcher; its URL's token is returned once.
    pub async fn create_catcher(&self, tenant: &TenantId, request: CatcherRequest) -> Result<(store::CatcherRecord, String), StoreError> {
        let token = format!("{}{}", crate::pipeline::catcher::TOKEN_PREFIX, crate::model::auth::random_token(24));
        let record = store::CatcherRecord {
            id: crate::model::ids::CatcherId::generate(),
            tenant_id: tenant.clone(),
            name: request.name,
            answer_status: i64::from(request.answer_status),
            answer_body: request.answer_body,
            created_at: timestamp::now_ms(),
        };
        let record = self.store.create_catcher(record, KeyHash::of(&token)).await?;
        Ok((record, token))
    }

    pub async fn list_catchers(&self, tenant: &TenantId) -> Result<Vec<store::CatcherRecord>, StoreError> {
        self.store.list_catchers(tenant).await
    }

    pub async fn delete_catcher(&self, tenant: &TenantId, id: &crate::model::ids::CatcherId) -> Result<(), StoreError> {
        self.store.delete_catcher(tenant, id).await
    }

    /// Records a request to the catcher with `token`; its answer, or `None`
    /// for no such catcher.
    pub async fn catch(&self, token: &str, caught: store::Caught) -> Result<Option<store::CatcherRecord>, StoreError> {
        self.store.catch(&KeyHash::of(token), caught).await
    }

    /// A catcher's requests, newest first, each signature checked against
    /// the secrets (current and previous) of the tenant's configurations.
    pub async fn caught(&self, tenant: &TenantId, id: &crate::model::ids::CatcherId) -> Result<Vec<CheckedCatch>, StoreError> {
        let caught = self.store.caught(tenant, id).await?;
        let configs = self.store.list_configs(tenant, &PageRequest { limit: 500, cursor: None }).await?.items;
        let mut signers = Vec::with_capacity(configs.len());
        for record in &configs {
            let Ok(spec) = parse_spec(record) else { continue };
            let mut secrets = vec![(spec.signing.secret.clone(), i64::MAX)];
            if let Some(previous) = &spec.signing.previous {
                secrets.push((previous.secret.clone(), previous.expires_at));
            }
            signers.push((record.id.clone(), spec.name.clone(), secrets));
        }
        Ok(caught.into_iter().map(|caught| CheckedCatch { signature: check_signature(&caught, &signers), caught }).collect())
    }

    /// Seals a console session's cookie (see [`Store::seal_session`]).
    pub fn seal_session(&self, plain: &[u8]) -> String {
        self.store.seal_session(plain)
    }
    pub fn open_session(&self, sealed: &str) -> Option<Vec<u8>> {
        self.store.open_session(sealed)
    }

    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord, AppError> {
        let record = self.store.revoke_key(tenant, id).await?;
        self.keys.forget(|_, (p, _)| p.key != record.id);
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
        let stored = self.store_and_route(tenant, quota, events).await;
        if let Some(quota) = quota {
            self.tell_quota(tenant, quota, &stored).await;
        }
        stored
    }

    /// Tells the tenant when this month's events reach 80 % and 100 % of
    /// its quota (a refusal counts as 100 %): once a month each from this
    /// node, and the notice's id makes it once from all.
    async fn tell_quota(&self, tenant: &TenantId, quota: i64, stored: &Result<Vec<Ingested>, AppError>) {
        let refused = matches!(stored, Err(AppError::Store(StoreError::QuotaExceeded { .. })));
        let counted = matches!(stored, Ok(results) if results.iter().any(|r| matches!(r, Ingested::Stored { .. })));
        if !refused && !counted {
            return;
        }
        let Ok((used, month)) = self.store.monthly_usage(tenant).await else { return };
        for percent in [80u8, 100] {
            let reached = refused && percent == 100 || used.saturating_mul(100) >= quota.saturating_mul(i64::from(percent));
            if !reached {
                continue;
            }
            let mut told = self.quota_told.lock().unwrap_or_else(|e| e.into_inner());
            let entry = told.entry(tenant.clone()).or_insert_with(|| (month.clone(), 0));
            if entry.0 != month {
                *entry = (month.clone(), 0);
            }
            if entry.1 < percent {
                entry.1 = percent;
                self.notices.quota_reached(tenant, &month, percent, used, quota);
            }
        }
    }

    /// Stores the operational notices the pipeline raises in their
    /// tenants' streams, where configurations selecting `sluice.*` types
    /// deliver them: only those some enabled configuration of the tenant
    /// selects (a tenant that asked for none gets none in its events).
    /// Never refused by the quota, nor counted in it.
    async fn store_notices(self: Arc<Self>, mut raised: mpsc::Receiver<Notice>) {
        while let Some(Notice { tenant, event }) = raised.recv().await {
            let wanted = match self.configs.enabled(&tenant).await {
                Ok(configs) => configs.iter().any(|c| c.spec.selects(&event.event_type, &event.organization_unit)),
                Err(_) => true,
            };
            if !wanted {
                continue;
            }
            let (id, event_type) = (event.id.clone(), event.event_type.clone());
            if let Err(e) = self.store_and_route(&tenant, None, vec![event]).await {
                tracing::warn!(%tenant, event = %id, event_type = event_type.as_str(), error = %e, "a notice could not be stored");
            }
        }
    }

    /// Tells the tenant when a configuration's client certificate expires
    /// within 30 days: when it is saved so, and as time brings it there
    /// ([`Self::watch_certificates`]). Once per certificate from this node;
    /// the notice's id makes it once from all.
    fn tell_certificate(&self, tenant: &TenantId, id: &ConfigId, spec: &ExportConfig) {
        let Some((true, expires_at)) = spec.authorization.certificate_expiring(time::OffsetDateTime::now_utc()) else { return };
        let told = (id.clone(), expires_at.unix_timestamp());
        if self.certificates_told.lock().unwrap_or_else(|e| e.into_inner()).insert(told) {
            self.notices.certificate_expiring(tenant, id, &spec.name, expires_at);
        }
    }

    /// Every hour, every configuration's client certificate checked.
    async fn watch_certificates(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CERTIFICATE_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut after = String::new();
            loop {
                let page = match self.store.all_configs_after(&after, 256).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "checking client certificates' expiry failed; next hour again");
                        break;
                    }
                };
                let Some(last) = page.last() else { break };
                after = last.id.as_str().to_owned();
                for record in &page {
                    if let Ok(spec) = parse_spec(record) {
                        self.tell_certificate(&record.tenant_id, &record.id, &spec);
                    }
                }
            }
        }
    }

    async fn store_and_route(&self, tenant: &TenantId, quota: Option<i64>, events: Vec<Event>) -> Result<Vec<Ingested>, AppError> {
        let started = std::time::SystemTime::now();
        // Read before the store writes the claim: its time is judged short,
        // and if the epoch ends meanwhile the claim counts as ended (the
        // event is routed resumed, nothing handed on). The epoch confirmed
        // live first if the node was out of touch: claims taken in an epoch
        // that ended while it was would all be routed late, and sent twice.
        let epoch = self.store.live_epoch().await?;
        let claim = Claim { at: timestamp::now_ms(), epoch };
        let kept: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
        let results = self.store.ingest(tenant, quota, events).await?;
        let stored = std::time::SystemTime::now();
        for (event, _) in kept.iter().zip(&results).filter(|(_, r)| matches!(r, Ingested::Stored { .. })) {
            traces::ingest(tenant.as_str(), event.id.as_str(), event.event_type.as_str(), (started, stored));
        }
        // The events are stored: from here nothing may fail the request. A
        // full routing queue of this tenant holds its answer back a little
        // (backpressure on its own posters), and past that the recovery
        // scan routes what is left.
        let mut left_for_scan = 0usize;
        for (event, result) in kept.into_iter().zip(&results) {
            if let Ingested::Stored { seq } = result {
                let job = RouteJob { tenant: tenant.clone(), seq: *seq, event, claim: Some(claim) };
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

    /// Stores a script as the next version of `name` in the uploader's tenant.
    pub async fn upload_script(&self, by: &Principal, name: &str, bytes: &[u8]) -> Result<ScriptRecord, AppError> {
        let owned = bytes.to_vec();
        let (script, compiled) = self
            .compile(move |sandbox| {
                let script = sandbox.load(&owned)?;
                let compiled = script.compiled();
                Ok::<_, LoadError>((script, compiled))
            })
            .await?;
        let mut record = ScriptRecord {
            id: ScriptId::generate(),
            name: name.to_owned(),
            version: 0,
            sha256: script.sha256().to_string(),
            size: bytes.len() as i64,
            wit_version: script.wit_version().to_owned(),
            created_at: timestamp::now_ms(),
            created_by: Some(by.key.clone()),
        };
        record.version = self.store.insert_script(&by.tenant, &record, bytes, compiled.as_deref()).await?;
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

    pub async fn create_config(&self, by: &Principal, input: ConfigInput) -> Result<(ConfigRecord, ExportConfig), AppError> {
        let tenant = &by.tenant;
        let spec = validate(input, None).await?;
        self.limits.destinations.validate_endpoint(&spec.endpoint)?;
        self.configs.check_client(&spec)?;
        let record = self.store.insert_config(tenant, &ConfigId::generate(), &write_of(&spec, Some(&by.key))).await?;
        self.configs.invalidate(tenant, Some(&record.id));
        self.tell_certificate(tenant, &record.id, &spec);
        Ok((record, spec))
    }

    pub async fn update_config(
        &self,
        by: &Principal,
        id: &ConfigId,
        expected: i64,
        input: ConfigInput,
    ) -> Result<(ConfigRecord, ExportConfig), AppError> {
        let tenant = &by.tenant;
        let current = self.store.get_config(tenant, id).await?;
        if current.version != expected {
            return Err(StoreError::StaleVersion { current: current.version }.into());
        }
        let previous = parse_spec(&current)?;
        let spec = validate(input, Some(previous)).await?;
        self.limits.destinations.validate_endpoint(&spec.endpoint)?;
        self.configs.check_client(&spec)?;
        let record = self.store.update_config(tenant, id, expected, &write_of(&spec, Some(&by.key))).await?;
        self.configs.invalidate(tenant, Some(id));
        self.tell_certificate(tenant, id, &spec);
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
                unwritten: None,
                hold: None,
            };
            Some(config.send(&self.store, &job).await)
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
        let record = self.store.update_config(tenant, id, current.version, &write_of(&spec, None)).await?;
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
/// A configuration that may have signed a request: its id, name, and
/// secrets with the time each stops signing (Unix ms).
type Signer = (ConfigId, String, Vec<(SigningSecret, i64)>);

/// Which configuration, if any, signed a caught request.
fn check_signature(caught: &store::Caught, signers: &[Signer]) -> SignatureCheck {
    use crate::tools::catch::{Verdict, verify};
    if caught.body_size > caught.body.len() as i64 {
        return SignatureCheck::NotChecked {
            reason: format!("only the first {} of its {} body bytes were kept", caught.body.len(), caught.body_size),
        };
    }
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&caught.headers).unwrap_or_default();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in &map {
        if let (Ok(name), Ok(value)) = (axum::http::HeaderName::try_from(name.as_str()), axum::http::HeaderValue::try_from(value.as_str()))
        {
            headers.insert(name, value);
        }
    }
    let now = caught.received_at / 1000;
    let mut last = None;
    for (id, name, secrets) in signers {
        let live: Vec<SigningSecret> = secrets.iter().filter(|(_, until)| *until > caught.received_at).map(|(s, _)| s.clone()).collect();
        let found = verify(&headers, &caught.body, &live, now);
        match found.standard_webhooks.or(found.x_signature) {
            None => return SignatureCheck::Unsigned,
            Some(Verdict::Valid { .. }) => return SignatureCheck::Valid { configuration: id.clone(), name: name.clone() },
            Some(Verdict::Invalid(why)) => last = Some(why.to_string()),
            Some(Verdict::NotChecked) => {}
        }
    }
    match last {
        Some(reason) => SignatureCheck::Invalid { reason },
        None if headers.contains_key("webhook-signature") || headers.contains_key("x-signature") => {
            SignatureCheck::Invalid { reason: "no configuration of this tenant has a secret that makes it".into() }
        }
        None => SignatureCheck::Unsigned,
    }
}

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

/// Gives configurations stored before their script history was kept a
/// first record, at their current version: decisions made from then on
/// can be explained.
async fn record_script_history(store: &Store) -> Result<(), StoreError> {
    let mut after = String::new();
    loop {
        let page = store.configs_without_script_history(&after, 256).await?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        after = last.as_str().to_owned();
        for (id, record) in page {
            match record.and_then(|record| Ok((parse_spec(&record)?, record))) {
                Ok((spec, record)) => {
                    store.record_config_script(&record.tenant_id, &id, record.version, &write_of(&spec, None)).await?;
                }
                Err(e) => tracing::warn!(configuration = %id, error = %e, "cannot record the script of a configuration"),
            }
        }
    }
}

pub fn parse_spec(record: &ConfigRecord) -> Result<ExportConfig, StoreError> {
    serde_json::from_str(&record.spec).map_err(|e| StoreError::Corrupt(format!("configuration {}: {e}", record.id)))
}

fn write_of(spec: &ExportConfig, by: Option<&KeyId>) -> ConfigWrite {
    let params = spec.script.as_ref().map(|s| s.params.clone()).unwrap_or_default();
    ConfigWrite {
        name: spec.name.clone(),
        script_id: spec.script.as_ref().map(|s| s.id.clone()),
        // Serializing plain data with string keys cannot fail.
        script_params: serde_json::to_string(&params).expect("parameters serialize"),
        spec: serde_json::to_string(spec).expect("configuration serializes"),
        changed_by: by.cloned(),
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
    /// The metrics in the Prometheus text format, the gauges read now;
    /// `None` when this process records no metrics.
    pub async fn metrics(&self) -> Result<Option<String>, StoreError> {
        let backlog = self.store.backlog().await?;
        let load = self.deliverer.load();
        telemetry::set_gauges(&telemetry::Snapshot {
            in_flight: load.in_flight,
            pending: backlog.pending,
            oldest_pending_ms: backlog.oldest_pending_at.map_or(0, |at| timestamp::now_ms() - at),
            configurations_enabled: backlog.configurations_enabled,
            configurations_disabled: backlog.configurations_disabled,
            breakers_open: load.breakers_open,
            routing_queue: self.router.queued(),
            delivery_queue: load.queued,
        });
        Ok(telemetry::render())
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.tenant_count().await.map(drop)
    }

    /// Runs `script` on `event` once (on a blocking thread: a script may
    /// use its whole budget), recording nothing.
    pub async fn run_script(&self, script: Arc<Script>, params: Arc<Params>, event: Event) -> Result<Outcome, tokio::task::JoinError> {
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.run(&script, &params, &event)).await
    }

    pub async fn list_scripts(&self, tenant: &TenantId, name: Option<&str>, page: &PageRequest) -> Result<Page<ScriptRecord>, StoreError> {
        self.store.list_scripts(tenant, name, page).await
    }

    pub async fn get_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptRecord, StoreError> {
        self.store.get_script(tenant, id).await
    }

    pub async fn list_configs(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ConfigRecord>, StoreError> {
        self.store.list_configs(tenant, page).await
    }

    /// A configuration's script history, newest first (`NotFound` for
    /// another tenant's or an unknown configuration without history).
    pub async fn config_scripts(&self, tenant: &TenantId, id: &ConfigId) -> Result<Vec<store::ConfigScriptRecord>, StoreError> {
        let history = self.store.config_scripts(tenant, id).await?;
        if history.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(history)
    }

    /// A configuration's recent deliveries, backlog and failure streak.
    pub async fn config_stats(&self, tenant: &TenantId, id: &ConfigId) -> Result<store::ConfigStats, StoreError> {
        self.store.get_config(tenant, id).await?;
        self.store.config_stats(id).await
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

    /// Runs a delivery's decision again: the script version and parameters
    /// its configuration ran then, on the stored event, under today's limits.
    pub async fn explain_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Explained, AppError> {
        let delivery = self.store.get_delivery(tenant, id).await?;
        if delivery.undecided {
            return Err(ExplainError::Undecided.into());
        }
        let ran = self
            .store
            .config_script_at(tenant, &delivery.configuration_id, delivery.configuration_version)
            .await?
            .ok_or(ExplainError::NotRecorded)?;
        let params: Params = serde_json::from_str(&ran.params)
            .map_err(|e| StoreError::Corrupt(format!("script parameters of configuration {}: {e}", delivery.configuration_id)))?;
        let event = self.store.get_event(tenant, &delivery.event_id).await?.event;
        let (script, loaded) = match &ran.script_id {
            None => (None, None),
            Some(script_id) => {
                let record = self.store.get_script(tenant, script_id).await.map_err(|e| match e {
                    StoreError::NotFound => {
                        AppError::from(ExplainError::ScriptDeleted { id: script_id.clone(), sha256: ran.script_sha256.clone() })
                    }
                    e => e.into(),
                })?;
                // Worded as routing words it, so that an unloadable script compares equal.
                let loaded = match self.script(tenant, script_id).await {
                    Ok(loaded) => loaded.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("script {script_id} unavailable: {e}")),
                };
                (Some(record), Some(loaded))
            }
        };
        let recorded = Verdict::recorded(&delivery);
        let (sandbox, config, version, run_params) =
            (self.sandbox.clone(), delivery.configuration_id.clone(), delivery.configuration_version, Arc::new(params.clone()));
        let again = tokio::task::spawn_blocking(move || {
            let ran = match &loaded {
                None => Ran::NoScript,
                Some(Ok(script)) => Ran::Script(script),
                Some(Err(why)) => Ran::Unavailable(why.clone()),
            };
            decide_again(&sandbox, &config, version, ran, &run_params, &event)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("explain: {e}")))?;
        Ok(Explained { delivery, script, params, recorded, again })
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

    /// Renames a tenant and sets its quota, at once on this node (other
    /// nodes hear of it through the store's change feed).
    pub async fn update_tenant(&self, id: &TenantId, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord, StoreError> {
        let record = self.store.update_tenant(id, name, monthly_quota).await?;
        self.quotas.forget(|t, _| t != id);
        Ok(record)
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
