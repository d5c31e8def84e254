//! The ready-made configuration that routing and delivery share: parsed,
//! its script compiled, its HTTP client built, cached per tenant until one
//! of the tenant's configurations changes.
//!
//! It owns the cache; it must never decide or send anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::export::ExportConfig;
use crate::model::ids::{ConfigId, ScriptId, TenantId};
use crate::pipeline::destination::DestinationPolicy;
use crate::pipeline::lock;
use crate::pipeline::penalty::Penalty;
use crate::pipeline::{client, request};
use crate::sandbox::{Params, Sandbox, Script};
use crate::store::{self, Store, StoreError};

/// A configuration ready to route and deliver: parsed, with its script
/// compiled.
pub struct ActiveConfig {
    pub id: ConfigId,
    pub tenant: TenantId,
    pub version: i64,
    pub enabled: bool,
    pub spec: ExportConfig,
    /// Where its requests go, parsed once.
    pub target: request::Target,
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
    /// The token of the engine's own hosted catcher its endpoint names:
    /// delivered in-process instead of by `client`.
    pub catcher: Option<String>,
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

impl ActiveConfig {
    /// Sends one attempt of `job`: over HTTP, or in-process to the engine's
    /// own hosted catcher.
    pub async fn send(&self, store: &Store, job: &crate::pipeline::job::DeliveryJob) -> client::Sent {
        match &self.catcher {
            Some(token) => crate::pipeline::catcher::send(store, &self.spec, &self.target, token, job).await,
            None => client::send_once(&self.spec, &self.target, &self.client, job).await,
        }
    }
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
    pub fn check_client(&self, spec: &ExportConfig) -> Result<(), crate::model::export::ConfigError> {
        client::client_for(spec, &self.shared_client, &self.destinations).map(drop).map_err(|e| {
            let field = if matches!(spec.tls, crate::model::export::Tls::System) { "authorization" } else { "tls" };
            crate::model::export::ConfigError {
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
        let target =
            request::Target::new(&spec).map_err(|e| StoreError::Corrupt(format!("configuration {}: its endpoint: {e}", record.id)))?;
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
        let client = client::client_for(&spec, &self.shared_client, &self.destinations).map_err(|e| {
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
        let catcher = self.destinations.own_catcher(&spec.endpoint);
        let active = Arc::new(ActiveConfig {
            id: record.id.clone(),
            tenant: record.tenant_id,
            version: record.version,
            enabled: record.enabled,
            spec,
            target,
            script,
            params,
            penalty,
            client,
            catcher,
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

/// Loads a script's code: the stored machine code when this build can use
/// it, else compiles the uploaded bytes.
pub fn load_code(sandbox: &Sandbox, code: &store::ScriptCode) -> Result<Arc<crate::sandbox::Script>, crate::sandbox::LoadError> {
    if let Some(script) = code.compiled.as_ref().and_then(|c| sandbox.load_precompiled(crate::sandbox::Sha256::of(&code.bytes), c)) {
        return Ok(script);
    }
    sandbox.load(&code.bytes)
}
