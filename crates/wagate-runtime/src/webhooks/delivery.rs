//! Delivery attempts, start to end: claim a batch of due deliveries (with the batch's events
//! read in one query), sign and POST each event, record the attempt and what follows (success,
//! a retry at a time, failure, a disabled webhook). [`Deliverer::claim`] and
//! [`Deliverer::attempt`] are what the dispatcher runs; [`Deliverer::deliver_next`] is both
//! for one delivery, so a test can drive it.
//!
//! Attempts are recorded in batches: a worker hands its record to the recorder and waits for
//! the transaction that holds it to commit, and the recorder commits whatever records arrived
//! while the previous batch was committing, together. A delivery's claim lasts until its record
//! commits, so a crash in between has it attempted again (at least once, never lost).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};
use wagate_core::{Delivery, DeliveryAttempt, DeliveryId, DisabledReason, Event, Timestamp, Webhook, WebhookId};
use wagate_egress::{EgressClient, Url};
use wagate_store::prelude::*;
use wagate_store::{AttemptRecord, Claimed, NextStep, StoreError};

use super::{WebhookConfig, after, signing};
use crate::metrics::{Metrics, OutcomeLabels};

/// A claim outlives its wait in the batch and the request's timeout by this much, so it never
/// runs out mid-attempt.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// At most this much of an answer's body is read (then the connection is dropped).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most attempts recorded in one transaction.
const MAX_RECORD_BATCH: usize = 256;

/// What an attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An HTTP answer, with its `Retry-After` (on 429 and 503).
    Status { status: u16, retry_after: Option<Duration> },
    /// No answer: refused address, connection error, timeout...
    Failed(String),
    /// Nothing to send: the event is gone from the log (past the retention).
    EventGone,
}

/// Sends deliveries. Cheap to share; one per gateway.
pub struct Deliverer {
    store: Arc<dyn Store>,
    client: EgressClient,
    config: Arc<WebhookConfig>,
    metrics: Arc<Metrics>,
    /// The recorder's queue, started with the first record.
    recorder: OnceLock<mpsc::UnboundedSender<PendingRecord>>,
}

/// An attempt waiting for the recorder.
struct PendingRecord {
    delivery: DeliveryId,
    webhook: WebhookId,
    attempt: DeliveryAttempt,
    next: NextStep,
    disable: Option<DisabledReason>,
    done: oneshot::Sender<Result<Delivery, StoreError>>,
}

