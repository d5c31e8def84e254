//! Storage: tenants, keys, scripts, configurations, events, deliveries and
//! attempts, behind one [`Store`] whose methods speak the engine's types.
//!
//! This module owns the schema, the migrations and every SQL statement. It
//! must never decide anything: no routing, no validation beyond what the
//! schema enforces, no HTTP. Every query that reads or changes tenant data
//! takes the tenant, so that no caller can forget it.
//!
//! SQLite is the embedded default, for one node. Writes (ingest, routing
//! results, attempts, admin changes) go through one writer thread that
//! commits them in groups: one fsync for many requests. PostgreSQL is the
//! second backend, for several nodes sharing one database: the same methods,
//! with leases owned by a [`NodeId`], and [`Change`]s announced to the other
//! nodes. Nothing above this module knows which backend runs. Reads whose
//! SQL is the same in both are written once, in `reads`; each backend keeps
//! what truly differs: writes, claims and leases, notifications.
//!
//! Secrets at rest are sealed here, at the boundary, with the store's
//! [`Keyring`]: a configuration's `spec` is written sealed (bound to its
//! tenant and id) and handed back open, and compiled script code is written
//! with a tag and handed back only when the tag checks (else `None`, and the
//! caller compiles the uploaded bytes). Callers never see either format.

mod event_walk;
mod log_writes;
mod payload_walk;
mod postgres;
mod reads;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;
mod text;

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::auth::{KeyHash, Scope};
use crate::model::event::Event;
use crate::model::ids::{AttemptId, CatcherId, CaughtId, ConfigId, DeliveryId, KeyId, PortalLinkId, ScriptId, TenantId};
use crate::model::secrets::{Keyring, OpenError};
use reads::Reads;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// What can go wrong in the store. Conflicts are the caller's concern; the
/// rest are the server's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique name is taken.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// A referenced row (a configuration's script) is not the tenant's.
    #[error("unknown {0}")]
    UnknownReference(&'static str),
    /// The caller's `If-Match` version is not the stored one.
    #[error("stale version: the stored version is {current}")]
    StaleVersion { current: i64 },
    /// A script is still used by configurations.
    #[error("in use by {0} configuration(s)")]
    InUse(i64),
    #[error("monthly quota of {quota} events reached ({used} used)")]
    QuotaExceeded { quota: i64, used: i64 },
    /// The node cannot start: its settings do not fit the store.
    #[error("{0}")]
    Setup(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// The database could not be reached (down, restarting, the network in
    /// between) or cannot take writes now (a full disk, an I/O error, a
    /// commit that failed): a fault of no request's, and the same request
    /// may succeed a moment later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)) => true,
            StoreError::Database(sqlx::Error::Database(e)) => match e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                Some(_) => e.code().and_then(|code| code.parse().ok()).is_some_and(sqlite_unavailable),
                // Connection exceptions (class 08), and the server shutting
                // down or starting up (57P01-57P03).
                None => e.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")),
            },
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => sqlite_unavailable(e.extended_code),
            // Nothing of the group was stored (or, when only the flush
            // failed, its durability is unknown): whatever failed, it was
            // the disk's or the database's, not the rows'.
            StoreError::Commit(_) => true,
            _ => false,
        }
    }
}

/// Whether a SQLite result code (extended or primary) is the database's
/// condition rather than the statement's: busy or locked, out of memory,
/// read-only, an I/O error, a full disk, a file that cannot be opened.
fn sqlite_unavailable(code: i32) -> bool {
    use rusqlite::ffi;
    matches!(
        code & 0xff,
        ffi::SQLITE_BUSY
            | ffi::SQLITE_LOCKED
            | ffi::SQLITE_NOMEM
            | ffi::SQLITE_READONLY
            | ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_CANTOPEN
    )
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub use crate::model::timestamp::{now_ms, rfc3339};

/// A page request: newest first, `cursor` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const MAX: u32 = 500;
    pub fn limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX))
    }
}

#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn from_items(items: Vec<T>, req: &PageRequest, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = (items.len() as i64 == req.limit()).then(|| items.last().map(&cursor_of)).flatten();
        Self { items, next_cursor }
    }
}

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub monthly_quota: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When it stops working by itself (console sessions); `None`: never.
    pub expires_at: Option<i64>,
}

/// A key to store: its hash, never its secret.
#[derive(Clone)]
pub struct NewKey {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub prefix: String,
    pub hash: KeyHash,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
}

impl NewKey {
    /// The record of this key, stored at `now`.
    fn into_record(self, now: i64) -> KeyRecord {
        KeyRecord {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            prefix: self.prefix,
            scopes: self.scopes,
            created_at: now,
            revoked_at: None,
            expires_at: self.expires_at,
        }
    }
}

/// A portal link to store: its token's hash, never the token.
#[derive(Debug, Clone)]
pub struct NewPortalLink {
    pub id: PortalLinkId,
    pub tenant_id: TenantId,
    pub hash: KeyHash,
    pub scopes: Vec<Scope>,
    /// How long the session it opens lasts, in ms.
    pub session_ms: i64,
    pub expires_at: i64,
    pub created_by: Option<KeyId>,
}

/// A hosted catcher: where it answers and how.
#[derive(Debug, Clone)]
pub struct CatcherRecord {
    pub id: CatcherId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The status and body it answers every request with.
    pub answer_status: i64,
    pub answer_body: String,
    pub created_at: i64,
}

/// One request a catcher received, as received (the body's bytes kept).
#[derive(Debug, Clone)]
pub struct Caught {
    pub id: CaughtId,
    pub received_at: i64,
    pub method: String,
    pub uri: String,
    /// A JSON object of the headers.
    pub headers: String,
    /// Its first [`CAUGHT_BODY_KEPT`] bytes.
    pub body: Vec<u8>,
    /// The whole body's length.
    pub body_size: i64,
}

/// Requests a catcher keeps; older ones are dropped as new ones come.
pub const CAUGHT_KEPT: i64 = 100;

/// Body bytes a catcher keeps of each request (the rest is counted, not kept).
pub const CAUGHT_BODY_KEPT: usize = 64 << 10;

