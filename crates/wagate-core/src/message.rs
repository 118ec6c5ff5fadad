//! Messages: the addresses they go between (JIDs), their kinds, and the statuses they move
//! through (see API.md "Messages").

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{MessageId, OrgId, Phone, SessionId, Timestamp};

/// Why a JID or a recipient was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("must be user@server")]
    Shape,
    #[error("unknown server {0:?}: expected s.whatsapp.net, lid or g.us")]
    Server(String),
    #[error("the user part must be digits")]
    User,
    #[error("a group JID is not a valid recipient here")]
    Group,
    #[error("must be a phone number (digits, international format) or a user JID (…@s.whatsapp.net, …@lid)")]
    Recipient,
}

/// Which WhatsApp address space a JID belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JidServer {
    /// `…@s.whatsapp.net`: a user by phone number.
    User,
    /// `…@lid`: a user by linked identity, which does not reveal the phone number.
    Lid,
    /// `…@g.us`: a group.
    Group,
}

impl JidServer {
    pub fn as_str(self) -> &'static str {
        match self {
            JidServer::User => "s.whatsapp.net",
            JidServer::Lid => "lid",
            JidServer::Group => "g.us",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Lid, Self::Group].into_iter().find(|v| v.as_str() == s)
    }
}

/// A chat or sender address as WhatsApp writes it, without a device part: `628123456789@s.whatsapp.net`,
/// `123456789012345@lid`, `120363012345678901@g.us` (group ids may carry a `-` creation suffix).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jid(String);

impl Jid {
    /// Parses a JID. A device part (`user:3@s.whatsapp.net`) is accepted and dropped: messages
    /// are addressed to users, not to their devices.
    pub fn parse(s: &str) -> Result<Self, JidError> {
        let (user, server) = s.split_once('@').ok_or(JidError::Shape)?;
        let server = JidServer::parse(server).ok_or_else(|| JidError::Server(server.to_owned()))?;
        let user = match server {
            JidServer::User | JidServer::Lid => {
                let user = user.split_once(':').map_or(user, |(u, _device)| u);
                user.split_once('.').map_or(user, |(u, _agent)| u)
            }
            JidServer::Group => user,
        };
        let digits = |p: &str| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_digit());
        let valid = match server {
            JidServer::Group => match user.split_once('-') {
                Some((creator, created)) => digits(creator) && digits(created),
                None => digits(user),
            },
            _ => digits(user),
        };
        if !valid {
            return Err(JidError::User);
        }
        Ok(Self(format!("{user}@{}", server.as_str())))
    }

    /// The user JID of a phone number.
    pub fn of_phone(phone: &Phone) -> Self {
        Self(format!("{}@{}", phone.as_str(), JidServer::User.as_str()))
    }

    pub fn server(&self) -> JidServer {
        let (_, server) = self.0.split_once('@').expect("a parsed JID has an @");
        JidServer::parse(server).expect("a parsed JID has a known server")
    }

    pub fn user(&self) -> &str {
        self.0.split_once('@').expect("a parsed JID has an @").0
    }

    /// The phone number, for a `…@s.whatsapp.net` JID (an `@lid` JID does not reveal it).
    pub fn phone(&self) -> Option<Phone> {
        match self.server() {
            JidServer::User => Phone::parse(self.user()).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jid({})", self.0)
    }
}

impl TryFrom<String> for Jid {
    type Error = JidError;
    fn try_from(s: String) -> Result<Self, JidError> {
        Self::parse(&s)
    }
}

impl From<Jid> for String {
    fn from(j: Jid) -> String {
        j.0
    }
}

/// The `to` of a send: a phone number in international format, or a user JID. Groups come with
/// the groups API.
pub fn parse_recipient(s: &str) -> Result<Jid, JidError> {
    if !s.contains('@') {
        return Phone::parse(s).map(|p| Jid::of_phone(&p)).map_err(|_| JidError::Recipient);
    }
    let jid = Jid::parse(s)?;
    match jid.server() {
        JidServer::Group => Err(JidError::Group),
        JidServer::User if jid.phone().is_none() => Err(JidError::Recipient),
        _ => Ok(jid),
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }
    };
}

