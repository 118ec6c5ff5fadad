//! Messages: the aggregate [`MessageStore`].
//!
//! Every change a client can observe commits in one transaction with its event: an inbound
//! message with `message.received`, a status change with `message.status`, an edit with
//! `message.edited`, a revocation with `message.revoked`, a reaction with `message.reaction`.
//! Accepting an outbound message (`queued`) has no event: the client that sent it has the
//! answer, and its first event is its first move (`sent` or `failed`).
//!
//! Statuses only move forward ([`MessageStatus::may_become`]): a receipt that arrives late (a
//! `delivered` after a `read`) changes nothing and appends nothing.

use async_trait::async_trait;
use serde::Serialize;
use wagate_core::{
    Direction, Event, EventType, Jid, MediaInfo, Message, MessageError, MessageId, MessageStatus, NewEvent, OrgId,
    SessionId, Timestamp,
};

use crate::{Page, PageRequest, Result};

/// How long an `Idempotency-Key` answers repeats.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The `Idempotency-Key` of a send and the SHA-256 of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// What accepting an outbound message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Stored, `queued`.
    New(Message),
    /// The same key and request within the window: the message stored the first time.
    Repeat(Message),
    /// The same key with a different request within the window: nothing stored.
    KeyConflict,
}

/// Which messages a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub chat: Option<Jid>,
    pub direction: Option<Direction>,
}

/// A status to record for a message, found by its WhatsApp id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate<'a> {
    pub wa_message_id: &'a str,
    pub status: MessageStatus,
    pub error: Option<&'a MessageError>,
    /// When it happened (a `sent` also becomes the message's `timestamp`).
    pub at: Timestamp,
}

/// A chat of a session: the messages with one JID.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub id: Jid,
    /// The push name of the chat's latest inbound message, if any.
    pub name: Option<String>,
    pub last_message: Message,
    /// Inbound messages not yet marked read.
    pub unread_count: u64,
}

/// A reaction that arrived, about the message `target` of `chat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionRecord<'a> {
    pub chat: &'a Jid,
    pub from: &'a Jid,
    pub target: &'a str,
    /// Empty when the reaction was removed.
    pub emoji: &'a str,
}

