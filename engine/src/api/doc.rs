//! The OpenAPI document: what the handlers' `#[utoipa::path]` annotations
//! and view types generate, completed with what they cannot say (the
//! security scheme, the error answer shared by every operation, and the
//! hand-written schemas of the two inputs whose parsing lives in the model:
//! configurations and events).
//!
//! It must never describe an operation by hand: an operation exists in the
//! document because a resource's `router()` routes it.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::{Info, OpenApi, OpenApiBuilder, RefOr, Schema};

use super::views::ErrorBody;

/// What every document starts from.
pub fn base() -> OpenApi {
    OpenApiBuilder::new().info(Info::new("sluice", env!("CARGO_PKG_VERSION"))).build()
}

/// The generated document, completed. Each operation's one security
/// requirement is also shown as `x-scope`; public ones say `security: []`.
pub fn finish(generated: OpenApi) -> Value {
    let mut doc = serde_json::to_value(&generated).unwrap_or_default();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
            let scope = op["security"][0]["bearer"][0].as_str().map(str::to_owned);
            let responses = &mut op["responses"];
            if let Some(scope) = &scope {
                // What every operation behind a key may answer besides its own
                // errors; each is the `Error` body with the code named.
                responses["401"] = error_answer("no key, or an unknown or revoked one: `unauthorized`");
                responses["403"] = error_answer(&format!("the key lacks the `{scope}` scope: `forbidden`"));
                responses["503"] = error_answer(
                    "the database cannot take writes or be reached just now (`store_unavailable`), or the server is shutting \
                     down (`shutting_down`): retry after `Retry-After` seconds",
                );
                responses["503"]["headers"] =
                    json!({"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}});
            }
            responses["default"] = error_answer("error: `code` says which, `message` why, `field` the request's field at fault");
            match scope {
                Some(scope) => op["x-scope"] = json!(scope),
                None => op["security"] = json!([]),
            }
        }
    }
    doc["security"] = json!([{"bearer": []}]);
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    let schemas = &mut doc["components"]["schemas"];
    schemas["Error"] = serde_json::to_value(<ErrorBody as utoipa::PartialSchema>::schema()).unwrap_or_default();
    schemas["ConfigurationInput"] = configuration_input();
    schemas["EventInput"] = event_input();
    doc
}

/// An answer carrying the [`ErrorBody`].
fn error_answer(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// Names a hand-written schema in annotations (`request_body =
/// ConfigurationInput`); [`finish`] puts the schema itself in place.
macro_rules! hand_written {
    ($($name:ident),*) => {$(
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::Object(Default::default()))
            }
        }
        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

hand_written!(ConfigurationInput, EventInput);

/// One event as a service posts it.
fn event_input() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["type", "occurred_at", "payload"],
        "properties": {
            "id": {"type": "string", "description": "the producer's idempotency id: a repeat within the tenant is answered `duplicate` and stored once; generated when left out"},
            "type": {"type": "string", "description": "e.g. `order.paid`"},
            "organization_unit": {"type": "string", "description": "a path, e.g. `emea/nl/store-12`; the root when left out"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "source": {"type": "object", "additionalProperties": false, "properties": {
                "application": {"type": "string"}, "user": {"type": "string"},
            }},
            "related": {"type": "array", "items": {"type": "string"}, "description": "ids of related events"},
            "payload": {"description": "any JSON value, kept byte for byte as posted"},
        },
    })
}

/// The configuration as an admin writes it (`post` and `put`).
fn configuration_input() -> Value {
    let secret = |description: &str| json!({"type": "string", "writeOnly": true, "description": description});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "endpoint", "event_types"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "unique in the tenant"},
            "description": {"type": "string"},
            "endpoint": {"type": "string", "format": "uri", "description": "http(s); private, loopback and link-local addresses are refused unless the instance allows them"},
            "event_types": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "exact (`order.paid`), prefix (`order.*`) or all (`*`)"},
            "organization_units": {"type": "object", "additionalProperties": false, "properties": {
                "include": {"type": "array", "items": {"type": "string"}, "description": "subtrees taken (none: all)"},
                "exclude": {"type": "array", "items": {"type": "string"}, "description": "subtrees left out; wins over include"},
            }},
            "script": {"type": "object", "additionalProperties": false, "required": ["id"], "properties": {
                "id": {"type": "string"},
                "params": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
            "authorization": {"oneOf": [
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "none"}}},
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "bearer"}, "token": secret("sent as `Authorization: Bearer {token}`")}},
                {"type": "object", "required": ["type"], "properties": {"type": {"const": "token"}, "token": secret("sent as `Authorization: {token}`")}},
                {"type": "object", "required": ["type"], "properties": {
                    "type": {"const": "client_certificate"},
                    "certificate_pem": {"type": "string", "description": "the chain, leaf first"},
                    "private_key_pem": secret("the certificate's key"),
                    "pkcs12_base64": secret("instead of the PEM pair: a PKCS#12 file, converted on save"),
                    "password": secret("the PKCS#12 file's password; not kept"),
                }, "description": "mutual TLS; checked on save (parses, key matches, not expired); answers show certificate_expires_at and certificate_expiring (< 30 days)"},
            ]},
            "tls": {"oneOf": [
                {"type": "object", "required": ["trust"], "properties": {"trust": {"const": "system"}}},
                {"type": "object", "required": ["trust", "ca_pem"], "properties": {"trust": {"const": "custom_ca"}, "ca_pem": {"type": "string"}}},
                {"type": "object", "required": ["trust"], "properties": {"trust": {"const": "trust_all"}}, "description": "testing only; answers flag it with trust_all_tls"},
            ]},
            "signing": {"type": "object", "additionalProperties": false, "properties": {
                "profiles": {"type": "array", "items": {"enum": ["standard_webhooks", "x_signature"]}, "default": ["standard_webhooks"]},
                "secret": secret("`whsec_` and base64 of 24 to 64 bytes; generated when left out"),
            }},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "values of credential-like names (…key, …token, authorization, …) are shown as `***`; `***` sent back keeps the stored value; left out on `put`, the stored headers are kept"},
            "query": {"type": "object", "additionalProperties": {"type": "string"}, "description": "added to the endpoint's query; credential-like names are shown as `***` in answers and logs, and `***` sent back keeps the stored value; left out on `put`, the stored parameters are kept"},
            "response_mode": {"enum": ["loose", "normal"], "default": "loose", "description": "loose: any 2xx; normal: 200 with the body [ACK]"},
            "deadline": {"oneOf": [{"type": "integer", "description": "ms"}, {"type": "string", "description": "ISO 8601, e.g. PT2S"}], "description": "capped at 5000 ms"},
            "retry": {"type": "object", "additionalProperties": false, "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
                "initial_backoff_ms": {"type": "integer", "minimum": 1, "default": 1000},
                "max_backoff_ms": {"type": "integer", "maximum": 86_400_000, "default": 3_600_000},
            }},
            "rate_limit": {"type": "object", "additionalProperties": false, "required": ["per_second"], "properties": {
                "per_second": {"type": "integer", "minimum": 1, "maximum": 100_000},
            }},
            "max_in_flight": {"type": "integer", "minimum": 1, "maximum": 256, "default": 64},
            "auto_disable": {"type": "object", "additionalProperties": false, "required": ["after_failures"], "properties": {
                "after_failures": {"type": "integer", "minimum": 0, "default": 50, "description": "0: never"},
                "failing_for_ms": {"type": "integer", "minimum": 0, "maximum": 2_592_000_000_u64, "default": 86_400_000},
            }},
        },
    })
}
