//! Metrics: the name, meaning and labels of everything sluice counts,
//! measures and gauges, and the Prometheus recorder that renders them for
//! `/metrics`; in [`traces`], each event's trace; in [`streak`], how a
//! retried step's failures are logged; in [`throttle`], how a condition
//! many tasks meet at once is.
//!
//! This module owns the metric names and label sets, so that they are read
//! in one place and stay bounded: every label value is a `&'static str`
//! chosen by sluice (an error code, an outcome, a status class), never text
//! from a request, an event or a tenant. It imports nothing of sluice, and
//! any layer may call it (as any may call `tracing`). Until [`install`] has
//! run (in tests of one module, in benchmarks) every call is a no-op.

pub mod streak;
pub mod throttle;
pub mod traces;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const EVENTS_INGESTED: &str = "sluice_events_ingested_total";
const INGEST_REFUSED: &str = "sluice_ingest_refused_total";
const API_SERVER_ERRORS: &str = "sluice_api_server_errors_total";
const ROUTING_DECISIONS: &str = "sluice_routing_decisions_total";
const SCRIPT_RUN_SECONDS: &str = "sluice_script_run_seconds";
const SCRIPT_FUEL: &str = "sluice_script_fuel";
const ATTEMPTS: &str = "sluice_attempts_total";
const ATTEMPT_SECONDS: &str = "sluice_attempt_duration_seconds";
const DELIVERIES_IN_FLIGHT: &str = "sluice_deliveries_in_flight";
const DELIVERIES_PENDING: &str = "sluice_deliveries_pending";
const OLDEST_PENDING_SECONDS: &str = "sluice_oldest_pending_delivery_age_seconds";
const CONFIGURATIONS: &str = "sluice_configurations";
const BREAKERS_OPEN: &str = "sluice_breakers_open";
const QUEUE_DEPTH: &str = "sluice_queue_depth";
const STORE_GROUP_SIZE: &str = "sluice_store_write_group_size";
const STORE_COMMIT_SECONDS: &str = "sluice_store_commit_seconds";

