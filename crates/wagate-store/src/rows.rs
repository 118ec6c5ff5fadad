//! Rows as the SQL backends return them, and their checked conversion into domain types.
//!
//! Both SQL backends decode into these plain structs (`FromRow` is derived generically, so the
//! same struct serves SQLite and PostgreSQL), then [`SessionRow::into_session`] and
//! [`ApiKeyRow::into_record`] parse every column with the domain parsers. A row that does not
//! parse (a hand-edited database, a bug in an older version) is a [`StoreError::Backend`], never
//! a panic.

use wagate_core::{
    ApiKeyId, ApiKeyRecord, Capabilities, Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus,
    DisabledReason, EngineKind, Event, EventId, EventType, Identity, InstanceId, OrgId, Phone,
    Session, SessionId, SessionStatus, Timestamp, Webhook, WebhookId, WebhookSecret,
};

use crate::{Result, StoreError};
use wagate_core::{Direction, Jid, Message, MessageBody, MessageError, MessageId, MessageStatus, MessageType, ReplyRef};

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub id: String,
    pub org_id: String,
    pub instance_id: String,
    pub name: Option<String>,
    pub engine: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub desired_running: bool,
    pub phone: Option<String>,
    pub wa_jid: Option<String>,
    pub wa_lid: Option<String>,
    pub push_name: Option<String>,
    pub platform: Option<String>,
    pub device_name: Option<String>,
    pub send_per_minute: Option<i64>,
    pub send_typing: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub capabilities: String,
    pub key_hash: Vec<u8>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub id: String,
    pub org_id: String,
    pub session_id: Option<String>,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub data: String,
    pub created_at: Timestamp,
}

