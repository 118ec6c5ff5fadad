//! Webhooks: another reader of the event log.
//!
//! - The **fan-out** ([`WebhookService::fan_out_now`], and a task that runs it whenever events
//!   are committed) turns each committed event into one delivery row per matching webhook,
//!   advancing a cursor stored in the same transaction: nothing is queued in memory, so a crash
//!   loses nothing and doubles nothing.
//! - **The dispatcher** claims due deliveries for the attempt slots that are free (with a
//!   lease; in event order per webhook, under a per-webhook limit) and runs each attempt in a
//!   task of its own ([`Deliverer::attempt`]): sign it (Standard Webhooks), POST it through the
//!   address guard, record the attempt (batched with the others that ended meanwhile) and
//!   schedule what follows. One claimer, woken when a slot frees up or work is queued: idle
//!   slots never race each other for the same rows.
//! - [`WebhookService`] is what the API calls: webhooks within one organization, their
//!   deliveries, `:test`, `:replay`, `:retry`, `:rotateSecret`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use wagate_core::{
    Delivery, DeliveryId, DeliveryStatus, EventType, NewEvent, NewWebhook, OrgId, SessionId, Webhook,
    WebhookId, WebhookSecret,
};
use wagate_egress::{AddressGuard, UrlError};
use wagate_store::prelude::*;
use wagate_store::{DeliveryRecord, Page, PageRequest, ReplayWindow, StoreError, WebhookUpdate};

use crate::metrics::Metrics;

mod delivery;
pub mod signing;

pub use delivery::Deliverer;

/// Events read per fan-out step.
const FAN_OUT_BATCH: u32 = 500;
/// Workers and the fan-out also look for work this often without being woken.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// How long resolving a webhook's host name may take when it is saved.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// `at` plus `d`, in whole milliseconds (what every backend keeps), saturating at a century
/// ahead (a schedule may say `1000w`).
pub(crate) fn after(at: wagate_core::Timestamp, d: Duration) -> wagate_core::Timestamp {
    use chrono::SubsecRound as _;
    let cap = chrono::Duration::days(36_500);
    (at + chrono::Duration::from_std(d).map_or(cap, |d| d.min(cap))).trunc_subsecs(3)
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// One attempt's limit, connecting included (`WAGATE_WEBHOOK_TIMEOUT`).
    pub timeout: Duration,
    /// Delays after the first attempt, then after each retry (`WAGATE_WEBHOOK_RETRY_SCHEDULE`).
    pub retry_schedule: Vec<Duration>,
    /// Loopback and private networks may be targets (`WAGATE_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Attempts in flight at once across all webhooks (`WAGATE_WEBHOOK_WORKERS`).
    pub workers: usize,
    /// Attempts in flight at once to one webhook (`WAGATE_WEBHOOK_CONCURRENCY`).
    pub per_webhook_concurrency: u32,
    /// A webhook with no successful attempt for this long is disabled (`failing`).
    pub failing_after: Duration,
    /// How long a rotated-out secret keeps signing.
    pub secret_overlap: Duration,
}

impl WebhookConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_RETRY_SCHEDULE: &'static str = "5s,5m,30m,2h,5h,10h,10h";
    /// Throughput to one webhook is bound by the attempts in flight to it (each keeps its
    /// place until its record commits): measured in docs/PERFORMANCE.md.
    pub const DEFAULT_WORKERS: usize = 64;
    pub const DEFAULT_PER_WEBHOOK: u32 = 16;

    pub fn guard(&self) -> AddressGuard {
        AddressGuard::new(self.allow_private)
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            retry_schedule: vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
                hours(2),
                hours(5),
                hours(10),
                hours(10),
            ],
            allow_private: false,
            workers: Self::DEFAULT_WORKERS,
            per_webhook_concurrency: Self::DEFAULT_PER_WEBHOOK,
            failing_after: hours(5 * 24),
            secret_overlap: hours(24),
        }
    }
}

