//! Header and query names with a meaning of their own: the headers the
//! engine sets itself (a script may not), and the names whose values are
//! credentials (shown as `***` in answers and logs), with the URL helpers
//! that redact an endpoint's query without rewriting the rest of it.
//!
//! It owns no state and does no I/O; it must never decide what is sent.

/// What a redacted value reads as.
pub const REDACTED: &str = "***";

/// Headers a script must not set: the engine sets them, and letting a script
/// forge them would break authentication, signing or HTTP framing.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "host",
    "idempotency-key",
    "transfer-encoding",
    "webhook-id",
    "webhook-signature",
    "webhook-timestamp",
    "x-signature",
];

/// Whether `name` (any case) is a header the engine sets itself.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Header or parameter names whose values are credentials: configured
/// ones are shown as [`REDACTED`] and sealed at rest, logged ones redacted.
/// `sig` (signed URLs) and `code` (function keys) count only as whole names.
pub fn is_secret_name(name: &str) -> bool {
    // Header names arrive lowercase already; query parameter names may not.
    let lower;
    let n = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = name.to_ascii_lowercase();
        lower.as_str()
    } else {
        name
    };
    // Every logged header of every attempt comes here, and names are
    // short: one pass over the name, comparing a part only where its first
    // byte matches (`str::contains` would set up a searcher per part).
    const PARTS: [&[u8]; 10] =
        [b"auth", b"token", b"secret", b"key", b"password", b"passwd", b"cookie", b"session", b"credential", b"signature"];
    let b = n.as_bytes();
    let contains = (0..b.len()).any(|i| PARTS.iter().any(|p| p[0] == b[i] && b[i..].starts_with(p)));
    (contains || ["sig", "code"].contains(&n)) && n != "idempotency-key"
}

/// One parameter of a URL's query, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam<'a> {
    /// The name as written (maybe percent-encoded).
    pub raw_name: &'a str,
    /// The name decoded, for [`is_secret_name`].
    pub name: String,
    /// The value as written; `None` for a bare `?flag`.
    pub raw_value: Option<&'a str>,
}

/// `url` split at its query: what comes before the `?`, and the query's
/// parameters as written (everything after the `?`, a fragment included,
/// so that nothing is ever shown unredacted).
pub fn query_params(url: &str) -> (&str, Option<Vec<QueryParam<'_>>>) {
    let Some((base, query)) = url.split_once('?') else { return (url, None) };
    let params = query
        .split('&')
        .map(|piece| {
            let (raw_name, raw_value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (piece, None),
            };
            QueryParam { raw_name, name: percent_decode(raw_name), raw_value }
        })
        .collect();
    (base, Some(params))
}

/// `base?params`, the parameters written back as they are.
pub fn join_query(base: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut out = base.to_owned();
    for (i, (name, value)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// `url` with the value of each credential parameter of its query (by
/// [`is_secret_name`]) shown as [`REDACTED`], everything else as written.
pub fn redact_url(url: &str) -> String {
    let (base, Some(params)) = query_params(url) else { return url.to_owned() };
    let shown: Vec<(&str, Option<&str>)> = params
        .iter()
        .map(|p| (p.raw_name, if is_secret_name(&p.name) && p.raw_value.is_some() { Some(REDACTED) } else { p.raw_value }))
        .collect();
    join_query(base, &shown)
}

/// `%XX` and `+` decoded (as forms and query strings write names).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => match hex::decode(&bytes[i + 1..i + 3]) {
                Ok(b) => {
                    out.extend_from_slice(&b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_recognized() {
        for n in ["Authorization", "X-Api-Key", "x-auth-token", "Cookie", "key"] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["content-type", "idempotency-key", "x-tenant", "store", "zipcode", "design"] {
            assert!(!is_secret_name(n), "{n}");
        }
        for n in ["sig", "Code", "access_token", "apikey"] {
            assert!(is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn credentials_in_an_endpoints_query_are_redacted_and_the_rest_kept_as_written() {
        assert_eq!(redact_url("https://x.example/hook?token=abc&a=b%20c&flag"), "https://x.example/hook?token=***&a=b%20c&flag");
        assert_eq!(
            redact_url("https://x.example/hook?api%5Fkey=abc&sig=s1&code=c1"),
            "https://x.example/hook?api%5Fkey=***&sig=***&code=***"
        );
        assert_eq!(redact_url("https://x.example/hook"), "https://x.example/hook");
        assert_eq!(
            redact_url("https://x.example/h?token=abc#frag"),
            "https://x.example/h?token=***",
            "a fragment never shows a credential"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%aé"), "%aé", "never splits a character");
    }
}
