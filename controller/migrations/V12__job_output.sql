-- A job's output, kept whole (up to the agent's cap) while it runs: the
-- pieces each agent sends over HTTP (POST /api/agents/output), numbered per
-- (job, shard, attempt). The key makes a retried piece change nothing, and
-- the cascade makes retention of output follow its job's.
CREATE TABLE job_output (
    job_id      uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    shard_index integer NOT NULL CHECK (shard_index BETWEEN 0 AND 63),
    attempt     integer NOT NULL CHECK (attempt >= 0),
    seq         bigint NOT NULL CHECK (seq >= 0),
    stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data        bytea NOT NULL,
    truncated   boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, shard_index, attempt, seq)
);
