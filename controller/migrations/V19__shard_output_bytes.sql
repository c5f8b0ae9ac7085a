-- Bytes of output stored for each shard run (the sum of its job_output
-- pieces), kept on the shard's row so that the controller's cap per shard
-- (--max-shard-output-bytes) is checked and raised by one row update: an
-- agent cannot store more than the cap for a shard, whatever it sends and
-- however many requests it sends at once. Shards running at the upgrade
-- start from 0.
ALTER TABLE job_shards ADD COLUMN output_bytes bigint NOT NULL DEFAULT 0;
