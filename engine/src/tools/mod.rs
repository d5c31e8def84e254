//! Tools for integrators that ship in the binary but are not the engine:
//! [`catch`], a test receiver. They may use the model; the engine never
//! uses them.

pub mod catch;
