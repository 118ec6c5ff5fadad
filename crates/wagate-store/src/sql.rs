//! What the SQLite and PostgreSQL stores share: the statements both accept, and the error
//! mapping. Each backend binds and runs them with its own plain `sqlx` code (`sqlite/`,
//! `postgres/`); statements that differ (the event type filter, how writers of the event log
//! are ordered) live there.
//!
//! Shared statements are written in the subset both engines accept: `$N` placeholders
//! (sqlx's SQLite driver maps `$N` to the N-th bound argument), `ON CONFLICT DO NOTHING` and
//! `RETURNING` (SQLite 3.35+, the bundled one is newer).
//!
//! A bound limit is written `LIMIT CAST($N AS BIGINT)`, never `LIMIT $N`: SQLite plans a bare
//! bound `LIMIT` as the constant bound at preparation and marks the statement to be prepared
//! again whenever that parameter is bound anew, which sqlx does on every execution (6.6% of the
//! gateway's CPU per sent message went to that, docs/PERFORMANCE.md). The cast
//! is evaluated at run time instead; PostgreSQL reads it as the plain `bigint` it expects.

use crate::StoreError;

macro_rules! session_columns {
    () => {
        "id, org_id, instance_id, name, engine, status, status_reason, desired_running, \
         phone, wa_jid, wa_lid, push_name, platform, device_name, send_per_minute, send_typing, created_at, updated_at"
    };
}

macro_rules! api_key_columns {
    () => {
        "id, org_id, name, capabilities, key_hash, created_at, expires_at, revoked_at, last_used_at"
    };
}

pub(crate) const PING: &str = "SELECT 1";

/// `$1` org id, `$2` created_at.
pub(crate) const ENSURE_ORG: &str =
    "INSERT INTO organizations (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

pub(crate) const ANY_ORG_OR_KEY: &str =
    "SELECT (EXISTS (SELECT 1 FROM organizations) OR EXISTS (SELECT 1 FROM api_keys))";

pub(crate) const INSERT_API_KEY: &str = concat!(
    "INSERT INTO api_keys (",
    api_key_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

pub(crate) const FIND_API_KEY_BY_HASH: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE key_hash = $1"
);

pub(crate) const LIST_API_KEYS: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE org_id = $1 ORDER BY id DESC"
);

/// Keeps the first revocation time.
pub(crate) const REVOKE_API_KEY: &str =
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1";

pub(crate) const TOUCH_API_KEY: &str = "UPDATE api_keys SET last_used_at = $2 WHERE id = $1";

pub(crate) const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (id, org_id, instance_id, name, engine, status, status_reason, desired_running, \
     device_name, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $9, $8, $8) RETURNING ",
    session_columns!()
);

pub(crate) const GET_SESSION: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = $1 AND id = $2"
);

pub(crate) const GET_SESSION_UNSCOPED: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = $1"
);

pub(crate) const GET_SESSION_BY_INSTANCE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE instance_id = $1"
);

/// `$1` org, `$2` limit.
pub(crate) const LIST_SESSIONS_FIRST: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = $1 ORDER BY id DESC LIMIT CAST($2 AS BIGINT)"
);

/// `$1` org, `$2` after (exclusive), `$3` limit.
pub(crate) const LIST_SESSIONS_AFTER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT CAST($3 AS BIGINT)"
);

/// `$1` org, `$2` id, `$3` whether to set the name, `$4` the name, `$5` whether to set the
/// device name, `$6` the device name (NULL: the gateway default), `$7` updated_at, `$8` whether
/// to set the pace, `$9` the pace (NULL: the gateway default), `$10` typing (NULL keeps it).
pub(crate) const UPDATE_SESSION_SETTINGS: &str = concat!(
    "UPDATE sessions SET name = CASE WHEN $3 THEN $4 ELSE name END, \
     device_name = CASE WHEN $5 THEN $6 ELSE device_name END, updated_at = $7, \
     send_per_minute = CASE WHEN $8 THEN $9 ELSE send_per_minute END, send_typing = COALESCE($10, send_typing) \
     WHERE org_id = $1 AND id = $2 RETURNING ",
    session_columns!()
);

/// `$1` id, `$2` status, `$3` reason, `$4` desired_running (NULL keeps), `$5` updated_at.
pub(crate) const UPDATE_STATE_KEEP_IDENTITY: &str = concat!(
    "UPDATE sessions SET status = $2, status_reason = $3, desired_running = COALESCE($4, desired_running), \
     updated_at = $5 WHERE id = $1 RETURNING ",
    session_columns!()
);

