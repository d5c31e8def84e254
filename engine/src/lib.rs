//! sluice: a WebAssembly-scripted event router.
//!
//! Modules, in the direction dependencies point:
//! - [`cli`] and [`server`]: the command line and `sluice serve`'s start-up;
//! - `catch`: `sluice catch`, the test receiver, apart from the engine;
//! - [`api`]: the HTTP API, the only module that speaks HTTP to callers;
//! - [`app`]: the operations the API performs, and the pipeline's wiring;
//! - [`route`] and [`deliver`]: matching and scripts, then sending, both
//!   served from [`fair`] queues per tenant; [`penalty`] pauses a script that
//!   keeps exhausting its budget without pausing anyone else;
//! - [`replay`] and [`retention`]: sending again, and purging what is old;
//! - [`destination`]: which addresses deliveries may connect to;
//! - [`sandbox`]: validating, compiling and running export scripts;
//! - [`export`], [`event`], [`auth`], [`sign`], [`ids`]: the domain types and rules;
//! - [`secrets`]: the keys that seal secrets at rest and authenticate stored code;
//! - [`store`]: every SQL statement.

pub mod api;
pub mod app;
pub mod auth;
mod catch;
pub mod cli;
pub mod deliver;
pub mod destination;
pub mod event;
pub mod export;
pub mod fair;
pub mod ids;
pub mod penalty;
pub mod replay;
pub mod retention;
pub mod route;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod sign;
pub mod store;

/// The allocator sluice's binaries install: the engine makes many small,
/// short-lived allocations on many threads (requests, events, rows), where
/// glibc's malloc took about an eighth of the engine's CPU under load.
pub use mimalloc::MiMalloc as Allocator;
