//! The versions of the script world the engine speaks, side by side: one
//! module per frozen minor version of `wit/` (`v0_1` for `wit/0.1/`), and
//! the dispatch from a script's version to its module.
//!
//! It owns the [`WitVersion`] a script is loaded as, the per-version linkers
//! and pre-instantiated scripts, and the one place that matches on the
//! version to call a script. It must never hold behaviour of its own: limits,
//! logging, parameters and the checking of decisions live once in the rest of
//! the sandbox, and each version module only converts to and from them.
//!
//! Adding `0.2`: the folder `wit/0.2/`, a module `v0_2` like `v0_1`, and a
//! case in [`WitVersion`], [`Linkers`] and [`Pre`]; the compiler names every
//! match that needs it.

mod v0_1;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use super::CallState;
use super::output::Proposed;
use crate::model::event::Event;

/// A version of the `sluice:event-export` world this engine runs, read from
/// the version in a script's export name at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WitVersion {
    /// `0.1.x`, the world in `wit/0.1/`.
    V0_1,
}

impl WitVersion {
    /// Every version this engine runs, oldest first.
    pub(super) const ALL: &[WitVersion] = &[WitVersion::V0_1];

    /// The version a script built against `version` (semver, as in its
    /// export name) runs as; `None` when this engine does not run it.
    pub(super) fn parse(version: &str) -> Option<Self> {
        // Within a `0.x` minor, later patches only add (see `wit/README.md`),
        // so the minor alone picks the bindings; `0.10.0` is not `0.1.x`.
        Self::ALL.iter().copied().find(|v| version.starts_with(v.prefix()))
    }

    /// What every version this one accepts starts with.
    fn prefix(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.",
        }
    }

    /// The version as a script built against it names it in its export,
    /// e.g. `0.1.0`.
    pub(super) fn export_version(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
        }
    }

    /// The versions this engine runs, for messages: `0.1.x`.
    pub(super) fn supported() -> String {
        Self::ALL.iter().map(|v| format!("{}x", v.prefix())).collect::<Vec<_>>().join(", ")
    }
}

/// One linker per version: a script is only ever linked against the host
/// functions of the world it was built for.
pub(super) struct Linkers {
    v0_1: Linker<CallState>,
}

impl Linkers {
    pub(super) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        Ok(Self { v0_1: v0_1::linker(engine)? })
    }

    /// Links `component` as a script of `version` and checks its exports'
    /// types, ready for cheap instantiation.
    pub(super) fn prepare(&self, version: WitVersion, component: &Component) -> wasmtime::Result<Pre> {
        match version {
            WitVersion::V0_1 => Ok(Pre::V0_1(v0_1::prepare(&self.v0_1, component)?)),
        }
    }
}

/// A script linked and pre-instantiated for its version.
pub(super) enum Pre {
    V0_1(v0_1::Pre),
}

impl Pre {
    #[cfg(test)]
    pub(super) fn version(&self) -> WitVersion {
        match self {
            Self::V0_1(_) => WitVersion::V0_1,
        }
    }

    pub(super) fn component(&self) -> &Component {
        match self {
            Self::V0_1(pre) => v0_1::component(pre),
        }
    }

    /// Makes an instance and drops it: export types are only checked then,
    /// and upload wants a mismatch refused before the first event.
    pub(super) fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<()> {
        match self {
            Self::V0_1(pre) => v0_1::instantiate(pre, store),
        }
    }

