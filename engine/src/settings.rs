//! Server settings: defaults, then a TOML file, then `SLUICE_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! This module owns the names and defaults of every setting. It must never
//! log a setting's value that may be a secret (the admin key).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Holds the SQLite file and the compiled-script cache.
    pub data_dir: PathBuf,
    /// The first admin key, used only when the store is new.
    pub admin_key: Option<String>,
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
    /// `tracing` filter, e.g. `info` or `sluice=debug`.
    pub log: String,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("sluice-data"),
            admin_key: None,
            max_body_bytes: 1 << 20,
            max_batch: 500,
            delivery_concurrency: 512,
            max_script_bytes: 4 << 20,
            script_fuel: 20_000_000,
            script_memory_mib: 16,
            script_concurrency: 256,
            log: "info".into(),
            log_json: false,
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
        env!("SLUICE_DATA_DIR", self.data_dir);
        env!("SLUICE_MAX_BODY_BYTES", self.max_body_bytes);
        env!("SLUICE_MAX_BATCH", self.max_batch);
        env!("SLUICE_DELIVERY_CONCURRENCY", self.delivery_concurrency);
        env!("SLUICE_MAX_SCRIPT_BYTES", self.max_script_bytes);
        env!("SLUICE_SCRIPT_FUEL", self.script_fuel);
        env!("SLUICE_SCRIPT_MEMORY_MIB", self.script_memory_mib);
        env!("SLUICE_SCRIPT_CONCURRENCY", self.script_concurrency);
        env!("SLUICE_LOG", self.log);
        env!("SLUICE_LOG_JSON", self.log_json);
        if let Some(key) = var("SLUICE_ADMIN_KEY").filter(|k| !k.is_empty()) {
            self.admin_key = Some(key);
        }
        Ok(())
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
}
