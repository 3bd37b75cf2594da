-- Halberd's own API keys. Only an HMAC of each key is stored; the secret is shown
-- once, at creation or rotation, and never again. The same schema as SQLite's,
-- in Postgres types; JSON columns stay TEXT so both backends read them alike.
CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    user_id           TEXT,
    key_hash          BYTEA NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT,
    revoked_at        BIGINT,
    rotated_to        TEXT,
    allowed_models    TEXT NOT NULL DEFAULT '[]',
    allowed_endpoints TEXT NOT NULL DEFAULT '[]',
    policy            TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    limits            TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX api_keys_user ON api_keys (user_id);

-- Every administrative action: who, what, when, on which key. Never a secret.
CREATE TABLE admin_events (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    key_id  TEXT,
    detail  TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX admin_events_key ON admin_events (key_id);
