//! Delivers every event with personal data masked: fields named like an
//! e-mail address, phone number or person's name, anywhere in the payload,
//! and any string value that looks like an e-mail address. Extra field names
//! to mask can be given in the parameter `fields` (comma-separated).

use std::borrow::Cow;

use sluice_sdk::{Decision, Error, Event, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    let extra: Vec<String> = params::list("fields").iter().map(|f| normalize(f)).collect();
    let (body, masked) = Redactor::new(event.payload(), &extra).run()?;
    Ok(Decision::Deliver(sluice_sdk::Delivery { body: Some(body), headers: vec![("x-redacted-fields".into(), masked.to_string())] }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Phone,
    Name,
}

/// Field names compared without case, `_` or `-`: `firstName` = `first_name`.
fn normalize(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// Whether `k[i..]` starts with `word`, ignoring ASCII case. `word` must be
/// lower-case letters: `b | 0x20` equals one only for it and its capital.
fn has_at(k: &[u8], i: usize, word: &[u8]) -> bool {
    k.get(i..i + word.len()).is_some_and(|w| w.iter().zip(word).all(|(a, b)| a | 0x20 == *b))
}

fn is(k: &[u8], word: &[u8]) -> bool {
    k.len() == word.len() && has_at(k, 0, word)
}

/// The kind of personal data a field holds, from its name `k` without `_`
/// and `-`. ASCII letters may be in either case, so a plain name is used as
/// it is written, without a lower-cased copy; a name with other characters
/// comes through `normalize`. `extra` holds normalized names.
fn kind_of(k: &[u8], extra: &[String]) -> Option<Kind> {
    // One pass for the three substrings, five or six bytes long: only where
    // one can start, and most bytes fail the first test.
    let mut phone = false;
    for (i, b) in k[..k.len().saturating_sub(4)].iter().enumerate() {
        match b | 0x20 {
            b'e' if has_at(k, i, b"email") => return Some(Kind::Email),
            b'p' if has_at(k, i, b"phone") => phone = true,
            b'm' if has_at(k, i, b"mobile") => phone = true,
            _ => {}
        }
    }
    if is(k, b"mail") {
        Some(Kind::Email)
    } else if phone || is(k, b"fax") || is(k, b"tel") {
        Some(Kind::Phone)
    } else if is_name(k) || extra.iter().any(|e| k.eq_ignore_ascii_case(e.as_bytes())) {
        Some(Kind::Name)
    } else {
        None
    }
}

/// `name`, `firstname`, `surname`...: all end in `name`, which most field
/// names do not, so that is tested first.
fn is_name(k: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 10] = [b"", b"first", b"last", b"full", b"given", b"family", b"sur", b"middle", b"customer", b"contact"];
    match k.len().checked_sub(4) {
        Some(n) if has_at(k, n, b"name") => PREFIXES.iter().any(|p| is(&k[..n], p)),
        _ => false,
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, domain)) => !user.is_empty() && domain.contains('.') && !s.contains(' '),
        None => false,
    }
}

/// The bytes that end a number or literal: `,`, `}`, `]` and whitespace.
/// A table costs fewer instructions per byte than the comparisons.
static ENDS_SCALAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b',' | b'}' | b']') || (b as u8).is_ascii_whitespace();
        b += 1;
    }
    table
};

// Strings are scanned eight bytes at once ("SWAR", in a u64): a few
// instructions per byte instead of a dozen byte by byte.
const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of every byte of `w` equal to `b`. Bytes above a match may
/// be flagged wrongly (a borrow), so only the lowest flag is to be trusted.
fn bytes_equal(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * b as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Ends a plain string's run: a quote, an escape, or an `@` to note.
fn string_stops(w: u64) -> u64 {
    bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_equal(w, b'@')
}

fn is_string_stop(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | b'@')
}

