-- Routing state out of the event row: an event waits for routing as a row
-- of `unrouted`, deleted when its decisions are recorded. Marking the
-- (wide) event row instead made a new version of it, with an entry in each
-- of its indexes, for every event.
CREATE TABLE unrouted (seq BIGINT PRIMARY KEY);
INSERT INTO unrouted (seq) SELECT seq FROM events WHERE NOT routed;
ALTER TABLE events DROP COLUMN routed;
