//! Receivers: real HTTP servers on 127.0.0.1 that record every request and
//! answer as told.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived (before the receiver's delay).
    pub at: Instant,
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
    /// Requests that arrived, answered or not (a request cut off during the
    /// delay is counted here and never recorded).
    arrived: AtomicUsize,
    /// The answer's body and extra headers.
    answer: Mutex<(String, Vec<(String, String)>)>,
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
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            behaviour: Mutex::new(behaviour),
            arrived: AtomicUsize::new(0),
            answer: Mutex::new(("[ACK]".to_owned(), Vec::new())),
        });
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let at = Instant::now();
                state.arrived.fetch_add(1, Ordering::SeqCst);
                let behaviour = *state.behaviour.lock().expect("receiver lock");
                if !behaviour.delay.is_zero() {
                    tokio::time::sleep(behaviour.delay).await;
                }
                state.received.lock().expect("receiver lock").push(Received { method, uri, headers, body, at });
                let (body, extra) = state.answer.lock().expect("receiver lock").clone();
                let mut answer_headers = HeaderMap::new();
                for (name, value) in extra {
                    answer_headers.insert(
                        axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                        value.parse().expect("header value"),
                    );
                }
                (StatusCode::from_u16(behaviour.status).expect("status"), answer_headers, body)
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

    /// Answers with this body (instead of `[ACK]`) and these extra headers.
    pub fn set_answer(&self, body: &str, headers: &[(&str, &str)]) {
        let headers = headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        *self.shared.answer.lock().expect("receiver lock") = (body.to_owned(), headers);
    }

    /// Requests that arrived, including those still waiting or cut off.
    pub fn arrived(&self) -> usize {
        self.shared.arrived.load(Ordering::SeqCst)
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

/// An address where every connection is accepted and closed at once,
/// before any answer.
pub async fn closing_listener() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    (url, task)
}

/// An address where nothing listens (connections are refused).
pub async fn down_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    url
}
