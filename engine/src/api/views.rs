//! What the API answers: one view per resource, built from the engine's
//! records and results, serialized as JSON and described in the OpenAPI
//! document by the same type.
//!
//! Views are the API's promise to its clients; storage rows are the store's
//! business and may change without notice. This module owns the mapping
//! between the two. It must never expose a secret: keys' and signing
//! secrets appear in the answers that create them and nowhere else, and
//! credential-named headers and query parameters are shown as `***`.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::model::event::Event;
use crate::model::export::ExportConfig;
use crate::model::timestamp::rfc3339;
use crate::pipeline::replay::{LateRouted, Recovered, Replayed, SkipReason};
use crate::service::{
    AttemptRecord, ConfigRecord, DeliveryRecord, DeliveryStatus, EventRecord, EventTypeRecord, KeyRecord, ScriptRecord, TenantRecord,
};

fn time(ms: i64) -> String {
    rfc3339::format(ms)
}

/// One page of a list, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn of<R>(page: crate::service::Page<R>, view: impl FnMut(R) -> T) -> Self {
        Self { items: page.items.into_iter().map(view).collect(), next_cursor: page.next_cursor }
    }
}

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, for programs: `not_found`, `invalid_event`, `stale_version`…
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, when there is one (a JSON Pointer-like
    /// path such as `authorization.token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// Tenants and keys.

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::TenantId,
    pub name: String,
    /// Events per calendar month (UTC); null: unlimited.
    pub monthly_quota: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<TenantRecord> for TenantView {
    fn from(t: TenantRecord) -> Self {
        Self { id: t.id, name: t.name, monthly_quota: t.monthly_quota, created_at: time(t.created_at) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::KeyId,
    #[schema(value_type = String)]
    pub tenant_id: crate::model::ids::TenantId,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    #[schema(value_type = Vec<String>, example = json!(["events:write"]))]
    pub scopes: Vec<crate::model::auth::Scope>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// When it stops working by itself (console sessions); null: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            created_at: time(k.created_at),
            revoked_at: k.revoked_at.map(time),
            expires_at: k.expires_at.map(time),
        }
    }
}

/// A new key, with its secret: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub key: KeyView,
    /// `sk_…`: send as `Authorization: Bearer …`. Not shown again.
    pub secret: String,
}

/// A portal link, with its URL: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLinkView {
    pub id: String,
    #[schema(value_type = String)]
    pub tenant_id: crate::model::ids::TenantId,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<crate::model::auth::Scope>,
    /// Opens the console once, signed in to this tenant. Not shown again.
    pub url: String,
    /// The link cannot be opened after this.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// How long the session it opens lasts.
    pub session_seconds: u64,
}

impl PortalLinkView {
    pub fn new(link: crate::service::PortalLink, base: &str) -> Self {
        Self {
            id: link.id.to_string(),
            tenant_id: link.tenant,
            scopes: link.scopes,
            url: format!("{base}/console/portal/{}", link.token.expose()),
            expires_at: time(link.expires_at),
            session_seconds: link.session_for.as_secs(),
        }
    }
}

// Hosted catchers.

#[derive(Debug, Serialize, ToSchema)]
pub struct CatcherView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::CatcherId,
    pub name: String,
    /// The status it answers with.
    pub status: i64,
    /// The body it answers with.
    pub body: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<crate::service::CatcherRecord> for CatcherView {
    fn from(c: crate::service::CatcherRecord) -> Self {
        Self { id: c.id, name: c.name, status: c.answer_status, body: c.answer_body, created_at: time(c.created_at) }
    }
}

/// A new catcher, with its URL: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCatcherView {
    #[serde(flatten)]
    pub catcher: CatcherView,
    /// Point a configuration here. Not shown again.
    pub url: String,
}

/// One request a catcher received.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaughtView {
    pub id: String,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub method: String,
    pub uri: String,
    /// As received; credentials read `***`.
    #[schema(value_type = Object)]
    pub headers: Value,
    /// As received; parts that are not UTF-8 shown as U+FFFD.
    pub body: String,
    /// The body's exact bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The whole body's length (only the first 64 KiB are kept).
    pub body_size: i64,
    /// `{"verdict": "unsigned"}`, `{"verdict": "valid", "configuration_id", "configuration"}`
    /// `{"verdict": "invalid", "reason"}` or `{"verdict": "not_checked", "reason"}`
    /// (a body longer than what is kept).
    #[schema(value_type = Object)]
    pub signature: Value,
}