/// Ends a string's run once its `@` is known: a quote or an escape.
fn quote_stops(w: u64) -> u64 {
    bytes_equal(w, b'"') | bytes_equal(w, b'\\')
}

fn is_quote_stop(b: u8) -> bool {
    matches!(b, b'"' | b'\\')
}

/// Ends a plain key: a quote, or what needs normalizing or decoding.
fn key_stops(w: u64) -> u64 {
    bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_equal(w, b'_') | bytes_equal(w, b'-') | (w & HIGHS)
}

fn is_key_stop(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | b'_' | b'-' | 0x80..)
}

/// The position of the first byte of `bytes` that `is_stop`; `stops` flags
/// the same bytes in a word of eight.
#[inline(always)]
fn find(bytes: &[u8], stops: fn(u64) -> u64, is_stop: fn(u8) -> bool) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let flags = stops(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        if flags != 0 {
            return Some(offset + flags.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| is_stop(b)).map(|p| offset + p)
}

/// Copies the payload's JSON text to `out`, masking as it goes, without
/// building a tree: a script pays for every instruction, and parsing into a
/// `Value` and serializing it again costs several times more.
///
/// The output is the input without the whitespace between tokens, with
/// personal values replaced. Unchanged text is copied in whole runs (from
/// `copied` up to where the next change starts), not token by token.
struct Redactor<'a> {
    /// The payload, and the same as bytes.
    text: &'a str,
    src: &'a [u8],
    pos: usize,
    /// `src[..copied]` is dealt with: copied to `out`, or dropped.
    copied: usize,
    out: String,
    extra: &'a [String],
    masked: usize,
    /// Scratch space for normalized keys.
    key: Vec<u8>,
    /// Why the scan stopped, when it returned `Err(Stop)`.
    error: Option<Error>,
}

/// The scan failed; the error is in `Redactor::error`. A unit error keeps
/// the scanning functions' results in registers.
struct Stop;

type Scan<T = ()> = Result<T, Stop>;

impl<'a> Redactor<'a> {
    fn new(text: &'a str, extra: &'a [String]) -> Self {
        Redactor {
            text,
            src: text.as_bytes(),
            pos: 0,
            copied: 0,
            out: String::with_capacity(text.len()),
            extra,
            masked: 0,
            key: Vec::new(),
            error: None,
        }
    }

    /// The whole payload, masked, and the number of values masked.
    fn run(mut self) -> Result<(String, usize), Error> {
        if self.value(None).is_err() {
            // Every `Stop` comes with its error.
            return Err(self.error.take().unwrap_or_else(|| Error::msg("invalid JSON")));
        }
        self.whitespace();
        if self.pos != self.src.len() {
            return Err(Error::msg("payload is not valid JSON: trailing characters"));
        }
        self.flush(self.src.len());
        Ok((self.out, self.masked))
    }

    #[cold]
    fn invalid(&mut self) -> Stop {
        self.fail(Error::msg(format!("payload is not valid JSON at byte {}", self.pos)))
    }

    #[cold]
    fn fail(&mut self, error: Error) -> Stop {
        self.error = Some(error);
        Stop
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Copies the pending run of unchanged text up to `upto`.
    fn flush(&mut self, upto: usize) {
        // Every position passed here is at an ASCII byte or the end, so
        // always on a character boundary.
        self.out.push_str(&self.text[self.copied..upto]);
        self.copied = upto;
    }

    /// Replaces the value that started at `start` and ends at `pos`.
    fn replace_with(&mut self, start: usize, write: impl FnOnce(&mut String)) {
        self.flush(start);
        write(&mut self.out);
        self.copied = self.pos;
        self.masked += 1;
    }

    #[inline(always)]
    fn whitespace(&mut self) {
        // Compact JSON has none: one test, and no run to end.
        if self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.skip_whitespace();
        }
    }

    #[inline(never)]
    fn skip_whitespace(&mut self) {
        self.flush(self.pos);
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        self.copied = self.pos;
    }

