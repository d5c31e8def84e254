//! Export configurations: where events go, which ones, and how the receiver
//! is addressed. Parsed from the API's JSON into validated types once; the
//! router and the deliverer trust them.
//!
//! This module owns every configuration rule (URL, patterns, headers,
//! deadline cap, retry bounds, secrets). It must never touch storage or the
//! network, and its API view must never carry a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::event::{EventType, OrgUnit};
use crate::model::headers::{REDACTED, is_secret_name};
use crate::model::ids::ScriptId;

mod certificate;

pub use certificate::CertificateError;

/// A deadline above this is cut to it, whatever is configured.
pub const MAX_DEADLINE: Duration = Duration::from_millis(5_000);
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(5_000);
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_PATTERNS: usize = 100;
pub const MAX_CUSTOM: usize = 50;

/// A caller's mistake in a configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Stable code for the API (`invalid_endpoint`, `invalid_event_type_pattern`, …).
    pub code: &'static str,
    pub field: String,
    pub reason: String,
}

/// A script's parameters, as a configuration (or a preview's candidate,
/// named `field`) may give them.
pub fn check_script_params(params: &BTreeMap<String, String>, field: &str) -> Result<(), ConfigError> {
    if params.len() > MAX_CUSTOM || params.iter().any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 4096) {
        return Err(err(
            "invalid_script_params",
            field,
            format!("at most {MAX_CUSTOM} parameters, names 1 to 128 bytes, values up to 4096 bytes"),
        ));
    }
    Ok(())
}

fn err(code: &'static str, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { code, field: field.into(), reason: reason.into() }
}

/// Which event types a configuration takes: `order.paid`, `order.*`
/// (`order.` and everything under it) or `*` (all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    All,
    Exact(EventType),
    /// Holds the prefix with its trailing dot: `order.`.
    Prefix(String),
}

impl TypePattern {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| err("invalid_event_type_pattern", "event_types", format!("`{raw}`: {reason}"));
        if raw == "*" {
            return Ok(Self::All);
        }
        if let Some(prefix) = raw.strip_suffix(".*") {
            if prefix.contains('*') {
                return Err(bad("`*` may only end a pattern, as `order.*`"));
            }
            EventType::parse(prefix).map_err(|e| bad(&e.reason))?;
            return Ok(Self::Prefix(format!("{prefix}.")));
        }
        if raw.contains('*') {
            return Err(bad("`*` may only stand alone or end a pattern, as `order.*`"));
        }
        EventType::parse(raw).map(Self::Exact).map_err(|e| bad(&e.reason))
    }

    /// Whether the pattern takes `event_type`. `*` takes every posted
    /// type but none of sluice's own notices (`sluice.…`): those go only
    /// where a pattern names them, as `sluice.*`.
    pub fn matches(&self, event_type: &EventType) -> bool {
        match self {
            Self::All => !event_type.is_reserved(),
            Self::Exact(t) => t == event_type,
            Self::Prefix(p) => event_type.as_str().starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Exact(t) => f.write_str(t.as_str()),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl Serialize for TypePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TypePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Organization units a configuration takes: those in `include` and below
/// (all when empty), minus those in `exclude` and below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuFilter {
    #[serde(default)]
    pub include: Vec<OrgUnit>,
    #[serde(default)]
    pub exclude: Vec<OrgUnit>,
}

impl OuFilter {
    pub fn matches(&self, unit: &OrgUnit) -> bool {
        (self.include.is_empty() || self.include.iter().any(|i| unit.is_within(i))) && !self.exclude.iter().any(|e| unit.is_within(e))
    }
}

/// How the receiver authenticates sluice.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Authorization {
    None,
    /// `Authorization: Bearer {token}`.
    Bearer {
        token: String,
    },
    /// `Authorization: {token}`, no scheme.
    Token {
        token: String,
    },
    /// Mutual TLS with a PEM certificate chain and private key (a PKCS#12
    /// upload is converted to these on save).
    ClientCertificate {
        certificate_pem: String,
        private_key_pem: String,
        /// When the chain stops being valid (its earliest `notAfter`), read
        /// on save. Absent from configurations saved before it was recorded:
        /// [`Authorization::certificate_expires_at`] reads the certificate.
        #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        certificate_expires_at: Option<time::OffsetDateTime>,
    },
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer { .. } => f.write_str("Bearer { token: *** }"),
            Self::Token { .. } => f.write_str("Token { token: *** }"),
            Self::ClientCertificate { certificate_expires_at, .. } => f
                .debug_struct("ClientCertificate")
                .field("private_key_pem", &REDACTED)
                .field("certificate_expires_at", certificate_expires_at)
                .finish_non_exhaustive(),
        }
    }
}

/// A client certificate closer than this to its expiry is flagged in the
/// API (`certificate_expiring`) and warned about when loaded.
pub const CERTIFICATE_EXPIRY_WARNING: time::Duration = time::Duration::days(30);

impl Authorization {
    /// When the client certificate stops being valid; `None` without one.
    pub fn certificate_expires_at(&self) -> Option<time::OffsetDateTime> {
        match self {
            Self::ClientCertificate { certificate_expires_at: Some(at), .. } => Some(*at),
            Self::ClientCertificate { certificate_pem, .. } => certificate::expires_at(certificate_pem).ok(),
            _ => None,
        }
    }

