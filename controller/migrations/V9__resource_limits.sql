-- Per-job resource limits and what each agent offers and enforces. Every
-- column is nullable: null is "no limit of its own" (a job then gets its
-- agent's default), and rows written before this migration keep meaning
-- that. CPU is kept in thousandths of a CPU (0.5 CPU is 500), so an
-- integer holds it exactly. The bounds are the contract's
-- (shared/src/api/limits.rs).
ALTER TABLE jobs
    ADD COLUMN memory_mb  integer CHECK (memory_mb BETWEEN 4 AND 1048576),
    ADD COLUMN cpu_millis integer CHECK (cpu_millis BETWEEN 10 AND 1024000),
    ADD COLUMN max_pids   integer CHECK (max_pids BETWEEN 1 AND 4194304);

-- An agent's offer (same bounds as a job's limits) and its isolation
-- report as it registered them ({"job_user", "cgroup", "disabled"}); null
-- isolation is an agent that predates the report.
ALTER TABLE workers
    ADD COLUMN memory_mb  integer CHECK (memory_mb BETWEEN 4 AND 1048576),
    ADD COLUMN cpu_millis integer CHECK (cpu_millis BETWEEN 10 AND 1024000),
    ADD COLUMN max_pids   integer CHECK (max_pids BETWEEN 1 AND 4194304),
    ADD COLUMN isolation  jsonb CHECK (isolation IS NULL OR jsonb_typeof(isolation) = 'object');
