-- wagate initial schema (SQLite).
-- Timestamps are stored as RFC 3339 text (sqlx's chrono encoding), always UTC.

CREATE TABLE organizations (
    id          TEXT NOT NULL PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT NOT NULL PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    name          TEXT NOT NULL,
    -- comma-separated, e.g. "manage,send,read"
    capabilities  TEXT NOT NULL,
    -- SHA-256 of the whole key string, never the key
    key_hash      BLOB NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT
);

CREATE INDEX api_keys_org_id_id ON api_keys (org_id, id DESC);

CREATE TABLE sessions (
    id               TEXT NOT NULL PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations (id),
    instance_id      TEXT NOT NULL UNIQUE,
    name             TEXT,
    engine           TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_reason    TEXT,
    desired_running  BOOLEAN NOT NULL DEFAULT FALSE,
    phone            TEXT,
    wa_jid           TEXT,
    wa_lid           TEXT,
    push_name        TEXT,
    platform         TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- A name is unique within its organization; any number of sessions may have no name.
CREATE UNIQUE INDEX sessions_org_id_name ON sessions (org_id, name) WHERE name IS NOT NULL;
-- Newest-first listing per organization.
CREATE INDEX sessions_org_id_id ON sessions (org_id, id DESC);
-- Resuming at start-up.
CREATE INDEX sessions_desired_running ON sessions (id) WHERE desired_running;
