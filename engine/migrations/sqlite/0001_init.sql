-- sluice schema, SQLite. Times are Unix milliseconds (UTC).

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    monthly_quota INTEGER,
    operator      INTEGER NOT NULL DEFAULT 0, -- the first tenant: its admins manage tenants
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,          -- space-separated
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE scripts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    wit_version TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX scripts_tenant ON scripts (tenant_id, id);

CREATE TABLE configurations (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    enabled    INTEGER NOT NULL,
    script_id  TEXT REFERENCES scripts(id),
    spec       TEXT NOT NULL,          -- the validated configuration, JSON
    disabled_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX configurations_tenant ON configurations (tenant_id, id);
CREATE INDEX configurations_script ON configurations (script_id);

CREATE TABLE event_types (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    description TEXT,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;

CREATE TABLE usage (
    tenant_id TEXT NOT NULL,
    month     TEXT NOT NULL,           -- YYYY-MM, UTC
    events    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, month)
) WITHOUT ROWID;

CREATE TABLE events (
    seq               INTEGER PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    id                TEXT NOT NULL,
    type              TEXT NOT NULL,
    organization_unit TEXT NOT NULL,
    occurred_at_ns    INTEGER NOT NULL,
    received_at       INTEGER NOT NULL,
    source            TEXT,            -- JSON
    related           TEXT,            -- JSON array
    payload           TEXT NOT NULL,
    routed            INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, id)
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_unrouted ON events (routed) WHERE routed = 0;

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES events(seq),
    config_id       TEXT NOT NULL,
    config_version  INTEGER NOT NULL,
    status          TEXT NOT NULL,     -- pending | filtered | script_error | succeeded | failed
    reason          TEXT,
    error_kind      TEXT,
    script_logs     TEXT,              -- JSON
    body            TEXT,              -- the script's replacement body, if any
    headers         TEXT,              -- JSON: headers the script added
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,           -- while a node is sending it
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_config ON deliveries (config_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE attempts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id),
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    method           TEXT NOT NULL,
    uri              TEXT NOT NULL,
    response_status  INTEGER,
    outcome          TEXT NOT NULL,    -- succeeded | retry | failed
    error            TEXT,
    request_headers  TEXT NOT NULL,    -- JSON, secrets redacted
    response_headers TEXT              -- JSON
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_tenant ON attempts (tenant_id, id);

-- Bodies are kept apart: they are large and have a shorter retention.
CREATE TABLE attempt_payloads (
    attempt_id    TEXT PRIMARY KEY REFERENCES attempts(id),
    request_body  TEXT,
    response_body TEXT,
    created_at    INTEGER NOT NULL
);
