-- One row per exchange that reached a provider: who, which model, the tokens
-- the provider reported (or Halberd counted, when `estimated`), and the cost in
-- nano-dollars. Budgets are seeded from these rows when counters start empty.
CREATE TABLE usage_records (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id          TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    user_id             TEXT,
    at                  BIGINT NOT NULL,
    api                 TEXT NOT NULL,
    model               TEXT NOT NULL,
    provider            TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cost_nanousd        BIGINT NOT NULL,
    estimated           BOOLEAN NOT NULL,
    outcome             TEXT NOT NULL
);

CREATE INDEX usage_records_key_at ON usage_records (key_id, at);
CREATE INDEX usage_records_user_at ON usage_records (user_id, at);
