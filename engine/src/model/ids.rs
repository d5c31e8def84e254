//! Typed identifiers of the things sluice stores: a prefix saying what the id
//! names, then a UUIDv7 in hex, so that ids sort in creation order (cursor
//! pagination relies on it) and a tenant id can never be passed where a
//! configuration id is expected.
//!
//! This module owns the id formats. It must never generate ids from
//! caller input: callers' own ids (event ids) are [`crate::model::event::EventId`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{raw}` is not a valid {kind} id")]
pub struct IdError {
    pub kind: &'static str,
    pub raw: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, later in sort order than every id made before it
            /// on this machine.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let valid = raw.strip_prefix($prefix).is_some_and(|hex| {
                    hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
                if valid {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(IdError { kind: $kind, raw: raw.chars().take(80).collect() })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// A tenant: the unit of isolation.
    TenantId, "ten_", "tenant"
);
id_type!(
    /// An API key (the key's id, not its secret).
    KeyId, "key_", "key"
);
id_type!(
    /// An uploaded script.
    ScriptId, "scr_", "script"
);
id_type!(
    /// An export configuration.
    ConfigId, "cfg_", "configuration"
);
id_type!(
    /// One event × one configuration.
    DeliveryId, "dlv_", "delivery"
);
id_type!(
    /// One HTTP attempt of a delivery.
    AttemptId, "att_", "attempt"
);
id_type!(
    /// A single-use link that opens a console session for one tenant.
    PortalLinkId, "pl_", "portal link"
);
id_type!(
    /// A hosted catcher: a test endpoint on the engine itself.
    CatcherId, "cat_", "catcher"
);
id_type!(
    /// One request a hosted catcher received.
    CaughtId, "rcv_", "caught request"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_in_creation_order() {
        let a = ConfigId::generate();
        let b = ConfigId::generate();
        assert_eq!(ConfigId::parse(a.as_str()), Ok(a.clone()));
        assert!(a < b);
    }

    #[test]
    fn an_id_of_another_kind_is_refused() {
        let tenant = TenantId::generate();
        let err = ConfigId::parse(tenant.as_str()).unwrap_err();
        assert_eq!(err.kind, "configuration");
        assert!(ConfigId::parse("cfg_").is_err());
        assert!(ConfigId::parse("cfg_0123456789ABCDEF0123456789abcdef").is_err());
    }
}
