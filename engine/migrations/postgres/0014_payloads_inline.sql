-- An attempt's request and response bodies live in its own row: a payload
-- row apart cost every attempt one more heap tuple and key index entry.
-- The payload purge now sets them to NULL, walking each tenant's attempts
-- in key order (tenant, then id: UUIDv7, creation order) from where its
-- last walk stopped, kept in `payload_purges`.
ALTER TABLE attempts ADD COLUMN request_body TEXT, ADD COLUMN response_body TEXT;
UPDATE attempts a SET request_body = p.request_body, response_body = p.response_body
FROM attempt_payloads p WHERE p.attempt_id = a.id;
DROP TABLE attempt_payloads;
CREATE TABLE payload_purges (
    tenant_id TEXT COLLATE "C" PRIMARY KEY,
    purged_to TEXT COLLATE "C" NOT NULL  -- the last attempt id walked past
);
