//! What the phases measured, and the summary printed at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backlog::BacklogRun;
use crate::cpu::{ThreadShare, Usage};
use crate::generator::{self, EVENT_BYTES, Posted};
use crate::options::Options;
use crate::sink::Arrivals;

/// The targets: end to end as a share of raw, one event per
/// ingest request and batches…
const TARGET_SHARE_OF_RAW: f64 = 25.0;
const TARGET_SHARE_OF_RAW_BATCHED: f64 = 40.0;
/// …the engine's CPU per delivered event (SQLite) or the database
/// server's (PostgreSQL), in raw exchanges…
const TARGET_ENGINE_UNITS: f64 = 1.5;
const TARGET_DATABASE_UNITS: f64 = 2.0;
/// …and no engine thread above this share of the engine's CPU at max rate
/// (SQLite).
const TARGET_BUSIEST_SHARE: f64 = 35.0;
const TARGET_P99_AT_HALF: Duration = Duration::from_millis(50);
/// With one receiver in ten failing, the healthy receivers' delivery rate
/// as a share of the clean run's.
const TARGET_HEALTHY_SHARE: f64 = 80.0;
/// With one tenant in ten hostile, the nine others' delivery rate as a
/// share of the clean run's…
const TARGET_CHAOS_SHARE: f64 = 90.0;
/// …and their p99 latency as a multiple of the clean run's, at most.
const TARGET_CHAOS_P99_FACTOR: f64 = 2.0;

/// CPU taken by other processes from which the figures are flagged as disturbed.
const DISTURBING_CORES: f64 = 0.2;

/// Distinct engine log messages the summary shows.
const ENGINE_LOG_SHOWN: usize = 10;

/// Percentiles of ingest-to-receipt latency (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Latency { p50: rank(0.50), p99: rank(0.99), max: samples[n - 1] })
    }
}

/// The latency of the events issued in one minute of a phase.
#[derive(Debug, Clone, Copy)]
pub struct Minute {
    pub latency: Latency,
    /// When the slowest of them was issued, from the phase's first issue:
    /// a stall shows when it began.
    pub worst_issued: Duration,
}

/// Latency per minute of issue, from the first event's issue time.
fn by_minute(timed: &[(Duration, Duration)]) -> Vec<Option<Minute>> {
    const MINUTE: Duration = Duration::from_secs(60);
    let Some(first) = timed.iter().map(|(issued, _)| *issued).min() else { return Vec::new() };
    let mut minutes: Vec<(Vec<Duration>, (Duration, Duration))> = Vec::new();
    for &(issued, latency) in timed {
        let since = issued - first;
        let minute = (since.as_secs() / MINUTE.as_secs()) as usize;
        if minutes.len() <= minute {
            minutes.resize_with(minute + 1, Default::default);
        }
        let (latencies, worst) = &mut minutes[minute];
        latencies.push(latency);
        if latency >= worst.0 {
            *worst = (latency, since);
        }
    }
    minutes
        .into_iter()
        .map(|(latencies, (_, worst_issued))| Latency::of(latencies).map(|latency| Minute { latency, worst_issued }))
        .collect()
}

/// How a phase's accepted events reached the sink.
#[derive(Debug)]
pub struct Delivered {
    /// Accepted events that arrived.
    pub received: usize,
    /// Accepted events that did not arrive in time.
    pub missing: Vec<String>,
    /// Copies beyond the first of any event.
    pub repeats: u64,
    /// When the last accepted event arrived.
    pub last_arrival: Duration,
    pub latency: Option<Latency>,
    /// The latency of the events issued in each minute of the phase, in
    /// order: a long run's stalls show in the minutes they happened.
    pub by_minute: Vec<Option<Minute>>,
}

impl Delivered {
    pub fn of(posted: &Posted, arrivals: &Arrivals) -> Delivered {
        Delivered::of_ids(&posted.accepted, arrivals)
    }

    /// How the events `ids` (accepted ones) reached the sink.
    pub fn of_ids(ids: &[String], arrivals: &Arrivals) -> Delivered {
        let mut timed = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut last_arrival = Duration::ZERO;
        for id in ids {
            match arrivals.first.get(id) {
                Some(&arrived) => {
                    last_arrival = last_arrival.max(arrived);
                    // Every id the generator made carries its issue time.
                    if let Some(issued) = generator::issued_at(id) {
                        timed.push((issued, arrived.saturating_sub(issued)));
                    }
                }
                None => missing.push(id.clone()),
            }
        }
        let (received, by_minute) = (timed.len(), by_minute(&timed));
        let latency = Latency::of(timed.into_iter().map(|(_, latency)| latency).collect());
        Delivered { received, missing, repeats: arrivals.repeats, last_arrival, latency, by_minute }
    }
}

/// The raw baseline: the generator posting straight to the sink.
#[derive(Debug)]
pub struct RawRun {
    pub posted: Posted,
    pub cpu: Usage,
}

impl RawRun {
    pub fn rate(&self) -> f64 {
        per_second(self.posted.requests as usize, self.posted.window())
    }

