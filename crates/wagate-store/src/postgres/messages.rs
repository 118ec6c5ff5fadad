//! Messages on PostgreSQL: a change and its event commit in one transaction. Two accepts of
//! the same `Idempotency-Key` at once meet at its unique index: the second waits for the first,
//! fails, and is answered from the first on its retry.

use async_trait::async_trait;
use sqlx::{PgConnection, Postgres, Transaction};
use wagate_core::{Event, Jid, MediaInfo, Message, MessageId, OrgId, SessionId, Timestamp};

use super::{PostgresStore, events};
use crate::messages::{
    self, Accepted, Chat, IDEMPOTENCY_WINDOW, Idempotency, MessageFilter, MessageStore, ReactionRecord, StatusUpdate,
};
use crate::rows::MessageRow;
use crate::sql::{self, db_err};
use crate::{Page, PageRequest, Result, page_size};

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("message fields serialize")
}

async fn insert(conn: &mut PgConnection, m: &Message, idempotency: Option<&Idempotency>) -> Result<Option<Message>> {
    sqlx::query_as::<_, MessageRow>(sql::INSERT_MESSAGE)
        .bind(m.id.as_str())
        .bind(m.org.as_str())
        .bind(m.session.as_str())
        .bind(m.chat.as_str())
        .bind(m.wa_message_id.as_str())
        .bind(m.direction.as_str())
        .bind(m.from.as_ref().map(Jid::as_str))
        .bind(m.from_phone.as_ref().map(|p| p.as_str()))
        .bind(m.push_name.as_deref())
        .bind(m.kind.as_str())
        .bind(m.text.as_deref())
        .bind(json(&m.body()))
        .bind(m.reply_to.as_ref().and_then(|r| r.message_id.as_ref()).map(MessageId::as_str))
        .bind(m.reply_to.as_ref().map(|r| r.wa_message_id.as_str()))
        .bind(json(&m.mentions))
        .bind(m.edited)
        .bind(m.revoked)
        .bind(m.status.as_str())
        .bind(m.error.as_ref().map(|e| e.code.as_str()))
        .bind(m.error.as_ref().map(|e| e.message.as_str()))
        .bind(m.timestamp)
        .bind(m.created_at)
        .bind(idempotency.map(|i| i.key.as_str()))
        .bind(idempotency.map(|i| i.request_hash.as_slice()))
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .map(MessageRow::into_message)
        .transpose()
}