string_enum!(
    /// Which way a message went.
    Direction {
        Inbound = "inbound",
        Outbound = "outbound",
    }
);

string_enum!(
    /// What a message carries.
    MessageType {
        Text = "text",
        Image = "image",
        Video = "video",
        Audio = "audio",
        Document = "document",
        Sticker = "sticker",
        Location = "location",
        Contact = "contact",
        Reaction = "reaction",
        /// Any other kind WhatsApp has; stored with its raw type.
        Unsupported = "unsupported",
    }
);

impl MessageType {
    /// Whether the message carries media bytes.
    pub fn has_media(self) -> bool {
        matches!(self, Self::Image | Self::Video | Self::Audio | Self::Document | Self::Sticker)
    }

    /// The MIME type media of this kind is taken to have when nobody said: what WhatsApp's
    /// clients send (voice notes are Opus in Ogg).
    pub fn default_mime(self) -> &'static str {
        match self {
            Self::Image => "image/jpeg",
            Self::Video => "video/mp4",
            Self::Audio => "audio/ogg; codecs=opus",
            Self::Sticker => "image/webp",
            _ => "application/octet-stream",
        }
    }
}

string_enum!(
    /// Where a message stands. Outbound: `queued` → `sent` → `delivered` → `read` (→ `played`
    /// for voice notes), or `failed`. Inbound: `received`, then `read` once marked read.
    MessageStatus {
        /// Accepted and committed, waiting in the session's send queue.
        Queued = "queued",
        /// WhatsApp's server took it.
        Sent = "sent",
        /// It reached a device of the recipient.
        Delivered = "delivered",
        /// The recipient (outbound) or this session (inbound) read it.
        Read = "read",
        /// The recipient played the voice note.
        Played = "played",
        /// It could not be sent; the message says why.
        Failed = "failed",
        /// An inbound message, not yet marked read.
        Received = "received",
    }
);

impl MessageStatus {
    /// The place in its direction's order; a status only ever moves to a higher one.
    fn rank(self) -> u8 {
        match self {
            Self::Queued | Self::Received => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Played => 4,
            Self::Failed => 5,
        }
    }

    /// Whether a message of `direction` in this status may move to `next`. Statuses only move
    /// forward, and may skip (receipts arrive out of order: a `read` can come before its
    /// `delivered`, which is then ignored). `failed` ends an outbound message that was never
    /// delivered; nothing follows it.
    pub fn may_become(self, next: MessageStatus, direction: Direction) -> bool {
        match direction {
            Direction::Inbound => self == Self::Received && next == Self::Read,
            Direction::Outbound => match next {
                Self::Received => false,
                Self::Failed => matches!(self, Self::Queued | Self::Sent),
                _ => self != Self::Failed && next.rank() > self.rank(),
            },
        }
    }
}


/// A new WhatsApp message id as WhatsApp Web makes them: `3EB0` and 16 upper-case hex digits.
/// Fixed when a message is accepted, so that a send repeated after a crash carries the same id.
pub fn new_wa_message_id() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::thread_rng().r#gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("3EB0{hex}")
}

/// A location shared in a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// A contact card shared in a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactCard {
    pub name: String,
    /// International format, digits only.
    pub phone: String,
}

/// What a media message carries besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaInfo {
    pub mime_type: String,
    pub filename: Option<String>,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub caption: Option<String>,
    /// A voice note (audio only).
    pub voice: bool,
}

/// The message a reaction is about, and the emoji (empty: the reaction was removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionInfo {
    /// The stored message reacted to (`null` when this session has none with that id).
    #[schema(value_type = Option<String>)]
    pub message_id: Option<MessageId>,
    pub wa_message_id: String,
    pub emoji: String,
}

