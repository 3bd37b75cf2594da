-- Per-key limits as one JSON object ({"rpm": 20, "max_concurrent": 4}); a key
-- without limits has '{}'. JSON keeps the schema stable while limits are added.
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
