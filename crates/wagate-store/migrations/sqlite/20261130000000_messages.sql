-- Messaging: each session's send policy, and the messages of every session.

-- Messages per minute (NULL: the gateway default) and "typing…" before a text.
ALTER TABLE sessions ADD COLUMN send_per_minute INTEGER;
ALTER TABLE sessions ADD COLUMN send_typing BOOLEAN NOT NULL DEFAULT FALSE;

-- One message, inbound or outbound. `wa_message_id` is WhatsApp's id, fixed when an outbound
-- message is accepted (a resend after a crash reuses it). `body` is a JSON object with the
-- content besides the text (media, location, contact, reaction); `mentions` a JSON array.
-- `idempotency_key` and `idempotency_hash` (SHA-256 of the request) answer repeated sends.
CREATE TABLE messages (
    id                TEXT NOT NULL PRIMARY KEY,
    org_id            TEXT NOT NULL,
    session_id        TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    chat_id           TEXT NOT NULL,
    wa_message_id     TEXT NOT NULL,
    direction         TEXT NOT NULL,
    from_jid          TEXT,
    from_phone        TEXT,
    push_name         TEXT,
    type              TEXT NOT NULL,
    text              TEXT,
    body              TEXT NOT NULL,
    reply_to_id       TEXT,
    reply_to_wa_id    TEXT,
    mentions          TEXT NOT NULL,
    edited            BOOLEAN NOT NULL DEFAULT FALSE,
    revoked           BOOLEAN NOT NULL DEFAULT FALSE,
    status            TEXT NOT NULL,
    error_code        TEXT,
    error_message     TEXT,
    ts                TEXT NOT NULL,
    idempotency_key   TEXT,
    idempotency_hash  BLOB,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (session_id, wa_message_id)
);

CREATE UNIQUE INDEX messages_idempotency ON messages (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Newest-first listing per session, and per chat.
CREATE INDEX messages_session_id ON messages (session_id, id);
CREATE INDEX messages_session_chat ON messages (session_id, chat_id, id);
-- The send queue: a session's queued messages, oldest first.
CREATE INDEX messages_queued ON messages (session_id, id) WHERE status = 'queued';
