-- A job's events, shards and outbox rows are written on its hot path, and
-- each foreign key on them cost a check on every row written: a query of
-- the referenced row, locking it (FOR KEY SHARE, a WAL record, and a
-- MultiXact when several transactions lock the same worker's row). About
-- nine checks per job, 10 µs each for the job's row and 5 for the worker's
-- (EXPLAIN ANALYZE of 10,000 event inserts: 102 and 47 ms of triggers
-- against 60 ms for the inserts themselves).
--
-- Every such row is written by a statement that has just read, locked or
-- changed its job's row (and, for a worker id, checked the worker's
-- registration), so the checks found nothing the controller had not. What
-- the keys did on delete is kept, once per statement instead of per row:
-- deleting jobs deletes their events, shards and outbox rows; deleting a
-- worker leaves its history without a name.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey,
                       DROP CONSTRAINT job_events_worker_id_fkey;
ALTER TABLE job_shards DROP CONSTRAINT job_shards_job_id_fkey,
                       DROP CONSTRAINT job_shards_worker_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_job_id_fkey;

CREATE FUNCTION jobs_take_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_events e USING gone g WHERE e.job_id = g.job_id;
    DELETE FROM job_shards s USING gone g WHERE s.job_id = g.job_id;
    DELETE FROM outbox o USING gone g WHERE o.job_id = g.job_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_take_children AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION jobs_take_children();

CREATE FUNCTION workers_leave_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_shards s SET worker_id = NULL FROM gone g WHERE s.worker_id = g.worker_id;
    UPDATE job_events e SET worker_id = NULL FROM gone g WHERE e.worker_id = g.worker_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER workers_leave_history AFTER DELETE ON workers
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION workers_leave_history();
