//! The engine's own hosted catchers as a destination: a configuration whose
//! endpoint is one of this engine's catcher URLs (`{own origin}/catch/ct_…`)
//! is delivered to in-process: the request is built and signed exactly as
//! for any receiver, then recorded by the store as the catcher's, and the
//! catcher's answer is judged like any answer.
//!
//! This is how reaching the engine's own catcher stays a case of its own:
//! no socket to a loopback or private address is ever opened for it, so
//! the destination guard keeps refusing those for everything else. This
//! module owns that recognition and transport; it must never send over the
//! network nor record anything but the request it was given.

use std::time::Instant;

use crate::model::auth::KeyHash;
use crate::model::export::ExportConfig;
use crate::model::ids::CaughtId;
use crate::model::timestamp;
use crate::pipeline::client::{Sent, judge};
use crate::pipeline::job::DeliveryJob;
use crate::pipeline::request::{Target, build};
use crate::store::{Caught, Store};

/// The path under which catchers answer, and their tokens' prefix.
pub const PATH: &str = "/catch/";
pub const TOKEN_PREFIX: &str = "ct_";

/// The catcher token in `url` when `url` is one of `origins`' catcher URLs
/// (`host:port` as the engine is reached: its listener, `localhost`, its
/// public URL).
pub fn own_token(origins: &[String], url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let authority = format!("{host}:{port}");
    if !origins.iter().any(|o| o.eq_ignore_ascii_case(&authority)) || url.query().is_some() {
        return None;
    }
    let token = url.path().strip_prefix(PATH)?;
    (token.starts_with(TOKEN_PREFIX)
        && token.len() > TOKEN_PREFIX.len()
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| token.to_owned())
}

/// Delivers `job` to the catcher with `token`: built and signed as for the
/// network, recorded (credentials redacted, as attempts record them), and
/// answered as the catcher says; 404 when it no longer exists.
pub async fn send(store: &Store, spec: &ExportConfig, target: &Target, token: &str, job: &DeliveryJob) -> Sent {
    let outgoing = build(spec, target, job);
    let request = outgoing.logged();
    let started_at = timestamp::now_ms();
    let clock = Instant::now();
    let uri = match outgoing.url.query() {
        Some(q) => format!("{}?{q}", outgoing.url.path()),
        None => outgoing.url.path().to_owned(),
    };
    let caught = Caught {
        id: CaughtId::generate(),
        received_at: started_at,
        method: "POST".into(),
        uri,
        headers: request.headers.clone(),
        body: outgoing.body.into(),
        body_size: 0,
    };
    let (status, body, error) = match store.catch(&KeyHash::of(token), caught).await {
        Ok(Some(catcher)) => {
            let status = u16::try_from(catcher.answer_status).ok().and_then(|s| reqwest::StatusCode::from_u16(s).ok());
            (status, Some(catcher.answer_body.into_bytes()), None)
        }
        Ok(None) => (Some(reqwest::StatusCode::NOT_FOUND), Some(b"no such catcher".to_vec()), None),
        Err(e) => (None, None, Some(format!("the catcher could not record the request: {e}"))),
    };
    let (succeeded, error) = judge(spec.response_mode, status, body.as_deref(), error);
    Sent {
        request,
        started_at,
        duration_ms: clock.elapsed().as_millis() as i64,
        status,
        response_headers: Some("{\"content-type\":\"text/plain; charset=utf-8\"}".into()),
        response_body: body,
        retry_after: None,
        succeeded,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_origins_catcher_paths_are_catchers() {
        let origins = vec!["127.0.0.1:8080".to_owned(), "sluice.example:443".to_owned()];
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert_eq!(own_token(&origins, &url("http://127.0.0.1:8080/catch/ct_abc")), Some("ct_abc".into()));
        assert_eq!(own_token(&origins, &url("https://sluice.example/catch/ct_abc")), Some("ct_abc".into()));
        for other in [
            "http://127.0.0.1:8081/catch/ct_abc",
            "http://127.0.0.1:8080/v1/events",
            "http://127.0.0.1:8080/catch/ct_",
            "http://127.0.0.1:8080/catch/ct_abc/more",
            "http://127.0.0.1:8080/catch/ct_abc?x=1",
            "http://10.0.0.1:8080/catch/ct_abc",
            "https://other.example/catch/ct_abc",
        ] {
            assert_eq!(own_token(&origins, &url(other)), None, "{other}");
        }
    }
}
