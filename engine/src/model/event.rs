//! Events: the JSON shape services post, parsed once at the edge into types
//! the rest of the engine can trust.
//!
//! This module owns the validation rules for event fields. It must never
//! touch storage or the network.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest id, type or organization unit accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most related event ids accepted on one event.
pub const MAX_RELATED: usize = 64;

/// An event as posted, before validation. The same shape is read by
/// `sluice script test` and by the ingest API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub organization_unit: Option<String>,
    pub occurred_at: String,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub related: Vec<String>,
    pub payload: Box<RawValue>,
}

/// A field of an event that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event field `{field}`: {reason}")]
pub struct EventError {
    pub field: &'static str,
    pub reason: String,
}

impl EventError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// The caller's idempotency key for an event: identical across retries and
/// replays, and unique per tenant within the retention window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Parses a caller-supplied id: 1 to 255 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        validate_token("id", raw, |c| c.is_ascii_graphic())?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event type such as `order.paid` or `OrderCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventType(String);

/// Event types starting with this are sluice's own notices.
pub const RESERVED_TYPE_PREFIX: &str = "sluice.";

impl EventType {
    /// Letters, digits, `.`, `_` and `-`; no empty dot-separated segment.
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        validate_token("type", raw, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))?;
        if raw.split('.').any(str::is_empty) {
            return Err(EventError::new("type", "must not start or end with `.` or contain `..`"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of sluice's own notices' types (`sluice.…`): services cannot
    /// post them, and they do not count in a tenant's usage.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_TYPE_PREFIX)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node of the organization-unit tree, written as a path such as
/// `emea/nl/store-12`. The empty path is the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgUnit(String);

impl OrgUnit {
    /// Parses a path; leading and trailing `/` are ignored, empty segments
    /// and control characters are refused.
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        let path = raw.trim_matches('/');
        if path.len() > MAX_NAME_LEN {
            return Err(EventError::new("organization_unit", format!("longer than {MAX_NAME_LEN} bytes")));
        }
        if path.is_empty() {
            return Ok(Self::default());
        }
        if path.split('/').any(|s| s.trim().is_empty()) {
            return Err(EventError::new("organization_unit", "contains an empty path segment"));
        }
        if path.chars().any(char::is_control) {
            return Err(EventError::new("organization_unit", "contains a control character"));
        }
        Ok(Self(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this unit is `ancestor` itself or lies below it.
    pub fn is_within(&self, ancestor: &OrgUnit) -> bool {
        ancestor.0.is_empty()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes().get(ancestor.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for OrgUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A validated event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventType,
    pub organization_unit: OrgUnit,
    /// Always UTC.
    pub occurred_at: OffsetDateTime,
    pub source: Option<Source>,
    pub related: Vec<EventId>,
    /// The payload exactly as posted (any JSON value).
    pub payload: Box<RawValue>,
}

impl EventInput {
    /// Parses the JSON text of one event.
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        serde_json::from_str(text).map_err(|e| EventError::new("event", e.to_string()))
    }

    /// Validates every field. `new_id` supplies an id when the caller gave none.
    pub fn validate(self, new_id: impl FnOnce() -> EventId) -> Result<Event, EventError> {
        let id = match self.id {
            Some(raw) => EventId::parse(&raw)?,
            None => new_id(),
        };
        let event_type = EventType::parse(&self.event_type)?;
        let organization_unit = OrgUnit::parse(self.organization_unit.as_deref().unwrap_or(""))?;
        let occurred_at = OffsetDateTime::parse(&self.occurred_at, &Rfc3339)
            .map_err(|e| EventError::new("occurred_at", format!("not an RFC 3339 timestamp: {e}")))?
            .to_offset(time::UtcOffset::UTC);
        // Stored as i64 nanoseconds since the epoch: 1677-09-21 to 2262-04-11.
        if i64::try_from(occurred_at.unix_timestamp_nanos()).is_err() {
            return Err(EventError::new("occurred_at", "outside the supported range (1677-09-22 to 2262-04-10)"));
        }
        if let Some(source) = &self.source {
            for (field, value) in [("source.application", &source.application), ("source.user", &source.user)] {
                if value.as_ref().is_some_and(|v| v.len() > MAX_NAME_LEN || v.chars().any(char::is_control)) {
                    return Err(EventError::new(field, "too long or contains a control character"));
                }
            }
        }
        if self.related.len() > MAX_RELATED {
            return Err(EventError::new("related", format!("more than {MAX_RELATED} ids")));
        }
        if nesting_depth(self.payload.get()) > MAX_PAYLOAD_DEPTH {
            return Err(EventError::new("payload", format!("nested deeper than {MAX_PAYLOAD_DEPTH} levels")));
        }
        let related =
            self.related.iter().map(|r| EventId::parse(r).map_err(|e| EventError::new("related", e.reason))).collect::<Result<_, _>>()?;
        Ok(Event {
            id,
            event_type,
            organization_unit,
            occurred_at,
            source: self.source.filter(|s| s.application.is_some() || s.user.is_some()),
            related,
            payload: self.payload,
        })
    }
}

/// How deep a payload may nest arrays and objects: JSON parsers (serde's
/// among them, in scripts and here) stop at 128, and a payload no script
/// can read is refused at the edge rather than failing every delivery.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// The deepest nesting of arrays and objects in `json`, which is valid JSON.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// An event in the shape it was posted, payload as posted: the body
/// receivers get when no script replaces it, and what the API shows.
#[derive(Debug, serde::Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub organization_unit: &'a str,
    pub occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a Source>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub related: &'a [EventId],
    /// As posted: a `Value` would respell numbers and reorder keys.
    pub payload: &'a RawValue,
}

impl Event {
    /// The event in the shape it was posted.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            id: self.id.as_str(),
            event_type: self.event_type.as_str(),
            organization_unit: self.organization_unit.as_str(),
            occurred_at: self.occurred_at_rfc3339(),
            source: self.source.as_ref(),
            related: &self.related,
            payload: &self.payload,
        }
    }

    /// `occurred_at` in the canonical form scripts and receivers see:
    /// RFC 3339, UTC, `Z` suffix.
    pub fn occurred_at_rfc3339(&self) -> String {
        // Formatting a UTC OffsetDateTime as RFC 3339 cannot fail for years 0..=9999,
        // which is all `OffsetDateTime::parse` with Rfc3339 accepts.
        self.occurred_at.format(&Rfc3339).unwrap_or_default()
    }
}

fn validate_token(field: &'static str, raw: &str, allowed: impl Fn(char) -> bool) -> Result<(), EventError> {
    if raw.is_empty() {
        return Err(EventError::new(field, "must not be empty"));
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(EventError::new(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if let Some(bad) = raw.chars().find(|c| !allowed(*c)) {
        return Err(EventError::new(field, format!("contains the character {bad:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Event, EventError> {
        EventInput::from_json(json)?.validate(|| EventId::parse("generated").unwrap())
    }

    #[test]
    fn payload_nesting_is_bounded() {
        let nested =
            |n: usize| format!(r#"{{"type":"a","occurred_at":"2026-01-01T00:00:00Z","payload":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(parse(&nested(MAX_PAYLOAD_DEPTH)).is_ok());
        let e = parse(&nested(MAX_PAYLOAD_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("payload"), "{e}");
        // Brackets inside strings do not count.
        assert_eq!(nesting_depth(r#"{"a":"[[[{{\"]]","b":[1]}"#), 2);
    }

    #[test]
    fn parses_full_event_and_normalises_time_to_utc() {
        let e = parse(
            r#"{"id":"evt-1","type":"order.paid","organization_unit":"/emea/nl/","occurred_at":"2026-11-22T11:00:00+01:00",
                "source":{"application":"shop","user":"u/1"},"related":["evt-0"],"payload":{"amount":5}}"#,
        )
        .unwrap();
        assert_eq!(e.id.as_str(), "evt-1");
        assert_eq!(e.organization_unit.as_str(), "emea/nl");
        assert_eq!(e.occurred_at_rfc3339(), "2026-11-22T10:00:00Z");
        assert_eq!(e.payload.get(), r#"{"amount":5}"#);
        assert_eq!(e.related, vec![EventId::parse("evt-0").unwrap()]);
    }

    #[test]
    fn generates_missing_id() {
        let e = parse(r#"{"type":"a","occurred_at":"2026-01-01T00:00:00Z","payload":null}"#).unwrap();
        assert_eq!(e.id.as_str(), "generated");
        assert_eq!(e.organization_unit, OrgUnit::default());
    }

    #[test]
    fn refuses_bad_fields_naming_them() {
        let cases = [
            (r#"{"type":"a","occurred_at":"2026-01-01T00:00:00Z","payload":1,"extra":1}"#, "event"),
            (r#"{"type":"a b","occurred_at":"2026-01-01T00:00:00Z","payload":1}"#, "type"),
            (r#"{"type":"a..b","occurred_at":"2026-01-01T00:00:00Z","payload":1}"#, "type"),
            (r#"{"type":"a","occurred_at":"yesterday","payload":1}"#, "occurred_at"),
            (r#"{"id":"","type":"a","occurred_at":"2026-01-01T00:00:00Z","payload":1}"#, "id"),
            (r#"{"type":"a","organization_unit":"a//b","occurred_at":"2026-01-01T00:00:00Z","payload":1}"#, "organization_unit"),
            (r#"{"type":"a","occurred_at":"2026-01-01T00:00:00Z"}"#, "event"),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn refuses_times_nanoseconds_cannot_hold() {
        let at = |t: &str| parse(&format!(r#"{{"type":"a","occurred_at":"{t}","payload":1}}"#));
        for t in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2262-04-12T00:00:00Z", "1677-09-21T00:00:00Z"] {
            assert_eq!(at(t).unwrap_err().field, "occurred_at", "{t}");
        }
        for t in ["2262-04-10T23:59:59.999999999Z", "1677-09-22T00:00:00Z"] {
            let e = at(t).unwrap();
            assert_eq!(e.occurred_at, OffsetDateTime::parse(t, &Rfc3339).unwrap(), "{t}");
        }
    }

    #[test]
    fn org_unit_tree() {
        let ou = |s| OrgUnit::parse(s).unwrap();
        assert!(ou("emea/nl/store-12").is_within(&ou("emea")));
        assert!(ou("emea").is_within(&ou("emea")));
        assert!(ou("emea").is_within(&ou("")));
        assert!(!ou("emea-x").is_within(&ou("emea")));
        assert!(!ou("emea").is_within(&ou("emea/nl")));
    }
}
