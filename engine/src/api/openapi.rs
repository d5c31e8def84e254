//! The OpenAPI document served at `/v1/openapi.json`, built from one table of
//! operations so that it lists exactly what the router serves (a test checks
//! both directions).

use serde_json::{Value, json};

/// (method, path, summary, scope, success status)
pub const OPERATIONS: &[(&str, &str, &str, &str, u16)] = &[
    ("get", "/healthz", "Liveness", "", 200),
    ("get", "/readyz", "Readiness: the store answers", "", 200),
    ("get", "/v1/openapi.json", "This document", "", 200),
    ("post", "/v1/scripts", "Upload a script (application/wasm body, ?name=)", "scripts:write", 201),
    ("get", "/v1/scripts", "List scripts", "configurations:read", 200),
    ("get", "/v1/scripts/{id}", "Get a script", "configurations:read", 200),
    ("delete", "/v1/scripts/{id}", "Delete a script no configuration uses", "scripts:write", 204),
    ("post", "/v1/scripts/{id}/test", "Run a script on a sample event", "scripts:write", 200),
    ("post", "/v1/configurations", "Create a configuration (disabled)", "configurations:write", 201),
    ("get", "/v1/configurations", "List configurations", "configurations:read", 200),
    ("get", "/v1/configurations/{id}", "Get a configuration (ETag: its version)", "configurations:read", 200),
    ("put", "/v1/configurations/{id}", "Replace a configuration (If-Match: version)", "configurations:write", 200),
    ("delete", "/v1/configurations/{id}", "Delete a configuration (If-Match optional)", "configurations:write", 204),
    ("post", "/v1/configurations/{id}/enable", "Enable a configuration", "configurations:write", 200),
    (
        "post",
        "/v1/configurations/{id}/test",
        "Send one event (given or made up) through the configuration's script to its endpoint now; answers with the decision and the attempt, stores nothing",
        "configurations:write",
        200,
    ),
    (
        "post",
        "/v1/configurations/{id}/rotate-secret",
        "Rotate the signing secret; the old one signs too for a grace period",
        "configurations:write",
        200,
    ),
    ("post", "/v1/configurations/{id}/disable", "Disable a configuration", "configurations:write", 200),
    (
        "post",
        "/v1/configurations/{id}/recover",
        "Re-queue failed deliveries of a time window (and events missed while disabled)",
        "configurations:write",
        202,
    ),
    ("get", "/v1/event-types", "The event types catalog", "configurations:read", 200),
    ("put", "/v1/event-types/{name}", "Describe an event type", "configurations:write", 200),
    ("post", "/v1/events", "Ingest one event or a batch (array)", "events:write", 202),
    ("get", "/v1/events", "List events (type, organization_unit, status, since, until)", "logs:read", 200),
    ("get", "/v1/events/{id}", "Get an event with its deliveries", "logs:read", 200),
    ("post", "/v1/events/{id}/replay", "Send an event again, keeping its id", "configurations:write", 202),
    ("get", "/v1/deliveries", "List deliveries (configuration_id, event_id, status, since, until)", "logs:read", 200),
    ("get", "/v1/deliveries/{id}", "Get a delivery", "logs:read", 200),
    ("get", "/v1/attempts", "List attempts (configuration_id, delivery_id, since, until)", "logs:read", 200),
    ("get", "/v1/attempts/{id}", "Get an attempt with its bodies", "logs:read", 200),
    ("post", "/v1/keys", "Create an API key in the caller's tenant", "admin", 201),
    ("get", "/v1/keys", "List the tenant's API keys", "admin", 200),
    ("delete", "/v1/keys/{id}", "Revoke an API key", "admin", 200),
    ("post", "/v1/tenants", "Create a tenant (operator admins)", "admin", 201),
    ("get", "/v1/tenants", "List tenants (operator admins)", "admin", 200),
    ("post", "/v1/tenants/{id}/keys", "Create a key in a tenant (operator admins)", "admin", 201),
];

