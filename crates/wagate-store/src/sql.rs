//! What the SQLite and PostgreSQL stores share: the statements both accept, and the error
//! mapping. Each backend binds and runs them with its own plain `sqlx` code (`sqlite/`,
//! `postgres/`); statements that differ (the event type filter, how writers of the event log
//! are ordered) live there.
//!
//! Shared statements are written in the subset both engines accept: `$N` placeholders
//! (sqlx's SQLite driver maps `$N` to the N-th bound argument), `ON CONFLICT DO NOTHING` and
//! `RETURNING` (SQLite 3.35+, the bundled one is newer).

use crate::StoreError;

macro_rules! session_columns {
    () => {
        "id, org_id, instance_id, name, engine, status, status_reason, desired_running, \
         phone, wa_jid, wa_lid, push_name, platform, device_name, created_at, updated_at"
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
    " FROM sessions WHERE org_id = $1 ORDER BY id DESC LIMIT $2"
);

/// `$1` org, `$2` after (exclusive), `$3` limit.
pub(crate) const LIST_SESSIONS_AFTER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);

/// `$1` org, `$2` id, `$3` whether to set the name, `$4` the name, `$5` whether to set the
/// device name, `$6` the device name (NULL: the gateway default), `$7` updated_at.
pub(crate) const UPDATE_SESSION_SETTINGS: &str = concat!(
    "UPDATE sessions SET name = CASE WHEN $3 THEN $4 ELSE name END, \
     device_name = CASE WHEN $5 THEN $6 ELSE device_name END, updated_at = $7 \
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
    " FROM events WHERE seq > $1 ORDER BY seq ASC LIMIT $2"
);

pub(crate) const LAST_EVENT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";

/// `$1` before, `$2` limit.
pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM events WHERE seq IN \
     (SELECT seq FROM events WHERE created_at < $1 ORDER BY seq ASC LIMIT $2)";

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
                ") AND ($4 IS NULL OR seq < (SELECT seq FROM events WHERE id = $4)) ORDER BY seq DESC LIMIT $5"
            ),
            concat!(
                "SELECT ",
                $crate::sql::event_columns!(),
                " FROM events WHERE org_id = $1 AND ($2 IS NULL OR session_id = $2) AND ($3 IS NULL OR ",
                $types,
                ") AND seq > $4 ORDER BY seq ASC LIMIT $5"
            ),
        )
    };
}
pub(crate) use {event_columns, org_events};

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