    /// Instantiates the script in `store` and calls its filter on `event`:
    /// the script's proposed decision, or its own error message.
    pub(super) fn call(&self, store: &mut Store<CallState>, event: &Event) -> wasmtime::Result<Result<Proposed, String>> {
        match self {
            Self::V0_1(pre) => v0_1::call(pre, store, event),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
    use wit_parser::Resolve;

    use super::WitVersion;
    use crate::model::event::{Event, EventId, EventInput};
    use crate::sandbox::{Decision, Level, LoadError, LogLine, Sandbox, SandboxConfig};

    /// A core module from `wat`, carrying the world `script` of the WIT
    /// package in `resolve`, made into a component.
    fn component(resolve: Resolve, package: wit_parser::PackageId, wat: &str) -> Vec<u8> {
        let world = resolve.select_world(&[package], Some("script")).expect("world");
        let mut module = wat::parse_str(wat).expect("test WAT parses");
        embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).expect("embed");
        ComponentEncoder::default().module(&module).expect("module").validate(true).encode().expect("encode")
    }

    fn sandbox() -> Sandbox {
        Sandbox::new(SandboxConfig { max_concurrent_calls: 2, ..SandboxConfig::default() }).expect("sandbox")
    }

    fn event() -> Event {
        let json = r#"{"id":"evt_abc","type":"order.paid","organization_unit":"emea","occurred_at":"2026-11-22T10:00:00Z","payload":{}}"#;
        EventInput::from_json(json).and_then(|e| e.validate(|| EventId::parse("evt_unused").expect("literal id"))).expect("event")
    }

    /// A script against the real `wit/0.1/` world: it logs `hello` through
    /// 0.1's `host` and skips with the event's id as the reason, so the
    /// event, the host call and the decision all cross 0.1's bindings.
    #[test]
    fn a_0_1_script_loads_as_0_1_and_runs() {
        let mut resolve = Resolve::default();
        let (package, _) = resolve.push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/0.1")).expect("wit/0.1 parses");
        // The event record is passed by pointer (more than 16 flat values)
        // and the result through a return area: `ok`, `skip`, then the
        // reason's pointer and length, copied from the event's `id`.
        let wat = r#"(module
            (import "sluice:event-export/host@0.1.0" "log" (func $log (param i32 i32 i32)))
            (memory (export "memory") 1)
            (global $next (mut i32) (i32.const 4096))
            (data (i32.const 2048) "hello")
            (func (export "sluice:event-export/filter@0.1.0#filter") (param $event i32) (result i32)
                (call $log (i32.const 2) (i32.const 2048) (i32.const 5))
                (i32.store (i32.const 16) (i32.const 0))
                (i32.store (i32.const 20) (i32.const 0))
                (i32.store (i32.const 24) (i32.load (local.get $event)))
                (i32.store (i32.const 28) (i32.load offset=4 (local.get $event)))
                (i32.const 16))
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
                (local $ptr i32)
                (local.set $ptr (i32.and (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
                                         (i32.sub (i32.const 0) (local.get 2))))
                (global.set $next (i32.add (local.get $ptr) (local.get 3)))
                (local.get $ptr)))"#;
        let sandbox = sandbox();
        let script = sandbox.load(&component(resolve, package, wat)).expect("loads");
        assert_eq!(script.pre.version(), WitVersion::V0_1);
        assert_eq!(script.wit_version(), "0.1.0");
        let outcome = sandbox.run(&script, &Arc::default(), &event());
        assert_eq!(outcome.decision(), Ok(&Decision::Skip { reason: "evt_abc".into() }), "{outcome:?}");
        assert_eq!(outcome.logs, vec![LogLine { level: Level::Info, message: "hello".into() }]);
    }

    /// The next minor is refused by version until its module is added, not
    /// linked against 0.1's bindings.
    #[test]
    fn a_0_2_script_is_refused_by_version() {
        let mut resolve = Resolve::default();
        let wit = r#"
            package sluice:event-export@0.2.0;
            interface filter { filter: func(event: string) -> bool; }
            world script { export filter; }
        "#;
        let package = resolve.push_str("test.wit", wit).expect("test WIT parses");
        let wat = r#"(module
            (memory (export "memory") 1)
            (func (export "sluice:event-export/filter@0.2.0#filter") (param i32 i32) (result i32) i32.const 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
        let error = sandbox().load(&component(resolve, package, wat)).expect_err("refused");
        assert_eq!(error, LoadError::UnsupportedVersion { found: "0.2.0".into() });
        assert_eq!(error.code(), "unsupported_wit_version");
        assert_eq!(error.to_string(), "script targets `sluice:event-export@0.2.0`, but this engine runs 0.1.x");
    }

    #[test]
    fn versions_are_picked_by_minor() {
        assert_eq!(WitVersion::parse("0.1.0"), Some(WitVersion::V0_1));
        assert_eq!(WitVersion::parse("0.1.7"), Some(WitVersion::V0_1));
        for refused in ["0.2.0", "0.10.0", "0.1", "1.0.0", "2.0.0", ""] {
            assert_eq!(WitVersion::parse(refused), None, "{refused:?}");
        }
        assert_eq!(WitVersion::supported(), "0.1.x");
    }
}
