-- Users can be disabled and deleted, and the tokens issued to them taken
-- back. Every token carries the user's token_version at login (claim
-- `ver`); disabling, deleting or resetting the password bumps it, so every
-- token issued before stops working (the API compares the two on each
-- request, through a cache of a few seconds).
ALTER TABLE users
    ADD COLUMN disabled      boolean NOT NULL DEFAULT false,
    ADD COLUMN deleted_at    timestamptz,
    ADD COLUMN token_version bigint NOT NULL DEFAULT 0 CHECK (token_version >= 0),
    -- A deleted user is disabled too, so no check can forget one of them.
    ADD CONSTRAINT users_deleted_is_disabled CHECK (deleted_at IS NULL OR disabled);

-- Jobs are history, so a deleted user's row stays (jobs.submitted_by keeps
-- naming it) but its name is free for a new account: names are unique
-- among the users that are not deleted.
ALTER TABLE users DROP CONSTRAINT users_username_key;
CREATE UNIQUE INDEX users_username_live ON users (username) WHERE deleted_at IS NULL;