    /// The unit of CPU cost: this tool's CPU per raw request, which is one
    /// whole HTTP exchange (the poster's side and the sink's) on this
    /// machine today.
    pub fn exchange_cost(&self) -> Option<Duration> {
        let requests = u32::try_from(self.posted.requests).ok().filter(|n| *n > 0)?;
        Some(self.cpu.spent.tool? / requests)
    }
}

/// A phase through the engine.
#[derive(Debug)]
pub struct EngineRun {
    pub posted: Posted,
    pub delivered: Delivered,
    pub cpu: Usage,
    /// The engine's resident memory while posting: (time into the phase,
    /// bytes), every second; empty where not sampled.
    pub rss: Vec<(Duration, u64)>,
}

impl EngineRun {
    /// Accepted events per second while posting.
    pub fn ingest_rate(&self) -> f64 {
        per_second(self.posted.accepted.len(), self.posted.window())
    }

    /// Events received by the sink per second, from the first request
    /// issued to the last event received.
    pub fn delivery_rate(&self) -> f64 {
        per_second(self.delivered.received, self.delivered.last_arrival.saturating_sub(self.posted.started))
    }

    /// The engine's and the database server's CPU per delivered event.
    fn cost_per_event(&self) -> (Option<Duration>, Option<Duration>) {
        let Some(events) = u32::try_from(self.delivered.received).ok().filter(|n| *n > 0) else { return (None, None) };
        (self.cpu.spent.engine.map(|t| t / events), self.cpu.spent.database.map(|t| t / events))
    }
}

/// The max and half phases on one set of engine nodes.
#[derive(Debug, Default)]
pub struct NodesRun {
    pub nodes: usize,
    pub max: Option<EngineRun>,
    /// The offered rate and the phase run at it.
    pub half: Option<(f64, EngineRun)>,
}

impl NodesRun {
    /// The end-to-end rate as a percentage of `raw_rate`.
    fn share_of(&self, raw_rate: Option<f64>) -> Option<f64> {
        let raw = raw_rate.filter(|r| *r > 0.0)?;
        self.max.as_ref().map(|max| 100.0 * max.delivery_rate() / raw)
    }

    fn half_p99(&self) -> Option<Duration> {
        self.half.as_ref().and_then(|(_, half)| half.delivered.latency).map(|l| l.p99)
    }
}

/// One run of the failure comparison: events spread evenly over
/// configurations, each delivering to its own path of the sink.
#[derive(Debug)]
pub struct SpreadRun {
    /// Every accepted event, and how the events bound for the healthy
    /// receivers (those answering 200 in both runs) reached the sink:
    /// its delivery rate and latency are the healthy receivers'.
    pub run: EngineRun,
    /// Accepted events that should have reached the sink and did not: all
    /// in the clean run, those bound for the healthy receivers in the
    /// failing one.
    pub missing: Vec<String>,
    /// The receiver answering 500, in the failing run.
    pub failing: Option<FailingReceiver>,
}

/// What hit the receiver answering 500.
#[derive(Debug)]
pub struct FailingReceiver {
    /// Its configuration's name.
    pub name: String,
    /// Accepted events bound for it.
    pub bound: usize,
    /// Requests it answered from the first ingest request to the last
    /// healthy arrival: the window of the healthy delivery rate.
    pub attempts: usize,
    pub window: Duration,
    /// Distinct events among all the requests it answered.
    pub events_attempted: usize,
}

impl FailingReceiver {
    pub fn rate(&self) -> f64 {
        per_second(self.attempts, self.window)
    }
}

/// `--chaos`: the calibration, and the clean and chaos runs at one rate.
#[derive(Debug, Default)]
pub struct ChaosRuns {
    /// Ten clean tenants posting as fast as the engine answers; absent
    /// when `--rate` was given.
    pub calibration: Option<EngineRun>,
    /// Events per second offered in both runs, over all ten tenants.
    pub rate: Option<f64>,
    pub clean: Option<TenantsRun>,
    pub chaos: Option<TenantsRun>,
}

/// One run of the chaos comparison: ten tenants posting at one rate, each
/// to its own configurations and sink paths.
#[derive(Debug)]
pub struct TenantsRun {
    /// Every accepted event (of all ten tenants), and how the events of
    /// the nine well-behaved tenants reached the sink: its delivery rate
    /// and latency are the nine's.
    pub run: EngineRun,
    /// Accepted events that should have reached the sink and did not: all
    /// in the clean run, the nine's in the chaos run.
    pub missing: Vec<String>,
    /// The tenth tenant, in the chaos run.
    pub bad: Option<BadTenant>,
}

/// What became of the hostile tenant's events and bad input, in the chaos run.
#[derive(Debug)]
pub struct BadTenant {
    pub name: String,
    /// Its events the engine accepted: the generator's, and the bad
    /// inputs it accepted.
    pub accepted: usize,
    /// Of those, the `order.paid` ones: those its slow configuration takes.
    pub accepted_paid: usize,
    /// Its `hostile-loop` configuration's deliveries, by what the API
    /// says of them (see [`delivery_kind`]).
    pub hostile: BTreeMap<String, usize>,
    /// Its slow receiver's configuration's deliveries, the same way.
    pub slow: BTreeMap<String, usize>,
    /// Events the slow receiver answered by the time the nine's had all arrived.
    pub slow_received: usize,
    /// Why its deliveries could not be read, when they could not.
    pub unread: Option<String>,
    pub inputs: BadInputs,
}

