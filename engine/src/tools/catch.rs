//! `sluice catch`: the test receiver an integrator points a configuration at
//! first. It prints every request it gets (a readable block, or one JSON
//! object per line), says whether the request's signature holds for the
//! secrets it was given, and answers the way a response mode expects.
//!
//! This module owns the receiver and signature *verification*; the signature
//! formats themselves are [`crate::model::sign`]'s, reused here to compute what a
//! signature should be. It must never print a secret or a credential
//! (`authorization` keeps only its scheme; credential-like headers and query
//! parameters read `***`), never compare a signature in
//! variable time, and never touch the store: it is a tool apart from the
//! engine, safe to run anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::export::{ResponseMode, SigningSecret};
use crate::model::sign;

/// A Standard Webhooks timestamp further than this from now, either way, is
/// refused (the tolerance the Standard Webhooks libraries use).
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;
/// Bodies are shown up to this many bytes; the rest is counted, not printed.
pub const MAX_SHOWN_BYTES: usize = 64 * 1024;
/// Bodies above this are refused with `413` (the engine's own caps are far below).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How `sluice catch` listens, verifies and answers.
#[derive(Debug, Clone)]
pub struct CatchOptions {
    /// Port 0 picks a free port; the address bound is printed on stderr.
    pub listen: SocketAddr,
    /// Verified with in order; the first that matches is named by position.
    pub secrets: Vec<SigningSecret>,
    /// `Normal` answers `[ACK]`, `Loose` an empty body.
    pub mode: ResponseMode,
    /// Answered instead of `200`.
    pub status: Option<StatusCode>,
    /// One JSON object per line instead of a readable block.
    pub json: bool,
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchError {
    /// The address is taken, or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// The server stopped on an I/O error.
    #[error("the receiver stopped: {0}")]
    Serve(std::io::Error),
}

/// Listens until Ctrl-C or SIGTERM, printing each request on stdout.
pub async fn run(options: CatchOptions) -> Result<(), CatchError> {
    let listen = options.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| CatchError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| CatchError::Listen { addr: listen, source })?;
    // On stderr, so that stdout holds requests only (and `--json` stays parseable).
    note(format_args!("sluice catch listening on http://{addr}"));
    match options.secrets.len() {
        0 => note(format_args!("no --secret given: signatures are not checked")),
        n => note(format_args!("verifying signatures with {n} secret(s)")),
    }
    axum::serve(listener, router(options)).with_graceful_shutdown(crate::server::shutdown_signal()).await.map_err(CatchError::Serve)?;
    note(format_args!("sluice catch stopped"));
    Ok(())
}

/// A line on stderr; a closed stderr must not stop the receiver (`eprintln!` would panic).
fn note(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Every method on every path goes to [`receive`].
fn router(options: CatchOptions) -> Router {
    Router::new().fallback(receive).with_state(Arc::new(options))
}

async fn receive(State(options): State<Arc<CatchOptions>>, request: Request) -> Response {
    let received_at = OffsetDateTime::now_utc();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            note(format_args!("{} {}: body refused: {e}", parts.method, parts.uri.path()));
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
    };
    let (status, answer) = answer(&options);
    let caught = Caught {
        received_at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(shown_query),
        headers: parts.headers.iter().map(|(n, v)| (n.to_string(), shown_header(n, v))).collect(),
        body: Shown::of(&body),
        body_bytes: body.len(),
        signatures: verify(&parts.headers, &body, &options.secrets, received_at.unix_timestamp()),
        status,
        answer,
    };
    let text = if options.json { caught.json_line() } else { caught.readable() };
    // One write under the lock: concurrent requests never interleave.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    (status, answer).into_response()
}

/// The status and body to answer with.
fn answer(options: &CatchOptions) -> (StatusCode, &'static str) {
    let status = options.status.unwrap_or(StatusCode::OK);
    let ack = options.mode == ResponseMode::Normal && status == StatusCode::OK;
    (status, if ack { "[ACK]" } else { "" })
}

