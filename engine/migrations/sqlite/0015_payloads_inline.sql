-- An attempt's request and response bodies live in its own row: a payload
-- row apart cost every attempt one more insert (a table and its key index,
-- and a foreign-key lookup). The payload purge now sets them to NULL,
-- walking each tenant's attempts in id order (UUIDv7: creation order) from
-- where its last walk stopped, kept in `payload_purges`.
ALTER TABLE attempts ADD COLUMN request_body TEXT;
ALTER TABLE attempts ADD COLUMN response_body TEXT;
UPDATE attempts SET request_body = p.request_body, response_body = p.response_body
FROM attempt_payloads p WHERE p.attempt_id = attempts.id;
DROP TABLE attempt_payloads;
CREATE TABLE payload_purges (
    tenant_id TEXT PRIMARY KEY,
    purged_to TEXT NOT NULL          -- the last attempt id walked past
) WITHOUT ROWID;
