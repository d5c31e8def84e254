//! `sluice serve`: opens the store (creating and migrating it on first
//! start), makes the operator's first admin key, starts the pipeline and
//! the HTTP API, and shuts down cleanly on Ctrl-C or SIGTERM.
//!
//! This module owns start-up and shutdown order. It must never print a
//! secret except the first admin key, once, when it generated it (the
//! secret key it may generate is written to its file, never shown).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::model::auth::{KeySecret, Scope};
use crate::model::ids::{KeyId, TenantId};
use crate::model::secrets::{KeySource, Keyring};
use crate::pipeline::destination::DestinationPolicy;
use crate::pipeline::retention::Retention;
use crate::sandbox::{Limits, Sandbox, SandboxConfig};
use crate::service::{App, AppLimits};
use crate::settings::Settings;
use crate::store::{NewKey, NodeId, Store};

pub async fn serve(settings: Settings) -> Result<(), String> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", settings.data_dir.display()))?;
    // Bound first: the port is part of the default node id.
    let listener =
        tokio::net::TcpListener::bind(settings.listen).await.map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match settings.metrics_listen {
        Some(at) => Some(tokio::net::TcpListener::bind(at).await.map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?),
        None => None,
    };
    if settings.metrics && !crate::telemetry::install() {
        tracing::warn!("another metrics recorder is installed in this process; /metrics shows nothing of sluice's");
    }
    if let Some(endpoint) = &settings.otlp_endpoint {
        crate::telemetry::traces::install(endpoint, tokio::runtime::Handle::current())
            .map_err(|e| format!("cannot export traces to {endpoint}: {e}"))?;
        tracing::info!(endpoint, "exporting each event's trace over OTLP");
    }
    let keys = Arc::new(secret_keys(&settings)?);
    let store = match &settings.database_url {
        Some(url) => {
            let node = match &settings.node_id {
                Some(id) => NodeId::parse(id)?,
                None => NodeId::parse(&format!("{}:{}", hostname(), addr.port()))?,
            };
            tracing::info!(%node, "joining the nodes on PostgreSQL");
            Store::open_postgres(url, node, keys).await.map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?
        }
        None => {
            let db = settings.data_dir.join("sluice.db");
            Store::open_sqlite(&db, keys).await.map_err(|e| format!("cannot open {}: {e}", db.display()))?
        }
    };

    if store.tenant_count().await.map_err(|e| e.to_string())? == 0 {
        let (secret, generated) = match &settings.admin_key {
            Some(raw) => (
                KeySecret::from_operator(raw)
                    .ok_or("SLUICE_ADMIN_KEY must be `sk_` followed by at least 32 letters, digits, `-` or `_`")?,
                false,
            ),
            None => (KeySecret::generate(), true),
        };
        let admin = NewKey {
            id: KeyId::generate(),
            tenant_id: TenantId::generate(),
            name: "first admin key".into(),
            prefix: secret.display_prefix(),
            hash: secret.hash(),
            scopes: vec![Scope::Admin],
            expires_at: None,
        };
        // `None`: another node starting at the same moment made it.
        if let Some(tenant) = store.bootstrap(admin, "operator").await.map_err(|e| e.to_string())? {
            if generated {
                // Printed, not logged: shown this once, stored only as a hash.
                println!("first admin API key (shown once, keep it): {}", secret.expose());
            }
            println!("operator tenant: {tenant}");
        }
    }

    let sandbox = Sandbox::new(SandboxConfig {
        limits: Limits { fuel: settings.script_fuel, memory_bytes: settings.script_memory_mib << 20, ..Limits::default() },
        max_script_bytes: settings.max_script_bytes,
        cache_dir: Some(settings.data_dir.join("compiled")),
        max_concurrent_calls: settings.script_concurrency,
        ..SandboxConfig::default()
    })
    .map_err(|e| format!("cannot start the sandbox: {e:#}"))?;
    // An operator comparing nodes' script costs needs to know which reset
    // the kernel allowed (older kernels: a script's stack size matters).
    tracing::info!(memory_reset = sandbox.memory_reset(), "scripts run in a fresh instance per event");
    let limits = AppLimits {
        max_body_bytes: settings.max_body_bytes,
        max_batch: settings.max_batch,
        delivery_concurrency: settings.delivery_concurrency,
        preview_max_events: settings.preview_max_events.max(1),
        public_url: settings.public_url.clone(),
        destinations: Arc::new(
            DestinationPolicy::new(settings.allow_destinations.clone()).with_own_origins(own_origins(addr, settings.public_url.as_deref())),
        ),
        retention: Retention {
            events: settings.retention_events.0,
            payloads: settings.retention_payloads.0,
            interval: settings.purge_interval.0,
        },
        ..AppLimits::default()
    };
    if !limits.destinations.allowed().is_empty() {
        tracing::info!(allowed = %limits.destinations, "endpoints may reach these reserved address ranges");
    }
    // After a rotation (or an upgrade from plaintext rows), every row moves
    // to the current key now, so that the old key can be dropped.
    match store.reseal_configs().await {
        Ok(done) if done.unreadable > 0 => tracing::warn!(
            resealed = done.resealed,
            unreadable = done.unreadable,
            "some configurations are sealed with a key not configured: add it to old_secret_keys"
        ),
        Ok(done) if done.resealed > 0 => tracing::info!(resealed = done.resealed, "configurations sealed under the current key"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "re-sealing configurations failed; each is re-sealed when next saved"),
    }
    let app = App::start(store.clone(), Arc::new(sandbox), limits).await.map_err(|e| e.to_string())?;

    if let Some(at) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        println!("metrics on http://{at}/metrics");
    }
    println!("listening on http://{addr}");
    tracing::info!(%addr, store = store.describe(), data_dir = %settings.data_dir.display(), "sluice serving");

    let limits = ConnectionLimits { header_read_timeout: settings.header_read_timeout.0, max_connections: settings.max_connections };
    let (stop, stopped) = tokio::sync::watch::channel(());
    if let Some(listener) = metrics_listener {
        let mut stopped = stopped.clone();
        let scrapers = ConnectionLimits { max_connections: 64, ..limits };
        tokio::spawn(serve_api(listener, crate::api::metrics_router(app.clone()), scrapers, async move {
            let _ = stopped.changed().await;
        }));
    }
    serve_api(listener, routes(app), limits, shutdown_signal()).await;
    drop(stop);
    // Off the runtime's threads: the flush waits for its own export.
    let _ = tokio::task::spawn_blocking(crate::telemetry::traces::flush).await;
    store.close().await;
    Ok(())
}

