-- The emulator's state: stored claims, committed idempotency keys, and counters for stats.

-- A plain INTEGER PRIMARY KEY (not AUTOINCREMENT): AUTOINCREMENT burns an id on every upsert
-- that turns into an update, and the API promises that a new claim gets the next id.
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    provider_npi TEXT NOT NULL,
    claim_submitter_identifier TEXT NOT NULL,
    content TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, provider_npi, claim_submitter_identifier)
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    claim_ids TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);

CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