impl BadTenant {
    /// Decided `out_of_fuel` by its script.
    pub fn out_of_fuel(&self) -> usize {
        self.hostile.get("script_error, out_of_fuel").copied().unwrap_or(0)
    }

    /// Pending without a decision (the script paused), and accepted events
    /// with no delivery for the script's configuration yet.
    pub fn undecided(&self) -> (usize, usize) {
        let pending = self.hostile.get("pending, undecided").copied().unwrap_or(0);
        let rows: usize = self.hostile.values().sum();
        (pending, self.accepted.saturating_sub(rows))
    }
}

/// How the report counts a delivery the API lists: its status, with the
/// error kind of a script error, and `undecided` for a pending one whose
/// script has not decided yet.
pub fn delivery_kind(status: &str, error_kind: Option<&str>, undecided: bool) -> String {
    match (status, error_kind) {
        ("pending", _) if undecided => "pending, undecided".to_owned(),
        ("script_error", Some(kind)) => format!("script_error, {kind}"),
        (status, _) => status.to_owned(),
    }
}

/// The bad input the hostile tenant posted alongside its events.
#[derive(Debug, Default)]
pub struct BadInputs {
    /// Per kind, in the order posted: how many answers of each status.
    pub answers: Vec<(&'static str, BTreeMap<u16, u64>)>,
    /// Requests that got no answer.
    pub failures: generator::Failures,
    /// Answers no bad input may get (5xx, or anything but a 4xx or 202):
    /// how many, and a few, described.
    pub unexpected_count: u64,
    pub unexpected: Vec<String>,
    /// Ids of the inputs accepted.
    pub accepted: Vec<String>,
    /// How many of those are `order.paid` events.
    pub accepted_paid: usize,
    /// Per kind that should have been refused with a 4xx, how many were
    /// accepted instead.
    pub not_refused: BTreeMap<&'static str, u64>,
    /// How many accepted inputs reached the sink (through `hostile-loop`).
    pub accepted_delivered: usize,
}

impl BadInputs {
    pub fn requests(&self) -> u64 {
        self.answers.iter().flat_map(|(_, statuses)| statuses.values()).sum::<u64>() + self.failures.count
    }
}

pub fn per_second(count: usize, window: Duration) -> f64 {
    if window.is_zero() { 0.0 } else { count as f64 / window.as_secs_f64() }
}

/// Everything the run found; printed at the end, whatever happened.
#[derive(Debug)]
pub struct Summary {
    pub options: Options,
    pub raw: Option<RawRun>,
    /// The max and half phases: one run, or, comparing node counts, one
    /// per count.
    pub runs: Vec<NodesRun>,
    /// `--failures`: every receiver answering 200, then one in ten answering 500.
    pub clean: Option<SpreadRun>,
    pub failing: Option<SpreadRun>,
    /// `--failures`: how many configurations the events are spread over;
    /// `--chaos`: how many tenants.
    pub units: usize,
    /// `--chaos`: the runs.
    pub chaos: ChaosRuns,
    /// `--backlog`: the run.
    pub backlog: Option<BacklogRun>,
    /// `--preview`: the run.
    pub preview: Option<crate::preview::PreviewRun>,
    /// Warnings and errors the engine logged: each distinct message with
    /// its count, in order of first occurrence.
    pub engine_log: Vec<(usize, String)>,
    /// What makes the run a failure: lost events, failed requests, errors.
    pub problems: Vec<String>,
}

impl Summary {
    pub fn new(options: Options) -> Summary {
        Summary {
            options,
            raw: None,
            runs: Vec::new(),
            clean: None,
            failing: None,
            units: 0,
            chaos: ChaosRuns::default(),
            backlog: None,
            preview: None,
            engine_log: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn print(&self) {
        if self.options.failures {
            self.print_failures();
        } else if self.options.chaos {
            self.print_chaos();
        } else if let Some(backlog) = &self.backlog {
            backlog.print(self.raw.as_ref().map(RawRun::rate));
        } else if let Some(preview) = &self.preview {
            preview.print(self.raw.as_ref().map(RawRun::rate));
        } else if self.options.compares_nodes() {
            self.print_table();
        } else {
            self.print_phases();
        }
        self.print_notes();
    }

    /// The raw, max and half phases, with their targets.
    fn print_phases(&self) {
        let o = &self.options;
        println!();
        let engine = if o.raw_only {
            String::new()
        } else {
            format!(", {} event(s) per ingest request, engine phases {} each", o.batch, secs(o.duration))
        };
        println!("sluice-load: {}{} posters, {EVENT_BYTES}-byte events, raw {}{engine}", self.store(), o.concurrency, secs(o.raw_duration));
        let raw_rate = self.raw.as_ref().map(RawRun::rate);
        if let Some(raw_rate) = raw_rate {
            println!("{:<24}: {} req/s", "raw POST to sink", thousands(raw_rate));
        }
        let run = self.runs.first();
        let share = run.and_then(|run| run.share_of(raw_rate));
        let nodes = o.nodes.first().copied().unwrap_or(1);
        let ingest = if nodes > 1 { format!("ingest ({nodes} nodes)") } else { "ingest (engine)".to_owned() };
        if let Some(max) = run.and_then(|run| run.max.as_ref()) {
            println!(
                "{:<24}: {} ev/s  ({} events accepted in {})",
                ingest,
                thousands(max.ingest_rate()),
                thousands(max.posted.accepted.len() as f64),
                secs(max.posted.window())
            );
            let share_text = share.map(|s| format!("  ({s:.1} % of raw)")).unwrap_or_default();
            println!("{:<24}: {} ev/s{share_text}", "end-to-end delivery", thousands(max.delivery_rate()));
            println!("{:<24}: {}", "latency at max", latency(max.delivered.latency));
        }
        if let Some((target, half)) = run.and_then(|run| run.half.as_ref()) {
            println!(
                "{:<24}: achieved {} ev/s  {}",
                format!("half rate ({} ev/s)", thousands(*target)),
                thousands(half.ingest_rate()),
                latency(half.delivered.latency)
            );
        }
        if let Some(run) = run {
            let answers: Vec<String> = [("max", run.max.as_ref()), ("half", run.half.as_ref().map(|(_, half)| half))]
                .into_iter()
                .filter_map(|(phase, r)| Some(format!("{phase}: {}", latency(Some(Latency::of(r?.posted.answers.clone())?)))))
                .collect();
            if !answers.is_empty() {
                println!("{:<24}: {}", "ingest answered in", answers.join("; "));
            }
        }
        if let Some(line) = cpu_line(&self.phase_cpu()) {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        let unit = self.raw.as_ref().and_then(RawRun::exchange_cost);
        if let Some(run) = run {
            self.print_costs(run, unit, "");
        }
        let target_share = self.target_share();
        if let Some(share) = share {
            println!("{:<24}: {}", format!("target e2e ≥ {target_share:.0} % of raw"), verdict(share >= target_share));
        }
        if let Some(p99) = run.and_then(NodesRun::half_p99) {
            println!("{:<24}: {}", format!("target p99 < {} ms @ half", TARGET_P99_AT_HALF.as_millis()), verdict(p99 < TARGET_P99_AT_HALF));
        }
    }

    /// Comparing node counts: a row per count, then CPU and targets per count.
    fn print_table(&self) {
        let o = &self.options;
        println!();
        println!(
            "sluice-load: {}{} posters, {EVENT_BYTES}-byte events, raw {}, {} event(s) per ingest request, engine phases {} each",
            self.store(),
            o.concurrency,
            secs(o.raw_duration),
            o.batch,
            secs(o.duration)
        );
        let raw_rate = self.raw.as_ref().map(RawRun::rate);
        let row = |cells: [String; 8]| {
            let [nodes, raw, ingest, e2e, share, p50, p99, half] = cells;
            println!("{nodes:>5}  {raw:>10}  {ingest:>11}  {e2e:>10}  {share:>8}  {p50:>9}  {p99:>9}  {half:>9}");
        };
        row(["nodes", "raw req/s", "ingest ev/s", "e2e ev/s", "e2e/raw", "p50 @max", "p99 @max", "p99 @half"].map(str::to_owned));
        let none = || "–".to_owned();
        for run in &self.runs {
            let max = run.max.as_ref();
            let latency = max.and_then(|max| max.delivered.latency);
            row([
                run.nodes.to_string(),
                raw_rate.map_or_else(none, thousands),
                max.map_or_else(none, |max| thousands(max.ingest_rate())),
                max.map_or_else(none, |max| thousands(max.delivery_rate())),
                run.share_of(raw_rate).map_or_else(none, |share| format!("{share:.1} %")),
                latency.map_or_else(none, |l| ms(l.p50)),
                latency.map_or_else(none, |l| ms(l.p99)),
                run.half_p99().map_or_else(none, ms),
            ]);
        }
        println!();
        if let Some(line) = cpu_line(&[("raw".to_owned(), self.raw.as_ref().map(|run| run.cpu.clone()))]) {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        for run in &self.runs {
            if let Some(line) = cpu_line(&run_cpu(run, "")) {
                println!("{:<24}: {line}", format!("CPU, cores busy, {}", nodes_text(run.nodes)));
            }
        }
        let verdicts = |of: &dyn Fn(&NodesRun) -> Option<bool>| {
            let parts: Vec<String> =
                self.runs.iter().filter_map(|run| Some(format!("{} {}", nodes_text(run.nodes), verdict(of(run)?)))).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        let unit = self.raw.as_ref().and_then(RawRun::exchange_cost);
        for run in &self.runs {
            self.print_costs(run, unit, &format!(", {}", nodes_text(run.nodes)));
        }
        let target_share = self.target_share();
        if let Some(line) = verdicts(&|run| run.share_of(raw_rate).map(|share| share >= target_share)) {
            println!("{:<24}: {line}", format!("target e2e ≥ {target_share:.0} % of raw"));
        }
        if let Some(line) = verdicts(&|run| run.half_p99().map(|p99| p99 < TARGET_P99_AT_HALF)) {
            println!("{:<24}: {line}", format!("target p99 < {} ms @ half", TARGET_P99_AT_HALF.as_millis()));
        }
    }

    /// The end-to-end target for this run's batch size.
    fn target_share(&self) -> f64 {
        if self.options.batch > 1 { TARGET_SHARE_OF_RAW_BATCHED } else { TARGET_SHARE_OF_RAW }
    }

    /// CPU per delivered event (in µs and in raw exchanges, `unit`), the
    /// busiest engine thread, peak memory, and their targets.
    fn print_costs(&self, run: &NodesRun, unit: Option<Duration>, suffix: &str) {
        if let Some(unit) = unit {
            println!("{:<24}: {:.1} µs of CPU per request, both sides", "raw exchange (1 unit)", micros(unit));
        }
        let phases = [("max", run.max.as_ref()), ("half", run.half.as_ref().map(|(_, half)| half))];
        let in_units = |cost: Duration| unit.map(|u| format!(" = {:.2} units", cost.as_secs_f64() / u.as_secs_f64())).unwrap_or_default();
        let mut costs = Vec::new();
        let mut threads = Vec::new();
        let mut writers = Vec::new();
        for (name, phase) in phases {
            let Some(phase) = phase else { continue };
            let (engine, database) = phase.cost_per_event();
            let mut parts = Vec::new();
            if let Some(engine) = engine {
                parts.push(format!("engine {:.1} µs{}", micros(engine), in_units(engine)));
            }
            if let Some(database) = database {
                parts.push(format!("db {:.1} µs{}", micros(database), in_units(database)));
            }
            if !parts.is_empty() {
                costs.push(format!("{name}: {}", parts.join(", ")));
            }
            if let Some(busiest) = &phase.cpu.busiest {
                threads.push(format!("{name}: {} {:.1} % of the engine", busiest.name, busiest.share));
            }
            if let (Some(writer), Some(engine)) = (phase.cpu.writer(), engine) {
                // Its share of the engine's cost per event is its own cost
                // per event; one thread can spend at most a second a second.
                // (Below full rate its groups are smaller and each event
                // costs it more: no ceiling from the half phase.)
                let alone = engine.mul_f64(writer.share / 100.0);
                let ceiling = if alone.is_zero() || name != "max" {
                    String::new()
                } else {
                    format!(", alone it stops at {} ev/s", thousands(1.0 / alone.as_secs_f64()))
                };
                writers.push(format!("{name}: {:.1} % of the engine, {:.1} µs per event{ceiling}", writer.share, micros(alone)));
            }
        }
        if !costs.is_empty() {
            println!("{:<24}: {}", format!("CPU per event{suffix}"), costs.join("; "));
        }
        if !threads.is_empty() {
            println!("{:<24}: {}", format!("busiest thread{suffix}"), threads.join("; "));
        }
        if !writers.is_empty() {
            println!("{:<24}: {}", format!("store writer{suffix}"), writers.join("; "));
        }
        if let Some(max) = run.max.as_ref()
            && let Some(line) = threads_line(&max.cpu.by_name, max.cost_per_event().0)
        {
            println!("{:<24}: max: {line}", format!("engine threads{suffix}"));
        }
        let peak = phases.iter().filter_map(|(_, phase)| (*phase)?.cpu.peak_rss).max();
        if let Some(peak) = peak {
            println!("{:<24}: {:.1} MiB", format!("engine peak memory{suffix}"), peak as f64 / (1024.0 * 1024.0));
        }
        if let Some((_, half)) = &run.half
            && let Some(line) = soak_line(&half.rss)
        {
            println!("{:<24}: {line}", format!("memory at half{suffix}"));
            println!("{:<24}: {}", format!("p99 by minute{suffix}"), minutes_line(&half.delivered.by_minute));
        }
        let Some(max) = run.max.as_ref() else { return };
        let (engine, database) = max.cost_per_event();
        let units = |cost: Option<Duration>| Some(cost?.as_secs_f64() / unit?.as_secs_f64());
        if self.options.database.is_none()
            && let Some(units) = units(engine)
        {
            let target = format!("target ≤ {TARGET_ENGINE_UNITS} units/event{suffix}");
            println!("{target:<24}: {}", verdict(units <= TARGET_ENGINE_UNITS));
        }
        if let Some(units) = units(database) {
            let target = format!("target db ≤ {TARGET_DATABASE_UNITS} units/event{suffix}");
            println!("{target:<24}: {}", verdict(units <= TARGET_DATABASE_UNITS));
        }
        // The issue sets it for SQLite, whose writer is one thread; on
        // PostgreSQL a node's work is all on tokio's workers, which steal
        // each other's tasks: two of them on two cores are ~40 % each.
        if self.options.database.is_none()
            && let Some(busiest) = &max.cpu.busiest
        {
            let target = format!("target thread ≤ {TARGET_BUSIEST_SHARE:.0} %{suffix}");
            println!("{target:<24}: {}", verdict(busiest.share <= TARGET_BUSIEST_SHARE));
        }
    }

    /// `PostgreSQL at host:port, N nodes, ` before the header's figures;
    /// nothing on SQLite, whose header stays as it always was.
    fn store(&self) -> String {
        let o = &self.options;
        let Some(server) = &o.database else { return String::new() };
        let counts: Vec<String> = o.nodes.iter().map(usize::to_string).collect();
        let plural = if o.nodes == [1] { "node" } else { "nodes" };
        format!("PostgreSQL at {}, {} {plural}, ", server.label(), counts.join(" then "))
    }

    /// The clean and failing runs side by side, with their target.
    fn print_failures(&self) {
        let o = &self.options;
        println!();
        println!(
            "sluice-load: failure runs; {}{} posters, {EVENT_BYTES}-byte events, {} event(s) per ingest request, \
             {} configurations, runs {} each",
            self.store(),
            o.concurrency,
            o.batch,
            self.units,
            secs(o.duration)
        );
        let healthy_receivers = self.units.saturating_sub(1);
        for (name, run) in [("clean", &self.clean), ("failing", &self.failing)] {
            let Some(SpreadRun { run, failing, .. }) = run else { continue };
            println!(
                "{:<24}: {} ev/s  ({} events accepted in {})",
                format!("{name} ingest"),
                thousands(run.ingest_rate()),
                thousands(run.posted.accepted.len() as f64),
                secs(run.posted.window())
            );
            println!(
                "{:<24}: {} ev/s  ({} events to the {healthy_receivers} healthy receivers)",
                format!("{name} healthy delivery"),
                thousands(run.delivery_rate()),
                thousands(run.delivered.received as f64)
            );
            println!("{:<24}: {}", format!("{name} healthy latency"), latency(run.delivered.latency));
            if let Some(f) = failing {
                println!(
                    "{:<24}: {} attempts/s  ({} answered 500 in {}; {} of the {} events bound for {} attempted)",
                    "failing receiver",
                    thousands(f.rate()),
                    thousands(f.attempts as f64),
                    secs(f.window),
                    thousands(f.events_attempted as f64),
                    thousands(f.bound as f64),
                    f.name
                );
            }
        }
        let ratio = self.clean.as_ref().zip(self.failing.as_ref()).and_then(|(clean, failing)| {
            let clean = clean.run.delivery_rate();
            (clean > 0.0).then(|| 100.0 * failing.run.delivery_rate() / clean)
        });
        if let Some(ratio) = ratio {
            println!("{:<24}: {ratio:.1} %  (failing run's healthy delivery rate / clean run's)", "healthy rate ratio");
        }
        if let Some(line) = cpu_line(&self.phase_cpu()) {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        if let Some(ratio) = ratio {
            println!("{:<24}: {}", format!("target ratio ≥ {TARGET_HEALTHY_SHARE:.0} %"), verdict(ratio >= TARGET_HEALTHY_SHARE));
        }
    }

    /// The clean and chaos runs side by side, the hostile tenant's figures,
    /// and the targets.
    fn print_chaos(&self) {
        let o = &self.options;
        let runs = &self.chaos;
        println!();
        let offered = runs.rate.map_or_else(String::new, |rate| {
            let per_tenant = rate / self.units.max(1) as f64;
            format!(", {} ev/s offered ({} per tenant)", thousands(rate), thousands(per_tenant))
        });
        println!(
            "sluice-load: chaos runs; {}{} posters, {EVENT_BYTES}-byte events, {} event(s) per ingest request, \
             {} tenants{offered}, runs {} each",
            self.store(),
            o.concurrency,
            o.batch,
            self.units,
            secs(o.duration)
        );
        if let Some(calibration) = &runs.calibration {
            println!(
                "{:<24}: {} ev/s delivered posting as fast as the engine answers; half of it offered",
                "calibration",
                thousands(calibration.delivery_rate())
            );
        }
        let nine = self.units.saturating_sub(1);
        for (name, run) in [("clean", &runs.clean), ("chaos", &runs.chaos)] {
            let Some(TenantsRun { run, bad, .. }) = run else { continue };
            println!(
                "{:<24}: {} ev/s  ({} events accepted in {})",
                format!("{name} ingest"),
                thousands(run.ingest_rate()),
                thousands(run.posted.accepted.len() as f64),
                secs(run.posted.window())
            );
            println!(
                "{:<24}: {} ev/s  ({} events of the {nine} well-behaved tenants)",
                format!("{name} delivery, {nine}"),
                thousands(run.delivery_rate()),
                thousands(run.delivered.received as f64)
            );
            println!("{:<24}: {}", format!("{name} latency, {nine}"), latency(run.delivered.latency));
            if let Some(bad) = bad {
                print_bad_tenant(bad);
            }
        }
        let both = runs.clean.as_ref().zip(runs.chaos.as_ref()).map(|(clean, chaos)| (&clean.run, &chaos.run));
        let rate_ratio = both.and_then(|(clean, chaos)| {
            let clean = clean.delivery_rate();
            (clean > 0.0).then(|| 100.0 * chaos.delivery_rate() / clean)
        });
        let p99_ratio = both.and_then(|(clean, chaos)| {
            let (clean, chaos) = (clean.delivered.latency?.p99, chaos.delivered.latency?.p99);
            (!clean.is_zero()).then(|| chaos.as_secs_f64() / clean.as_secs_f64())
        });
        if let Some(ratio) = rate_ratio {
            println!("{:<24}: {ratio:.1} %  (chaos run's delivery rate of the {nine} / clean run's)", "rate ratio");
        }
        if let Some(ratio) = p99_ratio {
            println!("{:<24}: {ratio:.2} ×  (chaos run's p99 of the {nine} / clean run's)", "p99 ratio");
        }
        if let Some(line) = cpu_line(&self.phase_cpu()) {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        if let Some(ratio) = rate_ratio {
            let met = ratio >= TARGET_CHAOS_SHARE;
            let by = if met { String::new() } else { format!(" (short by {:.1} points)", TARGET_CHAOS_SHARE - ratio) };
            println!("{:<24}: {}{by}", format!("target rate ≥ {TARGET_CHAOS_SHARE:.0} %"), verdict(met));
        }
        if let Some(ratio) = p99_ratio {
            let met = ratio <= TARGET_CHAOS_P99_FACTOR;
            let by = if met { String::new() } else { format!(" ({ratio:.2} × the clean p99)") };
            println!("{:<24}: {}{by}", format!("target p99 ≤ {TARGET_CHAOS_P99_FACTOR:.0} × clean"), verdict(met));
        }
    }

    /// The disturbance note, what the engine logged and the problems.
    fn print_notes(&self) {
        if let Some(cores) = self.disturbance() {
            println!("\nnote: other processes kept {cores:.2} cores busy during a phase; the figures are disturbed");
        }
        if !self.engine_log.is_empty() {
            let lines: usize = self.engine_log.iter().map(|(count, _)| count).sum();
            println!("\nthe engine logged {lines} warning/error line(s):");
            for (count, message) in self.engine_log.iter().take(ENGINE_LOG_SHOWN) {
                println!("  {count:>6} × {message}");
            }
            if self.engine_log.len() > ENGINE_LOG_SHOWN {
                println!("  … and {} other distinct lines", self.engine_log.len() - ENGINE_LOG_SHOWN);
            }
        }
        for problem in &self.problems {
            println!("\nPROBLEM: {problem}");
        }
    }

    /// The most CPU other processes took in any phase, when enough to
    /// disturb the figures.
    fn disturbance(&self) -> Option<f64> {
        self.phase_cpu().into_iter().filter_map(|(_, usage)| usage?.other).reduce(f64::max).filter(|cores| *cores >= DISTURBING_CORES)
    }

    /// Each phase's CPU usage; `None` for the phases that did not run.
    /// Comparing node counts, each engine phase's name says the count.
    fn phase_cpu(&self) -> Vec<(String, Option<Usage>)> {
        let mut phases = vec![("raw".to_owned(), self.raw.as_ref().map(|run| run.cpu.clone()))];
        for run in &self.runs {
            let suffix = if self.options.compares_nodes() { format!(", {}", nodes_text(run.nodes)) } else { String::new() };
            phases.extend(run_cpu(run, &suffix));
        }
        phases.push(("clean".to_owned(), self.clean.as_ref().map(|run| run.run.cpu.clone())));
        phases.push(("failing".to_owned(), self.failing.as_ref().map(|run| run.run.cpu.clone())));
        let chaos = &self.chaos;
        phases.push(("calibration".to_owned(), chaos.calibration.as_ref().map(|run| run.cpu.clone())));
        phases.push(("clean".to_owned(), chaos.clean.as_ref().map(|run| run.run.cpu.clone())));
        phases.push(("chaos".to_owned(), chaos.chaos.as_ref().map(|run| run.run.cpu.clone())));
        phases
    }
}

/// The hostile tenant's lines of the chaos run.
fn print_bad_tenant(bad: &BadTenant) {
    let (pending, unrouted) = bad.undecided();
    println!(
        "{:<24}: {} events accepted; hostile-loop: {} out_of_fuel, {} left undecided \
         ({} pending undecided, {} with no delivery yet)",
        format!("bad tenant {}", bad.name),
        thousands(bad.accepted as f64),
        thousands(bad.out_of_fuel() as f64),
        thousands((pending + unrouted) as f64),
        thousands(pending as f64),
        thousands(unrouted as f64)
    );
    println!(
        "{:<24}: {} of {} delivered slowly ({} answered by the sink when the nine's were in)",
        "bad tenant, slow",
        thousands(bad.slow.get("succeeded").copied().unwrap_or(0) as f64),
        thousands(bad.accepted_paid as f64),
        thousands(bad.slow_received as f64)
    );
    let listed = |deliveries: &BTreeMap<String, usize>| {
        let parts: Vec<String> = deliveries.iter().map(|(kind, count)| format!("{kind} {}", thousands(*count as f64))).collect();
        if parts.is_empty() { "none".to_owned() } else { parts.join("; ") }
    };
    match &bad.unread {
        Some(why) => println!("{:<24}: cannot be read: {why}", "bad tenant, deliveries"),
        None => {
            println!("{:<24}: {}", "  hostile, by status", listed(&bad.hostile));
            println!("{:<24}: {}", "  slow, by status", listed(&bad.slow));
        }
    }
    let inputs = &bad.inputs;
    let kinds: Vec<String> = inputs
        .answers
        .iter()
        .map(|(kind, statuses)| {
            let answers: Vec<String> = statuses.iter().map(|(status, count)| format!("{status} ×{count}")).collect();
            format!("{kind}: {}", answers.join(", "))
        })
        .collect();
    println!("{:<24}: {} requests; {}", "bad inputs", thousands(inputs.requests() as f64), kinds.join("; "));
    if !inputs.accepted.is_empty() {
        println!(
            "{:<24}: {} ({} order.paid), {} of them delivered through hostile-loop",
            "  bad inputs accepted",
            thousands(inputs.accepted.len() as f64),
            thousands(inputs.accepted_paid as f64),
            thousands(inputs.accepted_delivered as f64)
        );
    }
    if !inputs.not_refused.is_empty() {
        let kinds: Vec<String> = inputs.not_refused.iter().map(|(kind, count)| format!("{kind} ×{count}")).collect();
        println!("{:<24}: {}  (a 4xx expected)", "  NOT refused", kinds.join(", "));
    }
}

/// The CPU usage of a run's max and half phases, named with `suffix`.
fn run_cpu(run: &NodesRun, suffix: &str) -> [(String, Option<Usage>); 2] {
    [
        (format!("max{suffix}"), run.max.as_ref().map(|run| run.cpu.clone())),
        (format!("half{suffix}"), run.half.as_ref().map(|(_, run)| run.cpu.clone())),
    ]
}

/// Average cores used in each phase by the engine, the database server,
/// this tool and the rest of the machine.
fn cpu_line(phases: &[(String, Option<Usage>)]) -> Option<String> {
    let parts: Vec<String> = phases
        .iter()
        .filter_map(|(name, usage)| {
            let usage = usage.as_ref()?;
            let shares: Vec<String> = [("engine", usage.engine), ("db", usage.database), ("tool", usage.tool), ("other", usage.other)]
                .into_iter()
                .filter_map(|(who, cores)| Some(format!("{who} {:.2}", cores?)))
                .collect();
            (!shares.is_empty()).then(|| format!("{name}: {}", shares.join(", ")))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `1 node`, `3 nodes`.
pub fn nodes_text(nodes: usize) -> String {
    if nodes == 1 { "1 node".to_owned() } else { format!("{nodes} nodes") }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn latency(latency: Option<Latency>) -> String {
    match latency {
        Some(l) => format!("p50 {}  p99 {}  max {}", ms(l.p50), ms(l.p99), ms(l.max)),
        None => "no events arrived".to_owned(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The engine's threads by name with their share of its CPU and, given
/// the engine's cost per event, theirs: the four largest, then the rest.
fn threads_line(by_name: &[ThreadShare], engine_per_event: Option<Duration>) -> Option<String> {
    const SHOWN: usize = 4;
    let part = |name: &str, share: f64| match engine_per_event {
        Some(cost) => format!("{name} {share:.1} % ({:.1} µs)", micros(cost.mul_f64(share / 100.0))),
        None => format!("{name} {share:.1} %"),
    };
    let mut parts: Vec<String> = by_name.iter().take(SHOWN).map(|t| part(&t.name, t.share)).collect();
    let rest = &by_name[SHOWN.min(by_name.len())..];
    let rest_share: f64 = rest.iter().map(|t| t.share).sum();
    if rest_share >= 0.05 {
        parts.push(part(&format!("{} other names", rest.len()), rest_share));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Resident memory after the first minute of a long phase and at its end:
/// how much it grew once warm. `None` for phases shorter than two minutes.
fn soak_line(samples: &[(Duration, u64)]) -> Option<String> {
    const WARM: Duration = Duration::from_secs(60);
    let &(end, last) = samples.last().filter(|(at, _)| *at >= 2 * WARM)?;
    let &(_, warm) = samples.iter().find(|(at, _)| *at >= WARM)?;
    let peak = samples.iter().map(|(_, rss)| *rss).max().unwrap_or(last);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    Some(format!(
        "{:.1} MiB after 1 min, {:.1} MiB after {:.0} s ({:+.1} %), highest {:.1} MiB",
        mib(warm),
        mib(last),
        end.as_secs_f64(),
        100.0 * (last as f64 - warm as f64) / warm as f64,
        mib(peak)
    ))
}

/// Each minute's p99 (and its max, where a stall shows, with when in the
/// phase its event was issued), in order.
fn minutes_line(minutes: &[Option<Minute>]) -> String {
    let minute = |m: &Option<Minute>| {
        m.map_or_else(|| "-".to_owned(), |m| format!("{} (max {} at {})", ms(m.latency.p99), ms(m.latency.max), secs(m.worst_issued)))
    };
    minutes.iter().map(minute).collect::<Vec<_>>().join(", ")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A rate or count rounded to a whole number, with thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
