-- Worker pools and label selectors (shared/src/pools.rs, controller/src/db/pools.rs).
--
-- An agent serves one or more pools; a job names one pool and may require
-- labels (its selector). Existing rows take the default pool and no
-- selector, which is exactly how they were routed before: the original
-- jobs queue is the default class's queue.
ALTER TABLE workers ADD COLUMN pools text[] NOT NULL DEFAULT '{default}'
    CHECK (cardinality(pools) BETWEEN 1 AND 16);
ALTER TABLE jobs ADD COLUMN pool text NOT NULL DEFAULT 'default'
    CHECK (pool ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
ALTER TABLE jobs ADD COLUMN selector jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(selector) = 'object');

-- Every job class (pool and selector) ever submitted, and whether the
-- relay has declared its broker queue yet. Agents are told only of
-- declared classes (consuming a queue that does not exist would close
-- their channel). A class is a few bytes and there are few of them, so
-- rows are kept: an agent that joins later still finds the queue.
CREATE TABLE job_classes (
    routing_key text PRIMARY KEY,
    pool        text NOT NULL,
    selector    jsonb NOT NULL CHECK (jsonb_typeof(selector) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    declared_at timestamptz
);
CREATE INDEX job_classes_pool ON job_classes (pool) WHERE declared_at IS NOT NULL;

-- Per-pool quotas (resource manager): how many workers of a pool a user
-- may hold allocated. No row: only the user's overall max_workers limits
-- it. An allocation may name a pool (its workers are of that pool);
-- existing ones name none (any live workers), as before.
CREATE TABLE pool_quotas (
    user_id     uuid NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    pool        text NOT NULL CHECK (pool ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    max_workers integer NOT NULL CHECK (max_workers >= 0),
    PRIMARY KEY (user_id, pool)
);
ALTER TABLE allocations ADD COLUMN pool text
    CHECK (pool IS NULL OR pool ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
CREATE INDEX allocations_pool_active ON allocations (pool) WHERE status = 'active' AND pool IS NOT NULL;
