-- The relay deletes a message at its publisher confirm and leaves one whose
-- publish failed for its next pass; nothing ever counted attempts, so the
-- column had no writer and no reader. A replica still on V15 never names it
-- (its inserts leave it to the default), so this is safe during an upgrade.
ALTER TABLE outbox DROP COLUMN publish_attempts;
