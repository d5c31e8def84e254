//! Delivers `order.paid` events whose `amount` is at least the parameter
//! `min_amount` (default 0). Amounts may be JSON numbers or numeric strings.

use serde::Deserialize;
use sluice_sdk::{Decision, Error, Event, debug, params};

/// An amount as services send it: a number, or a number in a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(f64),
    Text(String),
}

fn filter(event: &Event) -> Result<Decision, Error> {
    if event.event_type() != "order.paid" {
        return Ok(Decision::skip(format!("type {} is not order.paid", event.event_type())));
    }
    let min: f64 = params::parse("min_amount")?.unwrap_or(0.0);
    let amount = match event.get::<Amount>("/amount")? {
        Some(Amount::Number(n)) => Some(n),
        Some(Amount::Text(s)) => s.trim().parse().ok(),
        None => None,
    }
    .ok_or_else(|| Error::msg("payload has no numeric `amount`"))?;
    debug!("order amount {amount}, minimum {min}");
    Ok(if amount >= min { Decision::deliver() } else { Decision::skip(format!("amount {amount} is below {min}")) })
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing::TestHost;

    fn order(amount: serde_json::Value) -> Event {
        Event::builder("order.paid").payload(json!({ "id": "o-1", "amount": amount })).build()
    }

    #[test]
    fn delivers_at_and_over_the_minimum() {
        let host = TestHost::new().param("min_amount", "100");
        assert!(host.run(filter, &order(json!(100))).decision().is_deliver());
        assert!(host.run(filter, &order(json!(100.01))).decision().is_deliver());
        assert!(host.run(filter, &order(json!("250.5"))).decision().is_deliver());
    }

    #[test]
    fn skips_under_the_minimum_and_other_types() {
        let host = TestHost::new().param("min_amount", "100");
        let run = host.run(filter, &order(json!(99.99)));
        assert_eq!(run.decision().skip_reason(), Some("amount 99.99 is below 100"));
        let other = Event::builder("order.created").payload(json!({"amount": 500})).build();
        assert!(!host.run(filter, &other).decision().is_deliver());
    }

    #[test]
    fn bad_parameter_or_payload_is_a_script_error() {
        let bad = TestHost::new().param("min_amount", "lots");
        assert!(bad.run(filter, &order(json!(1))).error().message().contains("min_amount"));
        let run = TestHost::new().run(filter, &Event::builder("order.paid").build());
        assert!(run.error().message().contains("amount"));
    }
}
