//! Delivers every event with personal data masked: fields named like an
//! e-mail address, phone number or person's name, anywhere in the payload,
//! and any string value that looks like an e-mail address. Extra field names
//! to mask can be given in the parameter `fields` (comma-separated).

use sluice_sdk::{Decision, Error, Event, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    let extra: Vec<String> = params::list("fields")
        .iter()
        .map(|f| normalize(f))
        .collect();
    let mut redactor = Redactor {
        src: event.payload().as_bytes(),
        pos: 0,
        out: String::new(),
        extra: &extra,
        masked: 0,
        key: String::new(),
    };
    redactor.out.reserve(redactor.src.len());
    redactor.value(None)?;
    redactor.whitespace();
    if redactor.pos != redactor.src.len() {
        return Err(Error::msg("payload is not valid JSON: trailing characters"));
    }
    let masked = redactor.masked;
    let body = redactor.out;
    Ok(Decision::Deliver(sluice_sdk::Delivery {
        body: Some(body),
        headers: vec![("x-redacted-fields".into(), masked.to_string())],
    }))
}

#[derive(Clone, Copy)]
enum Kind {
    Email,
    Phone,
    Name,
}

/// Field names compared without case, `_` or `-`: `firstName` = `first_name`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn kind_of(key: &str, extra: &[String], k: &mut String) -> Option<Kind> {
    k.clear();
    let kept = key.chars().filter(|c| *c != '_' && *c != '-');
    if key.is_ascii() {
        // Unicode case tables cost many instructions per character.
        k.extend(kept.map(|c| c.to_ascii_lowercase()));
    } else {
        k.extend(kept.flat_map(char::to_lowercase));
    }
    // Byte windows, not `str::contains`: its searcher costs more to set up
    // than these short keys take to scan.
    let has = |needle: &[u8]| k.as_bytes().windows(needle.len()).any(|w| w == needle);
    if has(b"email") || k == "mail" {
        Some(Kind::Email)
    } else if has(b"phone") || has(b"mobile") || k == "fax" || k == "tel" {
        Some(Kind::Phone)
    } else if matches!(
        k.as_str(),
        "name"
            | "firstname"
            | "lastname"
            | "fullname"
            | "givenname"
            | "familyname"
            | "surname"
            | "middlename"
            | "customername"
            | "contactname"
    ) || extra.contains(k)
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

/// Copies the payload's JSON text to `out`, masking as it goes, without
/// building a tree: a script pays for every instruction, and parsing into a
/// `Value` and serializing it again costs several times more.
struct Redactor<'a> {
    src: &'a [u8],
    pos: usize,
    out: String,
    extra: &'a [String],
    masked: usize,
    /// Scratch space for normalized keys.
    key: String,
}

impl<'a> Redactor<'a> {
    fn invalid(&self) -> Error {
        Error::msg(format!("payload is not valid JSON at byte {}", self.pos))
    }

    fn whitespace(&mut self) {
        while self
            .src
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.whitespace();
        if self.src.get(self.pos) != Some(&byte) {
            return Err(self.invalid());
        }
        self.pos += 1;
        self.out.push(byte as char);
        Ok(())
    }

