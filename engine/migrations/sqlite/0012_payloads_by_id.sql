-- The payload purge reads payloads in id order (attempt ids are UUIDv7:
-- creation order) and takes the old ones among the first; the index by
-- age it walked instead cost every attempt one more B-tree insert and, at
-- each commit, its newest page written to the log again.
DROP INDEX attempt_payloads_created;
