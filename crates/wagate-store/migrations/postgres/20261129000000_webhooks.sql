-- (PostgreSQL: the same tables as on SQLite, with native types.)
-- Webhook endpoints, per organization. `events` is a JSON array of event types (NULL: every
-- type); `session_id` NULL means every session of the organization. The secrets sign
-- deliveries, so they are kept as given (`whsec_...`); the previous one signs beside the
-- current one until `previous_secret_expires_at`.
CREATE TABLE webhooks (
    id                          TEXT COLLATE "C" PRIMARY KEY,
    org_id                      TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    url                         TEXT NOT NULL,
    events                      TEXT,
    session_id                  TEXT COLLATE "C",
    description                 TEXT,
    enabled                     BOOLEAN NOT NULL,
    disabled_reason             TEXT,
    secret                      TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  TIMESTAMPTZ,
    failing_since               TIMESTAMPTZ,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhooks_org_id ON webhooks (org_id, id);

-- One event's delivery to one webhook. `cycle_attempts` counts the attempts since it was last
-- queued (its place in the retry schedule), `attempts` every attempt. A worker owns a pending
-- delivery while `claimed_until` is in the future.
CREATE TABLE deliveries (
    id               TEXT COLLATE "C" PRIMARY KEY,
    org_id           TEXT COLLATE "C" NOT NULL,
    webhook_id       TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         TEXT COLLATE "C" NOT NULL,
    event_seq        BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cycle_attempts   INTEGER NOT NULL DEFAULT 0,
    last_attempt_at  TIMESTAMPTZ,
    next_attempt_at  TIMESTAMPTZ,
    claimed_until    TIMESTAMPTZ,
    response_status  INTEGER,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX deliveries_due ON deliveries (event_seq) WHERE status = 'pending';
-- Only claimed rows: small, for counting a webhook's attempts in flight.
CREATE INDEX deliveries_claimed ON deliveries (webhook_id, claimed_until) WHERE status = 'pending' AND claimed_until IS NOT NULL;
CREATE INDEX deliveries_webhook_id ON deliveries (webhook_id, id);

CREATE TABLE delivery_attempts (
    delivery_id      TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    n                INTEGER NOT NULL,
    at               TIMESTAMPTZ NOT NULL,
    duration_ms      BIGINT NOT NULL,
    response_status  INTEGER,
    error            TEXT,
    PRIMARY KEY (delivery_id, n)
);

-- The fan-out's place in the event log: the position of the last event it has handled.
CREATE TABLE webhook_fanout (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    position  BIGINT NOT NULL
);
INSERT INTO webhook_fanout (id, position) VALUES (1, 0);
