//! The engines of one run: one engine on its own SQLite file, or `n` nodes
//! sharing a PostgreSQL database made for the run. The configuration is
//! created through node 1; events are posted to every node in turn.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::database::{Database, Server};
use crate::engine::{ADMIN_KEY, Engine, Node};
use crate::generator;
use crate::sink::Sink;

/// How long every node may take to route events by a configuration
/// created through node 1.
const ROUTING_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one probe event may take to reach the sink before another is sent.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Longest a probe's ingest request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Running engine nodes, and the database they share.
pub struct Cluster {
    nodes: Vec<Engine>,
    database: Option<Database>,
}

impl Cluster {
    /// Starts `count` nodes on a fresh database on `server`, or, without a
    /// server, one engine on SQLite. Node 1 is listening (its migrations
    /// run, the operator tenant bootstrapped) before the next starts.
    pub async fn start(count: usize, server: Option<&Server>) -> Result<Cluster, String> {
        let database = match server {
            Some(server) => Some(server.create().await?),
            None => None,
        };
        let mut cluster = Cluster { nodes: Vec::with_capacity(count), database };
        for n in 1..=count {
            let node = cluster.database.as_ref().map(|database| Node { database_url: database.url.clone(), id: node_id(n) });
            match Engine::start(node.as_ref()).await {
                Ok(engine) => cluster.nodes.push(engine),
                Err(e) => {
                    cluster.stop().await;
                    return Err(if count > 1 { format!("node {n}: {e}") } else { e });
                }
            }
        }
        Ok(cluster)
    }

    /// How many nodes run.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's ingest endpoint, node 1 first.
    pub fn ingest_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| format!("{}/v1/events", node.url)).collect()
    }

    /// The nodes' process ids, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Engine::pid).collect()
    }

    /// Whether the nodes share a PostgreSQL database.
    pub fn on_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// [`Engine::route_to`] through node 1, then waits until every node routes.
    pub async fn route_to(&self, http: &reqwest::Client, sink: &Sink, script: Vec<u8>) -> Result<(), String> {
        self.node_1()?.route_to(http, &sink.url, script).await?;
        self.await_routing(http, sink, ADMIN_KEY, None).await
    }

    /// [`Engine::route_spread`] through node 1, then waits until every node
    /// routes by the last configuration created.
    pub async fn route_spread(&self, http: &reqwest::Client, sink: &Sink, script: Vec<u8>, units: usize) -> Result<(), String> {
        self.node_1()?.route_spread(http, &sink.url, script, units).await?;
        self.await_routing(http, sink, ADMIN_KEY, units.checked_sub(1)).await
    }

    /// The node the set-up goes through.
    pub fn node_1(&self) -> Result<&Engine, String> {
        self.nodes.first().ok_or_else(|| "no engine is running".to_owned())
    }

    /// With several nodes: posts probe events to each until one reaches
    /// the sink, so that no node takes load before it knows the
    /// configuration created through node 1. The probes are posted with
    /// `key` (into its tenant), to the organization unit `unit` (see
    /// [`generator::probe_event`]).
    pub async fn await_routing(&self, http: &reqwest::Client, sink: &Sink, key: &str, unit: Option<usize>) -> Result<(), String> {
        if self.nodes.len() < 2 {
            return Ok(());
        }
        let deadline = Instant::now() + ROUTING_TIMEOUT;
        for (n, node) in (1..).zip(&self.nodes) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let id = format!("probe-n{n}-{attempt}");
                post_probe(http, node, key, &id, unit).await.map_err(|e| format!("node {n}: probe event: {e}"))?;
                let wait_until = (Instant::now() + PROBE_WAIT).min(deadline);
                while !sink.has_all(std::slice::from_ref(&id)) && Instant::now() < wait_until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if sink.has_all(std::slice::from_ref(&id)) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "node {n} routed none of {attempt} probe events within {} s of the configuration being \
                         created through node 1",
                        ROUTING_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        // The probes are no phase's events.
        sink.drain();
        Ok(())
    }

    /// The nodes' log digests; with several nodes, each message says whose.
    pub fn log_digest(&self) -> Vec<(usize, String)> {
        if let [node] = self.nodes.as_slice() {
            return node.log_digest();
        }
        (1..)
            .zip(&self.nodes)
            .flat_map(|(n, node)| node.log_digest().into_iter().map(move |(count, message)| (count, format!("[node {n}] {message}"))))
            .collect()
    }

    /// Stops every node, then drops the database (best effort).
    pub async fn stop(mut self) {
        for node in self.nodes.drain(..) {
            node.stop().await;
        }
        if let Some(database) = self.database.take() {
            database.remove().await;
        }
    }
}

/// Node `n`'s id (from 1).
fn node_id(n: usize) -> String {
    format!("sluice-load-{n}")
}

/// Posts one probe event to `node` with `key`; fine when it is answered `accepted`.
async fn post_probe(http: &reqwest::Client, node: &Engine, key: &str, id: &str, unit: Option<usize>) -> Result<(), String> {
    let response = http
        .post(format!("{}/v1/events", node.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(generator::probe_event(id, unit))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("reading the answer: {e}"))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match answer["events"][0]["status"].as_str() {
        Some("accepted") if status == reqwest::StatusCode::ACCEPTED => Ok(()),
        _ => Err(format!("answered {status}: {}", text.chars().take(200).collect::<String>())),
    }
}
