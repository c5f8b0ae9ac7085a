-- Queue depth over time, for the dashboard's chart (GET /api/stats/timeline):
-- the reaper's leader samples the number of waiting jobs (pending + queued)
-- every few seconds, so the history survives a controller restart and all
-- replicas read the same one. Samples older than two days are deleted by the
-- same pass.
CREATE TABLE queue_depth_samples (
    sampled_at timestamptz PRIMARY KEY DEFAULT now(),
    depth      bigint NOT NULL CHECK (depth >= 0)
);

-- The dashboard's worker page lists the jobs a worker ran
-- (GET /api/jobs/search?worker=...): every shard by worker, not only the
-- running ones that job_shards_worker covers.
CREATE INDEX job_shards_by_worker ON job_shards (worker_id, job_id) WHERE worker_id IS NOT NULL;
