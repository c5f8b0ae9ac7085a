-- Autovacuum thresholds for the tables every job churns. Each state change
-- of a job or shard leaves a dead row version, and each dispatch an outbox
-- row deleted at its publisher confirm. Postgres's default waits until a
-- table's dead rows pass 20 % of its live ones: 2,000,000 dead rows in a
-- jobs table that retention keeps at 10,000,000, all walked by every scan
-- that crosses them. Here it is 2 %, and at least 1,000 rows, so a busy
-- table is vacuumed within a naptime or two (the image sets 5 s) of each
-- burst, and analysed as often, so the planner sees it as it grows.
-- Setting these takes only a SHARE UPDATE EXCLUSIVE lock: controllers still
-- on V19 read and write as before while it runs.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000
);
ALTER TABLE job_shards SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000
);
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000
);
