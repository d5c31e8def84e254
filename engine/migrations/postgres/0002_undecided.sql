-- A delivery whose script is paused (it used up its budget recently) waits
-- for its decision as a pending row of its own: true until the script decided.
ALTER TABLE deliveries ADD COLUMN undecided BOOLEAN NOT NULL DEFAULT false;
-- A configuration's undecided deliveries by when they are due: few at any
-- time, and brought forward a few at a time when the script is well again.
CREATE INDEX deliveries_undecided ON deliveries (config_id, next_attempt_at) WHERE undecided;
