//! Host calls: the wasm imports in a component, an in-process stand-in in
//! native builds so that `cargo test` runs a script without wasm.

use crate::Level;

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::Level;
    use crate::bindings::sluice::event_export::{host, types};

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        host::log(level, message);
    }

    pub fn param(name: &str) -> Option<String> {
        host::param(name)
    }

    pub fn params() -> Vec<(String, String)> {
        host::params()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::Level;

    /// What a native test run sees and records; see `testing::TestHost`.
    #[derive(Default)]
    pub struct Native {
        pub params: BTreeMap<String, String>,
        pub logs: Vec<(Level, String)>,
    }

    thread_local! {
        pub static NATIVE: RefCell<Native> = RefCell::new(Native::default());
    }

    pub fn log(level: Level, message: &str) {
        NATIVE.with(|n| n.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn param(name: &str) -> Option<String> {
        NATIVE.with(|n| n.borrow().params.get(name).cloned())
    }

    pub fn params() -> Vec<(String, String)> {
        NATIVE.with(|n| n.borrow().params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::NATIVE;

pub(crate) fn log(level: Level, message: &str) {
    imp::log(level, message)
}

pub(crate) fn param(name: &str) -> Option<String> {
    imp::param(name)
}

pub(crate) fn params() -> Vec<(String, String)> {
    imp::params()
}
