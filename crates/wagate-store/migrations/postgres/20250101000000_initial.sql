-- wagate initial schema (PostgreSQL).
-- Ids use the "C" collation so that ORDER BY id is byte order, i.e. ULID (creation) order,
-- whatever the database's default collation. Constraint names are relied upon by the
-- store to report which uniqueness rule a write broke.

CREATE TABLE organizations (
    id          TEXT COLLATE "C" NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT organizations_pkey PRIMARY KEY (id)
);

CREATE TABLE api_keys (
    id            TEXT COLLATE "C" NOT NULL,
    org_id        TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    name          TEXT NOT NULL,
    -- comma-separated, e.g. "manage,send,read"
    capabilities  TEXT NOT NULL,
    -- SHA-256 of the whole key string, never the key
    key_hash      BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

CREATE INDEX api_keys_org_id_id ON api_keys (org_id, id DESC);

CREATE TABLE sessions (
    id               TEXT COLLATE "C" NOT NULL,
    org_id           TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    instance_id      TEXT NOT NULL,
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
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_instance_id_key UNIQUE (instance_id)
);

-- A name is unique within its organization; any number of sessions may have no name.
CREATE UNIQUE INDEX sessions_org_id_name_key ON sessions (org_id, name) WHERE name IS NOT NULL;
-- Newest-first listing per organization.
CREATE INDEX sessions_org_id_id ON sessions (org_id, id DESC);
-- Resuming at start-up.
CREATE INDEX sessions_desired_running ON sessions (id) WHERE desired_running;
