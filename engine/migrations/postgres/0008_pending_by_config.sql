-- A configuration's oldest pending delivery, for the console's overview and
-- the backlog's age: delivery ids sort by creation time, so the first entry
-- of this index is the oldest. Only pending rows are in it (deliveries
-- leave it when they settle), so it stays as small as the backlog.
CREATE INDEX deliveries_pending ON deliveries (config_id, id) WHERE status = 'pending';
