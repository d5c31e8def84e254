//! What the phases measured, and the summary printed at the end.

use std::time::Duration;

use crate::cpu::Usage;
use crate::generator::{self, EVENT_BYTES, Posted};
use crate::options::Options;
use crate::sink::Arrivals;

/// The targets.
const TARGET_SHARE_OF_RAW: f64 = 40.0;
const TARGET_P99_AT_HALF: Duration = Duration::from_millis(50);
/// With one receiver in ten failing, the healthy receivers' delivery rate
/// as a share of the clean run's.
const TARGET_HEALTHY_SHARE: f64 = 80.0;

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
}

impl Delivered {
    pub fn of(posted: &Posted, arrivals: &Arrivals) -> Delivered {
        Delivered::of_ids(&posted.accepted, arrivals)
    }

    /// How the events `ids` (accepted ones) reached the sink.
    pub fn of_ids(ids: &[String], arrivals: &Arrivals) -> Delivered {
        let mut latencies = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut last_arrival = Duration::ZERO;
        for id in ids {
            match arrivals.first.get(id) {
                Some(&arrived) => {
                    last_arrival = last_arrival.max(arrived);
                    // Every id the generator made carries its issue time.
                    if let Some(issued) = generator::issued_at(id) {
                        latencies.push(arrived.saturating_sub(issued));
                    }
                }
                None => missing.push(id.clone()),
            }
        }
        Delivered {
            received: latencies.len(),
            missing,
            repeats: arrivals.repeats,
            last_arrival,
            latency: Latency::of(latencies),
        }
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
}

/// A phase through the engine.
#[derive(Debug)]
pub struct EngineRun {
    pub posted: Posted,
    pub delivered: Delivered,
    pub cpu: Usage,
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

pub fn per_second(count: usize, window: Duration) -> f64 {
    if window.is_zero() { 0.0 } else { count as f64 / window.as_secs_f64() }
}

/// Everything the run found; printed at the end, whatever happened.
#[derive(Debug)]
pub struct Summary {
    pub options: Options,
    pub raw: Option<RawRun>,
    pub max: Option<EngineRun>,
    /// The offered rate and the phase run at it.
    pub half: Option<(f64, EngineRun)>,
    /// `--failures`: every receiver answering 200, then one in ten answering 500.
    pub clean: Option<SpreadRun>,
    pub failing: Option<SpreadRun>,
    /// `--failures`: how many configurations the events are spread over.
    pub units: usize,
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
            max: None,
            half: None,
            clean: None,
            failing: None,
            units: 0,
            engine_log: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn print(&self) {
        if self.options.failures {
            self.print_failures();
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
        println!("sluice-load: {} posters, {EVENT_BYTES}-byte events, raw {}{engine}", o.concurrency, secs(o.raw_duration));
        let raw_rate = self.raw.as_ref().map(RawRun::rate);
        if let Some(raw_rate) = raw_rate {
            println!("{:<24}: {} req/s", "raw POST to sink", thousands(raw_rate));
        }
        // The end-to-end rate as a percentage of the raw one.
        let share = self.max.as_ref().zip(raw_rate.filter(|r| *r > 0.0)).map(|(max, raw)| 100.0 * max.delivery_rate() / raw);
        if let Some(max) = &self.max {
            println!(
                "{:<24}: {} ev/s  ({} events accepted in {})",
                "ingest (engine)",
                thousands(max.ingest_rate()),
                thousands(max.posted.accepted.len() as f64),
                secs(max.posted.window())
            );
            let share_text = share.map(|s| format!("  ({s:.1} % of raw)")).unwrap_or_default();
            println!("{:<24}: {} ev/s{share_text}", "end-to-end delivery", thousands(max.delivery_rate()));
            println!("{:<24}: {}", "latency at max", latency(max.delivered.latency));
        }
        if let Some((target, half)) = &self.half {
            println!(
                "{:<24}: achieved {} ev/s  {}",
                format!("half rate ({} ev/s)", thousands(*target)),
                thousands(half.ingest_rate()),
                latency(half.delivered.latency)
            );
        }
        if let Some(line) = self.cpu_line() {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        if let Some(share) = share {
            println!("{:<24}: {}", format!("target e2e ≥ {TARGET_SHARE_OF_RAW:.0} % of raw"), verdict(share >= TARGET_SHARE_OF_RAW));
        }
        if let Some(p99) = self.half.as_ref().and_then(|(_, half)| half.delivered.latency).map(|l| l.p99) {
            println!("{:<24}: {}", format!("target p99 < {} ms @ half", TARGET_P99_AT_HALF.as_millis()), verdict(p99 < TARGET_P99_AT_HALF));
        }
    }

    /// The clean and failing runs side by side, with their target.
    fn print_failures(&self) {
        let o = &self.options;
        println!();
        println!(
            "sluice-load: failure runs; {} posters, {EVENT_BYTES}-byte events, {} event(s) per ingest request, \
             {} configurations, runs {} each",
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
        if let Some(line) = self.cpu_line() {
            println!("{:<24}: {line}", "CPU, cores busy");
        }
        if let Some(ratio) = ratio {
            println!("{:<24}: {}", format!("target ratio ≥ {TARGET_HEALTHY_SHARE:.0} %"), verdict(ratio >= TARGET_HEALTHY_SHARE));
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

    /// Average cores used in each phase by the engine, this tool and the
    /// rest of the machine.
    fn cpu_line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .phase_cpu()
            .into_iter()
            .filter_map(|(name, usage)| {
                let usage = usage?;
                let shares: Vec<String> = [("engine", usage.engine), ("tool", usage.tool), ("other", usage.other)]
                    .into_iter()
                    .filter_map(|(who, cores)| Some(format!("{who} {:.2}", cores?)))
                    .collect();
                (!shares.is_empty()).then(|| format!("{name}: {}", shares.join(", ")))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The most CPU other processes took in any phase, when enough to
    /// disturb the figures.
    fn disturbance(&self) -> Option<f64> {
        self.phase_cpu()
            .into_iter()
            .filter_map(|(_, usage)| usage?.other)
            .reduce(f64::max)
            .filter(|cores| *cores >= DISTURBING_CORES)
    }

    /// Each phase's CPU usage; `None` for the phases that did not run.
    fn phase_cpu(&self) -> [(&'static str, Option<Usage>); 5] {
        [
            ("raw", self.raw.as_ref().map(|run| run.cpu)),
            ("max", self.max.as_ref().map(|run| run.cpu)),
            ("half", self.half.as_ref().map(|(_, run)| run.cpu)),
            ("clean", self.clean.as_ref().map(|run| run.run.cpu)),
            ("failing", self.failing.as_ref().map(|run| run.run.cpu)),
        ]
    }
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
