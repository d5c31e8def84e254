//! Hostile: a component that does not implement the sluice world. It exports
//! a `filter` of the wrong shape, in a package of its own.

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({
        inline: "
            package evil:impostor@0.1.0;
            interface filter {
                filter: func(event: string) -> bool;
            }
            world impostor {
                export filter;
            }
        ",
        world: "impostor",
    });

    struct Impostor;

    impl exports::evil::impostor::filter::Guest for Impostor {
        fn filter(event: String) -> bool {
            !event.is_empty()
        }
    }

    export!(Impostor);
}
