//! Write [sluice](https://example.invalid/sluice) export scripts in Rust.
//!
//! A script decides, for each event an export configuration matches, whether
//! the event is delivered and in what shape. It is one function from an
//! [`Event`] to a [`Decision`], registered with [`export_filter!`]:
//!
//! ```
//! use serde::Deserialize;
//! use sluice_sdk::{Decision, Error, Event, info, params};
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     amount: f64,
//! }
//!
//! fn filter(event: &Event) -> Result<Decision, Error> {
//!     if event.event_type() != "order.paid" {
//!         return Ok(Decision::skip("not a paid order"));
//!     }
//!     let min: f64 = params::parse("min_amount")?.unwrap_or(0.0);
//!     let order: Order = event.json()?;
//!     info!("order {} paid {}", event.id(), order.amount);
//!     Ok(if order.amount >= min {
//!         Decision::deliver().with_header("x-amount", order.amount.to_string())
//!     } else {
//!         Decision::skip(format!("amount {} below {min}", order.amount))
//!     })
//! }
//!
//! sluice_sdk::export_filter!(filter);
//!
//! // The same crate's `cargo test` runs the filter natively:
//! use sluice_sdk::testing::TestHost;
//! let event = Event::builder("order.paid")
//!     .payload(serde_json::json!({"amount": 120.0}))
//!     .build();
//! let run = TestHost::new().param("min_amount", "100").run(filter, &event);
//! assert!(run.decision().is_deliver());
//! ```
//!
//! # The authoring loop
//!
//! A script crate is a `cdylib` built for `wasm32-unknown-unknown`. The
//! `sluice` binary walks the whole loop, one command each:
//!
//! - `sluice script new NAME` makes a crate that builds as it is (a filter,
//!   a native test, a sample event, a copy of this SDK), anywhere;
//! - `cargo test` in it runs the filter natively with [`testing::TestHost`];
//! - `sluice script build` builds the component (rustup's wasm target, or
//!   Debian's `rustc-web`), `sluice script test` runs it on an event file;
//! - `sluice script push` uploads it as the next version of its name
//!   (`SLUICE_URL`, `SLUICE_KEY`), and `sluice script preview --configuration
//!   cfg_… --script scr_…` shows what it would change on the events that
//!   configuration already handled, before you switch the configuration to it.
//!
//! The engine also turns a plain core module into a component on upload
//! (`sluice script componentize` does it locally). In sluice's repository
//! `scripts/build.sh` builds every script under `scripts/`.
//!
//! # What a script can do
//!
//! - read the event: [`Event::json`] for your own types, [`Event::pointer`]
//!   and [`Event::get`] for single fields;
//! - read the configuration's parameters: [`params`];
//! - log: [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`];
//! - deliver as is, deliver with a new body ([`Decision::deliver_json`]) and
//!   extra headers ([`Decision::with_header`]), skip with a reason, or fail
//!   with an [`Error`].
//!
//! It cannot read clocks, randomness, files or the network: a decision is
//! a pure function of the event and the parameters, so it can be replayed.
//! The engine limits each call's instructions, memory, output size and
//! wall-clock time.
#![deny(missing_docs)]

mod decision;
mod error;
mod event;
mod export;
mod host;
mod log;
pub mod params;
mod pointer;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use decision::{Decision, Delivery};
pub use error::Error;
pub use event::{Event, EventBuilder, Source};
pub use export::IntoFilterResult;
pub use log::{Level, log};

/// Generated component bindings; used by [`export_filter!`], not by authors.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        // The world the SDK builds scripts against: the newest frozen one.
        path: "../wit/0.1",
        world: "script",
        // The export macro is used from script crates, through `export_filter!`.
        pub_export_macro: true,
        default_bindings_module: "sluice_sdk::bindings",
        generate_all,
    });
}

#[doc(hidden)]
pub mod __private {
    pub use crate::export::assert_filter;
    #[cfg(target_arch = "wasm32")]
    pub use crate::export::wasm::call;
}
