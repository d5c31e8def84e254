//! Turns an event into a receiver's own body shape:
//!
//! ```json
//! {"EventType": "OrderPaid", "EventCategory": "OrderEvents",
//!  "EventDateUtc": "2026-11-22T10:00:00Z", "EventId": "...",
//!  "OrganizationUnit": "emea/nl", "User": "...", "Data": { ...payload... }}
//! ```
//!
//! and adds a header `x-event-category`. `order.paid` becomes `OrderPaid`;
//! the category comes from the parameter `category` or the type's prefix.

use serde_json::{Map, Value, json};
use sluice_sdk::{Decision, Error, Event, params};

fn pascal_case(s: &str) -> String {
    s.split(['.', '_', '-', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

fn filter(event: &Event) -> Result<Decision, Error> {
    let event_type = pascal_case(event.event_type());
    let category = params::get("category").unwrap_or_else(|| {
        let prefix = event.event_type().split('.').next().unwrap_or_default();
        format!("{}Events", pascal_case(prefix))
    });
    let mut body = Map::new();
    body.insert("EventType".into(), json!(event_type));
    body.insert("EventCategory".into(), json!(category));
    body.insert("EventDateUtc".into(), json!(event.occurred_at()));
    body.insert("EventId".into(), json!(event.id()));
    body.insert("OrganizationUnit".into(), json!(event.organization_unit()));
    if let Some(user) = event.source().and_then(|s| s.user.as_deref()) {
        body.insert("User".into(), json!(user));
    }
    body.insert("Data".into(), event.value()?.clone());
    Ok(Decision::deliver_json(&Value::Object(body))?.with_header("x-event-category", category))
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestHost;

    #[test]
    fn reshapes_into_the_receiver_body() {
        let event = Event::builder("order.paid")
            .id("evt_1")
            .organization_unit("emea/nl")
            .occurred_at("2026-11-22T10:00:00Z")
            .source(Some("pos"), Some("clerk-7"))
            .payload(json!({"amount": 20.0}))
            .build();
        let run = TestHost::new().run(filter, &event);
        let d = run.decision().delivery().unwrap();
        assert_eq!(
            d.body_json().unwrap(),
            json!({"EventType": "OrderPaid", "EventCategory": "OrderEvents",
                   "EventDateUtc": "2026-11-22T10:00:00Z", "EventId": "evt_1",
                   "OrganizationUnit": "emea/nl", "User": "clerk-7", "Data": {"amount": 20.0}})
        );
        assert_eq!(d.header("x-event-category"), Some("OrderEvents"));
    }

    #[test]
    fn category_parameter_overrides() {
        let event = Event::builder("CreateOrderPaymentEvent").build();
        let run = TestHost::new().param("category", "Payments").run(filter, &event);
        let body = run.decision().delivery().unwrap().body_json().unwrap();
        assert_eq!(body["EventCategory"], "Payments");
        assert_eq!(body["EventType"], "CreateOrderPaymentEvent");
    }
}
