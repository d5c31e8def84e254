//! Delivers every event with personal data masked: fields named like an
//! e-mail address, phone number or person's name, anywhere in the payload,
//! and any string value that looks like an e-mail address. Extra field names
//! to mask can be given in the parameter `fields` (comma-separated).

use serde_json::Value;
use sluice_sdk::{Decision, Error, Event, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    let extra: Vec<String> = params::list("fields").iter().map(|f| normalize(f)).collect();
    let mut payload = event.value()?.clone();
    let masked = redact(&mut payload, &extra);
    Ok(Decision::deliver_json(&payload)?.with_header("x-redacted-fields", masked.to_string()))
}

#[derive(Clone, Copy)]
enum Kind {
    Email,
    Phone,
    Name,
}

/// Field names compared without case, `_` or `-`: `firstName` = `first_name`.
fn normalize(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn kind_of(key: &str, extra: &[String]) -> Option<Kind> {
    let k = normalize(key);
    if k.contains("email") || k == "mail" {
        Some(Kind::Email)
    } else if k.contains("phone") || k.contains("mobile") || k == "fax" || k == "tel" {
        Some(Kind::Phone)
    } else if matches!(
        k.as_str(),
        "name" | "firstname" | "lastname" | "fullname" | "givenname" | "familyname"
            | "surname" | "middlename" | "customername" | "contactname"
    ) || extra.contains(&k)
    {
        Some(Kind::Name)
    } else {
        None
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => !user.is_empty() && domain.contains('.') && !s.contains(' '),
        None => false,
    }
}

fn mask(kind: Kind, s: &str) -> String {
    match kind {
        // Keep the domain: receivers often route on it.
        Kind::Email => match s.split_once('@') {
            Some((_, domain)) => format!("***@{domain}"),
            None => "***".into(),
        },
        // Keep the last two digits for support look-ups.
        Kind::Phone => {
            let digits: Vec<char> = s.chars().filter(char::is_ascii_digit).collect();
            let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
            format!("***{tail}")
        }
        Kind::Name => "***".into(),
    }
}

/// Masks in place; returns how many values were masked.
fn redact(value: &mut Value, extra: &[String]) -> usize {
    match value {
        Value::Object(map) => map
            .iter_mut()
            .map(|(key, v)| match (kind_of(key, extra), &*v) {
                (Some(kind), Value::String(s)) => {
                    *v = Value::String(mask(kind, s));
                    1
                }
                (Some(_), Value::Number(_)) => {
                    *v = Value::String("***".into());
                    1
                }
                _ => redact(v, extra),
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(|v| redact(v, extra)).sum(),
        Value::String(s) if looks_like_email(s) => {
            *s = mask(Kind::Email, s);
            1
        }
        _ => 0,
    }
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing::TestHost;

    #[test]
    fn masks_personal_fields_everywhere() {
        let event = Event::builder("customer.registered")
            .payload(json!({
                "customer": {"firstName": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                             "phone": "+31 6 1234 5678"},
                "contacts": [{"name": "Bob", "note": "reach me at bob@example.org"}, "carol@example.net"],
                "amount": 12
            }))
            .build();
        let run = TestHost::new().run(filter, &event);
        let d = run.decision().delivery().unwrap();
        assert_eq!(
            d.body_json().unwrap(),
            json!({
                "customer": {"firstName": "***", "last_name": "***", "email": "***@example.com",
                             "phone": "***78"},
                "contacts": [{"name": "***", "note": "reach me at bob@example.org"}, "***@example.net"],
                "amount": 12
            })
        );
        assert_eq!(d.header("x-redacted-fields"), Some("6"));
    }

    #[test]
    fn extra_fields_from_parameters() {
        let event = Event::builder("x").payload(json!({"loyalty_card": "123", "city": "Delft"})).build();
        let run = TestHost::new().param("fields", "loyaltyCard").run(filter, &event);
        assert_eq!(
            run.decision().delivery().unwrap().body_json().unwrap(),
            json!({"loyalty_card": "***", "city": "Delft"})
        );
    }

    #[test]
    fn invalid_payload_is_a_script_error() {
        let event = Event::builder("x").payload_text("not json").build();
        TestHost::new().run(filter, &event).error();
    }
}
