//! What the SQLite and PostgreSQL stores share: the statements, the error mapping, and the
//! [`Store`](crate::Store) implementation itself (stamped out once per backend by
//! `impl_sql_store!`).
//!
//! The statements are written once, in the subset both engines accept: `$N` placeholders
//! (sqlx's SQLite driver maps `$N` to the N-th bound argument), `ON CONFLICT DO NOTHING` and
//! `RETURNING` (SQLite 3.35+, the bundled one is newer). What differs per backend — how the
//! pool is opened, how `bootstrap` serializes concurrent callers — lives in `sqlite.rs` and
//! `postgres.rs`.

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

/// Implements [`Store`](crate::Store) for a SQL store type that has a `pool` field and an
/// inherent `begin_bootstrap(&self)` returning a transaction in which no concurrent
/// `bootstrap` can interleave.
macro_rules! impl_sql_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            fn bind_api_key<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                key: &'q wagate_core::ApiKeyRecord,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                query
                    .bind(key.id.as_str())
                    .bind(key.org.as_str())
                    .bind(key.name.as_str())
                    .bind(key.capabilities.to_list())
                    .bind(&key.hash[..])
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .bind(key.last_used_at)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query($crate::sql::PING)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                Ok(())
            }

            async fn ensure_org(&self, org: &wagate_core::OrgId) -> $crate::Result<()> {
                sqlx::query($crate::sql::ENSURE_ORG)
                    .bind(org.as_str())
                    .bind(wagate_core::now())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                Ok(())
            }

            async fn bootstrap(&self, key: &wagate_core::ApiKeyRecord) -> $crate::Result<bool> {
                use $crate::sql::db_err;
                let mut tx = self.begin_bootstrap().await.map_err(db_err)?;
                let taken: bool = sqlx::query_scalar($crate::sql::ANY_ORG_OR_KEY)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if taken {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(false);
                }
                sqlx::query($crate::sql::ENSURE_ORG)
                    .bind(key.org.as_str())
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Self::bind_api_key(sqlx::query($crate::sql::INSERT_API_KEY), key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            async fn insert_api_key(&self, key: &wagate_core::ApiKeyRecord) -> $crate::Result<()> {
                use $crate::sql::db_err;
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                sqlx::query($crate::sql::ENSURE_ORG)
                    .bind(key.org.as_str())
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Self::bind_api_key(sqlx::query($crate::sql::INSERT_API_KEY), key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(())
            }

            async fn find_api_key_by_hash(
                &self,
                hash: &[u8; 32],
            ) -> $crate::Result<Option<wagate_core::ApiKeyRecord>> {
                sqlx::query_as::<_, $crate::rows::ApiKeyRow>($crate::sql::FIND_API_KEY_BY_HASH)
                    .bind(&hash[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::ApiKeyRow::into_record)
                    .transpose()
            }

            async fn list_api_keys(
                &self,
                org: &wagate_core::OrgId,
            ) -> $crate::Result<Vec<wagate_core::ApiKeyRecord>> {
                sqlx::query_as::<_, $crate::rows::ApiKeyRow>($crate::sql::LIST_API_KEYS)
                    .bind(org.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .into_iter()
                    .map($crate::rows::ApiKeyRow::into_record)
                    .collect()
            }

            async fn revoke_api_key(
                &self,
                id: &wagate_core::ApiKeyId,
                at: wagate_core::Timestamp,
            ) -> $crate::Result<bool> {
                let done = sqlx::query($crate::sql::REVOKE_API_KEY)
                    .bind(id.as_str())
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_api_key(
                &self,
                id: &wagate_core::ApiKeyId,
                at: wagate_core::Timestamp,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::TOUCH_API_KEY)
                    .bind(id.as_str())
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                Ok(())
            }

            async fn insert_session(
                &self,
                new: &wagate_core::NewSession,
            ) -> $crate::Result<wagate_core::Session> {
                use $crate::sql::db_err;
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                sqlx::query($crate::sql::ENSURE_ORG)
                    .bind(new.org.as_str())
                    .bind(new.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let row =
                    sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::INSERT_SESSION)
                        .bind(new.id.as_str())
                        .bind(new.org.as_str())
                        .bind(new.instance_id.as_str())
                        .bind(new.name.as_deref())
                        .bind(new.engine.as_str())
                        .bind(new.status.as_str())
                        .bind(new.desired_running)
                        .bind(new.created_at)
                        .bind(new.device_name.as_deref())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                row.into_session()
            }

            async fn get_session(
                &self,
                org: &wagate_core::OrgId,
                id: &wagate_core::SessionId,
            ) -> $crate::Result<Option<wagate_core::Session>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::GET_SESSION)
                    .bind(org.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::SessionRow::into_session)
                    .transpose()
            }

            async fn get_session_unscoped(
                &self,
                id: &wagate_core::SessionId,
            ) -> $crate::Result<Option<wagate_core::Session>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::GET_SESSION_UNSCOPED)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::SessionRow::into_session)
                    .transpose()
            }

            async fn get_session_by_instance(
                &self,
                instance: &wagate_core::InstanceId,
            ) -> $crate::Result<Option<wagate_core::Session>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::GET_SESSION_BY_INSTANCE)
                    .bind(instance.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::SessionRow::into_session)
                    .transpose()
            }

            async fn list_sessions(
                &self,
                org: &wagate_core::OrgId,
                page: $crate::PageRequest<'_>,
            ) -> $crate::Result<$crate::Page<wagate_core::Session>> {
                let size = $crate::page_size(page.size);
                // One more than asked, to learn whether another page follows.
                let limit = i64::from(size) + 1;
                let query = match page.after {
                    None => sqlx::query_as::<_, $crate::rows::SessionRow>(
                        $crate::sql::LIST_SESSIONS_FIRST,
                    )
                    .bind(org.as_str())
                    .bind(limit),
                    Some(after) => sqlx::query_as::<_, $crate::rows::SessionRow>(
                        $crate::sql::LIST_SESSIONS_AFTER,
                    )
                    .bind(org.as_str())
                    .bind(after.as_str())
                    .bind(limit),
                };
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                let items = rows
                    .into_iter()
                    .map($crate::rows::SessionRow::into_session)
                    .collect::<$crate::Result<Vec<_>>>()?;
                Ok($crate::Page::from_overfetched(items, size, |s| &s.id))
            }

            async fn update_session_settings(
                &self,
                org: &wagate_core::OrgId,
                id: &wagate_core::SessionId,
                settings: &$crate::SessionSettings<'_>,
                at: wagate_core::Timestamp,
            ) -> $crate::Result<Option<wagate_core::Session>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::UPDATE_SESSION_SETTINGS)
                    .bind(org.as_str())
                    .bind(id.as_str())
                    .bind(settings.name.is_some())
                    .bind(settings.name.flatten())
                    .bind(settings.device_name.is_some())
                    .bind(settings.device_name.flatten())
                    .bind(at)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::SessionRow::into_session)
                    .transpose()
            }

            async fn update_session_state(
                &self,
                id: &wagate_core::SessionId,
                update: &$crate::SessionStateUpdate,
            ) -> $crate::Result<Option<wagate_core::Session>> {
                use $crate::IdentityUpdate;
                let sql = match update.identity {
                    IdentityUpdate::Keep => $crate::sql::UPDATE_STATE_KEEP_IDENTITY,
                    IdentityUpdate::Set(_) | IdentityUpdate::Clear => {
                        $crate::sql::UPDATE_STATE_SET_IDENTITY
                    }
                };
                let mut query = sqlx::query_as::<_, $crate::rows::SessionRow>(sql)
                    .bind(id.as_str())
                    .bind(update.status.as_str())
                    .bind(update.status_reason.as_deref())
                    .bind(update.desired_running)
                    .bind(update.at);
                match &update.identity {
                    IdentityUpdate::Keep => {}
                    IdentityUpdate::Set(identity) => {
                        query = query
                            .bind(identity.phone.as_str())
                            .bind(identity.jid.as_str())
                            .bind(identity.lid.as_deref())
                            .bind(identity.push_name.as_deref())
                            .bind(identity.platform.as_deref());
                    }
                    IdentityUpdate::Clear => {
                        query = query
                            .bind(None::<&str>)
                            .bind(None::<&str>)
                            .bind(None::<&str>)
                            .bind(None::<&str>)
                            .bind(None::<&str>);
                    }
                }
                query
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .map($crate::rows::SessionRow::into_session)
                    .transpose()
            }

            async fn delete_session(
                &self,
                org: &wagate_core::OrgId,
                id: &wagate_core::SessionId,
            ) -> $crate::Result<bool> {
                let done = sqlx::query($crate::sql::DELETE_SESSION)
                    .bind(org.as_str())
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn sessions_to_resume(&self) -> $crate::Result<Vec<wagate_core::Session>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::sql::SESSIONS_TO_RESUME)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::sql::db_err)?
                    .into_iter()
                    .map($crate::rows::SessionRow::into_session)
                    .collect()
            }

            async fn count_sessions_by_status(
                &self,
            ) -> $crate::Result<Vec<(wagate_core::SessionStatus, u64)>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as($crate::sql::COUNT_SESSIONS_BY_STATUS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::sql::db_err)?;
                let found = rows
                    .iter()
                    .map(|(status, n)| $crate::rows::parse_status_count(status, *n))
                    .collect::<$crate::Result<Vec<_>>>()?;
                Ok($crate::rows::complete_counts(found))
            }
        }
    };
}

pub(crate) use impl_sql_store;

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
