-- Retention (controller/src/retention.rs): the leading controller deletes
-- finished jobs past their age with everything that names them, idempotency
-- keys past their window, outbox rows sent long enough ago and allocations
-- ended long enough ago, oldest first, a small batch per transaction.
--
-- Deleting a job looks up its rows in every table that references it (the
-- cascades, and the batch's own deletes that count them); without these
-- indexes each deleted job would scan outbox, idempotency_keys and
-- allocations whole. Finished jobs are found through jobs_finished_at (V2).
CREATE INDEX outbox_job ON outbox (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id);
CREATE INDEX allocations_job ON allocations (job_id) WHERE job_id IS NOT NULL;
-- The oldest keys, sent rows and ended allocations first, without a scan.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX allocations_ended ON allocations (released_at) WHERE released_at IS NOT NULL;
