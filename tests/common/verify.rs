//! Standard Webhooks signature checking written apart from the engine's
//! `sign` module, so a shared mistake cannot pass unnoticed.

use base64::Engine as _;
use hmac::{Hmac, Mac};

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
