-- sluice schema, PostgreSQL: the SQLite schema's tables and meaning, for
-- several engine nodes sharing one database. Times are Unix milliseconds
-- (UTC). Ids sort bytewise (cursor pagination and "newest delivery" rely on
-- it), whatever the database's collation: hence COLLATE "C" on id columns.

CREATE TABLE tenants (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    monthly_quota BIGINT,
    operator      BOOLEAN NOT NULL DEFAULT false, -- the first tenant: its admins manage tenants
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,          -- space-separated
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE scripts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    wit_version TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    -- Machine code made by the uploading node, so that other nodes of the
    -- same build load it instead of compiling; NULL: compile from `bytes`.
    compiled    BYTEA,
    created_at  BIGINT NOT NULL
);
CREATE INDEX scripts_tenant ON scripts (tenant_id, id);

CREATE TABLE configurations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    script_id  TEXT COLLATE "C" REFERENCES scripts(id),
    spec       TEXT NOT NULL,          -- the validated configuration, JSON
    disabled_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX configurations_tenant ON configurations (tenant_id, id);
CREATE INDEX configurations_script ON configurations (script_id);

CREATE TABLE event_types (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT COLLATE "C" NOT NULL,
    description TEXT,
    first_seen  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Events ingested per tenant and month, over several rows per month so
-- that concurrent ingests do not queue on one row (a tenant with a quota
-- uses shard 0 only, and takes turns on it).
CREATE TABLE usage (
    tenant_id TEXT COLLATE "C" NOT NULL,
    month     TEXT NOT NULL,           -- YYYY-MM, UTC
    shard     BIGINT NOT NULL,
    events    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month, shard)
);

CREATE TABLE events (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    type              TEXT COLLATE "C" NOT NULL,
    organization_unit TEXT COLLATE "C" NOT NULL,
    occurred_at_ns    BIGINT NOT NULL,
    received_at       BIGINT NOT NULL,
    source            TEXT,            -- JSON
    related           TEXT,            -- JSON array
    payload           TEXT NOT NULL,
    routed            BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (tenant_id, id)
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_unrouted ON events (seq) WHERE NOT routed;
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant_id       TEXT COLLATE "C" NOT NULL,
    event_seq       BIGINT NOT NULL REFERENCES events(seq),
    config_id       TEXT COLLATE "C" NOT NULL,
    config_version  BIGINT NOT NULL,
    status          TEXT NOT NULL,     -- pending | filtered | script_error | succeeded | failed
    replay_of       TEXT COLLATE "C",  -- the delivery whose decision this one reuses
    reason          TEXT,
    error_kind      TEXT,
    script_logs     TEXT,              -- JSON
    body            TEXT,              -- the script's replacement body, if any
    headers         TEXT,              -- JSON: headers the script added
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT,            -- while a node is sending it
    lease_owner     TEXT,              -- which node
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_event ON deliveries (event_seq, config_id, id);
CREATE INDEX deliveries_config ON deliveries (config_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE attempts (
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL,
    delivery_id      TEXT COLLATE "C" NOT NULL REFERENCES deliveries(id),
    number           BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    method           TEXT NOT NULL,
    uri              TEXT NOT NULL,
    response_status  BIGINT,
    outcome          TEXT NOT NULL,    -- succeeded | retry | failed
    error            TEXT,
    request_headers  TEXT NOT NULL,    -- JSON, secrets redacted
    response_headers TEXT              -- JSON
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_tenant ON attempts (tenant_id, id);

-- Bodies are kept apart: they are large and have a shorter retention.
CREATE TABLE attempt_payloads (
    attempt_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES attempts(id),
    request_body  TEXT,
    response_body TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX attempt_payloads_created ON attempt_payloads (created_at);

-- Failed attempts in a row per configuration, counted by every node, for
-- auto-disable and the circuit breaker. A success deletes the row.
CREATE TABLE failure_streaks (
    config_id TEXT COLLATE "C" PRIMARY KEY,
    failures  BIGINT NOT NULL,
    since     BIGINT NOT NULL
);

-- Per configuration, when the next request may start under its rate limit
-- (microseconds on the database's clock, shared by every node).
CREATE TABLE send_slots (
    config_id  TEXT COLLATE "C" PRIMARY KEY,
    next_start BIGINT NOT NULL
);

-- Nodes cache configurations, keys and quotas; a change made through one
-- node tells the others. Sent on commit.
CREATE FUNCTION sluice_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'configurations' THEN
        PERFORM pg_notify('sluice_changes', 'config ' || r.tenant_id || ' ' || r.id);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('sluice_changes', 'key ' || r.tenant_id || ' ' || r.id);
    ELSE
        PERFORM pg_notify('sluice_changes', 'tenant ' || r.id || ' ' || r.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER configurations_changed AFTER INSERT OR UPDATE OR DELETE ON configurations
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_change();
CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_change();
CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_change();
