//! The request for one attempt: URL and query, headers (the
//! configuration's, the script's, authorization, signatures), and body;
//! and the request headers as the attempt log shows them, credentials
//! redacted.
//!
//! It builds; it must never send, and never log a credential.

use std::collections::BTreeMap;

use crate::model::event::Event;
use crate::model::export::{Authorization, ExportConfig};
use crate::model::headers::{REDACTED, is_secret_name, redact_url};
use crate::model::sign;
use crate::model::timestamp;
use crate::pipeline::job::DeliveryJob;
use crate::sandbox::Header;

/// A request ready to send, and its URI as logged.
pub struct Request {
    pub url: reqwest::Url,
    pub logged_uri: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// What the attempt log keeps of a request: its URI and headers as logged
/// (credentials redacted, the headers as a JSON object) and its body.
pub struct LoggedRequest {
    pub uri: String,
    pub headers: String,
    pub body: bytes::Bytes,
}

impl Request {
    /// What the log keeps of this request: the headers redacted once, the
    /// body shared with the request, not copied.
    pub fn logged(&self) -> LoggedRequest {
        LoggedRequest { uri: self.logged_uri.clone(), headers: headers_json(&self.headers, true), body: self.body.clone() }
    }
}

/// The body receivers get when the script does not replace it: the event
/// in the shape it was posted.
pub fn default_body(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&event.envelope()).unwrap_or_default()
}

/// Where a configuration's requests go, and the same as attempt logs show
/// it: made once per configuration, not parsed again for every attempt.
pub struct Target {
    url: reqwest::Url,
    logged_uri: String,
}

impl Target {
    /// The endpoint with the configuration's query added. (Endpoints are
    /// validated when a configuration is saved: only a damaged stored one
    /// fails here.)
    pub fn new(spec: &ExportConfig) -> Result<Self, String> {
        let mut url = reqwest::Url::parse(&spec.endpoint).map_err(|e| e.to_string())?;
        // The endpoint's own query may carry a credential (`?token=…`).
        let mut logged = reqwest::Url::parse(&redact_url(&spec.endpoint)).unwrap_or_else(|_| {
            let mut bare = url.clone();
            bare.set_query(None);
            bare
        });
        if !spec.query.is_empty() {
            let mut q = url.query_pairs_mut();
            let mut lq = logged.query_pairs_mut();
            for (k, v) in &spec.query {
                q.append_pair(k, v);
                lq.append_pair(k, if is_secret_name(k) { REDACTED } else { v });
            }
        }
        Ok(Self { url, logged_uri: logged.into() })
    }
}

/// Builds the request for one attempt to `target`, `spec`'s. Everything
/// here was validated when the configuration was saved, so failures only
/// drop the offending part.
pub fn build(spec: &ExportConfig, target: &Target, job: &DeliveryJob) -> Request {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

    let body = bytes::Bytes::from(match job.body() {
        Some(b) => b.as_bytes().to_vec(),
        None => default_body(&job.event),
    });
    let mut headers = HeaderMap::with_capacity(12);
    // sluice's own names are made without parsing or copying them; the
    // configuration's and the script's are parsed (and were validated).
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    let parsed = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
    for (k, v) in &spec.headers {
        if let Some(n) = parsed(k) {
            put(n, v);
        }
    }
    if let Some(script_headers) = job.headers().and_then(|h| serde_json::from_str::<Vec<Header>>(h).ok()) {
        for h in script_headers {
            if let Some(n) = parsed(&h.name) {
                put(n, &h.value);
            }
        }
    }
    put(reqwest::header::CONTENT_TYPE, "application/json");
    put(HeaderName::from_static("idempotency-key"), job.event.id.as_str());
    // Who caused the event, for receivers that audit it.
    if let Some(source) = &job.event.source {
        if let Some(user) = &source.user {
            put(HeaderName::from_static("sluice-source-user"), user);
        }
        if let Some(application) = &source.application {
            put(HeaderName::from_static("sluice-source-application"), application);
        }
    }
    match &spec.authorization {
        Authorization::Bearer { token } => put(reqwest::header::AUTHORIZATION, &format!("Bearer {token}")),
        Authorization::Token { token } => put(reqwest::header::AUTHORIZATION, token),
        Authorization::None | Authorization::ClientCertificate { .. } => {}
    }
    let now = timestamp::now_ms();
    let secrets = spec.signing.secrets_at(now);
    for (name, value) in sign::headers(&spec.signing.profiles, &secrets, job.event.id.as_str(), now / 1000, &body) {
        put(HeaderName::from_static(name), &value);
    }
    Request { url: target.url.clone(), logged_uri: target.logged_uri.clone(), headers, body }
}

