//! The sink: an HTTP server standing in for a webhook receiver. It answers
//! every request `200 [ACK]` (what sluice's normal response mode expects)
//! and, for requests carrying a `webhook-id` header (sluice's deliveries),
//! records when the first copy of each event arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

use crate::Clock;

/// What the sink received since it was last drained.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Event id → arrival of its first copy, on the run's [`Clock`].
    pub first: HashMap<String, Duration>,
    /// Copies of an event after the first (sluice delivers at least once).
    pub repeats: u64,
}

struct Shared {
    clock: Clock,
    arrivals: Mutex<Arrivals>,
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
        let shared = Arc::new(Shared { clock, arrivals: Mutex::default() });
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
            // The body is read in full before the arrival is stamped.
            let state = state.clone();
            async move {
                if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the sink: {e}"))?;
        let address = listener.local_addr().map_err(|e| format!("the sink's address: {e}"))?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("sink stopped: {e}");
            }
        });
        Ok(Sink { url: format!("http://{address}"), shared, server })
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
