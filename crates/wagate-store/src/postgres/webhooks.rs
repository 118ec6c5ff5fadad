//! Webhooks and deliveries on PostgreSQL. A claim locks the row it takes with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass each other instead of waiting or
//! taking the same delivery; the fan-out locks its cursor row for its transaction.

use async_trait::async_trait;
use sqlx::PgConnection;
use wagate_core::{
    Delivery, DeliveryId, DeliveryStatus, Event, NewEvent, NewWebhook, OrgId, Timestamp, Webhook,
    WebhookId, WebhookSecret,
};

use super::{PostgresStore, events};
use crate::rows::{AttemptRow, DeliveryRow, EventRow, WebhookRow, event_types_json};
use crate::sql::{self, db_err};
use crate::webhooks::{AttemptRecord, Claimed, FanOut, ReplayWindow, WebhookUpdate, fan_out_targets, replay_batch, settle, webhook_updates, with_attempts, with_webhooks};
use crate::{DeliveryRecord, DeliveryStore, EventStore as _, Page, PageRequest, Result, WebhookStore, page_size};

/// Claims the next run of due deliveries: `$1` now, `$2` the lease's end, `$3` the most claimed
/// deliveries per webhook, `$4` the most to claim. Among enabled webhooks under that limit, the
/// one whose first due delivery has the lowest event position; of its due deliveries, as many
/// as its room and `$4` allow, in event order, locked with `SKIP LOCKED` (concurrent claims take
/// different rows; a row's terms are checked again once it is locked). Each webhook's first due
/// delivery is looked up on its own (`LATERAL`), so the cost follows the number of webhooks, not
/// the backlog, and a run is one statement: every lookup walks the index entries of deliveries
/// settled since the last vacuum, once per run instead of once per delivery.
const CLAIM_RUN: &str = concat!(
    "WITH pick AS (SELECT w.id AS webhook_id, LEAST($4, $3 - b.busy) AS room FROM webhooks w \
     CROSS JOIN LATERAL (SELECT COUNT(*) AS busy FROM deliveries c WHERE c.webhook_id = w.id \
     AND c.status = 'pending' AND c.claimed_until > $1) b \
     CROSS JOIN LATERAL (SELECT d.event_seq FROM deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending' \
     AND d.next_attempt_at <= $1 AND (d.claimed_until IS NULL OR d.claimed_until <= $1) ORDER BY d.event_seq LIMIT 1) f \
     WHERE w.enabled AND b.busy < $3 ORDER BY f.event_seq LIMIT 1) \
     UPDATE deliveries SET claimed_until = $2 WHERE id IN (SELECT d.id FROM deliveries d \
     WHERE d.webhook_id = (SELECT webhook_id FROM pick) AND d.status = 'pending' AND d.next_attempt_at <= $1 \
     AND (d.claimed_until IS NULL OR d.claimed_until <= $1) ORDER BY d.event_seq \
     LIMIT COALESCE((SELECT room FROM pick), 0) FOR UPDATE SKIP LOCKED) RETURNING ",
    sql::delivery_columns!()
);

/// The cursor, locked until the step commits: fan-out steps never overlap.
const FANOUT_POSITION_FOR_UPDATE: &str = "SELECT position FROM webhook_fanout WHERE id = 1 FOR UPDATE";

