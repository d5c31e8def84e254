//! Hostile: allocates and touches memory until something stops it. Events
//! of type `benign` are delivered.

use sluice_sdk::{Decision, Event};

fn filter(event: &Event) -> Decision {
    if event.event_type() == "benign" {
        return Decision::deliver();
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
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
}
