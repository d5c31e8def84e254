//! `sluice-load`: how many events per second sluice routes and delivers on
//! this machine, and with what latency, next to what the same machine does
//! without it.
//!
//! Everything runs on 127.0.0.1, in one process tree:
//! - a *sink*, an HTTP server in this process that answers `200 [ACK]` and
//!   stamps when each event (its `webhook-id`) first arrives;
//! - the *engine*, this same executable started as `sluice-load serve` on a
//!   fresh data directory;
//! - a *generator*: concurrent posters sending 500-byte `order.paid` events.
//!
//! Phases, one after the other:
//! 1. raw: the posters POST events straight to the sink, as fast as it
//!    answers. Requests per second is the baseline.
//! 2. max: after uploading `paid-orders.wasm` and enabling a configuration
//!    that sends every `order.*` event through it to the sink, the posters
//!    POST events to `/v1/events` as fast as the engine answers; then the
//!    tool waits until every accepted event reached the sink. Ingest rate,
//!    end-to-end delivery rate and ingest-to-receipt latency come out.
//! 3. half: events are offered on a fixed schedule at half the max delivery
//!    rate (open loop; latency counts from when each request was due).
//!
//! With `--failures`, instead of these phases, two runs on fresh engines
//! with the same load spread evenly over 10 configurations, each with its
//! own path at the sink: a clean run, where every path answers `200 [ACK]`,
//! and a failing run, where one configuration's path answers `500`. The
//! events bound for the other nine (the healthy receivers) are measured in
//! both; the failing run's healthy delivery rate should be at least 80 % of
//! the clean run's.
//!
//! With `--chaos`, instead, ten tenants on one engine (each with its own
//! admin key, `paid-orders` upload, configuration and sink path) post at
//! one offered rate (`--rate`, or half the delivery rate of a calibration
//! run as fast as the engine answers), spread evenly over them, in two runs
//! on fresh engines: a clean run, and a chaos run where the tenth tenant
//! runs `hostile-loop` (every call out of fuel) on a `*` configuration, has
//! a second one whose receiver answers after 4 s, and posts bad input
//! (malformed JSON, unknown fields, bodies past the limit, NUL characters,
//! deep nesting, invalid types) that must all be answered with a 4xx. The
//! nine well-behaved tenants are measured in both; in the chaos run they
//! should keep at least 90 % of the clean run's delivery rate, and their
//! p99 should stay within twice the clean run's. What became of the tenth's
//! events is read back from the API as its admin.
//!
//! With `--database-url` (or `--postgres`), the engine runs on PostgreSQL:
//! each run gets a fresh database on that server, dropped afterwards, and
//! `--nodes N` starts N engine nodes on it, the posters spreading their
//! requests over all of them. Several counts (`--nodes 1,3`, or `--compare`)
//! make one run each after the one raw phase, and a table.
//!
//! Latency is receipt at the sink minus the moment the ingest request was
//! issued: both are read on one clock, the issue time travelling in the
//! event id. The run fails (exit status 1) when an accepted event never
//! arrives or a request fails; missing the targets is only reported.

/// The engine under test runs in this executable: it gets the allocator
/// the `sluice` binary installs.
#[global_allocator]
static ALLOCATOR: sluice::Allocator = sluice::Allocator;

#[path = "load/backlog.rs"]
mod backlog;
#[path = "load/chaos.rs"]
mod chaos;
#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/cpu.rs"]
mod cpu;
#[path = "load/database.rs"]
mod database;
#[path = "load/engine.rs"]
mod engine;
#[path = "load/generator.rs"]
mod generator;
#[path = "load/options.rs"]
mod options;
#[path = "load/preview.rs"]
mod preview;
#[path = "load/report.rs"]
mod report;
#[path = "load/sink.rs"]
mod sink;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cluster::Cluster;
use engine::ADMIN_KEY;
use generator::{Pace, Plan, Target};
use options::{Command, Options, USAGE};
use report::{Delivered, EngineRun, FailingReceiver, NodesRun, RawRun, SpreadRun, Summary};
use sink::{Arrivals, Sink};

