//! The load generator: posters sending 500-byte `order.paid` events, either
//! as fast as answers come back (closed loop) or on a fixed schedule (open
//! loop).
//!
//! Each event's id ends with the moment its request was issued, in µs on
//! the run's [`Clock`] — for paced posting, the moment it was *due*, so that
//! a generator falling behind shows up as latency instead of hiding it.
//! The sink reads the id from `webhook-id` and latency needs no lookup.
//!
//! Events all go to one organization unit, or, for the failure runs, are
//! spread evenly over `load/t0`, `load/t1`, …; the id then says which. For
//! the chaos runs, each request is one tenant's, in turn, with its own key;
//! its events go to the tenant's unit (`load/t3` for tenant 3), and the id
//! says which in the same way.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Clock;

/// Size of one event as posted, in bytes.
pub const EVENT_BYTES: usize = 500;

/// Longest any single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The organization unit of events that are not spread.
const DEFAULT_UNIT: &str = "emea/nl/store-12";

/// Distinct failure messages kept for the report.
const FAILURE_SAMPLES: usize = 5;

/// Where the posters send.
#[derive(Debug, Clone)]
pub enum Target {
    /// The sink: one event per request, success is any 2xx.
    Raw { url: String },
    /// The engines' ingest endpoints, one per node, taken in turn: success
    /// is 202 with per-event results.
    Engine { urls: Vec<String>, key: String },
    /// The engines' ingest endpoints, as for [`Target::Engine`], posted to
    /// by several tenants: request slot `s` (see [`Pace`]) is tenant
    /// `s % keys.len()`'s, made with its key `keys[tenant]`, and all its
    /// events go to organization unit [`unit_name`]`(tenant)`. Each poster
    /// posts for one tenant (poster `i` for tenant `i % keys.len()`), as
    /// tenants are clients of their own: the engine holding one tenant's
    /// answers back (its backpressure) holds back that tenant's posters
    /// only, not the others' requests queued behind them.
    Tenants { urls: Vec<String>, keys: Vec<String> },
}

/// How fast to post.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each poster sends its next request as soon as the last is answered.
    /// Poster `i`'s `k`-th request is request slot `i + k × concurrency`
    /// (for [`Target::Tenants`]: its tenant's slots, in turn with the
    /// tenant's other posters).
    Max,
    /// Requests are due at evenly spaced moments making this many events
    /// per second, taken in turn by the posters.
    EventsPerSecond(f64),
}

/// One phase of posting.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Starts every event id, keeping the phases' events apart.
    pub label: &'static str,
    pub target: Target,
    pub concurrency: usize,
    pub batch: usize,
    pub duration: Duration,
    pub pace: Pace,
    /// `Some(n)`: spread the events evenly over the organization units
    /// [`unit_name`]`(0)` to `(n - 1)`. `None`: all to one unit.
    pub units: Option<usize>,
}

/// Failed requests: how many, and a few distinct reasons.
#[derive(Debug, Default)]
pub struct Failures {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Failures {
    pub fn add(&mut self, reason: String) {
        self.count += 1;
        if self.samples.len() < FAILURE_SAMPLES && !self.samples.contains(&reason) {
            self.samples.push(reason);
        }
    }

    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        for reason in other.samples {
            if self.samples.len() < FAILURE_SAMPLES && !self.samples.contains(&reason) {
                self.samples.push(reason);
            }
        }
    }
}

/// What a phase of posting did.
#[derive(Debug, Default)]
pub struct Posted {
    /// When the phase began, on the run's clock.
    pub started: Duration,
    /// When the last answer came back.
    pub finished: Duration,
    /// Requests answered with success.
    pub requests: u64,
    /// Engine target: ids of the events answered `accepted`.
    pub accepted: Vec<String>,
    /// Engine target: events answered `duplicate` (never expected: ids are fresh).
    pub duplicates: u64,
    pub failures: Failures,
    /// Engine target: how long each request waited for its answer (any
    /// answer), counted from when it was due.
    pub answers: Vec<Duration>,
}

impl Posted {
    /// From the first request issued to the last answer.
    pub fn window(&self) -> Duration {
        self.finished.saturating_sub(self.started)
    }
}

/// Organization unit number `unit` of spread events: `load/t{unit}`.
pub fn unit_name(unit: usize) -> String {
    format!("load/t{unit}")
}

/// The unit a spread event went to, from its id
/// (`{label}-t{unit}-{poster}-{sequence}-{issued µs}`); `None` for events
/// that were not spread.
pub fn unit_of(id: &str) -> Option<usize> {
    id.split('-').nth(1)?.strip_prefix('t')?.parse().ok()
}

