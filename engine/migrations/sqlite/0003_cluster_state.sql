-- Shared with the PostgreSQL schema: compiled scripts, lease owners and
-- failure streaks kept in the store. Only adds.

-- Machine code made at upload; NULL: compile from `bytes`.
ALTER TABLE scripts ADD COLUMN compiled BLOB;

-- Which node holds a delivery's lease (one node with SQLite).
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;

-- Failed attempts in a row per configuration; a success deletes the row.
CREATE TABLE failure_streaks (
    config_id TEXT PRIMARY KEY,
    failures  INTEGER NOT NULL,
    since     INTEGER NOT NULL
) WITHOUT ROWID;
