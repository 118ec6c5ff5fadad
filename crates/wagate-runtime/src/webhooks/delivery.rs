//! One delivery attempt, start to end: take the next claimed delivery (claimed a batch at a
//! time), sign and POST its event, record the attempt and what follows (success, a retry at a
//! time, failure, a disabled webhook). [`Deliverer::deliver_next`] is the whole step, so a test can drive it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use wagate_core::{Delivery, DeliveryAttempt, DisabledReason, Event, Timestamp, Webhook};
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
    /// Deliveries claimed and not yet taken by a worker, in claim order. Claims are taken a
    /// batch at a time (one transaction for up to one per worker), under this lock, so the
    /// per-webhook limit (counted in the claim's own query, buffered claims included) is exact.
    claimed: tokio::sync::Mutex<VecDeque<Claimed>>,
}

impl Deliverer {
    pub fn new(store: Arc<dyn Store>, config: Arc<WebhookConfig>, metrics: Arc<Metrics>) -> Self {
        let client = EgressClient::new(config.guard(), config.timeout, concat!("wagate-webhooks/", env!("CARGO_PKG_VERSION")));
        Self { store, client, config, metrics, claimed: tokio::sync::Mutex::new(VecDeque::new()) }
    }

    /// The next claimed delivery: from the batch claimed before, or from a new batch.
    async fn next_claimed(&self) -> Result<Option<Claimed>, StoreError> {
        let mut claimed = self.claimed.lock().await;
        if claimed.is_empty() {
            let now = wagate_core::now();
            // A claim may wait in the batch for about one attempt of another worker before its
            // own attempt starts.
            let lease = after(now, 2 * self.config.timeout + LEASE_MARGIN);
            let batch = u32::try_from(self.config.workers.max(1)).unwrap_or(u32::MAX);
            claimed.extend(self.store.claim_deliveries(now, lease, self.config.per_webhook_concurrency, batch).await?);
        }
        Ok(claimed.pop_front())
    }

    /// Claims the next due delivery, attempts it and records the attempt. `Ok(None)` when
    /// nothing is due.
    pub async fn deliver_next(&self) -> Result<Option<Delivery>, StoreError> {
        let Some(Claimed { delivery, webhook }) = self.next_claimed().await? else { return Ok(None) };
        let event = self.store.get_event(&delivery.org, &delivery.event).await?;
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
        let recorded = self.store.record_attempt(&delivery.id, &record).await?;
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
        Ok(Some(recorded))
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
