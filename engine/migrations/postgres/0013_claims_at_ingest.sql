-- The node that stores an event claims it for its own routing as it
-- inserts the `unrouted` row, so that routing writes nothing to it while
-- rows are handed on; the count of rows that routing awaits travels with
-- them in memory.
ALTER TABLE unrouted DROP COLUMN awaiting;
