//! `--preview`: what a script preview costs live delivery. The engine
//! stores 10,000 events through the `paid-orders` configuration, then three
//! measurements: the live end-to-end rate alone, the same with previews of
//! those 10,000 events (a candidate with another threshold, both scripts run
//! on each) running back to back, and one preview alone, timed: its
//! throughput in events per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::engine::ADMIN_KEY;
use crate::generator::{self, Pace, Plan, Posted, Target};
use crate::options::Options;
use crate::sink::Sink;
use crate::{Clock, note, report};

/// Stored events a preview runs on.
pub const EVENTS: usize = 10_000;
/// How long the sink may take to receive a phase's events after it ends.
const DRAIN: Duration = Duration::from_secs(60);
/// The most the live rate may drop while previews run.
const MAX_DROP: f64 = 0.10;

/// What a preview run measured.
#[derive(Debug, Default)]
pub struct PreviewRun {
    /// Live end-to-end rate (events/s) without and with previews running.
    pub alone: f64,
    pub with_preview: f64,
    /// Preview lines streamed during the phase with previews.
    pub previewed_meanwhile: u64,
    /// One preview of [`EVENTS`] events, alone: events per second.
    pub throughput: f64,
    pub preview_events: u64,
}

impl PreviewRun {
    pub fn print(&self, raw: Option<f64>) {
        println!();
        println!("sluice-load --preview: previews of {} stored events (both scripts run on each)", report::thousands(EVENTS as f64));
        if let Some(raw) = raw {
            println!("raw POST to sink        : {} req/s", report::thousands(raw));
        }
        println!("preview alone           : {} events/s ({} events)", report::thousands(self.throughput), self.preview_events);
        println!("live e2e, no preview    : {} ev/s", report::thousands(self.alone));
        println!(
            "live e2e, previews on   : {} ev/s ({} events previewed meanwhile)",
            report::thousands(self.with_preview),
            report::thousands(self.previewed_meanwhile as f64)
        );
        let drop = 1.0 - self.with_preview / self.alone.max(1.0);
        let verdict = if drop <= MAX_DROP { "met" } else { "NOT met" };
        println!("target live drop ≤ {:.0} %  : {verdict} ({:+.1} %)", MAX_DROP * 100.0, -drop * 100.0);
    }
}

pub async fn run(options: &Options, clock: Clock, http: &reqwest::Client, sink: &Sink, script: Vec<u8>) -> Result<PreviewRun, String> {
    note("preview: starting the engine");
    let cluster = Cluster::start(1, options.database.as_ref()).await?;
    let measured = measure(options, clock, http, sink, &cluster, script).await;
    if measured.is_err() {
        for (count, line) in cluster.log_digest() {
            note(&format!("engine log ({count}×): {line}"));
        }
    }
    cluster.stop().await;
    measured
}

async fn measure(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    script: Vec<u8>,
) -> Result<PreviewRun, String> {
    cluster.route_to(http, sink, script).await?;
    let node = cluster.node_1()?;
    let configs: Value = node.get_as(http, ADMIN_KEY, "/v1/configurations").await?;
    let config = configs["items"][0]["id"].as_str().ok_or("no configuration")?.to_owned();
    let preview_url = format!("{}/v1/configurations/{config}/preview", node.url);

    // The stored events previews run on.
    let mut stored = 0;
    while stored < EVENTS {
        let posted = live(options, clock, http, sink, cluster, Duration::from_secs(2)).await?;
        stored += posted.accepted.len();
        note(&format!("preview: {stored} events stored"));
    }

    let mut run = PreviewRun::default();
    // One preview alone.
    let started = Instant::now();
    run.preview_events = preview_once(http, &preview_url).await?;
    run.throughput = run.preview_events as f64 / started.elapsed().as_secs_f64();
    note(&format!("preview: alone {} events/s", report::thousands(run.throughput)));

    let posted = live(options, clock, http, sink, cluster, options.duration).await?;
    run.alone = delivered_rate(sink, &posted).await?;
    note(&format!("preview: live alone {} ev/s", report::thousands(run.alone)));

    let stop = Arc::new(AtomicBool::new(false));
    let previewed = Arc::new(AtomicU64::new(0));
    let background = tokio::spawn({
        let (http, url, stop, previewed) = (http.clone(), preview_url.clone(), stop.clone(), previewed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let mut response = start_preview(&http, &url).await?;
                while let Some(chunk) = response.chunk().await.map_err(|e| format!("preview: {e}"))? {
                    previewed.fetch_add(chunk.iter().filter(|&&b| b == b'\n').count() as u64, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        }
    });
    // Let the first preview get going.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let posted = live(options, clock, http, sink, cluster, options.duration).await;
    stop.store(true, Ordering::Relaxed);
    let posted = posted?;
    run.with_preview = delivered_rate(sink, &posted).await?;
    background.abort();
    run.previewed_meanwhile = previewed.load(Ordering::Relaxed);
    note(&format!("preview: live with previews {} ev/s", report::thousands(run.with_preview)));
    Ok(run)
}

/// Posts at the maximum rate for `duration`.
async fn live(
    options: &Options,
    clock: Clock,
    http: &reqwest::Client,
    sink: &Sink,
    cluster: &Cluster,
    duration: Duration,
) -> Result<Posted, String> {
    sink.drain();
    let plan = Plan {
        label: "preview",
        target: Target::Engine { urls: cluster.ingest_urls(), key: ADMIN_KEY.to_owned() },
        concurrency: options.concurrency,
        batch: options.batch,
        duration,
        pace: Pace::Max,
        units: None,
    };
    let posted = generator::run(http, clock, plan).await?;
    if posted.failures.count > 0 {
        return Err(format!("preview: {} request(s) failed: {}", posted.failures.count, posted.failures.samples.join(" | ")));
    }
    Ok(posted)
}

/// Events per second from the phase's first request to its last event's
/// arrival at the sink.
async fn delivered_rate(sink: &Sink, posted: &Posted) -> Result<f64, String> {
    let deadline = Instant::now() + DRAIN;
    while !sink.has_all(&posted.accepted) {
        if Instant::now() > deadline {
            return Err("preview: the phase's events did not all arrive within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = sink.drain();
    let last = posted.accepted.iter().filter_map(|id| arrivals.first.get(id)).max().copied().unwrap_or_default();
    Ok(posted.accepted.len() as f64 / last.saturating_sub(posted.started).as_secs_f64().max(1e-3))
}

/// Starts a preview of the last [`EVENTS`] events with another threshold.
async fn start_preview(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, String> {
    let body = json!({"candidate": {"params": {"min_amount": "50"}}, "window": {"last": EVENTS}});
    let response = http
        .post(url)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| format!("preview: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("preview: {status}: {}", response.text().await.unwrap_or_default()));
    }
    Ok(response)
}

/// One preview of the last [`EVENTS`] events with another threshold, to
/// its end; the events it covered.
async fn preview_once(http: &reqwest::Client, url: &str) -> Result<u64, String> {
    let text = start_preview(http, url).await?.text().await.map_err(|e| format!("preview: {e}"))?;
    let summary: Value = text.lines().last().and_then(|l| serde_json::from_str(l).ok()).ok_or("preview: no summary line")?;
    summary["summary"]["events"].as_u64().ok_or_else(|| format!("preview: {summary}"))
}
