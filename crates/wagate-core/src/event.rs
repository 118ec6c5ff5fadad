//! Events: the one record of everything that happens, stored in the same transaction as the
//! change they describe. Webhooks and the live stream are readers of this log.

use std::fmt;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{EventId, OrgId, SessionId, SessionStatus, Timestamp};

/// The kinds of event, as named in the API (`session.status`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    SessionStatus,
    MessageReceived,
    /// A message this account sent from another of its devices (its phone, WhatsApp Web).
    MessageSent,
    MessageStatus,
    MessageReaction,
    MessageEdited,
    MessageRevoked,
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::SessionStatus,
        EventType::MessageReceived,
        EventType::MessageSent,
        EventType::MessageStatus,
        EventType::MessageReaction,
        EventType::MessageEdited,
        EventType::MessageRevoked,
        EventType::WebhookTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionStatus => "session.status",
            EventType::MessageReceived => "message.received",
            EventType::MessageSent => "message.sent",
            EventType::MessageStatus => "message.status",
            EventType::MessageReaction => "message.reaction",
            EventType::MessageEdited => "message.edited",
            EventType::MessageRevoked => "message.revoked",
            EventType::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An event to append: its `data` is already the JSON the API shows.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub org: OrgId,
    pub session: Option<SessionId>,
    pub kind: EventType,
    pub data: Box<RawValue>,
    pub created_at: Timestamp,
}

impl NewEvent {
    /// An event with a fresh id, made now.
    pub fn new(org: &OrgId, session: Option<&SessionId>, kind: EventType, data: &impl Serialize) -> Self {
        // Serializing our own data types into JSON cannot fail (no maps with non-string keys).
        let data = serde_json::value::to_raw_value(data).expect("event data serializes");
        Self {
            id: EventId::generate(),
            org: org.clone(),
            session: session.cloned(),
            kind,
            data,
            created_at: crate::now(),
        }
    }

    /// The `session.status` event of a session whose status became `status`.
    pub fn session_status(
        org: &OrgId,
        session: &SessionId,
        status: SessionStatus,
        previous: Option<SessionStatus>,
        reason: Option<&str>,
    ) -> Self {
        Self::new(
            org,
            Some(session),
            EventType::SessionStatus,
            &SessionStatusData { status, previous_status: previous, status_reason: reason },
        )
    }
}

/// `data` of a `session.status` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatusData<'a> {
    pub status: SessionStatus,
    pub previous_status: Option<SessionStatus>,
    pub status_reason: Option<&'a str>,
}

/// A stored event. `seq` is its position in the log: commit order, strictly increasing, never
/// reused, and the only order resuming readers rely on.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    pub id: EventId,
    pub org: OrgId,
    pub session: Option<SessionId>,
    pub kind: EventType,
    pub data: Box<RawValue>,
    pub created_at: Timestamp,
}

impl Event {
    /// The envelope every reader shows (API, stream, webhooks), as one JSON line:
    /// `{"id","type","createdAt","sessionId","data"}`.
    pub fn envelope_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope<'a> {
            id: &'a EventId,
            #[serde(rename = "type")]
            kind: EventType,
            created_at: &'a Timestamp,
            session_id: Option<&'a SessionId>,
            data: &'a RawValue,
        }
        let envelope = Envelope {
            id: &self.id,
            kind: self.kind,
            created_at: &self.created_at,
            session_id: self.session.as_ref(),
            data: &self.data,
        };
        serde_json::to_string(&envelope).expect("event envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("session.Status"), None);
    }

    #[test]
    fn envelopes_are_one_line_with_the_contract_fields() {
        let org = OrgId::parse("acme").unwrap();
        let session = SessionId::generate();
        let new = NewEvent::session_status(&org, &session, SessionStatus::Connected, Some(SessionStatus::Starting), None);
        let event = Event {
            seq: 1,
            id: new.id.clone(),
            org,
            session: new.session.clone(),
            kind: new.kind,
            data: new.data.clone(),
            created_at: new.created_at,
        };
        let json = event.envelope_json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["id"], new.id.as_str());
        assert_eq!(v["type"], "session.status");
        assert_eq!(v["sessionId"], session.as_str());
        assert_eq!(v["data"], serde_json::json!({"status": "connected", "previousStatus": "starting", "statusReason": null}));
        assert!(v["createdAt"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn event_ids_know_when_they_were_made() {
        let before = crate::now();
        let id = EventId::generate();
        let made = id.created_at();
        assert!(made >= before - chrono::Duration::milliseconds(1) && made <= crate::now());
    }
}