    /// Whether a client certificate expires within
    /// [`CERTIFICATE_EXPIRY_WARNING`] of `now` (or has expired), with its
    /// expiry; `None` without a client certificate.
    pub fn certificate_expiring(&self, now: time::OffsetDateTime) -> Option<(bool, time::OffsetDateTime)> {
        self.certificate_expires_at().map(|at| (at - now < CERTIFICATE_EXPIRY_WARNING, at))
    }
}

/// Which certificates the receiver's TLS certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "trust", rename_all = "snake_case", deny_unknown_fields)]
pub enum Tls {
    #[default]
    System,
    CustomCa {
        ca_pem: String,
    },
    /// For testing only; flagged in every API answer.
    TrustAll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningProfile {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    StandardWebhooks,
    /// `X-Signature: <hex HMAC-SHA256 of the body>`.
    XSignature,
}

/// A signing secret, `whsec_` and base64 of 24 to 64 bytes; its key is
/// decoded once, not for every request it signs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SigningSecret {
    raw: String,
    key: Vec<u8>,
}

impl SigningSecret {
    pub const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        use base64::Engine as _;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        Self { raw: format!("{}{}", Self::PREFIX, base64::engine::general_purpose::STANDARD.encode(key)), key: key.to_vec() }
    }

    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        use base64::Engine as _;
        let key = raw
            .strip_prefix(Self::PREFIX)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .ok_or_else(|| err("invalid_signing_secret", "signing.secret", "expected `whsec_` and base64 of 24 to 64 bytes"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(err("invalid_signing_secret", "signing.secret", "expected 24 to 64 key bytes"));
        }
        Ok(Self { raw: raw.to_owned(), key })
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn expose(&self) -> &str {
        &self.raw
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl TryFrom<String> for SigningSecret {
    type Error = ConfigError;
    fn try_from(raw: String) -> Result<Self, ConfigError> {
        Self::parse(&raw)
    }
}

impl From<SigningSecret> for String {
    fn from(s: SigningSecret) -> String {
        s.raw
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signing {
    pub profiles: Vec<SigningProfile>,
    pub secret: SigningSecret,
    /// The secret a rotation replaced, still signing until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: SigningSecret,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// How long a replaced secret keeps signing when the rotation does not say.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace period a rotation may ask for.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Signing {
    /// The secrets that sign a request at `now_ms`: the current one first.
    pub fn secrets_at(&self, now_ms: i64) -> Vec<&SigningSecret> {
        let mut out = vec![&self.secret];
        if let Some(p) = self.previous.as_ref().filter(|p| p.expires_at > now_ms) {
            out.push(&p.secret);
        }
        out
    }

    /// Makes `new` the secret; the current one keeps signing for `grace`.
    pub fn rotate(&mut self, new: SigningSecret, grace: Duration, now_ms: i64) {
        let old = std::mem::replace(&mut self.secret, new);
        self.previous =
            (!grace.is_zero()).then(|| PreviousSecret { secret: old, expires_at: now_ms.saturating_add(grace.as_millis() as i64) });
    }
}

/// How a receiver acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// Any 2xx.
    #[default]
    Loose,
    /// Only `200` with the body `[ACK]`.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 8, initial_backoff_ms: 1_000, max_backoff_ms: 3_600_000 }
    }
}

impl RetryPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=50).contains(&self.max_attempts) {
            return Err(err("invalid_retry_policy", "retry.max_attempts", "must be 1 to 50"));
        }
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > self.max_backoff_ms {
            return Err(err("invalid_retry_policy", "retry.initial_backoff_ms", "must be at least 1 and at most max_backoff_ms"));
        }
        if self.max_backoff_ms > 24 * 3_600_000 {
            return Err(err("invalid_retry_policy", "retry.max_backoff_ms", "must be at most one day"));
        }
        Ok(())
    }

    /// The wait before attempt `next` (2 = the first retry): exponential,
    /// capped, with "equal jitter" (half fixed, half random) so that a burst
    /// of failures does not retry in lockstep.
    pub fn backoff(&self, next: u32, random: f64) -> Duration {
        let exp = self.initial_backoff_ms.saturating_mul(1u64 << next.saturating_sub(2).min(40));
        let capped = exp.min(self.max_backoff_ms) as f64;
        Duration::from_millis((capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0)) as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
}

/// Requests in flight to one endpoint when the configuration does not say.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
const MAX_MAX_IN_FLIGHT: u32 = 256;

/// When a configuration whose endpoint keeps failing is disabled: after
/// `after_failures` failed attempts in a row, the first of them at least
/// `failing_for_ms` ago, with no success in between. `after_failures: 0`
/// never disables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDisable {
    pub after_failures: u32,
    #[serde(default)]
    pub failing_for_ms: u64,
}

impl Default for AutoDisable {
    fn default() -> Self {
        Self { after_failures: 50, failing_for_ms: 24 * 3_600_000 }
    }
}

