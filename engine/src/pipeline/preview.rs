//! Preview: what a candidate (another script version, other parameters)
//! would decide on stored events, beside what the configuration's current
//! script decides on them, event by event, with the request each would
//! send. Scripts are pure functions of the event and their parameters, so
//! this is exact, not a sample.
//!
//! Live routing comes first. Previews run on one thread of their own at the
//! lowest CPU priority, an event at a time, the previews of every tenant
//! taking turns (one running preview per tenant), and each event waits
//! while live events wait for routing (up to [`MAX_YIELD`], so that a
//! preview still ends under sustained load): a preview uses what live work
//! leaves idle, and at most one sandbox slot. This module owns that
//! thread, the windows and the comparison; it must never write to the store
//! or send anything.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::model::event::Event;
use crate::model::ids::{ConfigId, TenantId};
use crate::pipeline::configs::ActiveConfig;
use crate::pipeline::explain::{Action, Ran, Verdict, decide_again};
use crate::pipeline::lock;
use crate::pipeline::request::default_body;
use crate::sandbox::{Params, Sandbox, Script};
use crate::store::{EventFilter, EventRecord, PageRequest, Store, StoreError};

/// A script and its parameters, as one side of the comparison.
pub struct Side {
    /// `None`: no script (every selected event is delivered as it is).
    /// `Err`: why the script cannot be loaded.
    pub script: Option<Result<Arc<Script>, String>>,
    pub params: Arc<Params>,
}

impl Side {
    /// What the configuration runs now.
    pub fn current(config: &ActiveConfig) -> Self {
        Self { script: config.script.clone(), params: config.params.clone() }
    }

    fn decide(&self, sandbox: &Sandbox, config: &ConfigId, event: &Event) -> Verdict {
        let ran = match &self.script {
            None => Ran::NoScript,
            Some(Ok(script)) => Ran::Script(script),
            Some(Err(why)) => Ran::Unavailable(why.clone()),
        };
        decide_again(sandbox, config, 0, ran, &self.params, event)
    }
}

/// Which stored events a preview runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The last N events the configuration selected.
    Last(usize),
    /// Events received in `[since, until)` that the configuration selects now.
    Received { since: Option<i64>, until: Option<i64> },
    /// These events, by id.
    Events(Vec<String>),
}

/// How the candidate's decision on one event differs from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The same decision, the same request.
    Unchanged,
    /// Both deliver, with a different body or headers.
    ChangedRequest,
    /// Skipped or failed now, delivered by the candidate.
    NewlyDelivered,
    /// Delivered or failed now, skipped by the candidate.
    NewlySkipped,
    /// The candidate fails where the current script decides.
    NewError,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::ChangedRequest => "changed_request",
            Self::NewlyDelivered => "newly_delivered",
            Self::NewlySkipped => "newly_skipped",
            Self::NewError => "new_error",
        }
    }
}

/// One value that differs between the two requests' bodies.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JsonChange {
    /// JSON Pointer into the body (`""`: the whole body).
    pub path: String,
    /// Absent: not in this body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Value>,
}

/// Most body differences listed per event.
pub const MAX_CHANGES: usize = 20;

/// Both decisions on one event.
#[derive(Debug, Clone)]
pub struct Compared {
    pub event_id: String,
    pub change: Change,
    pub current: Verdict,
    pub candidate: Verdict,
    /// When both deliver: where the bodies differ (at most [`MAX_CHANGES`]).
    pub body_changes: Vec<JsonChange>,
    /// When both deliver: the headers the scripts add differ.
    pub headers_changed: bool,
}

/// Counts over a whole preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub events: u64,
    pub unchanged: u64,
    pub changed_request: u64,
    pub newly_delivered: u64,
    pub newly_skipped: u64,
    pub new_errors: u64,
    /// Events named in the window that are not stored (never received, or purged).
    pub not_stored: u64,
    pub current_fuel: u64,
    pub candidate_fuel: u64,
    /// The window held more events than a preview runs on.
    pub truncated: bool,
}

