//! Hostile: answers with output the engine must refuse. The parameter
//! `mode` picks how: `big` (default; a body of `size` bytes, 2 MiB unless
//! set), `not-json` (a body that is not JSON), `bad-header` (a header name
//! with a line break). Events of type `benign` are delivered.

use sluice_sdk::{Decision, Error, Event, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    if event.event_type() == "benign" {
        return Ok(Decision::deliver());
    }
    let delivery = match params::get("mode").as_deref().unwrap_or("big") {
        "big" => {
            let size: usize = params::parse("size")?.unwrap_or(2 << 20);
            let mut body = String::with_capacity(size + 2);
            body.push('"');
            // `repeat` doubles with bulk copies: cheap in fuel, big in bytes.
            body.push_str(&"x".repeat(size));
            body.push('"');
            sluice_sdk::Delivery { body: Some(body), headers: vec![] }
        }
        "not-json" => sluice_sdk::Delivery { body: Some("{oops".into()), headers: vec![] },
        "bad-header" => sluice_sdk::Delivery { body: None, headers: vec![("x-evil\r\ninjected".into(), "1".into())] },
        other => return Err(Error::msg(format!("unknown mode {other}"))),
    };
    Ok(Decision::Deliver(delivery))
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestHost;

    #[test]
    fn produces_what_it_promises() {
        let e = Event::builder("order.paid").build();
        let run = TestHost::new().param("size", "10").run(filter, &e);
        assert_eq!(run.decision().delivery().unwrap().body.as_deref(), Some("\"xxxxxxxxxx\""));
        let run = TestHost::new().param("mode", "not-json").run(filter, &e);
        assert!(run.decision().delivery().unwrap().body_json().is_none());
        assert!(TestHost::new().run(filter, &Event::builder("benign").build()).decision().is_deliver());
    }
}
