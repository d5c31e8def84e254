//! What a script answers: skip the event, or deliver it (possibly reshaped).

use serde::Serialize;

use crate::Error;

/// The verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Do not deliver; the reason is recorded on the delivery.
    Skip(String),
    /// Deliver, with an optional new body and extra headers.
    Deliver(Delivery),
}

/// How a delivered event is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Replacement body as JSON text; `None` sends the engine's default body.
    pub body: Option<String>,
    /// Extra request headers, in order.
    pub headers: Vec<(String, String)>,
}

impl Decision {
    /// Deliver the event as it is.
    pub fn deliver() -> Decision {
        Decision::Deliver(Delivery::default())
    }

    /// Deliver with `body` serialized as the new request body.
    pub fn deliver_json<T: Serialize + ?Sized>(body: &T) -> Result<Decision, Error> {
        let body = serde_json::to_string(body).map_err(|e| Error::msg(format!("cannot serialize the body: {e}")))?;
        Ok(Decision::Deliver(Delivery { body: Some(body), headers: Vec::new() }))
    }

    /// Do not deliver, for the given reason.
    pub fn skip(reason: impl Into<String>) -> Decision {
        Decision::Skip(reason.into())
    }

    /// Adds a request header to a delivery. A skip stays a skip.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Decision {
        if let Decision::Deliver(d) = &mut self {
            d.headers.push((name.into(), value.into()));
        }
        self
    }

    /// Whether the event is delivered.
    pub fn is_deliver(&self) -> bool {
        matches!(self, Decision::Deliver(_))
    }

    /// The skip reason, if the event is skipped.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            Decision::Skip(r) => Some(r),
            Decision::Deliver(_) => None,
        }
    }

    /// The delivery, if the event is delivered.
    pub fn delivery(&self) -> Option<&Delivery> {
        match self {
            Decision::Deliver(d) => Some(d),
            Decision::Skip(_) => None,
        }
    }
}

impl Delivery {
    /// The replacement body parsed as JSON, if there is one.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        self.body.as_deref().and_then(|b| serde_json::from_str(b).ok())
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