    /// One value; `kind` is set when the value belongs to a personal field.
    fn value(&mut self, kind: Option<Kind>) -> Result<(), Error> {
        self.whitespace();
        match self.src.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let raw = self.string()?;
                match kind {
                    Some(kind) => self.write_masked(kind, &decode(raw)?),
                    None if raw.contains('@') && looks_like_email(&decode(raw)?) => {
                        self.write_masked(Kind::Email, &decode(raw)?)
                    }
                    None => {
                        self.out.push('"');
                        self.out.push_str(raw);
                        self.out.push('"');
                    }
                }
                Ok(())
            }
            Some(_) => {
                let start = self.pos;
                while self
                    .src
                    .get(self.pos)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.pos += 1;
                }
                let token =
                    std::str::from_utf8(&self.src[start..self.pos]).map_err(|_| self.invalid())?;
                let is_number = token.starts_with(|c: char| c == '-' || c.is_ascii_digit());
                if !is_number && !matches!(token, "true" | "false" | "null") {
                    return Err(self.invalid());
                }
                if kind.is_some() && is_number {
                    self.out.push_str("\"***\"");
                    self.masked += 1;
                } else {
                    self.out.push_str(token);
                }
                Ok(())
            }
            None => Err(self.invalid()),
        }
    }

    fn object(&mut self) -> Result<(), Error> {
        self.expect(b'{')?;
        self.whitespace();
        if self.src.get(self.pos) == Some(&b'}') {
            return self.expect(b'}');
        }
        loop {
            self.whitespace();
            let raw = self.string()?;
            self.out.push('"');
            self.out.push_str(raw);
            self.out.push('"');
            let mut key = std::mem::take(&mut self.key);
            let kind = kind_of(&decode(raw)?, self.extra, &mut key);
            self.key = key;
            self.expect(b':')?;
            self.value(kind)?;
            self.whitespace();
            match self.src.get(self.pos) {
                Some(b',') => self.expect(b',')?,
                _ => return self.expect(b'}'),
            }
        }
    }

    fn array(&mut self) -> Result<(), Error> {
        self.expect(b'[')?;
        self.whitespace();
        if self.src.get(self.pos) == Some(&b']') {
            return self.expect(b']');
        }
        loop {
            // Personal fields hold scalars; inside arrays only e-mail
            // addresses are recognised, by their look.
            self.value(None)?;
            self.whitespace();
            match self.src.get(self.pos) {
                Some(b',') => self.expect(b',')?,
                _ => return self.expect(b']'),
            }
        }
    }

    /// A string token, returned without its quotes and still escaped.
    fn string(&mut self) -> Result<&'a str, Error> {
        if self.src.get(self.pos) != Some(&b'"') {
            return Err(self.invalid());
        }
        let start = self.pos + 1;
        let mut i = start;
        loop {
            match self.src.get(i) {
                Some(b'"') => break,
                Some(b'\\') => i += 2,
                Some(_) => i += 1,
                None => return Err(self.invalid()),
            }
        }
        self.pos = i + 1;
        let src: &'a [u8] = self.src;
        std::str::from_utf8(&src[start..i]).map_err(|_| self.invalid())
    }

    fn write_masked(&mut self, kind: Kind, value: &str) {
        let masked = mask(kind, value);
        self.out
            .push_str(&serde_json::to_string(&masked).unwrap_or_else(|_| "\"***\"".into()));
        self.masked += 1;
    }
}

/// The text of a string token (escapes resolved).
fn decode(raw: &str) -> Result<std::borrow::Cow<'_, str>, Error> {
    if !raw.contains('\\') {
        return Ok(raw.into());
    }
    serde_json::from_str::<String>(&format!("\"{raw}\""))
        .map(Into::into)
        .map_err(|e| Error::msg(format!("payload is not valid JSON: {e}")))
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
        let event = Event::builder("x")
            .payload(json!({"loyalty_card": "123", "city": "Delft"}))
            .build();
        let run = TestHost::new()
            .param("fields", "loyaltyCard")
            .run(filter, &event);
        assert_eq!(
            run.decision().delivery().unwrap().body_json().unwrap(),
            json!({"loyalty_card": "***", "city": "Delft"})
        );
    }

    #[test]
    fn keeps_escapes_and_structure() {
        let text =
            r#" { "a\"b" : [1, -2.5e3, true, null, {"e\u006dail": "x\"y@z.org"}], "s": "q\\" } "#;
        let event = Event::builder("x").payload_text(text).build();
        let d = TestHost::new().run(filter, &event).decision().clone();
        let body = d.delivery().unwrap().body_json().unwrap();
        assert_eq!(
            body,
            json!({"a\"b": [1, -2.5e3, true, null, {"email": "***@z.org"}], "s": "q\\"})
        );
        for bad in ["{\"a\" 1}", "[1,", "{\"a\":tru}", "\"x", "{} x"] {
            let event = Event::builder("x").payload_text(bad).build();
            TestHost::new().run(filter, &event).error();
        }
    }

    #[test]
    fn invalid_payload_is_a_script_error() {
        let event = Event::builder("x").payload_text("not json").build();
        TestHost::new().run(filter, &event).error();
    }
}
