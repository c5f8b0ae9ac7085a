-- Every registration of a worker id starts a new incarnation of it: its
-- generation. Control messages carry the generation they were queued for,
-- so an agent drops those left in its (durable, per-id) control queue for
-- an earlier incarnation instead of obeying them.
ALTER TABLE workers ADD COLUMN generation bigint NOT NULL DEFAULT 1 CHECK (generation >= 1);

-- A worker's lifecycle: each registration (from is its status before, null
-- for the first; to may equal from, e.g. a paused worker that stays paused)
-- and each status change except the idle/busy flips of load, which
-- heartbeats and claims make for every job and `running_jobs` shows anyway.
-- Gone with its worker, like a job's events.
CREATE TABLE worker_events (
    event_id    bigserial PRIMARY KEY,
    worker_id   text NOT NULL REFERENCES workers (worker_id) ON DELETE CASCADE,
    generation  bigint NOT NULL CHECK (generation >= 1),
    from_status text CHECK (from_status IN
                  ('idle', 'busy', 'paused', 'terminating', 'terminated', 'failed', 'offline')),
    to_status   text NOT NULL CHECK (to_status IN
                  ('idle', 'busy', 'paused', 'terminating', 'terminated', 'failed', 'offline')),
    reason      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX worker_events_worker ON worker_events (worker_id, event_id);