async fn by_wa_id(conn: &mut PgConnection, session: &SessionId, wa_id: &str) -> Result<Option<Message>> {
    sqlx::query_as::<_, MessageRow>(sql::FIND_BY_WA_ID)
        .bind(session.as_str())
        .bind(wa_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .map(MessageRow::into_message)
        .transpose()
}

/// As [`by_wa_id`], locking the row until the transaction ends: changes of one message queue.
async fn by_wa_id_locked(conn: &mut PgConnection, session: &SessionId, wa_id: &str) -> Result<Option<Message>> {
    const LOCKED: &str = concat!(
        "SELECT ",
        sql::message_columns!(),
        " FROM messages WHERE session_id = $1 AND wa_message_id = $2 FOR UPDATE"
    );
    sqlx::query_as::<_, MessageRow>(LOCKED)
        .bind(session.as_str())
        .bind(wa_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .map(MessageRow::into_message)
        .transpose()
}

async fn by_id(conn: &mut PgConnection, id: &str) -> Result<Option<Message>> {
    sqlx::query_as::<_, MessageRow>(sql::GET_MESSAGE_UNSCOPED)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .map(MessageRow::into_message)
        .transpose()
}

fn collect(rows: Vec<MessageRow>) -> Result<Vec<Message>> {
    rows.into_iter().map(MessageRow::into_message).collect()
}

impl PostgresStore {
    async fn accept_in(&self, tx: &mut Transaction<'static, Postgres>, message: &Message, idempotency: Option<&Idempotency>) -> Result<Accepted> {
        if let Some(idem) = idempotency {
            let oldest = message.created_at - IDEMPOTENCY_WINDOW;
            sqlx::query(sql::EXPIRE_IDEMPOTENCY_KEY)
                .bind(message.session.as_str())
                .bind(idem.key.as_str())
                .bind(oldest)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            let found: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(sql::FIND_BY_IDEMPOTENCY_KEY)
                .bind(message.session.as_str())
                .bind(idem.key.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
            if let Some((id, hash)) = found {
                if hash.as_deref() != Some(idem.request_hash.as_slice()) {
                    return Ok(Accepted::KeyConflict);
                }
                let first = by_id(tx, &id).await?;
                return first.map(Accepted::Repeat).ok_or_else(|| crate::StoreError::Backend("idempotent message vanished".into()));
            }
        }
        match insert(tx, message, idempotency).await? {
            Some(stored) => Ok(Accepted::New(stored)),
            None => Err(crate::StoreError::Conflict("waMessageId".into())),
        }
    }
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn accept_outbound(&self, message: &Message, idempotency: Option<&Idempotency>) -> Result<Accepted> {
        let mut attempt = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            let accepted = self.accept_in(&mut tx, message, idempotency).await;
            let accepted = match accepted {
                Ok(accepted) => accepted,
                // A concurrent accept of the same key committed first: answer from it.
                Err(crate::StoreError::Conflict(_)) if idempotency.is_some() && attempt == 0 => {
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            tx.commit().await.map_err(db_err)?;
            return Ok(accepted);
        }
    }

    async fn insert_inbound(&self, message: &Message) -> Result<Option<Message>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(stored) = insert(&mut tx, message, None).await? else {
            return Ok(None);
        };
        events::insert(&mut tx, &messages::received_event(&stored)).await?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(Some(stored))
    }

    async fn get_message(&self, org: &OrgId, session: &SessionId, id: &MessageId) -> Result<Option<Message>> {
        sqlx::query_as::<_, MessageRow>(sql::GET_MESSAGE)
            .bind(org.as_str())
            .bind(session.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(MessageRow::into_message)
            .transpose()
    }

    async fn find_by_wa_id(&self, session: &SessionId, wa_message_id: &str) -> Result<Option<Message>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        by_wa_id(&mut conn, session, wa_message_id).await
    }

    async fn list_messages(
        &self,
        org: &OrgId,
        session: &SessionId,
        filter: &MessageFilter,
        page: PageRequest<'_, MessageId>,
    ) -> Result<Page<Message, MessageId>> {
        let size = page_size(page.size);
        let rows = sqlx::query_as::<_, MessageRow>(sql::LIST_MESSAGES)
            .bind(org.as_str())
            .bind(session.as_str())
            .bind(filter.chat.as_ref().map(Jid::as_str))
            .bind(filter.direction.map(|d| d.as_str()))
            .bind(page.after.map(MessageId::as_str))
            .bind(i64::from(size) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Page::from_overfetched(collect(rows)?, size, |m| &m.id))
    }

    async fn update_status(&self, session: &SessionId, update: &StatusUpdate<'_>) -> Result<Option<Message>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(mut message) = by_wa_id_locked(&mut tx, session, update.wa_message_id).await? else {
            return Ok(None);
        };
        let steps = messages::steps(message.status, update.status, message.direction);
        if steps.is_empty() {
            return Ok(None);
        }
        for next in steps {
            let previous = message.status;
            message = messages::stepped(message, next, update);
            sqlx::query(sql::SET_MESSAGE_STATUS)
                .bind(message.id.as_str())
                .bind(message.status.as_str())
                .bind(message.error.as_ref().map(|e| e.code.as_str()))
                .bind(message.error.as_ref().map(|e| e.message.as_str()))
                .bind(message.timestamp)
                .bind(message.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            events::insert(&mut tx, &messages::status_event(&message, previous)).await?;
        }
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(Some(message))
    }

    async fn queued_messages(&self, session: &SessionId, limit: u32) -> Result<Vec<Message>> {
        let rows = sqlx::query_as::<_, MessageRow>(sql::QUEUED_MESSAGES)
            .bind(session.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        collect(rows)
    }

    async fn set_media(&self, id: &MessageId, media: &MediaInfo, at: Timestamp) -> Result<Option<Message>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(mut message) = by_id(&mut tx, id.as_str()).await? else {
            return Ok(None);
        };
        message.media = Some(media.clone());
        message.media_url = None;
        message.updated_at = at;
        sqlx::query(sql::SET_MESSAGE_BODY)
            .bind(message.id.as_str())
            .bind(json(&message.body()))
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(message))
    }

    async fn sessions_with_queued(&self) -> Result<Vec<SessionId>> {
        let ids: Vec<String> = sqlx::query_scalar(sql::SESSIONS_WITH_QUEUED).fetch_all(&self.pool).await.map_err(db_err)?;
        Ok(ids.iter().filter_map(|id| SessionId::parse(id).ok()).collect())
    }

    async fn unread_inbound(&self, session: &SessionId, chat: &Jid) -> Result<Vec<Message>> {
        let rows = sqlx::query_as::<_, MessageRow>(sql::UNREAD_INBOUND)
            .bind(session.as_str())
            .bind(chat.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        collect(rows)
    }

    async fn mark_read(&self, session: &SessionId, ids: &[MessageId], at: Timestamp) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut moved = 0;
        for id in ids {
            let done = sqlx::query(sql::MARK_READ)
                .bind(session.as_str())
                .bind(id.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            moved += done.rows_affected();
        }
        tx.commit().await.map_err(db_err)?;
        Ok(moved)
    }

    async fn apply_edit(&self, session: &SessionId, wa_message_id: &str, text: &str, at: Timestamp) -> Result<Option<Message>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(mut message) = by_wa_id_locked(&mut tx, session, wa_message_id).await? else {
            return Ok(None);
        };
        sqlx::query(sql::EDIT_MESSAGE)
            .bind(message.id.as_str())
            .bind(text)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        message.text = Some(text.to_owned());
        message.edited = true;
        message.updated_at = at;
        events::insert(&mut tx, &messages::edited_event(&message, text)).await?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(Some(message))
    }

    async fn apply_revoke(&self, session: &SessionId, wa_message_id: &str, from: &Jid, at: Timestamp) -> Result<Option<Message>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(mut message) = by_wa_id_locked(&mut tx, session, wa_message_id).await? else {
            return Ok(None);
        };
        sqlx::query(sql::REVOKE_MESSAGE)
            .bind(message.id.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        message.revoked = true;
        message.updated_at = at;
        events::insert(&mut tx, &messages::revoked_event(&message, from)).await?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(Some(message))
    }

    async fn record_reaction(&self, org: &OrgId, session: &SessionId, reaction: &ReactionRecord<'_>) -> Result<Event> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let target = by_wa_id(&mut tx, session, reaction.target).await?;
        let event = messages::reaction_event(org, session, target.as_ref().map(|m| &m.id), reaction);
        let event = events::insert(&mut tx, &event).await?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok(event)
    }

    async fn list_chats(&self, org: &OrgId, session: &SessionId, page: PageRequest<'_, MessageId>) -> Result<Page<Chat, MessageId>> {
        let size = page_size(page.size);
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql::LIST_CHATS)
            .bind(org.as_str())
            .bind(session.as_str())
            .bind(page.after.map(MessageId::as_str))
            .bind(i64::from(size) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let mut chats = Vec::with_capacity(rows.len());
        for (chat, last, unread) in rows {
            let Some(last_message) = by_id(&mut conn, &last).await? else { continue };
            let name: Option<Option<String>> = sqlx::query_scalar(sql::CHAT_NAME)
                .bind(session.as_str())
                .bind(chat.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
            chats.push(Chat {
                id: last_message.chat.clone(),
                name: name.flatten(),
                last_message,
                unread_count: u64::try_from(unread).unwrap_or(0),
            });
        }
        Ok(Page::from_overfetched(chats, size, |c| &c.last_message.id))
    }
}
