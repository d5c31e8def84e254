//! Tools that ship in the binary but are not the engine: [`catch`], a test
//! receiver, [`author`], the script author's loop, and [`admin`], the
//! operator's command line against a server's API. They may use the model;
//! the engine never uses them.

pub mod admin;
pub mod author;
pub mod catch;
