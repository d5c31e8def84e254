//! `--chaos`: whether one hostile tenant slows down the others. Ten
//! tenants on one engine, each with its own admin key, scripts,
//! configurations and sink paths, post a steady stream of events at one
//! offered rate, twice, each time on a fresh engine:
//!
//! - *clean*: every tenant routes its `order.paid` events through
//!   `paid-orders` to its own sink path, which answers at once;
//! - *chaos*: the nine well-behaved tenants do the same, while the tenth
//!   routes every event through `hostile-loop` (which spins until it runs
//!   out of fuel, except on `benign` events), has a second configuration
//!   whose receiver answers `200` only after [`SLOW_DELAY`], and posts
//!   bad input alongside its events: each kind of [`BadInput`] in turn.
//!
//! The nine's delivery rate and latency are compared between the runs; the
//! tenth's fate is read back from the API as its own admin.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;
use tokio::task::JoinSet;

use crate::cluster::Cluster;
use crate::engine::{self, SCRIPT};
use crate::generator::{self, Pace, Plan, Posted, Target};
use crate::options::Options;
use crate::report::{self, BadInputs, BadTenant, Delivered, EngineRun, Summary, TenantsRun};
use crate::sink::{Arrivals, Sink};
use crate::{Clock, cpu, note};

/// Tenants on the engine: `load-t0` … `load-t9`.
pub const TENANTS: usize = 10;
/// The tenant that misbehaves in the chaos run: the tenth.
const BAD_TENANT: usize = TENANTS - 1;

/// The script the bad tenant runs on every event, built by `scripts/build.sh`.
const HOSTILE_SCRIPT: &str = "hostile-loop";

/// How long the bad tenant's slow receiver takes to answer: slow, but
/// within the engine's longest delivery deadline (5 s).
const SLOW_DELAY: Duration = Duration::from_secs(4);

/// Requests of bad input the bad tenant posts per second, the kinds in turn.
const BAD_INPUTS_PER_SECOND: f64 = 50.0;

/// Longest a bad input's request may take.
const BAD_INPUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The engine's body limit unless `SLUICE_MAX_BODY_BYTES` (passed on to
/// it) says otherwise.
const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How deep the deeply nested payload goes; far past any JSON parser's
/// recursion limit, far below the body limit.
const NESTING: usize = 10_000;

/// Every delivery status the API filters on.
const STATUSES: [&str; 5] = ["pending", "filtered", "script_error", "succeeded", "failed"];

/// Deliveries per page when reading the bad tenant's.
const PAGE: usize = 500;

/// A kind of bad input.
#[derive(Debug, Clone, Copy)]
enum BadInput {
    /// Cut off in the middle.
    MalformedJson,
    /// An event with a field events do not have.
    UnknownField,
    /// An event past the engine's body limit.
    PastBodyLimit,
    /// `\u0000` in the event's id.
    NulInId,
    /// `\u0000` in a string of the payload, of a `benign` event.
    NulInPayload,
    /// A payload nested [`NESTING`] arrays deep.
    DeepNesting,
    /// An event type with a space and a `!`.
    InvalidType,
}

impl BadInput {
    /// Every kind, in the order they are posted.
    const ALL: [BadInput; 7] = [
        BadInput::MalformedJson,
        BadInput::UnknownField,
        BadInput::PastBodyLimit,
        BadInput::NulInId,
        BadInput::NulInPayload,
        BadInput::DeepNesting,
        BadInput::InvalidType,
    ];

