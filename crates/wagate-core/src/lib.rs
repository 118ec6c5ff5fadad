//! Domain types shared by every wagate crate.
//!
//! Everything here is parsed, never trusted: a value of one of these types is valid by
//! construction (`SessionId::parse`, `Phone::parse`, ...), so the layers above never re-check.

pub mod caps;
pub mod event;
pub mod ids;
pub mod message;
pub mod phone;
pub mod session;
pub mod webhook;

pub use caps::{Capabilities, Capability, Principal, PrincipalKind, Role};
pub use event::{Event, EventType, NewEvent};
pub use ids::{ApiKeyId, DeliveryId, EventId, IdError, InstanceId, MessageId, OrgId, SessionId, WebhookId};
pub use message::{
    ContactCard, Direction, Jid, JidError, JidServer, Location, MediaInfo, Message, MessageBody, MessageError, MessageStatus,
    MessageType, ReactionInfo, ReplyRef, SendPolicy, new_wa_message_id, parse_recipient,
};
pub use phone::{Phone, PhoneError};
pub use session::{
    ApiKeyRecord, EngineKind, Identity, NewApiKey, NewSession, Session, SessionStatus,
};
pub use webhook::{
    Delivery, DeliveryAttempt, DeliveryStatus, DisabledReason, NewWebhook, Webhook, WebhookSecret,
};

/// The time type used everywhere: UTC, serialized as RFC 3339.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Current time truncated to milliseconds, so that values survive a round trip through
/// any backend unchanged (PostgreSQL keeps microseconds, SQLite text keeps what it gets).
pub fn now() -> Timestamp {
    use chrono::{SubsecRound, Utc};
    Utc::now().trunc_subsecs(3)
}

/// `bytes` as lowercase hexadecimal (digests, blob names).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