/// What a request's signature headers say, per profile; `None` for a profile
/// whose headers the request does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    pub standard_webhooks: Option<Verdict>,
    pub x_signature: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `--secret` was given.
    NotChecked,
    /// Made with the `secret`-th `--secret` (counting from 1).
    Valid {
        secret: usize,
    },
    Invalid(Invalid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Well formed, but no secret gives this signature: a wrong secret, or a
    /// request altered after signing.
    NoMatch,
    /// `webhook-timestamp` is more than the tolerance from now; `age_secs`
    /// is negative for a timestamp in the future.
    StaleTimestamp { age_secs: i64 },
    /// A header missing or not in its profile's format.
    Malformed(&'static str),
}

impl Invalid {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoMatch => "no_match",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMatch => f.write_str("no secret matches (a wrong secret, or the request was altered)"),
            Self::StaleTimestamp { age_secs } if *age_secs >= 0 => {
                write!(f, "stale timestamp ({age_secs} s old, tolerance {TIMESTAMP_TOLERANCE_SECS} s)")
            }
            Self::StaleTimestamp { age_secs } => {
                write!(f, "stale timestamp ({} s in the future, tolerance {TIMESTAMP_TOLERANCE_SECS} s)", age_secs.unsigned_abs())
            }
            Self::Malformed(what) => f.write_str(what),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotChecked => f.write_str("not checked (no --secret given)"),
            Self::Valid { secret } => write!(f, "valid (--secret #{secret})"),
            Self::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl Verdict {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::NotChecked => serde_json::json!({"verdict": "not_checked"}),
            Self::Valid { secret } => serde_json::json!({"verdict": "valid", "secret": secret}),
            Self::Invalid(why) => serde_json::json!({
                "verdict": "invalid",
                "reason": why.code(),
                "detail": why.to_string(),
            }),
        }
    }
}

/// Checks every signature profile the request carries against `secrets`,
/// at `now` (Unix seconds).
pub fn verify(headers: &HeaderMap, body: &[u8], secrets: &[SigningSecret], now: i64) -> Signatures {
    Signatures {
        standard_webhooks: verify_standard_webhooks(headers, body, secrets, now),
        x_signature: verify_x_signature(headers, body, secrets),
    }
}

/// A header's value; one that is not visible ASCII reads as empty, so that it
/// counts as present but cannot match.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// Both sides are ours to lay out (ASCII), so only their length can leak.
fn same(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn verify_standard_webhooks(headers: &HeaderMap, body: &[u8], secrets: &[SigningSecret], now: i64) -> Option<Verdict> {
    let (id, timestamp, signature) =
        (header(headers, "webhook-id"), header(headers, "webhook-timestamp"), header(headers, "webhook-signature"));
    if id.is_none() && timestamp.is_none() && signature.is_none() {
        return None;
    }
    if secrets.is_empty() {
        return Some(Verdict::NotChecked);
    }
    let invalid = |why| Some(Verdict::Invalid(why));
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return invalid(Invalid::Malformed("webhook-id is missing"));
    };
    let Some(timestamp) = timestamp else {
        return invalid(Invalid::Malformed("webhook-timestamp is missing"));
    };
    let Some(signature) = signature else {
        return invalid(Invalid::Malformed("webhook-signature is missing"));
    };
    let Ok(timestamp) = timestamp.trim().parse::<i64>() else {
        return invalid(Invalid::Malformed("webhook-timestamp is not a number of seconds"));
    };
    let age_secs = now.saturating_sub(timestamp);
    if age_secs.unsigned_abs() > TIMESTAMP_TOLERANCE_SECS {
        return invalid(Invalid::StaleTimestamp { age_secs });
    }
    // Space-separated, one per signing secret during a rotation; other
    // versions than `v1` are for future schemes and are skipped.
    let candidates: Vec<&str> = signature.split_whitespace().filter(|s| s.starts_with("v1,")).collect();
    if candidates.is_empty() {
        return invalid(Invalid::Malformed("webhook-signature holds no `v1,<base64>` signature"));
    }
    for (n, secret) in secrets.iter().enumerate() {
        let expected = sign::standard_webhooks(&[secret], id, timestamp, body);
        if candidates.iter().any(|given| same(given, &expected)) {
            return Some(Verdict::Valid { secret: n + 1 });
        }
    }
    invalid(Invalid::NoMatch)
}

