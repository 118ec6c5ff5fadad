//! Sessions on PostgreSQL.

use async_trait::async_trait;
use sqlx::PgConnection;
use wagate_core::{InstanceId, NewEvent, NewSession, OrgId, Session, SessionId, SessionStatus, Timestamp};

use super::{PostgresStore, events};
use crate::rows::{self, SessionRow};
use crate::sql::{self, db_err};
use crate::{IdentityUpdate, Page, PageRequest, Result, SessionSettings, SessionStateUpdate, SessionStore, StateChange, page_size};

const SESSION_STATUS_FOR_UPDATE: &str = "SELECT status FROM sessions WHERE id = $1 FOR UPDATE";

/// The state update of a unit of work: reads the status it replaces, then writes.
pub(super) async fn update_state(
    conn: &mut PgConnection,
    id: &SessionId,
    update: &SessionStateUpdate,
) -> Result<Option<StateChange>> {
    // The row stays locked to the end of the transaction: no concurrent update can slip
    // between the status read here and the write below.
    let Some(previous) = sqlx::query_scalar::<_, String>(SESSION_STATUS_FOR_UPDATE)
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let previous = rows::parse_status(id.as_str(), &previous)?;
    let sql = match update.identity {
        IdentityUpdate::Keep => sql::UPDATE_STATE_KEEP_IDENTITY,
        IdentityUpdate::Set(_) | IdentityUpdate::Clear => sql::UPDATE_STATE_SET_IDENTITY,
    };
    let mut query = sqlx::query_as::<_, SessionRow>(sql)
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
            query = query.bind(None::<&str>).bind(None::<&str>).bind(None::<&str>).bind(None::<&str>).bind(None::<&str>);
        }
    }
    let Some(row) = query.fetch_optional(conn).await.map_err(db_err)? else {
        return Ok(None);
    };
    Ok(Some(StateChange { session: row.into_session()?, previous }))
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(&self, new: &NewSession) -> Result<Session> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        super::api_keys::ensure_org(&mut tx, &new.org, new.created_at).await?;
        let session = sqlx::query_as::<_, SessionRow>(sql::INSERT_SESSION)
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
            .map_err(db_err)?
            .into_session()?;
        events::insert(&mut tx, &NewEvent::session_status(&session.org, &session.id, session.status, None, None)).await?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(session)
    }

    async fn get_session(&self, org: &OrgId, id: &SessionId) -> Result<Option<Session>> {
        let read = sqlx::query_as::<_, SessionRow>(sql::GET_SESSION).bind(org.as_str()).bind(id.as_str()).fetch_optional(&self.pool);
        self.sessions.read_through(Some(org), id, async { read.await.map_err(db_err)?.map(SessionRow::into_session).transpose() }).await
    }

    async fn get_session_unscoped(&self, id: &SessionId) -> Result<Option<Session>> {
        let read = sqlx::query_as::<_, SessionRow>(sql::GET_SESSION_UNSCOPED).bind(id.as_str()).fetch_optional(&self.pool);
        self.sessions.read_through(None, id, async { read.await.map_err(db_err)?.map(SessionRow::into_session).transpose() }).await
    }

    async fn get_session_by_instance(&self, instance: &InstanceId) -> Result<Option<Session>> {
        sqlx::query_as::<_, SessionRow>(sql::GET_SESSION_BY_INSTANCE)
            .bind(instance.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(SessionRow::into_session)
            .transpose()
    }

    async fn list_sessions(&self, org: &OrgId, page: PageRequest<'_>) -> Result<Page<Session>> {
        let size = page_size(page.size);
        // One more than asked, to learn whether another page follows.
        let limit = i64::from(size) + 1;
        let query = match page.after {
            None => sqlx::query_as::<_, SessionRow>(sql::LIST_SESSIONS_FIRST).bind(org.as_str()).bind(limit),
            Some(after) => {
                sqlx::query_as::<_, SessionRow>(sql::LIST_SESSIONS_AFTER).bind(org.as_str()).bind(after.as_str()).bind(limit)
            }
        };
        let items = query
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(SessionRow::into_session)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(items, size, |s| &s.id))
    }

    async fn update_session_settings(
        &self,
        org: &OrgId,
        id: &SessionId,
        settings: &SessionSettings<'_>,
        at: Timestamp,
    ) -> Result<Option<Session>> {
        let _writing = self.sessions.writing(id);
        sqlx::query_as::<_, SessionRow>(sql::UPDATE_SESSION_SETTINGS)
            .bind(org.as_str())
            .bind(id.as_str())
            .bind(settings.name.is_some())
            .bind(settings.name.flatten())
            .bind(settings.device_name.is_some())
            .bind(settings.device_name.flatten())
            .bind(at)
            .bind(settings.send_per_minute.is_some())
            .bind(settings.send_per_minute.flatten().map(i64::from))
            .bind(settings.send_typing)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(SessionRow::into_session)
            .transpose()
    }

    async fn delete_session(&self, org: &OrgId, id: &SessionId) -> Result<bool> {
        let _writing = self.sessions.writing(id);
        let done = sqlx::query(sql::DELETE_SESSION).bind(org.as_str()).bind(id.as_str()).execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn sessions_to_resume(&self) -> Result<Vec<Session>> {
        sqlx::query_as::<_, SessionRow>(sql::SESSIONS_TO_RESUME)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(SessionRow::into_session)
            .collect()
    }

    async fn count_sessions_by_status(&self) -> Result<Vec<(SessionStatus, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::COUNT_SESSIONS_BY_STATUS).fetch_all(&self.pool).await.map_err(db_err)?;
        let found = rows.iter().map(|(status, n)| rows::parse_status_count(status, *n)).collect::<Result<Vec<_>>>()?;
        Ok(rows::complete_counts(found))
    }
}