impl Summary {
    fn count(&mut self, c: &Compared) {
        self.events += 1;
        *match c.change {
            Change::Unchanged => &mut self.unchanged,
            Change::ChangedRequest => &mut self.changed_request,
            Change::NewlyDelivered => &mut self.newly_delivered,
            Change::NewlySkipped => &mut self.newly_skipped,
            Change::NewError => &mut self.new_errors,
        } += 1;
        self.current_fuel += c.current.fuel_used.unwrap_or(0) as u64;
        self.candidate_fuel += c.candidate.fuel_used.unwrap_or(0) as u64;
    }
}

/// What a preview streams, in order: an item per event, then the summary
/// (or why it stopped).
#[derive(Debug)]
pub enum Item {
    Event(Box<Compared>),
    /// An event id of the window that is not stored.
    NotStored(String),
    Summary(Summary),
    Failed(String),
}

/// Compares both decisions on an event.
pub fn compare(event: &Event, current: Verdict, candidate: Verdict) -> Compared {
    let (mut body_changes, mut headers_changed) = (Vec::new(), false);
    let change = match (current.action, candidate.action) {
        (Action::Deliver, Action::Deliver) => {
            let body = |v: &Verdict| match &v.body {
                Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
                None => serde_json::from_slice(&default_body(event)).unwrap_or(Value::Null),
            };
            diff(&mut String::new(), Some(&body(&current)), Some(&body(&candidate)), &mut body_changes);
            headers_changed = headers(&current) != headers(&candidate);
            if body_changes.is_empty() && !headers_changed { Change::Unchanged } else { Change::ChangedRequest }
        }
        (now, then) if now == then => Change::Unchanged,
        (_, Action::Deliver) => Change::NewlyDelivered,
        (_, Action::Skip) => Change::NewlySkipped,
        (_, Action::Error) => Change::NewError,
    };
    Compared { event_id: event.id.as_str().to_owned(), change, current, candidate, body_changes, headers_changed }
}

fn headers(v: &Verdict) -> Value {
    v.headers.as_deref().and_then(|h| serde_json::from_str(h).ok()).unwrap_or(Value::Array(Vec::new()))
}

/// Records where `a` and `b` differ below `path`, as JSON Pointers.
fn diff(path: &mut String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<JsonChange>) {
    if out.len() >= MAX_CHANGES || a == b {
        return;
    }
    let len = path.len();
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                diff(path, x.get(key), y.get(key), out);
                path.truncate(len);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                path.push_str(&format!("/{i}"));
                diff(path, x.get(i), y.get(i), out);
                path.truncate(len);
            }
        }
        _ => out.push(JsonChange { path: path.clone(), current: a.cloned(), candidate: b.cloned() }),
    }
}

/// One event to decide both ways, and where the answer goes.
struct Job {
    config: ConfigId,
    current: Arc<Side>,
    candidate: Arc<Side>,
    event: Event,
    reply: oneshot::Sender<Compared>,
}

/// Says whether live work is waiting.
pub type Busy = Arc<dyn Fn() -> bool + Send + Sync>;

/// The longest one preview event waits for live work to let up.
pub const MAX_YIELD: Duration = Duration::from_millis(50);
const YIELD_STEP: Duration = Duration::from_millis(2);

/// Runs previews on its low-priority thread.
pub struct Previewer {
    jobs: std::sync::mpsc::Sender<Job>,
    running: Arc<Mutex<HashSet<TenantId>>>,
    busy: Busy,
}

/// A tenant's turn to preview; it ends when dropped.
pub struct Turn {
    tenant: TenantId,
    running: Arc<Mutex<HashSet<TenantId>>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.tenant);
    }
}

/// Events read from the store at a time.
const PAGE: usize = 200;

