-- Job dependencies (docs/api.md, "Dependencies"): `job_id` runs only after
-- `depends_on` has finished. Both ends are the same user's jobs. An edge
-- goes with either of its jobs (retention deletes finished jobs only, and
-- a finished dependency has already released its dependents).
CREATE TABLE job_dependencies (
    job_id     uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    depends_on uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on),
    CHECK (job_id <> depends_on)
);
-- A finished job finds its dependents by this index.
CREATE INDEX job_dependencies_depends_on ON job_dependencies (depends_on);

-- deps_waiting: how many of the job's dependencies have not finished yet.
-- A pending job with deps_waiting > 0 has no dispatch in the outbox; the
-- transaction that brings it to 0 writes the dispatch (exactly once: the
-- decrement is an UPDATE of the dependent's row, so concurrent finishes of
-- its dependencies are applied one after the other, and only one sees 0).
-- run_on_failure: a dependency that failed, was cancelled or timed out
-- counts as finished instead of cancelling the job.
ALTER TABLE jobs
    ADD COLUMN deps_waiting integer NOT NULL DEFAULT 0,
    ADD COLUMN run_on_failure boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD CONSTRAINT jobs_deps_waiting_nonnegative CHECK (deps_waiting >= 0) NOT VALID;