/// The message a message replies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyRef {
    /// The stored message quoted (`null` when this session has none with that id).
    #[schema(value_type = Option<String>)]
    pub message_id: Option<MessageId>,
    pub wa_message_id: String,
}

/// Why an outbound message failed, or what went wrong receiving an inbound one (which is
/// stored all the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageError {
    /// Machine-readable. Outbound, e.g. `not_on_whatsapp`, `refused`, `unsupported`,
    /// `media_unreachable`, `media_refused`; inbound: `media_too_large`, `media_unavailable`
    /// (stored without its bytes), `undecryptable` (replaced by the message if the sender's
    /// retry brings it), `unavailable` (content WhatsApp keeps from linked devices).
    pub code: String,
    pub message: String,
}

/// The content fields of a message besides `text`, as stored together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactCard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionInfo>,
    /// Where the sender fetches the media of an outbound message before sending it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
}

/// A stored message, in either direction. It serializes as the API's message resource (the
/// `data` of a `message.received` event).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[schema(value_type = String, example = "msg_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")]
    pub id: MessageId,
    #[serde(skip)]
    pub org: OrgId,
    #[serde(rename = "sessionId")]
    #[schema(value_type = String)]
    pub session: SessionId,
    /// The chat's JID, as WhatsApp addressed it.
    #[serde(rename = "chatId")]
    #[schema(value_type = String, example = "628123456789@s.whatsapp.net")]
    pub chat: Jid,
    /// WhatsApp's id of the message, fixed when it was accepted.
    #[schema(example = "3EB0A1B2C3D4E5F6A7B8")]
    pub wa_message_id: String,
    pub direction: Direction,
    pub from_me: bool,
    /// The sender's JID.
    #[schema(value_type = Option<String>)]
    pub from: Option<Jid>,
    /// The sender's phone number, whenever the gateway knows it.
    #[schema(value_type = Option<String>)]
    pub from_phone: Option<Phone>,
    pub push_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub text: Option<String>,
    pub media: Option<MediaInfo>,
    pub location: Option<Location>,
    pub contact: Option<ContactCard>,
    /// For `type: reaction`: the message reacted to and the emoji.
    pub reaction: Option<ReactionInfo>,
    /// An outbound media message given by `url`: fetched by the sender (never shown).
    #[serde(skip)]
    pub media_url: Option<String>,
    pub reply_to: Option<ReplyRef>,
    /// Phone numbers (or JIDs when the number is unknown) mentioned in the text.
    pub mentions: Vec<String>,
    pub edited: bool,
    pub revoked: bool,
    pub status: MessageStatus,
    pub error: Option<MessageError>,
    /// When WhatsApp took the message: the send time of an outbound message (its acceptance
    /// time while it is queued), the sender's time of an inbound one.
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl Message {
    /// The content fields besides `text`, as stored.
    pub fn body(&self) -> MessageBody {
        MessageBody {
            media: self.media.clone(),
            location: self.location.clone(),
            contact: self.contact.clone(),
            reaction: self.reaction.clone(),
            media_url: self.media_url.clone(),
        }
    }
}

/// How a session sends: its pace and whether chats show "typing…" first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendPolicy {
    /// `None`: the gateway's default (`WAGATE_SEND_PER_MINUTE`).
    pub messages_per_minute: Option<u32>,
    pub typing: bool,
}

