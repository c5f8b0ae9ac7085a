-- job_shards_running (job_id, attempt) WHERE status = 'running' served
-- lookups of a job's shards, which the primary key (job_id, shard_index,
-- attempt) and job_shards_one_per_worker (job_id, attempt, worker_id)
-- serve as well: a job has at most 64 shards an attempt. It cost an index
-- entry on every claim (measured with loadgen --profile: WAL records per
-- job by type).
DROP INDEX IF EXISTS job_shards_running;
