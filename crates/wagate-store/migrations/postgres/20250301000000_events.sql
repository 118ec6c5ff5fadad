-- The event log: every change a client can observe, committed with the change itself.
-- `seq` is the log position. Writers append under a transaction-level advisory lock taken
-- just before the insert and held to commit, so positions are in commit order and a reader
-- that resumes after position N never misses a later commit with a smaller position.
-- `id` (evt_ + ULID) is the public id. Events outlive their session (no foreign key).
CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT COLLATE "C" NOT NULL UNIQUE,
    org_id      TEXT COLLATE "C" NOT NULL,
    session_id  TEXT COLLATE "C",
    type        TEXT NOT NULL,
    -- the event's `data`, JSON text exactly as the API shows it
    data        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX events_org_id_seq ON events (org_id, seq);
CREATE INDEX events_created_at ON events (created_at);