/// The session key a redeemed portal link makes: its tenant, scopes and
/// expiry come from the link's row.
#[derive(Clone)]
pub struct SessionKey {
    pub id: KeyId,
    pub prefix: String,
    pub hash: KeyHash,
}

#[derive(Debug, Clone)]
pub struct ScriptRecord {
    pub id: ScriptId,
    pub name: String,
    /// 1 for the first script uploaded under `name`, then 2, 3, …
    pub version: i64,
    pub sha256: String,
    pub size: i64,
    pub wit_version: String,
    pub created_at: i64,
    /// The API key that uploaded it.
    pub created_by: Option<KeyId>,
}

#[derive(Debug, Clone)]
pub struct ConfigRecord {
    pub id: ConfigId,
    pub tenant_id: TenantId,
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    /// The validated configuration as JSON; the domain parses it. Sealed
    /// in the database, open here.
    pub spec: String,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a configuration row holds besides its id and tenant, and who
/// writes it.
#[derive(Debug, Clone)]
pub struct ConfigWrite {
    pub name: String,
    pub script_id: Option<ScriptId>,
    /// The script's parameters, a JSON object (`{}` without a script):
    /// recorded in the configuration's script history, in the clear.
    pub script_params: String,
    pub spec: String,
    pub changed_by: Option<KeyId>,
}

impl ConfigWrite {
    /// As stored, when that differs (the spec is JSON: nothing to encode).
    fn encoded(&self) -> Option<Self> {
        match text::encode(&self.name) {
            Cow::Borrowed(_) => None,
            Cow::Owned(name) => Some(Self { name, ..self.clone() }),
        }
    }
}

/// From which configuration version on a configuration runs which script
/// version with which parameters: one row per change.
#[derive(Debug, Clone)]
pub struct ConfigScriptRecord {
    pub config_id: ConfigId,
    pub version: i64,
    pub script_id: Option<ScriptId>,
    /// The script's hash when it was recorded (kept after it is deleted).
    pub script_sha256: Option<String>,
    /// JSON object.
    pub params: String,
    pub changed_at: i64,
    pub changed_by: Option<KeyId>,
}

#[derive(Debug, Clone)]
pub struct EventTypeRecord {
    pub name: String,
    pub description: Option<String>,
    pub first_seen: i64,
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub event: Event,
    pub received_at: i64,
    pub routed: bool,
}

/// Per event of an ingest batch: stored, or a repeat of a stored id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored { seq: i64 },
    Duplicate,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub organization_unit: Option<String>,
    pub received_after: Option<i64>,
    pub received_before: Option<i64>,
    pub status: Option<EventStatus>,
}

/// An event's status, derived from its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Not routed yet, or a delivery still pending.
    Pending,
    /// Every delivery ended well (delivered or filtered), or none matched.
    Done,
    /// A delivery failed or its script errored, and no later delivery to
    /// that configuration (a replay) superseded it.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Filtered,
    ScriptError,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Filtered => "filtered",
            Self::ScriptError => "script_error",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Filtered, Self::ScriptError, Self::Succeeded, Self::Failed].into_iter().find(|s| s.as_str() == raw)
    }
}

/// How long the node that stores an event claims it for its own routing
/// (PostgreSQL: its `unrouted` row is written claimed; on SQLite's one node
/// the pipeline's hold is the claim): the routing writes every row by then,
/// or the claim runs out and another node may route the event (an event
/// routed after half of it is routed in full, handing nothing on).
pub const ROUTING_CLAIM_MS: i64 = 5 * 60 * 1000;

/// How long a node may go without saying it is alive before the others
/// take its claims and leases (see [`Store::keep_alive`]): six of its
/// heartbeats missed.
pub const NODE_SILENT_MS: i64 = 30_000;

/// Which life of its node a claim was taken in. A node the others took for
/// dead ([`Store::keep_alive`]) lost its claims and leases to them; when it
/// speaks again it starts a new epoch, and what it still holds in memory
/// from the old one (deliveries handed on unwritten, events it stored and
/// has not routed) writes nothing that relies on those claims: the nodes
/// that took its events over route and send them. SQLite's one node has one
/// epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Epoch(i64);

#[cfg(test)]
impl Epoch {
    pub fn nth(n: i64) -> Self {
        Self(n)
    }
}

/// The routing of one event: a delivery row per matching configuration,
/// but for those handed straight to a sender, whose rows their first
/// attempt writes (see [`Unwritten`]).
#[derive(Debug, Clone)]
pub struct Routed {
    pub tenant: TenantId,
    pub event_seq: i64,
    /// The rows written now.
    pub deliveries: Vec<NewDelivery>,
    /// Deliveries handed on without a row. While there are any, the event
    /// stays unrouted (on PostgreSQL under the claim its ingest took), and
    /// the write of the last of their rows marks it routed. Only a routing
    /// by the node that stored the event, within its claim, hands any on.
    pub handed: usize,
    /// Found by the recovery scan (its node died, its routing failed or
    /// was left undone): rows for configurations that have one are not
    /// added again, and the event must be this node's or its claim run out.
    pub resumed: bool,
    /// The epoch of this node's claim on the event, which rows handed on
    /// rely on: with any handed on, nothing is written once it has ended.
    pub epoch: Epoch,
}

impl Routed {
    /// A routing whose rows are all written at once (nothing handed on).
    pub fn written(tenant: TenantId, event_seq: i64, deliveries: Vec<NewDelivery>) -> Self {
        Self { tenant, event_seq, deliveries, handed: 0, resumed: false, epoch: Epoch::default() }
    }

    /// Whether recording it writes anything: not when every delivery is
    /// handed on (their rows, when written, mark the event routed).
    fn writes(&self) -> bool {
        self.handed == 0 || !self.deliveries.is_empty()
    }
}