/// When the request carrying event `id` was issued (or due).
pub fn issued_at(id: &str) -> Option<Duration> {
    let (_, micros) = id.rsplit_once('-')?;
    micros.parse().ok().map(Duration::from_micros)
}

/// One event, posted on its own to check that a node routes: id `id`, to
/// organization unit `unit` (`None`: the unit of events that are not spread).
pub fn probe_event(id: &str, unit: Option<usize>) -> String {
    let unit = unit.map_or(Cow::Borrowed(DEFAULT_UNIT), |unit| Cow::Owned(unit_name(unit)));
    Events::new().one(id, &unit)
}

/// Runs one phase: `plan.concurrency` posters until `plan.duration` has passed.
pub async fn run(http: &reqwest::Client, clock: Clock, plan: Plan) -> Result<Posted, String> {
    if let Pace::EventsPerSecond(rate) = plan.pace
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("cannot pace at {rate} events/s"));
    }
    if plan.units == Some(0) {
        return Err("cannot spread events over 0 organization units".to_owned());
    }
    if let Target::Engine { urls, .. } | Target::Tenants { urls, .. } = &plan.target
        && urls.is_empty()
    {
        return Err("no engine to post to".to_owned());
    }
    if let Target::Tenants { keys, .. } = &plan.target
        && (keys.is_empty() || plan.units.is_some())
    {
        return Err("tenants' requests need a key each and their own units".to_owned());
    }
    if let Target::Tenants { keys, .. } = &plan.target
        && plan.concurrency < keys.len()
    {
        return Err(format!("{} tenants need at least as many posters, not {}", keys.len(), plan.concurrency));
    }
    let started = clock.now();
    let phase = Arc::new(Phase { http: http.clone(), clock, started, events: Events::new(), plan });
    let posters: Vec<_> = (0..phase.plan.concurrency).map(|index| tokio::spawn(phase.clone().poster(index))).collect();
    let mut posted = Posted { started, ..Posted::default() };
    for poster in posters {
        let tally = poster.await.map_err(|e| format!("a poster failed: {e}"))?;
        posted.finished = posted.finished.max(tally.finished);
        posted.requests += tally.requests;
        posted.accepted.extend(tally.accepted);
        posted.duplicates += tally.duplicates;
        posted.failures.merge(tally.failures);
        posted.answers.extend(tally.answers);
    }
    Ok(posted)
}

struct Phase {
    http: reqwest::Client,
    clock: Clock,
    started: Duration,
    events: Events,
    plan: Plan,
}

/// One poster's share of [`Posted`].
#[derive(Default)]
struct Tally {
    finished: Duration,
    requests: u64,
    accepted: Vec<String>,
    duplicates: u64,
    failures: Failures,
    answers: Vec<Duration>,
}

impl Phase {
    /// Poster `index` of the phase; it takes request slots `index`, `index
    /// + concurrency`, `index + 2 × concurrency`, … (a tenant's poster: its
    /// tenant's, see [`Target::Tenants`]).
    async fn poster(self: Arc<Self>, index: usize) -> Tally {
        let plan = &self.plan;
        let batch = match plan.target {
            Target::Raw { .. } => 1,
            Target::Engine { .. } | Target::Tenants { .. } => plan.batch,
        };
        let end = self.started + plan.duration;
        let mut tally = Tally::default();
        for round in 0.. {
            let slot = match &plan.target {
                // Poster `index` is the `j`-th of its tenant's `n` posters
                // and takes that tenant's `j`-th, `(j + n)`-th, … slots.
                Target::Tenants { keys, .. } => {
                    let (tenants, tenant) = (keys.len(), index % keys.len());
                    let n = (plan.concurrency - tenant).div_ceil(tenants);
                    tenant + (index / tenants + round * n) * tenants
                }
                Target::Raw { .. } | Target::Engine { .. } => index + round * plan.concurrency,
            };
            let issued = match plan.pace {
                Pace::Max => self.clock.now(),
                Pace::EventsPerSecond(rate) => {
                    let due = self.started + Duration::from_secs_f64(slot as f64 * batch as f64 / rate);
                    if due < end {
                        tokio::time::sleep_until(self.clock.instant(due).into()).await;
                    }
                    due
                }
            };
            if issued >= end {
                break;
            }
            let tenant = match &plan.target {
                Target::Tenants { keys, .. } => Some(slot % keys.len()),
                Target::Raw { .. } | Target::Engine { .. } => None,
            };
            let events: Vec<(String, Unit)> = (0..batch)
                .map(|n| {
                    let sequence = round * batch + n;
                    let micros = issued.as_micros();
                    match (tenant, plan.units) {
                        (Some(tenant), _) => {
                            (format!("{}-t{tenant}-{index}-{sequence}-{micros}", plan.label), Cow::Owned(unit_name(tenant)))
                        }
                        (None, None) => (format!("{}-{index}-{sequence}-{micros}", plan.label), Cow::Borrowed(DEFAULT_UNIT)),
                        // Poster `index` starts at unit `index`, so the units
                        // are evenly covered at every moment, not just overall.
                        (None, Some(units)) => {
                            let unit = (index + sequence) % units;
                            (format!("{}-t{unit}-{index}-{sequence}-{micros}", plan.label), Cow::Owned(unit_name(unit)))
                        }
                    }
                })
                .collect();
            match &plan.target {
                Target::Raw { url } => self.post_raw(url, &events[0], &mut tally).await,
                // Round-robin over the nodes, each poster starting at its
                // own, so every node gets an even share at every moment.
                Target::Engine { urls, key } => {
                    let url = &urls[(index + round) % urls.len()];
                    self.post_events(url, key, &events, &mut tally).await
                }
                Target::Tenants { urls, keys } => {
                    let url = &urls[(index + round) % urls.len()];
                    let key = &keys[slot % keys.len()];
                    self.post_events(url, key, &events, &mut tally).await
                }
            }
            tally.finished = self.clock.now();
            if !matches!(plan.target, Target::Raw { .. }) {
                tally.answers.push(tally.finished.saturating_sub(issued));
            }
        }
        tally
    }

