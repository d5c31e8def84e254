-- Hosted catchers: test endpoints on the engine itself that record what
-- they receive (the newest 100 requests each) and answer as asked. The URL
-- carries a token; only its sha256 is kept.
CREATE TABLE catchers (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    answer_status BIGINT NOT NULL,
    answer_body   TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX catchers_tenant ON catchers (tenant_id, id);

CREATE TABLE caught_requests (
    id          TEXT PRIMARY KEY,      -- time-ordered
    catcher_id  TEXT NOT NULL REFERENCES catchers(id) ON DELETE CASCADE,
    received_at BIGINT NOT NULL,
    method      TEXT NOT NULL,
    uri         TEXT NOT NULL,
    headers     TEXT NOT NULL,         -- JSON object, as received
    body        TEXT NOT NULL,         -- as received, its first 64 KiB (text encoding of the store)
    body_size   BIGINT NOT NULL         -- the whole body's bytes
);
CREATE INDEX caught_requests_catcher ON caught_requests (catcher_id, id);