    fn name(self) -> &'static str {
        match self {
            BadInput::MalformedJson => "malformed JSON",
            BadInput::UnknownField => "unknown field",
            BadInput::PastBodyLimit => "past the body limit",
            BadInput::NulInId => "NUL in id",
            BadInput::NulInPayload => "NUL in payload",
            BadInput::DeepNesting => "deep nesting",
            BadInput::InvalidType => "invalid type",
        }
    }

    /// Whether the engine may accept it: a NUL character in a payload is
    /// text like any other (stored as received, shown escaped). Every
    /// other kind should be refused with a 4xx; one that is accepted
    /// instead is reported, and only a 5xx (or no answer) fails the run.
    fn may_be_accepted(self) -> bool {
        matches!(self, BadInput::NulInPayload)
    }

    /// Whether it is an `order.paid` event (if accepted, the slow
    /// configuration takes it too); the one that is not is `benign`.
    fn paid(self) -> bool {
        !matches!(self, BadInput::NulInPayload)
    }
}

/// The scripts the tenants upload.
pub struct Scripts {
    pub paid_orders: Vec<u8>,
    pub hostile: Vec<u8>,
}

impl Scripts {
    /// Both scripts, or why one cannot be read.
    pub fn read(paid_orders: Vec<u8>) -> Result<Scripts, String> {
        Ok(Scripts { paid_orders, hostile: engine::read_named_script(HOSTILE_SCRIPT)? })
    }
}

/// Tenant `n`'s name (and its configuration's, in the clean run).
fn tenant_name(tenant: usize) -> String {
    format!("load-t{tenant}")
}

/// The sink path of the bad tenant's `hostile-loop` configuration.
fn hostile_path() -> String {
    format!("{}/hostile", engine::spread_path(BAD_TENANT))
}

/// The sink path of the bad tenant's slow receiver.
fn slow_path() -> String {
    format!("{}/slow", engine::spread_path(BAD_TENANT))
}

/// The calibration (unless `--rate` was given), then the clean run and the
/// chaos run, each on a fresh engine (or fresh nodes on a fresh database).
pub async fn runs(summary: &mut Summary, clock: Clock, http: &reqwest::Client, sink: &Sink, scripts: Scripts) -> Result<(), String> {
    summary.units = TENANTS;
    let options = summary.options.clone();
    let nodes = options.nodes.first().copied().unwrap_or(1);
    let rate = match options.rate {
        Some(rate) => rate,
        None => {
            note(&crate::start_text(&options, nodes, "calibration: "));
            let cluster = Cluster::start(nodes, options.database.as_ref()).await?;
            let measured = calibrate(&options, clock, http, sink, &cluster, &scripts).await;
            summary.engine_log.extend(cluster.log_digest().into_iter().map(|(count, message)| (count, format!("[calibration] {message}"))));
            cluster.stop().await;
            let calibration = measured?;
            let rate = calibration.delivery_rate() / 2.0;
            let sound = crate::check("calibration", &calibration, &mut summary.problems);
            summary.chaos.calibration = Some(calibration);
            if !sound || rate <= 0.0 {
                return Ok(());
            }
            rate
        }
    };
    summary.chaos.rate = Some(rate);
    for chaos in [false, true] {
        let label = if chaos { "chaos" } else { "clean" };
        note(&crate::start_text(&options, nodes, &format!("{label}: ")));
        let cluster = Cluster::start(nodes, options.database.as_ref()).await?;
        let measured = tenants_run(&options, clock, http, sink, &cluster, &scripts, rate, chaos).await;
        summary.engine_log.extend(cluster.log_digest().into_iter().map(|(count, message)| (count, format!("[{label}] {message}"))));
        cluster.stop().await;
        sink.slow_paths([]);
        let run = measured?;
        let sound = check(label, &run, &mut summary.problems);
        if chaos {
            summary.chaos.chaos = Some(run);
        } else {
            summary.chaos.clean = Some(run);
        }
        if !sound {
            // Nothing sound to compare with.
            break;
        }
    }
    Ok(())
}

/// Ten clean tenants posting as fast as the engine answers: what it sustains.
async fn calibrate(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    scripts: &Scripts,
) -> Result<EngineRun, String> {
    let tenants = set_up(http, sink, cluster, scripts, false).await?;
    sink.drain();
    note(&format!(
        "calibration: {} posters → {TENANTS} tenants, {} event(s) per request, as fast as the engine answers, for {:.1} s",
        options.concurrency,
        options.batch,
        options.duration.as_secs_f64()
    ));
    let plan = plan(options, cluster, &tenants, "calibration", Pace::Max);
    crate::engine_phase(clock, http, sink, cluster, plan).await
}

