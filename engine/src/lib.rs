//! sluice: a WebAssembly-scripted event router.
//!
//! Modules, in the direction dependencies point:
//! - [`cli`]: the command line, dispatching to the modules below;
//! - [`sandbox`]: validating, compiling and running export scripts;
//! - [`event`]: the event shape and its validation.

pub mod cli;
pub mod event;
pub mod sandbox;