impl EventRow {
    pub(crate) fn into_event(self) -> Result<Event> {
        const T: &str = "events";
        let row_id = self.id.as_str();
        let id = EventId::parse(row_id).map_err(|_| corrupt(T, row_id, "id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let session = self
            .session_id
            .as_deref()
            .map(SessionId::parse)
            .transpose()
            .map_err(|_| corrupt(T, row_id, "session_id"))?;
        let kind = EventType::parse(&self.kind).ok_or_else(|| corrupt(T, row_id, "type"))?;
        let data = serde_json::value::RawValue::from_string(self.data)
            .map_err(|_| corrupt(T, row_id, "data"))?;
        Ok(Event { seq: self.seq, id, org, session, kind, data, created_at: self.created_at })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WebhookRow {
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub events: Option<String>,
    pub session_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A type list as stored: a JSON array of names (`None`: every type).
pub(crate) fn event_types_json(types: Option<&[EventType]>) -> Option<String> {
    types.map(|types| {
        serde_json::to_string(&types.iter().map(|t| t.as_str()).collect::<Vec<_>>()).expect("a list of strings serializes")
    })
}

impl WebhookRow {
    pub(crate) fn into_webhook(self) -> Result<Webhook> {
        const T: &str = "webhooks";
        let row_id = self.id.as_str();
        let id = WebhookId::parse(row_id).map_err(|_| corrupt(T, row_id, "id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let events = match self.events.as_deref() {
            None => None,
            Some(json) => {
                let names: Vec<String> = serde_json::from_str(json).map_err(|_| corrupt(T, row_id, "events"))?;
                let types = names.iter().map(|n| EventType::parse(n)).collect::<Option<Vec<_>>>();
                Some(types.filter(|t| !t.is_empty()).ok_or_else(|| corrupt(T, row_id, "events"))?)
            }
        };
        let session = self.session_id.as_deref().map(SessionId::parse).transpose().map_err(|_| corrupt(T, row_id, "session_id"))?;
        let disabled_reason = self
            .disabled_reason
            .as_deref()
            .map(|r| DisabledReason::parse(r).ok_or_else(|| corrupt(T, row_id, "disabled_reason")))
            .transpose()?;
        let secret = WebhookSecret::parse(&self.secret).ok_or_else(|| corrupt(T, row_id, "secret"))?;
        let previous_secret = match (self.previous_secret, self.previous_secret_expires_at) {
            (Some(previous), Some(until)) => {
                Some((WebhookSecret::parse(&previous).ok_or_else(|| corrupt(T, row_id, "previous_secret"))?, until))
            }
            (None, _) => None,
            (Some(_), None) => return Err(corrupt(T, row_id, "previous_secret_expires_at")),
        };
        Ok(Webhook {
            id,
            org,
            url: self.url,
            events,
            session,
            description: self.description,
            enabled: self.enabled,
            disabled_reason,
            secret,
            previous_secret,
            failing_since: self.failing_since,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub id: String,
    pub org_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_seq: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub cycle_attempts: i32,
    pub last_attempt_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub created_at: Timestamp,
}

impl DeliveryRow {
    pub(crate) fn into_delivery(self) -> Result<Delivery> {
        const T: &str = "deliveries";
        let row_id = self.id.as_str();
        let id = DeliveryId::parse(row_id).map_err(|_| corrupt(T, row_id, "id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let webhook = WebhookId::parse(&self.webhook_id).map_err(|_| corrupt(T, row_id, "webhook_id"))?;
        let event = EventId::parse(&self.event_id).map_err(|_| corrupt(T, row_id, "event_id"))?;
        let event_type = EventType::parse(&self.event_type).ok_or_else(|| corrupt(T, row_id, "event_type"))?;
        let status = DeliveryStatus::parse(&self.status).ok_or_else(|| corrupt(T, row_id, "status"))?;
        let count = |n: i32, column| u32::try_from(n).map_err(|_| corrupt(T, row_id, column));
        Ok(Delivery {
            id,
            org,
            webhook,
            event,
            event_seq: self.event_seq,
            event_type,
            status,
            attempts: count(self.attempts, "attempts")?,
            cycle_attempts: count(self.cycle_attempts, "cycle_attempts")?,
            last_attempt_at: self.last_attempt_at,
            next_attempt_at: self.next_attempt_at,
            response_status: parse_http_status(T, row_id, self.response_status)?,
            error: self.error,
            created_at: self.created_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub delivery_id: String,
    pub at: Timestamp,
    pub duration_ms: i64,
    pub response_status: Option<i32>,
    pub error: Option<String>,
}

impl AttemptRow {
    pub(crate) fn into_attempt(self) -> Result<DeliveryAttempt> {
        const T: &str = "delivery_attempts";
        let delivery = self.delivery_id.as_str();
        Ok(DeliveryAttempt {
            at: self.at,
            duration_ms: u64::try_from(self.duration_ms).map_err(|_| corrupt(T, delivery, "duration_ms"))?,
            response_status: parse_http_status(T, delivery, self.response_status)?,
            error: self.error,
        })
    }
}

fn parse_http_status(table: &str, id: &str, status: Option<i32>) -> Result<Option<u16>> {
    status.map(|s| u16::try_from(s).ok().filter(|s| (100..=999).contains(s)).ok_or_else(|| corrupt(table, id, "response_status"))).transpose()
}

fn corrupt(table: &str, id: &str, column: &str) -> StoreError {
    // The id is ours (prefix + ULID), not a secret; the offending value is left out.
    StoreError::Backend(format!("stored {table} row {id:?} has an invalid {column}"))
}

fn parse_org(table: &str, id: &str, s: &str) -> Result<OrgId> {
    OrgId::parse(s).ok_or_else(|| corrupt(table, id, "org_id"))
}

impl SessionRow {
    pub(crate) fn into_session(self) -> Result<Session> {
        const T: &str = "sessions";
        let row_id = self.id.as_str();
        let id = SessionId::parse(row_id).map_err(|_| corrupt(T, row_id, "id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let instance_id = InstanceId::parse(&self.instance_id)
            .ok_or_else(|| corrupt(T, row_id, "instance_id"))?;
        let engine = EngineKind::parse(&self.engine).ok_or_else(|| corrupt(T, row_id, "engine"))?;
        let status =
            SessionStatus::parse(&self.status).ok_or_else(|| corrupt(T, row_id, "status"))?;
        // The identity is all or nothing: phone and jid are required, the rest optional.
        let identity = match (self.phone, self.wa_jid) {
            (Some(phone), Some(jid)) => Some(Identity {
                phone: Phone::parse(&phone).map_err(|_| corrupt(T, row_id, "phone"))?,
                jid,
                lid: self.wa_lid,
                push_name: self.push_name,
                platform: self.platform,
            }),
            (None, None) => None,
            _ => {
                return Err(corrupt(
                    T,
                    row_id,
                    "identity (phone and wa_jid must both be set or both null)",
                ));
            }
        };
        Ok(Session {
            id,
            org,
            instance_id,
            name: self.name,
            engine,
            status,
            status_reason: self.status_reason,
            desired_running: self.desired_running,
            identity,
            device_name: self.device_name,
            send_policy: wagate_core::SendPolicy {
                messages_per_minute: self
                    .send_per_minute
                    .map(|n| u32::try_from(n).map_err(|_| corrupt(T, row_id, "send_per_minute")))
                    .transpose()?,
                typing: self.send_typing,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl ApiKeyRow {
    pub(crate) fn into_record(self) -> Result<ApiKeyRecord> {
        const T: &str = "api_keys";
        let row_id = self.id.as_str();
        let id = ApiKeyId::parse(row_id).map_err(|_| corrupt(T, row_id, "id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let capabilities = Capabilities::parse_list(&self.capabilities)
            .map_err(|_| corrupt(T, row_id, "capabilities"))?;
        let hash: [u8; 32] = self
            .key_hash
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(T, row_id, "key_hash"))?;
        Ok(ApiKeyRecord {
            id,
            org,
            name: self.name,
            capabilities,
            hash,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        })
    }
}

/// Parses a `GROUP BY status` result row.
/// A status read on its own (inside a state update).
pub(crate) fn parse_status(session: &str, status: &str) -> Result<SessionStatus> {
    SessionStatus::parse(status).ok_or_else(|| corrupt("sessions", session, "status"))
}

pub(crate) fn parse_status_count(status: &str, count: i64) -> Result<(SessionStatus, u64)> {
    let status = SessionStatus::parse(status)
        .ok_or_else(|| StoreError::Backend("a stored session has an unknown status".to_owned()))?;
    let count = u64::try_from(count)
        .map_err(|_| StoreError::Backend("negative session count".to_owned()))?;
    Ok((status, count))
}

/// Every status with its count (zero when absent), in [`SessionStatus::ALL`] order.
pub(crate) fn complete_counts(
    found: impl IntoIterator<Item = (SessionStatus, u64)>,
) -> Vec<(SessionStatus, u64)> {
    let mut counts: Vec<(SessionStatus, u64)> =
        SessionStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for (status, n) in found {
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 += n;
        }
    }
    counts
}


#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub id: String,
    pub org_id: String,
    pub session_id: String,
    pub chat_id: String,
    pub wa_message_id: String,
    pub direction: String,
    pub from_jid: Option<String>,
    pub from_phone: Option<String>,
    pub push_name: Option<String>,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub body: String,
    pub reply_to_id: Option<String>,
    pub reply_to_wa_id: Option<String>,
    pub mentions: String,
    pub edited: bool,
    pub revoked: bool,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub ts: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl MessageRow {
    pub(crate) fn into_message(self) -> Result<Message> {
        const T: &str = "messages";
        let row_id = self.id.as_str();
        let bad = |column: &str| corrupt(T, row_id, column);
        let id = MessageId::parse(row_id).map_err(|_| bad("id"))?;
        let org = parse_org(T, row_id, &self.org_id)?;
        let session = SessionId::parse(&self.session_id).map_err(|_| bad("session_id"))?;
        let chat = Jid::parse(&self.chat_id).map_err(|_| bad("chat_id"))?;
        let direction = Direction::parse(&self.direction).ok_or_else(|| bad("direction"))?;
        let from = self.from_jid.as_deref().map(Jid::parse).transpose().map_err(|_| bad("from_jid"))?;
        let from_phone = self.from_phone.as_deref().map(Phone::parse).transpose().map_err(|_| bad("from_phone"))?;
        let kind = MessageType::parse(&self.kind).ok_or_else(|| bad("type"))?;
        let body: MessageBody = serde_json::from_str(&self.body).map_err(|_| bad("body"))?;
        let reply_to_id = self.reply_to_id.as_deref().map(MessageId::parse).transpose().map_err(|_| bad("reply_to_id"))?;
        let reply_to = self.reply_to_wa_id.map(|wa_message_id| ReplyRef { message_id: reply_to_id, wa_message_id });
        let mentions: Vec<String> = serde_json::from_str(&self.mentions).map_err(|_| bad("mentions"))?;
        let status = MessageStatus::parse(&self.status).ok_or_else(|| bad("status"))?;
        let error = match (self.error_code, self.error_message) {
            (Some(code), message) => Some(MessageError { code, message: message.unwrap_or_default() }),
            (None, _) => None,
        };
        Ok(Message {
            id,
            org,
            session,
            chat,
            wa_message_id: self.wa_message_id,
            direction,
            from_me: direction == Direction::Outbound,
            from,
            from_phone,
            push_name: self.push_name,
            kind,
            text: self.text,
            media: body.media,
            location: body.location,
            contact: body.contact,
            reaction: body.reaction,
            media_url: body.media_url,
            reply_to,
            mentions,
            edited: self.edited,
            revoked: self.revoked,
            status,
            error,
            timestamp: self.ts,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_row() -> SessionRow {
        let now = wagate_core::now();
        SessionRow {
            id: SessionId::generate().to_string(),
            org_id: "acme".into(),
            instance_id: "A1B2C3D4E5F6".into(),
            name: Some("support".into()),
            engine: "sandbox".into(),
            status: "connected".into(),
            status_reason: None,
            desired_running: true,
            phone: Some("628123456789".into()),
            wa_jid: Some("628123456789@s.whatsapp.net".into()),
            wa_lid: None,
            push_name: Some("Support".into()),
            platform: None,
            device_name: Some("Front desk".into()),
            send_per_minute: None,
            send_typing: false,
            created_at: now,
            updated_at: now,
        }
    }

    fn key_row() -> ApiKeyRow {
        ApiKeyRow {
            id: ApiKeyId::generate().to_string(),
            org_id: "acme".into(),
            name: "ci".into(),
            capabilities: "send,read".into(),
            key_hash: vec![7; 32],
            created_at: wagate_core::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    /// A column name and a way to spoil that column.
    type Spoil<R> = (&'static str, fn(&mut R));

    fn backend_message(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(StoreError::Backend(m)) => m,
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_session_row_converts() {
        let s = session_row().into_session().unwrap();
        assert_eq!(s.engine, EngineKind::Sandbox);
        assert_eq!(s.status, SessionStatus::Connected);
        let identity = s.identity.unwrap();
        assert_eq!(identity.phone.as_str(), "628123456789");
        assert_eq!(identity.push_name.as_deref(), Some("Support"));
        assert_eq!(s.device_name.as_deref(), Some("Front desk"));
    }

    #[test]
    fn a_session_row_without_identity_has_none() {
        let mut row = session_row();
        row.phone = None;
        row.wa_jid = None;
        row.push_name = None;
        assert_eq!(row.into_session().unwrap().identity, None);
    }

    #[test]
    fn corrupt_session_rows_are_backend_errors() {
        let cases: [Spoil<SessionRow>; 7] = [
            ("id", |r| r.id = "nope".into()),
            ("org_id", |r| r.org_id = String::new()),
            ("instance_id", |r| r.instance_id = "short".into()),
            ("engine", |r| r.engine = "telegram".into()),
            ("status", |r| r.status = "dancing".into()),
            ("phone", |r| r.phone = Some("+1".into())),
            ("identity", |r| r.wa_jid = None),
        ];
        for (column, spoil) in cases {
            let mut row = session_row();
            spoil(&mut row);
            let msg = backend_message(row.into_session());
            assert!(msg.contains(column), "{msg:?} should name {column}");
        }
    }

    #[test]
    fn a_valid_key_row_converts() {
        let k = key_row().into_record().unwrap();
        assert_eq!(k.capabilities.to_list(), "send,read");
        assert_eq!(k.hash, [7; 32]);
    }

    #[test]
    fn corrupt_key_rows_are_backend_errors() {
        let cases: [Spoil<ApiKeyRow>; 4] = [
            ("id", |r| r.id = "sess_01J9Z3QK8M0000000000000000".into()),
            ("org_id", |r| r.org_id = "a\nb".into()),
            ("capabilities", |r| r.capabilities = "manage,root".into()),
            ("key_hash", |r| r.key_hash = vec![1; 31]),
        ];
        for (column, spoil) in cases {
            let mut row = key_row();
            spoil(&mut row);
            let msg = backend_message(row.into_record());
            assert!(msg.contains(column), "{msg:?} should name {column}");
        }
    }

    #[test]
    fn counts_cover_every_status() {
        let counts = complete_counts([(SessionStatus::Connected, 2), (SessionStatus::Failed, 1)]);
        assert_eq!(counts.len(), SessionStatus::ALL.len());
        assert!(counts.contains(&(SessionStatus::Connected, 2)));
        assert!(counts.contains(&(SessionStatus::Stopped, 0)));
        assert!(parse_status_count("dancing", 1).is_err());
        assert!(parse_status_count("failed", -1).is_err());
    }
}
