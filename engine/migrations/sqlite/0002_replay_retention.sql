-- Replays and the retention purge. Data directories already have 0001
-- applied: this file only adds.

-- The delivery a replay was made from (its decision is reused). No foreign
-- key: a delivery and its replays belong to one event and are purged together.
ALTER TABLE deliveries ADD COLUMN replay_of TEXT;

-- Events by arrival: the purge (oldest first) and recovery windows.
CREATE INDEX events_received ON events (received_at);

-- Payloads by age: the payload purge, oldest first.
CREATE INDEX attempt_payloads_created ON attempt_payloads (created_at);
