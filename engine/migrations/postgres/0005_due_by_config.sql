-- The retry poller's claim walked every due delivery in time order and
-- dropped those of configurations it must leave alone (their send queue
-- full, their breaker open). A receiver down for an hour leaves all its
-- deliveries due: every poll walked that whole backlog, on the writer, and
-- everyone's ingest slowed with it. Waiting deliveries are now indexed by
-- configuration first: the claim reads, per configuration it may claim
-- for, only the first few that are due.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (config_id, next_attempt_at) WHERE status = 'pending' AND lease_until IS NULL;