/// The recorder's handle, once installed.
static EXPORTER: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms' recent samples are folded in when nobody scrapes
/// (otherwise they would pile up in memory between scrapes).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for this process (the first call does;
/// later ones find it there). `false`: another recorder was installed first.
pub fn install() -> bool {
    if EXPORTER.get().is_some() {
        return true;
    }
    let buckets: [(&str, &[f64]); 5] = [
        (SCRIPT_RUN_SECONDS, &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        (SCRIPT_FUEL, &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]),
        (ATTEMPT_SECONDS, &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        (STORE_GROUP_SIZE, &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
        (STORE_COMMIT_SECONDS, &[0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
    ];
    let builder = buckets
        .into_iter()
        .try_fold(PrometheusBuilder::new(), |b, (name, buckets)| b.set_buckets_for_metric(Matcher::Full(name.into()), buckets));
    let Ok(builder) = builder else { return false };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return false;
    }
    describe();
    let upkeep = handle.clone();
    let _ = std::thread::Builder::new().name("sluice-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP);
            upkeep.run_upkeep();
        }
    });
    EXPORTER.get_or_init(|| handle);
    true
}

/// Everything recorded so far, in the Prometheus text format; `None` when
/// no recorder is installed.
pub fn render() -> Option<String> {
    EXPORTER.get().map(PrometheusHandle::render)
}

fn describe() {
    describe_counter!(EVENTS_INGESTED, "Events posted, by outcome: accepted (stored) or duplicate (an id the tenant already had).");
    describe_counter!(INGEST_REFUSED, "Ingest requests refused, by the error code answered; a refused request stores none of its events.");
    describe_counter!(
        API_SERVER_ERRORS,
        "API requests answered 5xx, by the error code answered (store_unavailable, shutting_down, internal); the log says them throttled."
    );
    describe_counter!(
        ROUTING_DECISIONS,
        "Decisions on an event for a configuration that selects it: deliver, filtered (the script skipped it), script_error, deferred."
    );
    describe_histogram!(SCRIPT_RUN_SECONDS, Unit::Seconds, "Wall time of one script run on one event.");
    describe_histogram!(SCRIPT_FUEL, "Fuel (instructions) one script run used.");
    describe_counter!(
        ATTEMPTS,
        "Delivery attempts, by outcome (succeeded, retry, failed) and the answer's status class (none: no answer)."
    );
    describe_histogram!(ATTEMPT_SECONDS, Unit::Seconds, "Time from sending an attempt to its answer (or its failure).");
    describe_gauge!(DELIVERIES_IN_FLIGHT, "Requests to receivers in flight on this node.");
    describe_gauge!(
        DELIVERIES_PENDING,
        "Deliveries not yet settled (waiting, in flight or to retry): all nodes' recorded ones and this node's sent before they are recorded."
    );
    describe_gauge!(
        OLDEST_PENDING_SECONDS,
        "Age of the oldest pending delivery, or event whose routing is not all recorded, all nodes (0 when none): the backlog."
    );
    describe_gauge!(CONFIGURATIONS, "Export configurations, by state (enabled, disabled).");
    describe_gauge!(BREAKERS_OPEN, "Configurations whose receiver this node takes to be down (deliveries held, one probe at a time).");
    describe_gauge!(QUEUE_DEPTH, "Work waiting in this node's memory, by queue (routing, delivery).");
    describe_histogram!(STORE_GROUP_SIZE, "Jobs committed together in one store write group, by kind.");
    describe_histogram!(STORE_COMMIT_SECONDS, Unit::Seconds, "Time one store write group took to commit (durable), by kind.");
}

/// A metric's handle, registered on first use once the recorder is
/// installed. Looking a metric up by name and labels hashes and copies them
/// (about 1.5 % of the engine's CPU at full rate, for the few metrics every
/// event touches); a handle is an `Arc` to the value itself, and stays the
/// metric's (the recorder is built without an idle timeout, so it never
/// drops a metric from under a handle).
type Slot<T> = OnceLock<T>;

/// Runs `record` on the handle in `slot`, made by `make` the first time;
/// on a fresh handle when there is no slot for it (a label value not
/// foreseen) or before [`install`] (of whatever recorder there is).
fn with<T>(slot: Option<&'static Slot<T>>, make: impl FnOnce() -> T, record: impl FnOnce(&T)) {
    match slot.filter(|_| EXPORTER.get().is_some()) {
        Some(slot) => record(slot.get_or_init(make)),
        None => record(&make()),
    }
}

/// An ingest request stored `accepted` new events and found `duplicate`.
pub fn events_ingested(accepted: u64, duplicate: u64) {
    static ACCEPTED: Slot<Counter> = Slot::new();
    static DUPLICATE: Slot<Counter> = Slot::new();
    with(Some(&ACCEPTED), || counter!(EVENTS_INGESTED, "outcome" => "accepted"), |c| c.increment(accepted));
    with(Some(&DUPLICATE), || counter!(EVENTS_INGESTED, "outcome" => "duplicate"), |c| c.increment(duplicate));
}

/// An ingest request refused with `code`.
pub fn ingest_refused(code: &'static str) {
    counter!(INGEST_REFUSED, "code" => code).increment(1);
}

/// An API request answered with a server-side error `code`.
pub fn api_server_error(code: &'static str) {
    counter!(API_SERVER_ERRORS, "code" => code).increment(1);
}

/// What a configuration decided on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingOutcome {
    Deliver,
    Filtered,
    ScriptError,
    /// Left undecided while the script is paused; decided later.
    Deferred,
}

impl RoutingOutcome {
    fn label(self) -> &'static str {
        match self {
            RoutingOutcome::Deliver => "deliver",
            RoutingOutcome::Filtered => "filtered",
            RoutingOutcome::ScriptError => "script_error",
            RoutingOutcome::Deferred => "deferred",
        }
    }
}

pub fn routing_decision(decision: RoutingOutcome) {
    static BY_OUTCOME: [Slot<Counter>; 4] = [const { Slot::new() }; 4];
    with(Some(&BY_OUTCOME[decision as usize]), || counter!(ROUTING_DECISIONS, "outcome" => decision.label()), |c| c.increment(1));
}

