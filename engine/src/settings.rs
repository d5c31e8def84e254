//! Server settings: defaults, then a TOML file, then `SLUICE_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! This module owns the names and defaults of every setting. It must never
//! log a setting's value that may be a secret (the admin key, the secret
//! keys: theirs `Debug` as `***`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::secrets::MasterKey;
use crate::pipeline::destination::IpRange;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where `/metrics` is also served without a key (for a scraper on a
    /// private network); unset: only on `listen`, to the operator's keys
    /// with `metrics:read`.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether to record metrics at all (`false`: `/metrics` answers 404
    /// `metrics_off`, and recording costs nothing).
    pub metrics: bool,
    /// An OpenTelemetry collector's OTLP/HTTP base URL
    /// (`http://collector:4318`): each event's trace is sent to its
    /// `/v1/traces`. Unset: no traces are built.
    pub otlp_endpoint: Option<String>,
    /// Holds the SQLite file and the compiled-script cache.
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host/db`) instead of the
    /// SQLite file: several nodes share it. Never logged (it may hold a
    /// password).
    pub database_url: Option<String>,
    /// This node's name among those sharing the database; by default
    /// `<hostname>:<port>`, the same across restarts.
    pub node_id: Option<String>,
    /// The first admin key, used only when the store is new.
    pub admin_key: Option<String>,
    /// The key that seals secrets at rest (base64 of 32 bytes). Unset on
    /// SQLite: one is generated into `<data_dir>/secret.key`. Required on
    /// PostgreSQL, the same on every node.
    pub secret_key: Option<MasterKey>,
    /// Keys that sealed before `secret_key` was rotated: still read, never
    /// written with. Drop one once every configuration has been saved since.
    pub old_secret_keys: Vec<MasterKey>,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most events per ingest request.
    pub max_batch: usize,
    /// Deliveries in flight at once.
    pub delivery_concurrency: usize,
    /// Largest script upload, in bytes.
    pub max_script_bytes: usize,
    /// Instruction budget per script call (fuel).
    pub script_fuel: u64,
    /// Memory cap per script call, in MiB.
    pub script_memory_mib: usize,
    /// Scripts running at the same moment.
    pub script_concurrency: u32,
    /// Most stored events one script preview runs on.
    pub preview_max_events: usize,
    /// How long a client may take to send a request's head (line and
    /// headers) before the connection is closed.
    pub header_read_timeout: Span,
    /// Client connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// `tracing` filter, e.g. `info` or `sluice=debug`.
    pub log: String,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// Where users reach the engine, e.g. `https://sluice.example.com`:
    /// portal links point there, and the console's cookies are `Secure`
    /// when it is HTTPS. Unset: the host a request came to, over HTTP.
    pub public_url: Option<String>,

    /// Reserved address ranges (loopback, private, link-local, …) that
    /// endpoints may reach anyway, e.g. `["10.1.0.0/16"]`; none by default
    /// (see `destination`).
    pub allow_destinations: Vec<IpRange>,

    /// How long events are kept, with their deliveries and attempts
    /// (attempt headers included).
    pub retention_events: Span,
    /// How long attempt payloads (request and response bodies) are kept.
    pub retention_payloads: Span,
    /// How often the retention purge runs (the first run is shortly after
    /// start).
    pub purge_interval: Span,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            metrics: true,
            otlp_endpoint: None,
            data_dir: PathBuf::from("sluice-data"),
            database_url: None,
            node_id: None,
            admin_key: None,
            secret_key: None,
            old_secret_keys: Vec::new(),
            max_body_bytes: 1 << 20,
            max_batch: 500,
            delivery_concurrency: 512,
            max_script_bytes: 4 << 20,
            script_fuel: 20_000_000,
            script_memory_mib: 16,
            script_concurrency: 256,
            preview_max_events: 10_000,
            header_read_timeout: Span(Duration::from_secs(10)),
            max_connections: 4096,
            log: "info".into(),
            log_json: false,
            public_url: None,

            allow_destinations: Vec::new(),

            retention_events: Span::days(60),
            retention_payloads: Span::days(15),
            purge_interval: Span(Duration::from_secs(3600)),
        }
    }
}

/// A setting that could not be read, and why.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
}

