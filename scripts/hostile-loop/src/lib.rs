//! Hostile: spins forever, for the sandbox tests. Events of type `benign`
//! are delivered, so tests can show the script still works afterwards.

use sluice_sdk::{Decision, Event};

fn filter(event: &Event) -> Decision {
    if event.event_type() == "benign" {
        return Decision::deliver();
    }
    let mut n: u64 = event.payload().len() as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
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