    /// Moves past `byte`, after any whitespace.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Scan {
        // Compact JSON has no whitespace: look for the byte first.
        if self.peek() != Some(byte) {
            self.whitespace();
            if self.peek() != Some(byte) {
                return Err(self.invalid());
            }
        }
        self.pos += 1;
        Ok(())
    }

    /// After a member or element: moves past a `,` and returns `true`, or
    /// past `close` and returns `false`.
    #[inline(always)]
    fn more(&mut self, close: u8) -> Scan<bool> {
        let mut next = self.peek();
        if next != Some(b',') && next != Some(close) {
            self.whitespace();
            next = self.peek();
        }
        if next == Some(b',') {
            self.pos += 1;
            return Ok(true);
        }
        self.expect(close).map(|()| false)
    }

    /// One value; `kind` is set when the value belongs to a personal field.
    fn value(&mut self, kind: Option<Kind>) -> Scan {
        match self.peek() {
            Some(b'"') => self.string_value(kind),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b) if b.is_ascii_whitespace() => {
                self.skip_whitespace();
                self.value(kind)
            }
            Some(first) => self.scalar(first, kind),
            None => Err(self.invalid()),
        }
    }

    #[inline(always)]
    fn object(&mut self) -> Scan {
        self.pos += 1; // `{`, seen by `value`
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let kind = self.key()?;
            self.expect(b':')?;
            self.value(kind)?;
            if !self.more(b'}')? {
                return Ok(());
            }
        }
    }

    #[inline(always)]
    fn array(&mut self) -> Scan {
        self.pos += 1; // `[`, seen by `value`
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            // Personal fields hold scalars; inside arrays only e-mail
            // addresses are recognised, by their look.
            self.value(None)?;
            if !self.more(b']')? {
                return Ok(());
            }
        }
    }

    /// A number, `true`, `false` or `null`.
    #[inline(always)]
    fn scalar(&mut self, first: u8, kind: Option<Kind>) -> Scan {
        let start = self.pos;
        self.pos += self.src[start..].iter().position(|&b| ENDS_SCALAR[b as usize]).unwrap_or(self.src.len() - start);
        let is_number = first == b'-' || first.is_ascii_digit();
        if !is_number && !matches!(&self.src[start..self.pos], b"true" | b"false" | b"null") {
            return Err(self.invalid());
        }
        if kind.is_some() && is_number {
            self.replace_with(start, |out| out.push_str(MASK));
        }
        Ok(())
    }

    #[inline(always)]
    fn string_value(&mut self, kind: Option<Kind>) -> Scan {
        let start = self.pos;
        let (end, escaped, at) = self.string()?;
        // Nearly every string is copied as it is.
        if kind.is_none() && !at {
            return Ok(());
        }
        self.personal_string(start, end, escaped, kind)
    }

    /// Masks a string value of a personal field, or one with an `@` if it
    /// looks like an e-mail address.
    #[inline(never)]
    fn personal_string(&mut self, start: usize, end: usize, escaped: bool, kind: Option<Kind>) -> Scan {
        // A name goes entirely: nothing to read unless escapes are to check.
        if kind == Some(Kind::Name) && !escaped {
            self.replace_with(start, |out| out.push_str(MASK));
            return Ok(());
        }
        let raw = &self.text[start + 1..end];
        let text = match decode_if(raw, escaped) {
            Ok(text) => text,
            Err(e) => return Err(self.fail(e)),
        };
        let kind = match kind {
            Some(kind) => kind,
            None if looks_like_email(&text) => Kind::Email,
            None => return Ok(()),
        };
        self.replace_with(start, |out| write_masked(out, kind, &text));
        Ok(())
    }

    /// A member name, classified. Names without `_`, `-`, escapes or
    /// non-ASCII characters (most) are classified where they stand.
    #[inline(always)]
    fn key(&mut self) -> Scan<Option<Kind>> {
        if self.peek() != Some(b'"') {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.invalid());
            }
        }
        let start = self.pos + 1;
        match self.key_stop(start) {
            Some((end, b'"')) => {
                self.pos = end + 1;
                Ok(kind_of(&self.src[start..end], self.extra))
            }
            Some((j, b'_' | b'-')) => self.split_key(start, j),
            _ => self.odd_key(),
        }
    }

    /// The first byte from `i` on that ends a plain key, and where it is.
    #[inline(always)]
    fn key_stop(&self, i: usize) -> Option<(usize, u8)> {
        let p = find(self.src.get(i..)?, key_stops, is_key_stop)?;
        Some((i + p, self.src[i + p]))
    }

    /// A name with `_` or `-` (the first at `j`): the parts between them
    /// are gathered in `key`.
    #[inline(never)]
    fn split_key(&mut self, start: usize, j: usize) -> Scan<Option<Kind>> {
        self.key.clear();
        self.key.extend_from_slice(&self.src[start..j]);
        let mut part = j + 1;
        loop {
            match self.key_stop(part) {
                Some((end, b'"')) => {
                    self.key.extend_from_slice(&self.src[part..end]);
                    self.pos = end + 1;
                    return Ok(kind_of(&self.key, self.extra));
                }
                Some((j, b'_' | b'-')) => {
                    self.key.extend_from_slice(&self.src[part..j]);
                    part = j + 1;
                }
                _ => return self.odd_key(),
            }
        }
    }

    /// A name with escapes or non-ASCII characters (or without an end).
    #[inline(never)]
    fn odd_key(&mut self) -> Scan<Option<Kind>> {
        let start = self.pos + 1;
        let (end, escaped, _) = self.string()?;
        match decode_if(&self.text[start..end], escaped) {
            Ok(text) => Ok(kind_of(normalize(&text).as_bytes(), self.extra)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// A string token from `pos`, which moves past its closing quote.
    /// Returns where that quote is, whether the string has escapes (only
    /// then does its text differ from the raw bytes) and whether it has an
    /// `@` (only then can it be an e-mail address).
    #[inline(always)]
    fn string(&mut self) -> Scan<(usize, bool, bool)> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid());
        }
        let (mut i, mut escaped) = (self.pos + 1, false);
        loop {
            let stop = self.src.get(i..).and_then(|rest| find(rest, string_stops, is_string_stop));
            match stop.map(|p| (i + p, self.src[i + p])) {
                Some((end, b'"')) => {
                    i = end;
                    break;
                }
                // An escape: the escaped character (perhaps a quote) is
                // skipped unseen.
                Some((j, b'\\')) => {
                    escaped = true;
                    i = self.skip_escapes(j);
                }
                // An `@`: the rest is only scanned for the end.
                Some((j, _)) => {
                    self.after_at(j + 1)?;
                    let end = self.pos - 1;
                    let escaped = escaped || self.src[j..end].contains(&b'\\');
                    return Ok((end, escaped, true));
                }
                None => return Err(self.invalid()),
            }
        }
        // An `@` skipped as an escaped character counts too.
        let at = escaped && self.src[self.pos + 1..i].contains(&b'@');
        self.pos = i + 1;
        Ok((i, escaped, at))
    }

    /// Past the escape at `j` and any that follow at once (as `\u` escapes
    /// of non-Latin text do): no word scan for each.
    #[inline(always)]
    fn skip_escapes(&self, mut j: usize) -> usize {
        j += 2;
        while self.src.get(j) == Some(&b'\\') {
            j += 2;
        }
        j
    }

    /// The rest of a string from `i`, after an `@` (so other `@`s need no
    /// stop); `pos` moves past its closing quote.
    #[inline(never)]
    fn after_at(&mut self, mut i: usize) -> Scan {
        loop {
            let stop = self.src.get(i..).and_then(|rest| find(rest, quote_stops, is_quote_stop));
            match stop.map(|p| (i + p, self.src[i + p])) {
                Some((end, b'"')) => {
                    self.pos = end + 1;
                    return Ok(());
                }
                Some((j, _)) => i = self.skip_escapes(j),
                None => return Err(self.invalid()),
            }
        }
    }
}