/// What a summary cannot say: semantics, request bodies and answers of the
/// operations that need them.
fn details(method: &str, path: &str) -> Option<Value> {
    let error_codes = |codes: &str| format!("\n\nError codes: {codes}.");
    match (method, path) {
        ("post", "/v1/events/{id}/replay") => Some(json!({
            "description": format!("{}{}",
                "Creates a new delivery (status `pending`, no attempts, due at once) of the event to each \
                 configuration whose newest delivery of it `succeeded` or `failed`, reusing the body and headers \
                 its script decided then: the script does not run again. The receiver gets the same event id \
                 (`webhook-id`, `idempotency-key`) and can dedupe. Each new delivery names the one it replays in \
                 `replay_of`. Configurations whose newest delivery is `pending`, `filtered` or `script_error`, \
                 or that are now disabled or deleted, are listed in `skipped` with the reason.\n\n\
                 With `configuration_id`, only that configuration: the event must have a delivery to it \
                 (`not_matched` otherwise), it must be enabled, and its newest delivery must not be pending. When \
                 that delivery was `filtered` or `script_error`, the configuration's current script decides again \
                 (it may have been fixed); the new delivery is then sent, filtered or errored accordingly.",
                error_codes("`not_found` (404: no such event or configuration in the tenant), `not_matched` (422), \
                             `event_not_routed`, `configuration_disabled`, `delivery_pending` (409)")),
            "requestBody": {"required": false, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "properties": {"configuration_id": {"type": "string"}},
            }}}},
            "responses": {"202": {"description": "queued", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["event_id", "deliveries", "skipped"],
                "properties": {
                    "event_id": {"type": "string"},
                    "deliveries": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "configuration_id": {"type": "string"},
                        "status": {"enum": ["pending", "filtered", "script_error"]}, "replay_of": {"type": "string"},
                    }}},
                    "skipped": {"type": "array", "items": {"type": "object", "properties": {
                        "configuration_id": {"type": "string"},
                        "reason": {"enum": ["pending", "filtered", "script_error", "configuration_disabled", "configuration_deleted", "superseded"]},
                    }}},
                },
            }}}}},
        })),
        ("post", "/v1/configurations/{id}/recover") => Some(json!({
            "description": format!("{}{}",
                "Works on the events the tenant received from `since` (inclusive) to `until` (exclusive, default \
                 now). Each event whose newest delivery to this configuration `failed` is replayed as by \
                 `POST /v1/events/{id}/replay` (recorded decision, same event id, `replay_of`). With \
                 `include_disabled_period`, events that have no delivery to it at all (they arrived while it was \
                 disabled) and that it selects now (event types, organization units) are routed to it: its script \
                 decides as on ingest, and filtered or errored decisions are recorded like any other. Events \
                 from before the configuration was created are left alone.\n\n\
                 The configuration must be enabled. One call adds at most `max_deliveries` (10,000) deliveries; \
                 `truncated` says more remained: call again with the same window, what was re-queued no longer \
                 qualifies.",
                error_codes("`not_found` (404), `configuration_disabled` (409), `invalid_window` (422: not RFC 3339, \
                             or `since` not before `until`)")),
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false, "required": ["since"],
                "properties": {
                    "since": {"type": "string", "format": "date-time"},
                    "until": {"type": "string", "format": "date-time"},
                    "include_disabled_period": {"type": "boolean", "default": false},
                },
            }}}},
            "responses": {"202": {"description": "queued", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["configuration_id", "since", "until", "failed_requeued", "truncated", "max_deliveries"],
                "properties": {
                    "configuration_id": {"type": "string"},
                    "since": {"type": "string", "format": "date-time"},
                    "until": {"type": "string", "format": "date-time"},
                    "failed_requeued": {"type": "integer"},
                    "disabled_period": {"type": "object", "description": "with include_disabled_period: the new deliveries by decision",
                        "properties": {"pending": {"type": "integer"}, "filtered": {"type": "integer"}, "script_error": {"type": "integer"}}},
                    "truncated": {"type": "boolean"},
                    "max_deliveries": {"type": "integer"},
                },
            }}}}},
        })),
        ("post", "/v1/configurations") | ("put", "/v1/configurations/{id}") => Some(json!({
            "description": "Every field is validated on save. Secrets (tokens, private keys, PKCS#12 passwords, the \
                signing secret) are never shown again, nor are the values of credential-named headers and query \
                parameters (the endpoint's own query included), shown as `***`; on `put`, a secret left out or sent \
                back as `***` keeps the stored one (`headers` or `query` left out keep all stored ones). Credentials \
                in the endpoint's userinfo are refused. The signing secret is generated when not given and shown \
                once in the `post` answer.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConfigurationInput"}}}},
        })),
        ("post", "/v1/configurations/{id}/rotate-secret") => Some(json!({
            "description": "Makes `secret` (or a generated one) the signing secret and shows it once in the answer \
                (`signing.secret`). The replaced secret keeps signing, as a second `v1,` signature, until \
                `signing.previous_secret_expires_at`. If-Match optional.",
            "requestBody": {"required": false, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "secret": {"type": "string", "pattern": "^whsec_", "description": "base64 of 24 to 64 bytes after the prefix"},
                    "grace_period_ms": {"type": "integer", "minimum": 0, "maximum": 604_800_000, "default": 86_400_000},
                },
            }}}},
        })),
        ("post", "/v1/configurations/{id}/test") => Some(json!({
            "description": "Sends one event to the configuration now, enabled or not, through its script: the given \
                one, or one made up that it selects (its first event type, `order.*` giving `order.test`; its first \
                included organization unit). Stores nothing. `decision.status` is `deliver`, `filtered`, \
                `script_error` or `not_selected`; `attempt` is null unless a request was sent.",
            "requestBody": {"required": false, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": false,
                "properties": {"event": {"type": "object", "description": "an event as posted to /v1/events"}},
            }}}},
        })),
        _ => None,
    }
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

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, scope, status) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(Value::Object(more)) = details(method, path) {
            for (k, v) in more {
                match (k.as_str(), v) {
                    ("responses", Value::Object(responses)) => {
                        for (status, response) in responses {
                            op["responses"][status] = response;
                        }
                    }
                    (_, v) => op[k] = v,
                }
            }
        }
        if scope.is_empty() {
            op["security"] = json!([]);
        } else {
            op["x-scope"] = json!(scope);
        }
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "sluice", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "ConfigurationInput": configuration_input(),
            },
        },
    })
}