/// The phase's posting: the ten tenants' requests in turn.
fn plan(options: &Options, cluster: &Cluster, tenants: &Tenants, label: &'static str, pace: Pace) -> Plan {
    Plan {
        label,
        target: Target::Tenants { urls: cluster.ingest_urls(), keys: tenants.keys.clone() },
        concurrency: options.concurrency,
        batch: options.batch,
        duration: options.duration,
        pace,
        units: None,
    }
}

/// The tenants of a run, as set up.
struct Tenants {
    /// Each tenant's admin key, tenant `n`'s at `n`.
    keys: Vec<String>,
    /// Chaos run: the bad tenant's `hostile-loop` configuration and slow one.
    hostile_config: Option<String>,
    slow_config: Option<String>,
}

/// Creates the [`TENANTS`] tenants and their configurations; with `chaos`,
/// the bad tenant's are the hostile ones. Each tenant uploads its own
/// scripts: a tenant sees no other's.
async fn set_up(http: &reqwest::Client, sink: &Sink, cluster: &Cluster, scripts: &Scripts, chaos: bool) -> Result<Tenants, String> {
    let node = cluster.node_1()?;
    let mut tenants = Tenants { keys: Vec::with_capacity(TENANTS), hostile_config: None, slow_config: None };
    for tenant in 0..TENANTS {
        tenants.keys.push(node.create_tenant(http, &tenant_name(tenant)).await?);
    }
    // The bad tenant first: with several nodes, the probes go to the
    // configuration created last.
    let order: Vec<usize> =
        if chaos { std::iter::once(BAD_TENANT).chain((0..TENANTS).filter(|&t| t != BAD_TENANT)).collect() } else { (0..TENANTS).collect() };
    for &tenant in &order {
        let key = &tenants.keys[tenant];
        let paid_orders = node.upload_as(http, key, SCRIPT, scripts.paid_orders.clone()).await?;
        let paid = |name: String, path: String| {
            json!({
                "name": name,
                "endpoint": format!("{}{path}", sink.url),
                "event_types": ["order.paid"],
                "script": {"id": paid_orders, "params": {"min_amount": "0"}},
            })
        };
        if chaos && tenant == BAD_TENANT {
            let hostile = node.upload_as(http, key, HOSTILE_SCRIPT, scripts.hostile.clone()).await?;
            let config = json!({
                "name": "hostile",
                "endpoint": format!("{}{}", sink.url, hostile_path()),
                "event_types": ["*"],
                "script": {"id": hostile},
            });
            tenants.hostile_config = Some(node.configure_as(http, key, config).await?);
            tenants.slow_config = Some(node.configure_as(http, key, paid("slow".to_owned(), slow_path())).await?);
        } else {
            node.configure_as(http, key, paid(tenant_name(tenant), engine::spread_path(tenant))).await?;
        }
    }
    let last = *order.last().expect("there are tenants");
    cluster.await_routing(http, sink, &tenants.keys[last], Some(last)).await?;
    Ok(tenants)
}