/// How long accepted events may take to reach the sink after posting ends.
/// Generous on purpose: events the engine left for its recovery scan (which
/// runs every 30 s) still count as delivered, if late, rather than lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// `--failures`: configurations (and organization units, and sink paths)
/// the events are spread over.
const UNITS: usize = 10;
/// `--failures`: the configuration whose receiver answers 500 in the failing run.
const FAILING_UNIT: usize = 0;

/// The run's one clock: sink arrivals and event issue times are offsets
/// from the same instant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock { origin: Instant::now() }
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The instant `offset` after the run began.
    pub fn instant(&self, offset: Duration) -> Instant {
        self.origin + offset
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return sluice::main();
    }
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => *options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = runtime.block_on(run(options));
    summary.print();
    if summary.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs every phase asked for; whatever fails ends up in the summary's problems.
async fn run(options: Options) -> Summary {
    let mut summary = Summary::new(options);
    if let Err(e) = run_phases(&mut summary).await {
        summary.problems.push(e);
    }
    summary
}

async fn run_phases(summary: &mut Summary) -> Result<(), String> {
    let options = summary.options.clone();
    // Fail before measuring anything when the script is not built.
    let script = if options.raw_only { None } else { Some(engine::read_script()?) };
    let clock = Clock::start();
    let sink = Sink::start(clock).await?;
    let http = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    if options.failures {
        let script = script.ok_or("--failures needs the script")?;
        return failure_runs(summary, clock, &http, &sink, script).await;
    }
    if options.chaos {
        let scripts = chaos::Scripts::read(script.ok_or("--chaos needs the script")?)?;
        return chaos::runs(summary, clock, &http, &sink, scripts).await;
    }

    note(&format!("raw: {} posters → sink for {:.1} s", options.concurrency, options.raw_duration.as_secs_f64()));
    let cpu = cpu::Meter::start(&[], false);
    let plan = Plan {
        label: "raw",
        target: Target::Raw { url: format!("{}/raw", sink.url) },
        concurrency: options.concurrency,
        batch: 1,
        duration: options.raw_duration,
        pace: Pace::Max,
        units: None,
    };
    let posted = generator::run(&http, clock, plan).await?;
    let raw = RawRun { cpu: cpu.usage(posted.window()), posted };
    if raw.posted.failures.count > 0 {
        summary.problems.push(failed_requests("raw", &raw.posted));
    }
    note(&format!("raw: {} req/s", report::thousands(raw.rate())));
    summary.raw = Some(raw);
    let Some(script) = script else { return Ok(()) };
    if let Some(target) = options.backlog {
        summary.backlog = Some(backlog::run(&options, clock, &http, &sink, script, target).await?);
        return Ok(());
    }
    if options.preview {
        summary.preview = Some(preview::run(&options, clock, &http, &sink, script).await?);
        return Ok(());
    }

    for &nodes in &options.nodes {
        note(&start_text(&options, nodes, ""));
        let cluster = match Cluster::start(nodes, options.database.as_ref()).await {
            Ok(cluster) => cluster,
            // Comparing, the other counts may still run.
            Err(e) if options.compares_nodes() => {
                summary.problems.push(format!("{}: {e}", report::nodes_text(nodes)));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut run = NodesRun { nodes, ..NodesRun::default() };
        let measured = measure_engine(summary, clock, &http, &sink, &cluster, script.clone(), &mut run).await;
        let log = cluster.log_digest();
        cluster.stop().await;
        summary.runs.push(run);
        if options.compares_nodes() {
            let label = report::nodes_text(nodes);
            summary.engine_log.extend(log.into_iter().map(|(count, message)| (count, format!("[{label}] {message}"))));
        } else {
            summary.engine_log = log;
        }
        if let Err(e) = measured {
            // Comparing, the other counts may still run.
            summary.problems.push(if options.compares_nodes() { format!("{}: {e}", report::nodes_text(nodes)) } else { e });
        }
    }
    Ok(())
}

/// The progress line for starting the engine(s) of a run; `label` (with
/// a trailing space) names the run, if anything.
fn start_text(options: &Options, nodes: usize, label: &str) -> String {
    match &options.database {
        None if label.is_empty() => "starting the engine".to_owned(),
        None => format!("{label}starting a fresh engine"),
        Some(server) => format!("{label}starting {nodes} engine node(s) on a fresh database on PostgreSQL at {}", server.label()),
    }
}

/// Sets up the route, then runs the max-rate phase and the half-rate one
/// into `run`.
async fn measure_engine(
    summary: &mut Summary,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    script: Vec<u8>,
    run: &mut NodesRun,
) -> Result<(), String> {
    let options = summary.options.clone();
    cluster.route_to(http, sink, script).await?;
    let target = Target::Engine { urls: cluster.ingest_urls(), key: ADMIN_KEY.to_owned() };
    let plan = |label, pace| Plan {
        label,
        target: target.clone(),
        concurrency: options.concurrency,
        batch: options.batch,
        duration: options.duration,
        pace,
        units: None,
    };

    let engines = if cluster.len() > 1 { format!("{} engine nodes", cluster.len()) } else { "engine".to_owned() };
    note(&format!(
        "max: {} posters → {engines}, {} event(s) per request, for {:.1} s",
        options.concurrency,
        options.batch,
        options.duration.as_secs_f64()
    ));
    let max = engine_phase(clock, http, sink, cluster, plan("max", Pace::Max)).await?;
    let delivery_rate = max.delivery_rate();
    let sound = check(&phase_name("max rate", &options, cluster), &max, &mut summary.problems);
    run.max = Some(max);
    if options.skip_half || !sound || delivery_rate <= 0.0 {
        return Ok(());
    }

    let half_rate = delivery_rate / 2.0;
    let half_plan = Plan { duration: options.soak.unwrap_or(options.duration), ..plan("half", Pace::EventsPerSecond(half_rate)) };
    note(&format!("half: {} ev/s offered on a schedule for {:.1} s", report::thousands(half_rate), half_plan.duration.as_secs_f64()));
    let half = engine_phase(clock, http, sink, cluster, half_plan).await?;
    check(&phase_name("half rate", &options, cluster), &half, &mut summary.problems);
    run.half = Some((half_rate, half));
    Ok(())
}

/// A phase's name in problems: comparing node counts, with the count.
fn phase_name(phase: &str, options: &Options, cluster: &Cluster) -> String {
    if options.compares_nodes() { format!("{phase} ({})", report::nodes_text(cluster.len())) } else { phase.to_owned() }
}

/// Posts to the engine as `plan` says, waits for the accepted events at the
/// sink, and measures the engine's and this tool's CPU meanwhile.
async fn engine_phase(clock: Clock, http: &reqwest::Client, sink: &Sink, cluster: &Cluster, plan: Plan) -> Result<EngineRun, String> {
    let label = plan.label;
    let cpu = cpu::Meter::start(&cluster.pids(), cluster.on_postgres());
    let began = clock.now();
    let memory = MemorySampler::start(cluster.pids(), clock, began);
    let posted = generator::run(http, clock, plan).await;
    let rss = memory.stop();
    let posted = posted?;
    note(&format!(
        "{label}: {} events accepted at {} ev/s; waiting for the sink",
        report::thousands(posted.accepted.len() as f64),
        report::thousands(report::per_second(posted.accepted.len(), posted.window()))
    ));
    let arrivals = await_deliveries(sink, &posted.accepted).await;
    let wall = clock.now().saturating_sub(began);
    let delivered = Delivered::of(&posted, &arrivals);
    Ok(EngineRun { cpu: cpu.usage(wall), posted, delivered, rss })
}

/// Samples the engine nodes' resident memory (the largest of them) every
/// second while a phase posts.
struct MemorySampler {
    task: tokio::task::JoinHandle<()>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Duration, u64)>>>,
}

impl MemorySampler {
    /// Times are from `began`.
    fn start(pids: Vec<u32>, clock: Clock, began: Duration) -> MemorySampler {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if let Some(rss) = cpu::rss(&pids) {
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push((clock.now().saturating_sub(began), rss));
                    }
                }
            }
        });
        MemorySampler { task, samples }
    }

    fn stop(self) -> Vec<(Duration, u64)> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `--failures`: the clean run, then the failing one, each on a fresh engine
