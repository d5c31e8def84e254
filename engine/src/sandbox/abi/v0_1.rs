//! The host side of the world in `wit/0.1/` (`sluice:event-export@0.1.x`):
//! its generated bindings, the engine's event in 0.1's shape, 0.1's decision
//! in the engine's, its `host` functions, its linker, and the call.
//!
//! It must never decide anything itself: every host function forwards to
//! the call state and every decision goes on to the version-independent
//! checks, so 0.1 scripts behave as every other version's. It is frozen with
//! the world: only additions that `wit/README.md` calls compatible.

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::model::event::Event;
use crate::sandbox::output::Proposed;
use crate::sandbox::{CallState, Level};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/0.1",
        world: "script",
    });
}

use bindings::sluice::event_export::{host, types as wit};

/// A 0.1 script, linked and pre-instantiated.
pub(in crate::sandbox) type Pre = bindings::ScriptPre<CallState>;

pub(super) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    bindings::Script::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)?;
    Ok(linker)
}

pub(super) fn prepare(linker: &Linker<CallState>, component: &Component) -> wasmtime::Result<Pre> {
    bindings::ScriptPre::new(linker.instantiate_pre(component)?)
}

pub(super) fn component(pre: &Pre) -> &Component {
    pre.instance_pre().component()
}

pub(super) fn instantiate(pre: &Pre, store: &mut Store<CallState>) -> wasmtime::Result<()> {
    pre.instantiate(store).map(drop)
}

pub(super) fn call(pre: &Pre, store: &mut Store<CallState>, event: &Event) -> wasmtime::Result<Result<Proposed, String>> {
    let instance = pre.instantiate(&mut *store)?;
    let result = instance.sluice_event_export_filter().call_filter(&mut *store, &to_wit(event))?;
    Ok(result.map(proposed))
}

fn to_wit(event: &Event) -> wit::Event {
    wit::Event {
        id: event.id.as_str().to_owned(),
        event_type: event.event_type.as_str().to_owned(),
        organization_unit: event.organization_unit.as_str().to_owned(),
        occurred_at: event.occurred_at_rfc3339(),
        source: event.source.as_ref().map(|s| wit::Source { application: s.application.clone(), user: s.user.clone() }),
        related: event.related.iter().map(|r| r.as_str().to_owned()).collect(),
        payload: event.payload.get().to_owned(),
    }
}

fn proposed(decision: wit::Decision) -> Proposed {
    match decision {
        wit::Decision::Skip(reason) => Proposed::Skip { reason },
        wit::Decision::Deliver(d) => Proposed::Deliver { body: d.body, headers: d.headers },
    }
}

impl wit::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: wit::Level, message: String) {
        let level = match level {
            wit::Level::Trace => Level::Trace,
            wit::Level::Debug => Level::Debug,
            wit::Level::Info => Level::Info,
            wit::Level::Warn => Level::Warn,
            wit::Level::Error => Level::Error,
        };
        self.record_log(level, message);
    }

    fn param(&mut self, name: String) -> Option<String> {
        self.param_value(&name)
    }

    fn params(&mut self) -> Vec<(String, String)> {
        self.param_list()
    }
}
