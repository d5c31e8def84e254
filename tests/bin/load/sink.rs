//! The sink: an HTTP server standing in for webhook receivers. It answers
//! every request `200 [ACK]` (what sluice's normal response mode expects)
//! and, for requests carrying a `webhook-id` header (sluice's deliveries),
//! records when the first copy of each event arrived. Paths can be made to
//! fail: those answer `500` instead, and the sink records each attempt.
//! Paths can be made slow: those answer `200 [ACK]` only after a delay, and
//! the sink counts the events they received apart from the others.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};

use crate::Clock;

/// What the sink received since it was last drained.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Event id → arrival of its first copy, on the run's [`Clock`].
    pub first: Firsts,
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

/// Event ids → arrival of their first copy, in [`SHARDS`] maps by the id's
/// hash, each behind a lock of its own while the sink records: a map that
/// grows rehashes while its lock is held, and a single map of millions of
/// ids held every request up that long. (A single map made room for a
/// ten-minute soak's ids up front instead, and the first requests of every
/// such soak then waited 0.7 s for its fresh memory: the first minute's p99
/// 459 ms, and 680 ms in a two-minute soak given as much room.)
#[derive(Debug, Default)]
pub struct Firsts {
    hasher: RandomState,
    shards: Vec<HashMap<String, Duration>>,
}

const SHARDS: usize = 64;

impl Firsts {
    pub fn get(&self, id: &str) -> Option<&Duration> {
        self.shards.get(shard_of(&self.hasher, id))?.get(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}

fn shard_of(hasher: &RandomState, id: &str) -> usize {
    (hasher.hash_one(id) % SHARDS as u64) as usize
}

struct Shared {
    clock: Clock,
    hasher: RandomState,
    first: Vec<Mutex<HashMap<String, Duration>>>,
    repeats: AtomicU64,
    /// What failing and slow paths received.
    others: Mutex<Others>,
    /// Paths answered `500`.
    failing: RwLock<HashSet<String>>,
    /// Paths answered `200 [ACK]` after a delay.
    slow: RwLock<HashMap<String, Duration>>,
}

/// The part of [`Arrivals`] that failing and slow paths make, behind one
/// lock (the rest is sharded: every delivery records there).
#[derive(Debug, Default)]
struct Others {
    failed_attempts: Vec<Duration>,
    failed_events: HashSet<String>,
    slow_events: HashSet<String>,
}

impl Shared {
    fn others(&self) -> MutexGuard<'_, Others> {
        lock(&self.others)
    }

    fn first(&self, id: &str) -> MutexGuard<'_, HashMap<String, Duration>> {
        lock(&self.first[shard_of(&self.hasher, id)])
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<String, Duration>>> {
        self.first.iter().map(lock)
    }
}

/// A lock whose holder panicked is still good: every critical section
/// here leaves its map whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let shared = Arc::new(Shared {
            clock,
            hasher: RandomState::new(),
            first: (0..SHARDS).map(|_| Mutex::default()).collect(),
            repeats: AtomicU64::new(0),
            others: Mutex::default(),
            failing: RwLock::default(),
            slow: RwLock::default(),
        });
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, _body: Bytes| {
            // The body is read in full before the arrival is stamped.
            let state = state.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
                let failing = state.failing.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(uri.path());
                if failing {
                    let at = state.clock.now();
                    let mut others = state.others();
                    others.failed_attempts.push(at);
                    if let Some(id) = id
                        && !others.failed_events.contains(id)
                    {
                        others.failed_events.insert(id.to_owned());
                    }
                    return (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose");
                }
                let delay = state.slow.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(uri.path()).copied();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                    if let Some(id) = id {
                        state.others().slow_events.insert(id.to_owned());
                    }
                    return (StatusCode::OK, "[ACK]");
                }
                if let Some(id) = id {
                    let at = state.clock.now();
                    let mut first = state.first(id);
                    if first.contains_key(id) {
                        state.repeats.fetch_add(1, Ordering::Relaxed);
                    } else {
                        first.insert(id.to_owned(), at);
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
        self.shared.shards().map(|shard| shard.len()).sum()
    }

    /// Whether every one of `ids` arrived.
    pub fn has_all(&self, ids: &[String]) -> bool {
        ids.iter().all(|id| self.shared.first(id).contains_key(id))
    }

    /// Everything received so far; the sink starts afresh.
    pub fn drain(&self) -> Arrivals {
        let shards = self.shared.shards().map(|mut shard| std::mem::take(&mut *shard)).collect();
        let Others { failed_attempts, failed_events, slow_events } = std::mem::take(&mut *self.shared.others());
        Arrivals {
            first: Firsts { hasher: self.shared.hasher.clone(), shards },
            repeats: self.shared.repeats.swap(0, Ordering::Relaxed),
            failed_attempts,
            failed_events,
            slow_events,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}