/// (or fresh nodes on a fresh database) and data directory with [`UNITS`]
/// configurations.
async fn failure_runs(summary: &mut Summary, clock: Clock, http: &reqwest::Client, sink: &Sink, script: Vec<u8>) -> Result<(), String> {
    summary.units = UNITS;
    let nodes = summary.options.nodes.first().copied().unwrap_or(1);
    for failing in [false, true] {
        let label = if failing { "failing" } else { "clean" };
        note(&start_text(&summary.options, nodes, &format!("{label}: ")));
        let cluster = Cluster::start(nodes, summary.options.database.as_ref()).await?;
        let measured = spread_run(&summary.options, clock, http, sink, &cluster, script.clone(), label, failing).await;
        summary.engine_log.extend(cluster.log_digest().into_iter().map(|(count, message)| (count, format!("[{label}] {message}"))));
        cluster.stop().await;
        sink.fail_paths([]);
        let run = measured?;
        let sound = check_spread(label, &run, &mut summary.problems);
        if failing {
            summary.failing = Some(run);
        } else {
            summary.clean = Some(run);
        }
        if !sound {
            // Nothing sound to compare with.
            break;
        }
    }
    Ok(())
}

/// One run of `--failures`: routes [`UNITS`] configurations, makes the
/// receiver of [`FAILING_UNIT`] answer 500 if `failing`, posts as fast as
/// the engine answers, and waits for the events that should arrive.
#[allow(clippy::too_many_arguments)]
async fn spread_run(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    script: Vec<u8>,
    label: &'static str,
    failing: bool,
) -> Result<SpreadRun, String> {
    cluster.route_spread(http, sink, script, UNITS).await?;
    if failing {
        sink.fail_paths([engine::spread_path(FAILING_UNIT)]);
    }
    // Nothing left over from an earlier run.
    sink.drain();
    let plan = Plan {
        label,
        target: Target::Engine { urls: cluster.ingest_urls(), key: ADMIN_KEY.to_owned() },
        concurrency: options.concurrency,
        batch: options.batch,
        duration: options.duration,
        pace: Pace::Max,
        units: Some(UNITS),
    };
    let answering = if failing { format!("load-t{FAILING_UNIT} answers 500") } else { "all answer 200".to_owned() };
    let engines = if cluster.len() > 1 { format!("{} engine nodes", cluster.len()) } else { "engine".to_owned() };
    note(&format!(
        "{label}: {} posters → {engines}, {UNITS} configurations ({answering}), {} event(s) per request, for {:.1} s",
        options.concurrency,
        options.batch,
        options.duration.as_secs_f64()
    ));
    let cpu = cpu::Meter::start(&cluster.pids(), cluster.on_postgres());
    let began = clock.now();
    let posted = generator::run(http, clock, plan).await?;
    note(&format!(
        "{label}: {} events accepted at {} ev/s; waiting for the sink",
        report::thousands(posted.accepted.len() as f64),
        report::thousands(report::per_second(posted.accepted.len(), posted.window()))
    ));
    // The events bound for the receivers that answer 200 in both runs.
    let healthy: Vec<String> = posted.accepted.iter().filter(|id| generator::unit_of(id) != Some(FAILING_UNIT)).cloned().collect();
    let expected = if failing { &healthy } else { &posted.accepted };
    let arrivals = await_deliveries(sink, expected).await;
    let wall = clock.now().saturating_sub(began);
    let delivered = Delivered::of_ids(&healthy, &arrivals);
    let missing = if failing { delivered.missing.clone() } else { Delivered::of_ids(&posted.accepted, &arrivals).missing };
    let failing = failing.then(|| {
        // The healthy delivery rate's window.
        let end = if delivered.last_arrival > posted.started { delivered.last_arrival } else { posted.finished };
        FailingReceiver {
            name: format!("load-t{FAILING_UNIT}"),
            bound: posted.accepted.len() - healthy.len(),
            attempts: arrivals.failed_attempts.iter().filter(|&&at| (posted.started..=end).contains(&at)).count(),
            window: end.saturating_sub(posted.started),
            events_attempted: arrivals.failed_events.len(),
        }
    });
    Ok(SpreadRun { run: EngineRun { cpu: cpu.usage(wall), posted, delivered, rss: Vec::new() }, missing, failing })
}

