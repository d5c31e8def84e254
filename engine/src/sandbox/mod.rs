//! The sandbox: runs export scripts, WebAssembly components implementing a
//! version of the world in `wit/` (`wit/0.1/world.wit`, ...), one fresh
//! instance per event, under hard limits.
//!
//! It owns the one shared wasmtime [`Engine`], upload validation and
//! componentization (`load`), the compile cache, the per-call limits, the
//! host functions, and the checking of a script's output into a [`Decision`]
//! (`output`). What differs between WIT versions (bindings, conversions,
//! linking) is in `abi`, one module per version, picked by the version a
//! script was built against; nothing else here depends on a version.
//!
//! It must never give a script anything beyond the event, its parameters and
//! a log function (no clock, randomness, files or network), and it knows
//! nothing of HTTP, tenants or storage.

mod abi;
mod epoch;
mod load;
mod output;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

pub use load::{LoadError, Sha256, WIT_PACKAGE, componentize};
pub use output::{Decision, Header};

use epoch::EpochTicker;

use crate::model::event::Event;

/// Parameters of an export configuration, handed to its script.
pub type Params = BTreeMap<String, String>;

/// Per-call limits. Budgets are counted, not timed, so that a decision is the
/// same on any machine under any load; the wall-clock cap is a backstop that
/// a script within its budget never reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instruction budget in wasmtime fuel units (about one per instruction).
    pub fuel: u64,
    /// Largest linear memory a script may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest output (body, headers, skip reason together), in bytes.
    pub output_bytes: usize,
    /// Wall-clock cap per call.
    pub wall_clock: Duration,
    /// Log lines kept per call; later ones are counted and dropped.
    pub log_lines: usize,
    /// Longest log line kept, in bytes; longer ones are truncated.
    pub log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 20_000_000,
            memory_bytes: 16 << 20,
            output_bytes: 1 << 20,
            wall_clock: Duration::from_secs(1),
            log_lines: 100,
            log_line_bytes: 2048,
        }
    }
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub limits: Limits,
    /// Largest accepted upload, in bytes.
    pub max_script_bytes: usize,
    /// Where compiled scripts are serialized so that a restart does not
    /// recompile them; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How many scripts may run at the same moment (the instance pool size).
    pub max_concurrent_calls: u32,
    /// A call that exhausts its budget (fuel or wall clock) pauses the
    /// script this many times as long as it ran, so a script that keeps
    /// doing so gets at most `1 / (1 + factor)` of a core and leaves the CPU
    /// to everyone else's scripts. The router keeps the pauses (per tenant
    /// and script, see `crate::pipeline::penalty`); 0 turns them off.
    pub exhaustion_penalty: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { limits: Limits::default(), max_script_bytes: 4 << 20, cache_dir: None, max_concurrent_calls: 256, exhaustion_penalty: 9 }
    }
}

/// Why a call did not produce a decision. Each kind is recorded as such on
/// the delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScriptError {
    /// The script ran and returned its own error.
    #[error("script returned an error: {message}")]
    Returned { message: String },
    /// The script trapped (a panic, an out-of-bounds access, `unreachable`).
    #[error("script trapped: {message}")]
    Trapped { message: String },
    /// The instruction budget ran out.
    #[error("script used up its instruction budget of {budget} fuel")]
    OutOfFuel { budget: u64 },
    /// The script tried to grow its memory past the cap.
    #[error("script exceeded its memory cap of {limit} bytes")]
    OutOfMemory { limit: usize },
    /// The wall-clock backstop fired.
    #[error("script exceeded its wall-clock cap of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    /// The decision broke a rule (body not JSON, forbidden header, ...).
    #[error("script produced invalid output: {reason}")]
    InvalidOutput { reason: String },
    /// The decision was larger than the output cap.
    #[error("script output of {size} bytes exceeds the cap of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
}

impl ScriptError {
    /// A stable name for the kind, as stored and shown in the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Returned { .. } => "returned",
            Self::Trapped { .. } => "trapped",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::Timeout { .. } => "timeout",
            Self::InvalidOutput { .. } => "invalid_output",
            Self::OutputTooLarge { .. } => "output_too_large",
        }
    }
}

/// Severity of a script's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a script logged while deciding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Everything one call produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub result: OutcomeResult,
    pub logs: Vec<LogLine>,
    /// Fuel the call consumed; the same on every run of the same input.
    pub fuel_used: u64,
}

