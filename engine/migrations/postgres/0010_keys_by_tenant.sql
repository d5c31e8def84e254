-- Fewer index entries per delivered event. Deliveries and attempts are
-- keyed by (tenant, id), their lists' order, instead of an id key plus an
-- index by (tenant, id); a delivery's row gets a new version at each state
-- change, with an entry in each of its indexes, so one index fewer saves an
-- entry per version. The foreign keys between events, deliveries, attempts
-- and payloads go: each insert checked its parent and locked its row (a
-- write to the parent's page); the store deletes children before parents.
ALTER TABLE attempt_payloads DROP CONSTRAINT attempt_payloads_attempt_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_seq_fkey;

ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD PRIMARY KEY (tenant_id, id);
DROP INDEX attempts_tenant;

ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE deliveries ADD PRIMARY KEY (tenant_id, id);
DROP INDEX deliveries_tenant;
