//! Hostile: panics (a trap in wasm). Events of type `benign` are delivered.

use sluice_sdk::{Decision, Event};

fn filter(event: &Event) -> Decision {
    if event.event_type() == "benign" {
        return Decision::deliver();
    }
    panic!("hostile-panic refuses event {}", event.id());
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestHost;

    #[test]
    fn benign_events_pass() {
        assert!(TestHost::new().run(filter, &Event::builder("benign").build()).decision().is_deliver());
    }

    #[test]
    #[should_panic(expected = "refuses event evt_test")]
    fn others_panic() {
        TestHost::new().run(filter, &Event::builder("order.paid").build());
    }
}