/// One script run: its wall time and the fuel it used.
pub fn script_run(took: Duration, fuel: u64) {
    static SECONDS: Slot<Histogram> = Slot::new();
    static FUEL: Slot<Histogram> = Slot::new();
    with(Some(&SECONDS), || histogram!(SCRIPT_RUN_SECONDS), |h| h.record(took.as_secs_f64()));
    with(Some(&FUEL), || histogram!(SCRIPT_FUEL), |h| h.record(fuel as f64));
}

/// One attempt recorded: its outcome (`succeeded`, `retry`, `failed`),
/// the answer's status (none: no answer), how long it took (`None`: no
/// request was made, the configuration being gone).
pub fn attempt(outcome: &'static str, status: Option<u16>, took: Option<Duration>) {
    const OUTCOMES: [&str; 3] = ["succeeded", "retry", "failed"];
    const CLASSES: [&str; 7] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"];
    static BY_OUTCOME: [[Slot<Counter>; CLASSES.len()]; OUTCOMES.len()] =
        [const { [const { Slot::new() }; CLASSES.len()] }; OUTCOMES.len()];
    static SECONDS: Slot<Histogram> = Slot::new();
    let class = match status {
        None => 0,
        Some(100..=199) => 1,
        Some(200..=299) => 2,
        Some(300..=399) => 3,
        Some(400..=499) => 4,
        Some(500..=599) => 5,
        Some(_) => 6,
    };
    let slot = OUTCOMES.iter().position(|o| *o == outcome).map(|o| &BY_OUTCOME[o][class]);
    with(slot, || counter!(ATTEMPTS, "outcome" => outcome, "status_class" => CLASSES[class]), |c| c.increment(1));
    if let Some(took) = took {
        with(Some(&SECONDS), || histogram!(ATTEMPT_SECONDS), |h| h.record(took.as_secs_f64()));
    }
}

/// One store write group of `kind` (`writer`, `ingest`, `attempts`):
/// `jobs` committed together in `took`.
pub fn store_group(kind: &'static str, jobs: usize, took: Duration) {
    const KINDS: [&str; 3] = ["writer", "ingest", "attempts"];
    static SIZES: [Slot<Histogram>; KINDS.len()] = [const { Slot::new() }; KINDS.len()];
    static SECONDS: [Slot<Histogram>; KINDS.len()] = [const { Slot::new() }; KINDS.len()];
    let k = KINDS.iter().position(|k| *k == kind);
    with(k.map(|k| &SIZES[k]), || histogram!(STORE_GROUP_SIZE, "kind" => kind), |h| h.record(jobs as f64));
    with(k.map(|k| &SECONDS[k]), || histogram!(STORE_COMMIT_SECONDS, "kind" => kind), |h| h.record(took.as_secs_f64()));
}

/// The node's state at a scrape: gauges read now rather than kept up to
/// date on every change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub in_flight: usize,
    pub pending: i64,
    /// Age of the oldest pending delivery, ms (0: none).
    pub oldest_pending_ms: i64,
    pub configurations_enabled: i64,
    pub configurations_disabled: i64,
    pub breakers_open: usize,
    pub routing_queue: usize,
    pub delivery_queue: usize,
}

pub fn set_gauges(s: &Snapshot) {
    gauge!(DELIVERIES_IN_FLIGHT).set(s.in_flight as f64);
    gauge!(DELIVERIES_PENDING).set(s.pending as f64);
    gauge!(OLDEST_PENDING_SECONDS).set(s.oldest_pending_ms.max(0) as f64 / 1000.0);
    gauge!(CONFIGURATIONS, "state" => "enabled").set(s.configurations_enabled as f64);
    gauge!(CONFIGURATIONS, "state" => "disabled").set(s.configurations_disabled as f64);
    gauge!(BREAKERS_OPEN).set(s.breakers_open as f64);
    gauge!(QUEUE_DEPTH, "queue" => "routing").set(s.routing_queue as f64);
    gauge!(QUEUE_DEPTH, "queue" => "delivery").set(s.delivery_queue as f64);
}
