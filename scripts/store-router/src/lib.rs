//! Delivers events from the organization units listed in the parameter
//! `stores` (comma-separated paths; a unit includes everything below it),
//! except those under `exclude`. Adds an `x-store` header naming the unit.

use sluice_sdk::{Decision, Error, Event, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    let stores = params::list("stores");
    if stores.is_empty() {
        return Err(Error::msg("parameter `stores` lists no organization unit"));
    }
    if let Some(ex) = params::list("exclude").iter().find(|u| event.is_in_unit(u)) {
        return Ok(Decision::skip(format!("unit {} is excluded by {ex}", event.organization_unit())));
    }
    match stores.iter().find(|u| event.is_in_unit(u)) {
        Some(_) => {
            let store = event.organization_unit().rsplit('/').next().unwrap_or_default();
            Ok(Decision::deliver().with_header("x-store", store))
        }
        None => Ok(Decision::skip(format!("unit {} is not routed here", event.organization_unit()))),
    }
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestHost;

    fn at(ou: &str) -> Event {
        Event::builder("order.created").organization_unit(ou).build()
    }

    #[test]
    fn routes_listed_units_and_their_children() {
        let host = TestHost::new().param("stores", "emea/nl, us/ca/store-7");
        let run = host.run(filter, &at("emea/nl/store-12"));
        assert_eq!(run.decision().delivery().unwrap().header("x-store"), Some("store-12"));
        assert!(host.run(filter, &at("us/ca/store-7")).decision().is_deliver());
        assert!(!host.run(filter, &at("us/ca/store-70")).decision().is_deliver());
        assert!(!host.run(filter, &at("emea/be/store-1")).decision().is_deliver());
    }

    #[test]
    fn exclusions_win() {
        let host = TestHost::new().param("stores", "emea").param("exclude", "emea/nl/store-12");
        assert!(!host.run(filter, &at("emea/nl/store-12")).decision().is_deliver());
        assert!(host.run(filter, &at("emea/nl/store-13")).decision().is_deliver());
    }

    #[test]
    fn missing_store_list_is_an_error() {
        TestHost::new().run(filter, &at("emea")).error();
    }
}
