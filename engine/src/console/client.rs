//! The console's way to the engine: the HTTP API itself, called in-process
//! with the session's key. A page can show and do exactly what its key's
//! scopes allow through the API, with the API's own validation and errors,
//! because it is an API client.
//!
//! This module owns turning a page's wish into an API request and the
//! answer back into JSON. It must never reach the service or the store.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

/// Largest answer a page reads (a page of 100 events with their payloads).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The API, as the console calls it.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// A refusal from the API, as it answered: shown to the user as such.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The request field at fault, for configuration errors.
    pub field: Option<String>,
}

impl Refusal {
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

/// One API call: what the page asks and with which key.
pub struct Call<'a> {
    pub key: &'a str,
    /// The `Host` the browser used, passed on (portal links' URLs use it).
    pub host: Option<&'a str>,
    pub method: Method,
    pub path: String,
    pub body: Payload,
    pub if_match: Option<i64>,
}

/// A request's body.
pub enum Payload {
    Empty,
    Json(Value),
    /// Bytes as they are: a script's component, or JSON whose text must be
    /// kept (an event's payload).
    Raw {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
}

impl Api {
    pub fn new(router: Router) -> Self {
        Self { router }
    }

    /// Sends `call` and reads its JSON answer (`null` when empty).
    pub async fn send(&self, call: Call<'_>) -> Result<Value, Refusal> {
        let bytes = self.exchange(call).await?;
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    /// Sends a request whose answer is NDJSON (a preview): one value a line.
    pub async fn send_lines(&self, call: Call<'_>) -> Result<Vec<Value>, Refusal> {
        let bytes = self.exchange(call).await?;
        Ok(bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice(l).ok()).collect())
    }

    /// Sends `call` and returns its answer's bytes, for what must be shown
    /// exactly as stored (an event's payload: a `Value` would respell
    /// numbers and reorder keys).
    pub async fn send_raw(&self, call: Call<'_>) -> Result<axum::body::Bytes, Refusal> {
        self.exchange(call).await
    }

    /// The answer's body on success; the API's error as a [`Refusal`].
    async fn exchange(&self, call: Call<'_>) -> Result<axum::body::Bytes, Refusal> {
        let mut request =
            Request::builder().method(call.method).uri(&call.path).header(header::AUTHORIZATION, format!("Bearer {}", call.key));
        if let Some(host) = call.host {
            request = request.header(header::HOST, host);
        }
        if let Some(version) = call.if_match {
            request = request.header(header::IF_MATCH, format!("\"{version}\""));
        }
        let body = match call.body {
            Payload::Json(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            Payload::Raw { bytes, content_type } => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            Payload::Empty => Body::empty(),
        };
        let request = request.body(body).map_err(|e| internal(format!("a console request could not be built: {e}")))?;
        let answer = match self.router.clone().oneshot(request).await {
            Ok(answer) => answer,
            Err(never) => match never {},
        };
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| internal(format!("the API's answer could not be read: {e}")))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(Refusal {
            status,
            code: json["code"].as_str().unwrap_or("error").to_owned(),
            message: json["message"].as_str().unwrap_or("the request failed").to_owned(),
            field: json["field"].as_str().map(str::to_owned),
        })
    }
}

fn internal(message: String) -> Refusal {
    Refusal { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal".into(), message, field: None }
}
