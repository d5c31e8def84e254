//! Standard Webhooks signature checking written apart from the engine's
//! `sign` module, so a shared mistake cannot pass unnoticed.

use base64::Engine as _;
use hmac::{Hmac, Mac};

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::receiver::Received;

/// Whether `request` carries a valid `v1` signature for `secret`
/// (`whsec_` + base64 key) over `{webhook-id}.{webhook-timestamp}.{body}`.
pub fn standard_webhooks(secret: &str, request: &Received) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(key) = secret.strip_prefix("whsec_").and_then(|k| b64.decode(k).ok()) else { return false };
    let (Some(id), Some(ts), Some(signatures)) =
        (request.header("webhook-id"), request.header("webhook-timestamp"), request.header("webhook-signature"))
    else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    signatures.split(' ').any(|s| s == expected)
}

/// What the `standardwebhooks` library from PyPI (and Python's hmac for
/// `X-Signature`), run on `request` with `secret`, says of it:
/// `(standard_webhooks, x_signature)`, `None` for a profile not sent.
pub fn with_library(secret: &str, request: &Received) -> (Option<bool>, Option<bool>) {
    let headers: serde_json::Map<String, Value> =
        request.headers.iter().map(|(n, v)| (n.as_str().to_owned(), Value::from(v.to_str().expect("ASCII header")))).collect();
    let input = json!({
        "secret": secret,
        "headers": headers,
        "body": std::str::from_utf8(&request.body).expect("UTF-8 body"),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/verify_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (.ci/run installs the `standardwebhooks` package)");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write to the verifier");
    let out = child.wait_with_output().expect("the verifier finishes");
    assert!(
        out.status.success(),
        "the verifier failed (is `standardwebhooks` installed? `python3 -m pip install standardwebhooks`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("the verifier's JSON");
    (verdict["standard_webhooks"].as_bool(), verdict["x_signature"].as_bool())
}
