//! Webhooks and their deliveries: the aggregates [`WebhookStore`] and [`DeliveryStore`].
//!
//! A delivery is one event for one webhook (unique per pair). It is created by the fan-out,
//! which tails the event log from a cursor stored beside the deliveries and advances it in the
//! transaction that inserts them ([`DeliveryStore::fan_out`]), so a crash neither loses nor
//! doubles one. Delivery workers claim due deliveries with a lease
//! ([`DeliveryStore::claim_deliveries`]) and record each attempt with its outcome
//! ([`DeliveryStore::record_attempt`]).

use std::collections::HashMap;

use async_trait::async_trait;
use wagate_core::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus, DisabledReason, Event, EventType, NewEvent,
    NewWebhook, OrgId, Timestamp, Webhook, WebhookId, WebhookSecret,
};

use crate::rows::AttemptRow;
use crate::{Page, PageRequest, Result};

/// A change of a webhook's client-set fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    /// `Some(None)`: every event type.
    pub events: Option<Option<Vec<EventType>>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// `true` enables (clearing the reason and the failure clock), `false` disables with the
    /// reason `manual` unless it is already disabled for another reason.
    pub enabled: Option<bool>,
}

/// Webhook endpoints, per organization.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Inserts an enabled webhook (creating its organization if new).
    async fn insert_webhook(&self, new: &NewWebhook) -> Result<Webhook>;
    async fn get_webhook(&self, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>>;
    /// An organization's webhooks, newest first.
    async fn list_webhooks(&self, org: &OrgId, page: PageRequest<'_, WebhookId>) -> Result<Page<Webhook, WebhookId>>;
    /// `Ok(None)` when no such webhook in the organization.
    async fn update_webhook(&self, org: &OrgId, id: &WebhookId, update: &WebhookUpdate, at: Timestamp) -> Result<Option<Webhook>>;
    /// Deletes the webhook with its deliveries. False when no such webhook in the organization.
    async fn delete_webhook(&self, org: &OrgId, id: &WebhookId) -> Result<bool>;
    /// Makes `secret` the current secret; the replaced one keeps signing until `overlap_until`.
    async fn rotate_webhook_secret(
        &self,
        org: &OrgId,
        id: &WebhookId,
        secret: &WebhookSecret,
        overlap_until: Timestamp,
        at: Timestamp,
    ) -> Result<Option<Webhook>>;
}

/// What one fan-out step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Events read past the cursor (0: the cursor is at the end of the log).
    pub events: usize,
    /// Deliveries created.
    pub deliveries: u64,
}

/// A delivery claimed by a worker, with its webhook as it was at the claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub webhook: Webhook,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    /// Stays pending; tried again at this time.
    RetryAt(Timestamp),
    Failed,
}

/// The outcome of one attempt, recorded in one transaction with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub webhook: &'a WebhookId,
    pub attempt: &'a DeliveryAttempt,
    pub next: NextStep,
    /// Disables the webhook (410 Gone, five days of failure).
    pub disable: Option<DisabledReason>,
}

/// The creation-time window of a replay: `since` inclusive, `until` exclusive (open when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    pub since: Timestamp,
    pub until: Option<Timestamp>,
}

/// Deliveries of events to webhooks.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// One step of the fan-out, in one transaction: reads up to `limit` events after the stored
    /// cursor, inserts a pending delivery for every webhook each one [`Webhook::matches`]
    /// (enabled or not: a disabled webhook's deliveries wait for it to be enabled again), and
    /// moves the cursor past them.
    async fn fan_out(&self, limit: u32) -> Result<FanOut>;
    /// The position of the last event the fan-out has handled.
    async fn fan_out_position(&self) -> Result<i64>;
    /// Appends a `webhook.test` event and queues it for `webhook` alone, in one transaction.
    async fn enqueue_test(&self, webhook: &Webhook, event: &NewEvent) -> Result<(Event, Delivery)>;
    /// Claims up to `limit` due pending deliveries, until `lease_until`, in one transaction, a
    /// run at a time: among enabled webhooks that have fewer than `per_webhook` deliveries
    /// claimed (counting the ones just claimed), the one whose first due delivery has the
    /// lowest event position gets its due deliveries claimed in event order, as many as its
    /// room and the batch allow; then the next. Claims never overlap: a claimed delivery is not
    /// claimable again before its lease ends. Returned in event order, so a webhook's
    /// deliveries come in event order.
    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, per_webhook: u32, limit: u32) -> Result<Vec<Claimed>>;
    /// [`DeliveryStore::claim_deliveries`] for one.
    async fn claim_delivery(&self, now: Timestamp, lease_until: Timestamp, per_webhook: u32) -> Result<Option<Claimed>> {
        Ok(self.claim_deliveries(now, lease_until, per_webhook, 1).await?.pop())
    }
    /// Ends every claim. Only for the store's one owner at start-up: the claims it finds belong
    /// to a process that is gone, and their deliveries need not wait for the leases to run out.
    async fn release_claims(&self) -> Result<u64>;
    /// Records attempts and applies their outcomes (releasing the claims), all in one
    /// transaction, in the order given. Returns the deliveries as they are after, in that
    /// order; one that no longer exists (its webhook was deleted meanwhile) is left out.
    async fn record_attempts(&self, records: &[(DeliveryId, AttemptRecord<'_>)]) -> Result<Vec<Delivery>>;
    /// [`DeliveryStore::record_attempts`] for one.
    async fn record_attempt(&self, id: &DeliveryId, record: &AttemptRecord<'_>) -> Result<Delivery> {
        let mut done = self.record_attempts(&[(id.clone(), record.clone())]).await?;
        done.pop().ok_or_else(|| crate::StoreError::Backend(format!("delivery {id} no longer exists")))
    }
    /// Queues a delivery again, due at `at`, with a fresh retry schedule.
    async fn retry_delivery(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId, at: Timestamp) -> Result<Option<Delivery>>;
    /// Queues every stored event of the window that `webhook` accepts (its session scope and
    /// types; `webhook.test` events only when they were sent to it), due at `at`, whether it
    /// was delivered before or not. Returns how many.
    async fn replay_deliveries(&self, webhook: &Webhook, window: ReplayWindow, at: Timestamp) -> Result<u64>;
    /// A webhook's deliveries, newest first, optionally of one status, each with its attempts;
    /// read in one snapshot.
    async fn list_deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        page: PageRequest<'_, DeliveryId>,
    ) -> Result<Page<DeliveryRecord, DeliveryId>>;
    /// A delivery with its attempts, read in one snapshot (the attempts always match the
    /// delivery's own counters and times).
    async fn get_delivery(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId) -> Result<Option<DeliveryRecord>>;
    /// Pending deliveries of enabled webhooks, across organizations (the backlog).
    async fn count_pending_deliveries(&self) -> Result<u64>;
    /// The earliest due time of a pending, unclaimed delivery of an enabled webhook.
    async fn next_delivery_due(&self) -> Result<Option<Timestamp>>;
}

/// The (webhook, event) pairs a fan-out step queues, in event order.
pub(crate) fn fan_out_targets<'a>(hooks: &'a [Webhook], events: &'a [Event]) -> impl Iterator<Item = (&'a Webhook, &'a Event)> {
    events.iter().flat_map(move |event| hooks.iter().filter(|hook| hook.matches(event)).map(move |hook| (hook, event)))
}