async fn insert_delivery(conn: &mut PgConnection, statement: &'static str, webhook: &Webhook, event: (&str, i64, &str), at: Timestamp) -> Result<u64> {
    let done = sqlx::query(statement)
        .bind(DeliveryId::generate().as_str())
        .bind(webhook.org.as_str())
        .bind(webhook.id.as_str())
        .bind(event.0)
        .bind(event.1)
        .bind(event.2)
        .bind(at)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected())
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn insert_webhook(&self, new: &NewWebhook) -> Result<Webhook> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        super::api_keys::ensure_org(&mut tx, &new.org, new.created_at).await?;
        let webhook = sqlx::query_as::<_, WebhookRow>(sql::INSERT_WEBHOOK)
            .bind(new.id.as_str())
            .bind(new.org.as_str())
            .bind(new.url.as_str())
            .bind(event_types_json(new.events.as_deref()))
            .bind(new.session.as_ref().map(|s| s.as_str()))
            .bind(new.description.as_deref())
            .bind(new.secret.expose())
            .bind(new.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .into_webhook()?;
        tx.commit().await.map_err(db_err)?;
        Ok(webhook)
    }

    async fn get_webhook(&self, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>> {
        sqlx::query_as::<_, WebhookRow>(sql::GET_WEBHOOK)
            .bind(org.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(WebhookRow::into_webhook)
            .transpose()
    }

    async fn list_webhooks(&self, org: &OrgId, page: PageRequest<'_, WebhookId>) -> Result<Page<Webhook, WebhookId>> {
        let size = page_size(page.size);
        let rows = sqlx::query_as::<_, WebhookRow>(sql::LIST_WEBHOOKS)
            .bind(org.as_str())
            .bind(page.after.map(|id| id.as_str()))
            .bind(i64::from(size) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let hooks = rows.into_iter().map(WebhookRow::into_webhook).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(hooks, size, |w| &w.id))
    }

    async fn update_webhook(&self, org: &OrgId, id: &WebhookId, update: &WebhookUpdate, at: Timestamp) -> Result<Option<Webhook>> {
        sqlx::query_as::<_, WebhookRow>(sql::UPDATE_WEBHOOK)
            .bind(org.as_str())
            .bind(id.as_str())
            .bind(update.url.as_deref())
            .bind(update.events.is_some())
            .bind(update.events.as_ref().and_then(|e| event_types_json(e.as_deref())))
            .bind(update.description.is_some())
            .bind(update.description.clone().flatten())
            .bind(update.enabled)
            .bind(at)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(WebhookRow::into_webhook)
            .transpose()
    }

    async fn delete_webhook(&self, org: &OrgId, id: &WebhookId) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_WEBHOOK)
            .bind(org.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn rotate_webhook_secret(
        &self,
        org: &OrgId,
        id: &WebhookId,
        secret: &WebhookSecret,
        overlap_until: Timestamp,
        at: Timestamp,
    ) -> Result<Option<Webhook>> {
        sqlx::query_as::<_, WebhookRow>(sql::ROTATE_WEBHOOK_SECRET)
            .bind(org.as_str())
            .bind(id.as_str())
            .bind(secret.expose())
            .bind(overlap_until)
            .bind(at)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(WebhookRow::into_webhook)
            .transpose()
    }
}

#[async_trait]
impl DeliveryStore for PostgresStore {
    async fn fan_out(&self, limit: u32) -> Result<FanOut> {
        // Nothing new: no need for the write turn.
        if self.fan_out_position().await? >= self.last_event_seq().await? {
            return Ok(FanOut::default());
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let position: i64 = sqlx::query_scalar(FANOUT_POSITION_FOR_UPDATE).fetch_one(&mut *tx).await.map_err(db_err)?;
        let events = sqlx::query_as::<_, EventRow>(sql::EVENTS_AFTER)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(EventRow::into_event)
            .collect::<Result<Vec<Event>>>()?;
        let Some(last) = events.last().map(|e| e.seq) else {
            tx.commit().await.map_err(db_err)?;
            return Ok(FanOut::default());
        };
        let hooks = sqlx::query_as::<_, WebhookRow>(sql::ALL_WEBHOOKS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(WebhookRow::into_webhook)
            .collect::<Result<Vec<_>>>()?;
        let now = wagate_core::now();
        let mut deliveries = 0;
        for (webhook, event) in fan_out_targets(&hooks, &events) {
            let key = (event.id.as_str(), event.seq, event.kind.as_str());
            deliveries += insert_delivery(&mut tx, sql::INSERT_DELIVERY, webhook, key, now).await?;
        }
        sqlx::query(sql::SET_FANOUT_POSITION).bind(last).execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(FanOut { events: events.len(), deliveries })
    }

    async fn fan_out_position(&self) -> Result<i64> {
        sqlx::query_scalar(sql::FANOUT_POSITION).fetch_one(&self.pool).await.map_err(db_err)
    }

    async fn enqueue_test(&self, webhook: &Webhook, event: &NewEvent) -> Result<(Event, Delivery)> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let event = events::insert(&mut tx, event).await?;
        let delivery = sqlx::query_as::<_, DeliveryRow>(sql::INSERT_NEW_DELIVERY)
            .bind(DeliveryId::generate().as_str())
            .bind(webhook.org.as_str())
            .bind(webhook.id.as_str())
            .bind(event.id.as_str())
            .bind(event.seq)
            .bind(event.kind.as_str())
            .bind(event.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .into_delivery()?;
        tx.commit().await.map_err(db_err)?;
        self.commits.send_modify(|n| *n += 1);
        Ok((event, delivery))
    }

    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, per_webhook: u32, limit: u32) -> Result<Vec<Claimed>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut claimed = Vec::new();
        while claimed.len() < limit as usize {
            let rows = sqlx::query_as::<_, DeliveryRow>(CLAIM_RUN)
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(per_webhook))
                .bind(i64::from(limit) - claimed.len() as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                claimed.push(row.into_delivery()?);
            }
        }
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // The webhooks as they are now, in the claim's transaction.
        let mut webhooks: Vec<Webhook> = Vec::new();
        for delivery in &claimed {
            if webhooks.iter().any(|w| w.id == delivery.webhook) {
                continue;
            }
            let webhook = sqlx::query_as::<_, WebhookRow>(sql::GET_WEBHOOK_UNSCOPED)
                .bind(delivery.webhook.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            webhooks.extend(webhook.map(WebhookRow::into_webhook).transpose()?);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(with_webhooks(claimed, &webhooks))
    }

    async fn release_claims(&self) -> Result<u64> {
        let done = sqlx::query(sql::RELEASE_CLAIMS).execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn record_attempts(&self, records: &[(DeliveryId, AttemptRecord<'_>)]) -> Result<Vec<Delivery>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut recorded = Vec::with_capacity(records.len());
        for (id, record) in records {
            let attempt = record.attempt;
            let (status, next) = settle(record.next);
            sqlx::query(sql::INSERT_ATTEMPT)
                .bind(id.as_str())
                .bind(attempt.at)
                .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
                .bind(attempt.response_status.map(i32::from))
                .bind(attempt.error.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let settled = sqlx::query_as::<_, DeliveryRow>(sql::SETTLE_ATTEMPT)
                .bind(id.as_str())
                .bind(status.as_str())
                .bind(next)
                .bind(attempt.at)
                .bind(attempt.response_status.map(i32::from))
                .bind(attempt.error.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            // A delivery gone (its webhook deleted meanwhile) is left out.
            if let Some(row) = settled {
                recorded.push(row.into_delivery()?);
            }
        }
        for (webhook, succeeded, at, disable) in webhook_updates(records) {
            sqlx::query(sql::WEBHOOK_AFTER_ATTEMPT)
                .bind(webhook.as_str())
                .bind(succeeded)
                .bind(at)
                .bind(disable.map(|r| r.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(recorded)
    }

    async fn retry_delivery(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId, at: Timestamp) -> Result<Option<Delivery>> {
        sqlx::query_as::<_, DeliveryRow>(sql::RETRY_DELIVERY)
            .bind(org.as_str())
            .bind(webhook.as_str())
            .bind(id.as_str())
            .bind(at)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(DeliveryRow::into_delivery)
            .transpose()
    }

    async fn replay_deliveries(&self, webhook: &Webhook, window: ReplayWindow, at: Timestamp) -> Result<u64> {
        let (mut after, mut queued) = (0, 0);
        loop {
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            let rows: Vec<(i64, String, String)> = sqlx::query_as(sql::REPLAY_EVENTS)
                .bind(webhook.org.as_str())
                .bind(window.since)
                .bind(window.until)
                .bind(webhook.session.as_ref().map(|s| s.as_str()))
                .bind(webhook.id.as_str())
                .bind(after)
                .bind(i64::from(replay_batch::SIZE))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            for (seq, event, kind) in replay_batch::accepted(webhook, &rows) {
                insert_delivery(&mut tx, sql::REQUEUE_DELIVERY, webhook, (event, seq, kind), at).await?;
                queued += 1;
            }
            tx.commit().await.map_err(db_err)?;
            match rows.last() {
                Some((seq, _, _)) if rows.len() == replay_batch::SIZE as usize => after = *seq,
                _ => return Ok(queued),
            }
        }
    }

    async fn list_deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        page: PageRequest<'_, DeliveryId>,
    ) -> Result<Page<DeliveryRecord, DeliveryId>> {
        let size = page_size(page.size);
        let (status, after, limit) = (status.map(|s| s.as_str()), page.after.map(|id| id.as_str()), i64::from(size) + 1);
        let mut tx = self.read_snapshot().await?;
        let rows = sqlx::query_as::<_, DeliveryRow>(sql::LIST_DELIVERIES)
            .bind(org.as_str())
            .bind(webhook.as_str())
            .bind(status)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let attempts = sqlx::query_as::<_, AttemptRow>(sql::LIST_DELIVERY_ATTEMPTS)
            .bind(org.as_str())
            .bind(webhook.as_str())
            .bind(status)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let deliveries = rows.into_iter().map(DeliveryRow::into_delivery).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(with_attempts(deliveries, attempts)?, size, |(d, _)| &d.id))
    }

    async fn get_delivery(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        let mut tx = self.read_snapshot().await?;
        let Some(row) = sqlx::query_as::<_, DeliveryRow>(sql::GET_DELIVERY)
            .bind(org.as_str())
            .bind(webhook.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query_as::<_, AttemptRow>(sql::DELIVERY_ATTEMPTS)
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(with_attempts(vec![row.into_delivery()?], attempts)?.pop())
    }

    async fn count_pending_deliveries(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_PENDING_DELIVERIES).fetch_one(&self.pool).await.map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn next_delivery_due(&self) -> Result<Option<Timestamp>> {
        let due: Option<Option<Timestamp>> =
            sqlx::query_scalar(sql::NEXT_DELIVERY_DUE).fetch_optional(&self.pool).await.map_err(db_err)?;
        Ok(due.flatten())
    }
}