/// What a masked value reads, as JSON.
const MASK: &str = "\"***\"";

/// Writes the masked value of a personal field, as a JSON string.
fn write_masked(out: &mut String, kind: Kind, text: &str) {
    match kind {
        // Keep the domain: receivers often route on it.
        Kind::Email => match text.split_once('@') {
            Some((_, domain)) => {
                out.push_str("\"***@");
                push_escaped(out, domain);
                out.push('"');
            }
            None => out.push_str(MASK),
        },
        // Keep the last two digits for support look-ups.
        Kind::Phone => {
            let mut last = text.bytes().rev().filter(u8::is_ascii_digit);
            let (b, a) = (last.next(), last.next());
            out.push_str("\"***");
            out.extend(a.into_iter().chain(b).map(char::from));
            out.push('"');
        }
        Kind::Name => out.push_str(MASK),
    }
}

/// Appends `s` escaped as the inside of a JSON string (as serde_json does).
fn push_escaped(out: &mut String, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        out.push_str(&quoted[1..quoted.len() - 1]);
    } else {
        out.push_str(s);
    }
}

/// The text of a string token, decoded if it has escapes.
fn decode_if(raw: &str, escaped: bool) -> Result<Cow<'_, str>, Error> {
    if escaped { decode(raw).map(Cow::Owned) } else { Ok(Cow::Borrowed(raw)) }
}

