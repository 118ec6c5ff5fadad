//! Webhooks: endpoints that receive the event log, and the deliveries of events to them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;

use crate::{DeliveryId, Event, EventId, EventType, OrgId, SessionId, Timestamp, WebhookId};

/// A signing secret: `whsec_` + base64 of 32 random bytes (Standard Webhooks). Its `Debug`
/// hides it; only [`WebhookSecret::expose`] shows it (to the client, once).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{}{}", Self::PREFIX, STANDARD.encode(bytes)))
    }

    /// `whsec_` + standard base64 of at least one byte.
    pub fn parse(s: &str) -> Option<Self> {
        let encoded = s.strip_prefix(Self::PREFIX)?;
        let bytes = STANDARD.decode(encoded).ok()?;
        (!bytes.is_empty()).then(|| Self(s.to_owned()))
    }

    /// The HMAC key: the bytes the base64 after `whsec_` encodes.
    pub fn key(&self) -> Vec<u8> {
        STANDARD.decode(&self.0[Self::PREFIX.len()..]).expect("a parsed secret decodes")
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_***")
    }
}

/// Why a webhook is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// Disabled by a client (`PATCH {enabled: false}`).
    Manual,
    /// The endpoint answered 410 Gone.
    Gone,
    /// No delivery succeeded for five days.
    Failing,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "manual",
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Manual, Self::Gone, Self::Failing].into_iter().find(|r| r.as_str() == s)
    }
}

/// A webhook endpoint of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub org: OrgId,
    /// An `http` or `https` URL that passed the address guard when saved.
    pub url: String,
    /// `None`: every event type; `Some`: only these (never empty).
    pub events: Option<Vec<EventType>>,
    /// `None`: every session of the organization.
    pub session: Option<SessionId>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<DisabledReason>,
    pub secret: WebhookSecret,
    /// The secret replaced by the last rotation, signing beside the current one until it expires.
    pub previous_secret: Option<(WebhookSecret, Timestamp)>,
    /// The first failed attempt since the last success (or since creation), if any.
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Webhook {
    /// Whether `event` is for this webhook: same organization, its session scope and type
    /// filter, and committed after the webhook was created. `webhook.test` events never match:
    /// each is queued for its one webhook with the event itself.
    pub fn matches(&self, event: &Event) -> bool {
        event.org == self.org
            && event.kind != EventType::WebhookTest
            && event.created_at >= self.created_at
            && self.session.as_ref().is_none_or(|s| event.session.as_ref() == Some(s))
            && self.events.as_ref().is_none_or(|types| types.contains(&event.kind))
    }

    /// The secrets that sign an attempt at `now`: the current one, then the previous one while
    /// it overlaps.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&WebhookSecret> {
        let mut secrets = vec![&self.secret];
        if let Some((previous, until)) = &self.previous_secret
            && now < *until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// A webhook to insert.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub org: OrgId,
    pub url: String,
    pub events: Option<Vec<EventType>>,
    pub session: Option<SessionId>,
    pub description: Option<String>,
    pub secret: WebhookSecret,
    pub created_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet delivered: waiting for its first attempt or a retry.
    Pending,
    Succeeded,
    /// Every retry failed (or the webhook is gone).
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// One event's delivery to one webhook (at most one per pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub org: OrgId,
    pub webhook: WebhookId,
    pub event: EventId,
    /// The event's log position: deliveries of one webhook start in this order.
    pub event_seq: i64,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    /// Every attempt ever made.
    pub attempts: u32,
    /// Attempts since the delivery was last (re)queued: the position in the retry schedule.
    pub cycle_attempts: u32,
    pub last_attempt_at: Option<Timestamp>,
    /// When `pending`: the earliest time of the next attempt.
    pub next_attempt_at: Option<Timestamp>,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub created_at: Timestamp,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub at: Timestamp,
    pub duration_ms: u64,
    /// The HTTP status answered, if an answer came.
    pub response_status: Option<u16>,
    /// What went wrong (`None` on success): a status, a timeout, a refused address...
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_base64_of_32_bytes_and_hidden_from_debug() {
        let s = WebhookSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.key().len(), 32);
        assert_eq!(WebhookSecret::parse(s.expose()), Some(s.clone()));
        assert_eq!(format!("{s:?}"), "whsec_***");
        assert_ne!(WebhookSecret::generate(), s);
        for bad in ["", "whsec_", "whsec_!!", "sk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(WebhookSecret::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn previous_secrets_sign_only_while_they_overlap() {
        let now = crate::now();
        let mut hook = Webhook {
            id: WebhookId::generate(),
            org: OrgId::parse("acme").unwrap(),
            url: "https://example.com/hook".into(),
            events: None,
            session: None,
            description: None,
            enabled: true,
            disabled_reason: None,
            secret: WebhookSecret::generate(),
            previous_secret: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(hook.signing_secrets(now).len(), 1);
        let old = WebhookSecret::generate();
        hook.previous_secret = Some((old.clone(), now + chrono::Duration::hours(24)));
        assert_eq!(hook.signing_secrets(now), vec![&hook.secret, &old]);
        assert_eq!(hook.signing_secrets(now + chrono::Duration::hours(25)).len(), 1);
    }
}
