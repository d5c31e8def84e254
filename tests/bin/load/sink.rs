//! The sink: an HTTP server standing in for webhook receivers. It answers
//! every request `200 [ACK]` (what sluice's normal response mode expects)
//! and, for requests carrying a `webhook-id` header (sluice's deliveries),
//! records when the first copy of each event arrived. Paths can be made to
//! fail: those answer `500` instead, and the sink records each attempt.
//! Paths can be made slow: those answer `200 [ACK]` only after a delay, and
//! the sink counts the events they received apart from the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};

use crate::Clock;

/// What the sink received since it was last drained.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Event id → arrival of its first copy, on the run's [`Clock`].
    pub first: HashMap<String, Duration>,
    /// Copies of an event after the first (sluice delivers at least once).
    pub repeats: u64,
    /// Requests to a failing path, answered 500: when each came, on the
    /// run's [`Clock`].
    pub failed_attempts: Vec<Duration>,
    /// The distinct event ids among [`Arrivals::failed_attempts`].
    pub failed_events: HashSet<String>,
    /// The distinct event ids received by a slow path (answered after its
    /// delay); not in [`Arrivals::first`].
    pub slow_events: HashSet<String>,
}

struct Shared {
    clock: Clock,
    arrivals: Mutex<Arrivals>,
    /// Paths answered `500`.
    failing: RwLock<HashSet<String>>,
    /// Paths answered `200 [ACK]` after a delay.
    slow: RwLock<HashMap<String, Duration>>,
}

impl Shared {
    fn arrivals(&self) -> MutexGuard<'_, Arrivals> {
        self.arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running sink; stops when dropped.
pub struct Sink {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start(clock: Clock) -> Result<Sink, String> {
        let shared = Arc::new(Shared { clock, arrivals: Mutex::default(), failing: RwLock::default(), slow: RwLock::default() });
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, _body: Bytes| {
            // The body is read in full before the arrival is stamped.
            let state = state.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
                let failing = state.failing.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(uri.path());
                if failing {
                    let at = state.clock.now();
                    let mut arrivals = state.arrivals();
                    arrivals.failed_attempts.push(at);
                    if let Some(id) = id
                        && !arrivals.failed_events.contains(id)
                    {
                        arrivals.failed_events.insert(id.to_owned());
                    }
                    return (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose");
                }
                let delay = state.slow.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(uri.path()).copied();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                    if let Some(id) = id {
                        state.arrivals().slow_events.insert(id.to_owned());
                    }
                    return (StatusCode::OK, "[ACK]");
                }
                if let Some(id) = id {
                    let at = state.clock.now();
                    let mut arrivals = state.arrivals();
                    if arrivals.first.contains_key(id) {
                        arrivals.repeats += 1;
                    } else {
                        arrivals.first.insert(id.to_owned(), at);
                    }
                }
                (StatusCode::OK, "[ACK]")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind the sink: {e}"))?;
        let address = listener.local_addr().map_err(|e| format!("the sink's address: {e}"))?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("sink stopped: {e}");
            }
        });
        Ok(Sink { url: format!("http://{address}"), shared, server })
    }

    /// Makes requests to exactly these paths (e.g. `/hook/t0`) answer
    /// `500`; every other path answers `200 [ACK]`.
    pub fn fail_paths(&self, paths: impl IntoIterator<Item = String>) {
        *self.shared.failing.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = paths.into_iter().collect();
    }

    /// Makes requests to exactly these paths answer `200 [ACK]` only after
    /// their delay; every other path answers at once (or `500`, if failing).
    pub fn slow_paths(&self, paths: impl IntoIterator<Item = (String, Duration)>) {
        *self.shared.slow.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = paths.into_iter().collect();
    }

    /// How many distinct events arrived since the last [`Sink::drain`].
    pub fn distinct(&self) -> usize {
        self.shared.arrivals().first.len()
    }

    /// Whether every one of `ids` arrived.
    pub fn has_all(&self, ids: &[String]) -> bool {
        let arrivals = self.shared.arrivals();
        ids.iter().all(|id| arrivals.first.contains_key(id))
    }

    /// Makes room for `events` more arrivals up front. Growing a map of
    /// millions of ids rehashes it while the lock is held, and the sink
    /// answers nothing meanwhile: a ten-minute soak's worst minutes (p99
    /// 122 and 663 ms, at 0.9 and 1.8 million ids) were this tool's own.
    pub fn expect(&self, events: usize) {
        self.shared.arrivals().first.reserve(events);
    }

    /// Everything received so far; the sink starts afresh.
    pub fn drain(&self) -> Arrivals {
        std::mem::take(&mut *self.shared.arrivals())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}