/// The decision or the error, serialized as `{"decision": …}` or `{"error": …}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeResult {
    Decision(Decision),
    Error(ScriptError),
}

impl Outcome {
    pub fn decision(&self) -> Result<&Decision, &ScriptError> {
        match &self.result {
            OutcomeResult::Decision(d) => Ok(d),
            OutcomeResult::Error(e) => Err(e),
        }
    }
}

/// A validated, compiled script, ready to be instantiated cheaply.
pub struct Script {
    sha256: Sha256,
    /// As named in the script's export, e.g. `0.1.0`; stored with it.
    wit_version: String,
    /// Linked for the bindings of `wit_version`, which it also names.
    pre: abi::Pre,
}

impl Script {
    /// sha256 of the bytes as uploaded.
    pub fn sha256(&self) -> &Sha256 {
        &self.sha256
    }

    /// The machine code, for other nodes of the same build to load with
    /// [`Sandbox::load_precompiled`] instead of compiling.
    pub fn compiled(&self) -> Option<Vec<u8>> {
        self.pre.component().serialize().ok()
    }

    /// The version of the `sluice:event-export` package the script targets.
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("sha256", &self.sha256).field("wit_version", &self.wit_version).finish()
    }
}

/// The engine that validates, compiles and runs scripts. One per process;
/// cheap to share behind an `Arc`.
pub struct Sandbox {
    engine: Engine,
    linkers: abi::Linkers,
    config: SandboxConfig,
    compiled: Mutex<HashMap<Sha256, Arc<Script>>>,
    reset: MemoryReset,
    ticker: EpochTicker,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, wasmtime::Error> {
        let mut pool = PoolingAllocationConfig::new();
        let reset = MemoryReset::for_this_host();
        let slots = config.max_concurrent_calls.max(1);
        // A componentized script has a few core instances (the module plus
        // the shims wit-component adds for imports that allocate).
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots)
            .total_tables(slots * 2)
            .max_memories_per_component(1)
            .max_memory_size(config.limits.memory_bytes)
            .linear_memory_keep_resident(reset.keep_resident)
            .table_keep_resident(64 << 10)
            .pagemap_scan(reset.pagemap_scan);

        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .signals_based_traps(false)
            .memory_reservation(config.limits.memory_bytes as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let linkers = abi::Linkers::new(&engine)?;

        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| wasmtime::Error::msg(format!("cache dir {}: {e}", dir.display())))?;
        }
        let ticker =
            EpochTicker::start(&engine, epoch::IDLE_BEFORE_SLEEP).map_err(|e| wasmtime::Error::msg(format!("the epoch thread: {e}")))?;
        Ok(Self { engine, linkers, config, compiled: Mutex::default(), reset, ticker })
    }

    /// How a script's memory is made fresh after each call, for the log:
    /// `"the pages written"` (`PAGEMAP_SCAN`) or `"the first 256 KiB"`.
    pub fn memory_reset(&self) -> &'static str {
        self.reset.describe()
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Largest accepted upload, in bytes.
    pub fn max_script_bytes(&self) -> usize {
        self.config.max_script_bytes
    }

    /// See [`SandboxConfig::exhaustion_penalty`].
    pub fn exhaustion_penalty(&self) -> u32 {
        self.config.exhaustion_penalty
    }

    /// Runs `script` on `event` with a fresh instance: nothing survives
    /// between calls. It never waits: pausing a script that keeps
    /// exhausting its budget is the caller's business.
    pub fn run(&self, script: &Script, params: &Arc<Params>, event: &Event) -> Outcome {
        let limits = self.config.limits;
        let mut store = Store::new(&self.engine, CallState::new(params.clone(), &limits));
        store.limiter(|state| &mut state.memory);
        // Both are set before instantiation, which runs guest code too.
        let _ = store.set_fuel(limits.fuel);
        let ticks = limits.wall_clock.as_millis().div_ceil(epoch::TICK.as_millis()) as u64;
        store.set_epoch_deadline(ticks.max(1) + 1);

        let running = self.ticker.running();
        let result = script.pre.call(&mut store, event);
        drop(running);
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let result = match result {
            Ok(Ok(decision)) => output::check(decision, &limits),
            Ok(Err(message)) => Err(ScriptError::Returned { message: truncate(message, limits.log_line_bytes) }),
            Err(error) => Err(classify(&error, store.data(), &limits)),
        };
        let state = store.into_data();
        Outcome {
            result: match result {
                Ok(d) => OutcomeResult::Decision(d),
                Err(e) => OutcomeResult::Error(e),
            },
            logs: state.finish_logs(),
            fuel_used,
        }
    }
}