/// One run of `--chaos`: sets up the tenants, offers `rate` events per
/// second spread evenly over them (and, with `chaos`, the bad tenant's bad
/// input), waits for the events that should arrive, and with `chaos`
/// reads what became of the bad tenant's.
#[allow(clippy::too_many_arguments)]
async fn tenants_run(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    scripts: &Scripts,
    rate: f64,
    chaos: bool,
) -> Result<TenantsRun, String> {
    let label = if chaos { "chaos" } else { "clean" };
    let tenants = set_up(http, sink, cluster, scripts, chaos).await?;
    if chaos {
        sink.slow_paths([(slow_path(), SLOW_DELAY)]);
    }
    // Nothing left over from an earlier run.
    sink.drain();
    let bad = tenant_name(BAD_TENANT);
    let doing = if chaos {
        format!("{bad} runs {HOSTILE_SCRIPT}, has a receiver answering after {} s and posts bad input", SLOW_DELAY.as_secs())
    } else {
        "all well-behaved".to_owned()
    };
    note(&format!(
        "{label}: {} ev/s offered on a schedule to {TENANTS} tenants ({doing}), {} event(s) per request, for {:.1} s",
        report::thousands(rate),
        options.batch,
        options.duration.as_secs_f64()
    ));
    let plan = plan(options, cluster, &tenants, label, Pace::EventsPerSecond(rate));
    let cpu = cpu::Meter::start(&cluster.pids(), cluster.on_postgres());
    let began = clock.now();
    let inputs = chaos.then(|| {
        let poster = BadPoster::new(cluster.ingest_urls(), tenants.keys[BAD_TENANT].clone());
        tokio::spawn(poster.run(clock, options.duration))
    });
    let posted = generator::run(http, clock, plan).await?;
    let inputs = match inputs {
        Some(task) => Some(task.await.map_err(|e| format!("the bad input's poster failed: {e}"))??),
        None => None,
    };
    note(&format!(
        "{label}: {} events accepted at {} ev/s; waiting for the sink",
        report::thousands(posted.accepted.len() as f64),
        report::thousands(report::per_second(posted.accepted.len(), posted.window()))
    ));
    // The events of the tenants well-behaved in both runs.
    let nine: Vec<String> = posted.accepted.iter().filter(|id| generator::unit_of(id) != Some(BAD_TENANT)).cloned().collect();
    let expected = if chaos { &nine } else { &posted.accepted };
    let arrivals = crate::await_deliveries(sink, expected).await;
    let wall = clock.now().saturating_sub(began);
    let cpu = cpu.usage(wall);
    let delivered = Delivered::of_ids(&nine, &arrivals);
    let missing = if chaos { delivered.missing.clone() } else { Delivered::of_ids(&posted.accepted, &arrivals).missing };
    let bad = match inputs {
        Some(inputs) => Some(bad_tenant(http, cluster, &tenants, &posted, inputs, &arrivals).await),
        None => None,
    };
    Ok(TenantsRun { run: EngineRun { cpu, posted, delivered, rss: Vec::new() }, missing, bad })
}

/// What became of the bad tenant's events, read from the API as its admin.
async fn bad_tenant(
    http: &reqwest::Client,
    cluster: &Cluster,
    tenants: &Tenants,
    posted: &Posted,
    mut inputs: BadInputs,
    arrivals: &Arrivals,
) -> BadTenant {
    let generated = posted.accepted.iter().filter(|id| generator::unit_of(id) == Some(BAD_TENANT)).count();
    inputs.accepted_delivered = inputs.accepted.iter().filter(|id| arrivals.first.contains_key(id)).count();
    let mut bad = BadTenant {
        name: tenant_name(BAD_TENANT),
        accepted: generated + inputs.accepted.len(),
        accepted_paid: generated + inputs.accepted_paid,
        hostile: BTreeMap::new(),
        slow: BTreeMap::new(),
        slow_received: arrivals.slow_events.len(),
        unread: None,
        inputs,
    };
    let key = &tenants.keys[BAD_TENANT];
    let read = async {
        let node = cluster.node_1()?;
        let hostile = tenants.hostile_config.as_deref().ok_or("no hostile configuration")?;
        let slow = tenants.slow_config.as_deref().ok_or("no slow configuration")?;
        Ok::<_, String>((deliveries(http, node, key, hostile).await?, deliveries(http, node, key, slow).await?))
    };
    match read.await {
        Ok((hostile, slow)) => (bad.hostile, bad.slow) = (hostile, slow),
        Err(e) => bad.unread = Some(e),
    }
    bad
}

