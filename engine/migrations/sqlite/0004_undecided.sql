-- A delivery whose script is paused (it used up its budget recently) waits
-- for its decision as a pending row of its own: 1 until the script decided.
ALTER TABLE deliveries ADD COLUMN undecided INTEGER NOT NULL DEFAULT 0;
