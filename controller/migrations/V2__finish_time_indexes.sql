-- The supervisor's last-minute figures scan recently started and finished
-- jobs; without these they would scan the whole table.
CREATE INDEX jobs_started_at ON jobs (started_at) WHERE started_at IS NOT NULL;
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