impl SendPolicy {
    /// The range `messagesPerMinute` may take.
    pub const PER_MINUTE: std::ops::RangeInclusive<u32> = 1..=600;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_parse_to_their_canonical_user_form() {
        let j = Jid::parse("628123456789@s.whatsapp.net").unwrap();
        assert_eq!(j.as_str(), "628123456789@s.whatsapp.net");
        assert_eq!(j.server(), JidServer::User);
        assert_eq!(j.phone().unwrap().as_str(), "628123456789");
        // Devices and agents are dropped.
        assert_eq!(Jid::parse("628123456789:12@s.whatsapp.net").unwrap(), j);
        assert_eq!(Jid::parse("628123456789.0:12@s.whatsapp.net").unwrap(), j);
        let lid = Jid::parse("123456789012345:3@lid").unwrap();
        assert_eq!(lid.as_str(), "123456789012345@lid");
        assert_eq!(lid.server(), JidServer::Lid);
        assert!(lid.phone().is_none());
        let group = Jid::parse("120363012345678901@g.us").unwrap();
        assert_eq!(group.server(), JidServer::Group);
        assert!(Jid::parse("628123456789-1609459200@g.us").is_ok());
        assert_eq!(serde_json::to_string(&j).unwrap(), "\"628123456789@s.whatsapp.net\"");
        assert_eq!(serde_json::from_str::<Jid>("\"628123456789@s.whatsapp.net\"").unwrap(), j);
    }

    #[test]
    fn malformed_jids_are_refused() {
        assert_eq!(Jid::parse("628123456789"), Err(JidError::Shape));
        assert_eq!(Jid::parse("628123456789@example.com"), Err(JidError::Server("example.com".into())));
        for bad in ["@s.whatsapp.net", "abc@s.whatsapp.net", "62 81@s.whatsapp.net", "1-@g.us", "-1@g.us", "x@lid", ":1@lid"] {
            assert_eq!(Jid::parse(bad), Err(JidError::User), "{bad}");
        }
        assert!(Jid::parse(&format!("{}@lid", "1".repeat(33))).is_err());
        assert!(serde_json::from_str::<Jid>("\"nobody\"").is_err());
    }

    #[test]
    fn recipients_are_phones_or_user_jids() {
        assert_eq!(parse_recipient("628123456789").unwrap().as_str(), "628123456789@s.whatsapp.net");
        assert_eq!(parse_recipient("628123456789@s.whatsapp.net").unwrap().as_str(), "628123456789@s.whatsapp.net");
        assert_eq!(parse_recipient("123456789012345@lid").unwrap().as_str(), "123456789012345@lid");
        assert_eq!(parse_recipient("120363012345678901@g.us"), Err(JidError::Group));
        assert_eq!(parse_recipient("+628123456789"), Err(JidError::Recipient));
        assert_eq!(parse_recipient("0812345678"), Err(JidError::Recipient));
        // A user JID must hold a valid phone number.
        assert_eq!(parse_recipient("0812@s.whatsapp.net"), Err(JidError::Recipient));
        assert!(parse_recipient("").is_err());
    }

    #[test]
    fn kinds_and_statuses_round_trip_as_text() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Direction::parse("inbound"), Some(Direction::Inbound));
        assert_eq!(MessageType::parse("poll"), None);
        assert!(MessageType::Audio.has_media() && !MessageType::Location.has_media());
    }

    #[test]
    fn outbound_statuses_only_move_forward() {
        use MessageStatus::*;
        let out = Direction::Outbound;
        for (from, to) in [(Queued, Sent), (Sent, Delivered), (Delivered, Read), (Read, Played), (Sent, Read), (Queued, Delivered), (Queued, Failed), (Sent, Failed)] {
            assert!(from.may_become(to, out), "{from:?} -> {to:?}");
        }
        for (from, to) in [(Read, Delivered), (Delivered, Sent), (Sent, Sent), (Played, Read), (Delivered, Failed), (Failed, Sent), (Failed, Failed), (Queued, Received), (Queued, Queued)] {
            assert!(!from.may_become(to, out), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn inbound_messages_are_received_then_read() {
        use MessageStatus::*;
        assert!(Received.may_become(Read, Direction::Inbound));
        for (from, to) in [(Read, Read), (Read, Received), (Received, Delivered), (Received, Failed), (Received, Played)] {
            assert!(!from.may_become(to, Direction::Inbound), "{from:?} -> {to:?}");
        }
    }
}
