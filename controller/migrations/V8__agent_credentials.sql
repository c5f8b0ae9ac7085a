-- Each agent proves who it is with a credential of its own, naming exactly
-- one worker id and issued by an admin. Only a SHA-256 of its secret is
-- kept: the secret is 32 random bytes, so a fast hash is as strong as a
-- slow one and the check stays cheap on every claim. One live credential
-- per worker: issuing a new one revokes the one before.
CREATE TABLE agent_credentials (
    credential_id uuid PRIMARY KEY,
    worker_id     text NOT NULL CHECK (length(worker_id) BETWEEN 1 AND 128),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_by    uuid REFERENCES users (user_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX agent_credentials_one_live ON agent_credentials (worker_id) WHERE revoked_at IS NULL;
CREATE INDEX agent_credentials_by_time ON agent_credentials (created_at DESC, credential_id);

-- A shard remembers which incarnation of its worker runs it, so a claim
-- can tell that the holder restarted since (its generation moved on), and
-- when another agent asked to take it over while its holder still looked
-- alive: the reaper then hands such a shard over instead of failing its
-- job when the holder turns out lost.
ALTER TABLE job_shards
    ADD COLUMN worker_generation  bigint,
    ADD COLUMN takeover_wanted_at timestamptz;
