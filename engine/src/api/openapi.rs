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
    ("post", "/v1/configurations/{id}/rotate-secret", "Rotate the signing secret; the old one signs too for a grace period", "configurations:write", 200),
    ("post", "/v1/configurations/{id}/disable", "Disable a configuration", "configurations:write", 200),
    ("get", "/v1/event-types", "The event types catalog", "configurations:read", 200),
    ("put", "/v1/event-types/{name}", "Describe an event type", "configurations:write", 200),
    ("post", "/v1/events", "Ingest one event or a batch (array)", "events:write", 202),
    ("get", "/v1/events", "List events (type, organization_unit, status, since, until)", "logs:read", 200),
    ("get", "/v1/events/{id}", "Get an event with its deliveries", "logs:read", 200),
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
            },
        },
    })
}