    async fn post_raw(&self, url: &str, (id, unit): &(String, Unit), tally: &mut Tally) {
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(self.events.one(id, unit))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(_) => tally.requests += 1,
                Err(e) => tally.failures.add(format!("reading the answer: {e}")),
            },
            Ok(response) => tally.failures.add(format!("answered {}", response.status())),
            Err(e) => tally.failures.add(describe(&e)),
        }
    }

    async fn post_events(&self, url: &str, key: &str, events: &[(String, Unit)], tally: &mut Tally) {
        let body = match events {
            [(id, unit)] => self.events.one(id, unit),
            _ => self.events.array(events),
        };
        let sent = self
            .http
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return tally.failures.add(describe(&e)),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return tally.failures.add(format!("reading the answer: {e}")),
        };
        if status != reqwest::StatusCode::ACCEPTED {
            return tally.failures.add(format!("answered {status}: {}", text.chars().take(200).collect::<String>()));
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(results) = answer["events"].as_array() else {
            return tally.failures.add(format!("202 without per-event results: {text}"));
        };
        tally.requests += 1;
        for result in results {
            match (result["id"].as_str(), result["status"].as_str()) {
                (Some(id), Some("accepted")) => tally.accepted.push(id.to_owned()),
                (Some(_), Some("duplicate")) => tally.duplicates += 1,
                _ => tally.failures.add(format!("unexpected per-event result: {result}")),
            }
        }
    }
}

/// A transport error with its cause (refused, reset, timed out).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_owned() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// An event's organization unit: the default one, or a spread one.
type Unit = Cow<'static, str>;

/// Writes events of exactly [`EVENT_BYTES`] bytes (for ids and units
/// under ~150 bytes together).
struct Events {
    /// The length of an event with an empty id and unit and no padding.
    skeleton: usize,
    /// `EVENT_BYTES` bytes of filler to take the padding from.
    filler: String,
}

impl Events {
    fn new() -> Self {
        Self { skeleton: event("", "", "").len(), filler: "x".repeat(EVENT_BYTES) }
    }

    fn one(&self, id: &str, unit: &str) -> String {
        let padding = EVENT_BYTES.saturating_sub(self.skeleton + id.len() + unit.len());
        event(id, unit, &self.filler[..padding])
    }

    fn array(&self, events: &[(String, Unit)]) -> String {
        let mut body = String::with_capacity(events.len() * (EVENT_BYTES + 1) + 1);
        for (n, (id, unit)) in events.iter().enumerate() {
            body.push(if n == 0 { '[' } else { ',' });
            body.push_str(&self.one(id, unit));
        }
        body.push(']');
        body
    }
}

/// An `order.paid` event whose amount the `paid-orders` script delivers.
fn event(id: &str, unit: &str, padding: &str) -> String {
    let mut json = String::with_capacity(EVENT_BYTES);
    write!(
        json,
        r#"{{"id":"{id}","type":"order.paid","organization_unit":"{unit}","occurred_at":"2026-11-22T10:00:00Z","source":{{"application":"load"}},"payload":{{"order_id":"ord-1042","amount":129.95,"currency":"EUR","customer":{{"id":"customer/1000","tier":"gold"}},"lines":[{{"sku":"sku-1","quantity":2,"price":49.99}},{{"sku":"sku-2","quantity":1,"price":29.97}}],"note":"{padding}"}}}}"#
    )
    .expect("writing to a String cannot fail");
    json
}
