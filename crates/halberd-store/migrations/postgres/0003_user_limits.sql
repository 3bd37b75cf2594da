-- Limits on a user, across all of that user's keys ({"rpm": 100}), in the same
-- JSON shape as api_keys.limits.
CREATE TABLE user_limits (
    user_id    TEXT PRIMARY KEY,
    limits     TEXT NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL
);