impl From<crate::service::CheckedCatch> for CaughtView {
    fn from(c: crate::service::CheckedCatch) -> Self {
        use crate::service::SignatureCheck;
        let signature = match c.signature {
            SignatureCheck::Unsigned => serde_json::json!({"verdict": "unsigned"}),
            SignatureCheck::Valid { configuration, name } => {
                serde_json::json!({"verdict": "valid", "configuration_id": configuration, "configuration": name})
            }
            SignatureCheck::Invalid { reason } => serde_json::json!({"verdict": "invalid", "reason": reason}),
            SignatureCheck::NotChecked { reason } => serde_json::json!({"verdict": "not_checked", "reason": reason}),
        };
        let caught = c.caught;
        let body_base64 = std::str::from_utf8(&caught.body)
            .is_err()
            .then(|| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &caught.body));
        Self {
            id: caught.id.to_string(),
            received_at: time(caught.received_at),
            method: caught.method,
            uri: caught.uri,
            headers: serde_json::from_str(&caught.headers).unwrap_or_default(),
            body: String::from_utf8_lossy(&caught.body).into_owned(),
            body_base64,
            body_size: caught.body_size,
            signature,
        }
    }
}

// Scripts.

#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::ScriptId,
    pub name: String,
    /// 1 for the first script uploaded under `name`, then 2, 3, …
    pub version: i64,
    /// Of the uploaded bytes, hex.
    pub sha256: String,
    /// Bytes.
    pub size: i64,
    /// The `sluice:event-export` version the script was built against.
    pub wit_version: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The id of the API key that uploaded it.
    #[schema(value_type = Option<String>)]
    pub created_by: Option<crate::model::ids::KeyId>,
}

impl From<ScriptRecord> for ScriptView {
    fn from(s: ScriptRecord) -> Self {
        Self {
            id: s.id,
            name: s.name,
            version: s.version,
            sha256: s.sha256,
            size: s.size,
            wit_version: s.wit_version,
            created_at: time(s.created_at),
            created_by: s.created_by,
        }
    }
}

/// One run of a script on a sample event: its decision or its error, its
/// log lines, its fuel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptRunView {
    /// `{"action": "deliver", "body"?, "headers"}` or `{"action": "skip", "reason"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    /// `{"kind": "returned" | "trapped" | "out_of_fuel" | …, …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// `[{"level", "message"}]`.
    #[schema(value_type = Vec<Object>)]
    pub logs: Value,
    pub fuel_used: u64,
}

impl From<crate::sandbox::Outcome> for ScriptRunView {
    fn from(o: crate::sandbox::Outcome) -> Self {
        let (decision, error) = match o.decision() {
            Ok(d) => (serde_json::to_value(d).ok(), None),
            Err(e) => (None, serde_json::to_value(e).ok()),
        };
        Self { decision, error, logs: serde_json::to_value(&o.logs).unwrap_or_default(), fuel_used: o.fuel_used }
    }
}

// Configurations.

/// A configuration as stored, secrets left out: the fields of
/// `ConfigurationInput` (tokens and keys replaced by `…_set: true`,
/// credential-named headers and query parameters by `***`), with its
/// identity and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigurationView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::ConfigId,
    /// Quote it in `If-Match` to change the configuration.
    pub version: i64,
    #[schema(value_type = String, example = "enabled")]
    pub status: &'static str,
    /// Why it was disabled, when sluice disabled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Flattened into the answer.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub spec: serde_json::Map<String, Value>,
}

impl ConfigurationView {
    pub fn new(record: &ConfigRecord, spec: &ExportConfig) -> Self {
        Self {
            id: record.id.clone(),
            version: record.version,
            status: if record.enabled { "enabled" } else { "disabled" },
            disabled_reason: record.disabled_reason.clone(),
            created_at: time(record.created_at),
            updated_at: time(record.updated_at),
            spec: spec_view(spec),
        }
    }

    /// The answer that shows the signing secret: at creation and rotation.
    pub fn with_secret(mut self, spec: &ExportConfig) -> Self {
        if let Some(signing) = self.spec.get_mut("signing").and_then(Value::as_object_mut) {
            signing.insert("secret".into(), spec.signing.secret.expose().into());
        }
        self
    }
}

