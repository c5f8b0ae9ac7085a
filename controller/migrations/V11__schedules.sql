-- Schedules (controller/src/schedules.rs): a job template submitted on a
-- cron expression in a time zone, by the leading controller, through the
-- normal submission (job rows and outbox rows in one transaction).
--
-- `last_tick` is the latest tick handled (fired, caught up, skipped,
-- missed or failed); the leader plans from it, so a restart neither fires
-- a tick again nor forgets the ones missed while no controller ran.
CREATE TABLE schedules (
    schedule_id uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    cron        text NOT NULL,
    timezone    text NOT NULL,
    template    jsonb NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    overlap     text NOT NULL CHECK (overlap IN ('allow', 'skip', 'cancel_previous')),
    catch_up    boolean NOT NULL DEFAULT false,
    owner       uuid NOT NULL REFERENCES users (user_id),
    last_tick   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_owner ON schedules (owner);
CREATE INDEX schedules_enabled ON schedules (last_tick) WHERE enabled;

-- One row per tick handled: the unique key is what makes a tick fire
-- exactly once, whichever replica leads and however often it restarts.
CREATE TABLE schedule_runs (
    schedule_id uuid NOT NULL REFERENCES schedules (schedule_id) ON DELETE CASCADE,
    fire_time   timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('fired', 'caught_up', 'skipped', 'missed', 'failed')),
    job_id      uuid REFERENCES jobs (job_id) ON DELETE SET NULL,
    error       text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule_id, fire_time)
);
-- Retention deletes jobs (their runs' job_id set to NULL through this) and
-- old runs (by their recorded time).
CREATE INDEX schedule_runs_job ON schedule_runs (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX schedule_runs_recorded ON schedule_runs (recorded_at);

ALTER TABLE jobs ADD COLUMN schedule_id uuid REFERENCES schedules (schedule_id) ON DELETE SET NULL;
CREATE INDEX jobs_schedule ON jobs (schedule_id, created_at DESC, job_id DESC) WHERE schedule_id IS NOT NULL;
