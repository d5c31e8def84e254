//! Rows to records: one mapping per record, shared by the two backends
//! through [`Columns`], and the column lists and SQL fragments whose text is
//! the same in SQLite and PostgreSQL.
//!
//! Nothing here runs a query.

use serde_json::value::RawValue;

use super::text;
use super::*;
use crate::model::event::{EventId, EventType, OrgUnit, Source};

/// Column access common to the drivers (sqlx rows of either database,
/// rusqlite rows in the SQLite writer), so that each record has one mapping.
pub(super) trait Columns {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    /// A boolean: an integer in SQLite, a `boolean` in PostgreSQL.
    fn flag(&self, col: &str) -> Result<bool>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>>;

    /// A free-text column, decoded (see [`text`](super::text)).
    fn free_text(&self, col: &str) -> Result<String> {
        self.text(col).map(text::decode)
    }
    fn opt_free_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.opt_text(col)?.map(text::decode))
    }
}

pub(super) fn not_found_if_none<T>(row: Option<T>) -> Result<T> {
    row.ok_or(StoreError::NotFound)
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn parse_id<T>(raw: String, parse: fn(&str) -> std::result::Result<T, crate::model::ids::IdError>) -> Result<T> {
    parse(&raw).map_err(corrupt)
}

pub(super) fn tenant_row(row: &impl Columns) -> Result<TenantRecord> {
    Ok(TenantRecord {
        id: parse_id(row.text("id")?, TenantId::parse)?,
        name: row.free_text("name")?,
        monthly_quota: row.opt_int("monthly_quota")?,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn key_row(row: &impl Columns) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: parse_id(row.text("id")?, KeyId::parse)?,
        tenant_id: parse_id(row.text("tenant_id")?, TenantId::parse)?,
        name: row.free_text("name")?,
        prefix: row.text("prefix")?,
        scopes: row.text("scopes")?.split_whitespace().filter_map(Scope::parse).collect(),
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
        expires_at: row.opt_int("expires_at")?,
    })
}

/// The key a redeemed portal link opens a session with, from the link's row.
pub(super) fn session_key(session: SessionKey, link: &str, tenant: &str, scopes: &str, expires_at: i64) -> Result<NewKey> {
    Ok(NewKey {
        id: session.id,
        tenant_id: parse_id(tenant.to_owned(), TenantId::parse)?,
        name: format!("console session from portal link {link}"),
        prefix: session.prefix,
        hash: session.hash,
        scopes: scopes.split_whitespace().filter_map(Scope::parse).collect(),
        expires_at: Some(expires_at),
    })
}

pub(super) fn catcher_row(row: &impl Columns) -> Result<CatcherRecord> {
    Ok(CatcherRecord {
        id: parse_id(row.text("id")?, CatcherId::parse)?,
        tenant_id: parse_id(row.text("tenant_id")?, TenantId::parse)?,
        name: row.free_text("name")?,
        answer_status: row.int("answer_status")?,
        answer_body: row.free_text("answer_body")?,
        created_at: row.int("created_at")?,
    })
}

pub(super) fn caught_row(row: &impl Columns) -> Result<Caught> {
    Ok(Caught {
        id: parse_id(row.text("id")?, CaughtId::parse)?,
        received_at: row.int("received_at")?,
        method: row.free_text("method")?,
        uri: row.free_text("uri")?,
        headers: row.free_text("headers")?,
        body: text::decode_bytes(row.text("body")?),
        body_size: row.int("body_size")?,
    })
}

pub(super) const SCRIPT_COLUMNS: &str = "id, name, version, sha256, size, wit_version, created_at, created_by";

pub(super) fn script_row(row: &impl Columns) -> Result<ScriptRecord> {
    Ok(ScriptRecord {
        id: parse_id(row.text("id")?, ScriptId::parse)?,
        name: row.free_text("name")?,
        version: row.int("version")?,
        sha256: row.text("sha256")?,
        size: row.int("size")?,
        wit_version: row.text("wit_version")?,
        created_at: row.int("created_at")?,
        created_by: row.opt_text("created_by")?.map(|id| parse_id(id, KeyId::parse)).transpose()?,
    })
}

pub(super) fn config_script_row(row: &impl Columns) -> Result<ConfigScriptRecord> {
    Ok(ConfigScriptRecord {
        config_id: parse_id(row.text("config_id")?, ConfigId::parse)?,
        version: row.int("version")?,
        script_id: row.opt_text("script_id")?.map(|id| parse_id(id, ScriptId::parse)).transpose()?,
        script_sha256: row.opt_text("script_sha256")?,
        params: row.text("params")?,
        changed_at: row.int("changed_at")?,
        changed_by: row.opt_text("changed_by")?.map(|id| parse_id(id, KeyId::parse)).transpose()?,
    })
}

pub(super) fn config_row(row: &impl Columns) -> Result<ConfigRecord> {
    Ok(ConfigRecord {
        id: parse_id(row.text("id")?, ConfigId::parse)?,
        tenant_id: parse_id(row.text("tenant_id")?, TenantId::parse)?,
        name: row.free_text("name")?,
        version: row.int("version")?,
        enabled: row.flag("enabled")?,
        spec: row.text("spec")?,
        disabled_reason: row.opt_free_text("disabled_reason")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// Holds of a delivery `d` that no later delivery of its event to its
/// configuration (a replay) superseded.
pub(super) const NEWEST: &str =
    "NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.event_seq = d.event_seq AND n.config_id = d.config_id AND n.id > d.id)";

pub(super) fn event_type_row(row: &impl Columns) -> Result<EventTypeRecord> {
    Ok(EventTypeRecord { name: row.text("name")?, description: row.opt_free_text("description")?, first_seen: row.int("first_seen")? })
}

/// What a delivery ended by its configuration's deletion records: its
/// `reason`, and its `error_kind` (one text for SQL and Rust alike).
macro_rules! config_deleted {
    (reason) => {
        "its configuration was deleted"
    };
    (kind) => {
        "configuration_deleted"
    };
}
pub(super) use config_deleted;

/// Whether the event `e` has been routed: its decisions are recorded (the
/// state lives in `unrouted`, not in the wide event row).
macro_rules! routed {
    () => {
        "NOT EXISTS (SELECT 1 FROM unrouted u WHERE u.seq = e.seq)"
    };
}
pub(super) const ROUTED: &str = routed!();

pub(super) const EVENT_COLUMNS: &str = concat!(
    "e.seq, e.tenant_id, e.id AS event_id, e.type, e.organization_unit, e.occurred_at_ns, e.received_at, e.source, e.related, e.payload, ",
    routed!(),
    " AS routed"
);

pub(super) fn event_row(row: &impl Columns) -> Result<EventRecord> {
    let related: Vec<String> = match row.opt_text("related")? {
        Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let event = Event {
        id: EventId::parse(&row.text("event_id")?).map_err(corrupt)?,
        event_type: EventType::parse(&row.text("type")?).map_err(corrupt)?,
        organization_unit: OrgUnit::parse(&row.text("organization_unit")?).map_err(corrupt)?,
        occurred_at: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.int("occurred_at_ns")?)).map_err(corrupt)?,
        source: match row.opt_text("source")? {
            Some(json) => Some(serde_json::from_str::<Source>(&json).map_err(corrupt)?),
            None => None,
        },
        related: related.iter().map(|r| EventId::parse(r)).collect::<std::result::Result<_, _>>().map_err(corrupt)?,
        payload: RawValue::from_string(row.text("payload")?).map_err(corrupt)?,
    };
    Ok(EventRecord {
        seq: row.int("seq")?,
        tenant_id: parse_id(row.text("tenant_id")?, TenantId::parse)?,
        event,
        received_at: row.int("received_at")?,
        routed: row.flag("routed")?,
    })
}

pub(super) const DELIVERY_COLUMNS: &str = "d.id, d.event_seq, d.config_id, d.config_version, d.status, d.replay_of, d.reason, d.error_kind, d.script_logs, d.fuel_used, d.body, d.headers, d.undecided, d.attempts, d.next_attempt_at, d.created_at, d.updated_at, (SELECT id FROM events WHERE seq = d.event_seq) AS delivery_event_id";

pub(super) fn delivery_row(row: &impl Columns) -> Result<DeliveryRecord> {
    let status = row.text("status")?;
    Ok(DeliveryRecord {
        id: parse_id(row.text("id")?, DeliveryId::parse)?,
        event_id: row.text("delivery_event_id")?,
        event_seq: row.int("event_seq")?,
        configuration_id: parse_id(row.text("config_id")?, ConfigId::parse)?,
        configuration_version: row.int("config_version")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("delivery status {status}")))?,
        replay_of: row.opt_text("replay_of")?.map(|id| parse_id(id, DeliveryId::parse)).transpose()?,
        reason: row.opt_free_text("reason")?,
        error_kind: row.opt_free_text("error_kind")?,
        script_logs: match row.opt_text("script_logs")? {
            Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
            None => serde_json::Value::Array(Vec::new()),
        },
        fuel_used: row.opt_int("fuel_used")?,
        body: row.opt_text("body")?,
        headers: row.opt_text("headers")?,
        undecided: row.flag("undecided")?,
        attempts: row.int("attempts")?,
        next_attempt_at: row.opt_int("next_attempt_at")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

pub(super) fn attempt_row(row: &impl Columns, with_bodies: bool) -> Result<AttemptRecord> {
    let json = |col: &str| -> Result<serde_json::Value> {
        match row.opt_text(col)? {
            Some(raw) => serde_json::from_str(&raw).map_err(corrupt),
            None => Ok(serde_json::Value::Object(Default::default())),
        }
    };
    // The answer as received: shown as text, and as base64 too when it is
    // not UTF-8 (the text then shows U+FFFD where bytes were not text).
    let (response_body, response_body_base64) = match with_bodies.then(|| row.opt_text("response_body")).transpose()?.flatten() {
        Some(stored) if text::holds_non_utf8(&stored) => {
            let bytes = text::decode_bytes(stored);
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            (Some(shown), Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)))
        }
        Some(stored) => (Some(text::decode(stored)), None),
        None => (None, None),
    };
    Ok(AttemptRecord {
        id: parse_id(row.text("id")?, AttemptId::parse)?,
        delivery_id: parse_id(row.text("delivery_id")?, DeliveryId::parse)?,
        number: row.int("number")?,
        started_at: row.int("started_at")?,
        duration_ms: row.int("duration_ms")?,
        method: row.text("method")?,
        uri: row.text("uri")?,
        response_status: row.opt_int("response_status")?,
        outcome: row.text("outcome")?,
        error: row.opt_free_text("error")?,
        request_headers: json("request_headers")?,
        response_headers: json("response_headers")?,
        request_body: if with_bodies { row.opt_free_text("request_body")? } else { None },
        response_body,
        response_body_base64,
    })
}

/// The UTC month of a Unix-millisecond time, `YYYY-MM`.
pub(super) fn month_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}