/// The deliveries of configuration `config`, listed by status (every page)
/// with `key`, counted by [`report::delivery_kind`]. A delivery that
/// moves on between two lists (pending, then succeeded) is counted once,
/// as the later list shows it: [`STATUSES`] begins with `pending`.
async fn deliveries(http: &reqwest::Client, node: &engine::Engine, key: &str, config: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut kinds: HashMap<String, String> = HashMap::new();
    for status in STATUSES {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/deliveries?configuration_id={config}&status={status}&limit={PAGE}");
            if let Some(cursor) = &cursor {
                path.push_str("&cursor=");
                path.extend(url::form_urlencoded::byte_serialize(cursor.as_bytes()));
            }
            let page = node.get_as(http, key, &path).await?;
            let items = page["items"].as_array().ok_or_else(|| format!("GET {path}: no items in {page}"))?;
            for item in items {
                let id = item["id"].as_str().ok_or_else(|| format!("GET {path}: a delivery without an id: {item}"))?;
                let kind = report::delivery_kind(
                    item["status"].as_str().unwrap_or("?"),
                    item["error_kind"].as_str(),
                    item["undecided"].as_bool().unwrap_or(false),
                );
                kinds.insert(id.to_owned(), kind);
            }
            match page["next_cursor"].as_str() {
                Some(next) if !items.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
    }
    let mut counts = BTreeMap::new();
    for kind in kinds.into_values() {
        *counts.entry(kind).or_default() += 1;
    }
    Ok(counts)
}

/// Records what went wrong in a run; `true` when nothing did. In the chaos
/// run only the nine's events have to arrive, and no bad input may be
/// answered with a 5xx (or anything but a 4xx or an acceptance), or go
/// unanswered.
fn check(phase: &str, run: &TenantsRun, problems: &mut Vec<String>) -> bool {
    let posted = &run.run.posted;
    let expected = match &run.bad {
        Some(_) => (run.run.delivered.received + run.missing.len(), "accepted events of the nine well-behaved tenants"),
        None => (posted.accepted.len(), "accepted events"),
    };
    let missing = (run.missing.as_slice(), expected.0, expected.1);
    let mut sound = crate::check_posted(phase, posted, missing, run.run.delivered.repeats, problems);
    if let Some(bad) = &run.bad {
        let inputs = &bad.inputs;
        if inputs.failures.count > 0 {
            problems.push(format!(
                "{phase}: {} bad input request(s) got no answer; reasons: {}",
                inputs.failures.count,
                inputs.failures.samples.join(" | ")
            ));
            sound = false;
        }
        if inputs.unexpected_count > 0 {
            problems.push(format!(
                "{phase}: {} bad input(s) answered other than expected: {}",
                inputs.unexpected_count,
                inputs.unexpected.join(" | ")
            ));
            sound = false;
        }
    }
    sound
}

/// The bad tenant's stream of bad input: [`BAD_INPUTS_PER_SECOND`]
/// requests a second on a fixed schedule, each kind of [`BadInput`] in
/// turn, on a client of its own (a refused huge body may cost the
/// connection).
struct BadPoster {
    http: reqwest::Client,
    urls: Vec<String>,
    key: String,
    /// Past the engine's body limit, made once.
    huge: Bytes,
}

/// Unexpected answers kept for the report.
const UNEXPECTED_SAMPLES: usize = 5;

impl BadPoster {
    fn new(urls: Vec<String>, key: String) -> BadPoster {
        let limit = std::env::var("SLUICE_MAX_BODY_BYTES").ok().and_then(|limit| limit.parse().ok()).unwrap_or(DEFAULT_BODY_LIMIT);
        let note = "x".repeat(limit + (64 << 10));
        let huge = json!({
            "id": "chaos-bad-huge",
            "type": "order.paid",
            "organization_unit": generator::unit_name(BAD_TENANT),
            "occurred_at": "2026-11-22T10:00:00Z",
            "payload": {"note": note},
        });
        BadPoster {
            // Building a client with these settings does not fail in practice;
            // the default client is the fallback.
            http: reqwest::Client::builder().http1_only().no_proxy().build().unwrap_or_default(),
            urls,
            key,
            huge: Bytes::from(huge.to_string()),
        }
    }

    /// Posts for `duration` from now; every answer, counted.
    async fn run(self, clock: Clock, duration: Duration) -> Result<BadInputs, String> {
        let started = clock.now();
        let end = started + duration;
        let mut requests = JoinSet::new();
        for n in 0usize.. {
            let due = started + Duration::from_secs_f64(n as f64 / BAD_INPUTS_PER_SECOND);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(clock.instant(due).into()).await;
            let kind = n % BadInput::ALL.len();
            let request = self
                .http
                .post(&self.urls[n % self.urls.len()])
                .bearer_auth(&self.key)
                .header("content-type", "application/json")
                .body(self.body(BadInput::ALL[kind], n))
                .timeout(BAD_INPUT_TIMEOUT);
            requests.spawn(async move {
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // The whole answer is read, as a client would.
                        let text = response.text().await.unwrap_or_default();
                        Ok((status, text))
                    }
                    Err(e) => Err(e.to_string()),
                };
                (kind, n, answer)
            });
        }
        let mut inputs =
            BadInputs { answers: BadInput::ALL.iter().map(|kind| (kind.name(), BTreeMap::new())).collect(), ..BadInputs::default() };
        while let Some(joined) = requests.join_next().await {
            let (kind, n, answer) = joined.map_err(|e| format!("a bad input's request failed: {e}"))?;
            let kind_of = BadInput::ALL[kind];
            let name = kind_of.name();
            let (status, text) = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    inputs.failures.add(format!("{name}: {e}"));
                    continue;
                }
            };
            *inputs.answers[kind].1.entry(status).or_default() += 1;
            if status == 202 {
                inputs.accepted.push(bad_id(n));
                inputs.accepted_paid += usize::from(kind_of.paid());
                if !kind_of.may_be_accepted() {
                    *inputs.not_refused.entry(name).or_default() += 1;
                }
            } else if !(400..500).contains(&status) {
                inputs.unexpected_count += 1;
                if inputs.unexpected.len() < UNEXPECTED_SAMPLES {
                    inputs.unexpected.push(format!("{name}: {status} {}", text.chars().take(200).collect::<String>()));
                }
            }
        }
        Ok(inputs)
    }

    /// Bad input number `n`, of kind `kind`.
    fn body(&self, kind: BadInput, n: usize) -> Bytes {
        let id = bad_id(n);
        let unit = generator::unit_name(BAD_TENANT);
        let event = |id: &str, event_type: &str, payload: &str| {
            format!(
                r#"{{"id":"{id}","type":"{event_type}","organization_unit":"{unit}","occurred_at":"2026-11-22T10:00:00Z","payload":{payload}}}"#
            )
        };
        let body = match kind {
            BadInput::MalformedJson => {
                format!(r#"{{"id":"{id}","type":"order.paid","payload":{{"amount":"#)
            }
            BadInput::UnknownField => {
                let event = event(&id, "order.paid", r#"{"amount":1}"#);
                // In place of the closing brace.
                format!(r#"{},"priority":"high"}}"#, &event[..event.len() - 1])
            }
            BadInput::PastBodyLimit => return self.huge.clone(),
            BadInput::NulInId => event(&format!(r"{id}-\u0000"), "order.paid", r#"{"amount":1}"#),
            BadInput::NulInPayload => event(&id, "benign", r#"{"note":"before\u0000after"}"#),
            BadInput::DeepNesting => event(&id, "order.paid", &format!("{}{}", "[".repeat(NESTING), "]".repeat(NESTING))),
            BadInput::InvalidType => event(&id, "Order Paid!", r#"{"amount":1}"#),
        };
        Bytes::from(body)
    }
}

/// The id of bad input number `n`.
fn bad_id(n: usize) -> String {
    format!("chaos-bad-{n}")
}
