//! `--backlog N`: what a backlog costs in memory. The one configuration's
//! receiver is down (every request to it answers 500), and the posters
//! send events as fast as the engine answers until N were accepted, each
//! one a delivery that cannot succeed and waits for its next attempt. The
//! engine's resident memory is sampled as the backlog grows and for a while
//! after posting ends, while the retry poller and the breaker's probes work
//! through it: pending work should wait in the store, not in RAM, so memory
//! should level off while the backlog keeps growing.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::engine::ADMIN_KEY;
use crate::generator::{self, Pace, Plan, Target};
use crate::options::Options;
use crate::sink::Sink;
use crate::{Clock, cpu, note, report};

/// Posting goes in rounds of this length; memory is read after each.
const ROUND: Duration = Duration::from_secs(10);
/// How long memory is watched after posting ends.
const SETTLE: Duration = Duration::from_secs(30);
/// Accepted events looked up at the end: each should have a delivery still
/// pending (or failed, its attempts used up by the breaker's probes).
const SPOT_CHECKS: usize = 20;
/// The most the engine's memory may grow from a tenth of the backlog to all
/// of it (and after it settles) for its cost to count as bounded.
const BOUNDED_GROWTH: f64 = 0.10;

/// What a backlog run measured.
#[derive(Debug, Default)]
pub struct BacklogRun {
    /// The backlog asked for.
    pub target: usize,
    /// (events accepted so far, the engine's resident bytes then), after
    /// each round of posting and, last, after settling.
    pub samples: Vec<(usize, u64)>,
    /// Accepted events in all.
    pub accepted: usize,
    /// How long posting took.
    pub posting: Duration,
    /// The engine's peak resident memory (VmHWM).
    pub peak: Option<u64>,
    /// Spot-checked events by the status of their delivery at the end.
    pub checked: std::collections::BTreeMap<String, usize>,
}

impl BacklogRun {
    /// Resident memory once a tenth of the backlog was in, and at the end.
    fn growth(&self) -> Option<(u64, u64, f64)> {
        let tenth = self.samples.iter().find(|(accepted, _)| *accepted * 10 >= self.target)?.1;
        let last = self.samples.last()?.1;
        Some((tenth, last, (last as f64 - tenth as f64) / tenth as f64))
    }

    pub fn print(&self, raw_rate: Option<f64>) {
        let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
        println!();
        println!(
            "sluice-load --backlog: {} events accepted in {} ({} ev/s) for a receiver that answers 500",
            report::thousands(self.accepted as f64),
            format_args!("{:.1} s", self.posting.as_secs_f64()),
            report::thousands(report::per_second(self.accepted, self.posting)),
        );
        if let Some(raw) = raw_rate {
            println!("{:<24}: {} req/s", "raw POST to sink", report::thousands(raw));
        }
        for (accepted, rss) in &self.samples {
            println!("{:<24}: {}", format!("rss at {} events", report::thousands(*accepted as f64)), mib(*rss));
        }
        if let Some(peak) = self.peak {
            println!("{:<24}: {}", "peak resident memory", mib(peak));
        }
        let statuses: Vec<String> = self.checked.iter().map(|(status, n)| format!("{n} {status}")).collect();
        println!("{:<24}: {}", "deliveries looked up", statuses.join(", "));
        if let Some((tenth, last, growth)) = self.growth() {
            let verdict = if growth <= BOUNDED_GROWTH { "met" } else { "NOT met" };
            println!(
                "target: memory bounded by the backlog (≤ {:.0} % growth from a tenth of it to the end): {verdict} ({} → {}, {:+.1} %)",
                BOUNDED_GROWTH * 100.0,
                mib(tenth),
                mib(last),
                growth * 100.0
            );
        }
    }
}

/// Starts an engine, routes to the sink's `/hook`, makes it answer 500, and
/// posts until `target` events were accepted.
pub async fn run(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    script: Vec<u8>,
    target: usize,
) -> Result<BacklogRun, String> {
    note(&format!("backlog: starting the engine for {} events to a receiver that is down", report::thousands(target as f64)));
    let cluster = Cluster::start(options.nodes.first().copied().unwrap_or(1), options.database.as_ref()).await?;
    let measured = measure(options, clock, http, sink, &cluster, script, target).await;
    if measured.is_err() {
        for (count, line) in cluster.log_digest() {
            note(&format!("engine log ({count}×): {line}"));
        }
    }
    cluster.stop().await;
    sink.fail_paths([]);
    measured
}

async fn measure(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    script: Vec<u8>,
    target: usize,
) -> Result<BacklogRun, String> {
    cluster.route_to(http, sink, script).await?;
    sink.fail_paths(["/hook".to_owned()]);
    let pids = cluster.pids();
    let mut run = BacklogRun { target, ..BacklogRun::default() };
    let mut samples: Vec<String> = Vec::new();
    let began = clock.now();
    while run.accepted < target {
        let plan = Plan {
            label: "backlog",
            target: Target::Engine { urls: cluster.ingest_urls(), key: ADMIN_KEY.to_owned() },
            concurrency: options.concurrency,
            batch: options.batch,
            duration: ROUND,
            pace: Pace::Max,
            units: None,
        };
        let posted = generator::run(http, clock, plan).await?;
        if posted.failures.count > 0 {
            return Err(format!("backlog: {} request(s) failed: {}", posted.failures.count, posted.failures.samples.join(" | ")));
        }
        run.accepted += posted.accepted.len();
        // A few from every round, to look up at the end.
        samples.extend(posted.accepted.iter().step_by(posted.accepted.len().div_ceil(4).max(1)).cloned());
        let rss = cpu::rss(&pids).ok_or("cannot read the engine's memory")?;
        run.samples.push((run.accepted, rss));
        note(&format!("backlog: {} events accepted, rss {:.1} MiB", report::thousands(run.accepted as f64), rss as f64 / 1048576.0));
    }
    run.posting = clock.now().saturating_sub(began);
    tokio::time::sleep(SETTLE).await;
    run.samples.push((run.accepted, cpu::rss(&pids).ok_or("cannot read the engine's memory")?));
    run.peak = cpu::peak_rss(&pids);

    let node = cluster.node_1()?;
    let step = samples.len().div_ceil(SPOT_CHECKS).max(1);
    for id in samples.iter().step_by(step) {
        let event: Value = node.get_as(http, ADMIN_KEY, &format!("/v1/events/{id}")).await?;
        let status = event["deliveries"][0]["status"].as_str().unwrap_or("none").to_owned();
        *run.checked.entry(status).or_default() += 1;
    }
    Ok(run)
}
