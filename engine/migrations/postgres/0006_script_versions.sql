-- Script versions: uploading under a name a tenant already uses makes that
-- name's next version; older versions stay stored and runnable. Scripts
-- uploaded before under one name are numbered in upload order.
ALTER TABLE scripts ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE scripts ADD COLUMN created_by TEXT;  -- the API key that uploaded it
UPDATE scripts SET version = (SELECT COUNT(*) FROM scripts s
                              WHERE s.tenant_id = scripts.tenant_id AND s.name = scripts.name AND s.id <= scripts.id);
CREATE UNIQUE INDEX scripts_name_version ON scripts (tenant_id, name, version);

-- Which script version, with which parameters, a configuration runs from
-- its version `version` on: a row per change, never updated, kept after
-- the configuration is deleted (its deliveries still name it). A delivery
-- decided under configuration version v ran the newest row with
-- version <= v; that is how a decision is explained later.
CREATE TABLE configuration_scripts (
    config_id  TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    tenant_id  TEXT COLLATE "C" NOT NULL,
    script_id  TEXT,                  -- NULL: no script from this version on
    script_sha256 TEXT,               -- its bytes' hash, kept if the script is deleted
    params     TEXT NOT NULL,         -- JSON object
    changed_at BIGINT NOT NULL,
    changed_by TEXT,                  -- the API key that made the change
    PRIMARY KEY (config_id, version)
);

-- Fuel the script used deciding the delivery (NULL: no script ran).
ALTER TABLE deliveries ADD COLUMN fuel_used BIGINT;