/// As [`UPDATE_STATE_KEEP_IDENTITY`], plus `$6` phone, `$7` jid, `$8` lid, `$9` push name,
/// `$10` platform (all NULL to clear the identity).
pub(crate) const UPDATE_STATE_SET_IDENTITY: &str = concat!(
    "UPDATE sessions SET status = $2, status_reason = $3, desired_running = COALESCE($4, desired_running), \
     updated_at = $5, phone = $6, wa_jid = $7, wa_lid = $8, push_name = $9, platform = $10 WHERE id = $1 RETURNING ",
    session_columns!()
);

pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE org_id = $1 AND id = $2";

pub(crate) const SESSIONS_TO_RESUME: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE desired_running ORDER BY id ASC"
);

pub(crate) const COUNT_SESSIONS_BY_STATUS: &str =
    "SELECT status, COUNT(*) AS n FROM sessions GROUP BY status";

/// The status of a session, read inside a state update's transaction.
pub(crate) const SESSION_STATUS: &str = "SELECT status FROM sessions WHERE id = $1";

macro_rules! event_columns {
    () => {
        "seq, id, org_id, session_id, type, data, created_at"
    };
}

/// `$1` id, `$2` org, `$3` session, `$4` type, `$5` data, `$6` created_at.
pub(crate) const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (id, org_id, session_id, type, data, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    event_columns!()
);

pub(crate) const GET_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE org_id = $1 AND id = $2"
);

/// `$1` after, `$2` limit.
pub(crate) const EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > $1 ORDER BY seq ASC LIMIT CAST($2 AS BIGINT)"
);

pub(crate) const LAST_EVENT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";

/// `$1` before, `$2` limit.
pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events WHERE created_at < $1 ORDER BY seq ASC LIMIT CAST($2 AS BIGINT))";

/// The filtered readers of one organization's events. `$1` org, `$2` session (NULL: all),
/// `$3` the types (NULL: all; how a list is bound differs per backend, so each passes the
/// condition on `$3` as `types`), then:
/// newest first: `$4` the id of the last event of the previous page (NULL: from the newest),
/// `$5` limit; oldest first: `$4` the position to read after, `$5` limit.
macro_rules! org_events {
    ($types:literal) => {
        (
            concat!(
                "SELECT ",
                $crate::sql::event_columns!(),
                " FROM events WHERE org_id = $1 AND ($2 IS NULL OR session_id = $2) AND ($3 IS NULL OR ",
                $types,
                ") AND ($4 IS NULL OR seq < (SELECT seq FROM events WHERE id = $4)) ORDER BY seq DESC LIMIT CAST($5 AS BIGINT)"
            ),
            concat!(
                "SELECT ",
                $crate::sql::event_columns!(),
                " FROM events WHERE org_id = $1 AND ($2 IS NULL OR session_id = $2) AND ($3 IS NULL OR ",
                $types,
                ") AND seq > $4 ORDER BY seq ASC LIMIT CAST($5 AS BIGINT)"
            ),
        )
    };
}
pub(crate) use {event_columns, org_events};

// ---- webhooks and deliveries ----

macro_rules! webhook_columns {
    () => {
        "id, org_id, url, events, session_id, description, enabled, disabled_reason, secret, previous_secret, \
         previous_secret_expires_at, failing_since, created_at, updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, org_id, webhook_id, event_id, event_seq, event_type, status, attempts, cycle_attempts, last_attempt_at, \
         next_attempt_at, response_status, error, created_at"
    };
}

/// `$1` id, `$2` org, `$3` url, `$4` events (JSON, NULL: all), `$5` session, `$6` description,
/// `$7` secret, `$8` created_at.
pub(crate) const INSERT_WEBHOOK: &str = concat!(
    "INSERT INTO webhooks (id, org_id, url, events, session_id, description, enabled, secret, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $8, $8) RETURNING ",
    webhook_columns!()
);

pub(crate) const GET_WEBHOOK: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE org_id = $1 AND id = $2"
);

pub(crate) const GET_WEBHOOK_UNSCOPED: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE id = $1"
);

/// Every webhook, for the fan-out.
pub(crate) const ALL_WEBHOOKS: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks ORDER BY id"
);

/// `$1` org, `$2` after (exclusive, NULL: from the newest), `$3` limit.
pub(crate) const LIST_WEBHOOKS: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE org_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT CAST($3 AS BIGINT)"
);

