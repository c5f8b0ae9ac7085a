-- Each shard of one attempt runs on a different worker (the contract's
-- multi-worker rule), enforced by the database as well as by claims.
CREATE UNIQUE INDEX job_shards_one_per_worker ON job_shards (job_id, attempt, worker_id);
-- The reaper looks up a lost worker's running shards.
CREATE INDEX job_shards_running ON job_shards (job_id, attempt) WHERE status = 'running';
