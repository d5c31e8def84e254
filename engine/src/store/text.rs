//! Free text as stored: any string (and any byte string) made storable in
//! both databases, losslessly.
//!
//! PostgreSQL's `text` refuses U+0000, so a receiver answering `ok\0tail`,
//! or a script skipping with a NUL in its reason, would make the write fail
//! and leave the row with no state at all. Free-text values (names,
//! descriptions, reasons, errors, bodies) are therefore encoded on the way
//! in and decoded on the way out, the same way on both backends:
//!
//! | value                  | stored as        |
//! |------------------------|------------------|
//! | U+0000                 | U+FFFF `0`       |
//! | U+FFFF (the escape)    | U+FFFF `F`       |
//! | byte not valid UTF-8   | U+FFFF `x` `HH`  |
//!
//! U+FFFF is a noncharacter: valid UTF-8 that both databases store, but
//! that text practically never holds, so the common case costs a scan and
//! no allocation. The encoding works character by character, so equality
//! and prefixes of encoded values are those of the originals.
//!
//! JSON made by serde_json needs none of this (it escapes control
//! characters), and no column is `jsonb` (which refuses `\u0000`).

use std::borrow::Cow;

const ESCAPE: char = '\u{FFFF}';

/// `raw` as stored.
pub fn encode(raw: &str) -> Cow<'_, str> {
    // Two byte searches (`memchr`), not a walk char by char: bodies pass
    // here on the way to the store's one writer.
    if !raw.as_bytes().contains(&0) && !raw.contains(ESCAPE) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 8);
    push_escaped(&mut out, raw);
    Cow::Owned(out)
}

/// Encodes an owned value in place (no allocation when nothing is escaped).
pub fn encode_owned(raw: &mut String) {
    if let Cow::Owned(encoded) = encode(raw) {
        *raw = encoded;
    }
}

/// Encodes an optional owned value in place.
pub fn encode_opt(raw: &mut Option<String>) {
    if let Some(raw) = raw {
        encode_owned(raw);
    }
}

/// Bytes that may not be UTF-8, as stored: valid runs as [`encode`]d text,
/// each other byte escaped.
pub fn encode_bytes(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(text) => encode(text),
        Err(_) => {
            let mut out = String::with_capacity(raw.len() + 16);
            for chunk in raw.utf8_chunks() {
                push_escaped(&mut out, chunk.valid());
                for b in chunk.invalid() {
                    out.push(ESCAPE);
                    out.push('x');
                    out.push_str(&format!("{b:02X}"));
                }
            }
            Cow::Owned(out)
        }
    }
}

fn push_escaped(out: &mut String, raw: &str) {
    for c in raw.chars() {
        match c {
            '\0' => {
                out.push(ESCAPE);
                out.push('0');
            }
            ESCAPE => {
                out.push(ESCAPE);
                out.push('F');
            }
            c => out.push(c),
        }
    }
}

/// A stored value as it was written; a byte escape (from [`encode_bytes`])
/// reads as U+FFFD, as a lossy UTF-8 conversion would show it.
pub fn decode(stored: String) -> String {
    if !stored.contains(ESCAPE) {
        return stored;
    }
    let bytes = decode_bytes(stored);
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The bytes a stored value was made from by [`encode_bytes`] (or
/// [`encode`]). A stray escape (never written by sluice) is kept as is.
pub fn decode_bytes(stored: String) -> Vec<u8> {
    if !stored.contains(ESCAPE) {
        return stored.into_bytes();
    }
    let mut out = Vec::with_capacity(stored.len());
    let mut rest = stored.as_str();
    while let Some(at) = rest.find(ESCAPE) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let after = &rest[at + ESCAPE.len_utf8()..];
        let (decoded, used): (Vec<u8>, usize) = match after.as_bytes() {
            [b'0', ..] => (vec![0], 1),
            [b'F', ..] => (ESCAPE.to_string().into_bytes(), 1),
            [b'x', hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                (vec![u8::from_str_radix(&after[1..3], 16).unwrap_or(0)], 3)
            }
            _ => (ESCAPE.to_string().into_bytes(), 0),
        };
        out.extend_from_slice(&decoded);
        rest = &after[used..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Whether a stored value holds bytes that are not UTF-8.
pub fn holds_non_utf8(stored: &str) -> bool {
    stored.contains("\u{FFFF}x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_stored_as_is_without_allocating() {
        for s in ["", "hello", "ünïcödé ✓", "\u{FFFE}"] {
            assert!(matches!(encode(s), Cow::Borrowed(_)), "{s:?}");
            assert_eq!(decode(s.to_owned()), s);
        }
    }

    #[test]
    fn nul_and_the_escape_round_trip_and_store_without_nul() {
        for s in ["ok\0tail", "\0", "\0\0", "\u{FFFF}", "\u{FFFF}0", "a\u{FFFF}F\0x41", "\u{FFFF}x41", "end\u{FFFF}"] {
            let stored = encode(s).into_owned();
            assert!(!stored.contains('\0'), "{s:?} stored as {stored:?}");
            assert_eq!(decode(stored.clone()), s);
            assert_eq!(decode_bytes(stored), s.as_bytes());
        }
        assert_eq!(encode("ok\0tail"), "ok\u{FFFF}0tail");
    }

    #[test]
    fn prefixes_and_equality_are_kept() {
        let (a, b) = ("na\0me", "\u{FFFF}");
        assert_eq!(encode(&format!("{a}{b}")), format!("{}{}", encode(a), encode(b)));
        assert_ne!(encode("\0"), encode("\u{FFFF}"));
    }

    #[test]
    fn bytes_that_are_not_utf8_round_trip() {
        let cases: [&[u8]; 5] = [b"ok\xff\xfe tail", b"\x00\xc3", b"\xef\xbf\xbf\xff", b"plain", b"\xe2\x9c"];
        for raw in cases {
            let stored = encode_bytes(raw).into_owned();
            assert!(!stored.contains('\0'));
            assert_eq!(decode_bytes(stored.clone()), raw, "{raw:?}");
            assert_eq!(holds_non_utf8(&stored), std::str::from_utf8(raw).is_err(), "{raw:?}");
            assert_eq!(decode(stored), String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn a_stray_escape_is_kept() {
        assert_eq!(decode("a\u{FFFF}".to_owned()), "a\u{FFFF}");
        assert_eq!(decode("a\u{FFFF}xZZ".to_owned()), "a\u{FFFF}xZZ");
    }
}