/// Headers as a JSON object; with `redact`, credential values read `***`.
pub fn headers_json(headers: &reqwest::header::HeaderMap, redact: bool) -> String {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let shown = if redact && is_secret_name(name) && name != "webhook-signature" && name != "x-signature" {
            std::borrow::Cow::Borrowed(REDACTED)
        } else {
            String::from_utf8_lossy(value.as_bytes())
        };
        out.insert(name, shown);
    }
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::ids::{ConfigId, DeliveryId, TenantId};

    #[test]
    fn the_logged_uri_hides_the_endpoints_own_credentials_and_the_request_keeps_them() {
        let spec: ExportConfig = serde_json::from_value::<crate::model::export::ConfigInput>(serde_json::json!({
            "name": "n", "endpoint": "https://x.example/hook?token=abc&v=1", "event_types": ["*"],
            "query": {"key": "k-123", "page": "2"}, "headers": {"X-Api-Key": "h-456"}
        }))
        .expect("shape")
        .validate(None)
        .expect("valid");
        let event = crate::model::event::EventInput::from_json(
            r#"{"type": "a.b", "organization_unit": "x", "occurred_at": "2026-01-01T00:00:00Z", "payload": {}}"#,
        )
        .and_then(|e| e.validate(|| crate::model::event::EventId::parse("evt_1").expect("id")))
        .expect("event");
        let job = DeliveryJob {
            tenant: TenantId::generate(),
            delivery: DeliveryId::generate(),
            config: ConfigId::generate(),
            event: Arc::new(event),
            body: None,
            headers: None,
            attempt: 1,
            undecided: false,
            unwritten: None,
            hold: None,
        };
        let request = build(&spec, &Target::new(&spec).expect("endpoint"), &job);
        assert_eq!(request.url.as_str(), "https://x.example/hook?token=abc&v=1&key=k-123&page=2");
        assert_eq!(request.logged_uri, "https://x.example/hook?token=***&v=1&key=***&page=2");
        assert_eq!(request.headers["x-api-key"], "h-456");
        let logged = request.logged().headers;
        assert!(!logged.contains("h-456") && logged.contains(r#""x-api-key":"***""#), "{logged}");
    }

    #[test]
    fn logged_headers_are_in_name_order_with_a_repeated_names_last_value_and_credentials_hidden() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        for (name, value) in [("x-b", "2"), ("authorization", "Bearer t-1"), ("x-a", "first"), ("webhook-signature", "v1,abc")] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers.append("x-a", HeaderValue::from_static("second"));
        headers.append("x-c", HeaderValue::from_bytes(b"\xff\"q").expect("opaque bytes are a valid value"));
        assert_eq!(
            headers_json(&headers, true),
            r#"{"authorization":"***","webhook-signature":"v1,abc","x-a":"second","x-b":"2","x-c":"�\"q"}"#
        );
        assert!(headers_json(&headers, false).contains(r#""authorization":"Bearer t-1""#));
        assert_eq!(headers_json(&HeaderMap::new(), true), "{}");
    }

    #[test]
    fn a_stored_endpoint_that_no_longer_parses_is_an_error_not_a_panic() {
        let mut spec: ExportConfig = serde_json::from_value::<crate::model::export::ConfigInput>(serde_json::json!({
            "name": "n", "endpoint": "https://x.example/hook", "event_types": ["*"]
        }))
        .expect("shape")
        .validate(None)
        .expect("valid");
        // What a damaged row would hold: saving validates endpoints.
        spec.endpoint = "no scheme\u{0}".into();
        assert!(Target::new(&spec).is_err());
    }
}
