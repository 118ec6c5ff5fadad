//! The event log on PostgreSQL. Identity values are handed out at insert, not at commit, so
//! two concurrent writers could commit positions out of order and a reader resuming after the
//! larger one would never see the smaller. Appends therefore take a transaction-level
//! advisory lock just before inserting, held to commit: event-writing transactions commit
//! their events one after another, in position order.

use async_trait::async_trait;
use sqlx::PgConnection;
use wagate_core::{Event, EventId, NewEvent, OrgId, Timestamp};

use super::PostgresStore;
use crate::rows::EventRow;
use crate::sql::{self, db_err};
use crate::{EventFilter, EventStore, Page, PageRequest, Result, page_size};

const ORG_EVENTS: (&str, &str) = sql::org_events!("type IN (SELECT jsonb_array_elements_text($3::jsonb))");

/// The advisory lock key that orders the writers of the event log (`"wagate_ev"` in ASCII).
const EVENT_LOG_LOCK: i64 = 0x7761_6761_7465_5f65;

pub(super) async fn insert(conn: &mut PgConnection, event: &NewEvent) -> Result<Event> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENT_LOG_LOCK).execute(&mut *conn).await.map_err(db_err)?;
    sqlx::query_as::<_, EventRow>(sql::INSERT_EVENT)
        .bind(event.id.as_str())
        .bind(event.org.as_str())
        .bind(event.session.as_ref().map(|s| s.as_str()))
        .bind(event.kind.as_str())
        .bind(event.data.get())
        .bind(event.created_at)
        .fetch_one(conn)
        .await
        .map_err(db_err)?
        .into_event()
}

fn into_events(rows: Vec<EventRow>) -> Result<Vec<Event>> {
    rows.into_iter().map(EventRow::into_event).collect()
}

/// `$1` the positions.
const EVENTS_AT: &str = concat!("SELECT ", sql::event_columns!(), " FROM events WHERE seq = ANY($1)");

#[async_trait]
impl EventStore for PostgresStore {
    async fn list_events(&self, org: &OrgId, filter: &EventFilter, page: PageRequest<'_, EventId>) -> Result<Page<Event, EventId>> {
        let size = page_size(page.size);
        let rows = sqlx::query_as::<_, EventRow>(ORG_EVENTS.0)
            .bind(org.as_str())
            .bind(filter.session.as_ref().map(|s| s.as_str()))
            .bind(filter.types_json())
            .bind(page.after.map(|id| id.as_str()))
            .bind(i64::from(size) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Page::from_overfetched(into_events(rows)?, size, |e| &e.id))
    }

    async fn get_event(&self, org: &OrgId, id: &EventId) -> Result<Option<Event>> {
        sqlx::query_as::<_, EventRow>(sql::GET_EVENT)
            .bind(org.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(EventRow::into_event)
            .transpose()
    }

    async fn events_at(&self, seqs: &[i64]) -> Result<Vec<Event>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as::<_, EventRow>(EVENTS_AT)
            .bind(seqs)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        into_events(rows)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query_as::<_, EventRow>(sql::EVENTS_AFTER)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        into_events(rows)
    }

    async fn org_events_after(&self, org: &OrgId, filter: &EventFilter, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query_as::<_, EventRow>(ORG_EVENTS.1)
            .bind(org.as_str())
            .bind(filter.session.as_ref().map(|s| s.as_str()))
            .bind(filter.types_json())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        into_events(rows)
    }

    async fn last_event_seq(&self) -> Result<i64> {
        sqlx::query_scalar(sql::LAST_EVENT_SEQ).fetch_one(&self.pool).await.map_err(db_err)
    }

    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64> {
        let done = sqlx::query(sql::PRUNE_EVENTS).bind(before).bind(i64::from(limit)).execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected())
    }

    fn event_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }
}
