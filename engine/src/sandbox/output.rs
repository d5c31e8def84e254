//! A script's decision, checked: the body must be JSON, headers must be
//! well-formed and must not touch what the engine owns (authentication,
//! signatures, framing), and the whole must fit the output cap.
//!
//! It works on the engine's own [`Proposed`] decision, which every WIT
//! version's module converts its `decision` into, so that the rules are the
//! same for every version. It must never know a WIT version's types.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Limits, ScriptError};
use crate::model::headers::is_reserved_header;

/// Most headers a script may add.
pub const MAX_HEADERS: usize = 64;

/// One header a script added, name lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A checked decision.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Do not deliver; the reason is recorded.
    Skip { reason: String },
    /// Deliver, with an optional replacement body and extra headers.
    Deliver {
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Box<RawValue>>,
        headers: Vec<Header>,
    },
}

impl Decision {
    pub fn is_deliver(&self) -> bool {
        matches!(self, Self::Deliver { .. })
    }
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Skip { reason: a }, Self::Skip { reason: b }) => a == b,
            (Self::Deliver { body: a, headers: ha }, Self::Deliver { body: b, headers: hb }) => {
                a.as_ref().map(|r| r.get()) == b.as_ref().map(|r| r.get()) && ha == hb
            }
            _ => false,
        }
    }
}

/// A decision as the script returned it, not yet checked.
#[derive(Debug)]
pub(super) enum Proposed {
    Skip {
        reason: String,
    },
    /// `body` is meant to be JSON text; `headers` are (name, value).
    Deliver {
        body: Option<String>,
        headers: Vec<(String, String)>,
    },
}

pub(super) fn check(decision: Proposed, limits: &Limits) -> Result<Decision, ScriptError> {
    let invalid = |reason: String| ScriptError::InvalidOutput { reason };
    let size = match &decision {
        Proposed::Skip { reason } => reason.len(),
        Proposed::Deliver { body, headers } => {
            body.as_ref().map_or(0, String::len) + headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
        }
    };
    if size > limits.output_bytes {
        return Err(ScriptError::OutputTooLarge { size, limit: limits.output_bytes });
    }
    match decision {
        Proposed::Skip { reason } => Ok(Decision::Skip { reason }),
        Proposed::Deliver { body, headers } => {
            let body = body.map(|text| RawValue::from_string(text).map_err(|e| invalid(format!("body is not JSON: {e}")))).transpose()?;
            if headers.len() > MAX_HEADERS {
                return Err(invalid(format!("{} headers, more than {MAX_HEADERS}", headers.len())));
            }
            let headers = headers.into_iter().map(|(name, value)| check_header(name, value).map_err(invalid)).collect::<Result<_, _>>()?;
            Ok(Decision::Deliver { body, headers })
        }
    }
}

fn check_header(name: String, value: String) -> Result<Header, String> {
    // RFC 9110 token characters.
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_tchar) {
        return Err(format!("header name {name:?} is not a valid HTTP token"));
    }
    let name = name.to_ascii_lowercase();
    if is_reserved_header(&name) {
        return Err(format!("header `{name}` is set by the engine and cannot be set by a script"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("value of header `{name}` contains a control character"));
    }
    Ok(Header { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(body: Option<&str>, headers: &[(&str, &str)]) -> Proposed {
        Proposed::Deliver { body: body.map(str::to_owned), headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn accepts_json_body_and_lowercases_headers() {
        let d = check(deliver(Some(r#"{"a":1}"#), &[("X-Store", "12")]), &Limits::default()).unwrap();
        let Decision::Deliver { body, headers } = d else { panic!("expected deliver") };
        assert_eq!(body.unwrap().get(), r#"{"a":1}"#);
        assert_eq!(headers, vec![Header { name: "x-store".into(), value: "12".into() }]);
    }

    #[test]
    fn refuses_bad_output() {
        let limits = Limits { output_bytes: 100, ..Limits::default() };
        let cases = [
            (deliver(Some("not json"), &[]), "invalid_output"),
            (deliver(None, &[("bad header", "x")]), "invalid_output"),
            (deliver(None, &[("x-a", "line\r\nInjected: yes")]), "invalid_output"),
            (deliver(None, &[("Authorization", "Bearer stolen")]), "invalid_output"),
            (deliver(None, &[("webhook-signature", "v1,forged")]), "invalid_output"),
            (deliver(Some(&format!("\"{}\"", "x".repeat(200))), &[]), "output_too_large"),
            (Proposed::Skip { reason: "r".repeat(101) }, "output_too_large"),
        ];
        for (decision, kind) in cases {
            let text = format!("{decision:?}");
            assert_eq!(check(decision, &limits).unwrap_err().kind(), kind, "{text}");
        }
    }
}
