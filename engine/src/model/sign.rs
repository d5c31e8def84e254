//! Request signing: the Standard Webhooks scheme and the plain `X-Signature`
//! profile, over the exact bytes sent.
//!
//! This module owns the signature formats. It must never log or return a
//! secret, and never sign anything but the final body bytes.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::export::{SigningProfile, SigningSecret};

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
/// one per secret, space-separated (several during a secret rotation).
pub fn standard_webhooks(secrets: &[&SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::new();
    for secret in secrets {
        let mut m = mac(secret.key());
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()));
    }
    out
}

/// `X-Signature`: hex HMAC-SHA256 of the body with the first secret.
pub fn x_signature(secret: &SigningSecret, body: &[u8]) -> String {
    let mut m = mac(secret.key());
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The signature headers for one request, by profile.
pub fn headers(
    profiles: &[SigningProfile],
    secrets: &[&SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(3);
    let Some(first) = secrets.first() else { return out };
    for profile in profiles {
        match profile {
            SigningProfile::StandardWebhooks => {
                out.push(("webhook-id", id.to_owned()));
                out.push(("webhook-timestamp", timestamp.to_string()));
                out.push(("webhook-signature", standard_webhooks(secrets, id, timestamp, body)));
            }
            SigningProfile::XSignature => out.push(("x-signature", x_signature(first, body))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification's reference tests.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_webhooks(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn x_signature_is_hex_hmac_of_the_body() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = x_signature(&secret, b"{}");
        assert_eq!(sig.len(), 64);
        assert!(sig.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(sig, x_signature(&secret, b"{ }"));
    }
}