fn verify_x_signature(headers: &HeaderMap, body: &[u8], secrets: &[SigningSecret]) -> Option<Verdict> {
    let given = header(headers, "x-signature")?.trim();
    if secrets.is_empty() {
        return Some(Verdict::NotChecked);
    }
    if given.len() != 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Verdict::Invalid(Invalid::Malformed("X-Signature is not 64 hex digits")));
    }
    // `sign` writes lowercase hex; a sender writing uppercase means the same.
    let given = given.to_ascii_lowercase();
    for (n, secret) in secrets.iter().enumerate() {
        if same(&given, &sign::x_signature(secret, body)) {
            return Some(Verdict::Valid { secret: n + 1 });
        }
    }
    Some(Verdict::Invalid(Invalid::NoMatch))
}

/// A header value as printed: credentials keep their scheme only.
fn shown_header(name: &HeaderName, value: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
        return match text.trim().split_once(char::is_whitespace) {
            Some((scheme, _)) => format!("{scheme} ***"),
            None => "***".to_owned(),
        };
    }
    // Signatures are not secrets, and showing them helps debug a mismatch.
    let signature = name == "webhook-signature" || name == "x-signature";
    if crate::model::headers::is_secret_name(name.as_str()) && !signature {
        return "***".to_owned();
    }
    text.into_owned()
}

/// The query string with credential-like parameters (`key`, `token`, …)
/// shown as `***`, as the engine's attempt log shows them.
fn shown_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if crate::model::headers::is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A body as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    Empty,
    /// Valid JSON, as received (laid out again when printed).
    Json(String),
    /// Anything else, as (lossy) UTF-8, cut after [`MAX_SHOWN_BYTES`].
    Text {
        text: String,
        left_out: usize,
    },
}

impl Shown {
    fn of(body: &[u8]) -> Self {
        if body.is_empty() {
            return Self::Empty;
        }
        if body.len() <= MAX_SHOWN_BYTES
            && let Ok(text) = std::str::from_utf8(body)
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        {
            return Self::Json(text.to_owned());
        }
        let cut = body.len().min(MAX_SHOWN_BYTES);
        Self::Text { text: String::from_utf8_lossy(&body[..cut]).into_owned(), left_out: body.len() - cut }
    }

    fn format(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Json(_) => "json",
            Self::Text { .. } => "text",
        }
    }
}

/// Lays a valid JSON text out again, pretty (two-space indent) or compact,
/// keeping its keys in the order sent and its numbers as written, which a
/// round trip through `serde_json::Value` would not.
fn layout(json: &str, pretty: bool) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let newline = |out: &mut String, depth: usize| {
        if pretty {
            out.push('\n');
            out.extend(std::iter::repeat_n("  ", depth));
        }
    };
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                if let Some(close) = chars.next_if(|c| matches!(c, '}' | ']')) {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(if pretty { ": " } else { ":" }),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// One request as it is printed: credentials already redacted.
struct Caught {
    received_at: OffsetDateTime,
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Shown,
    body_bytes: usize,
    signatures: Signatures,
    status: StatusCode,
    answer: &'static str,
}

/// The `--json` line; `body` is the JSON value itself when the body is JSON,
/// else a string.
#[derive(Serialize)]
struct Line<'a> {
    received_at: String,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    /// By lowercase name; repeated headers joined with `, `.
    headers: BTreeMap<&'a str, String>,
    body: Option<Box<RawValue>>,
    body_format: &'static str,
    body_bytes: usize,
    body_truncated: bool,
    signatures: serde_json::Value,
    status: u16,
    answer: &'static str,
}

impl Caught {
    fn received_at(&self) -> String {
        self.received_at.format(&Rfc3339).unwrap_or_default()
    }