/// The script a configuration runs, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRef {
    pub id: ScriptId,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A deadline as written: milliseconds, or ISO 8601 (`PT2S`, `PT0.5S`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DeadlineInput {
    Millis(u64),
    Iso(String),
}

impl DeadlineInput {
    /// Parsed and cut to [`MAX_DEADLINE`].
    pub fn parse(&self) -> Result<Duration, ConfigError> {
        let bad = || err("invalid_deadline", "deadline", "expected milliseconds or an ISO 8601 duration such as `PT2S`");
        let d = match self {
            Self::Millis(ms) => Duration::from_millis(*ms),
            Self::Iso(raw) => parse_iso_duration(raw).ok_or_else(bad)?,
        };
        if d.is_zero() {
            return Err(err("invalid_deadline", "deadline", "must be above zero"));
        }
        Ok(d.min(MAX_DEADLINE))
    }
}

/// `PT2S`, `PT0.5S`, `PT1M`, `PT1M30S`: only the time part makes sense for
/// a deadline capped at seconds.
fn parse_iso_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw.strip_prefix("PT")?;
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    for (unit, factor) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
        if let Some(pos) = rest.find(unit) {
            let number: f64 = rest[..pos].parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
            total += number * factor;
            rest = &rest[pos + 1..];
        }
    }
    (rest.is_empty() && total < 86_400.0).then(|| Duration::from_secs_f64(total))
}

/// A configuration as an admin writes it (create and update).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub endpoint: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub organization_units: Option<OuFilterInput>,
    #[serde(default)]
    pub script: Option<ScriptRef>,
    #[serde(default)]
    pub authorization: Option<AuthorizationInput>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub signing: Option<SigningInput>,
    /// Left out on update: the stored ones. A credential's value (see
    /// [`is_secret_name`]) sent back as `***`, as answers show it: the stored one.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// As `headers`.
    #[serde(default)]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub response_mode: ResponseMode,
    #[serde(default)]
    pub deadline: Option<DeadlineInput>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub auto_disable: Option<AutoDisable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuFilterInput {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Like [`Authorization`], but a token may be left out on update to keep the
/// stored one (answers never show it, so a read-modify-write cannot echo it).
/// A client certificate comes as a PEM pair or as a PKCS#12 file in base64
/// with its password; on update, nothing keeps the stored pair and a
/// certificate alone (renewed for the same key) keeps the stored key.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthorizationInput {
    None,
    Bearer {
        token: Option<String>,
    },
    Token {
        token: Option<String>,
    },
    ClientCertificate {
        certificate_pem: Option<String>,
        private_key_pem: Option<String>,
        pkcs12_base64: Option<String>,
        password: Option<String>,
    },
}

impl fmt::Debug for AuthorizationInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "***" } else { "None" };
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer { token } => f.debug_struct("Bearer").field("token", &set(token)).finish(),
            Self::Token { token } => f.debug_struct("Token").field("token", &set(token)).finish(),
            Self::ClientCertificate { certificate_pem, private_key_pem, pkcs12_base64, password } => f
                .debug_struct("ClientCertificate")
                .field("certificate_pem", certificate_pem)
                .field("private_key_pem", &set(private_key_pem))
                .field("pkcs12_base64", &set(pkcs12_base64))
                .field("password", &set(password))
                .finish(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningInput {
    #[serde(default)]
    pub profiles: Option<Vec<SigningProfile>>,
    /// Left out: a new one is generated (create) or the stored one kept (update).
    #[serde(default)]
    pub secret: Option<String>,
}

/// A validated configuration, as stored (with its secrets; the store seals
/// it). Its `Debug` is its [`ExportConfig::view`]: no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportConfig {
    pub name: String,
    pub description: Option<String>,
    pub endpoint: String,
    pub event_types: Vec<TypePattern>,
    pub organization_units: OuFilter,
    pub script: Option<ScriptRef>,
    pub authorization: Authorization,
    pub tls: Tls,
    pub signing: Signing,
    pub headers: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    pub response_mode: ResponseMode,
    pub deadline_ms: u64,
    pub retry: RetryPolicy,
    pub rate_limit: Option<RateLimit>,
    /// Requests to this endpoint in flight at once, across its deliveries.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    #[serde(default)]
    pub auto_disable: AutoDisable,
}

impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExportConfig {}", self.view())
    }
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