/// `$1` org, `$2` id, `$3` url (NULL keeps), `$4` whether to set the events, `$5` the events,
/// `$6` whether to set the description, `$7` the description, `$8` enabled (NULL keeps),
/// `$9` updated_at. Enabling clears the reason and the failure clock; disabling keeps a reason
/// already there (`gone`, `failing`), else says `manual`.
pub(crate) const UPDATE_WEBHOOK: &str = concat!(
    "UPDATE webhooks SET url = COALESCE($3, url), events = CASE WHEN $4 THEN $5 ELSE events END, description = CASE WHEN $6 THEN $7 ELSE description END, enabled = COALESCE($8, enabled), disabled_reason = CASE WHEN $8 IS NULL THEN disabled_reason WHEN $8 THEN NULL ELSE COALESCE(disabled_reason, 'manual') END, failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END, updated_at = $9 WHERE org_id = $1 AND id = $2 RETURNING ",
    webhook_columns!()
);

pub(crate) const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE org_id = $1 AND id = $2";

/// `$1` org, `$2` id, `$3` the new secret, `$4` until when the replaced one signs, `$5` updated_at.
pub(crate) const ROTATE_WEBHOOK_SECRET: &str = concat!(
    "UPDATE webhooks SET previous_secret = secret, previous_secret_expires_at = $4, secret = $3, updated_at = $5 WHERE org_id = $1 AND id = $2 RETURNING ",
    webhook_columns!()
);

/// `$1` id, `$2` org, `$3` webhook, `$4` event id, `$5` event position, `$6` event type,
/// `$7` due (and created) at. A pair already queued is left alone.
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event_seq, event_type, status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT (webhook_id, event_id) DO NOTHING";

/// As [`INSERT_DELIVERY`], returning the new row (for a pair that cannot exist yet).
pub(crate) const INSERT_NEW_DELIVERY: &str = concat!(
    "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event_seq, event_type, status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING ",
    delivery_columns!()
);

/// As [`INSERT_DELIVERY`], but a pair already there is queued again with a fresh schedule.
pub(crate) const REQUEUE_DELIVERY: &str = "INSERT INTO deliveries (id, org_id, webhook_id, event_id, event_seq, event_type, status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT (webhook_id, event_id) DO UPDATE SET status = 'pending', cycle_attempts = 0, next_attempt_at = excluded.next_attempt_at";

pub(crate) const RELEASE_CLAIMS: &str = "UPDATE deliveries SET claimed_until = NULL WHERE claimed_until IS NOT NULL";

pub(crate) const FANOUT_POSITION: &str = "SELECT position FROM webhook_fanout WHERE id = 1";

pub(crate) const SET_FANOUT_POSITION: &str = "UPDATE webhook_fanout SET position = $1 WHERE id = 1";

pub(crate) use delivery_columns;

/// `$1` delivery, `$2` at, `$3` duration in ms, `$4` response status, `$5` error.
/// Nothing when the delivery is gone (its webhook was deleted during the attempt).
pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO delivery_attempts (delivery_id, n, at, duration_ms, response_status, error) SELECT $1, attempts + 1, $2, $3, $4, $5 FROM deliveries WHERE id = $1";

/// `$1` delivery, `$2` status, `$3` next attempt (NULL when settled), `$4` attempted at,
/// `$5` response status, `$6` error. Releases the claim.
pub(crate) const SETTLE_ATTEMPT: &str = concat!(
    "UPDATE deliveries SET attempts = attempts + 1, cycle_attempts = cycle_attempts + 1, status = $2, next_attempt_at = $3, last_attempt_at = $4, response_status = $5, error = $6, claimed_until = NULL WHERE id = $1 RETURNING ",
    delivery_columns!()
);

/// `$1` webhook, `$2` whether the attempt succeeded, `$3` attempted at, `$4` a reason to disable
/// the webhook (NULL: none). A success stops the failure clock; a failure starts it. The row
/// is written only when something changes (most attempts change nothing here).
pub(crate) const WEBHOOK_AFTER_ATTEMPT: &str = "UPDATE webhooks SET failing_since = CASE WHEN $2 THEN NULL ELSE COALESCE(failing_since, $3) END, enabled = CASE WHEN $4 IS NULL THEN enabled ELSE FALSE END, disabled_reason = COALESCE($4, disabled_reason), updated_at = CASE WHEN $4 IS NULL THEN updated_at ELSE $3 END WHERE id = $1 AND ($4 IS NOT NULL OR (CASE WHEN $2 THEN failing_since IS NOT NULL ELSE failing_since IS NULL END))";