/// Messages, per session.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores an outbound `queued` message. With `idempotency`, a stored message of the same
    /// session and key younger than [`IDEMPOTENCY_WINDOW`] answers instead ([`Accepted::Repeat`]
    /// for the same request hash, [`Accepted::KeyConflict`] for another); an older one gives its
    /// key up.
    async fn accept_outbound(&self, message: &Message, idempotency: Option<&Idempotency>) -> Result<Accepted>;

    /// Stores a message that arrived with its event: an inbound one with `message.received`, an
    /// outbound one (sent by this account from another of its devices) with `message.sent`.
    /// `Ok(None)` when the session already has a message with that WhatsApp id (a redelivery,
    /// or a message this session sent itself echoed back): nothing changes.
    async fn insert_inbound(&self, message: &Message) -> Result<Option<Message>>;

    async fn get_message(&self, org: &OrgId, session: &SessionId, id: &MessageId) -> Result<Option<Message>>;

    /// The session's message with that WhatsApp id.
    async fn find_by_wa_id(&self, session: &SessionId, wa_message_id: &str) -> Result<Option<Message>>;

    /// A session's messages, newest first.
    async fn list_messages(
        &self,
        org: &OrgId,
        session: &SessionId,
        filter: &MessageFilter,
        page: PageRequest<'_, MessageId>,
    ) -> Result<Page<Message, MessageId>>;

    /// Moves the message forward to `update.status` with its `message.status` event, in one
    /// transaction. A receipt (`delivered`, `read`, `played`) of a message still `queued` first
    /// records the `sent` it implies (two events, in order). `Ok(None)` when nothing moved (no
    /// such message, or the status would not be a step forward).
    async fn update_status(&self, session: &SessionId, update: &StatusUpdate<'_>) -> Result<Option<Message>>;

    /// Up to `limit` of the session's `queued` messages, oldest first: the send queue.
    async fn queued_messages(&self, session: &SessionId, limit: u32) -> Result<Vec<Message>>;

    /// Records the media fetched for an outbound message given by URL (the URL is then
    /// forgotten). `Ok(None)` when there is no such message.
    async fn set_media(&self, id: &MessageId, media: &MediaInfo, at: Timestamp) -> Result<Option<Message>>;

    /// The sessions with queued messages (resumed senders at start-up).
    async fn sessions_with_queued(&self) -> Result<Vec<SessionId>>;

    /// The inbound messages of a chat not yet marked read, oldest first.
    async fn unread_inbound(&self, session: &SessionId, chat: &Jid) -> Result<Vec<Message>>;

    /// Marks these inbound messages `read` (those still `received`); returns how many moved.
    async fn mark_read(&self, session: &SessionId, ids: &[MessageId], at: Timestamp) -> Result<u64>;

    /// Replaces the text of the message (marking it edited) with its `message.edited` event.
    /// `Ok(None)` when the session has no such message.
    async fn apply_edit(&self, session: &SessionId, wa_message_id: &str, text: &str, at: Timestamp) -> Result<Option<Message>>;

    /// Marks the message revoked with its `message.revoked` event (`from` is who revoked it).
    /// `Ok(None)` when the session has no such message.
    async fn apply_revoke(&self, session: &SessionId, wa_message_id: &str, from: &Jid, at: Timestamp) -> Result<Option<Message>>;

    /// Appends the `message.reaction` event of a reaction that arrived.
    async fn record_reaction(&self, org: &OrgId, session: &SessionId, reaction: &ReactionRecord<'_>) -> Result<Event>;

    /// A session's chats, latest activity first; a page continues after the `last_message` id
    /// of the previous page's last chat.
    async fn list_chats(&self, org: &OrgId, session: &SessionId, page: PageRequest<'_, MessageId>) -> Result<Page<Chat, MessageId>>;
}

/// `data` of a `message.status` event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusData<'a> {
    message_id: &'a MessageId,
    wa_message_id: &'a str,
    chat_id: &'a Jid,
    status: MessageStatus,
    previous_status: MessageStatus,
    error: Option<&'a MessageError>,
}

pub(crate) fn status_event(message: &Message, previous: MessageStatus) -> NewEvent {
    let data = StatusData {
        message_id: &message.id,
        wa_message_id: &message.wa_message_id,
        chat_id: &message.chat,
        status: message.status,
        previous_status: previous,
        error: message.error.as_ref(),
    };
    NewEvent::new(&message.org, Some(&message.session), EventType::MessageStatus, &data)
}

/// The event of a message that arrived: `message.received`, or `message.sent` for one this
/// account sent from another of its devices (stored as outbound).
pub(crate) fn received_event(message: &Message) -> NewEvent {
    let kind = match message.direction {
        Direction::Inbound => EventType::MessageReceived,
        Direction::Outbound => EventType::MessageSent,
    };
    NewEvent::new(&message.org, Some(&message.session), kind, message)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EditedData<'a> {
    message_id: &'a MessageId,
    wa_message_id: &'a str,
    chat_id: &'a Jid,
    text: &'a str,
}

pub(crate) fn edited_event(message: &Message, text: &str) -> NewEvent {
    let data = EditedData { message_id: &message.id, wa_message_id: &message.wa_message_id, chat_id: &message.chat, text };
    NewEvent::new(&message.org, Some(&message.session), EventType::MessageEdited, &data)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevokedData<'a> {
    message_id: &'a MessageId,
    wa_message_id: &'a str,
    chat_id: &'a Jid,
    from: &'a Jid,
}

pub(crate) fn revoked_event(message: &Message, from: &Jid) -> NewEvent {
    let data = RevokedData { message_id: &message.id, wa_message_id: &message.wa_message_id, chat_id: &message.chat, from };
    NewEvent::new(&message.org, Some(&message.session), EventType::MessageRevoked, &data)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReactionData<'a> {
    message_id: Option<&'a MessageId>,
    wa_message_id: &'a str,
    chat_id: &'a Jid,
    from: &'a Jid,
    emoji: &'a str,
}

pub(crate) fn reaction_event(org: &OrgId, session: &SessionId, target: Option<&MessageId>, reaction: &ReactionRecord<'_>) -> NewEvent {
    let data = ReactionData {
        message_id: target,
        wa_message_id: reaction.target,
        chat_id: reaction.chat,
        from: reaction.from,
        emoji: reaction.emoji,
    };
    NewEvent::new(org, Some(session), EventType::MessageReaction, &data)
}

/// The steps from `current` to `next` for an outbound message: a receipt of a message still
/// `queued` passes through `sent` first. Empty when `next` is no step forward.
pub(crate) fn steps(current: MessageStatus, next: MessageStatus, direction: Direction) -> Vec<MessageStatus> {
    if !current.may_become(next, direction) {
        return Vec::new();
    }
    let receipt = matches!(next, MessageStatus::Delivered | MessageStatus::Read | MessageStatus::Played);
    if direction == Direction::Outbound && current == MessageStatus::Queued && receipt {
        vec![MessageStatus::Sent, next]
    } else {
        vec![next]
    }
}

/// The message after one status step.
pub(crate) fn stepped(mut message: Message, next: MessageStatus, update: &StatusUpdate<'_>) -> Message {
    if next == MessageStatus::Sent {
        message.timestamp = update.at;
    }
    if next == MessageStatus::Failed {
        message.error = update.error.cloned();
    }
    message.status = next;
    message.updated_at = update.at;
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn receipts_of_queued_messages_pass_through_sent() {
        assert_eq!(steps(Queued, Delivered, Direction::Outbound), vec![Sent, Delivered]);
        assert_eq!(steps(Queued, Sent, Direction::Outbound), vec![Sent]);
        assert_eq!(steps(Queued, Failed, Direction::Outbound), vec![Failed]);
        assert_eq!(steps(Sent, Read, Direction::Outbound), vec![Read]);
        assert!(steps(Read, Delivered, Direction::Outbound).is_empty());
        assert_eq!(steps(Received, Read, Direction::Inbound), vec![Read]);
    }
}