impl Previewer {
    pub fn start(sandbox: Arc<Sandbox>, busy: Busy) -> std::io::Result<Arc<Self>> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("sluice-preview".into()).spawn(move || {
            lower_priority();
            while let Ok(job) = queue.recv() {
                let current = job.current.decide(&sandbox, &job.config, &job.event);
                let candidate = job.candidate.decide(&sandbox, &job.config, &job.event);
                let _ = job.reply.send(compare(&job.event, current, candidate));
            }
        })?;
        Ok(Arc::new(Self { jobs, running: Arc::default(), busy }))
    }

    /// The tenant's turn, unless one of its previews is running.
    pub fn turn(&self, tenant: &TenantId) -> Option<Turn> {
        lock(&self.running).insert(tenant.clone()).then(|| Turn { tenant: tenant.clone(), running: self.running.clone() })
    }

    /// Runs a preview in the background, streaming its items to `out`; it
    /// stops early when `out` is dropped (the client went away).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        self: &Arc<Self>,
        turn: Turn,
        store: Store,
        config: Arc<ActiveConfig>,
        candidate: Side,
        window: Window,
        max_events: usize,
        out: mpsc::Sender<Item>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let run = Run {
                previewer: &this,
                config: &config,
                current: Arc::new(Side::current(&config)),
                candidate: Arc::new(candidate),
                out: &out,
            };
            let last = match run.window(&store, window, max_events).await {
                Ok(Some(summary)) => Item::Summary(summary),
                Ok(None) => return, // the client went away
                Err(e) => Item::Failed(e.to_string()),
            };
            let _ = out.send(last).await;
        });
    }
}

/// One preview under way.
struct Run<'a> {
    previewer: &'a Previewer,
    config: &'a ActiveConfig,
    current: Arc<Side>,
    candidate: Arc<Side>,
    out: &'a mpsc::Sender<Item>,
}

