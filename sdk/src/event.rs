//! The event a script decides on, with typed access to its JSON payload.

use std::cell::OnceCell;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// Who caused an event, when the producing service said so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The application that made the change, e.g. `storefront`.
    pub application: Option<String>,
    /// The user that made the change.
    pub user: Option<String>,
}

/// One business event.
///
/// The payload is kept as the JSON text the engine handed over; it is parsed
/// at most once, on first use of [`Event::value`] or [`Event::pointer`].
#[derive(Debug, Clone)]
pub struct Event {
    id: String,
    event_type: String,
    organization_unit: String,
    occurred_at: String,
    source: Option<Source>,
    related: Vec<String>,
    payload: String,
    parsed: OnceCell<Result<Value, String>>,
}

impl Event {
    /// Builds an event; scripts receive theirs from the engine, tests use
    /// [`Event::builder`].
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        id: String,
        event_type: String,
        organization_unit: String,
        occurred_at: String,
        source: Option<Source>,
        related: Vec<String>,
        payload: String,
    ) -> Event {
        Event { id, event_type, organization_unit, occurred_at, source, related, payload, parsed: OnceCell::new() }
    }

    /// Starts an event for a native test: `Event::builder("order.paid")`.
    pub fn builder(event_type: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event: Event::from_parts(
                "evt_test".into(),
                event_type.into(),
                String::new(),
                "2026-01-01T00:00:00Z".into(),
                None,
                Vec::new(),
                "{}".into(),
            ),
        }
    }

    /// The idempotency id, identical across retries and replays.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event type, e.g. `order.paid`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The organization unit path, e.g. `emea/nl/store-12`.
    pub fn organization_unit(&self) -> &str {
        &self.organization_unit
    }

    /// Whether the event's organization unit is `unit` or lies below it.
    pub fn is_in_unit(&self, unit: &str) -> bool {
        let unit = unit.trim_matches('/');
        let ou = self.organization_unit.trim_matches('/');
        unit.is_empty() || ou == unit || (ou.starts_with(unit) && ou.as_bytes().get(unit.len()) == Some(&b'/'))
    }

    /// When the event happened, RFC 3339 in UTC.
    pub fn occurred_at(&self) -> &str {
        &self.occurred_at
    }

    /// Who caused the event, if known.
    pub fn source(&self) -> Option<&Source> {
        self.source.as_ref()
    }

    /// Ids of related events.
    pub fn related(&self) -> &[String] {
        &self.related
    }

    /// The payload as JSON text, exactly as received.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The payload deserialized into your own type.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| Error::msg(format!("payload does not match the expected shape: {e}")))
    }

    /// The payload as a JSON value, parsed once.
    pub fn value(&self) -> Result<&Value, Error> {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.payload).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::msg(format!("payload is not valid JSON: {e}")))
    }

    /// The value at a JSON pointer (RFC 6901) such as `/customer/email`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        self.value().ok()?.pointer(pointer)
    }

    /// The value at a JSON pointer, deserialized; `Ok(None)` when absent or
    /// `null`. Reads only the path from the payload text, so it is much
    /// cheaper than [`Event::value`] when a script needs a few fields.
    pub fn get<T: DeserializeOwned>(&self, pointer: &str) -> Result<Option<T>, Error> {
        crate::pointer::lookup(&self.payload, pointer).map_err(|e| Error::msg(format!("payload field {pointer}: {e}")))
    }

    /// Takes the event apart for the wasm glue.
    #[doc(hidden)]
    pub fn into_payload(self) -> String {
        self.payload
    }
}

/// Builds events for native tests of a script.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: Event,
}

impl EventBuilder {
    /// Sets the event id (default `evt_test`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.event.id = id.into();
        self
    }

    /// Sets the organization unit path.
    pub fn organization_unit(mut self, ou: impl Into<String>) -> Self {
        self.event.organization_unit = ou.into();
        self
    }

    /// Sets the occurrence time (RFC 3339).
    pub fn occurred_at(mut self, at: impl Into<String>) -> Self {
        self.event.occurred_at = at.into();
        self
    }

    /// Sets the source application and user.
    pub fn source(mut self, application: Option<&str>, user: Option<&str>) -> Self {
        self.event.source = Some(Source { application: application.map(str::to_owned), user: user.map(str::to_owned) });
        self
    }

    /// Adds a related event id.
    pub fn related(mut self, id: impl Into<String>) -> Self {
        self.event.related.push(id.into());
        self
    }

    /// Sets the payload from a JSON value.
    pub fn payload(mut self, payload: Value) -> Self {
        self.event.payload = payload.to_string();
        self.event.parsed = OnceCell::new();
        self
    }

    /// Sets the payload from raw text (which need not be valid JSON, to
    /// test how a script copes).
    pub fn payload_text(mut self, payload: impl Into<String>) -> Self {
        self.event.payload = payload.into();
        self.event.parsed = OnceCell::new();
        self
    }

    /// The finished event.
    pub fn build(self) -> Event {
        self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_and_pointer_access() {
        #[derive(serde::Deserialize)]
        struct Order {
            amount: f64,
        }
        let e = Event::builder("order.paid").payload(json!({"amount": 12.5, "customer": {"email": "a@b.c"}})).build();
        assert_eq!(e.json::<Order>().unwrap().amount, 12.5);
        assert_eq!(e.pointer("/customer/email"), Some(&json!("a@b.c")));
        assert_eq!(e.get::<String>("/customer/email").unwrap().as_deref(), Some("a@b.c"));
        assert_eq!(e.get::<String>("/missing").unwrap(), None);
        assert!(e.get::<u32>("/customer").is_err());
    }

    #[test]
    fn invalid_payload_is_an_error_not_a_panic() {
        let e = Event::builder("x").payload_text("{nope").build();
        assert!(e.value().is_err());
        assert_eq!(e.pointer("/a"), None);
    }

    #[test]
    fn unit_tree() {
        let e = Event::builder("x").organization_unit("emea/nl/store-12").build();
        assert!(e.is_in_unit("emea"));
        assert!(e.is_in_unit("emea/nl/"));
        assert!(e.is_in_unit("emea/nl/store-12"));
        assert!(!e.is_in_unit("emea/nl/store-1"));
        assert!(!e.is_in_unit("emea/n"));
        assert!(e.is_in_unit(""));
    }
}