impl Settings {
    /// Defaults, then `file` (or `./sluice.toml` if present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let default_file = Path::new("sluice.toml");
        let path = file.or(default_file.exists().then_some(default_file));
        let mut settings = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?;
                toml::from_str(&text).map_err(|source| SettingsError::Parse { path: path.into(), source })?
            }
            None => Settings::default(),
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        Ok(settings)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        fn parse<T: std::str::FromStr>(name: &str, raw: String) -> Result<T, SettingsError>
        where
            T::Err: std::fmt::Display,
        {
            raw.parse().map_err(|e: T::Err| SettingsError::Env { name: name.into(), reason: e.to_string() })
        }
        macro_rules! env {
            ($name:literal, $field:expr) => {
                if let Some(raw) = var($name) {
                    $field = parse($name, raw)?;
                }
            };
        }
        env!("SLUICE_LISTEN", self.listen);
        if let Some(raw) = var("SLUICE_METRICS_LISTEN").filter(|a| !a.is_empty()) {
            self.metrics_listen = Some(parse("SLUICE_METRICS_LISTEN", raw)?);
        }
        env!("SLUICE_METRICS", self.metrics);
        if let Some(url) = var("SLUICE_OTLP_ENDPOINT").filter(|u| !u.is_empty()) {
            self.otlp_endpoint = Some(url);
        }
        env!("SLUICE_DATA_DIR", self.data_dir);
        if let Some(url) = var("SLUICE_DATABASE_URL").filter(|u| !u.is_empty()) {
            self.database_url = Some(url);
        }
        if let Some(id) = var("SLUICE_NODE_ID").filter(|n| !n.is_empty()) {
            self.node_id = Some(id);
        }
        env!("SLUICE_MAX_BODY_BYTES", self.max_body_bytes);
        env!("SLUICE_MAX_BATCH", self.max_batch);
        env!("SLUICE_DELIVERY_CONCURRENCY", self.delivery_concurrency);
        env!("SLUICE_MAX_SCRIPT_BYTES", self.max_script_bytes);
        env!("SLUICE_SCRIPT_FUEL", self.script_fuel);
        env!("SLUICE_SCRIPT_MEMORY_MIB", self.script_memory_mib);
        env!("SLUICE_SCRIPT_CONCURRENCY", self.script_concurrency);
        env!("SLUICE_PREVIEW_MAX_EVENTS", self.preview_max_events);
        env!("SLUICE_HEADER_READ_TIMEOUT", self.header_read_timeout);
        env!("SLUICE_MAX_CONNECTIONS", self.max_connections);
        env!("SLUICE_LOG", self.log);
        env!("SLUICE_LOG_JSON", self.log_json);
        if let Some(url) = var("SLUICE_PUBLIC_URL").filter(|u| !u.is_empty()) {
            self.public_url = Some(url);
        }

        // A comma-separated list; empty allows no reserved range.
        if let Some(raw) = var("SLUICE_ALLOW_DESTINATIONS") {
            self.allow_destinations = IpRange::parse_list(&raw)
                .map_err(|e| SettingsError::Env { name: "SLUICE_ALLOW_DESTINATIONS".into(), reason: e.to_string() })?;
        }

        env!("SLUICE_RETENTION_EVENTS", self.retention_events);
        env!("SLUICE_RETENTION_PAYLOADS", self.retention_payloads);
        env!("SLUICE_PURGE_INTERVAL", self.purge_interval);

        if let Some(key) = var("SLUICE_ADMIN_KEY").filter(|k| !k.is_empty()) {
            self.admin_key = Some(key);
        }
        // The error names the variable, never its value.
        let key_error = |name: &str, e: crate::model::secrets::KeyError| SettingsError::Env { name: name.into(), reason: e.to_string() };
        if let Some(raw) = var("SLUICE_SECRET_KEY").filter(|k| !k.is_empty()) {
            self.secret_key = Some(raw.parse().map_err(|e| key_error("SLUICE_SECRET_KEY", e))?);
        }
        // A comma-separated list.
        if let Some(raw) = var("SLUICE_OLD_SECRET_KEYS") {
            self.old_secret_keys = raw
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| key_error("SLUICE_OLD_SECRET_KEYS", e))?;
        }
        Ok(())
    }
}

/// A length of time as people write it: a whole number and a unit, `s`,
/// `m`, `h` or `d`, as `90s`, `36h` or `60d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Span(pub Duration);

/// Why a text is not a [`Span`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: write a whole number and a unit (s, m, h or d), as `15d`")]
pub struct SpanError(String);

impl Span {
    pub const fn days(n: u64) -> Self {
        Self(Duration::from_secs(n * 24 * 3600))
    }
}

impl std::str::FromStr for Span {
    type Err = SpanError;

    fn from_str(raw: &str) -> Result<Self, SpanError> {
        let bad = || SpanError(raw.chars().take(40).collect());
        let text = raw.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let unit = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 24 * 3600,
            _ => return Err(bad()),
        };
        number.checked_mul(unit).map(|secs| Self(Duration::from_secs(secs))).ok_or_else(bad)
    }
}