/// `$1` org, `$2` webhook, `$3` delivery, `$4` due at.
pub(crate) const RETRY_DELIVERY: &str = concat!(
    "UPDATE deliveries SET status = 'pending', cycle_attempts = 0, next_attempt_at = $4 WHERE org_id = $1 AND webhook_id = $2 AND id = $3 RETURNING ",
    delivery_columns!()
);

/// Events of a replay window, oldest first: `$1` org, `$2` since, `$3` until (NULL: open),
/// `$4` session (NULL: all), `$5` webhook (its own `webhook.test` events only), `$6` after
/// this position, `$7` limit.
pub(crate) const REPLAY_EVENTS: &str = "SELECT e.seq, e.id, e.type FROM events e WHERE e.org_id = $1 AND e.created_at >= $2 AND ($3 IS NULL OR e.created_at < $3) AND ($4 IS NULL OR e.session_id = $4) AND (e.type <> 'webhook.test' OR EXISTS (SELECT 1 FROM deliveries x WHERE x.webhook_id = $5 AND x.event_id = e.id)) AND e.seq > $6 ORDER BY e.seq LIMIT CAST($7 AS BIGINT)";

/// `$1` org, `$2` webhook, `$3` status (NULL: all), `$4` after (exclusive, NULL: from the
/// newest), `$5` limit.
pub(crate) const LIST_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM deliveries WHERE org_id = $1 AND webhook_id = $2 AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT CAST($5 AS BIGINT)"
);

pub(crate) const GET_DELIVERY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM deliveries WHERE org_id = $1 AND webhook_id = $2 AND id = $3"
);

/// PostgreSQL: the first statement of a read transaction whose statements share one snapshot.
pub(crate) const READ_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// The attempts of every delivery `LIST_DELIVERIES` returns for the same parameters, in the
/// same read snapshot: `(delivery_id, ...)` rows, each delivery's oldest first.
pub(crate) const LIST_DELIVERY_ATTEMPTS: &str = "SELECT delivery_id, at, duration_ms, response_status, error FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE org_id = $1 AND webhook_id = $2 AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT CAST($5 AS BIGINT)) ORDER BY delivery_id, n";

/// One delivery's attempts, oldest first; read in the snapshot that read the delivery.
pub(crate) const DELIVERY_ATTEMPTS: &str = "SELECT delivery_id, at, duration_ms, response_status, error FROM delivery_attempts WHERE delivery_id = $1 ORDER BY n";

pub(crate) const COUNT_PENDING_DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND w.enabled";

pub(crate) const NEXT_DELIVERY_DUE: &str = "SELECT d.next_attempt_at FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND w.enabled AND d.claimed_until IS NULL ORDER BY d.next_attempt_at LIMIT 1";

macro_rules! message_columns {
    () => {
        "id, org_id, session_id, chat_id, wa_message_id, direction, from_jid, from_phone, push_name, type, text, body, \
         reply_to_id, reply_to_wa_id, mentions, edited, revoked, status, error_code, error_message, ts, created_at, updated_at"
    };
}
pub(crate) use message_columns;

/// `$1`..`$21` the columns of [`message_columns`] up to `ts` (`$21`), then `$22` created_at
/// (also updated_at), `$23` idempotency key, `$24` its request hash. Nothing when the session
/// already has that WhatsApp id, except that an inbound message replaces the placeholder of the
/// same message stored when it could not be decrypted (error `undecryptable`; the sender's
/// retry brought it): the row keeps its id and takes the content.
pub(crate) const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (id, org_id, session_id, chat_id, wa_message_id, direction, from_jid, from_phone, push_name, \
     type, text, body, reply_to_id, reply_to_wa_id, mentions, edited, revoked, status, error_code, error_message, ts, \
     created_at, updated_at, idempotency_key, idempotency_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $22, $23, $24) \
     ON CONFLICT (session_id, wa_message_id) DO UPDATE SET chat_id = excluded.chat_id, from_jid = excluded.from_jid, \
     from_phone = excluded.from_phone, push_name = excluded.push_name, type = excluded.type, text = excluded.text, \
     body = excluded.body, reply_to_id = excluded.reply_to_id, reply_to_wa_id = excluded.reply_to_wa_id, \
     mentions = excluded.mentions, error_code = excluded.error_code, error_message = excluded.error_message, \
     ts = excluded.ts, updated_at = excluded.updated_at \
     WHERE messages.direction = 'inbound' AND excluded.direction = 'inbound' \
     AND messages.error_code = 'undecryptable' AND COALESCE(excluded.error_code, '') <> 'undecryptable' RETURNING ",
    message_columns!()
);