/// How this engine is reached, `host:port` as URLs spell it: its listener,
/// loopback by name and number on its port, and its public URL.
fn own_origins(addr: std::net::SocketAddr, public_url: Option<&str>) -> Vec<String> {
    let port = addr.port();
    let mut origins = vec![format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    if !addr.ip().is_unspecified() {
        origins.push(addr.to_string());
    }
    if let Some(url) = public_url.and_then(|u| reqwest::Url::parse(u).ok())
        && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default())
    {
        origins.push(format!("{host}:{port}"));
    }
    origins
}

/// The API and, beside it on the same listener and settings, the console,
/// which calls the API in-process.
fn routes(app: Arc<App>) -> axum::Router {
    let api = crate::api::router(app.clone());
    crate::console::router(app, api.clone()).merge(api)
}

/// What one client may hold of the API server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a request's line and headers may take to arrive.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// Serves `router` over HTTP/1 until `shutdown`, then lets the open
/// connections finish their requests. Unlike `axum::serve`, a client that
/// sends a request head slowly (or half of one) is cut off, and a client
/// opening connections by the thousand waits instead of taking a task and
/// a file descriptor each.
pub async fn serve_api(listener: TcpListener, router: axum::Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The keys that seal secrets at rest. The embedded store makes its own
/// on first start; nodes sharing PostgreSQL must be given theirs (one each
/// would leave every node unable to read what the others saved).
fn secret_keys(settings: &Settings) -> Result<Keyring, String> {
    let key_file = settings.database_url.is_none().then(|| settings.data_dir.join("secret.key"));
    let (keys, source) = Keyring::load(settings.secret_key.as_ref(), &settings.old_secret_keys, key_file.as_deref())
        .map_err(|e| format!("cannot load the secret key: {e}"))?;
    let (current, older) = (keys.current_id(), keys.older_ids().count());
    match source {
        KeySource::Configured => tracing::info!(key = %current, older, "secrets at rest sealed with the configured key"),
        KeySource::File { path, generated: true } => tracing::warn!(
            key = %current,
            path = %path.display(),
            "no secret key configured: generated one for sealing secrets at rest; back it up with the database (without it, \
             stored tokens and signing secrets cannot be read)"
        ),
        KeySource::File { path, generated: false } => {
            tracing::info!(key = %current, older, path = %path.display(), "secrets at rest sealed with the key file")
        }
    }
    Ok(keys)
}

/// The machine's name, for the default node id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

/// Resolves on Ctrl-C or SIGTERM (`sluice catch` stops on it too).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