/// Why a webhook operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is malformed or targets an address the guard refuses.
    #[error("invalid url: {0}")]
    Url(#[from] UrlError),
    /// The session scope names no session of the organization.
    #[error("no such session in this organization")]
    UnknownSession,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A webhook to create, parsed at the edge.
#[derive(Debug, Clone)]
pub struct CreateWebhook {
    pub url: String,
    /// `None`: every event type.
    pub events: Option<Vec<EventType>>,
    pub session: Option<SessionId>,
    pub description: Option<String>,
}

/// Webhooks of one organization, and the workers that deliver to them.
pub struct WebhookService {
    store: Arc<dyn Store>,
    config: Arc<WebhookConfig>,
    metrics: Arc<Metrics>,
    deliverer: Arc<Deliverer>,
    /// Wakes idle delivery workers when deliveries were queued.
    wake: Arc<Notify>,
    closed: watch::Sender<bool>,
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, config: WebhookConfig) -> Self {
        let config = Arc::new(config);
        let deliverer = Arc::new(Deliverer::new(Arc::clone(&store), Arc::clone(&config), Arc::clone(&metrics)));
        Self { store, config, metrics, deliverer, wake: Arc::new(Notify::new()), closed: watch::Sender::new(false) }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// The worker step, for tests and tools that drive deliveries by hand.
    pub fn deliverer(&self) -> &Arc<Deliverer> {
        &self.deliverer
    }

    pub async fn create(&self, org: &OrgId, req: CreateWebhook) -> Result<Webhook, WebhookError> {
        let url = self.config.guard().check_url_resolving(&req.url, RESOLVE_TIMEOUT).await?;
        if let Some(session) = &req.session {
            self.store.get_session(org, session).await?.ok_or(WebhookError::UnknownSession)?;
        }
        let new = NewWebhook {
            id: WebhookId::generate(),
            org: org.clone(),
            url: url.to_string(),
            events: req.events,
            session: req.session,
            description: req.description,
            secret: WebhookSecret::generate(),
            created_at: wagate_core::now(),
        };
        let webhook = self.store.insert_webhook(&new).await?;
        tracing::info!(webhook = %webhook.id, org = %org, "webhook created");
        Ok(webhook)
    }

    pub async fn list(&self, org: &OrgId, page: PageRequest<'_, WebhookId>) -> Result<Page<Webhook, WebhookId>, StoreError> {
        self.store.list_webhooks(org, page).await
    }

    pub async fn get(&self, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.store.get_webhook(org, id).await
    }

    /// Applies `update` (a new URL passes the guard first). Enabling wakes the workers: what
    /// waited is delivered.
    pub async fn update(&self, org: &OrgId, id: &WebhookId, mut update: WebhookUpdate) -> Result<Option<Webhook>, WebhookError> {
        if let Some(raw) = &update.url {
            update.url = Some(self.config.guard().check_url_resolving(raw, RESOLVE_TIMEOUT).await?.to_string());
        }
        let updated = self.store.update_webhook(org, id, &update, wagate_core::now()).await?;
        if update.enabled == Some(true) {
            self.wake.notify_waiters();
        }
        Ok(updated)
    }

    pub async fn delete(&self, org: &OrgId, id: &WebhookId) -> Result<bool, StoreError> {
        self.store.delete_webhook(org, id).await
    }

    /// A fresh secret; the current one keeps signing beside it for the overlap.
    pub async fn rotate_secret(&self, org: &OrgId, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        let now = wagate_core::now();
        let until = after(now, self.config.secret_overlap);
        self.store.rotate_webhook_secret(org, id, &WebhookSecret::generate(), until, now).await
    }

    /// Appends a `webhook.test` event queued for this webhook alone.
    pub async fn test(&self, webhook: &Webhook) -> Result<Delivery, StoreError> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TestData<'a> {
            webhook_id: &'a WebhookId,
        }
        let event = NewEvent::new(&webhook.org, None, EventType::WebhookTest, &TestData { webhook_id: &webhook.id });
        let (_, delivery) = self.store.enqueue_test(webhook, &event).await?;
        self.wake.notify_waiters();
        Ok(delivery)
    }

    /// Queues again every stored event of the window that the webhook accepts.
    pub async fn replay(&self, webhook: &Webhook, window: ReplayWindow) -> Result<u64, StoreError> {
        let queued = self.store.replay_deliveries(webhook, window, wagate_core::now()).await?;
        self.wake.notify_waiters();
        Ok(queued)
    }

    pub async fn deliveries(
        &self,
        org: &OrgId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        page: PageRequest<'_, DeliveryId>,
    ) -> Result<Page<DeliveryRecord, DeliveryId>, StoreError> {
        self.store.list_deliveries(org, webhook, status, page).await
    }

    pub async fn delivery(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        self.store.get_delivery(org, webhook, id).await
    }

    /// Queues the delivery again, due now, with a fresh retry schedule.
    pub async fn retry(&self, org: &OrgId, webhook: &WebhookId, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let retried = self.store.retry_delivery(org, webhook, id, wagate_core::now()).await?;
        self.wake.notify_waiters();
        Ok(retried)
    }

    /// Runs the fan-out until it has caught up with the log; returns the deliveries queued.
    pub async fn fan_out_now(&self) -> Result<u64, StoreError> {
        let mut queued = 0;
        loop {
            let step = self.store.fan_out(FAN_OUT_BATCH).await?;
            queued += step.deliveries;
            if step.deliveries > 0 {
                self.wake.notify_waiters();
            }
            if step.events < FAN_OUT_BATCH as usize {
                return Ok(queued);
            }
        }
    }

    /// Starts delivering, in the one gateway that owns the store: releases the claims of the
    /// process that ran before (killed mid-attempt, its deliveries are attempted again at
    /// once), then spawns the workers.
    pub async fn start(self: &Arc<Self>) -> Result<Vec<tokio::task::JoinHandle<()>>, StoreError> {
        let released = self.store.release_claims().await?;
        if released > 0 {
            tracing::info!(released, "webhook deliveries left in flight by the last run are queued again");
        }
        Ok(self.spawn_workers())
    }

    /// Starts the fan-out, the dispatcher (up to `config.workers` attempts at once) and the
    /// backlog gauge. They run until [`WebhookService::close`].
    pub fn spawn_workers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(Arc::clone(self).fan_out_loop()),
            tokio::spawn(Arc::clone(self).backlog_loop()),
            tokio::spawn(Arc::clone(self).dispatch_loop()),
        ]
    }

    /// Stops claiming; attempts in flight end on their own.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    async fn fan_out_loop(self: Arc<Self>) {
        let mut commits = self.store.event_commits();
        let mut closed = self.closed.subscribe();
        let mut failures = 0u32;
        loop {
            match self.fan_out_now().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "webhook fan-out cannot read the event log; retrying");
                }
            }
            let wait = if failures == 0 { SAFETY_POLL } else { Duration::from_millis(100 << failures.min(5)) };
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let workers = self.config.workers.max(1);
        let slots = Arc::new(Semaphore::new(workers));
        let mut closed = self.closed.subscribe();
        let mut failures = 0u32;
        loop {
            if *closed.borrow() {
                return;
            }
            // Registered before looking for work, so a wake-up in between is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let free = slots.available_permits();
            let wait = if free == 0 {
                // Every slot is busy: an attempt that ends wakes this loop.
                SAFETY_POLL
            } else {
                match self.deliverer.claim(free).await {
                    Ok(batch) if !batch.is_empty() => {
                        failures = 0;
                        let all = batch.len() == free;
                        for (claimed, event) in batch {
                            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                            let service = Arc::clone(&self);
                            tokio::spawn(async move {
                                if let Err(e) = service.deliverer.attempt(claimed, event).await {
                                    // The claim runs out and the delivery is attempted again.
                                    tracing::warn!(error = %e, "a webhook attempt could not be recorded; it will be attempted again");
                                }
                                drop(slot);
                                service.wake.notify_waiters();
                            });
                        }
                        if all {
                            continue;
                        }
                        // Nothing more is claimable now: the attempts just started wake this
                        // loop as they end.
                        SAFETY_POLL
                    }
                    Ok(_) if slots.available_permits() < workers => {
                        // Attempts in flight wake this loop as they end.
                        failures = 0;
                        SAFETY_POLL
                    }
                    Ok(_) => {
                        failures = 0;
                        self.until_next_due().await
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, failures, "webhook dispatcher cannot use the database; retrying");
                        Duration::from_millis(100 << failures.min(5))
                    }
                }
            };
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    /// How long the idle dispatcher may sleep (it is also woken when work is queued or an
    /// attempt ends): until the next retry is due, at most the safety poll. A delivery due already but
    /// not claimable waits for its webhook's attempts in flight, which wake the worker as they
    /// end; the short floor covers a retry that fell due between the claim and this query.
    async fn until_next_due(&self) -> Duration {
        const FLOOR: Duration = Duration::from_millis(50);
        match self.store.next_delivery_due().await {
            Ok(Some(due)) => (due - wagate_core::now()).to_std().unwrap_or(Duration::ZERO).clamp(FLOOR, SAFETY_POLL),
            _ => SAFETY_POLL,
        }
    }

    async fn backlog_loop(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        loop {
            match self.store.count_pending_deliveries().await {
                Ok(n) => {
                    self.metrics.webhook_backlog.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Err(e) => tracing::debug!(error = %e, "cannot count pending webhook deliveries"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }
}
