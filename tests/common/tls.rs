//! HTTPS receivers: rustls servers on 127.0.0.1 that record every request
//! like [`crate::receiver::Receiver`], with the client certificate the caller
//! presented, and answer `200 [ACK]`. One may demand a client certificate
//! signed by a given CA; handshakes that fail are recorded with the reason.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, Method, Uri};
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::receiver::Received;

/// One request as it arrived over TLS.
#[derive(Debug, Clone)]
pub struct TlsReceived {
    pub request: Received,
    /// The DER of the leaf certificate the client presented, if any.
    pub client_certificate: Option<Vec<u8>>,
}

/// A connection's peer: its address and its certificate.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub client_certificate: Option<Vec<u8>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Hands axum connections whose handshake succeeded; handshakes run on
/// their own tasks, so a stalled one holds up no other.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor stopped: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsPeer { addr: self.local, client_certificate: None })
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<TlsReceived>>,
    handshake_failures: Mutex<Vec<String>>,
}

/// An HTTPS receiver; stops when dropped.
pub struct TlsReceiver {
    shared: Arc<Shared>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TlsReceiver {
    /// Serves with `chain` (leaf first) and `key`; with `client_ca`, every
    /// client must present a certificate that CA signed.
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<CertificateDer<'static>>,
    ) -> TlsReceiver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().expect("TLS versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("client certificate verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).expect("server certificate and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind a TLS receiver");
        let local = tcp.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready) = mpsc::channel(64);
        let failures = shared.clone();
        let acceptor_task = tokio::spawn(async move {
            while let Ok((socket, addr)) = tcp.accept().await {
                let (acceptor, ready_tx, failures) = (acceptor.clone(), ready_tx.clone(), failures.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let client_certificate =
                                stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|c| c.to_vec());
                            let _ = ready_tx.send((stream, TlsPeer { addr, client_certificate })).await;
                        }
                        Ok(Err(e)) => failures.handshake_failures.lock().expect("receiver lock").push(e.to_string()),
                        Err(_) => failures.handshake_failures.lock().expect("receiver lock").push("handshake timed out".into()),
                    }
                });
            }
        });

        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |ConnectInfo(peer): ConnectInfo<TlsPeer>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let request = Received { method, uri, headers, body, at: Instant::now() };
                    state
                        .received
                        .lock()
                        .expect("receiver lock")
                        .push(TlsReceived { request, client_certificate: peer.client_certificate });
                    "[ACK]"
                }
            },
        );
        let listener = TlsListener { ready, local };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<TlsPeer>()).await;
        });
        TlsReceiver { shared, url: format!("https://{local}"), tasks: vec![acceptor_task, server] }
    }

    pub fn received(&self) -> Vec<TlsReceived> {
        self.shared.received.lock().expect("receiver lock").clone()
    }

    /// Why handshakes failed, as the server saw it.
    pub fn handshake_failures(&self) -> Vec<String> {
        self.shared.handshake_failures.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `n` handshakes failed (10 s at most) and returns
    /// why each did.
    pub async fn wait_for_handshake_failures(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let failures = self.handshake_failures();
            if failures.len() >= n {
                return failures;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} of {n} handshakes failed at {}: {failures:?}", failures.len(), self.url);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` requests arrived (30 s at most) and returns
    /// all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<TlsReceived> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} requests arrived at {}; failed handshakes: {:?}",
                got.len(),
                self.url,
                self.handshake_failures()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
