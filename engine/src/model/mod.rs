//! What sluice is about, before anything moves: events and their ids,
//! export configurations (endpoint, selection, authorization, signing,
//! retries), API keys and their scopes, the signatures receivers check,
//! the keys that seal secrets at rest, header rules, and time.
//!
//! Types and rules only: nothing here does I/O, and nothing here imports
//! from the pipeline, the store, the sandbox or the API above it.

pub mod auth;
pub mod event;
pub mod export;
pub mod headers;
pub mod ids;
pub mod secrets;
pub mod sign;
pub mod timestamp;