/// Waits until every id in `accepted` reached the sink, or
/// [`DELIVERY_TIMEOUT`] passed; returns (and clears) what the sink holds.
async fn await_deliveries(sink: &Sink, accepted: &[String]) -> Arrivals {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut next_note = Instant::now() + Duration::from_secs(5);
    loop {
        if sink.distinct() >= accepted.len() && sink.has_all(accepted) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_note {
            note(&format!("  {} of {} accepted events at the sink so far", sink.distinct(), accepted.len()));
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.drain()
}

/// Records what went wrong in a phase; `true` when nothing did.
fn check(phase: &str, run: &EngineRun, problems: &mut Vec<String>) -> bool {
    let accepted = run.posted.accepted.len();
    check_posted(phase, &run.posted, (&run.delivered.missing, accepted, "accepted events"), run.delivered.repeats, problems)
}

/// [`check`] for a `--failures` run: there, the events bound for the
/// failing receiver are expected never to arrive, and it must have been hit.
fn check_spread(phase: &str, run: &SpreadRun, problems: &mut Vec<String>) -> bool {
    let posted = &run.run.posted;
    let expected = match &run.failing {
        Some(failing) => (posted.accepted.len() - failing.bound, "accepted events bound for the healthy receivers"),
        None => (posted.accepted.len(), "accepted events"),
    };
    let missing = (run.missing.as_slice(), expected.0, expected.1);
    let mut sound = check_posted(phase, posted, missing, run.run.delivered.repeats, problems);
    if let Some(failing) = &run.failing
        && failing.bound > 0
        && failing.events_attempted == 0
    {
        problems.push(format!("{phase}: the receiver of {} never got a request; nothing failed", failing.name));
        sound = false;
    }
    sound
}

/// Records failed requests, duplicates and missing events: `(ids, out of
/// how many, which)`; `true` when there were none.
fn check_posted(
    phase: &str,
    posted: &generator::Posted,
    (missing, expected, which): (&[String], usize, &str),
    repeats: u64,
    problems: &mut Vec<String>,
) -> bool {
    let before = problems.len();
    if posted.failures.count > 0 {
        problems.push(failed_requests(phase, posted));
    }
    if posted.duplicates > 0 {
        problems.push(format!("{phase}: the engine answered `duplicate` for {} fresh event ids", posted.duplicates));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{phase}: {} of {expected} {which} never reached the sink within {} s after posting ended; e.g. {}",
            missing.len(),
            DELIVERY_TIMEOUT.as_secs(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if repeats > 0 {
        note(&format!("{phase}: the sink received {repeats} repeated deliveries (allowed: at least once)"));
    }
    problems.len() == before
}

fn failed_requests(phase: &str, posted: &generator::Posted) -> String {
    format!(
        "{phase}: {} request(s) failed ({} succeeded); reasons: {}",
        posted.failures.count,
        posted.requests,
        posted.failures.samples.join(" | ")
    )
}

/// A progress line, on stderr so that stdout holds the summary only.
fn note(line: &str) {
    eprintln!("[sluice-load] {line}");
}
