-- One node routes every event it stores and keeps those in its hands from
-- being routed twice in memory: an unrouted event needs no claim, and the
-- count of rows its routing awaits travels with the rows handed on.
ALTER TABLE unrouted DROP COLUMN claimed_until;
ALTER TABLE unrouted DROP COLUMN awaiting;