impl ConfigInput {
    /// Validates every field. `previous` is the stored configuration on
    /// update: secrets left out are kept from it.
    pub fn validate(self, previous: Option<&ExportConfig>) -> Result<ExportConfig, ConfigError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(err("invalid_name", "name", format!("1 to {MAX_NAME_LEN} characters, no control characters")));
        }
        let endpoint = validate_endpoint(&keep_url_secrets(&self.endpoint, previous.map(|p| p.endpoint.as_str()))?)?;
        if self.event_types.is_empty() {
            return Err(err("invalid_event_type_pattern", "event_types", "at least one type or pattern (`*` for all)"));
        }
        if self.event_types.len() > MAX_PATTERNS {
            return Err(err("invalid_event_type_pattern", "event_types", format!("at most {MAX_PATTERNS}")));
        }
        let event_types = self.event_types.iter().map(|p| TypePattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let organization_units = match self.organization_units {
            None => OuFilter::default(),
            Some(ou) => {
                let parse = |list: Vec<String>, field: &str| {
                    list.iter()
                        .map(|raw| {
                            OrgUnit::parse(raw)
                                .map_err(|e| err("invalid_organization_unit", format!("organization_units.{field}"), e.reason))
                        })
                        .collect::<Result<Vec<_>, _>>()
                };
                OuFilter { include: parse(ou.include, "include")?, exclude: parse(ou.exclude, "exclude")? }
            }
        };
        if let Some(script) = &self.script {
            check_script_params(&script.params, "script.params")?;
        }
        let authorization = validate_authorization(self.authorization, previous.map(|p| &p.authorization))?;
        let tls = self.tls.unwrap_or_default();
        if let Tls::CustomCa { ca_pem } = &tls {
            reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| err("invalid_tls", "tls.ca_pem", "not a PEM certificate bundle"))?;
        }
        let signing = {
            let input = self.signing.unwrap_or(SigningInput { profiles: None, secret: None });
            let mut profiles = input.profiles.unwrap_or_else(|| vec![SigningProfile::StandardWebhooks]);
            profiles.sort();
            profiles.dedup();
            // `***` (never shown, but a natural thing to send back) keeps it too.
            let secret = match (input.secret.filter(|s| s != REDACTED), previous) {
                (Some(raw), _) => SigningSecret::parse(&raw)?,
                (None, Some(prev)) => prev.signing.secret.clone(),
                (None, None) => SigningSecret::generate(),
            };
            // A rotation's grace survives updates that keep the secret; a
            // secret replaced by an update (not a rotation) has none.
            let previous = previous.filter(|p| p.signing.secret == secret).and_then(|p| p.signing.previous.clone());
            Signing { profiles, secret, previous }
        };
        let headers = keep_secrets("invalid_header", "headers", self.headers, previous.map(|p| &p.headers))?;
        validate_headers(&headers)?;
        let query = keep_secrets("invalid_query", "query", self.query, previous.map(|p| &p.query))?;
        if query.len() > MAX_CUSTOM || query.keys().any(|k| k.is_empty() || k.len() > 256) {
            return Err(err("invalid_query", "query", format!("at most {MAX_CUSTOM} parameters with non-empty names")));
        }
        let deadline = match &self.deadline {
            Some(d) => d.parse()?,
            None => DEFAULT_DEADLINE,
        };
        let retry = self.retry.unwrap_or_default();
        retry.validate()?;
        if let Some(limit) = &self.rate_limit
            && (limit.per_second == 0 || limit.per_second > 100_000)
        {
            return Err(err("invalid_rate_limit", "rate_limit.per_second", "must be 1 to 100000"));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if !(1..=MAX_MAX_IN_FLIGHT).contains(&max_in_flight) {
            return Err(err("invalid_max_in_flight", "max_in_flight", format!("must be 1 to {MAX_MAX_IN_FLIGHT}")));
        }
        let auto_disable = self.auto_disable.unwrap_or_default();
        if auto_disable.failing_for_ms > 30 * 24 * 3_600_000 {
            return Err(err("invalid_auto_disable", "auto_disable.failing_for_ms", "must be at most 30 days"));
        }
        Ok(ExportConfig {
            name,
            description: self.description,
            endpoint,
            event_types,
            organization_units,
            script: self.script,
            authorization,
            tls,
            signing,
            headers,
            query,
            response_mode: self.response_mode,
            deadline_ms: deadline.as_millis() as u64,
            retry,
            rate_limit: self.rate_limit,
            max_in_flight,
            auto_disable,
        })
    }
}

/// Custom headers or query parameters on save: left out on update, the
/// stored ones; a credential's value sent back as `***` (as answers show
/// it), the stored value of the same name.
fn keep_secrets(
    code: &'static str,
    field: &str,
    input: Option<BTreeMap<String, String>>,
    previous: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(mut given) = input else { return Ok(previous.cloned().unwrap_or_default()) };
    for (name, value) in given.iter_mut().filter(|(name, value)| *value == REDACTED && is_secret_name(name)) {
        *value = previous
            .and_then(|p| p.get(name))
            .cloned()
            .ok_or_else(|| err(code, format!("{field}.{name}"), "`***` keeps the stored value, and none is stored"))?;
    }
    Ok(given)
}

/// The endpoint on save: a credential parameter of its query sent back as
/// `***` (as answers show it) gets the stored endpoint's value of that name.
fn keep_url_secrets(raw: &str, previous: Option<&str>) -> Result<String, ConfigError> {
    let (base, Some(params)) = crate::model::headers::query_params(raw) else { return Ok(raw.to_owned()) };
    let redacted = |v: Option<&str>| matches!(v, Some(v) if v == REDACTED || v.eq_ignore_ascii_case("%2A%2A%2A"));
    if !params.iter().any(|p| is_secret_name(&p.name) && redacted(p.raw_value)) {
        return Ok(raw.to_owned());
    }
    let stored = previous.and_then(|p| crate::model::headers::query_params(p).1).unwrap_or_default();
    let mut kept = Vec::with_capacity(params.len());
    for p in &params {
        let value = if is_secret_name(&p.name) && redacted(p.raw_value) {
            let old = stored.iter().find(|s| s.name == p.name && s.raw_value.is_some()).ok_or_else(|| {
                err("invalid_endpoint", "endpoint", format!("`{}=***` keeps the stored value, and none is stored", p.name))
            })?;
            old.raw_value
        } else {
            p.raw_value
        };
        kept.push((p.raw_name, value));
    }
    Ok(crate::model::headers::join_query(base, &kept))
}

/// An endpoint as an error message may show it: no userinfo, credential
/// parameters redacted, at most 200 characters.
fn shown_endpoint(raw: &str) -> String {
    let mut shown = crate::model::headers::redact_url(raw);
    if let Some(scheme_end) = shown.find("://") {
        let authority_end = shown[scheme_end + 3..].find(['/', '?', '#']).map_or(shown.len(), |i| scheme_end + 3 + i);
        if let Some(at) = shown[scheme_end + 3..authority_end].rfind('@') {
            shown.replace_range(scheme_end + 3..scheme_end + 3 + at, REDACTED);
        }
    }
    shown.chars().take(200).collect()
}

