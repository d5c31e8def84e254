//! Receivers: real HTTP servers on 127.0.0.1 that record every request and
//! answer as told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    pub status: u16,
    pub delay: Duration,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
}

/// A receiver; stops when dropped.
pub struct Receiver {
    shared: Arc<Shared>,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 at once.
    pub async fn start() -> Receiver {
        Self::with(Behaviour { status: 200, delay: Duration::ZERO }).await
    }

    pub async fn with(behaviour: Behaviour) -> Receiver {
        let shared = Arc::new(Shared { received: Mutex::new(Vec::new()), behaviour: Mutex::new(behaviour) });
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let behaviour = *state.behaviour.lock().expect("receiver lock");
                if !behaviour.delay.is_zero() {
                    tokio::time::sleep(behaviour.delay).await;
                }
                state.received.lock().expect("receiver lock").push(Received { method, uri, headers, body });
                (StatusCode::from_u16(behaviour.status).expect("status"), "[ACK]")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a receiver");
        let url = format!("http://{}", listener.local_addr().expect("receiver address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { shared, url, server }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("receiver lock") = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `n` requests arrived (30 s at most) and returns
    /// all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} of {n} requests arrived at {}", got.len(), self.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets in-flight work settle, then returns everything received: for
    /// asserting that nothing more arrives.
    pub async fn settle(&self, quiet: Duration) -> Vec<Received> {
        tokio::time::sleep(quiet).await;
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
