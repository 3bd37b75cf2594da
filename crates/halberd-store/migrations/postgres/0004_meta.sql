-- Facts about the store itself. `pepper_fingerprint` is an HMAC of a fixed
-- label under the pepper: replicas that share the store check that they hash
-- keys under the same pepper, and the pepper cannot be recovered from it.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