fn validate_endpoint(raw: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| err("invalid_endpoint", "endpoint", format!("`{}`: {reason}", shown_endpoint(raw)));
    let url = reqwest::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment is never sent; remove it"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: the URL itself holds the secret.
        return Err(err("invalid_endpoint", "endpoint", "credentials in the URL would be logged; use `authorization`"));
    }
    Ok(url.to_string())
}

fn validate_authorization(input: Option<AuthorizationInput>, previous: Option<&Authorization>) -> Result<Authorization, ConfigError> {
    let missing = |field: &str| err("invalid_authorization", format!("authorization.{field}"), "required");
    let token = |new: Option<String>, kept: Option<&String>| -> Result<String, ConfigError> {
        let token = new.filter(|t| t != REDACTED).or_else(|| kept.cloned()).ok_or_else(|| missing("token"))?;
        if token.is_empty() || token.len() > 4096 || reqwest::header::HeaderValue::from_str(&token).is_err() {
            return Err(err("invalid_authorization", "authorization.token", "must be 1 to 4096 visible characters"));
        }
        Ok(token)
    };
    Ok(match input {
        None | Some(AuthorizationInput::None) => Authorization::None,
        Some(AuthorizationInput::Bearer { token: new }) => {
            let kept = match previous {
                Some(Authorization::Bearer { token }) => Some(token),
                _ => None,
            };
            Authorization::Bearer { token: token(new, kept)? }
        }
        Some(AuthorizationInput::Token { token: new }) => {
            let kept = match previous {
                Some(Authorization::Token { token }) => Some(token),
                _ => None,
            };
            Authorization::Token { token: token(new, kept)? }
        }
        Some(AuthorizationInput::ClientCertificate { certificate_pem, private_key_pem, pkcs12_base64, password }) => {
            let private_key_pem = private_key_pem.filter(|k| k != REDACTED);
            let kept = match previous {
                Some(Authorization::ClientCertificate { certificate_pem, private_key_pem, .. }) => {
                    Some((certificate_pem.clone(), private_key_pem.clone()))
                }
                _ => None,
            };
            let refused = |field: &str, e: CertificateError| err(e.code(), format!("authorization.{field}"), e.to_string());
            let (pair, field) = match (certificate_pem, private_key_pem, pkcs12_base64, password, kept) {
                (None, None, Some(p12), password, _) => {
                    let pair = certificate::from_pkcs12_base64(&p12, password.as_deref().unwrap_or_default())
                        .map_err(|e| refused("pkcs12_base64", e))?;
                    (pair, "pkcs12_base64")
                }
                (_, _, Some(_), _, _) => {
                    return Err(err(
                        "invalid_authorization",
                        "authorization",
                        "give either `certificate_pem` and `private_key_pem` or `pkcs12_base64`, not both",
                    ));
                }
                (_, _, None, Some(_), _) => {
                    return Err(err("invalid_authorization", "authorization.password", "only with `pkcs12_base64`"));
                }
                (Some(certificate_pem), Some(private_key_pem), None, None, _) => {
                    (certificate::PemPair { certificate_pem, private_key_pem }, "certificate_pem")
                }
                // A renewed certificate for the stored key.
                (Some(certificate_pem), None, None, None, Some((_, private_key_pem))) => {
                    (certificate::PemPair { certificate_pem, private_key_pem }, "certificate_pem")
                }
                (None, None, None, None, Some((certificate_pem, private_key_pem))) => {
                    (certificate::PemPair { certificate_pem, private_key_pem }, "certificate_pem")
                }
                _ => return Err(missing("certificate_pem and private_key_pem, or pkcs12_base64")),
            };
            let expires_at = certificate::check(&pair, time::OffsetDateTime::now_utc()).map_err(|e| refused(field, e))?;
            Authorization::ClientCertificate {
                certificate_pem: pair.certificate_pem,
                private_key_pem: pair.private_key_pem,
                certificate_expires_at: Some(expires_at),
            }
        }
    })
}

/// Custom headers must be valid HTTP and must not touch what the engine owns.
fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    if headers.len() > MAX_CUSTOM {
        return Err(err("invalid_header", "headers", format!("at most {MAX_CUSTOM}")));
    }
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err("invalid_header", field, "not a valid header name"));
        }
        if crate::model::headers::is_reserved_header(name) {
            return Err(err("invalid_header", field, "set by sluice itself; use `authorization` or `signing`"));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(err("invalid_header", field, "not a valid header value"));
        }
    }
    Ok(())
}

