//! Sending: the HTTP clients (shared, or per configuration for its TLS
//! trust and client certificate), all behind the destination guard, and
//! one request sent within the deadline, its answer read (capped) and
//! classified by the configuration's response mode.
//!
//! It sends what it is given; it must never build, retry or record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::export::{Authorization, ExportConfig, ResponseMode, Tls};
use crate::model::timestamp;
use crate::pipeline::destination::{self, DestinationPolicy};
use crate::pipeline::job::DeliveryJob;
use crate::pipeline::request::{LoggedRequest, Target, build, headers_json};

/// Most response-body bytes kept in the payload log.
const MAX_LOGGED_RESPONSE: usize = 64 << 10;

/// The client every configuration without its own TLS settings shares.
/// Like every delivery client, it connects only where `destinations`
/// allows, directly, and follows no redirect.
pub fn shared_client(destinations: &Arc<DestinationPolicy>) -> reqwest::Client {
    destination::guard(reqwest::Client::builder(), destinations)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(256)
        .build()
        .expect("the default TLS backend initializes")
}

/// A client honouring a configuration's TLS trust and client certificate.
/// An endpoint that is a literal address `destinations` refuses (saved
/// before the policy changed; literal addresses never reach the resolver)
/// gets a client whose every send fails, saying why.
pub fn client_for(
    spec: &ExportConfig,
    shared: &reqwest::Client,
    destinations: &Arc<DestinationPolicy>,
) -> Result<reqwest::Client, reqwest::Error> {
    let custom_tls = !matches!(spec.tls, Tls::System);
    let cert = matches!(spec.authorization, Authorization::ClientCertificate { .. });
    let forbidden = reqwest::Url::parse(&spec.endpoint).ok().and_then(|url| destinations.check_url(&url).err());
    if !custom_tls && !cert && forbidden.is_none() {
        return Ok(shared.clone());
    }
    let mut b = destination::guard(reqwest::Client::builder(), destinations).user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
    if let Some(forbidden) = forbidden {
        b = destination::refuse(b, forbidden);
    }
    match &spec.tls {
        Tls::System => {}
        Tls::CustomCa { ca_pem } => {
            b = b.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())? {
                b = b.add_root_certificate(cert);
            }
        }
        Tls::TrustAll => b = b.danger_accept_invalid_certs(true),
    }
    if let Authorization::ClientCertificate { certificate_pem, private_key_pem, .. } = &spec.authorization {
        let pem = format!("{certificate_pem}\n{private_key_pem}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes())?);
    }
    b.build()
}

/// One request and its answer, classified by the configuration's response mode.
pub struct Sent {
    pub request: LoggedRequest,
    /// Unix ms.
    pub started_at: i64,
    pub duration_ms: i64,
    pub status: Option<reqwest::StatusCode>,
    /// JSON object.
    pub response_headers: Option<String>,
    /// As received, cut after [`MAX_LOGGED_RESPONSE`]; it need not be UTF-8.
    pub response_body: Option<Vec<u8>>,
    pub retry_after: Option<Duration>,
    pub succeeded: bool,
    /// Why it failed, for the attempt log.
    pub error: Option<String>,
}

/// Builds, signs and sends one request for `job`, within the deadline.
pub async fn send_once(spec: &ExportConfig, target: &Target, client: &Result<reqwest::Client, String>, job: &DeliveryJob) -> Sent {
    let outgoing = build(spec, target, job);
    let request = outgoing.logged();
    let started_at = timestamp::now_ms();
    let client = match client {
        Ok(client) => client,
        Err(why) => {
            let error = Some(why.clone());
            return Sent {
                request,
                started_at,
                duration_ms: 0,
                status: None,
                response_headers: None,
                response_body: None,
                retry_after: None,
                succeeded: false,
                error,
            };
        }
    };
    let clock = Instant::now();
    let sent = client.post(outgoing.url).headers(outgoing.headers).body(outgoing.body).timeout(spec.deadline()).send().await;
    let (status, response_headers, response_body, error, retry_after) = match sent {
        Ok(response) => {
            let status = response.status();
            let headers = headers_json(response.headers(), false);
            let retry_after = retry_after(response.headers(), std::time::SystemTime::now());
            let body = read_capped(response, spec.deadline().saturating_sub(clock.elapsed())).await;
            (Some(status), Some(headers), body, None, retry_after)
        }
        Err(e) => (None, None, None, Some(describe(&e)), None),
    };
    let duration_ms = clock.elapsed().as_millis() as i64;
    let (succeeded, error) = judge(spec.response_mode, status, response_body.as_deref(), error);
    Sent { request, started_at, duration_ms, status, response_headers, response_body, retry_after, succeeded, error }
}

/// Whether an answer acknowledges the request under `mode`, and if not why.
pub fn judge(
    mode: ResponseMode,
    status: Option<reqwest::StatusCode>,
    body: Option<&[u8]>,
    error: Option<String>,
) -> (bool, Option<String>) {
    let succeeded = match (status, mode) {
        (Some(s), ResponseMode::Loose) => s.is_success(),
        (Some(s), ResponseMode::Normal) => s == reqwest::StatusCode::OK && body.map(<[u8]>::trim_ascii) == Some(b"[ACK]".as_slice()),
        (None, _) => false,
    };
    let error = error.or_else(|| {
        (!succeeded).then(|| match (status, mode) {
            (Some(s), ResponseMode::Normal) if s.is_success() => format!("answered {s} without the body [ACK]"),
            (Some(s), _) => format!("answered {s}"),
            (None, _) => "no answer".into(),
        })
    });
    (succeeded, error)
}

/// How long the receiver asks to wait (`Retry-After`: seconds, or an HTTP date).
fn retry_after(headers: &reqwest::header::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Reads at most [`MAX_LOGGED_RESPONSE`] bytes of the answer within `budget`.
async fn read_capped(mut response: reqwest::Response, budget: Duration) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_LOGGED_RESPONSE.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(budget.max(Duration::from_millis(100)), read).await;
    Some(body)
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "deadline exceeded"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The source chain explains (refused, TLS, DNS) without the URL, which may carry a key.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { what.to_owned() } else { format!("{what}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("value"));
            retry_after(&h, now)
        };
        assert_eq!(with("120"), Some(Duration::from_secs(120)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(with("Tue, 14 Nov 2023 22:14:20 GMT"), Some(Duration::from_secs(60)));
        assert_eq!(with("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO), "a past date means now");
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