/// How a slot's memory is made fresh again after each call. Where the
/// kernel has `PAGEMAP_SCAN` (Linux 6.7), it names the pages the slot's
/// instances ever wrote and only those are restored with `memset`: a
/// script's unused stack and heap cost nothing, whatever their size (a
/// script built with Rust's default 1 MiB stack as cheap as one built with
/// 64 KiB), and pages stay mapped up to `keep_resident`, so the next call
/// does not fault them back in (a slot whose script wrote 16 MiB keeps 2
/// MiB of it resident, not more). Without it, the first 256 KiB are restored
/// whole and the rest is unmapped: an SDK-built script's memory is 128-192
/// KiB. (`benches/sandbox.rs`; LOAD.md, "A script's memory, reset by the pages
/// it wrote".)
struct MemoryReset {
    keep_resident: usize,
    pagemap_scan: wasmtime::Enabled,
}

impl MemoryReset {
    fn for_this_host() -> Self {
        match PoolingAllocationConfig::is_pagemap_scan_available() {
            true => Self { keep_resident: 2 << 20, pagemap_scan: wasmtime::Enabled::Yes },
            false => Self { keep_resident: 256 << 10, pagemap_scan: wasmtime::Enabled::No },
        }
    }

    fn describe(&self) -> &'static str {
        match self.pagemap_scan {
            wasmtime::Enabled::Yes => "the pages written",
            _ => "the first 256 KiB",
        }
    }
}

/// Turns a wasmtime error from instantiation or the call into its kind.
fn classify(error: &wasmtime::Error, state: &CallState, limits: &Limits) -> ScriptError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ScriptError::OutOfFuel { budget: limits.fuel },
        Some(Trap::Interrupt) => ScriptError::Timeout { limit_ms: limits.wall_clock.as_millis() as u64 },
        _ if state.memory.denied => ScriptError::OutOfMemory { limit: limits.memory_bytes },
        Some(trap) => {
            // The SDK logs a panic's message just before the trap it causes.
            let message = match state.logs.iter().rev().find(|l| l.message.starts_with("script panicked")) {
                Some(panic) => format!("{trap}: {}", panic.message),
                None => trap.to_string(),
            };
            ScriptError::Trapped { message }
        }
        None => ScriptError::Trapped { message: format!("{error:#}") },
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The data a store holds for one call: what the host functions serve and
/// collect.
struct CallState {
    params: Arc<Params>,
    logs: Vec<LogLine>,
    dropped_logs: usize,
    max_logs: usize,
    max_log_bytes: usize,
    memory: MemoryCap,
}

impl CallState {
    fn new(params: Arc<Params>, limits: &Limits) -> Self {
        Self {
            params,
            logs: Vec::new(),
            dropped_logs: 0,
            max_logs: limits.log_lines,
            max_log_bytes: limits.log_line_bytes,
            memory: MemoryCap { limit: limits.memory_bytes, denied: false },
        }
    }

    fn finish_logs(mut self) -> Vec<LogLine> {
        if self.dropped_logs > 0 {
            self.logs.push(LogLine {
                level: Level::Warn,
                message: format!("{} more log lines dropped (limit {})", self.dropped_logs, self.max_logs),
            });
        }
        self.logs
    }
}

/// The host functions, once for every WIT version: each version's `host`
/// forwards here (see `abi`).
impl CallState {
    fn record_log(&mut self, level: Level, message: String) {
        if self.logs.len() >= self.max_logs {
            self.dropped_logs += 1;
            return;
        }
        self.logs.push(LogLine { level, message: truncate(message, self.max_log_bytes) });
    }

    fn param_value(&self, name: &str) -> Option<String> {
        self.params.get(name).cloned()
    }

    /// Sorted by name (a `BTreeMap`), as the world promises.
    fn param_list(&self) -> Vec<(String, String)> {
        self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Refuses memory growth past the cap and remembers that it did, so that the
/// trap that usually follows (an allocation failure aborts) is reported as
/// running out of memory.
struct MemoryCap {
    limit: usize,
    denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