/// Commits the records that queued up while the last batch was committing, in one transaction
/// each batch, until every sender is gone.
async fn record_batches(store: Arc<dyn Store>, mut queue: mpsc::UnboundedReceiver<PendingRecord>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        let records: Vec<(DeliveryId, AttemptRecord<'_>)> = batch
            .iter()
            .map(|p| (p.delivery.clone(), AttemptRecord { webhook: &p.webhook, attempt: &p.attempt, next: p.next, disable: p.disable }))
            .collect();
        let outcome = store.record_attempts(&records).await;
        drop(records);
        match outcome {
            Ok(mut recorded) => {
                for pending in batch.drain(..) {
                    let found = recorded.iter().position(|d| d.id == pending.delivery).map(|i| recorded.swap_remove(i));
                    let answer = found.ok_or_else(|| StoreError::Backend(format!("delivery {} no longer exists (its webhook was deleted)", pending.delivery)));
                    let _ = pending.done.send(answer);
                }
            }
            Err(e) => {
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

impl Deliverer {
    pub fn new(store: Arc<dyn Store>, config: Arc<WebhookConfig>, metrics: Arc<Metrics>) -> Self {
        let client = EgressClient::new(config.guard(), config.timeout, concat!("wagate-webhooks/", env!("CARGO_PKG_VERSION")));
        Self { store, client, config, metrics, recorder: OnceLock::new() }
    }

    /// Records an attempt with the ones of other workers; returns once it committed.
    async fn record(&self, delivery: &Delivery, record: AttemptRecord<'_>) -> Result<Delivery, StoreError> {
        let queue = self.recorder.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(record_batches(Arc::clone(&self.store), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let pending = PendingRecord {
            delivery: delivery.id.clone(),
            webhook: record.webhook.clone(),
            attempt: record.attempt.clone(),
            next: record.next,
            disable: record.disable,
            done,
        };
        let closed = || StoreError::Backend("the webhook recorder stopped".into());
        queue.send(pending).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Claims up to `limit` due deliveries (in event order per webhook, under the per-webhook
    /// limit), each with its event (`None`: gone from the log), read in one query.
    pub async fn claim(&self, limit: usize) -> Result<Vec<(Claimed, Option<Event>)>, StoreError> {
        let now = wagate_core::now();
        // A claim may wait for a free worker for about one attempt before its own starts.
        let lease = after(now, 2 * self.config.timeout + LEASE_MARGIN);
        let limit = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
        let batch = self.store.claim_deliveries(now, lease, self.config.per_webhook_concurrency, limit).await?;
        let seqs: Vec<i64> = batch.iter().map(|c| c.delivery.event_seq).collect();
        let events = self.store.events_at(&seqs).await?;
        // One event may go to several webhooks of the batch: each gets its copy.
        Ok(batch
            .into_iter()
            .map(|c| {
                let d = &c.delivery;
                let event = events.iter().find(|e| e.seq == d.event_seq && e.id == d.event && e.org == d.org).cloned();
                (c, event)
            })
            .collect())
    }

    /// Claims the next due delivery, attempts it and records the attempt. `Ok(None)` when
    /// nothing is due.
    pub async fn deliver_next(&self) -> Result<Option<Delivery>, StoreError> {
        let Some((claimed, event)) = self.claim(1).await?.pop() else { return Ok(None) };
        self.attempt(claimed, event).await.map(Some)
    }

    /// Attempts a claimed delivery and records the attempt; returns the delivery after.
    pub async fn attempt(&self, claimed: Claimed, event: Option<Event>) -> Result<Delivery, StoreError> {
        let Claimed { delivery, webhook } = claimed;
        let at = wagate_core::now();
        let started = Instant::now();
        let answer = match &event {
            Some(event) => self.post(&webhook, event, at).await,
            None => Answer::EventGone,
        };
        let elapsed = started.elapsed();
        self.metrics.webhook_attempt_duration.observe(elapsed.as_secs_f64());
        let attempt = DeliveryAttempt {
            at,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            response_status: match answer {
                Answer::Status { status, .. } => Some(status),
                _ => None,
            },
            error: error_text(&answer),
        };
        let (next, disable) = self.next_step(&delivery, &webhook, &answer, at);
        let record = AttemptRecord { webhook: &webhook.id, attempt: &attempt, next, disable };
        let recorded = self.record(&delivery, record).await?;
        let outcome = match next {
            NextStep::Succeeded => "succeeded",
            NextStep::RetryAt(_) => "retrying",
            NextStep::Failed => "failed",
        };
        self.metrics.webhook_deliveries.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
        if let Some(reason) = disable {
            tracing::warn!(webhook = %webhook.id, org = %webhook.org, reason = reason.as_str(), "webhook disabled");
        }
        tracing::debug!(delivery = %recorded.id, webhook = %webhook.id, outcome, status = ?attempt.response_status, "webhook attempt");
        Ok(recorded)
    }

    /// Signs and POSTs the event's envelope (the bytes `GET /api/v1/events/{id}` answers).
    async fn post(&self, webhook: &Webhook, event: &Event, at: Timestamp) -> Answer {
        let body = event.envelope_json();
        let timestamp = at.timestamp();
        let signature = signing::signature_header(&webhook.signing_secrets(at), event.id.as_str(), timestamp, &body);
        let Ok(url) = Url::parse(&webhook.url) else { return Answer::Failed("the webhook URL is not valid".to_owned()) };
        let request = match self.client.request(reqwest::Method::POST, &url) {
            Ok(request) => request,
            Err(refused) => return Answer::Failed(refused.to_string()),
        };
        let sent = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Answer::Failed(wagate_egress::describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = matches!(status, 429 | 503)
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, at)))
            .flatten();
        // Read a little of the answer so the connection can be reused; a large one is cut off.
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            read += chunk.len();
            if read > MAX_ANSWER_BYTES {
                break;
            }
        }
        Answer::Status { status, retry_after }
    }

    /// What follows an attempt: success on 2xx; a 410 fails the delivery and disables the
    /// webhook; anything else is retried on the schedule (or after `Retry-After`) until the
    /// schedule is spent; a webhook with no success for `failing_after` is disabled (its
    /// deliveries wait for it).
    pub(crate) fn next_step(&self, delivery: &Delivery, webhook: &Webhook, answer: &Answer, at: Timestamp) -> (NextStep, Option<DisabledReason>) {
        match answer {
            Answer::Status { status: 200..=299, .. } => return (NextStep::Succeeded, None),
            Answer::Status { status: 410, .. } => return (NextStep::Failed, Some(DisabledReason::Gone)),
            Answer::EventGone => return (NextStep::Failed, None),
            _ => {}
        }
        let failing_since = webhook.failing_since.unwrap_or(at);
        let failing = chrono::Duration::from_std(self.config.failing_after).is_ok_and(|limit| at - failing_since >= limit);
        let disable = failing.then_some(DisabledReason::Failing);
        let done = delivery.cycle_attempts as usize;
        let Some(delay) = self.config.retry_schedule.get(done) else { return (NextStep::Failed, disable) };
        let delay = match answer {
            Answer::Status { retry_after: Some(wait), .. } => (*wait).min(MAX_RETRY_AFTER),
            _ => jittered(*delay),
        };
        (NextStep::RetryAt(after(at, delay)), disable)
    }
}

/// The attempt's `error`: `None` on success.
fn error_text(answer: &Answer) -> Option<String> {
    match answer {
        Answer::Status { status: 200..=299, .. } => None,
        Answer::Status { status, .. } => Some(format!("the endpoint answered HTTP {status}")),
        Answer::Failed(why) => Some(why.clone()),
        Answer::EventGone => Some("the event is no longer stored (past the event retention)".to_owned()),
    }
}

/// `delay` spread by up to a fifth either way, so that retries of many deliveries that failed
/// together do not all arrive together.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((when.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