impl Run<'_> {
    /// Runs the window; `None` when the client went away.
    async fn window(&self, store: &Store, window: Window, max_events: usize) -> Result<Option<Summary>, StoreError> {
        let (tenant, config) = (&self.config.tenant, &self.config.id);
        let mut summary = Summary::default();
        match window {
            Window::Last(n) => {
                let mut cursor: Option<String> = None;
                let mut left = n.min(max_events);
                while left > 0 {
                    let page = store.events_selected_by(tenant, config, cursor.as_deref(), left.min(PAGE) as i64).await?;
                    let Some((last, _)) = page.last() else { break };
                    cursor = Some(last.clone());
                    left -= page.len();
                    for (_, record) in page {
                        if !self.event(record, &mut summary).await {
                            return Ok(None);
                        }
                    }
                }
            }
            Window::Received { since, until } => {
                let filter = EventFilter { received_after: since, received_before: until, ..EventFilter::default() };
                let mut page = PageRequest { limit: PAGE as u32, cursor: None };
                'pages: loop {
                    let events = store.list_events(tenant, &filter, &page).await?;
                    for record in events.items {
                        if !self.config.spec.selects(&record.event.event_type, &record.event.organization_unit) {
                            continue;
                        }
                        if summary.events as usize >= max_events {
                            summary.truncated = true;
                            break 'pages;
                        }
                        if !self.event(record, &mut summary).await {
                            return Ok(None);
                        }
                    }
                    match events.next_cursor {
                        Some(next) => page.cursor = Some(next),
                        None => break,
                    }
                }
            }
            Window::Events(ids) => {
                for id in ids.into_iter().take(max_events) {
                    let sent = match store.get_event(tenant, &id).await {
                        Ok(record) => self.event(record, &mut summary).await,
                        Err(StoreError::NotFound) => {
                            summary.not_stored += 1;
                            self.out.send(Item::NotStored(id)).await.is_ok()
                        }
                        Err(e) => return Err(e),
                    };
                    if !sent {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(summary))
    }

    /// Decides one event both ways and streams it; `false` when the client
    /// went away.
    async fn event(&self, record: EventRecord, summary: &mut Summary) -> bool {
        let mut waited = Duration::ZERO;
        while (self.previewer.busy)() && waited < MAX_YIELD {
            tokio::time::sleep(YIELD_STEP).await;
            waited += YIELD_STEP;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            config: self.config.id.clone(),
            current: self.current.clone(),
            candidate: self.candidate.clone(),
            event: record.event,
            reply,
        };
        if self.previewer.jobs.send(job).is_err() {
            return false;
        }
        let Ok(compared) = answer.await else { return false };
        summary.count(&compared);
        self.out.send(Item::Event(Box::new(compared))).await.is_ok()
    }
}

/// Asks the OS to run this thread only when nothing else wants the CPU
/// (nice 19). On Linux, priority is per thread; elsewhere best effort.
fn lower_priority() {
    // SAFETY: setpriority reads no memory of ours; `0` names the calling thread on Linux.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if done != 0 {
        tracing::warn!("could not lower the preview thread's priority: previews compete with live routing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action, body: Option<&str>) -> Verdict {
        Verdict {
            action,
            reason: None,
            error_kind: None,
            body: body.map(str::to_owned),
            headers: None,
            logs: Value::Array(Vec::new()),
            fuel_used: Some(10),
        }
    }

    fn event() -> Event {
        crate::model::event::EventInput::from_json(
            r#"{"id": "e1", "type": "a.b", "organization_unit": "x", "occurred_at": "2026-01-01T00:00:00Z", "payload": {"n": 1}}"#,
        )
        .and_then(|e| e.validate(|| unreachable!("the event has an id")))
        .expect("event")
    }

    #[test]
    fn decisions_are_classified_by_what_the_candidate_changes() {
        let e = event();
        let c = |a, b| compare(&e, verdict(a, None), verdict(b, None)).change;
        assert_eq!(c(Action::Deliver, Action::Deliver), Change::Unchanged);
        assert_eq!(c(Action::Skip, Action::Skip), Change::Unchanged);
        assert_eq!(c(Action::Skip, Action::Deliver), Change::NewlyDelivered);
        assert_eq!(c(Action::Error, Action::Deliver), Change::NewlyDelivered);
        assert_eq!(c(Action::Deliver, Action::Skip), Change::NewlySkipped);
        assert_eq!(c(Action::Deliver, Action::Error), Change::NewError);
        assert_eq!(c(Action::Error, Action::Error), Change::Unchanged);
    }

    #[test]
    fn body_differences_are_listed_by_json_pointer() {
        let e = event();
        let current = verdict(Action::Deliver, Some(r#"{"a": 1, "list": [1, 2], "same": true, "k/x": 1}"#));
        let candidate = verdict(Action::Deliver, Some(r#"{"a": 2, "list": [1], "same": true, "new": null, "k/x": 2}"#));
        let compared = compare(&e, current, candidate);
        assert_eq!(compared.change, Change::ChangedRequest);
        let paths: Vec<&str> = compared.body_changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/k~1x", "/list/1", "/new"]);
        assert_eq!(compared.body_changes[2], JsonChange { path: "/list/1".into(), current: Some(2.into()), candidate: None });
        // The script's body against the default one (the event's envelope).
        let replaced = compare(&e, verdict(Action::Deliver, None), verdict(Action::Deliver, Some("{}")));
        assert_eq!(replaced.change, Change::ChangedRequest);
        assert!(replaced.body_changes.len() > 1 && replaced.body_changes.iter().all(|c| c.candidate.is_none()));
    }

    #[test]
    fn a_long_list_of_differences_is_cut_short() {
        let many: serde_json::Map<String, Value> = (0..100).map(|i| (format!("k{i:03}"), Value::from(i))).collect();
        let compared =
            compare(&event(), verdict(Action::Deliver, Some("{}")), verdict(Action::Deliver, Some(&Value::Object(many).to_string())));
        assert_eq!(compared.body_changes.len(), MAX_CHANGES);
    }
}
