-- The orchestrator's state. Postgres is the source of truth: the database
-- enforces statuses, ranges and relationships itself, so a bug in the
-- controller cannot store what the contract forbids.

CREATE TABLE users (
    user_id       uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (char_length(username) BETWEEN 1 AND 128),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    scopes        text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per user; a user without a row gets the controller's defaults.
-- Deleting a user deletes their limits.
CREATE TABLE quotas (
    user_id             uuid PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    max_workers         integer NOT NULL CHECK (max_workers >= 0),
    max_concurrent_jobs integer NOT NULL CHECK (max_concurrent_jobs >= 0),
    max_queued_jobs     integer NOT NULL CHECK (max_queued_jobs >= 0)
);

CREATE TABLE workers (
    worker_id         text PRIMARY KEY CHECK (worker_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    status            text NOT NULL CHECK (status IN
                        ('idle', 'busy', 'paused', 'terminating', 'terminated', 'failed', 'offline')),
    hostname          text NOT NULL CHECK (char_length(hostname) <= 255),
    capacity          integer NOT NULL CHECK (capacity BETWEEN 1 AND 1024),
    running_jobs      integer NOT NULL DEFAULT 0 CHECK (running_jobs >= 0),
    labels            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    version           text NOT NULL DEFAULT '',
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_status ON workers (status);

CREATE TABLE jobs (
    job_id           uuid PRIMARY KEY,
    status           text NOT NULL CHECK (status IN
                       ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    task_description text NOT NULL CHECK (char_length(task_description) BETWEEN 1 AND 10000),
    required_workers integer NOT NULL DEFAULT 1 CHECK (required_workers BETWEEN 1 AND 64),
    command          text[] CHECK (command IS NULL OR cardinality(command) >= 1),
    priority         smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    labels           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_retries      integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
    timeout_seconds  integer CHECK (timeout_seconds IS NULL OR timeout_seconds > 0),
    idempotency_key  text,
    -- Jobs are history: a user who submitted jobs cannot be deleted.
    submitted_by     uuid NOT NULL REFERENCES users (user_id) ON DELETE RESTRICT,
    created_at       timestamptz NOT NULL DEFAULT now(),
    queued_at        timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    exit_code        integer,
    error            text,
    stdout_tail      text,
    stderr_tail      text,
    CHECK (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at)
);
-- Newest-first listing, with and without a status filter (cursor pagination).
CREATE INDEX jobs_created ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_status_created ON jobs (status, created_at DESC, job_id DESC);
CREATE INDEX jobs_submitter_status ON jobs (submitted_by, status);

-- Which worker runs which shard of which attempt. Gone with its job; a
-- worker that is deleted leaves its history behind without a name.
CREATE TABLE job_shards (
    job_id      uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    shard_index integer NOT NULL CHECK (shard_index BETWEEN 0 AND 63),
    attempt     integer NOT NULL CHECK (attempt >= 0),
    worker_id   text REFERENCES workers (worker_id) ON DELETE SET NULL,
    status      text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timed_out')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    exit_code   integer,
    PRIMARY KEY (job_id, shard_index, attempt)
);
CREATE INDEX job_shards_worker ON job_shards (worker_id) WHERE status = 'running';

-- Every transition of every job, written in the same transaction as the
-- transition itself.
CREATE TABLE job_events (
    event_id    bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    from_status text CHECK (from_status IN
                  ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    to_status   text NOT NULL CHECK (to_status IN
                  ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out')),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker_id   text REFERENCES workers (worker_id) ON DELETE SET NULL,
    reason      text,
    attempt     integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    CHECK (from_status IS DISTINCT FROM to_status)
);
CREATE INDEX job_events_job ON job_events (job_id, event_id);

CREATE TABLE allocations (
    allocation_id uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    job_id        uuid REFERENCES jobs (job_id) ON DELETE SET NULL,
    workers       integer NOT NULL CHECK (workers BETWEEN 1 AND 1024),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'released', 'expired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    released_at   timestamptz,
    CHECK ((status = 'active') = (released_at IS NULL)),
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX allocations_user_active ON allocations (user_id) WHERE status = 'active';

-- One job per (user, key). The request hash tells a retry of the same
-- submission (answer with the first job) from a reuse with another body (409).
CREATE TABLE idempotency_keys (
    user_id      uuid NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    key          text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    job_id       uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Messages that must reach the broker, written in the same transaction as
-- the change that causes them; a relay publishes them (with confirms) and
-- only then sets sent_at. available_at delays retries without a broker plugin.
CREATE TABLE outbox (
    message_id   bigserial PRIMARY KEY,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    payload      jsonb NOT NULL,
    priority     smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    job_id       uuid REFERENCES jobs (job_id) ON DELETE CASCADE,
    available_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0 CHECK (publish_attempts >= 0)
);
CREATE INDEX outbox_unsent ON outbox (available_at, message_id) WHERE sent_at IS NULL;
