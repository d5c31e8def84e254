-- The retry poller's claim read every pending delivery due so far, the
-- ones being sent (leased, their attempt in flight) included, only to skip
-- them: at full rate that is every delivery in flight, on every poll, on
-- the writer. Pending deliveries are now indexed apart: those waiting for
-- an attempt by when it is due, those leased by when their lease ends.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'pending' AND lease_until IS NOT NULL;