impl TryFrom<String> for Span {
    type Error = SpanError;
    fn try_from(raw: String) -> Result<Self, SpanError> {
        raw.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_and_bad_values_are_named() {
        let mut s: Settings = toml::from_str("listen = \"127.0.0.1:9000\"\nmax_batch = 10").unwrap();
        assert_eq!(s.listen.port(), 9000);
        s.apply_env(|n| (n == "SLUICE_MAX_BATCH").then(|| "20".into())).unwrap();
        assert_eq!(s.max_batch, 20);
        let err = s.apply_env(|n| (n == "SLUICE_LISTEN").then(|| "nope".into())).unwrap_err();
        assert!(err.to_string().contains("SLUICE_LISTEN"));
        assert!(toml::from_str::<Settings>("listn = 1").is_err());
    }

    #[test]
    fn allowed_destinations_come_from_the_file_or_the_environment() {
        assert!(Settings::default().allow_destinations.is_empty());
        let mut s: Settings = toml::from_str("allow_destinations = [\"127.0.0.0/8\", \"fd00::/8\"]").unwrap();
        assert_eq!(s.allow_destinations.len(), 2);
        let err = toml::from_str::<Settings>("allow_destinations = [\"10.1.2.3/8\"]").unwrap_err();
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
        s.apply_env(|n| (n == "SLUICE_ALLOW_DESTINATIONS").then(|| "".into())).unwrap();
        assert!(s.allow_destinations.is_empty());
        s.apply_env(|n| (n == "SLUICE_ALLOW_DESTINATIONS").then(|| "127.0.0.0/8, ::1/128".into())).unwrap();
        assert_eq!(s.allow_destinations, IpRange::parse_list("127.0.0.0/8,::1").unwrap());
        let err = s.apply_env(|n| (n == "SLUICE_ALLOW_DESTINATIONS").then(|| "127.0.0.0/33".into())).unwrap_err();
        assert!(err.to_string().contains("SLUICE_ALLOW_DESTINATIONS"), "{err}");
    }

    #[test]
    fn secret_keys_come_from_the_file_or_the_environment_and_never_show() {
        let (a, b) = ("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=");
        let mut s: Settings = toml::from_str(&format!("secret_key = \"{a}\"\nold_secret_keys = [\"{b}\"]")).unwrap();
        assert_eq!(s.secret_key, Some(a.parse().unwrap()));
        assert_eq!(s.old_secret_keys, vec![b.parse().unwrap()]);
        s.apply_env(|n| match n {
            "SLUICE_SECRET_KEY" => Some(b.into()),
            "SLUICE_OLD_SECRET_KEYS" => Some(format!("{a}, {b}")),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.secret_key, Some(b.parse().unwrap()));
        assert_eq!(s.old_secret_keys.len(), 2);
        let shown = format!("{s:?}");
        assert!(!shown.contains(a) && !shown.contains(b), "{shown}");
        let err = s.apply_env(|n| (n == "SLUICE_SECRET_KEY").then(|| "short-and-secret".into())).unwrap_err();
        assert!(err.to_string().contains("SLUICE_SECRET_KEY") && !err.to_string().contains("short-and-secret"), "{err}");
        assert!(toml::from_str::<Settings>("secret_key = \"AAAA\"").is_err());
    }

    #[test]
    fn retention_windows_are_written_with_units() {
        let s = Settings::default();
        assert_eq!(s.retention_events, Span::days(60));
        assert_eq!(s.retention_payloads, Span::days(15));
        let mut s: Settings = toml::from_str("retention_payloads = \"36h\"\npurge_interval = \"90s\"").unwrap();
        assert_eq!(s.retention_payloads.0, Duration::from_secs(36 * 3600));
        assert_eq!(s.purge_interval.0, Duration::from_secs(90));
        s.apply_env(|n| (n == "SLUICE_RETENTION_EVENTS").then(|| "2s".into())).unwrap();
        assert_eq!(s.retention_events.0, Duration::from_secs(2));
        for bad in ["60", "d", "1.5d", "-1d", "3 weeks", "99999999999999999999d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        let err = s.apply_env(|n| (n == "SLUICE_PURGE_INTERVAL").then(|| "hourly".into())).unwrap_err();
        assert!(err.to_string().contains("SLUICE_PURGE_INTERVAL"), "{err}");
        assert!(toml::from_str::<Settings>("retention_events = 60").is_err());
    }
}