    fn readable(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let query = self.query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
        let _ = writeln!(out, "=== {} {}{query}  ({})", self.method, self.path, self.received_at());
        for (name, value) in &self.headers {
            let _ = writeln!(out, "{name}: {value}");
        }
        out.push('\n');
        match &self.body {
            Shown::Empty => out.push_str("(empty body)\n"),
            Shown::Json(json) => {
                out.push_str(&layout(json, true));
                out.push('\n');
            }
            Shown::Text { text, left_out } => {
                out.push_str(text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                if *left_out > 0 {
                    let _ = writeln!(out, "[… {left_out} more bytes not shown]");
                }
            }
        }
        out.push('\n');
        let Signatures { standard_webhooks, x_signature } = &self.signatures;
        if let Some(verdict) = standard_webhooks {
            let _ = writeln!(out, "signature (Standard Webhooks): {verdict}");
        }
        if let Some(verdict) = x_signature {
            let _ = writeln!(out, "signature (X-Signature): {verdict}");
        }
        if standard_webhooks.is_none() && x_signature.is_none() {
            out.push_str("signature: none (no webhook-signature or x-signature header)\n");
        }
        let answer = if self.answer.is_empty() { "(empty body)" } else { self.answer };
        let _ = writeln!(out, "answered {} {answer}\n", self.status.as_u16());
        out
    }

    fn json_line(&self) -> String {
        let mut headers = BTreeMap::<&str, String>::new();
        for (name, value) in &self.headers {
            headers
                .entry(name)
                .and_modify(|all| {
                    all.push_str(", ");
                    all.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        let body = match &self.body {
            Shown::Empty => None,
            Shown::Json(json) => RawValue::from_string(layout(json, false)).ok(),
            Shown::Text { text, .. } => serde_json::to_string(text).ok().and_then(|s| RawValue::from_string(s).ok()),
        };
        let verdict = |v: &Option<Verdict>| v.as_ref().map_or(serde_json::Value::Null, Verdict::to_json);
        let line = Line {
            received_at: self.received_at(),
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers,
            body,
            body_format: self.body.format(),
            body_bytes: self.body_bytes,
            body_truncated: matches!(self.body, Shown::Text { left_out, .. } if left_out > 0),
            signatures: serde_json::json!({
                "standard_webhooks": verdict(&self.signatures.standard_webhooks),
                "x_signature": verdict(&self.signatures.x_signature),
            }),
            status: self.status.as_u16(),
            answer: self.answer,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's reference vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret(raw: &str) -> SigningSecret {
        SigningSecret::parse(raw).unwrap()
    }

    fn other_secret() -> SigningSecret {
        secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn standard(signature: &str) -> HeaderMap {
        headers(&[("webhook-id", ID), ("webhook-timestamp", &TS.to_string()), ("webhook-signature", signature)])
    }

    fn sw(headers: &HeaderMap, body: &[u8], secrets: &[SigningSecret], now: i64) -> Option<Verdict> {
        verify(headers, body, secrets, now).standard_webhooks
    }

    #[test]
    fn the_reference_signature_is_valid() {
        assert_eq!(sw(&standard(SIG), BODY, &[secret(SECRET)], TS), Some(Verdict::Valid { secret: 1 }));
    }

    #[test]
    fn a_wrong_secret_does_not_match_and_the_matching_one_is_named() {
        assert_eq!(sw(&standard(SIG), BODY, &[other_secret()], TS), Some(Verdict::Invalid(Invalid::NoMatch)));
        assert_eq!(sw(&standard(SIG), BODY, &[other_secret(), secret(SECRET)], TS), Some(Verdict::Valid { secret: 2 }));
    }

    #[test]
    fn a_tampered_body_or_id_does_not_match() {
        let secrets = [secret(SECRET)];
        assert_eq!(sw(&standard(SIG), br#"{"test": 2432232315}"#, &secrets, TS), Some(Verdict::Invalid(Invalid::NoMatch)));
        let other_id = headers(&[("webhook-id", "msg_other"), ("webhook-timestamp", &TS.to_string()), ("webhook-signature", SIG)]);
        assert_eq!(sw(&other_id, BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::NoMatch)));
    }

    #[test]
    fn timestamps_beyond_five_minutes_either_way_are_stale() {
        let secrets = [secret(SECRET)];
        assert_eq!(sw(&standard(SIG), BODY, &secrets, TS + 300), Some(Verdict::Valid { secret: 1 }));
        assert_eq!(sw(&standard(SIG), BODY, &secrets, TS - 300), Some(Verdict::Valid { secret: 1 }));
        let old = sw(&standard(SIG), BODY, &secrets, TS + 301).unwrap();
        assert_eq!(old, Verdict::Invalid(Invalid::StaleTimestamp { age_secs: 301 }));
        assert!(old.to_string().contains("stale timestamp (301 s old"), "{old}");
        let future = sw(&standard(SIG), BODY, &secrets, TS - 3600).unwrap();
        assert!(future.to_string().contains("stale timestamp (3600 s in the future"), "{future}");
        let far = headers(&[("webhook-id", ID), ("webhook-timestamp", &i64::MIN.to_string()), ("webhook-signature", SIG)]);
        assert!(matches!(sw(&far, BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::StaleTimestamp { .. }))));
    }

    #[test]
    fn any_of_several_signatures_in_the_header_may_match() {
        let secrets = [secret(SECRET)];
        assert_eq!(sw(&standard("v1,abc v1,def"), BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::NoMatch)));
        assert_eq!(sw(&standard(&format!("v1,abc {SIG} v2,xyz")), BODY, &secrets, TS), Some(Verdict::Valid { secret: 1 }));
        // Two secrets during a rotation, as the engine signs them.
        let (old, new) = (other_secret(), secret(SECRET));
        let both = sign::standard_webhooks(&[&old, &new], ID, TS, BODY);
        assert_eq!(sw(&standard(&both), BODY, &[new], TS), Some(Verdict::Valid { secret: 1 }));
    }

    #[test]
    fn malformed_or_absent_headers_and_no_secret() {
        let secrets = [secret(SECRET)];
        assert_eq!(sw(&HeaderMap::new(), BODY, &secrets, TS), None);
        assert_eq!(sw(&standard(SIG), BODY, &[], TS), Some(Verdict::NotChecked));
        let no_id = headers(&[("webhook-timestamp", &TS.to_string()), ("webhook-signature", SIG)]);
        assert_eq!(sw(&no_id, BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::Malformed("webhook-id is missing"))));
        let bad_ts = headers(&[("webhook-id", ID), ("webhook-timestamp", "yesterday"), ("webhook-signature", SIG)]);
        assert!(matches!(sw(&bad_ts, BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::Malformed(_)))));
        assert!(matches!(sw(&standard("g0hM9SsE"), BODY, &secrets, TS), Some(Verdict::Invalid(Invalid::Malformed(_)))));
    }

    #[test]
    fn x_signature_is_checked_against_every_secret() {
        let (right, wrong) = (secret(SECRET), other_secret());
        let good = sign::x_signature(&right, BODY);
        let xs =
            |sig: &str, body: &[u8], secrets: &[SigningSecret]| verify(&headers(&[("x-signature", sig)]), body, secrets, TS).x_signature;
        assert_eq!(xs(&good, BODY, &[wrong.clone(), right.clone()]), Some(Verdict::Valid { secret: 2 }));
        assert_eq!(xs(&good.to_uppercase(), BODY, std::slice::from_ref(&right)), Some(Verdict::Valid { secret: 1 }));
        assert_eq!(xs(&good, BODY, std::slice::from_ref(&wrong)), Some(Verdict::Invalid(Invalid::NoMatch)));
        assert_eq!(xs(&good, b"{}", std::slice::from_ref(&right)), Some(Verdict::Invalid(Invalid::NoMatch)));
        assert!(matches!(xs("not hex", BODY, std::slice::from_ref(&right)), Some(Verdict::Invalid(Invalid::Malformed(_)))));
        assert_eq!(xs(&good, BODY, &[]), Some(Verdict::NotChecked));
        assert_eq!(verify(&HeaderMap::new(), BODY, &[right], TS).x_signature, None);
    }

    #[test]
    fn authorization_keeps_only_its_scheme() {
        let shown = |v: &str| shown_header(&AUTHORIZATION, &HeaderValue::from_str(v).unwrap());
        assert_eq!(shown("Bearer sk_live_secret"), "Bearer ***");
        assert_eq!(shown("Basic dXNlcjpwYXNz"), "Basic ***");
        assert_eq!(shown("unschemed-token"), "***");
        let other = HeaderName::from_static("x-trace");
        assert_eq!(shown_header(&other, &HeaderValue::from_static("abc")), "abc");
    }

    #[test]
    fn json_is_laid_out_in_the_order_sent_with_numbers_as_written() {
        let raw = r#"{"z": 1, "a": [1.50, {}, [ ], "a,\"b\":{c}"], "big": 123456789012345678901234567890}"#;
        assert_eq!(layout(raw, false), r#"{"z":1,"a":[1.50,{},[],"a,\"b\":{c}"],"big":123456789012345678901234567890}"#);
        assert_eq!(
            layout(raw, true),
            "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    {},\n    [],\n    \"a,\\\"b\\\":{c}\"\n  ],\n  \"big\": 123456789012345678901234567890\n}"
        );
        assert_eq!(layout("\"x\"", true), "\"x\"");
    }

    #[test]
    fn bodies_are_json_text_or_cut() {
        assert_eq!(Shown::of(b""), Shown::Empty);
        assert_eq!(Shown::of(b" [1] "), Shown::Json(" [1] ".into()));
        assert_eq!(Shown::of(b"a=1&b=2"), Shown::Text { text: "a=1&b=2".into(), left_out: 0 });
        let big = vec![b'x'; MAX_SHOWN_BYTES + 10];
        match Shown::of(&big) {
            Shown::Text { text, left_out } => {
                assert_eq!((text.len(), left_out), (MAX_SHOWN_BYTES, 10))
            }
            other => panic!("{other:?}"),
        }
    }

    fn caught(body: &[u8], status: StatusCode, answer: &'static str) -> Caught {
        let map = headers(&[
            ("authorization", "Bearer sk_live_secret"),
            ("x-api-key", "sk_live_other"),
            ("webhook-id", ID),
            ("webhook-timestamp", &TS.to_string()),
            ("webhook-signature", SIG),
        ]);
        Caught {
            received_at: OffsetDateTime::from_unix_timestamp(TS).unwrap(),
            method: "POST".into(),
            path: "/hooks".into(),
            query: Some(shown_query("key=1&store=7")),
            headers: map.iter().map(|(n, v)| (n.to_string(), shown_header(n, v))).collect(),
            body: Shown::of(body),
            body_bytes: body.len(),
            signatures: verify(&map, body, &[secret(SECRET)], TS),
            status,
            answer,
        }
    }

    #[test]
    fn the_readable_block_shows_the_request_verdict_and_answer_but_no_credential() {
        let text = caught(BODY, StatusCode::OK, "[ACK]").readable();
        assert!(text.starts_with("=== POST /hooks?key=***&store=7  (2021-02-25T15:02:10Z)\n"), "{text}");
        assert!(text.contains("authorization: Bearer ***\n"), "{text}");
        assert!(text.contains("{\n  \"test\": 2432232314\n}\n"), "{text}");
        assert!(text.contains("signature (Standard Webhooks): valid (--secret #1)\n"), "{text}");
        assert!(text.contains("answered 200 [ACK]\n"), "{text}");
        assert!(text.contains("x-api-key: ***\n"), "{text}");
        assert!(!text.contains("sk_live"), "{text}");
    }

    #[test]
    fn the_json_line_is_one_line_with_the_body_as_json() {
        let line = caught(br#"{"b": 1, "a": "x"}"#, StatusCode::ACCEPTED, "").json_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(r#""body":{"b":1,"a":"x"}"#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["headers"]["authorization"], "Bearer ***");
        assert_eq!(v["query"], "key=***&store=7");
        assert_eq!(v["body_format"], "json");
        assert_eq!(v["status"], 202);
        // The signature was made over another body.
        assert_eq!(v["signatures"]["standard_webhooks"]["verdict"], "invalid");
        assert_eq!(v["signatures"]["standard_webhooks"]["reason"], "no_match");
        assert_eq!(v["signatures"]["x_signature"], serde_json::Value::Null);
        assert!(!line.contains("sk_live_secret"), "{line}");
    }

    #[test]
    fn normal_mode_acks_only_a_200() {
        let options = |mode, status| CatchOptions { listen: "127.0.0.1:0".parse().unwrap(), secrets: vec![], mode, status, json: false };
        assert_eq!(answer(&options(ResponseMode::Normal, None)), (StatusCode::OK, "[ACK]"));
        assert_eq!(answer(&options(ResponseMode::Loose, None)), (StatusCode::OK, ""));
        assert_eq!(answer(&options(ResponseMode::Normal, Some(StatusCode::SERVICE_UNAVAILABLE))), (StatusCode::SERVICE_UNAVAILABLE, ""));
    }
}
