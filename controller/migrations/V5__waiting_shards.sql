-- A shard that cannot run yet (the claiming agent already runs another
-- shard of its job, and each shard needs a worker of its own) waits in the
-- outbox with a growing delay instead of bouncing between agents; the job
-- counts its deferrals (the delay's exponent) and says why it waits.
ALTER TABLE jobs
    ADD COLUMN deferrals integer NOT NULL DEFAULT 0 CHECK (deferrals >= 0),
    ADD COLUMN waiting_for text;
