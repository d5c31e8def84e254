//! Upload-time work: recognise the bytes, componentize a core module,
//! check that the component implements a world version this engine runs,
//! compile it, and cache the compiled form by sha256 in memory and on disk.
//!
//! It must never depend on one WIT version: it reads the version from the
//! script's export name and leaves linking to that version's module (`abi`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::Digest;
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::abi::WitVersion;
use super::{CallState, Sandbox, Script};

/// The WIT package scripts implement.
pub const WIT_PACKAGE: &str = "sluice:event-export";

/// Why a script was refused at upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("script is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly module or component")]
    NotWasm,
    #[error(
        "core module carries no component-type section: build it with the sluice SDK \
         (wit-bindgen) so it declares the `{WIT_PACKAGE}` world"
    )]
    NoWorld,
    #[error("could not turn the core module into a component: {reason}")]
    Componentize { reason: String },
    #[error("invalid WebAssembly: {reason}")]
    Invalid { reason: String },
    #[error("script imports `{name}`, which sluice does not provide (scripts may import only `{WIT_PACKAGE}/host`)")]
    ForeignImport { name: String },
    #[error("script does not export {}; it exports: {found}", expected_exports())]
    MissingExport { found: String },
    #[error("script targets `{WIT_PACKAGE}@{found}`, but this engine runs {}", WitVersion::supported())]
    UnsupportedVersion { found: String },
    #[error("script does not match the world: {reason}")]
    Mismatch { reason: String },
}

impl LoadError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "script_too_large",
            Self::NotWasm | Self::Invalid { .. } => "invalid_wasm",
            Self::NoWorld | Self::Componentize { .. } => "not_a_script",
            Self::ForeignImport { .. } | Self::MissingExport { .. } | Self::Mismatch { .. } => "world_mismatch",
            Self::UnsupportedVersion { .. } => "unsupported_wit_version",
        }
    }
}

/// A sha256 digest, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// From its lowercase hex form.
    pub fn parse(hex: &str) -> Option<Self> {
        hex::decode(hex).ok()?.try_into().ok().map(Self)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

enum WasmKind {
    CoreModule,
    Component,
}

fn wasm_kind(bytes: &[u8]) -> Option<WasmKind> {
    // The preamble is magic, then a version and a layer: layer 0 is a core
    // module, layer 1 a component.
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', _, _, 0, 0] => Some(WasmKind::CoreModule),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

/// Turns a core module carrying a component-type section into a component;
/// returns a component unchanged.
pub fn componentize(bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    match wasm_kind(bytes).ok_or(LoadError::NotWasm)? {
        WasmKind::Component => Ok(bytes.to_vec()),
        WasmKind::CoreModule => {
            if !has_component_type_section(bytes)? {
                return Err(LoadError::NoWorld);
            }
            wit_component::ComponentEncoder::default()
                .validate(true)
                .module(bytes)
                .and_then(|mut encoder| encoder.encode())
                .map_err(|e| LoadError::Componentize { reason: format!("{e:#}") })
        }
    }
}

fn has_component_type_section(bytes: &[u8]) -> Result<bool, LoadError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(section)) if section.name().starts_with("component-type") => {
                return Ok(true);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(LoadError::Invalid { reason: e.to_string() });
            }
        }
    }
    Ok(false)
}