/// `$1` session, `$2` key, `$3` the oldest creation time still inside the window.
pub(crate) const EXPIRE_IDEMPOTENCY_KEY: &str = "UPDATE messages SET idempotency_key = NULL, idempotency_hash = NULL \
     WHERE session_id = $1 AND idempotency_key = $2 AND created_at < $3";

/// `$1` session, `$2` key: the message id and its request hash.
pub(crate) const FIND_BY_IDEMPOTENCY_KEY: &str =
    "SELECT id, idempotency_hash FROM messages WHERE session_id = $1 AND idempotency_key = $2";

pub(crate) const GET_MESSAGE_UNSCOPED: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = $1"
);

pub(crate) const GET_MESSAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE org_id = $1 AND session_id = $2 AND id = $3"
);

pub(crate) const FIND_BY_WA_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE session_id = $1 AND wa_message_id = $2"
);

/// `$1` org, `$2` session, `$3` chat (NULL: all), `$4` direction (NULL: both), `$5` after
/// (exclusive, NULL: from the newest), `$6` limit.
pub(crate) const LIST_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE org_id = $1 AND session_id = $2 AND ($3 IS NULL OR chat_id = $3) \
     AND ($4 IS NULL OR direction = $4) AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT CAST($6 AS BIGINT)"
);

/// `$1` id, `$2` status, `$3` error code, `$4` error message, `$5` ts, `$6` updated_at.
pub(crate) const SET_MESSAGE_STATUS: &str = "UPDATE messages SET status = $2, error_code = $3, error_message = $4, \
     ts = $5, updated_at = $6 WHERE id = $1";

pub(crate) const QUEUED_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE session_id = $1 AND status = 'queued' ORDER BY id LIMIT CAST($2 AS BIGINT)"
);

pub(crate) const SESSIONS_WITH_QUEUED: &str = "SELECT DISTINCT session_id FROM messages WHERE status = 'queued'";

pub(crate) const UNREAD_INBOUND: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE session_id = $1 AND chat_id = $2 AND direction = 'inbound' AND status = 'received' ORDER BY id"
);

/// `$1` session, `$2` id, `$3` updated_at.
pub(crate) const MARK_READ: &str = "UPDATE messages SET status = 'read', updated_at = $3 \
     WHERE session_id = $1 AND id = $2 AND direction = 'inbound' AND status = 'received'";

/// `$1` id, `$2` body, `$3` updated_at.
pub(crate) const SET_MESSAGE_BODY: &str = "UPDATE messages SET body = $2, updated_at = $3 WHERE id = $1";

/// `$1` id, `$2` text, `$3` updated_at.
pub(crate) const EDIT_MESSAGE: &str = "UPDATE messages SET text = $2, edited = TRUE, updated_at = $3 WHERE id = $1";

/// `$1` id, `$2` updated_at.
pub(crate) const REVOKE_MESSAGE: &str = "UPDATE messages SET revoked = TRUE, updated_at = $2 WHERE id = $1";

/// `$1` org, `$2` session, `$3` after (the last message id of the previous page's last chat),
/// `$4` limit: `(chat_id, last message id, unread count)`, latest activity first.
pub(crate) const LIST_CHATS: &str = "SELECT chat_id, MAX(id) AS last_id, \
     SUM(CASE WHEN direction = 'inbound' AND status = 'received' THEN 1 ELSE 0 END) AS unread \
     FROM messages WHERE org_id = $1 AND session_id = $2 GROUP BY chat_id \
     HAVING ($3 IS NULL OR MAX(id) < $3) ORDER BY last_id DESC LIMIT CAST($4 AS BIGINT)";

/// `$1` session, `$2` chat: the push name of the latest inbound message with one.
pub(crate) const CHAT_NAME: &str = "SELECT push_name FROM messages WHERE session_id = $1 AND chat_id = $2 \
     AND direction = 'inbound' AND push_name IS NOT NULL ORDER BY id DESC LIMIT 1";


