-- The event log: every change a client can observe, committed with the change itself.
-- `seq` is the log position (commit order; AUTOINCREMENT never reuses a pruned position);
-- `id` (evt_ + ULID) is the public id. Events outlive their session (no foreign key).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    org_id      TEXT NOT NULL,
    session_id  TEXT,
    type        TEXT NOT NULL,
    -- the event's `data`, JSON text exactly as the API shows it
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX events_org_id_seq ON events (org_id, seq);
CREATE INDEX events_created_at ON events (created_at);
