-- When the next pending delivery falls due (idle workers sleep until then): read from this
-- index's first entries instead of sorting every pending delivery, which took tens of
-- milliseconds per idle worker with a backlog of 20,000.
CREATE INDEX deliveries_next_due ON deliveries (next_attempt_at) WHERE status = 'pending';
