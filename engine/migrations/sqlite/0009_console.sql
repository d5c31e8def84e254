-- The console. Keys may expire: a console session opened from a portal
-- link is a key of its own, bound to one tenant and the scopes the link
-- named, that stops working at `expires_at` (Unix ms; NULL: never).
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;

-- Portal links: single-use, short-lived. Only the token's sha256 is kept;
-- redeeming one stamps `used_at` and makes the session key in the same
-- transaction, so a link opens at most one session.
CREATE TABLE portal_links (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    hash        TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,          -- space-separated
    session_ms  INTEGER NOT NULL,       -- how long the session it opens lasts
    expires_at  INTEGER NOT NULL,
    created_by  TEXT,                   -- the API key that asked for it
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    session_key TEXT                    -- the key the session runs on
);
CREATE INDEX portal_links_tenant ON portal_links (tenant_id, id);