/// A delivery handed to a sender before its row was written. Its first
/// attempt writes the row, settled, in the attempt's transaction (or, held
/// back unattempted, its release writes it pending), and marks the event
/// routed once its routing's rows are all written. One that waits long in
/// its sender is shown meanwhile by a row written pending and leased
/// ([`Store::write_pending`]), which the attempt then settles.
#[derive(Debug)]
pub struct Unwritten {
    pub tenant: TenantId,
    pub event_seq: i64,
    /// As routing decided it (text already encoded for the store).
    pub delivery: NewDelivery,
    /// When: the row's creation time.
    pub routed_at: i64,
    /// How many delivery rows the event has once its routing is all
    /// written: the write that reaches it marks the event routed.
    pub awaiting: i64,
    /// A pending row of it has been asked for, to show it while it waits.
    pub shown: std::sync::atomic::AtomicBool,
    /// The epoch of the claim it was handed on under: its row is not
    /// written once that has ended.
    pub epoch: Epoch,
    /// The store's count of unwritten deliveries no row shows yet (the
    /// backlog gauge's share of them), which this one is in until shown or
    /// dropped.
    uncounted: Arc<AtomicI64>,
}

impl Unwritten {
    /// Marks it shown; `true` if it was not yet (the caller writes the row).
    pub fn mark_shown(&self) -> bool {
        let first = !self.shown.swap(true, Ordering::Relaxed);
        if first {
            self.uncounted.fetch_sub(1, Ordering::Relaxed);
        }
        first
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        if !*self.shown.get_mut() {
            self.uncounted.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The routing result for one event × configuration.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub config_id: ConfigId,
    pub config_version: i64,
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    /// JSON array of the script's log lines.
    pub script_logs: Option<String>,
    /// The script's replacement body.
    pub body: Option<String>,
    /// JSON array of headers the script added.
    pub headers: Option<String>,
    /// Pending without a decision yet: its script was paused, and decides
    /// when the delivery comes due.
    pub undecided: bool,
    pub next_attempt_at: Option<i64>,
    /// Set when the router hands the delivery straight to a sender.
    pub lease_until: Option<i64>,
    /// Fuel its script used deciding it; `None`: no script ran.
    pub fuel_used: Option<i64>,
}

impl NewDelivery {
    /// A fresh delivery to send now, leased until `lease_until` to the
    /// sender it is handed to; nothing decided against it yet.
    pub fn due_now(config_id: ConfigId, config_version: i64, now: i64, lease_until: i64) -> Self {
        Self {
            id: DeliveryId::generate(),
            config_id,
            config_version,
            status: DeliveryStatus::Pending,
            reason: None,
            error_kind: None,
            script_logs: None,
            fuel_used: None,
            body: None,
            headers: None,
            undecided: false,
            next_attempt_at: Some(now),
            lease_until: Some(lease_until),
        }
    }

    /// Its free text as stored (logs, headers and body are JSON).
    fn encode(&mut self) {
        text::encode_opt(&mut self.reason);
        text::encode_opt(&mut self.error_kind);
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: String,
    pub event_seq: i64,
    pub configuration_id: ConfigId,
    pub configuration_version: i64,
    pub status: DeliveryStatus,
    /// The delivery this one replays (whose decision it reuses).
    pub replay_of: Option<DeliveryId>,
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    pub script_logs: serde_json::Value,
    /// Fuel its script used deciding it; `None`: no script ran.
    pub fuel_used: Option<i64>,
    pub body: Option<String>,
    pub headers: Option<String>,
    /// Waiting for its paused script to decide (see [`NewDelivery::undecided`]).
    pub undecided: bool,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub configuration_id: Option<ConfigId>,
    pub event_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed; no attempt follows.
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }

    /// The state it leaves its delivery in.
    pub fn settles_as(self) -> DeliveryStatus {
        match self {
            Self::Succeeded => DeliveryStatus::Succeeded,
            Self::Retry => DeliveryStatus::Pending,
            Self::Failed => DeliveryStatus::Failed,
        }
    }
}

/// One attempt, its bodies, and what it does to its delivery.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: AttemptId,
    pub tenant_id: TenantId,
    pub delivery_id: DeliveryId,
    /// The delivery's configuration, whose failure streak this counts in.
    pub config_id: ConfigId,
    pub number: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub method: String,
    pub uri: String,
    pub response_status: Option<i64>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    /// JSON object, secrets already redacted.
    pub request_headers: String,
    pub response_headers: Option<String>,
    pub request_body: Option<String>,
    /// As received: it need not be UTF-8.
    pub response_body: Option<Vec<u8>>,
    /// When the next attempt is due, for [`AttemptOutcome::Retry`].
    pub next_attempt_at: Option<i64>,
    /// The first attempt of a delivery whose row is not written yet: it is
    /// written with the attempt.
    pub unwritten: Option<Arc<Unwritten>>,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub delivery_id: DeliveryId,
    pub number: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub method: String,
    pub uri: String,
    pub response_status: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub request_headers: serde_json::Value,
    pub response_headers: serde_json::Value,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// The answer's exact bytes, when they are not UTF-8 (`response_body`
    /// then shows U+FFFD for what is not text).
    pub response_body_base64: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub delivery_id: Option<DeliveryId>,
    pub configuration_id: Option<ConfigId>,
    pub started_after: Option<i64>,
    pub started_before: Option<i64>,
}

/// Deliveries a claim leaves in the store this time: those of tenants and
/// configurations whose queue in the sender is full.
#[derive(Debug, Clone, Default)]
pub struct ClaimSkip {
    pub tenants: Vec<TenantId>,
    pub configs: Vec<ConfigId>,
}

/// A pending delivery whose attempt is due, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub tenant_id: TenantId,
    pub event: Event,
}

/// A delivery added to an event after its routing: a replay of an earlier
/// delivery, or a configuration's late decision (recovery).
#[derive(Debug, Clone)]
pub struct AddedDelivery {
    pub event_seq: i64,
    pub delivery: NewDelivery,
    /// The delivery this one replays. The row is added only while that one
    /// is still the event's newest delivery to the configuration (`None`:
    /// only while the event has none to it), so that two replays or
    /// recoveries racing each other add it once.
    pub replay_of: Option<DeliveryId>,
}

/// A position in a scan of a tenant's events in arrival order: the scan
/// continues after the event received at `received_at` with `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at: i64,
    pub seq: i64,
}

impl EventCursor {
    /// Before every event received at `received_at` or later.
    pub fn from(received_at: i64) -> Self {
        Self { received_at, seq: 0 }
    }
}

