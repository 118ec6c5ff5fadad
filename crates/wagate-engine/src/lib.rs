//! The engine boundary.
//!
//! An [`Engine`] knows how to run one kind of session (`whatsapp`, `sandbox`); the engines live
//! in crates of their own (`wagate-whatsapp`, `wagate-sandbox`), peers below this boundary. The
//! runtime's supervisor (`wagate-runtime`) owns every running session, calls the engine, and
//! turns the engine's events into status changes in the store. Nothing above this crate knows
//! which engine library sits below it, and nothing here knows about storage.
//!
//! A running [`EngineSession`] has a lifecycle (`stop`, `logout`) and offers its abilities as
//! one trait each, reached from the session: [`Pairing`], [`Messaging`]; [`Contacts`]
//! and [`Media`] are slots for the engines to fill. A new ability is a new trait and a new
//! slot here, not a new supervisor method.
//!
//! What a session reports comes out on two separate paths ([`SessionOutput`]): *lifecycle
//! events* ([`EngineEvent`] through an [`EventSink`]: pairing, connection, logout), applied one
//! at a time in order; and *traffic* ([`Traffic`] through a [`TrafficSink`]: messages, receipts),
//! which must never queue behind, nor hold up, a session's lifecycle.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wagate_core::{
    ContactCard, EngineKind, Identity, Jid, Location, MediaInfo, MessageError, MessageType, OrgId, Phone, SessionId,
    Timestamp,
};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// What an engine needs to run one session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: SessionId,
    pub org: OrgId,
    /// The identity stored at pairing, if the session is paired (resume without re-pairing).
    pub identity: Option<Identity>,
    /// The linked-device name shown on the phone; `None` means the engine's default.
    pub device_name: Option<String>,
}

/// A QR code to show: the raw string to encode, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub code: String,
    pub expires_at: Timestamp,
}

/// A phone pairing code such as `ABCD-1234`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingCode {
    pub code: String,
    pub expires_at: Timestamp,
}

/// A change in the life of a running session, reported by its engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A new QR code replaces the previous one.
    Qr(QrCode),
    /// The server sent no more QR codes; the engine stopped trying to pair.
    QrExhausted,
    /// The phone accepted the device; the identity is now known.
    Paired(Identity),
    /// Logged in and ready.
    Connected,
    /// The connection dropped; the engine retries after `retry_in`.
    Reconnecting { reason: String, attempt: u32, retry_in: Duration },
    /// The device was unlinked (from the phone, or refused at login). Keys are void.
    LoggedOut { reason: String },
    /// Another connection of the same device replaced this one.
    StreamReplaced,
    /// A terminal failure (temporary ban, client outdated, ...); the session stops.
    Failed { reason: String },
}

/// Where an engine reports lifecycle events. `emit` returns once the event has been applied
/// (status written), so a caller that awaits an engine call sees its effect in the store
/// afterwards.
///
/// Contract for engines: emit the events of one session one at a time, in order (await each
/// `emit` before the next); the sink applies them in the order the calls arrive. The sink never
/// calls back into the session from inside `emit` (an event that ends the session has it stopped
/// from another task), so an engine may emit from its own tasks and wait for them in `stop()`.
/// Events emitted after `stop()`/`logout()` began are ignored.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn emit(&self, session: &SessionId, event: EngineEvent);
}

/// What a session carries for its account: inbound messages, receipts, reactions, edits and
/// revocations.
///
/// It is a kind of its own, not an [`EngineEvent`], because traffic is many times the volume of
/// lifecycle events and is handled by other services: it goes through a [`TrafficSink`], never
/// through an [`EventSink`]. Every WhatsApp id here is the id both ends share.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// A message arrived (boxed: it is much larger than the other kinds).
    Message(Box<InboundMessage>),
    /// Receipts: the messages `wa_message_ids` this session sent to `chat` moved on.
    Receipt { chat: Jid, wa_message_ids: Vec<String>, kind: ReceiptKind, at: Timestamp },
    /// `from` reacted to the message `target` of `chat` (`emoji` empty: the reaction was removed).
    Reaction { chat: Jid, from: Jid, target: String, emoji: String, at: Timestamp },
    /// `from` edited the message `wa_message_id` of `chat`.
    Edited { chat: Jid, from: Jid, wa_message_id: String, text: String, at: Timestamp },
    /// `from` deleted the message `wa_message_id` of `chat` for everyone.
    Revoked { chat: Jid, from: Jid, wa_message_id: String, at: Timestamp },
}

/// What a receipt says about an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
    /// A voice note was played.
    Played,
}

