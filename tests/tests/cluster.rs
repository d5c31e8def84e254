//! A cluster: three `sluice serve` nodes on one PostgreSQL database, whatever
//! `SLUICE_TEST_BACKEND` says (the test panics when no server is reachable).
//! Every node ingests, routes and delivers. One is SIGKILLed under load and
//! restarted with its node id; callers re-post what got no answer, with the
//! same ids, to a live node. Every accepted event still reaches the
//! receiver, a repeat carries the same id, and no delivery stays pending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_tests::engine::{Api, Engine, PostgresDatabase, event_body};
use sluice_tests::proxy::Proxy;
use sluice_tests::receiver::{Behaviour, Receiver};
use tokio::time::Instant;

const NODES: usize = 3;
/// The node killed and restarted (node-2).
const VICTIM: usize = 1;
const BATCH: usize = 10;
/// Batches released before the kill, while the victim is down, and after
/// its restart: 450 events in all.
const PHASES: [usize; 3] = [15, 30, 45];
const POSTERS: usize = 4;

/// What the posters share: the live nodes' clients and what they accepted.
struct Load {
    /// One per node; `None` while the node is down.
    targets: Mutex<Vec<Option<Api>>>,
    /// Batches the posters may take (the test releases them phase by phase).
    released: AtomicUsize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Each stored event and the node whose answer said so first.
    accepted: Mutex<BTreeMap<String, usize>>,
    /// Per node, the events it answered `accepted` for (not `duplicate`).
    ingested_by: Mutex<[usize; NODES]>,
    /// Events answered `duplicate`: re-posted after an answer was lost.
    duplicates: AtomicUsize,
    /// POSTs that failed or got no answer (and went to another node).
    failed_posts: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_the_work_and_a_killed_node_loses_nothing() {
    // Declared first, dropped last: after every node is gone.
    let database = PostgresDatabase::create().await;
    let node = |i: usize| format!("node-{}", i + 1);
    // The first node migrates and bootstraps the operator tenant; the others
    // join at once, together.
    let ids: Vec<String> = (0..NODES).map(node).collect();
    let env: Vec<[(&str, &str); 1]> = ids.iter().map(|id| [("SLUICE_NODE_ID", id.as_str())]).collect();
    let mut nodes = vec![Engine::start_on_database(database.url(), &env[0]).await];
    let (second, third) =
        tokio::join!(Engine::start_on_database(database.url(), &env[1]), Engine::start_on_database(database.url(), &env[2]));
    nodes.extend([second, third]);

    // Slow enough that deliveries are in flight on the victim when it dies.
    let rx = Receiver::with(Behaviour { status: 200, delay: Duration::from_millis(200) }).await;
    let config = nodes[0].admin().enabled_config(json!({"name": "cluster", "endpoint": rx.url, "event_types": ["order.*"]})).await;
    let config_id = config["id"].as_str().expect("configuration id").to_owned();

    // A configuration saved on one node reaches the others' routing in a
    // bounded time, not necessarily at once: each node routes a probe to it
    // before the load starts (a probe routed too early is never delivered,
    // so another follows).
    for (i, engine) in nodes.iter().enumerate() {
        let api = engine.admin();
        let deadline = Instant::now() + Duration::from_secs(30);
        'probing: for k in 0.. {
            let id = format!("probe-{i}-{k}");
            api.ingest(&[event_body(&id, "order.probe", "emea", json!({}))]).await;
            let wait = Instant::now() + Duration::from_secs(1);
            while Instant::now() < wait {
                if rx.received().iter().any(|r| r.header("webhook-id") == Some(id.as_str())) {
                    break 'probing;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(Instant::now() < deadline, "{} never routed to {config_id}, created on {}\n{}", node(i), node(0), logs(&nodes));
        }
    }

    let load = Arc::new(Load {
        targets: Mutex::new(nodes.iter().map(|n| Some(n.admin())).collect()),
        released: AtomicUsize::new(0),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        accepted: Mutex::new(BTreeMap::new()),
        ingested_by: Mutex::new([0; NODES]),
        duplicates: AtomicUsize::new(0),
        failed_posts: AtomicUsize::new(0),
    });
    let total = PHASES[PHASES.len() - 1];
    let posters: Vec<_> = (0..POSTERS).map(|_| tokio::spawn(post(load.clone(), total))).collect();

    // All three nodes take batches; the victim dies with some answered, some
    // in flight and their deliveries under way.
    load.released.store(PHASES[0], Ordering::SeqCst);
    wait_done(&load, PHASES[0] / 2, &nodes).await;
    // Killed before the posters are told, so that posts in flight or just
    // sent fail and go to another node.
    nodes[VICTIM].kill().await;
    load.targets.lock().expect("lock")[VICTIM] = None;
    let at_kill = (load.accepted.lock().expect("lock").len(), rx.received().len());

    // The other two take everything meanwhile, re-posts included.
    load.released.store(PHASES[1], Ordering::SeqCst);
    wait_done(&load, PHASES[1], &nodes).await;

    // Back with the same node id: it takes back its own leases at once
    // (another node would wait for them to expire) and takes batches again.
    nodes[VICTIM].restart().await;
    load.targets.lock().expect("lock")[VICTIM] = Some(nodes[VICTIM].admin());
    load.released.store(PHASES[2], Ordering::SeqCst);
    for p in posters {
        if let Err(e) = p.await.expect("poster") {
            panic!("{e}\n{}", logs(&nodes));
        }
    }
    let accepted = load.accepted.lock().expect("lock").clone();
    let ingested_by = *load.ingested_by.lock().expect("lock");
    assert_eq!(accepted.len(), total * BATCH, "every batch is stored in the end");
    for (i, n) in ingested_by.iter().enumerate() {
        assert!(*n > 0, "{} ingested nothing: {ingested_by:?}", node(i));
    }

    // Every accepted event arrives, whichever node took it in.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: BTreeSet<String> = rx.received().iter().filter_map(|r| r.header("webhook-id").map(str::to_owned)).collect();
        let missing: Vec<_> = accepted.iter().filter(|(id, _)| !got.contains(*id)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let mut per_node = [0; NODES];
            for (_, n) in &missing {
                per_node[**n] += 1;
            }
            let some: Vec<_> = missing.iter().take(10).map(|(id, n)| format!("{id} (posted to {})", node(**n))).collect();
            panic!("{} accepted events never arrived (by ingesting node: {per_node:?}), e.g. {some:?}\n{}", missing.len(), logs(&nodes));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A repeat is allowed (a node died between sending and recording), but
    // always as the same event: one id in the header, the key and the body.
    let received = rx.settle(Duration::from_millis(500)).await;
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        let id = r.header("webhook-id").expect("webhook-id").to_owned();
        assert_eq!(r.json()["id"], id.as_str(), "the body and the header name the same event");
        assert_eq!(r.header("idempotency-key"), Some(id.as_str()), "the idempotency key is the event id");
        assert!(accepted.contains_key(&id) || id.starts_with("probe-"), "unknown event {id} delivered");
        *per_id.entry(id).or_default() += 1;
    }
    let repeats = per_id.values().filter(|n| **n > 1).count();
    eprintln!(
        "accepted {} (per node {ingested_by:?}; {} failed posts, {} events answered duplicate), \
         {} accepted and {} delivered at the kill, {} requests, {repeats} events repeated",
        accepted.len(),
        load.failed_posts.load(Ordering::SeqCst),
        load.duplicates.load(Ordering::SeqCst),
        at_kill.0,
        at_kill.1,
        received.len(),
    );

    // The store agrees, seen from every node: nothing pending, and each
    // accepted event has one delivery, succeeded.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, engine) in nodes.iter().enumerate() {
        let api = engine.admin();
        loop {
            let deliveries = api.get(&format!("/v1/deliveries?status=pending&configuration_id={config_id}")).await.expect(200);
            let events = api.get("/v1/events?status=pending").await.expect(200);
            let pending = |page: &serde_json::Value| page["items"].as_array().is_some_and(|items| !items.is_empty());
            if !pending(&deliveries) && !pending(&events) {
                break;
            }
            assert!(Instant::now() < deadline, "still pending on {}: deliveries {deliveries}, events {events}\n{}", node(i), logs(&nodes));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut by_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in nodes[0].admin().list_all(&format!("/v1/deliveries?configuration_id={config_id}")).await {
        let event = d["event_id"].as_str().expect("event id").to_owned();
        by_event.entry(event).or_default().push(d["status"].as_str().expect("status").to_owned());
    }
    for id in accepted.keys() {
        assert_eq!(by_event.get(id).map(Vec::as_slice), Some(&["succeeded".to_owned()][..]), "deliveries of {id}");
    }
}

/// Takes released batches until `total`, each posted first to node
/// `batch % NODES`, then to the next live one until a node answers. A POST
/// that failed or got no answer may have stored some events: the same
/// batch, same ids, goes to another node, which answers `duplicate` for them.
async fn post(load: Arc<Load>, total: usize) -> Result<(), String> {
    loop {
        let batch = load.next.fetch_add(1, Ordering::SeqCst);
        if batch >= total {
            return Ok(());
        }
        while load.released.load(Ordering::SeqCst) <= batch {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events: Vec<_> = (0..BATCH).map(|i| event_body(&format!("b{batch}-{i}"), "order.paid", "emea", json!({"amount": i}))).collect();
        let body = json!(events);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0;
        loop {
            let target = (batch + attempt) % NODES;
            attempt += 1;
            let api = load.targets.lock().expect("lock")[target].clone();
            let answer = match api {
                Some(api) => api.try_post("/v1/events", &body).await,
                None => None,
            };
            match answer {
                Some(answer) if answer.status == 202 => {
                    let mut accepted = load.accepted.lock().expect("lock");
                    for e in answer.body["events"].as_array().ok_or_else(|| format!("batch {batch}: {}", answer.body))? {
                        let id = e["id"].as_str().ok_or_else(|| format!("batch {batch}: {}", answer.body))?;
                        match e["status"].as_str() {
                            Some("accepted") => load.ingested_by.lock().expect("lock")[target] += 1,
                            Some("duplicate") => {
                                load.duplicates.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => return Err(format!("batch {batch} on node-{}: {}", target + 1, answer.body)),
                        }
                        accepted.entry(id.to_owned()).or_insert(target);
                    }
                    break;
                }
                // Down, killed mid-answer, or not ready: another node.
                _ if Instant::now() < deadline => {
                    load.failed_posts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return Err(format!("batch {batch}: no node took it in 30 s; last answer {other:?}")),
            }
        }
        load.done.fetch_add(1, Ordering::SeqCst);
        // Spread over time a little, so that the kill finds posts in flight.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (30 s at most) until `n` batches are stored.
async fn wait_done(load: &Load, n: usize, nodes: &[Engine]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.done.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{} of {n} batches stored in 30 s\n{}", load.done.load(Ordering::SeqCst), logs(nodes));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The end of every node's log, for failure messages.
fn logs(nodes: &[Engine]) -> String {
    let mut out = String::new();
    for (i, engine) in nodes.iter().enumerate() {
        let log = engine.log();
        let lines: Vec<_> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(150)..];
        out.push_str(&format!("--- node-{} ({} log lines, the last {}) ---\n{}\n", i + 1, lines.len(), tail.len(), tail.join("\n")));
    }
    out
}

/// A configuration's rate limit holds for the cluster, not per node: two
/// nodes sending the same configuration's deliveries at once still start
/// at most 5 a second between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_nodes() {
    let database = PostgresDatabase::create().await;
    let first = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-1")]).await;
    let second = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-2")]).await;
    let rx = Receiver::start().await;
    first
        .admin()
        .enabled_config(json!({
            "name": "limited",
            "endpoint": rx.url,
            "event_types": ["limited.*"],
            "rate_limit": {"per_second": 5},
        }))
        .await;
    let batch = |node: usize| -> Vec<serde_json::Value> {
        (0..6).map(|i| event_body(&format!("limited-{node}-{i}"), "limited.thing", "emea", json!({}))).collect()
    };
    let (a, b) = (first.admin(), second.admin());
    let (one, two) = (batch(1), batch(2));
    tokio::join!(a.ingest(&one), b.ingest(&two));
    let got = rx.wait_for(12).await;
    // The cluster reserves one start every 200 ms: twelve starts span at
    // least 2,200 ms. Per-node limits would start each node's six at once,
    // side by side, within about 1,000 ms. Only the span is held, not each
    // window: a receiver sees a request late when the machine is busy, never
    // early, so a late first arrival squeezes windows but barely the span.
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    let span = at[11].duration_since(at[0]);
    assert!(span >= Duration::from_millis(1_700), "12 requests within {span:?} at 5/s for the cluster");
    drop((first, second));
}

/// A node that never saw a script's upload runs it with the machine code the
/// uploading node stored: it compiles nothing (its compiled-script cache,
/// written only by compiling, stays empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_saw_the_upload_runs_the_stored_compiled_script() {
    let database = PostgresDatabase::create().await;
    let first = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-1")]).await;
    let second = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-2")]).await;
    let rx = Receiver::start().await;
    let api = first.admin();
    let script = api.upload_script("paid-orders").await;
    api.enabled_config(json!({
        "name": "paid",
        "endpoint": rx.url,
        "event_types": ["order.*"],
        "script": {"id": script, "params": {"min_amount": "100"}},
    }))
    .await;

    let other = second.admin();
    other
        .ingest(&[
            event_body("big", "order.paid", "emea", json!({"amount": 150})),
            event_body("small", "order.paid", "emea", json!({"amount": 5})),
        ])
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("webhook-id"), Some("big"));
    let small = other.wait_for("/v1/events/small", |e| e["deliveries"][0]["status"] == "filtered").await;
    assert!(small["deliveries"][0]["reason"].as_str().is_some_and(|r| r.contains("below")), "the script decided: {small}");
    assert_eq!(rx.received().len(), 1, "the filtered event was not sent");

    let cache = second.data_dir().join("data").join("compiled");
    let compiled: Vec<_> = std::fs::read_dir(&cache).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(compiled.is_empty(), "node 2 compiled the script itself: {compiled:?}");
    let uploader_cache = first.data_dir().join("data").join("compiled");
    assert!(std::fs::read_dir(&uploader_cache).is_ok_and(|d| d.count() == 1), "the uploading node compiled it (and cached it)");
}

/// A node that dies for good, with its events' deliveries in flight and
/// their rows unwritten: the other node finds it silent and takes over its
/// claims, and every one of its events ends delivered, with its state
/// recorded, long before the claims it took at ingest (5 minutes) run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_for_good_has_its_events_taken_over_before_its_claims_run_out() {
    let database = PostgresDatabase::create().await;
    let mut victim = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-1")]).await;
    let survivor = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-2")]).await;
    let (rx, ids) = sending(&victim, "orphan").await;
    victim.kill().await;
    let killed = Instant::now();

    // Silent for 30 s, then released; the next recovery scan (every 30 s)
    // routes its events. Two minutes is well inside the five its claims
    // would hold them.
    wait_delivered(&survivor.admin(), &ids, killed + Duration::from_secs(120), &survivor).await;
    let got: BTreeSet<String> = rx.received().iter().filter_map(|r| r.header("webhook-id").map(str::to_owned)).collect();
    assert_eq!(got, ids.iter().cloned().collect(), "every event reached the receiver");
    drop(survivor);
}

/// A node cut off from the database (its connections closed, new ones
/// refused) while it holds events it accepted, some of them in flight, then
/// connected again. It cannot accept anything meanwhile; the other node
/// finds it silent and delivers what it held; back, it learns it was taken
/// for dead, leaves what it held to the other, and serves again. Every
/// accepted event ends delivered, its state recorded, nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_has_its_work_taken_over_and_serves_again_once_back() {
    let database = PostgresDatabase::create().await;
    let server = url::Url::parse(database.url()).expect("the database's URL");
    let target = format!("{}:{}", server.host_str().expect("a host"), server.port().unwrap_or(5432));
    let proxy = Proxy::start(target.parse().expect("the database server's address")).await;
    let cut_off = Engine::start_on_database(&proxy.url_through(database.url()), &[("SLUICE_NODE_ID", "node-1")]).await;
    let other = Engine::start_on_database(database.url(), &[("SLUICE_NODE_ID", "node-2")]).await;
    let (rx, held) = sending(&cut_off, "held").await;
    proxy.cut();
    let cut = Instant::now();

    // Cut off, it cannot store an event, and says so: the poster retries.
    let refused = tokio::spawn({
        let api = cut_off.admin();
        async move {
            let started = Instant::now();
            let answer = api.try_post("/v1/events", &json!([event_body("while-cut", "order.paid", "emea", json!({}))])).await;
            (answer, started.elapsed())
        }
    });

    // The other node takes over once the node was silent 30 s.
    let api = other.admin();
    wait_delivered(&api, &held, cut + Duration::from_secs(120), &cut_off).await;
    let taken_over = cut.elapsed();
    let (answer, waited) = refused.await.expect("the post while cut off");
    let answer = answer.expect("an answer while cut off");
    assert_eq!((answer.status, answer.body["code"].as_str()), (503, Some("store_unavailable")), "{}", answer.body);
    assert_eq!(answer.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));

    // Connected again, it serves: events posted to it are accepted (once its
    // connections are made again) and delivered.
    proxy.heal();
    let healed = Instant::now();
    let after: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    for id in &after {
        loop {
            let answer = cut_off.admin().try_post("/v1/events", &json!([event_body(id, "order.paid", "emea", json!({}))])).await;
            if answer.as_ref().is_some_and(|a| a.status == 202 && a.body["events"][0]["status"] == "accepted") {
                break;
            }
            assert!(
                healed.elapsed() < Duration::from_secs(60),
                "{id} not accepted {:?} after the cut healed: {:?}",
                healed.elapsed(),
                answer.map(|a| a.body)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    wait_delivered(&cut_off.admin(), &after, healed + Duration::from_secs(60), &cut_off).await;
    let log = cut_off.log();
    assert!(log.contains("took this node for dead"), "the node never learnt it was taken for dead:\n{log}");
    // Its retry poller failed four times a second while cut off: said a
    // few times, not at every poll.
    let said = log.matches("claiming due deliveries failed").count();
    assert!((1..=12).contains(&said), "the poller's failures logged {said} times:\n{log}");
    assert!(log.contains("claiming due deliveries works again"), "{log}");

    // The held events' attempts under way at the cut were answered but not
    // recorded: sent again by the other node. Those accepted once it was
    // back were claimed in its new epoch: sent once.
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for r in rx.received() {
        *sent.entry(r.header("webhook-id").unwrap_or_default().to_owned()).or_default() += 1;
    }
    let all: BTreeSet<String> = held.iter().chain(&after).cloned().collect();
    assert_eq!(sent.keys().cloned().collect::<BTreeSet<_>>(), all, "every accepted event reached the receiver, and only those");
    for id in &after {
        assert_eq!(sent[id], 1, "{id}, accepted after the cut healed, sent more than once: {sent:?}");
    }
    eprintln!(
        "taken over {taken_over:?} after the cut; the post while cut off answered after {waited:?}; {} requests for {} events",
        rx.received().len(),
        all.len()
    );
    drop((cut_off, other));
}

/// A slow receiver, a configuration of `node` sending to it, and ten events
/// (`<prefix>-<n>`) posted to `node`; returns once the first of its
/// attempts is under way.
async fn sending(node: &Engine, prefix: &str) -> (Receiver, Vec<String>) {
    let rx = Receiver::with(Behaviour { status: 200, delay: Duration::from_secs(3) }).await;
    node.admin().enabled_config(json!({"name": prefix, "endpoint": rx.url, "event_types": ["order.*"]})).await;
    let ids: Vec<String> = (0..10).map(|i| format!("{prefix}-{i}")).collect();
    let events: Vec<_> = ids.iter().map(|id| event_body(id, "order.paid", "emea", json!({}))).collect();
    node.admin().ingest(&events).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.arrived() == 0 {
        assert!(Instant::now() < deadline, "the node sent nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (rx, ids)
}

/// Waits until each of `ids` is routed and every one of its deliveries has
/// succeeded (none pending), as `api` reads it.
async fn wait_delivered(api: &Api, ids: &[String], deadline: Instant, node: &Engine) {
    for id in ids {
        loop {
            let event = api.get(&format!("/v1/events/{id}")).await.expect(200);
            let deliveries = event["deliveries"].as_array().cloned().unwrap_or_default();
            if event["routed"] == true && !deliveries.is_empty() && deliveries.iter().all(|d| d["status"] == "succeeded") {
                break;
            }
            assert!(Instant::now() < deadline, "{id} not delivered in time: {event}\n{}", node.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