impl ExportConfig {
    /// Whether an event of this type and unit goes to this configuration.
    pub fn selects(&self, event_type: &EventType, unit: &OrgUnit) -> bool {
        self.event_types.iter().any(|p| p.matches(event_type)) && self.organization_units.matches(unit)
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms).min(MAX_DEADLINE)
    }

    /// What the API shows: everything but secrets. Credential headers and
    /// query parameters (the endpoint's own included) read `***`, which an
    /// update may send back to keep them.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("endpoint".into(), crate::model::headers::redact_url(&self.endpoint).into());
            for custom in ["headers", "query"] {
                if let Some(map) = obj.get_mut(custom).and_then(|m| m.as_object_mut()) {
                    for (_, value) in map.iter_mut().filter(|(name, _)| is_secret_name(name)) {
                        *value = REDACTED.into();
                    }
                }
            }
            if let Some(auth) = obj.get_mut("authorization").and_then(|a| a.as_object_mut()) {
                for secret in ["token", "private_key_pem"] {
                    if auth.remove(secret).is_some() {
                        auth.insert(format!("{secret}_set"), true.into());
                    }
                }
                if let Some((expiring, at)) = self.authorization.certificate_expiring(time::OffsetDateTime::now_utc()) {
                    auth.insert("certificate_expires_at".into(), certificate::rfc3339(at).into());
                    auth.insert("certificate_expiring".into(), expiring.into());
                }
            }
            if let Some(signing) = obj.get_mut("signing").and_then(|s| s.as_object_mut()) {
                signing.remove("secret");
                if let Some(previous) = signing.remove("previous").and_then(|p| p.get("expires_at").cloned()) {
                    let ms = previous.as_i64().unwrap_or_default();
                    signing.insert("previous_secret_expires_at".into(), crate::model::timestamp::rfc3339::format(ms).into());
                }
            }
            obj.insert("trust_all_tls".into(), matches!(self.tls, Tls::TrustAll).into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: serde_json::Value) -> Result<ExportConfig, ConfigError> {
        serde_json::from_value::<ConfigInput>(v).expect("shape").validate(None)
    }

    fn minimal() -> serde_json::Value {
        json!({"name": "erp", "endpoint": "https://erp.example/hook", "event_types": ["order.*"]})
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_all() {
        let t = |s| EventType::parse(s).unwrap();
        let prefix = TypePattern::parse("order.*").unwrap();
        assert!(prefix.matches(&t("order.paid")) && prefix.matches(&t("order.line.added")));
        assert!(!prefix.matches(&t("order")) && !prefix.matches(&t("orders.paid")));
        assert!(TypePattern::parse("order.paid").unwrap().matches(&t("order.paid")));
        assert!(TypePattern::parse("*").unwrap().matches(&t("x")));
        // sluice's own notices go only where a pattern names them.
        assert!(!TypePattern::parse("*").unwrap().matches(&t("sluice.delivery.failed")));
        assert!(TypePattern::parse("sluice.*").unwrap().matches(&t("sluice.delivery.failed")));
        for bad in ["", "order.*.paid", "*order", "order*", "order..*", "ord er"] {
            assert_eq!(TypePattern::parse(bad).unwrap_err().code, "invalid_event_type_pattern", "{bad}");
        }
    }

    #[test]
    fn ou_filter_includes_subtrees_and_excludes_win() {
        let ou = |s| OrgUnit::parse(s).unwrap();
        let f = OuFilter { include: vec![ou("emea")], exclude: vec![ou("emea/uk")] };
        assert!(f.matches(&ou("emea/nl/store-12")));
        assert!(!f.matches(&ou("emea/uk/store-1")));
        assert!(!f.matches(&ou("emeax")));
        assert!(!f.matches(&ou("apac")));
        assert!(OuFilter::default().matches(&ou("")));
    }

    #[test]
    fn a_minimal_configuration_gets_safe_defaults_and_a_secret() {
        let c = input(minimal()).unwrap();
        assert_eq!(c.deadline_ms, 5_000);
        assert_eq!(c.signing.profiles, vec![SigningProfile::StandardWebhooks]);
        assert!(c.signing.secret.expose().starts_with("whsec_"));
        let view = c.view().to_string();
        assert!(!view.contains(c.signing.secret.expose()), "{view}");
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["ftp://x", "not a url", "https://u:p@x/", "http://x/#frag", "/relative"] {
            let mut v = minimal();
            v["endpoint"] = bad.into();
            assert_eq!(input(v).unwrap_err().code, "invalid_endpoint", "{bad}");
        }
    }

    #[test]
    fn deadlines_parse_both_ways_and_are_capped() {
        let d = |v: serde_json::Value| serde_json::from_value::<DeadlineInput>(v).unwrap().parse();
        assert_eq!(d(json!(1500)).unwrap(), Duration::from_millis(1500));
        assert_eq!(d(json!("PT2S")).unwrap(), Duration::from_secs(2));
        assert_eq!(d(json!("PT0.25S")).unwrap(), Duration::from_millis(250));
        assert_eq!(d(json!("PT1M")).unwrap(), MAX_DEADLINE);
        assert_eq!(d(json!(60_000)).unwrap(), MAX_DEADLINE);
        assert!(d(json!("2S")).is_err() && d(json!("PT")).is_err() && d(json!(0)).is_err());
    }

    #[test]
    fn tokens_are_hidden_and_kept_on_update_when_left_out() {
        let mut v = minimal();
        v["authorization"] = json!({"type": "bearer", "token": "s3cret"});
        let first = input(v).unwrap();
        assert!(!first.view().to_string().contains("s3cret"));
        let mut v = minimal();
        v["authorization"] = json!({"type": "bearer"});
        let updated = serde_json::from_value::<ConfigInput>(v).unwrap().validate(Some(&first)).unwrap();
        assert_eq!(updated.authorization, Authorization::Bearer { token: "s3cret".into() });
        assert_eq!(updated.signing.secret, first.signing.secret);
    }

    #[test]
    fn credential_headers_and_query_values_are_hidden_and_kept_on_update() {
        let mut v = minimal();
        v["endpoint"] = json!("https://x.example/hook?token=url-SECRET-1&v=2");
        v["headers"] = json!({"X-Api-Key": "hdr-SECRET-2", "X-Tenant": "acme"});
        v["query"] = json!({"key": "qry-SECRET-3", "page": "1"});
        v["authorization"] = json!({"type": "token", "token": "tok-SECRET-4"});
        let first = input(v.clone()).expect("valid");
        let view = first.view();
        let text = format!("{view} {first:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert_eq!(view["endpoint"], "https://x.example/hook?token=***&v=2");
        assert_eq!(view["headers"], json!({"X-Api-Key": "***", "X-Tenant": "acme"}));
        assert_eq!(view["query"], json!({"key": "***", "page": "1"}));

        let update = |v: serde_json::Value| serde_json::from_value::<ConfigInput>(v).expect("shape").validate(Some(&first));
        // The view sent back as it is keeps every secret.
        let mut echoed = view.clone();
        let obj = echoed.as_object_mut().expect("object");
        for shown_only in ["id", "trust_all_tls", "deadline_ms", "version", "status", "created_at", "updated_at"] {
            obj.remove(shown_only);
        }
        obj["authorization"] = json!({"type": "token", "token": "***"});
        obj["signing"] = json!({"secret": "***"});
        let kept = update(echoed).expect("echo");
        assert_eq!(kept, first);
        // Left out: kept.
        let mut bare = minimal();
        bare["endpoint"] = json!("https://x.example/hook?token=***&v=2");
        bare["authorization"] = json!({"type": "token"});
        let kept = update(bare).expect("left out");
        assert_eq!((&kept.endpoint, &kept.headers, &kept.query), (&first.endpoint, &first.headers, &first.query));
        assert_eq!(kept.authorization, first.authorization);
        // Replaced, removed.
        let mut changed = minimal();
        changed["endpoint"] = json!("https://x.example/hook?token=new-1");
        changed["headers"] = json!({"X-Api-Key": "new-2"});
        changed["query"] = json!({});
        let changed = update(changed).expect("replaced");
        assert_eq!(changed.endpoint, "https://x.example/hook?token=new-1");
        assert_eq!(changed.headers, BTreeMap::from([("X-Api-Key".to_owned(), "new-2".to_owned())]));
        assert!(changed.query.is_empty());
        // `***` with nothing stored under that name is refused.
        let mut unknown = minimal();
        unknown["headers"] = json!({"X-Other-Key": "***"});
        assert_eq!(update(unknown.clone()).unwrap_err().code, "invalid_header");
        unknown["headers"] = json!({});
        unknown["endpoint"] = json!("https://x.example/hook?secret=***");
        assert_eq!(update(unknown).unwrap_err().code, "invalid_endpoint");
        // On create, `***` stands for nothing.
        let mut create = minimal();
        create["query"] = json!({"token": "***"});
        assert_eq!(input(create).unwrap_err().code, "invalid_query");
    }

    #[test]
    fn refused_endpoints_are_never_echoed_with_their_credentials() {
        for bad in ["https://user:pw-SECRET@x.example/h#f", "https://x.example/h?token=SECRET#f", "ftp://u:SECRET@x/?key=SECRET"] {
            let mut v = minimal();
            v["endpoint"] = bad.into();
            let e = input(v).unwrap_err();
            assert_eq!(e.code, "invalid_endpoint");
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }

    fn with_auth(auth: serde_json::Value) -> ConfigInput {
        let mut v = minimal();
        v["authorization"] = auth;
        serde_json::from_value::<ConfigInput>(v).expect("shape")
    }

    #[test]
    fn client_certificates_come_as_pem_or_pkcs12_and_answers_hide_the_key() {
        use base64::Engine as _;
        let (pair, cert_der, key_der) = certificate::fixtures::leaf(time::Duration::days(200));
        let pem = with_auth(json!({"type": "client_certificate",
            "certificate_pem": pair.certificate_pem, "private_key_pem": pair.private_key_pem}))
        .validate(None)
        .expect("PEM pair");
        let p12 = base64::engine::general_purpose::STANDARD.encode(certificate::fixtures::pkcs12(&cert_der, &key_der, "pw-Secret-9"));
        let from_p12 = with_auth(json!({"type": "client_certificate", "pkcs12_base64": p12, "password": "pw-Secret-9"}))
            .validate(None)
            .expect("PKCS#12");
        assert_eq!(from_p12.authorization.certificate_expires_at(), pem.authorization.certificate_expires_at());
        for config in [&pem, &from_p12] {
            let view = config.view();
            let auth = &view["authorization"];
            assert_eq!(auth["private_key_pem_set"], true, "{auth}");
            assert_eq!(auth["certificate_expiring"], false, "{auth}");
            let at = auth["certificate_expires_at"].as_str().expect("expiry shown");
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
            let text = view.to_string();
            assert!(!text.contains("PRIVATE KEY") && !text.contains("pw-Secret-9"), "{text}");
        }

        // Update: nothing keeps the stored pair; a renewed certificate alone keeps the key.
        let kept = with_auth(json!({"type": "client_certificate"})).validate(Some(&from_p12)).expect("kept");
        assert_eq!(kept.authorization, from_p12.authorization);
        let renewed = with_auth(json!({"type": "client_certificate", "certificate_pem": pair.certificate_pem}))
            .validate(Some(&pem))
            .expect("renewed");
        assert_eq!(renewed.authorization, pem.authorization);
    }

    #[test]
    fn bad_client_certificates_are_refused_without_echoing_secrets() {
        use base64::Engine as _;
        let (pair, cert_der, key_der) = certificate::fixtures::leaf(time::Duration::days(200));
        let p12 = base64::engine::general_purpose::STANDARD.encode(certificate::fixtures::pkcs12(&cert_der, &key_der, "right-pw"));
        let refused = |auth: serde_json::Value| with_auth(auth).validate(None).unwrap_err();

        let e = refused(json!({"type": "client_certificate", "pkcs12_base64": p12, "password": "wrong-pw-123"}));
        assert_eq!(e.code, "invalid_client_certificate");
        assert!(!e.to_string().contains("wrong-pw-123"), "{e}");
        let e = refused(json!({"type": "client_certificate", "pkcs12_base64": "bm90IGEgcDEy", "password": "x"}));
        assert_eq!(e.code, "invalid_client_certificate");
        let e = refused(json!({"type": "client_certificate", "pkcs12_base64": p12, "certificate_pem": pair.certificate_pem}));
        assert_eq!(e.code, "invalid_authorization");
        let e = refused(json!({"type": "client_certificate", "certificate_pem": pair.certificate_pem}));
        assert_eq!(e.code, "invalid_authorization", "no stored key to keep");

        let (other, _, _) = certificate::fixtures::leaf(time::Duration::days(200));
        let e = refused(json!({"type": "client_certificate",
            "certificate_pem": pair.certificate_pem, "private_key_pem": other.private_key_pem}));
        assert_eq!(e.code, "invalid_client_certificate");
        let key_body = other.private_key_pem.lines().nth(1).expect("a key line");
        assert!(!e.to_string().contains(key_body), "{e}");

        let (expired, cert_der, key_der) = certificate::fixtures::leaf(time::Duration::seconds(-60));
        let e = refused(json!({"type": "client_certificate",
            "certificate_pem": expired.certificate_pem, "private_key_pem": expired.private_key_pem}));
        assert_eq!(e.code, "certificate_expired", "{e}");
        let p12 = base64::engine::general_purpose::STANDARD.encode(certificate::fixtures::pkcs12(&cert_der, &key_der, "pw"));
        let e = refused(json!({"type": "client_certificate", "pkcs12_base64": p12, "password": "pw"}));
        assert_eq!(e.code, "certificate_expired", "{e}");
    }

    #[test]
    fn a_certificate_close_to_expiry_is_flagged_even_when_stored_without_its_expiry() {
        let (pair, _, _) = certificate::fixtures::leaf(time::Duration::days(10));
        let config = with_auth(json!({"type": "client_certificate",
            "certificate_pem": pair.certificate_pem, "private_key_pem": pair.private_key_pem}))
        .validate(None)
        .expect("valid, if soon to expire");
        assert_eq!(config.view()["authorization"]["certificate_expiring"], true);
        // Saved before the expiry was recorded: read from the certificate.
        let mut stored = serde_json::to_value(&config).expect("json");
        stored["authorization"].as_object_mut().expect("object").remove("certificate_expires_at");
        let old: ExportConfig = serde_json::from_value(stored).expect("reads");
        assert_eq!(old.authorization.certificate_expires_at(), config.authorization.certificate_expires_at());
        assert_eq!(old.view()["authorization"]["certificate_expiring"], true);
    }

    #[test]
    fn reserved_and_malformed_headers_are_refused() {
        for (name, value) in [("Authorization", "x"), ("webhook-id", "x"), ("bad name", "x"), ("x-ok", "bad\nvalue")] {
            let mut v = minimal();
            v["headers"] = json!({ name: value });
            assert_eq!(input(v).unwrap_err().code, "invalid_header", "{name}");
        }
    }

    #[test]
    fn sending_limits_are_validated_and_default_for_stored_configurations() {
        let mut v = minimal();
        v["max_in_flight"] = json!(0);
        assert_eq!(input(v.clone()).unwrap_err().code, "invalid_max_in_flight");
        v["max_in_flight"] = json!(4);
        v["auto_disable"] = json!({"after_failures": 0});
        let c = input(v).expect("valid");
        assert_eq!((c.max_in_flight, c.auto_disable.after_failures), (4, 0));
        // A configuration stored before these fields existed reads with the defaults.
        let mut stored = serde_json::to_value(input(minimal()).expect("valid")).expect("json");
        let obj = stored.as_object_mut().expect("object");
        obj.remove("max_in_flight");
        obj.remove("auto_disable");
        let old: ExportConfig = serde_json::from_value(stored).expect("reads");
        assert_eq!(old.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(old.auto_disable, AutoDisable::default());
    }

    #[test]
    fn a_rotated_secret_signs_until_its_grace_ends() {
        let mut signing = input(minimal()).expect("valid").signing;
        let first = signing.secret.clone();
        signing.rotate(SigningSecret::generate(), Duration::from_secs(60), 1_000);
        assert_eq!(signing.secrets_at(1_000), vec![&signing.secret, &first]);
        assert_eq!(signing.secrets_at(61_000), vec![&signing.secret], "expired at the end of the grace");
        signing.rotate(SigningSecret::generate(), Duration::ZERO, 2_000);
        assert_eq!(signing.secrets_at(2_000).len(), 1, "no grace, no previous");
        assert_eq!(format!("{signing:?}").matches("***").count(), 1, "debug output hides secrets");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_half() {
        let p = RetryPolicy { max_attempts: 10, initial_backoff_ms: 100, max_backoff_ms: 1000 };
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(9, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(9, 0.0), Duration::from_millis(500));
    }
}
