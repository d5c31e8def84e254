-- A node taken for dead (its row deleted, its claims and leases released)
-- that speaks again does so in a new epoch: what it handed on in the old one
-- is not written, as other nodes have taken its events over.
ALTER TABLE nodes ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