/// The configuration's own fields as an admin reads them back (the model
/// knows which are secret).
fn spec_view(spec: &ExportConfig) -> serde_json::Map<String, Value> {
    match spec.view() {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    }
}

/// How a configuration is doing (`GET /v1/configurations/{id}/stats`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigStatsView {
    pub last_hour: DeliveryCountsView,
    pub last_day: DeliveryCountsView,
    /// When its oldest delivery still pending was made; null: none pending.
    #[schema(format = DateTime)]
    pub oldest_pending_at: Option<String>,
    pub receiver: ReceiverView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCountsView {
    /// Deliveries made in the window (at most 100,000 are counted).
    pub total: i64,
    /// By status: `pending`, `filtered`, `script_error`, `succeeded`, `failed`.
    #[schema(value_type = Object)]
    pub by_status: serde_json::Map<String, Value>,
    /// Succeeded among those succeeded or failed; null when none settled.
    pub success_rate: Option<f64>,
    /// More deliveries were made than were counted.
    pub capped: bool,
}

/// Whether the receiver answers, as the attempts say.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverView {
    /// `up`, `failing` (attempts failing in a row) or `down` (held back:
    /// one probe at a time until it answers again).
    pub state: &'static str,
    /// Failed attempts in a row.
    pub failures: i64,
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
}

impl ConfigStatsView {
    pub fn new(stats: crate::service::ConfigStats) -> Self {
        let counts = |c: crate::service::DeliveryCounts| {
            let get = |status: &str| c.by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            let (succeeded, failed) = (get("succeeded"), get("failed"));
            DeliveryCountsView {
                total: c.by_status.iter().map(|(_, n)| n).sum::<i64>().min(crate::service::STATS_BOUND),
                success_rate: (succeeded + failed > 0).then(|| succeeded as f64 / (succeeded + failed) as f64),
                by_status: c.by_status.into_iter().map(|(s, n)| (s, n.into())).collect(),
                capped: c.capped,
            }
        };
        let streak = stats.streak.unwrap_or_default();
        let state = match streak.failures {
            0 => "up",
            n if n >= crate::pipeline::deliver::BREAKER_AFTER => "down",
            _ => "failing",
        };
        Self {
            last_hour: counts(stats.last_hour),
            last_day: counts(stats.last_day),
            oldest_pending_at: stats.oldest_pending_at.map(time),
            receiver: ReceiverView { state, failures: streak.failures, failing_since: (streak.failures > 0).then(|| time(streak.since)) },
        }
    }
}

/// A test send: the event as sent, the script's decision, the attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSendView {
    /// The event as posted (made up when none was given).
    #[schema(value_type = Object)]
    pub event: Box<RawValue>,
    pub decision: TestDecisionView,
    /// Null unless a request was sent.
    pub attempt: Option<TestAttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestDecisionView {
    /// `deliver`, `filtered`, `script_error` or `not_selected`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub script_logs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestAttemptView {
    pub succeeded: bool,
    pub method: &'static str,
    /// Credentials in the query shown as `***`.
    pub uri: String,
    #[schema(value_type = Object)]
    pub request_headers: Value,
    pub request_body: String,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub duration_ms: i64,
    pub error: Option<String>,
}

impl From<crate::service::TestSend> for TestSendView {
    fn from(report: crate::service::TestSend) -> Self {
        use crate::pipeline::request::default_body;
        // The event as sent, payload as posted (see `EventView`).
        let event = RawValue::from_string(String::from_utf8_lossy(&default_body(&report.event)).into_owned())
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        let decision = match &report.decision {
            None => TestDecisionView {
                status: "not_selected",
                reason: Some("the configuration's event types or organization units do not select this event".into()),
                error_kind: None,
                script_logs: None,
            },
            Some(d) => TestDecisionView {
                status: if d.status == DeliveryStatus::Pending { "deliver" } else { d.status.as_str() },
                reason: d.reason.clone(),
                error_kind: d.error_kind.clone(),
                script_logs: d.script_logs.as_deref().and_then(|l| serde_json::from_str(l).ok()),
            },
        };
        let attempt = report.sent.as_ref().map(|sent| TestAttemptView {
            succeeded: sent.succeeded,
            method: "POST",
            uri: sent.request.uri.clone(),
            request_headers: serde_json::from_str(&sent.request.headers).unwrap_or_default(),
            request_body: String::from_utf8_lossy(&sent.request.body).into_owned(),
            response_status: sent.status.map(|s| s.as_u16()),
            response_body: sent.response_body.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
            duration_ms: sent.duration_ms,
            error: sent.error.clone(),
        });
        Self { event, decision, attempt }
    }
}

