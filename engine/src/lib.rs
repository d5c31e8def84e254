//! sluice: a WebAssembly-scripted event router.
//!
//! The folders, in the order an event walks them:
//!
//! - `api/`: `POST /v1/events` (`api/events.rs`) parses the request at
//!   the edge (ids, types, sizes, nesting) and nothing else; every other
//!   resource of the HTTP API is a file beside it with its own `router()`,
//!   answers are shaped by `api/views.rs`, and the OpenAPI document is
//!   generated from the same handlers. The API reaches the engine only
//!   through the service.
//! - `service.rs`: `App`, the one door: every
//!   operation the API offers (ingest with the tenant's quota, the
//!   configurations and scripts, replay, keys, tenants), and the wiring of
//!   the pipeline's tasks.
//! - [`store`]: the event made durable in one group commit (the 202 is
//!   sent after it), and later every decision, delivery state and attempt;
//!   SQLite embedded, PostgreSQL for several nodes.
//! - `pipeline/`: routing (per-tenant queues, the configurations matched,
//!   the script deciding in the [`sandbox`]), then delivery
//!   (per-configuration gates, the breaker, retries; the request built and
//!   signed; the HTTP client behind the destination guard), then the
//!   attempt recorded; and replay and retention.
//! - `model/`: what all of them speak: events and ids, export
//!   configurations, keys and scopes, signatures, sealed secrets, time.
//!
//! Around them: `server.rs` starts `sluice serve`, `settings.rs` reads its
//! settings, `cli.rs` is the command line, and `tools/` holds what ships in
//! the binary for integrators but is not the engine (`sluice catch`).
//!
//! Beside all of them, `telemetry.rs` names what sluice counts and measures
//! and renders it for `/metrics`; like the model it imports nothing of
//! sluice, and every layer records through it.
//!
//! No import runs back up this list: the model imports nothing of sluice,
//! the sandbox and the store only the model, the pipeline neither the
//! service nor the API.

mod api;
mod cli;
mod console;
mod model;
mod pipeline;
pub mod sandbox;
mod server;
mod service;
mod settings;
pub mod store;
mod telemetry;
mod tools;

pub use cli::main;
pub use model::event::{Event, EventId, EventInput};
pub use model::ids::{AttemptId, ConfigId, DeliveryId, ScriptId, TenantId};
pub use model::secrets::{Keyring, MasterKey};

/// The allocator sluice's binaries install: the engine makes many small,
/// short-lived allocations on many threads (requests, events, rows), where
/// glibc's malloc took about an eighth of the engine's CPU under load.
pub use mimalloc::MiMalloc as Allocator;