/// The text of a string token that has escapes.
fn decode(raw: &str) -> Result<String, Error> {
    serde_json::from_str::<String>(&format!("\"{raw}\"")).map_err(|e| Error::msg(format!("payload is not valid JSON: {e}")))
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
        assert_eq!(run.decision().delivery().unwrap().body_json().unwrap(), json!({"loyalty_card": "***", "city": "Delft"}));
    }

    #[test]
    fn keeps_escapes_and_structure() {
        let text = r#" { "a\"b" : [1, -2.5e3, true, null, {"e\u006dail": "x\"y@z.org"}], "s": "q\\" } "#;
        let event = Event::builder("x").payload_text(text).build();
        let d = TestHost::new().run(filter, &event).decision().clone();
        let body = d.delivery().unwrap().body_json().unwrap();
        assert_eq!(body, json!({"a\"b": [1, -2.5e3, true, null, {"email": "***@z.org"}], "s": "q\\"}));
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

    /// The body as text (exact bytes, not just the same JSON) and the count.
    fn redact(payload: &str, fields: Option<&str>) -> Result<(String, String), String> {
        let event = Event::builder("x").payload_text(payload).build();
        let mut host = TestHost::new();
        if let Some(fields) = fields {
            host = host.param("fields", fields);
        }
        match host.run(filter, &event).result {
            Ok(d) => {
                let d = d.delivery().unwrap();
                let count = d.header("x-redacted-fields").unwrap().to_owned();
                Ok((d.body.clone().unwrap(), count))
            }
            Err(e) => Err(e.message().to_owned()),
        }
    }

    fn ok(payload: &str) -> (String, String) {
        redact(payload, None).unwrap()
    }

    #[test]
    fn output_is_the_input_without_whitespace_between_tokens() {
        let text = "{\n  \"a\" : [ 1 ,\t\"x y\" , { } , [ ] ],\r\n  \"name\":\"Ann\" ,\"b\":\u{c}null }\n";
        assert_eq!(ok(text), (r#"{"a":[1,"x y",{},[]],"name":"***","b":null}"#.into(), "1".into()));
        // Compact input comes back byte for byte where nothing is masked.
        let compact = r#"{"order_id":"o-1","amount":-2.5e3,"ok":true,"tags":["a","b\"c"],"n":null}"#;
        assert_eq!(ok(compact), (compact.into(), "0".into()));
    }

    #[test]
    fn escaped_strings() {
        // An escaped key is decoded before it is classified.
        assert_eq!(ok(r#"{"e\u006dail":"a@b.org"}"#).0, r#"{"e\u006dail":"***@b.org"}"#);
        assert_eq!(ok(r#"{"na\u006De":"x"}"#).0, r#"{"na\u006De":"***"}"#);
        assert_eq!(ok(r#"{"a\"name":"x"}"#).0, r#"{"a\"name":"x"}"#);
        // Escaped quotes and backslashes do not end a string early.
        assert_eq!(ok(r#"{"s":"a\"b\\","name":"c\"d"}"#).0, r#"{"s":"a\"b\\","name":"***"}"#);
        // The domain kept from an e-mail value is escaped again.
        assert_eq!(ok(r#"{"email":"x\"y@q\"z\\.org\n"}"#).0, r#"{"email":"***@q\"z\\.org\n"}"#);
        assert_eq!(ok(r#"["a@b\u00e9.org"]"#).0, r#"["***@bé.org"]"#);
        // An `@` written as an escape is not looked at; one after an escape is.
        assert_eq!(ok(r#"["a\u0040b.org"]"#), (r#"["a\u0040b.org"]"#.into(), "0".into()));
        assert_eq!(ok(r#"["\\a@b.org"]"#).0, r#"["***@b.org"]"#);
        // Runs of escapes, and strings longer than a scanned word.
        let long = format!(r#"{{"note":"{}","phone":"{}12"}}"#, "\\u00e9\\\"".repeat(20), "\\t".repeat(9));
        let (body, count) = ok(&long);
        assert_eq!(body, format!(r#"{{"note":"{}","phone":"***12"}}"#, "\\u00e9\\\"".repeat(20)));
        assert_eq!(count, "1");
    }

    #[test]
    fn field_names_in_any_case_and_spelling() {
        let text = r#"{"E-MAIL":1,"customer_email_address":2,"PhoneNumber":3,"mobile":4,"FAX":5,"tel":6,
            "first_name":7,"Surname":8,"contact-name":9,"username":10,"filename":11,"telephone":12,
            "emai":13,"mail":14,"mailbox":15,"x_x_x_x_x_phone":16,"Name_":17}"#;
        let (body, count) = ok(text);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"E-MAIL":"***","customer_email_address":"***","PhoneNumber":"***","mobile":"***",
                   "FAX":"***","tel":"***","first_name":"***","Surname":"***","contact-name":"***",
                   "username":10,"filename":11,"telephone":"***","emai":13,"mail":"***","mailbox":15,
                   "x_x_x_x_x_phone":"***","Name_":"***"})
        );
        assert_eq!(count, "13");
    }

    #[test]
    fn unicode_field_names() {
        let text = r#"{"ÉMAIL":"a","contact_émail":"b","Имя":"c","naïve":"d","Straße":"e","名前":"f"}"#;
        assert_eq!(ok(text), (text.into(), "0".into()));
        // Extra fields are compared in the same normalized form, Unicode too.
        let (body, count) = redact(text, Some("NAÏVE, strasse, straße,名前")).unwrap();
        assert_eq!(body, r#"{"ÉMAIL":"a","contact_émail":"b","Имя":"c","naïve":"***","Straße":"***","名前":"***"}"#);
        assert_eq!(count, "3");
        let (body, _) = redact(r#"{"Loyalty-Card":"1","loyaltycards":"2"}"#, Some("loyalty_card")).unwrap();
        assert_eq!(body, r#"{"Loyalty-Card":"***","loyaltycards":"2"}"#);
    }

    #[test]
    fn nested_arrays_and_objects() {
        let text = r#"[[["x@y.org",{"name":"A","list":[{"email":"b@c.de"}]}]],{"phone":["+31 6 12",{"name":"B"}]},[]]"#;
        // A personal field holding an array or object does not mask its
        // elements: only what they are themselves.
        assert_eq!(
            ok(text),
            (
                r#"[[["***@y.org",{"name":"***","list":[{"email":"***@c.de"}]}]],{"phone":["+31 6 12",{"name":"***"}]},[]]"#.into(),
                "4".into()
            )
        );
    }

    #[test]
    fn numbers_as_personal_values() {
        assert_eq!(
            ok(r#"{"phone":31612345678,"name":-1.5e3,"email":0,"amount":12}"#),
            (r#"{"phone":"***","name":"***","email":"***","amount":12}"#.into(), "3".into())
        );
        // Literals are not personal data.
        assert_eq!(ok(r#"{"phone":true,"name":null,"email":false}"#), (r#"{"phone":true,"name":null,"email":false}"#.into(), "0".into()));
        // A phone number keeps its last two digits, wherever they are.
        assert_eq!(ok(r#"{"tel":"+31 (0)6-1234 56 7 8x"}"#).0, r#"{"tel":"***78"}"#);
        assert_eq!(ok(r#"{"fax":"no 7"}"#).0, r#"{"fax":"***7"}"#);
        assert_eq!(ok(r#"{"mobile":"none"}"#).0, r#"{"mobile":"***"}"#);
    }

    #[test]
    fn emails_inside_plain_strings() {
        let text =
            r#"{"note":"reach me at bob@example.org","to":"bob@example.org","a":"@example.org","b":"a@b","c":"a@b.c@d.e","d":"x@@y.z"}"#;
        assert_eq!(
            ok(text),
            (
                r#"{"note":"reach me at bob@example.org","to":"***@example.org","a":"@example.org","b":"a@b","c":"***@b.c@d.e","d":"***@@y.z"}"#.into(),
                "3".into()
            )
        );
        // An e-mail field keeps the domain even if the value has none.
        assert_eq!(ok(r#"{"email":"nobody"}"#).0, r#"{"email":"***"}"#);
        let long = format!(r#"["{}@example.org"]"#, "u".repeat(40));
        assert_eq!(ok(&long).0, r#"["***@example.org"]"#);
    }

    #[test]
    fn invalid_json_errors() {
        let at = |n: usize| Err(format!("payload is not valid JSON at byte {n}"));
        assert_eq!(redact("", None), at(0));
        assert_eq!(redact("  ", None), at(2));
        assert_eq!(redact(r#"{"a":1,}"#, None), at(7));
        assert_eq!(redact(r#"{"a" 1}"#, None), at(5));
        assert_eq!(redact(r#"{"a":}"#, None), at(5));
        assert_eq!(redact("[1 2]", None), at(3));
        assert_eq!(redact("[1,]", None), at(3));
        assert_eq!(redact(r#"{"a":tru}"#, None), at(8));
        assert_eq!(redact(r#"{"a":"x}"#, None), at(5));
        assert_eq!(redact(r#"{"a_b":"x"#, None), at(7));
        assert_eq!(redact(r#"{"a_b"#, None), at(1));
        assert_eq!(redact(r#"["x\"#, None), at(1));
        assert_eq!(redact("{1:2}", None), at(1));
        assert_eq!(redact("{} x", None), Err("payload is not valid JSON: trailing characters".into()));
        // Escapes are checked where the text is needed: names, personal
        // values, strings with an `@`.
        // (`\@` hides its `@` from the scan, but not from the check.)
        for bad in [r#"{"e\q":1}"#, r#"{"name":"\x"}"#, r#"["a@b.c\u12"]"#, r#"["a\@b.c"]"#] {
            let e = redact(bad, None).unwrap_err();
            assert!(e.starts_with("payload is not valid JSON: "), "{bad}: {e}");
        }
    }
}
