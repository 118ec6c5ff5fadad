-- The next claimable delivery is looked for webhook by webhook (each one's lowest pending
-- position), not by walking every pending delivery in log order: with a backlog behind a
-- webhook at its concurrency limit, that walk visited the whole backlog on every claim.
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, event_seq) WHERE status = 'pending';
-- The walk's index; nothing reads it any more.
DROP INDEX deliveries_due;
