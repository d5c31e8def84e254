-- Deliveries handed straight to a sender get their row with their first
-- attempt, not at routing (one insert, settled, instead of an insert and an
-- update that made a new version of the row with an entry in each of its
-- indexes). Until the last of them is written, the event stays in
-- `unrouted`, claimed by its routing node until `claimed_until`; `awaiting`
-- is how many delivery rows the event has when that routing is all
-- written. A claim that runs out (its node died) lets a recovery scan
-- route the event again, adding only the rows that are missing.
ALTER TABLE unrouted ADD COLUMN claimed_until BIGINT, ADD COLUMN claimed_by TEXT, ADD COLUMN awaiting INTEGER;