/// The content of a message, either way. The engine neutral form: every engine maps its own
/// message kinds to and from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Location(Location),
    Contact(ContactCard),
    /// A reaction to the message `target` (its WhatsApp id) of the same chat; `target_from_me`:
    /// this account sent the target (WhatsApp names a message by its id and its side).
    Reaction { target: String, emoji: String, target_from_me: bool },
    /// An image, video, audio (voice note), document or sticker, with its bytes.
    Media(MediaContent),
    /// A kind this gateway does not model; `raw` names it as the engine saw it.
    Unsupported { raw: String },
}

impl Content {
    pub fn kind(&self) -> MessageType {
        match self {
            Content::Text(_) => MessageType::Text,
            Content::Location(_) => MessageType::Location,
            Content::Contact(_) => MessageType::Contact,
            Content::Reaction { .. } => MessageType::Reaction,
            Content::Media(media) => media.kind,
            Content::Unsupported { .. } => MessageType::Unsupported,
        }
    }
}

/// Media with its bytes (plain, already downloaded and decrypted). Inbound media whose bytes
/// could not be had comes with empty `bytes`, and the message says why in its `error`.
#[derive(Clone, PartialEq)]
pub struct MediaContent {
    /// `image`, `video`, `audio`, `document` or `sticker`.
    pub kind: MessageType,
    pub info: MediaInfo,
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for MediaContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaContent").field("kind", &self.kind).field("info", &self.info).field("bytes", &self.bytes.len()).finish()
    }
}

/// A message that arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub wa_message_id: String,
    /// The chat (the sender's JID in a one-to-one chat; the recipient's for `from_me`).
    pub chat: Jid,
    pub from: Jid,
    /// This account sent it from another of its devices (its phone, WhatsApp Web): the gateway
    /// stores it as an outbound message that was sent.
    pub from_me: bool,
    /// The sender's phone number when the engine knows it (also for `@lid` senders).
    pub from_phone: Option<Phone>,
    pub push_name: Option<String>,
    /// The sender's time.
    pub timestamp: Timestamp,
    pub content: Content,
    /// The WhatsApp id of the message this one quotes.
    pub reply_to: Option<String>,
    pub mentions: Vec<Jid>,
    /// What went wrong receiving it, when something did: the message is stored all the same
    /// (media that could not be downloaded arrives with its description and no bytes).
    pub error: Option<MessageError>,
}

/// Where an engine delivers [`Traffic`], apart from the lifecycle path.
///
/// Contract: `deliver` returns once the traffic is stored (with its event), so an engine may
/// acknowledge it to WhatsApp afterwards. An engine delivers the traffic of one session one at
/// a time, in the order it arrived (await each call before the next), which keeps the order of
/// every chat. The sink never calls back into the session.
#[async_trait]
pub trait TrafficSink: Send + Sync + 'static {
    async fn deliver(&self, session: &SessionId, traffic: Traffic);
}

/// A traffic sink that drops everything (lifecycle-only tests and tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTraffic;

#[async_trait]
impl TrafficSink for NoTraffic {
    async fn deliver(&self, _session: &SessionId, _traffic: Traffic) {}
}

/// The two outputs of a running session, handed to [`Engine::start`].
#[derive(Clone)]
pub struct SessionOutput {
    /// Lifecycle events, in order.
    pub events: Arc<dyn EventSink>,
    /// Traffic, on its own path.
    pub traffic: Arc<dyn TrafficSink>,
}

impl SessionOutput {
    /// Lifecycle events to `events`, traffic to [`NoTraffic`].
    pub fn new(events: Arc<dyn EventSink>) -> Self {
        Self { events, traffic: Arc::new(NoTraffic) }
    }

