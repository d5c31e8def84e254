//! A TCP proxy on loopback that a test can cut: the network between one
//! node and its database, failing on demand. Cut, it closes every
//! connection it carries and each new one as it comes; healed, it carries
//! new ones again. Nothing is faked past it: the database is the real one.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts carrying connections to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (cut, _) = watch::channel(false);
        let watching = cut.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let mut cut = watching.subscribe();
                if *cut.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Both ends dropped: each side sees its connection closed.
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { addr, cut, accept }
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by this
    /// proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("a URL");
        url.set_ip_host(self.addr.ip()).expect("a URL with a host");
        url.set_port(Some(self.addr.port())).expect("a URL with a port");
        url.into()
    }

    /// Closes every connection, and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
