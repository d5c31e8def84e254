-- Each node says it is alive every few seconds (`seen_at`, the database
-- server's clock in Unix ms); the others release the routing claims and
-- delivery leases of a node silent for long, instead of waiting for them
-- to run out.
CREATE TABLE nodes (
    id      TEXT COLLATE "C" PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