// Event types.

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    pub name: String,
    pub description: Option<String>,
    /// When the first event of the type arrived, or it was described.
    #[schema(format = DateTime)]
    pub first_seen: String,
}

impl From<EventTypeRecord> for EventTypeView {
    fn from(t: EventTypeRecord) -> Self {
        Self { name: t.name, description: t.description, first_seen: time(t.first_seen) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypesView {
    pub items: Vec<EventTypeView>,
}

// Events.

/// Per event of an ingest request, in the order posted.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestedView {
    pub id: String,
    /// `accepted`, or `duplicate` when the tenant already had an event with this id.
    #[schema(example = "accepted")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestView {
    pub events: Vec<IngestedView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An event in the shape it was posted, payload as posted (a `Value` would
/// respell numbers and reorder keys), with what sluice knows of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub organization_unit: String,
    #[schema(format = DateTime)]
    pub occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[schema(format = DateTime)]
    pub received_at: String,
    /// Whether its deliveries have all been recorded. A delivery sent
    /// straight after routing is recorded with its first attempt, or
    /// pending once it has waited a second for it (queued, or its receiver
    /// slow to answer): until then the event is not routed yet, and its
    /// `deliveries` lack it.
    pub routed: bool,
    /// With `GET /v1/events/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryView>>,
}

impl EventView {
    pub fn new(record: EventRecord) -> Self {
        let Event { id, event_type, organization_unit, source, related, payload, .. } = &record.event;
        Self {
            id: id.to_string(),
            event_type: event_type.as_str().to_owned(),
            organization_unit: organization_unit.as_str().to_owned(),
            occurred_at: record.event.occurred_at_rfc3339(),
            source: source.as_ref().map(|s| SourceView { application: s.application.clone(), user: s.user.clone() }),
            related: related.iter().map(ToString::to_string).collect(),
            payload: payload.clone(),
            received_at: time(record.received_at),
            routed: record.routed,
            deliveries: None,
        }
    }
}

// Deliveries and attempts.

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::DeliveryId,
    pub event_id: String,
    #[schema(value_type = String)]
    pub configuration_id: crate::model::ids::ConfigId,
    /// The configuration's version that routed it.
    pub configuration_version: i64,
    /// `pending`, `filtered`, `script_error`, `succeeded` or `failed`.
    #[schema(value_type = String, example = "succeeded")]
    pub status: DeliveryStatus,
    /// The delivery this one replays (whose decision it reuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub replay_of: Option<crate::model::ids::DeliveryId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub script_logs: Value,
    /// Fuel its script used deciding it (absent: no script ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<i64>,
    /// Waiting for its paused script to decide.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undecided: bool,
    pub attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// With `GET /v1/deliveries/{id}`: the body its script decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// With `GET /v1/deliveries/{id}`: the headers its script added, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub headers: Option<Value>,
}

impl DeliveryView {
    pub fn new(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            configuration_id: d.configuration_id,
            configuration_version: d.configuration_version,
            status: d.status,
            replay_of: d.replay_of,
            reason: d.reason,
            error_kind: d.error_kind,
            script_logs: d.script_logs,
            fuel_used: d.fuel_used,
            undecided: d.undecided,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(time),
            created_at: time(d.created_at),
            updated_at: time(d.updated_at),
            body: None,
            headers: None,
        }
    }

    /// With what its script decided to send.
    pub fn detailed(d: DeliveryRecord) -> Self {
        let (body, headers) = (d.body.as_deref().map(json_or_text), d.headers.as_deref().map(json_or_text));
        Self { body, headers, ..Self::new(d) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::AttemptId,
    #[schema(value_type = String)]
    pub delivery_id: crate::model::ids::DeliveryId,
    /// 1 for the first attempt of the delivery.
    pub number: i64,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: i64,
    pub method: String,
    /// Credentials in the query shown as `***`.
    pub uri: String,
    pub response_status: Option<i64>,
    /// `succeeded`, `retry` (another attempt follows) or `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Credential-named values shown as `***`.
    #[schema(value_type = Object)]
    pub request_headers: Value,
    #[schema(value_type = Object)]
    pub response_headers: Value,
    /// With `GET /v1/attempts/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// With `GET /v1/attempts/{id}`; not UTF-8 parts shown as U+FFFD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// The answer's exact bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_base64: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            number: a.number,
            started_at: time(a.started_at),
            duration_ms: a.duration_ms,
            method: a.method,
            uri: a.uri,
            response_status: a.response_status,
            outcome: a.outcome,
            error: a.error,
            request_headers: a.request_headers,
            response_headers: a.response_headers,
            request_body: a.request_body,
            response_body: a.response_body,
            response_body_base64: a.response_body_base64,
        }
    }
}

// Replay and recovery.

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    pub event_id: String,
    /// The new deliveries.
    pub deliveries: Vec<ReplayedDeliveryView>,
    /// Configurations the event was not replayed to, and why.
    pub skipped: Vec<SkippedView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedDeliveryView {
    #[schema(value_type = String)]
    pub id: crate::model::ids::DeliveryId,
    #[schema(value_type = String)]
    pub configuration_id: crate::model::ids::ConfigId,
    /// `pending`, or when the script decided again, `filtered` or `script_error`.
    #[schema(value_type = String)]
    pub status: DeliveryStatus,
    #[schema(value_type = String)]
    pub replay_of: crate::model::ids::DeliveryId,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedView {
    #[schema(value_type = String)]
    pub configuration_id: crate::model::ids::ConfigId,
    /// `pending`, `filtered`, `script_error`, `configuration_disabled`,
    /// `configuration_deleted` or `superseded`.
    #[schema(value_type = String)]
    pub reason: SkipReason,
}

impl From<Replayed> for ReplayView {
    fn from(r: Replayed) -> Self {
        Self {
            event_id: r.event_id,
            deliveries: r
                .deliveries
                .into_iter()
                .map(|d| ReplayedDeliveryView { id: d.id, configuration_id: d.configuration_id, status: d.status, replay_of: d.replay_of })
                .collect(),
            skipped: r.skipped.into_iter().map(|s| SkippedView { configuration_id: s.configuration_id, reason: s.reason }).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoverView {
    #[schema(value_type = String)]
    pub configuration_id: crate::model::ids::ConfigId,
    #[schema(format = DateTime)]
    pub since: String,
    #[schema(format = DateTime)]
    pub until: String,
    /// Failed deliveries replayed.
    pub failed_requeued: u64,
    /// With `include_disabled_period`: the new deliveries by decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_period: Option<LateRoutedView>,
    /// More remained than one call adds: call again with the same window.
    pub truncated: bool,
    /// The most deliveries one call adds.
    pub max_deliveries: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LateRoutedView {
    /// To be sent.
    pub pending: u64,
    pub filtered: u64,
    pub script_error: u64,
}

impl From<Recovered> for RecoverView {
    fn from(r: Recovered) -> Self {
        Self {
            configuration_id: r.configuration_id,
            since: time(r.since),
            until: time(r.until),
            failed_requeued: r.failed_requeued,
            disabled_period: r.disabled_period.map(|LateRouted { pending, filtered, script_error }| LateRoutedView {
                pending,
                filtered,
                script_error,
            }),
            truncated: r.truncated,
            max_deliveries: r.max_deliveries,
        }
    }
}

/// A decision: deliver (with the body and headers the script decided),
/// skip (with its reason), or a script error.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictView {
    /// `deliver`, `skip` or `error`.
    #[schema(value_type = String, example = "skip")]
    pub action: crate::pipeline::explain::Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub headers: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub logs: Value,
    /// Absent when not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<i64>,
}

impl From<crate::pipeline::explain::Verdict> for VerdictView {
    fn from(v: crate::pipeline::explain::Verdict) -> Self {
        Self {
            action: v.action,
            reason: v.reason,
            error_kind: v.error_kind,
            body: v.body.as_deref().map(json_or_text),
            headers: v.headers.as_deref().map(json_or_text),
            logs: v.logs,
            fuel_used: v.fuel_used,
        }
    }
}

/// A delivery's recorded decision and the same decision made again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainView {
    #[schema(value_type = String)]
    pub delivery_id: crate::model::ids::DeliveryId,
    pub event_id: String,
    #[schema(value_type = String)]
    pub configuration_id: crate::model::ids::ConfigId,
    pub configuration_version: i64,
    /// The script version that decided; absent when the configuration had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptView>,
    /// The parameters it ran with.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub params: crate::sandbox::Params,
    pub recorded: VerdictView,
    pub again: VerdictView,
    /// `again` decided exactly what was recorded.
    pub identical: bool,
    /// The fields that differ: `action`, `reason`, `error_kind`, `body`, `headers`, `logs`, `fuel_used`.
    pub differences: Vec<&'static str>,
}

impl From<crate::pipeline::explain::Explained> for ExplainView {
    fn from(e: crate::pipeline::explain::Explained) -> Self {
        let differences = e.recorded.differences(&e.again);
        Self {
            delivery_id: e.delivery.id,
            event_id: e.delivery.event_id,
            configuration_id: e.delivery.configuration_id,
            configuration_version: e.delivery.configuration_version,
            script: e.script.map(ScriptView::from),
            params: e.params,
            recorded: e.recorded.into(),
            again: e.again.into(),
            identical: differences.is_empty(),
            differences,
        }
    }
}

/// Stored JSON text as a value; text that does not parse (it always
/// should) as a string, not lost.
fn json_or_text(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// From which configuration version on a configuration ran which script.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigScriptView {
    /// The configuration version this took effect at.
    pub configuration_version: i64,
    /// The script version (id); absent: no script from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub script_id: Option<crate::model::ids::ScriptId>,
    /// The script's sha256 (kept after the script is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_sha256: Option<String>,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub params: Value,
    #[schema(format = DateTime)]
    pub changed_at: String,
    /// The API key that made the change (absent: recorded at upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub changed_by: Option<crate::model::ids::KeyId>,
}

impl From<crate::store::ConfigScriptRecord> for ConfigScriptView {
    fn from(r: crate::store::ConfigScriptRecord) -> Self {
        Self {
            configuration_version: r.version,
            script_id: r.script_id,
            script_sha256: r.script_sha256,
            params: json_or_text(&r.params),
            changed_at: time(r.changed_at),
            changed_by: r.changed_by,
        }
    }
}

/// A preview's line about one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewEventView {
    event_id: String,
    /// `unchanged`, `changed_request`, `newly_delivered`, `newly_skipped`, `new_error`, `not_stored`.
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<VerdictView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<VerdictView>,
    /// Where the two request bodies differ (at most 20), as JSON Pointers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    body_changes: Vec<crate::pipeline::preview::JsonChange>,
    /// The headers each script adds, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    headers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

/// One line of a preview: an event's two decisions, the summary, or why
/// the preview stopped.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PreviewLineView {
    Event(Box<PreviewEventView>),
    Summary {
        #[schema(value_type = Object)]
        summary: crate::pipeline::preview::Summary,
    },
    Error {
        error: ErrorBody,
    },
}

impl From<crate::pipeline::preview::Item> for PreviewLineView {
    fn from(item: crate::pipeline::preview::Item) -> Self {
        use crate::pipeline::preview::Item;
        match item {
            Item::Event(c) => {
                let headers = c.headers_changed.then(|| {
                    let list = |h: &Option<String>| h.as_deref().map(json_or_text).unwrap_or(Value::Array(Vec::new()));
                    serde_json::json!({"current": list(&c.current.headers), "candidate": list(&c.candidate.headers)})
                });
                Self::Event(Box::new(PreviewEventView {
                    event_id: c.event_id,
                    change: c.change.as_str(),
                    current: Some(c.current.into()),
                    candidate: Some(c.candidate.into()),
                    body_changes: c.body_changes,
                    headers,
                    message: None,
                }))
            }
            Item::NotStored(event_id) => Self::Event(Box::new(PreviewEventView {
                event_id,
                change: "not_stored",
                current: None,
                candidate: None,
                body_changes: Vec::new(),
                headers: None,
                message: Some("no such event stored: never received, or purged by retention"),
            })),
            Item::Summary(summary) => Self::Summary { summary },
            Item::Failed(message) => Self::Error { error: ErrorBody { code: "preview_failed", message, field: None } },
        }
    }
}