/// What one chunk of the payload purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgedPayloads {
    /// Attempts whose request and response bodies were removed.
    pub payloads: u64,
    /// Where the next chunk starts; `None` once no attempt older than the
    /// cutoff holds its bodies any more.
    pub resume: Option<PayloadCursor>,
}

/// Where a chunk of the payload purge starts: after a tenant, in id
/// order (the default: at the first). A chunk goes on from where the last
/// stopped, so that a purge visits each tenant once, however many chunks
/// it takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadCursor {
    after: String,
}

/// What one chunk of the event purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgedEvents {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub payloads: u64,
}

/// Names an engine process among the nodes sharing one database: delivery
/// leases carry it, so that a restarted node takes its own back at once
/// while the others' wait for their expiry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// 1 to 128 visible ASCII characters.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        if !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("node id `{}`: use 1 to 128 visible ASCII characters", raw.escape_debug()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A change made through another node, which this node's caches must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Config {
        tenant: TenantId,
        id: ConfigId,
    },
    /// An API key was revoked or deleted.
    Key {
        id: KeyId,
    },
    /// A tenant's settings (its quota) changed.
    Tenant {
        id: TenantId,
    },
    /// Changes may have been missed (the connection dropped): drop all.
    Lost,
}

/// How a configuration's deliveries made since some time stand, counted
/// up to a bound so that a busy configuration costs a bounded read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Per status (`pending`, `succeeded`, …), of the newest deliveries.
    pub by_status: Vec<(String, i64)>,
    /// More deliveries were made than were counted (see [`STATS_BOUND`]).
    pub capped: bool,
}

/// The most deliveries a window's counts read.
pub const STATS_BOUND: i64 = 100_000;

/// The whole store's backlog and configurations, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries not yet settled.
    pub pending: i64,
    /// When the oldest of them was made (one handed on unwritten: when
    /// its event arrived), Unix ms.
    pub oldest_pending_at: Option<i64>,
    pub configurations_enabled: i64,
    pub configurations_disabled: i64,
}

/// What the console's overview shows of one configuration.
#[derive(Debug, Clone, Default)]
pub struct ConfigStats {
    pub last_hour: DeliveryCounts,
    pub last_day: DeliveryCounts,
    /// When the oldest delivery still pending was made, Unix ms.
    pub oldest_pending_at: Option<i64>,
    /// Its failed attempts in a row, when it is failing.
    pub streak: Option<FailureStreak>,
}

/// A configuration's failed attempts in a row, across nodes, after an
/// attempt was recorded: `failures` is 0 after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureStreak {
    pub failures: i64,
    /// When the first failure of the streak was recorded, Unix ms.
    pub since: i64,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the log; the configuration's failure streak after it.
    Logged(FailureStreak),
    /// Not written: its delivery was handed on unwritten in an epoch of
    /// this node that has ended. The nodes that took this one for dead
    /// route that event again, send it and count what its receiver says;
    /// this node's attempt must raise no notice and move no breaker.
    Void,
}

/// A script's code: as uploaded, and compiled by the uploading node.
#[derive(Debug, Clone)]
pub struct ScriptCode {
    pub sha256: String,
    pub bytes: Vec<u8>,
    /// Only when its tag checks: code that could have been written by
    /// anyone but a node holding the keys is never handed out to be loaded.
    pub compiled: Option<Vec<u8>>,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Seals configurations and tags compiled code.
    keys: Arc<Keyring>,
    /// Deliveries of this node handed on unwritten that no row shows: the
    /// store's own count of pending work it holds no row for.
    unwritten: Arc<AtomicI64>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Forwards a method to the backend.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(db) => db.$method($($arg),*).await,
            Backend::Postgres(db) => db.$method($($arg),*).await,
        }
    };
}

/// Runs a read both backends share (see [`reads`]) on the backend's reader
/// pool.
macro_rules! read {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(db) => Reads(&db.read).$method($($arg),*).await,
            Backend::Postgres(db) => Reads(&db.pool).$method($($arg),*).await,
        }
    };
}

/// What [`Store::reseal_configs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Rows now sealed under the current key.
    pub resealed: usize,
    /// Rows no held key opens (sealed under a key dropped too early).
    pub unreadable: usize,
}

/// What a configuration's sealed spec is bound to: a spec copied into
/// another row (another tenant's) does not open there.
/// What a console session's seal is bound to: nothing else opens with it.
const SESSION_CONTEXT: &[u8] = b"console-session";

fn config_context(tenant: &TenantId, id: &ConfigId) -> Vec<u8> {
    format!("configuration/{}/{}", tenant.as_str(), id.as_str()).into_bytes()
}