/// The delivery's status and next attempt time after an attempt.
/// Pairs claimed deliveries with their webhooks (as read after the claim); a delivery whose
/// webhook is gone (deleted since, which took its deliveries with it) is dropped.
pub(crate) fn with_webhooks(mut deliveries: Vec<Delivery>, webhooks: &[Webhook]) -> Vec<Claimed> {
    // Claimed a webhook's run at a time, rows in no set order: put them in event order.
    deliveries.sort_by_key(|d| d.event_seq);
    deliveries
        .into_iter()
        .filter_map(|delivery| {
            let webhook = webhooks.iter().find(|w| w.id == delivery.webhook)?.clone();
            Some(Claimed { delivery, webhook })
        })
        .collect()
}

/// The webhook updates that follow a batch of attempts: `(webhook, succeeded, at, disable)`,
/// each to run as `WEBHOOK_AFTER_ATTEMPT`. A webhook whose attempts of the batch all succeeded
/// (the common case) gets one update, with the same effect as one per attempt; any other
/// webhook gets one per attempt, in order.
pub(crate) fn webhook_updates<'a>(records: &'a [(DeliveryId, AttemptRecord<'a>)]) -> Vec<(&'a WebhookId, bool, Timestamp, Option<DisabledReason>)> {
    let mut updates = Vec::new();
    let mut seen: Vec<&WebhookId> = Vec::new();
    for (_, first) in records {
        if seen.contains(&first.webhook) {
            continue;
        }
        seen.push(first.webhook);
        let mut mine = records.iter().map(|(_, r)| r).filter(|r| r.webhook == first.webhook);
        if mine.clone().all(|r| r.next == NextStep::Succeeded && r.disable.is_none()) {
            let last = mine.next_back().unwrap_or(first);
            updates.push((first.webhook, true, last.attempt.at, None));
        } else {
            updates.extend(mine.map(|r| (r.webhook, r.next == NextStep::Succeeded, r.attempt.at, r.disable)));
        }
    }
    updates
}

/// A delivery with its attempts, oldest first.
pub type DeliveryRecord = (Delivery, Vec<DeliveryAttempt>);

/// Pairs deliveries with their attempts (rows ordered by delivery, then attempt); attempts of
/// deliveries not in `deliveries` are dropped.
pub(crate) fn with_attempts(deliveries: Vec<Delivery>, rows: Vec<AttemptRow>) -> Result<Vec<DeliveryRecord>> {
    let mut by_delivery: HashMap<String, Vec<DeliveryAttempt>> = HashMap::new();
    for row in rows {
        let delivery = row.delivery_id.clone();
        by_delivery.entry(delivery).or_default().push(row.into_attempt()?);
    }
    Ok(deliveries
        .into_iter()
        .map(|d| {
            let attempts = by_delivery.remove(d.id.as_str()).unwrap_or_default();
            (d, attempts)
        })
        .collect())
}

pub(crate) fn settle(next: NextStep) -> (DeliveryStatus, Option<Timestamp>) {
    match next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
        NextStep::Failed => (DeliveryStatus::Failed, None),
    }
}

/// A replay reads the window's events in batches: `(seq, id, type)` rows, the session scope and
/// the webhook's own `webhook.test` events chosen by the query, the type filter here.
pub(crate) mod replay_batch {
    use wagate_core::{EventType, Webhook};

    pub(crate) const SIZE: u32 = 500;

    pub(crate) fn accepted<'a>(webhook: &'a Webhook, rows: &'a [(i64, String, String)]) -> impl Iterator<Item = (i64, &'a str, &'a str)> {
        rows.iter()
            .filter(|(_, _, kind)| {
                let kind = EventType::parse(kind);
                kind == Some(EventType::WebhookTest)
                    || kind.is_some_and(|k| webhook.events.as_ref().is_none_or(|types| types.contains(&k)))
            })
            .map(|(seq, id, kind)| (*seq, id.as_str(), kind.as_str()))
    }
}
