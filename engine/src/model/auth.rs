//! API keys and scopes: what a key may do, and how a presented secret is
//! checked against the stored hash.
//!
//! This module owns key formats and the scope rules. It must never store or
//! log a key's secret: only its sha256 and a short prefix for display.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::ids::{KeyId, TenantId};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "configurations:read")]
    ConfigurationsRead,
    #[serde(rename = "configurations:write")]
    ConfigurationsWrite,
    #[serde(rename = "scripts:write")]
    ScriptsWrite,
    #[serde(rename = "logs:read")]
    LogsRead,
    /// The node's metrics (`/metrics`), all tenants' counts together:
    /// honoured on the operator's keys only.
    #[serde(rename = "metrics:read")]
    MetricsRead,
    /// Everything within the key's tenant, plus tenants and keys.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::EventsWrite,
        Scope::ConfigurationsRead,
        Scope::ConfigurationsWrite,
        Scope::ScriptsWrite,
        Scope::LogsRead,
        Scope::MetricsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::ConfigurationsRead => "configurations:read",
            Scope::ConfigurationsWrite => "configurations:write",
            Scope::ScriptsWrite => "scripts:write",
            Scope::LogsRead => "logs:read",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the tenant a key is bound to and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub key: KeyId,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// `admin` implies every other scope.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// A key's secret as shown to its owner once: `sk_` and 43 characters.
pub struct KeySecret(String);

/// Bytes of randomness in a key secret.
const SECRET_BYTES: usize = 32;
pub const KEY_PREFIX: &str = "sk_";

impl KeySecret {
    pub fn generate() -> Self {
        Self(format!("{KEY_PREFIX}{}", random_token(SECRET_BYTES)))
    }

    /// Accepts a secret chosen by the operator (`SLUICE_ADMIN_KEY`); it must
    /// look like a generated one so that it is long enough to be safe.
    pub fn from_operator(raw: &str) -> Option<Self> {
        let body = raw.strip_prefix(KEY_PREFIX)?;
        (body.len() >= 32 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then(|| Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The first characters, safe to show in listings.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(KEY_PREFIX.len() + 6).collect()
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(***)")
    }
}

/// A portal link's single-use token: `pt_` and 43 characters, in the link's
/// URL. Stored only as its [`KeyHash`].
pub struct PortalToken(String);

pub const PORTAL_TOKEN_PREFIX: &str = "pt_";

impl PortalToken {
    pub fn generate() -> Self {
        Self(format!("{PORTAL_TOKEN_PREFIX}{}", random_token(SECRET_BYTES)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for PortalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PortalToken(***)")
    }
}

/// sha256 of a key secret, hex. Keys are 256 random bits, so a fast hash is
/// enough: there is nothing to brute-force.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub String);

impl KeyHash {
    pub fn of(presented: &str) -> Self {
        Self(hex::encode(Sha256::digest(presented.as_bytes())))
    }
}

/// `bytes` random bytes from the OS, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not something a server can carry on without.
    getrandom::fill(&mut buf).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_every_scope_and_others_only_themselves() {
        let p = |scopes| Principal { tenant: TenantId::generate(), key: KeyId::generate(), scopes };
        let admin = p(vec![Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.may(*s)));
        let reader = p(vec![Scope::LogsRead]);
        assert!(reader.may(Scope::LogsRead));
        assert!(!reader.may(Scope::EventsWrite));
        assert!(!reader.may(Scope::Admin));
    }

    #[test]
    fn secrets_are_distinct_and_hash_stably() {
        let (a, b) = (KeySecret::generate(), KeySecret::generate());
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), KeyHash::of(a.expose()));
        assert!(a.expose().starts_with("sk_") && a.expose().len() == 46);
        assert!(KeySecret::from_operator(a.expose()).is_some());
        assert!(KeySecret::from_operator("sk_short").is_none());
        assert_eq!(format!("{a:?}"), "KeySecret(***)");
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("events:read"), None);
    }
}
