-- Routing state out of the event row: an event waits for routing as a row
-- of `unrouted`, deleted when its decisions are recorded. Marking the
-- (wide) event row instead wrote its page to the log a second time, and on
-- PostgreSQL made a new version of it with an entry in each of its indexes.
CREATE TABLE unrouted (seq INTEGER PRIMARY KEY);
INSERT INTO unrouted (seq) SELECT seq FROM events WHERE routed = 0;
DROP INDEX events_unrouted;
ALTER TABLE events DROP COLUMN routed;