/// What compiled code's tag is bound to: the uploaded bytes it was made from.
fn code_subject(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl Store {
    /// Opens (creating if needed) the SQLite file at `path` and migrates it.
    pub async fn open_sqlite(path: &Path, keys: Arc<Keyring>) -> Result<Self> {
        Ok(Self { backend: Backend::Sqlite(SqliteStore::open(path).await?), keys, unwritten: Arc::default() })
    }

    /// Connects to the PostgreSQL database at `url` (which must exist),
    /// migrates it, and serves as `node` among the nodes sharing it. Every
    /// node must hold the same `keys`.
    pub async fn open_postgres(url: &str, node: NodeId, keys: Arc<Keyring>) -> Result<Self> {
        Ok(Self { backend: Backend::Postgres(PostgresStore::open(url, node).await?), keys, unwritten: Arc::default() })
    }

    /// A configuration's spec as stored: sealed, bound to its row.
    fn sealed(&self, tenant: &TenantId, id: &ConfigId, write: &ConfigWrite) -> ConfigWrite {
        ConfigWrite { spec: self.keys.seal(write.spec.as_bytes(), &config_context(tenant, id)), ..write.clone() }
    }

    /// A configuration row with its spec opened. A spec written before
    /// sealing existed is plain JSON: read as it is, sealed when next written.
    fn opened(&self, mut record: ConfigRecord) -> Result<ConfigRecord> {
        if Keyring::is_sealed(&record.spec) {
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("configuration {}: {e}", record.id));
            let plain = self.keys.open(&record.spec, &config_context(&record.tenant_id, &record.id)).map_err(|e| corrupt(&e))?;
            record.spec = String::from_utf8(plain).map_err(|e| corrupt(&e))?;
        }
        Ok(record)
    }

    /// Which backend runs, for the start-up log line.
    pub fn describe(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    /// Changes other nodes make, as they commit; `None` when no other node
    /// can write (SQLite).
    pub async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>> {
        dispatch!(self.watch())
    }

    /// Flushes pending writes and closes connections.
    pub async fn close(&self) {
        dispatch!(self.close())
    }

    // Tenants and keys.

    pub async fn tenant_count(&self) -> Result<i64> {
        read!(self.tenant_count())
    }
    /// The operator's tenant, created with its first admin key on first
    /// start; `None` when another node made it first.
    pub async fn bootstrap(&self, mut admin: NewKey, tenant_name: &str) -> Result<Option<TenantId>> {
        text::encode_owned(&mut admin.name);
        let tenant_name = text::encode(tenant_name);
        dispatch!(self.bootstrap(admin, &tenant_name))
    }
    pub async fn operator_tenant(&self) -> Result<Option<TenantId>> {
        read!(self.operator_tenant())
    }
    pub async fn create_tenant(&self, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let stored = text::encode(name);
        let mut record = dispatch!(self.create_tenant(&stored, monthly_quota))?;
        record.name = name.to_owned();
        Ok(record)
    }
    /// Renames a tenant and sets its monthly quota.
    pub async fn update_tenant(&self, id: &TenantId, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let stored = text::encode(name);
        let mut record = dispatch!(self.update_tenant(id, &stored, monthly_quota))?;
        record.name = name.to_owned();
        Ok(record)
    }
    pub async fn get_tenant(&self, id: &TenantId) -> Result<TenantRecord> {
        read!(self.get_tenant(id))
    }
    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<TenantRecord>> {
        read!(self.list_tenants(page))
    }
    pub async fn create_key(&self, mut key: NewKey) -> Result<KeyRecord> {
        let name = key.name.clone();
        text::encode_owned(&mut key.name);
        let mut record = dispatch!(self.create_key(key))?;
        record.name = name;
        Ok(record)
    }
    pub async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<KeyRecord>> {
        read!(self.list_keys(tenant, page))
    }
    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord> {
        dispatch!(self.revoke_key(tenant, id))
    }
    /// The live key with this hash: not revoked, not expired.
    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        read!(self.find_key(hash, now_ms()))
    }
    pub async fn create_portal_link(&self, link: NewPortalLink) -> Result<()> {
        dispatch!(self.create_portal_link(&link))
    }
    /// Spends the unused, unexpired link with this token hash and makes its
    /// session key, in one transaction; [`StoreError::NotFound`] for an
    /// unknown, used or expired link.
    pub async fn redeem_portal_link(&self, hash: &KeyHash, session: SessionKey) -> Result<KeyRecord> {
        dispatch!(self.redeem_portal_link(hash, session, now_ms()))
    }

    pub async fn create_catcher(&self, catcher: CatcherRecord, hash: KeyHash) -> Result<CatcherRecord> {
        let name = catcher.name.clone();
        let stored = CatcherRecord { name: text::encode(&name).into_owned(), ..catcher };
        let mut record = dispatch!(self.create_catcher(stored, hash))?;
        record.name = name;
        Ok(record)
    }
    pub async fn list_catchers(&self, tenant: &TenantId) -> Result<Vec<CatcherRecord>> {
        read!(self.list_catchers(tenant))
    }
    pub async fn get_catcher(&self, tenant: &TenantId, id: &CatcherId) -> Result<CatcherRecord> {
        read!(self.get_catcher(tenant, id))
    }
    pub async fn delete_catcher(&self, tenant: &TenantId, id: &CatcherId) -> Result<()> {
        dispatch!(self.delete_catcher(tenant, id))
    }
    /// Records a request to the catcher whose token has this hash, keeping
    /// its newest [`CAUGHT_KEPT`]; its answer, or `None` for no catcher.
    pub async fn catch(&self, hash: &KeyHash, mut caught: Caught) -> Result<Option<CatcherRecord>> {
        caught.body_size = caught.body.len() as i64;
        caught.body.truncate(CAUGHT_BODY_KEPT);
        text::encode_owned(&mut caught.method);
        text::encode_owned(&mut caught.uri);
        text::encode_owned(&mut caught.headers);
        dispatch!(self.catch(hash, caught))
    }
    /// A catcher's requests, newest first.
    pub async fn caught(&self, tenant: &TenantId, id: &CatcherId) -> Result<Vec<Caught>> {
        read!(self.caught(tenant, id))
    }

    /// Seals a console session's cookie under the engine's current key, so
    /// that any node opens it and nobody can read or forge it.
    pub fn seal_session(&self, plain: &[u8]) -> String {
        self.keys.seal(plain, SESSION_CONTEXT)
    }
    pub fn open_session(&self, sealed: &str) -> Option<Vec<u8>> {
        self.keys.open(sealed, SESSION_CONTEXT).ok()
    }

    // Scripts.

    /// Stores an uploaded script with the code this node compiled for it,
    /// as the next version of its name (`script.version` is not read), and
    /// answers the version it got.
    pub async fn insert_script(&self, tenant: &TenantId, script: &ScriptRecord, bytes: &[u8], compiled: Option<&[u8]>) -> Result<i64> {
        let encoded;
        let script = match text::encode(&script.name) {
            Cow::Borrowed(_) => script,
            Cow::Owned(name) => {
                encoded = ScriptRecord { name, ..script.clone() };
                &encoded
            }
        };
        let tagged = compiled.map(|code| self.keys.tag_code(&code_subject(bytes), code));
        let compiled = tagged.as_deref();
        dispatch!(self.insert_script(tenant, script, bytes, compiled))
    }
    pub async fn get_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptRecord> {
        read!(self.get_script(tenant, id))
    }
    /// A script's uploaded bytes, and the compiled code stored with them
    /// only when its tag checks.
    pub async fn script_code(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptCode> {
        let mut code: ScriptCode = read!(self.script_code(tenant, id))?;
        code.compiled = code.compiled.take().and_then(|framed| match self.keys.verify_code(&code_subject(&code.bytes), framed) {
            Ok(compiled) => Some(compiled),
            Err(OpenError::NotSealed) => {
                tracing::debug!(script = %id, "compiled code stored without a tag: compiling the uploaded bytes");
                None
            }
            Err(e) => {
                tracing::warn!(script = %id, reason = %e, "stored compiled code refused: compiling the uploaded bytes");
                None
            }
        });
        Ok(code)
    }
    /// Newest first; `name`: only that name's versions.
    pub async fn list_scripts(&self, tenant: &TenantId, name: Option<&str>, page: &PageRequest) -> Result<Page<ScriptRecord>> {
        let name = name.map(text::encode);
        let name = name.as_deref();
        read!(self.list_scripts(tenant, name, page))
    }
    /// Whether a stored script of any tenant has these bytes.
    pub async fn script_hash_used(&self, sha256: &str) -> Result<bool> {
        read!(self.script_hash_used(sha256))
    }
    /// Refused with [`StoreError::InUse`] while a configuration uses it.
    pub async fn delete_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<()> {
        dispatch!(self.delete_script(tenant, id))
    }

    // Configurations.

    pub async fn insert_config(&self, tenant: &TenantId, id: &ConfigId, write: &ConfigWrite) -> Result<ConfigRecord> {
        let sealed = self.sealed(tenant, id, write);
        let encoded = sealed.encoded();
        let write = encoded.as_ref().unwrap_or(&sealed);
        self.opened(dispatch!(self.insert_config(tenant, id, write))?)
    }
    pub async fn get_config(&self, tenant: &TenantId, id: &ConfigId) -> Result<ConfigRecord> {
        self.opened(read!(self.get_config(tenant, id))?)
    }
    /// The configuration's recent deliveries and backlog (the caller checked
    /// that it belongs to the tenant).
    pub async fn config_stats(&self, id: &ConfigId) -> Result<ConfigStats> {
        read!(self.config_stats(id, now_ms()))
    }
    /// Events the tenant stored this calendar month (UTC), and the month.
    pub async fn monthly_usage(&self, tenant: &TenantId) -> Result<(i64, String)> {
        let now = now_ms();
        Ok((read!(self.monthly_usage(tenant, now))?, rows::month_of(now)))
    }
    /// All tenants' backlog and configurations, read at a metrics scrape.
    /// Pending deliveries (those of this node handed on unwritten among
    /// them) and the oldest one's creation.
    pub async fn backlog(&self) -> Result<Backlog> {
        let mut backlog: Backlog = read!(self.backlog())?;
        backlog.pending += self.unwritten.load(Ordering::Relaxed).max(0);
        Ok(backlog)
    }
    /// Every tenant's configurations by id after `after`, opened.
    pub async fn all_configs_after(&self, after: &str, limit: i64) -> Result<Vec<ConfigRecord>> {
        let page: Vec<ConfigRecord> = read!(self.configs_after(after, limit))?;
        page.into_iter().map(|r| self.opened(r)).collect()
    }
    pub async fn list_configs(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ConfigRecord>> {
        let page: Page<ConfigRecord> = read!(self.list_configs(tenant, page))?;
        let items = page.items.into_iter().map(|r| self.opened(r)).collect::<Result<_>>()?;
        Ok(Page { items, next_cursor: page.next_cursor })
    }
    /// Replaces the configuration if its version is still `expected`.
    pub async fn update_config(&self, tenant: &TenantId, id: &ConfigId, expected: i64, write: &ConfigWrite) -> Result<ConfigRecord> {
        let sealed = self.sealed(tenant, id, write);
        let encoded = sealed.encoded();
        let write = encoded.as_ref().unwrap_or(&sealed);
        self.opened(dispatch!(self.update_config(tenant, id, expected, write))?)
    }
    pub async fn set_config_enabled(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<ConfigRecord> {
        let reason = reason.map(text::encode);
        self.opened(dispatch!(self.set_config_enabled(tenant, id, expected, enabled, reason.as_deref()))?)
    }
    pub async fn delete_config(&self, tenant: &TenantId, id: &ConfigId, expected: Option<i64>) -> Result<()> {
        dispatch!(self.delete_config(tenant, id, expected))
    }
    /// Seals anew, under the current key, every configuration sealed under
    /// an older key or stored before sealing existed, without changing its
    /// version: what lets an old key be dropped after a rotation. A row
    /// that does not open is left as it is, and counted.
    pub async fn reseal_configs(&self) -> Result<Resealed> {
        let current = self.keys.current_id();
        let mut done = Resealed::default();
        let mut after = String::new();
        loop {
            let page: Vec<ConfigRecord> = read!(self.configs_after(&after, 256))?;
            let Some(last) = page.last() else { return Ok(done) };
            after = last.id.as_str().to_owned();
            for stored in page {
                if Keyring::sealed_with(&stored.spec) == Some(current) {
                    continue;
                }
                let (tenant, id, old) = (stored.tenant_id.clone(), stored.id.clone(), stored.spec.clone());
                let open = match self.opened(stored) {
                    Ok(open) => open,
                    Err(e) => {
                        tracing::error!(configuration = %id, error = %e, "cannot re-seal a configuration");
                        done.unreadable += 1;
                        continue;
                    }
                };
                let new = self.keys.seal(open.spec.as_bytes(), &config_context(&tenant, &id));
                // Not replaced: saved meanwhile, so sealed with a current key anyway.
                let (tenant, id, old) = (&tenant, &id, old.as_str());
                let new = new.as_str();
                if dispatch!(self.reseal_config(tenant, id, old, new))? {
                    done.resealed += 1;
                }
            }
        }
    }

    /// The events a configuration selected, newest first, each with the
    /// cursor to continue after it.
    pub async fn events_selected_by(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, EventRecord)>> {
        read!(self.events_selected_by(tenant, config, before, limit))
    }
    /// A configuration's script changes, newest first.
    pub async fn config_scripts(&self, tenant: &TenantId, id: &ConfigId) -> Result<Vec<ConfigScriptRecord>> {
        read!(self.config_scripts(tenant, id))
    }
    /// The script a configuration ran at its version `version`; `None`
    /// when nothing was recorded then.
    pub async fn config_script_at(&self, tenant: &TenantId, id: &ConfigId, version: i64) -> Result<Option<ConfigScriptRecord>> {
        read!(self.config_script_at(tenant, id, version))
    }
    /// Configurations stored before their script history was kept, in id
    /// order after `after`; each that cannot be opened as `Err`.
    pub async fn configs_without_script_history(&self, after: &str, limit: i64) -> Result<Vec<(ConfigId, Result<ConfigRecord>)>> {
        let records: Vec<ConfigRecord> = read!(self.configs_without_script_history(after, limit))?;
        Ok(records.into_iter().map(|r| (r.id.clone(), self.opened(r))).collect())
    }
    /// Records what a configuration runs from version `version` on, unless
    /// its newest record says the same already.
    pub async fn record_config_script(&self, tenant: &TenantId, id: &ConfigId, version: i64, write: &ConfigWrite) -> Result<()> {
        dispatch!(self.record_config_script(tenant, id, version, write))
    }

    pub async fn enabled_configs(&self, tenant: &TenantId) -> Result<Vec<ConfigRecord>> {
        let records: Vec<ConfigRecord> = read!(self.enabled_configs(tenant))?;
        records.into_iter().map(|r| self.opened(r)).collect()
    }

    // Events.

    pub async fn list_event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeRecord>> {
        read!(self.list_event_types(tenant))
    }
    pub async fn put_event_type(&self, tenant: &TenantId, name: &str, description: Option<&str>) -> Result<EventTypeRecord> {
        let description = description.map(text::encode);
        dispatch!(self.put_event_type(tenant, name, description.as_deref()))
    }
    /// Stores a batch atomically: all new events or none (quota).
    pub async fn ingest(&self, tenant: &TenantId, quota: Option<i64>, events: Vec<Event>) -> Result<Vec<Ingested>> {
        dispatch!(self.ingest(tenant, quota, events))
    }
    pub async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<EventRecord> {
        read!(self.get_event(tenant, id))
    }
    pub async fn list_events(&self, tenant: &TenantId, filter: &EventFilter, page: &PageRequest) -> Result<Page<EventRecord>> {
        read!(self.list_events(tenant, filter, page))
    }
    /// Events accepted before `received_before` and not routed yet, in
    /// `seq` order after `after_seq`: this node's own (its routing failed or
    /// was left undone; those still in its hands it tells apart itself), and
    /// other nodes' whose claim has run out at `now`, or never was taken.
    pub async fn unrouted_events(&self, after_seq: i64, received_before: i64, now: i64, limit: i64) -> Result<Vec<EventRecord>> {
        dispatch!(self.unrouted_events(after_seq, received_before, now, limit))
    }
    /// Records events' routing: their deliveries, and that they are routed
    /// (unless rows handed on are unwritten). For each, whether it was
    /// recorded: `false` when another path (a scan on another node, once
    /// the claim ran out) routed that event first, whose deliveries then
    /// stand.
    pub async fn record_routing(&self, routed: Vec<Routed>) -> Result<Vec<bool>> {
        // A routing that hands every delivery on writes nothing now.
        let mut recorded = vec![true; routed.len()];
        let (mut writing, mut at) = (Vec::with_capacity(routed.len()), Vec::with_capacity(routed.len()));
        for (i, mut r) in routed.into_iter().enumerate() {
            if r.writes() {
                r.deliveries.iter_mut().for_each(NewDelivery::encode);
                writing.push(r);
                at.push(i);
            }
        }
        if !writing.is_empty() {
            let written: Vec<bool> = dispatch!(self.record_routing(writing))?;
            for (i, w) in at.into_iter().zip(written) {
                recorded[i] = w;
            }
        }
        Ok(recorded)
    }
    /// A delivery routing hands on before its row is written; `awaiting`:
    /// the event's rows once its routing is all written; `epoch`: its
    /// claim's on the event.
    pub fn unwritten(&self, tenant: TenantId, event_seq: i64, mut delivery: NewDelivery, awaiting: i64, epoch: Epoch) -> Arc<Unwritten> {
        delivery.encode();
        self.unwritten.fetch_add(1, Ordering::Relaxed);
        Arc::new(Unwritten {
            tenant,
            event_seq,
            delivery,
            routed_at: now_ms(),
            awaiting,
            shown: Default::default(),
            epoch,
            uncounted: self.unwritten.clone(),
        })
    }

    // Deliveries and attempts.

    pub async fn get_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<DeliveryRecord> {
        read!(self.get_delivery(tenant, id))
    }
    pub async fn list_deliveries(&self, tenant: &TenantId, filter: &DeliveryFilter, page: &PageRequest) -> Result<Page<DeliveryRecord>> {
        read!(self.list_deliveries(tenant, filter, page))
    }
    pub async fn deliveries_of_event(&self, tenant: &TenantId, event_seq: i64) -> Result<Vec<DeliveryRecord>> {
        read!(self.deliveries_of_event(tenant, event_seq))
    }
    /// Claims pending deliveries due at `now` that no sender holds and whose
    /// configuration is enabled, oldest due first, for `lease_ms`, for this
    /// node, skipping those `skip` names. Nodes claiming at once get
    /// different deliveries.
    pub async fn claim_due(&self, now: i64, lease_ms: i64, limit: i64, skip: &ClaimSkip) -> Result<Vec<DueDelivery>> {
        dispatch!(self.claim_due(now, lease_ms, limit, skip))
    }
    /// Records the decision of a script that was paused when its delivery
    /// was routed (see [`NewDelivery::undecided`]): `d.id` names the row.
    /// `false` when it was decided already or is no longer pending.
    pub async fn record_decision(&self, tenant: &TenantId, mut d: NewDelivery) -> Result<bool> {
        d.encode();
        dispatch!(self.record_decision(tenant, d))
    }
    /// Makes the next `limit` undecided deliveries of `config` (the soonest
    /// due) due at `now`: its script, paused when they were routed, decides
    /// again. How many.
    pub async fn hurry_undecided(&self, tenant: &TenantId, config: &ConfigId, now: i64, limit: i64) -> Result<u64> {
        dispatch!(self.hurry_undecided(tenant, config, now, limit))
    }
    /// Hands a claimed delivery back unattempted, due again at
    /// `next_attempt_at` (its configuration is disabled, or its endpoint busy).
    pub async fn release_delivery(&self, tenant: &TenantId, id: &DeliveryId, next_attempt_at: i64) -> Result<()> {
        dispatch!(self.release_delivery(tenant, id, next_attempt_at))
    }
    /// Writes the rows of deliveries handed on unwritten, pending and
    /// unattempted, due at `next_attempt_at`. With `lease_until`, only to
    /// show them while they wait in this node's sender, which keeps them
    /// (a row already written is left alone; their attempts settle these);
    /// without, released as [`release_delivery`](Self::release_delivery)
    /// releases one with a row.
    pub async fn write_pending(&self, unwritten: Vec<Arc<Unwritten>>, next_attempt_at: i64, lease_until: Option<i64>) -> Result<()> {
        dispatch!(self.write_pending(unwritten, next_attempt_at, lease_until))
    }
    /// Whether other nodes may share this store (PostgreSQL): only then is
    /// there anyone to tell that this node is alive.
    pub fn has_peers(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
    /// This node's current epoch: claims taken now are taken in it.
    pub fn epoch(&self) -> Epoch {
        match &self.backend {
            Backend::Sqlite(_) => Epoch::default(),
            Backend::Postgres(db) => db.epoch(),
        }
    }
    /// The epoch to take new claims in: [`Store::epoch`], confirmed first
    /// by a heartbeat when this node has not been heard for a while (it
    /// could not reach the database, and may have been taken for dead).
    pub async fn live_epoch(&self) -> Result<Epoch> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Epoch::default()),
            Backend::Postgres(db) => db.live_epoch().await,
        }
    }
    /// Says this node is alive. With `judge`, also releases what nodes not
    /// heard from for [`NODE_SILENT_MS`] held (their events' routing claims
    /// and their deliveries' leases), sooner than those would run out, and
    /// forgets them; returns their ids. One node: nothing to tell.
    pub async fn keep_alive(&self, judge: bool) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(db) => db.keep_alive(judge).await,
        }
    }
    /// Drops the leases this node held before it (re)started, of deliveries
    /// and of events' routing: nothing of its own is in flight yet. Other
    /// nodes' leases run to their expiry, or until the node is found silent
    /// ([`Store::keep_alive`]).
    pub async fn release_leases(&self) -> Result<u64> {
        dispatch!(self.release_leases())
    }
    /// Logs an attempt, updates its delivery (writes it, if it was handed
    /// on [`Unwritten`]), and counts the configuration's failure streak
    /// (reset by a success). Writes nothing for a delivery handed on in an
    /// epoch of this node that has ended ([`Recorded::Void`]).
    pub async fn record_attempt(&self, attempt: NewAttempt) -> Result<Recorded> {
        dispatch!(self.record_attempt(attempt))
    }
    /// Takes the next start slot of a configuration's rate limit, one
    /// request per `interval` for all nodes together: how long to wait
    /// before sending.
    pub async fn reserve_send_slot(&self, config: &ConfigId, interval: std::time::Duration) -> Result<std::time::Duration> {
        dispatch!(self.reserve_send_slot(config, interval))
    }
    pub async fn get_attempt(&self, tenant: &TenantId, id: &AttemptId) -> Result<AttemptRecord> {
        read!(self.get_attempt(tenant, id))
    }
    pub async fn list_attempts(&self, tenant: &TenantId, filter: &AttemptFilter, page: &PageRequest) -> Result<Page<AttemptRecord>> {
        read!(self.list_attempts(tenant, filter, page))
    }

    // Replay and recovery.

    /// Adds deliveries to routed events of `tenant`, each pending ones due
    /// at its `next_attempt_at` (the retry poller sends them). For each,
    /// whether it was added: see [`AddedDelivery::replay_of`].
    pub async fn add_deliveries(&self, tenant: &TenantId, mut rows: Vec<AddedDelivery>) -> Result<Vec<bool>> {
        rows.iter_mut().for_each(|r| r.delivery.encode());
        dispatch!(self.add_deliveries(tenant, rows))
    }
    /// The newest deliveries to `config` of events received after `after`
    /// and before `until`, where that newest one failed; in arrival order,
    /// at most `limit`, each with its event's position.
    pub async fn failed_deliveries(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        after: EventCursor,
        until: i64,
        limit: i64,
    ) -> Result<Vec<(EventCursor, DeliveryRecord)>> {
        read!(self.failed_deliveries(tenant, config, after, until, limit))
    }
    /// Routed events received after `after` and before `until` that have no
    /// delivery to `config`, in arrival order, at most `limit`.
    pub async fn events_without_delivery(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        after: EventCursor,
        until: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        read!(self.events_without_delivery(tenant, config, after, until, limit))
    }

    // Retention: system jobs, across tenants. Cutoffs are arguments so that
    // the clock stays the caller's.

    /// Removes the request and response bodies of attempts made before
    /// `before`, walking each tenant's attempts in creation order from
    /// where its last walk stopped, tenant after tenant from `from`: at
    /// most `limit` attempts in all, each tenant visited counting one at
    /// least (most have nothing to purge).
    pub async fn purge_payloads(&self, before: i64, limit: i64, from: &PayloadCursor) -> Result<PurgedPayloads> {
        dispatch!(self.purge_payloads(before, limit, from))
    }
    /// Deletes at most `limit` events received before `before`, oldest
    /// first, with their deliveries and attempts (`payloads` counts those
    /// that still held bodies). An event still
    /// pending (not routed, or with a pending delivery) is kept.
    ///
    /// The scan goes on from `from`, and reads a bounded number of events
    /// past those kept (`event_walk::READS_PER_EVENT` for each of `limit`):
    /// events kept for a long time (a disabled configuration's pending
    /// deliveries) are read once a purge, not once a chunk. Returns where
    /// the next chunk starts (`None`: no event before `before` is left).
    pub async fn purge_events(&self, before: i64, limit: i64, from: EventCursor) -> Result<(PurgedEvents, Option<EventCursor>)> {
        dispatch!(self.purge_events(before, limit, from))
    }
}