impl Sandbox {
    /// Validates and compiles an uploaded script, or returns the cached one.
    /// The cache key is the sha256 of `bytes` as uploaded.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Script>, LoadError> {
        let limit = self.config.max_script_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge { size: bytes.len(), limit });
        }
        let sha256 = Sha256::of(bytes);
        if let Some(script) = self.cached(&sha256) {
            return Ok(script);
        }
        let component = match self.read_disk_cache(&sha256) {
            Some(component) => component,
            None => {
                let component_bytes = componentize(bytes)?;
                let component =
                    Component::new(&self.engine, &component_bytes).map_err(|e| LoadError::Invalid { reason: format!("{e:#}") })?;
                self.write_disk_cache(&sha256, &component);
                component
            }
        };
        let script = Arc::new(self.link(sha256, &component)?);
        let mut compiled = self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(compiled.entry(sha256).or_insert(script).clone())
    }

    /// Compiled code for `bytes` (validated), for sharing between nodes;
    /// [`Sandbox::load_precompiled`] takes it back.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        let component_bytes = componentize(bytes)?;
        let component = Component::new(&self.engine, &component_bytes).map_err(|e| LoadError::Invalid { reason: format!("{e:#}") })?;
        self.link(Sha256::of(bytes), &component)?;
        component.serialize().map_err(|e| LoadError::Invalid { reason: format!("{e:#}") })
    }

    /// Loads code made by [`Sandbox::precompile`] for the script whose
    /// uploaded bytes hash to `sha256`. Falls back to `None` when the code
    /// was made by an incompatible engine; the caller then recompiles.
    pub fn load_precompiled(&self, sha256: Sha256, compiled: &[u8]) -> Option<Arc<Script>> {
        if let Some(script) = self.cached(&sha256) {
            return Some(script);
        }
        // SAFETY: the bytes come from `precompile` by this engine build,
        // stored in the engine's own database; wasmtime checks the
        // compatibility header and refuses code from another configuration.
        let component = unsafe { Component::deserialize(&self.engine, compiled) }.ok()?;
        let script = Arc::new(self.link(sha256, &component).ok()?);
        let mut cache = self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(cache.entry(sha256).or_insert(script).clone())
    }

    /// Drops a script's compiled code, in memory and on disk (after the
    /// last script with these bytes is deleted).
    pub fn forget(&self, sha256: &Sha256) {
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(sha256);
        if let Some(path) = self.disk_cache_path(sha256) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Whether compiled code for these bytes is held in memory.
    pub fn is_cached(&self, sha256: &Sha256) -> bool {
        self.cached(sha256).is_some()
    }

    fn cached(&self, sha256: &Sha256) -> Option<Arc<Script>> {
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(sha256).cloned()
    }

    /// Checks imports and exports against the world and prepares fast
    /// instantiation.
    fn link(&self, sha256: Sha256, component: &Component) -> Result<Script, LoadError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if !name.starts_with(&format!("{WIT_PACKAGE}/")) {
                return Err(LoadError::ForeignImport { name: name.to_owned() });
            }
        }
        let exports: Vec<(String, ComponentItem)> = ty.exports(&self.engine).map(|(name, item)| (name.to_owned(), item.ty)).collect();
        let filter_prefix = format!("{WIT_PACKAGE}/filter@");
        let Some(wit_version) = exports.iter().find_map(|(name, _)| name.strip_prefix(&filter_prefix)) else {
            return Err(LoadError::MissingExport { found: describe_exports(&exports) });
        };
        let Some(version) = WitVersion::parse(wit_version) else {
            return Err(LoadError::UnsupportedVersion { found: wit_version.to_owned() });
        };
        let wit_version = wit_version.to_owned();

        let pre = self.linkers.prepare(version, component).map_err(|e| LoadError::Mismatch { reason: format!("{e:#}") })?;
        // Export types are checked when an instance is made: make one now,
        // so a mismatch is refused at upload and not at the first event.
        let mut store = Store::new(&self.engine, CallState::new(Default::default(), &self.config.limits));
        store.limiter(|state| &mut state.memory);
        let _ = store.set_fuel(self.config.limits.fuel);
        store.set_epoch_deadline(1_000);
        let _running = self.ticker.running();
        pre.instantiate(&mut store)
            .map_err(|e| LoadError::Mismatch { reason: format!("`{WIT_PACKAGE}/filter@{wit_version}` function `filter`: {e:#}") })?;
        Ok(Script { sha256, wit_version, pre })
    }

    fn disk_cache_path(&self, sha256: &Sha256) -> Option<std::path::PathBuf> {
        Some(self.config.cache_dir.as_ref()?.join(format!("{sha256}.cwasm")))
    }

    fn read_disk_cache(&self, sha256: &Sha256) -> Option<Component> {
        let path = self.disk_cache_path(sha256)?;
        // Read, not mapped: a file changed under a live mapping would crash
        // the process (SIGBUS).
        let bytes = std::fs::read(path).ok()?;
        // SAFETY: files in the cache directory are written only by
        // `write_disk_cache` of this engine; wasmtime refuses code compiled
        // by another version or configuration, and we then recompile.
        unsafe { Component::deserialize(&self.engine, &bytes) }.ok()
    }

    fn write_disk_cache(&self, sha256: &Sha256, component: &Component) {
        let Some(path) = self.disk_cache_path(sha256) else {
            return;
        };
        // A missing cache only costs a recompile; never fail the upload for it.
        if let Ok(bytes) = component.serialize() {
            let _ = write_atomically(&path, &bytes);
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The filter exports a script may have, one per version this engine runs:
/// `` `sluice:event-export/filter@0.1.0` ``.
fn expected_exports() -> String {
    WitVersion::ALL.iter().map(|v| format!("`{WIT_PACKAGE}/filter@{}`", v.export_version())).collect::<Vec<_>>().join(" or ")
}

fn describe_exports(exports: &[(String, ComponentItem)]) -> String {
    if exports.is_empty() {
        return "nothing".to_owned();
    }
    exports
        .iter()
        .map(|(name, item)| {
            let kind = match item {
                ComponentItem::ComponentFunc(_) => "function",
                ComponentItem::ComponentInstance(_) => "interface",
                ComponentItem::Component(_) => "component",
                ComponentItem::Module(_) | ComponentItem::CoreFunc(_) => "core item",
                ComponentItem::Type(_) | ComponentItem::Resource(_) => "type",
            };
            format!("`{name}` ({kind})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