    pub fn with_traffic(self, traffic: Arc<dyn TrafficSink>) -> Self {
        Self { traffic, ..self }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The session is already paired (pairing code, QR scan).
    #[error("session is already paired")]
    AlreadyPaired,
    /// The action needs a state the session is not in (e.g. no current QR).
    #[error("{0}")]
    InvalidState(String),
    /// A client-supplied value was refused by the engine (wrong pairing code, ...).
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    /// WhatsApp asked us to slow down.
    #[error("rate limited by WhatsApp")]
    RateLimited { retry_after: Option<Duration> },
    /// WhatsApp refused this message for good (a number not on WhatsApp, a 463-style refusal):
    /// sending it again would fail again. `code` is machine-readable (`not_on_whatsapp`,
    /// `refused`, ...).
    #[error("{message}")]
    Refused { code: String, message: String },
    /// The engine does not support this.
    #[error("{0} is not supported by this engine")]
    Unsupported(&'static str),
    /// The WhatsApp connection failed while serving the request.
    #[error("WhatsApp connection failed: {0}")]
    Upstream(String),
    #[error("engine failure: {0}")]
    Internal(String),
}

/// A running session, owned by the supervisor: its lifecycle, and its abilities.
///
/// QR pairing needs no call: the codes arrive as [`EngineEvent::Qr`]. Every ability slot
/// defaults to `None` (the engine does not offer it).
#[async_trait]
pub trait EngineSession: Send + Sync + 'static {
    /// Unlinks the device from the account. The supervisor then purges the keys.
    async fn logout(&self) -> Result<(), EngineError>;
    /// Disconnects cleanly, keeping the keys, and waits until the connection is closed.
    async fn stop(&self);

    /// Pairing by phone code.
    fn pairing(&self) -> Option<&dyn Pairing> {
        None
    }
    /// Sending messages.
    fn messaging(&self) -> Option<&dyn Messaging> {
        None
    }
    /// The account's contacts (issue 10).
    fn contacts(&self) -> Option<&dyn Contacts> {
        None
    }
    /// Uploading and downloading media (issue 10).
    fn media(&self) -> Option<&dyn Media> {
        None
    }

    /// The session as [`Any`], so that an engine's crate can reach its own session type (and
    /// controls only that engine has, such as the sandbox's) without a slot here. Implement it
    /// as `self`.
    fn as_any(&self) -> &dyn Any;
}

/// Linking a device by a code entered on the phone instead of a scanned QR code.
#[async_trait]
pub trait Pairing: Send + Sync {
    /// Asks for a phone pairing code for `phone` (the session must be unpaired).
    async fn request_pairing_code(&self, phone: &Phone) -> Result<PairingCode, EngineError>;
}

/// A message to send, with the WhatsApp id fixed when it was accepted: a send repeated after a
/// crash carries the same id, so the recipient sees one message.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub wa_message_id: String,
    pub chat: Jid,
    pub content: Content,
    /// The WhatsApp id of the message quoted, and its sender.
    pub reply_to: Option<Quoted>,
    pub mentions: Vec<Jid>,
}

/// A quoted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub wa_message_id: String,
    /// Who sent it (`None`: this session).
    pub from: Option<Jid>,
}

/// What WhatsApp said when it took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The server's time of the message.
    pub at: Timestamp,
}

/// An inbound message to mark read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMark {
    pub wa_message_id: String,
    pub from: Jid,
}

/// What a chat shows of this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPresence {
    Typing,
    Recording,
    Paused,
}

/// Whether a phone number has a WhatsApp account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberCheck {
    pub phone: Phone,
    /// The account's JID when it has one.
    pub jid: Option<Jid>,
}

/// Sending messages and what goes with them. Errors: `RateLimited` (the sender backs off and
/// tries again), `Upstream` (not connected: tried again once connected), `Refused` (the message
/// fails), `Unsupported` (this engine cannot send that kind: the message fails).
#[async_trait]
pub trait Messaging: Send + Sync {
    /// Sends `message` under its fixed WhatsApp id; returns once WhatsApp took it.
    async fn send(&self, message: &OutboundMessage) -> Result<Sent, EngineError>;
    /// Replaces the text of a message this session sent.
    async fn edit(&self, chat: &Jid, wa_message_id: &str, text: &str) -> Result<(), EngineError>;
    /// Deletes a message this session sent, for everyone.
    async fn revoke(&self, chat: &Jid, wa_message_id: &str) -> Result<(), EngineError>;
    /// Sends read receipts for these inbound messages of `chat`.
    async fn mark_read(&self, chat: &Jid, messages: &[ReadMark]) -> Result<(), EngineError>;
    /// Shows `presence` in `chat`.
    async fn presence(&self, chat: &Jid, presence: ChatPresence) -> Result<(), EngineError>;
    /// Which of `phones` have a WhatsApp account, in the order given.
    async fn check_numbers(&self, phones: &[Phone]) -> Result<Vec<NumberCheck>, EngineError>;
}

/// The account's contacts and their profiles. To be filled by the messaging work (issue 10).
pub trait Contacts: Send + Sync {}

/// Uploading and downloading media. To be filled by the messaging work (issue 10).
pub trait Media: Send + Sync {}

/// One kind of engine.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    fn kind(&self) -> EngineKind;
    /// Starts the session and returns at once; progress arrives through `output`.
    async fn start(&self, spec: SessionSpec, output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError>;
    /// Removes everything the engine stored for this session (its keys). Idempotent.
    async fn purge(&self, id: &SessionId) -> Result<(), EngineError>;
}