/// Maps a sqlx error to a [`StoreError`]: unique violations become `Conflict` naming the rule
/// broken (`id`, `instance_id`, `name`, `key_hash`), everything else `Backend`.
///
/// Messages carry the database's own text (no bound values, no connection strings).
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(conflict_field(db.constraint(), db.message()))
        }
        _ => StoreError::Backend(describe(&e)),
    }
}

/// A log-safe description of a sqlx error.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| format!(" ({c})")).unwrap_or_default();
            format!("{}{code}", db.message())
        }
        sqlx::Error::RowNotFound => "expected a row, found none".to_owned(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
        sqlx::Error::PoolClosed => "the database pool is closed".to_owned(),
        other => other.to_string(),
    }
}

/// Why opening a pool failed. A pool retries connecting until its acquire timeout and then
/// reports only the timeout; one direct attempt recovers the cause (refused, bad password...).
pub(crate) async fn open_failure<C: sqlx::Connection>(
    e: sqlx::Error,
    options: &C::Options,
) -> String {
    if !matches!(e, sqlx::Error::PoolTimedOut) {
        return describe(&e);
    }
    match C::connect_with(options).await {
        Err(cause) => describe(&cause),
        Ok(conn) => {
            let _ = conn.close().await;
            describe(&e)
        }
    }
}

/// Names the column behind a unique violation: PostgreSQL reports our constraint names,
/// SQLite says `UNIQUE constraint failed: sessions.org_id, sessions.name` (the last column is
/// the distinguishing one).
fn conflict_field(constraint: Option<&str>, message: &str) -> String {
    if let Some(constraint) = constraint {
        let field = match constraint {
            "sessions_pkey" | "api_keys_pkey" | "organizations_pkey" => "id",
            "sessions_instance_id_key" => "instance_id",
            "sessions_org_id_name_key" => "name",
            "api_keys_key_hash_key" => "key_hash",
            other => other,
        };
        return field.to_owned();
    }
    message
        .rsplit([',', ':', ' '])
        .find(|part| !part.is_empty())
        .map(|column| column.rsplit('.').next().unwrap_or(column).to_owned())
        .unwrap_or_else(|| "unique".to_owned())
}

#[cfg(test)]
mod tests {
    use super::conflict_field;

    /// See the module notes: a bare bound `LIMIT` makes SQLite prepare the statement again on
    /// every execution.
    #[test]
    fn no_statement_binds_a_bare_limit() {
        let sources = [
            ("sql.rs", include_str!("sql.rs")),
            ("sqlite/api_keys.rs", include_str!("sqlite/api_keys.rs")),
            ("sqlite/events.rs", include_str!("sqlite/events.rs")),
            ("sqlite/messages.rs", include_str!("sqlite/messages.rs")),
            ("sqlite/sessions.rs", include_str!("sqlite/sessions.rs")),
            ("sqlite/webhooks.rs", include_str!("sqlite/webhooks.rs")),
            ("sqlite/writer.rs", include_str!("sqlite/writer.rs")),
        ];
        let needle = concat!("LIMIT ", "$");
        for (file, text) in sources {
            for (at, _) in text.match_indices(needle) {
                let next = text[at + needle.len()..].chars().next();
                assert!(
                    !next.is_some_and(|c| c.is_ascii_digit()),
                    "{file}: a bare bound LIMIT at byte {at}; write LIMIT CAST($N AS BIGINT)"
                );
            }
        }
    }

    #[test]
    fn conflicts_name_the_broken_rule() {
        assert_eq!(
            conflict_field(Some("sessions_org_id_name_key"), "duplicate key"),
            "name"
        );
        assert_eq!(
            conflict_field(Some("sessions_instance_id_key"), "duplicate key"),
            "instance_id"
        );
        assert_eq!(
            conflict_field(Some("api_keys_key_hash_key"), "duplicate key"),
            "key_hash"
        );
        assert_eq!(conflict_field(Some("sessions_pkey"), "duplicate key"), "id");
        assert_eq!(
            conflict_field(
                None,
                "UNIQUE constraint failed: sessions.org_id, sessions.name"
            ),
            "name"
        );
        assert_eq!(
            conflict_field(None, "UNIQUE constraint failed: sessions.instance_id"),
            "instance_id"
        );
        assert_eq!(
            conflict_field(None, "UNIQUE constraint failed: api_keys.key_hash"),
            "key_hash"
        );
        assert_eq!(conflict_field(None, ""), "unique");
    }
}
