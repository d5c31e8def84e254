//! The glue between a script's filter function and the component export.
//! Script authors only write `sluice_sdk::export_filter!(my_filter);`.

use crate::{Decision, Error};

/// What a filter function may return: a [`Decision`], or a `Result` of one
/// whose error explains why the script could not decide.
pub trait IntoFilterResult {
    /// Converts into the common form.
    fn into_filter_result(self) -> Result<Decision, Error>;
}

impl IntoFilterResult for Decision {
    fn into_filter_result(self) -> Result<Decision, Error> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> IntoFilterResult for Result<Decision, E> {
    fn into_filter_result(self) -> Result<Decision, Error> {
        self.map_err(|e| Error::msg(e.to_string()))
    }
}

/// Compile-time check, in native builds, that the exported function fits.
#[doc(hidden)]
pub fn assert_filter<F, R>(_: F)
where
    F: Fn(&crate::Event) -> R,
    R: IntoFilterResult,
{
}

/// Registers `path` as the script's filter: a `fn(&Event) -> Decision` or
/// `fn(&Event) -> Result<Decision, E>`.
///
/// In a wasm build this exports the function as the component's `filter`;
/// in a native build it only checks the signature, so `cargo test` works.
#[macro_export]
macro_rules! export_filter {
    ($filter:path) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub struct __SluiceFilter;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::sluice::event_export::filter::Guest for __SluiceFilter {
            fn filter(
                event: $crate::bindings::sluice::event_export::types::Event,
            ) -> ::core::result::Result<
                $crate::bindings::sluice::event_export::types::Decision,
                ::std::string::String,
            > {
                $crate::__private::call($filter, event)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__SluiceFilter with_types_in $crate::bindings);

        #[cfg(not(target_arch = "wasm32"))]
        #[allow(dead_code)]
        fn __sluice_filter_signature_check() {
            $crate::__private::assert_filter($filter);
        }
    };
}

#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm {
    use std::sync::Once;

    use super::IntoFilterResult;
    use crate::bindings::sluice::event_export::types as wit;
    use crate::{Decision, Event, Level, Source};

    /// Runs the filter on an event received from the engine.
    pub fn call<F, R>(filter: F, event: wit::Event) -> Result<wit::Decision, String>
    where
        F: Fn(&Event) -> R,
        R: IntoFilterResult,
    {
        // A panic aborts the instance (panic = "abort"); log its message first
        // so the delivery says why, not just "unreachable".
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log(Level::Error, &format!("script panicked: {info}"));
            }))
        });
        let event = Event::from_parts(
            event.id,
            event.event_type,
            event.organization_unit,
            event.occurred_at,
            event.source.map(|s| Source { application: s.application, user: s.user }),
            event.related,
            event.payload,
        );
        match filter(&event).into_filter_result() {
            Ok(Decision::Skip(reason)) => Ok(wit::Decision::Skip(reason)),
            Ok(Decision::Deliver(d)) => Ok(wit::Decision::Deliver(wit::Delivery { body: d.body, headers: d.headers })),
            Err(e) => Err(e.to_string()),
        }
    }
}
