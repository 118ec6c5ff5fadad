//! [`MessageService`]: messages in and out.
//!
//! - **Accepting** a send validates it against the session's stored messages, commits a
//!   `queued` row with its WhatsApp id fixed (and its `Idempotency-Key`), and wakes the
//!   session's sender. A 202 is a committed row.
//! - **The sender** of a session ([`MessageService::ensure_sender`]) is one task that sends the
//!   session's queued messages oldest first (so in order within every chat), paced by the
//!   session's `sendPolicy`, while the session is connected; it sleeps when there is nothing to
//!   send or the session is down, and wakes on an accept or a status change. A message sent but
//!   not yet recorded when the gateway died is still `queued`: it is sent again under the same
//!   WhatsApp id, so the recipient sees one message. A refused send becomes `failed` with its
//!   error; a rate limit backs the sender off.
//! - **Traffic** from the engines ([`MessageTraffic`]) becomes stored messages and status
//!   changes, each with its event, in one transaction each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use wagate_core::{
    ContactCard, Direction, Jid, Location, MediaInfo, Message, MessageError, MessageId, MessageStatus, MessageType,
    Phone, ReactionInfo, ReplyRef, Session, SessionId, SessionStatus,
};
use wagate_engine::{
    ChatPresence, Content, EngineError, InboundMessage, MediaContent, Messaging, NumberCheck, OutboundMessage, Quoted,
    ReadMark, ReceiptKind, Traffic, TrafficSink,
};
use wagate_store::prelude::*;
use wagate_store::{Accepted, Chat, Idempotency, MessageFilter, Page, PageRequest, ReactionRecord, StatusUpdate, StoreError};

use crate::media::{BlobStore, FetchError, MediaFetcher};
use crate::supervisor::{SessionObserver, Supervisor, SupervisorError};

/// The default pace of a session that sets none (`WAGATE_SEND_PER_MINUTE`).
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// The default largest media (`WAGATE_MEDIA_MAX_BYTES`): 16 MiB.
pub const DEFAULT_MEDIA_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Settings of the message service.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Messages per minute of a session whose `sendPolicy` sets none (1 to 600).
    pub default_per_minute: u32,
    /// Where media bytes are kept (`<data dir>/media`); `None`: media is not supported.
    pub media_dir: Option<std::path::PathBuf>,
    /// The largest media accepted, sent or fetched.
    pub media_max_bytes: usize,
    /// Media URLs may point into loopback and private networks (as `WAGATE_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { default_per_minute: DEFAULT_PER_MINUTE, media_dir: None, media_max_bytes: DEFAULT_MEDIA_MAX_BYTES, allow_private: false }
    }
}

/// Where the bytes of media to send come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaSource {
    /// Given in the request (the hash stands for the bytes in the request hash).
    Data {
        sha256: String,
        #[serde(skip)]
        bytes: Vec<u8>,
    },
    /// Fetched by the sender before it sends.
    Url(String),
}

/// Media to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMedia {
    /// `image`, `video`, `audio`, `document` or `sticker`.
    pub kind: MessageType,
    pub source: MediaSource,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    pub voice: bool,
}

/// What a send carries besides the recipient.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SendContent {
    Text(String),
    Location(Location),
    Contact(ContactCard),
    /// A reaction to the stored message `message_id` of the same session and chat.
    Reaction { message_id: MessageId, emoji: String },
    Media(SendMedia),
}

/// A message to send, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    pub to: Jid,
    pub content: SendContent,
    /// A stored message of the same chat to quote.
    pub reply_to: Option<MessageId>,
    pub mentions: Vec<Phone>,
}

impl SendMessage {
    /// SHA-256 of the request in a canonical form: what an `Idempotency-Key` is bound to.
    pub fn request_hash(&self) -> [u8; 32] {
        let bytes = serde_json::to_vec(self).expect("a send request serializes");
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        hash
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> SupervisorError {
    SupervisorError::Engine(EngineError::Invalid { field, message: message.into() })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One session's sender.
struct Sender {
    wake: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Messages: accepting sends, the per-session senders, and the reads the API needs.
pub struct MessageService {
    store: Arc<dyn Store>,
    supervisor: Arc<Supervisor>,
    config: MessagingConfig,
    senders: Mutex<HashMap<SessionId, Arc<Sender>>>,
    me: Weak<MessageService>,
    closed: AtomicBool,
    blobs: Option<Arc<BlobStore>>,
    fetcher: MediaFetcher,
}

impl MessageService {
    /// The service; it also becomes the supervisor's traffic sink and status observer.
    pub fn new(store: Arc<dyn Store>, supervisor: Arc<Supervisor>, config: MessagingConfig) -> Arc<Self> {
        let blobs = config.media_dir.clone().map(|dir| Arc::new(BlobStore::new(dir)));
        let fetcher = MediaFetcher::new(config.allow_private, config.media_max_bytes);
        let service = Arc::new_cyclic(|me| Self {
            store: Arc::clone(&store),
            supervisor: Arc::clone(&supervisor),
            config,
            senders: Mutex::default(),
            me: me.clone(),
            closed: AtomicBool::new(false),
            blobs: blobs.clone(),
            fetcher,
        });
        supervisor.set_traffic(Arc::new(MessageTraffic { store, blobs }));
        let observer: Weak<dyn SessionObserver> = Arc::downgrade(&service) as Weak<dyn SessionObserver>;
        supervisor.set_observer(observer);
        service
    }

    pub fn config(&self) -> &MessagingConfig {
        &self.config
    }

    /// Starts a sender for every session with queued messages (at gateway start): they send
    /// once their sessions are connected.
    pub async fn start(&self) -> Result<(), StoreError> {
        for id in self.store.sessions_with_queued().await? {
            self.ensure_sender(&id).wake.notify_one();
        }
        Ok(())
    }

    /// Stops every sender (at shutdown). What they had not recorded is sent again at the next
    /// start, under the same WhatsApp ids.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for (_, sender) in lock(&self.senders).drain() {
            if let Some(task) = lock(&sender.task).take() {
                task.abort();
            }
        }
    }

    /// The session's sender, started if it was not running.
    fn ensure_sender(&self, id: &SessionId) -> Arc<Sender> {
        let mut senders = lock(&self.senders);
        if let Some(sender) = senders.get(id) {
            return Arc::clone(sender);
        }
        let sender = Arc::new(Sender { wake: Notify::new(), task: Mutex::new(None) });
        senders.insert(id.clone(), Arc::clone(&sender));
        if let Some(me) = self.me.upgrade()
            && !self.closed.load(Ordering::Acquire)
        {
            let task = tokio::spawn(me.run_sender(id.clone(), Arc::clone(&sender)));
            *lock(&sender.task) = Some(task);
        }
        sender
    }

    fn forget_sender(&self, id: &SessionId, sender: &Arc<Sender>) {
        let mut senders = lock(&self.senders);
        if senders.get(id).is_some_and(|s| Arc::ptr_eq(s, sender)) {
            senders.remove(id);
        }
    }

    /// Accepts a send: 409 `Conflict` for a session that was never paired (or is logged out),
    /// `Invalid` naming the field for a `replyTo` or reaction target the session does not have.
    /// Returns the message and whether it is new (false: an idempotent repeat).
    pub async fn send(
        &self,
        session: &Session,
        request: SendMessage,
        idempotency_key: Option<String>,
    ) -> Result<(Message, bool), SupervisorError> {
        let Some(identity) = session.identity.as_ref() else {
            return Err(SupervisorError::Conflict("the session is not paired: pair it before sending".into()));
        };
        if session.status == SessionStatus::LoggedOut {
            return Err(SupervisorError::Conflict("the session is logged out: pair it again before sending".into()));
        }
        let idempotency = idempotency_key.map(|key| Idempotency { key, request_hash: request.request_hash() });
        let now = wagate_core::now();
        let reply_to = match &request.reply_to {
            None => None,
            Some(id) => {
                let quoted = self.store.get_message(&session.org, &session.id, id).await?;
                let quoted = quoted.filter(|m| m.chat == request.to).ok_or_else(|| {
                    invalid("replyTo", "must be a stored message of this session in the same chat")
                })?;
                Some(ReplyRef { message_id: Some(quoted.id), wa_message_id: quoted.wa_message_id })
            }
        };
        let mut message = Message {
            id: MessageId::generate(),
            org: session.org.clone(),
            session: session.id.clone(),
            chat: request.to.clone(),
            wa_message_id: wagate_core::new_wa_message_id(),
            direction: Direction::Outbound,
            from_me: true,
            from: Jid::parse(&identity.jid).ok().or_else(|| Some(Jid::of_phone(&identity.phone))),
            from_phone: Some(identity.phone.clone()),
            push_name: None,
            kind: MessageType::Text,
            text: None,
            media: None,
            location: None,
            contact: None,
            reaction: None,
            media_url: None,
            reply_to,
            mentions: request.mentions.iter().map(|p| p.as_str().to_owned()).collect(),
            edited: false,
            revoked: false,
            status: MessageStatus::Queued,
            error: None,
            timestamp: now,
            created_at: now,
            updated_at: now,
        };
        match request.content {
            SendContent::Text(text) => message.text = Some(text),
            SendContent::Location(location) => {
                message.kind = MessageType::Location;
                message.location = Some(location);
            }
            SendContent::Contact(contact) => {
                message.kind = MessageType::Contact;
                message.contact = Some(contact);
            }
            SendContent::Reaction { message_id, emoji } => {
                let target = self.store.get_message(&session.org, &session.id, &message_id).await?;
                let target = target.filter(|m| m.chat == request.to).ok_or_else(|| {
                    invalid("reaction.messageId", "must be a stored message of this session in the chat `to`")
                })?;
                message.kind = MessageType::Reaction;
                message.reaction =
                    Some(ReactionInfo { message_id: Some(target.id), wa_message_id: target.wa_message_id, emoji });
            }
            SendContent::Media(media) => {
                let blobs = self.blobs.as_ref().ok_or(EngineError::Unsupported("media"))?;
                message.kind = media.kind;
                let mut info = MediaInfo {
                    mime_type: media.mime_type.unwrap_or_default(),
                    filename: media.filename,
                    size: 0,
                    sha256: String::new(),
                    caption: media.caption,
                    voice: media.voice,
                };
                match media.source {
                    MediaSource::Data { bytes, .. } => {
                        info.sha256 = blobs.put(&bytes).await.map_err(|e| EngineError::Internal(format!("cannot store media: {e}")))?;
                        info.size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                        if info.mime_type.is_empty() {
                            media.kind.default_mime().clone_into(&mut info.mime_type);
                        }
                    }
                    MediaSource::Url(url) => message.media_url = Some(url),
                }
                message.media = Some(info);
            }
        }
        match self.store.accept_outbound(&message, idempotency.as_ref()).await? {
            Accepted::New(stored) => {
                tracing::debug!(session = %session.id, message = %stored.id, "message queued");
                self.ensure_sender(&session.id).wake.notify_one();
                Ok((stored, true))
            }
            Accepted::Repeat(first) => Ok((first, false)),
            Accepted::KeyConflict => Err(SupervisorError::Conflict(
                "this Idempotency-Key was used with a different request in the last 24 hours".into(),
            )),
        }
    }

    pub async fn get(&self, session: &Session, id: &MessageId) -> Result<Option<Message>, StoreError> {
        self.store.get_message(&session.org, &session.id, id).await
    }

    pub async fn list(
        &self,
        session: &Session,
        filter: &MessageFilter,
        page: PageRequest<'_, MessageId>,
    ) -> Result<Page<Message, MessageId>, StoreError> {
        self.store.list_messages(&session.org, &session.id, filter, page).await
    }

    pub async fn chats(&self, session: &Session, page: PageRequest<'_, MessageId>) -> Result<Page<Chat, MessageId>, StoreError> {
        self.store.list_chats(&session.org, &session.id, page).await
    }

    /// The running session's messaging: `Conflict` when it is not running, `Unsupported` when
    /// its engine cannot send.
    fn messaging(&self, session: &Session) -> Result<Arc<dyn wagate_engine::EngineSession>, SupervisorError> {
        let running = self.supervisor.running(session)?;
        let es = running.into_engine_session();
        if es.messaging().is_none() {
            return Err(EngineError::Unsupported("messaging").into());
        }
        Ok(es)
    }

    /// Edits the text of a text message this session sent.
    pub async fn edit(&self, session: &Session, message: &Message, text: &str) -> Result<Message, SupervisorError> {
        if message.direction != Direction::Outbound || message.kind != MessageType::Text {
            return Err(SupervisorError::Conflict("only text messages this session sent can be edited".into()));
        }
        if message.revoked {
            return Err(SupervisorError::Conflict("the message was revoked".into()));
        }
        if matches!(message.status, MessageStatus::Queued | MessageStatus::Failed) {
            return Err(SupervisorError::Conflict(format!("a {} message cannot be edited", message.status.as_str())));
        }
        let es = self.messaging(session)?;
        let messaging = es.messaging().expect("checked");
        messaging.edit(&message.chat, &message.wa_message_id, text).await?;
        let edited = self.store.apply_edit(&session.id, &message.wa_message_id, text, wagate_core::now()).await?;
        Ok(edited.unwrap_or_else(|| message.clone()))
    }

    /// Deletes a message this session sent, for everyone.
    pub async fn revoke(&self, session: &Session, message: &Message) -> Result<Message, SupervisorError> {
        if message.direction != Direction::Outbound {
            return Err(SupervisorError::Conflict("only messages this session sent can be revoked".into()));
        }
        if message.revoked {
            return Ok(message.clone());
        }
        if matches!(message.status, MessageStatus::Queued | MessageStatus::Failed) {
            return Err(SupervisorError::Conflict(format!("a {} message cannot be revoked", message.status.as_str())));
        }
        let es = self.messaging(session)?;
        let messaging = es.messaging().expect("checked");
        messaging.revoke(&message.chat, &message.wa_message_id).await?;
        let me = message.from.clone().unwrap_or_else(|| message.chat.clone());
        let revoked = self.store.apply_revoke(&session.id, &message.wa_message_id, &me, wagate_core::now()).await?;
        Ok(revoked.unwrap_or_else(|| message.clone()))
    }

    /// Sends read receipts for the chat's unread inbound messages and marks them read; returns
    /// how many.
    pub async fn mark_read(&self, session: &Session, chat: &Jid) -> Result<u64, SupervisorError> {
        let unread = self.store.unread_inbound(&session.id, chat).await?;
        if unread.is_empty() {
            return Ok(0);
        }
        let es = self.messaging(session)?;
        let messaging = es.messaging().expect("checked");
        let marks: Vec<ReadMark> = unread
            .iter()
            .map(|m| ReadMark { wa_message_id: m.wa_message_id.clone(), from: m.from.clone().unwrap_or_else(|| m.chat.clone()) })
            .collect();
        messaging.mark_read(chat, &marks).await?;
        let ids: Vec<MessageId> = unread.into_iter().map(|m| m.id).collect();
        Ok(self.store.mark_read(&session.id, &ids, wagate_core::now()).await?)
    }

    pub async fn presence(&self, session: &Session, chat: &Jid, presence: ChatPresence) -> Result<(), SupervisorError> {
        let es = self.messaging(session)?;
        es.messaging().expect("checked").presence(chat, presence).await?;
        Ok(())
    }

    pub async fn check_numbers(&self, session: &Session, phones: &[Phone]) -> Result<Vec<NumberCheck>, SupervisorError> {
        let es = self.messaging(session)?;
        Ok(es.messaging().expect("checked").check_numbers(phones).await?)
    }

    /// The messages per minute in force for `session`.
    pub fn per_minute(&self, session: &Session) -> u32 {
        session.send_policy.messages_per_minute.unwrap_or(self.config.default_per_minute).clamp(1, 600)
    }

    /// The session's sender: sends its queued messages, one at a time, while it is connected.
    async fn run_sender(self: Arc<Self>, id: SessionId, sender: Arc<Sender>) {
        let mut last_sent: Option<Instant> = None;
        let mut backoff = Duration::ZERO;
        loop {
            let wake = sender.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            match self.send_next(&id, &mut last_sent, &mut backoff).await {
                Step::Sent => {}
                Step::Gone => {
                    self.forget_sender(&id, &sender);
                    return;
                }
                Step::Idle => wake.await,
                Step::RetryIn(delay) => {
                    tokio::select! {
                        () = &mut wake => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Step::BackOff(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// One step of a sender: sends the oldest queued message if the session is connected and
    /// its pace allows, and records the outcome.
    async fn send_next(&self, id: &SessionId, last_sent: &mut Option<Instant>, backoff: &mut Duration) -> Step {
        let session = match self.store.get_session_unscoped(id).await {
            Ok(Some(session)) => session,
            Ok(None) => return Step::Gone,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "sender cannot read its session");
                return Step::RetryIn(Duration::from_secs(1));
            }
        };
        if session.status != SessionStatus::Connected {
            return Step::Idle;
        }
        // Connected is written while the engine may still be starting: look again shortly.
        let Ok(running) = self.supervisor.running(&session) else { return Step::RetryIn(Duration::from_millis(250)) };
        let es = running.into_engine_session();
        let next = match self.store.queued_messages(id, 1).await {
            Ok(mut queued) if !queued.is_empty() => queued.remove(0),
            Ok(_) => return Step::Idle,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "sender cannot read its queue");
                return Step::RetryIn(Duration::from_secs(1));
            }
        };
        let Some(messaging) = es.messaging() else {
            let error = MessageError { code: "unsupported".into(), message: "this session's engine cannot send messages".into() };
            self.record(id, &next, MessageStatus::Failed, Some(&error)).await;
            return Step::Sent;
        };
        // The pace: at most `per_minute`, with random spacing of 1 to 1.25 times the interval.
        let interval = Duration::from_secs_f64(60.0 / f64::from(self.per_minute(&session)));
        if let Some(last) = *last_sent {
            let spacing = interval.mul_f64(rand::thread_rng().gen_range(1.0..1.25));
            tokio::time::sleep_until(last + spacing).await;
        }
        if session.send_policy.typing
            && let Some(text) = next.text.as_deref()
        {
            typing(messaging, &next.chat, text).await;
        }
        let next = match self.fetch_pending_media(next).await {
            Ok(next) => next,
            Err(failed) => {
                let (message, error) = *failed;
                self.record(id, &message, MessageStatus::Failed, Some(&error)).await;
                return Step::Sent;
            }
        };
        let outbound = match self.outbound(&next).await {
            Ok(outbound) => outbound,
            Err(error) => {
                self.record(id, &next, MessageStatus::Failed, Some(&error)).await;
                return Step::Sent;
            }
        };
        let result = messaging.send(&outbound).await;
        match result {
            Ok(sent) => {
                *last_sent = Some(Instant::now());
                *backoff = Duration::ZERO;
                let update = StatusUpdate { wa_message_id: &next.wa_message_id, status: MessageStatus::Sent, error: None, at: sent.at };
                if let Err(e) = self.store.update_status(id, &update).await {
                    tracing::error!(session = %id, message = %next.id, error = %e, "could not record a sent message");
                }
                Step::Sent
            }
            Err(EngineError::RateLimited { retry_after }) => {
                *backoff = retry_after.unwrap_or_else(|| (*backoff * 2).clamp(Duration::from_secs(5), Duration::from_secs(300)));
                tracing::warn!(session = %id, ?backoff, "rate limited by WhatsApp; the sender backs off");
                Step::BackOff(*backoff)
            }
            Err(EngineError::Upstream(reason)) => {
                tracing::debug!(session = %id, %reason, "not connected; the message waits");
                Step::RetryIn(Duration::from_secs(1))
            }
            Err(e) => {
                let code = match &e {
                    EngineError::Refused { code, .. } => code.clone(),
                    EngineError::Unsupported(_) => "unsupported".into(),
                    EngineError::Invalid { .. } => "invalid".into(),
                    _ => "send_failed".into(),
                };
                let error = MessageError { code, message: e.to_string() };
                tracing::info!(session = %id, message = %next.id, error = %e, "message failed");
                self.record(id, &next, MessageStatus::Failed, Some(&error)).await;
                *last_sent = Some(Instant::now());
                Step::Sent
            }
        }
    }

    async fn record(&self, session: &SessionId, message: &Message, status: MessageStatus, error: Option<&MessageError>) {
        let update = StatusUpdate { wa_message_id: &message.wa_message_id, status, error, at: wagate_core::now() };
        if let Err(e) = self.store.update_status(session, &update).await {
            tracing::error!(session = %session, message = %message.id, error = %e, "could not record a message status");
        }
    }

    /// Fetches the media of a message given by URL and records it (the message with its
    /// media), or the error that fails the message.
    async fn fetch_pending_media(&self, message: Message) -> Result<Message, Box<(Message, MessageError)>> {
        let Some(url) = message.media_url.clone() else { return Ok(message) };
        let failed = |message: Message, e: FetchError| Err(Box::new((message, MessageError { code: e.code.into(), message: e.message })));
        let Some(blobs) = self.blobs.as_ref() else {
            return failed(message, FetchError { code: "unsupported", message: "media is not supported by this gateway".into() });
        };
        let (bytes, content_type) = match self.fetcher.fetch(&url).await {
            Ok(fetched) => fetched,
            Err(e) => return failed(message, e),
        };
        let sha256 = match blobs.put(&bytes).await {
            Ok(sha) => sha,
            Err(e) => return failed(message, FetchError { code: "media_unstored", message: format!("the media could not be stored: {e}") }),
        };
        let mut info = message.media.clone().unwrap_or(MediaInfo {
            mime_type: String::new(),
            filename: None,
            size: 0,
            sha256: String::new(),
            caption: None,
            voice: false,
        });
        info.sha256 = sha256;
        info.size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if info.mime_type.is_empty() {
            info.mime_type = content_type.unwrap_or_else(|| message.kind.default_mime().to_owned());
        }
        match self.store.set_media(&message.id, &info, wagate_core::now()).await {
            Ok(Some(updated)) => Ok(updated),
            Ok(None) => failed(message, FetchError { code: "media_unstored", message: "the message is gone".into() }),
            Err(e) => failed(message, FetchError { code: "media_unstored", message: format!("the media could not be recorded: {e}") }),
        }
    }

    /// The bytes of a message's media, when stored.
    pub async fn media_bytes(&self, message: &Message) -> Result<Option<Vec<u8>>, SupervisorError> {
        let (Some(media), Some(blobs)) = (message.media.as_ref(), self.blobs.as_ref()) else { return Ok(None) };
        blobs.get(&media.sha256).await.map_err(|e| EngineError::Internal(format!("cannot read media: {e}")).into())
    }

    /// Fetches media by URL (the sandbox's `receive`): the bytes and their `Content-Type`.
    /// `Invalid` naming `field` when it cannot be fetched.
    pub async fn fetch_media(&self, field: &'static str, url: &str) -> Result<(Vec<u8>, Option<String>), SupervisorError> {
        self.fetcher.fetch(url).await.map_err(|e| invalid(field, e.message))
    }

    /// The largest media accepted.
    pub fn media_max_bytes(&self) -> usize {
        self.config.media_max_bytes
    }

    /// The engine's form of a stored outbound message; the error that fails it when its media
    /// bytes are gone.
    async fn outbound(&self, message: &Message) -> Result<OutboundMessage, MessageError> {
        if message.kind.has_media() {
            let missing = || MessageError { code: "media_missing".into(), message: "the media bytes are not stored".into() };
            let info = message.media.clone().ok_or_else(missing)?;
            let blobs = self.blobs.as_ref().ok_or_else(missing)?;
            let bytes = blobs.get(&info.sha256).await.ok().flatten().ok_or_else(missing)?;
            let content = Content::Media(MediaContent { kind: message.kind, info, bytes: bytes.into() });
            return Ok(self.outbound_with(message, content).await);
        }
        let content = match message.kind {
            MessageType::Location => message.location.clone().map(Content::Location),
            MessageType::Contact => message.contact.clone().map(Content::Contact),
            MessageType::Reaction => match &message.reaction {
                None => None,
                Some(r) => {
                    let target = self.store.find_by_wa_id(&message.session, &r.wa_message_id).await.ok().flatten();
                    let target_from_me = target.is_some_and(|t| t.from_me);
                    Some(Content::Reaction { target: r.wa_message_id.clone(), emoji: r.emoji.clone(), target_from_me })
                }
            },
            _ => None,
        }
        .unwrap_or_else(|| Content::Text(message.text.clone().unwrap_or_default()));
        Ok(self.outbound_with(message, content).await)
    }

    async fn outbound_with(&self, message: &Message, content: Content) -> OutboundMessage {
        let reply_to = match &message.reply_to {
            None => None,
            Some(reply) => {
                let quoted = self.store.find_by_wa_id(&message.session, &reply.wa_message_id).await.ok().flatten();
                let from = quoted.filter(|q| q.direction == Direction::Inbound).and_then(|q| q.from);
                Some(Quoted { wa_message_id: reply.wa_message_id.clone(), from })
            }
        };
        let mentions = message
            .mentions
            .iter()
            .filter_map(|m| Phone::parse(m).map(|p| Jid::of_phone(&p)).ok().or_else(|| Jid::parse(m).ok()))
            .collect();
        OutboundMessage { wa_message_id: message.wa_message_id.clone(), chat: message.chat.clone(), content, reply_to, mentions }
    }
}

/// Shows "typing…" in `chat` for a time that grows with the text (50 ms a character, 0.5 to
/// 5 s), then stops. Failures are not worth the message: it is sent anyway.
async fn typing(messaging: &dyn Messaging, chat: &Jid, text: &str) {
    let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
    let shown = Duration::from_millis(chars.saturating_mul(50)).clamp(Duration::from_millis(500), Duration::from_secs(5));
    if messaging.presence(chat, ChatPresence::Typing).await.is_ok() {
        tokio::time::sleep(shown).await;
        let _ = messaging.presence(chat, ChatPresence::Paused).await;
    }
}

/// What a sender does after a step.
enum Step {
    /// A message went (or failed): go on with the next.
    Sent,
    /// Nothing to send now (empty queue, or the session is not connected): wait to be woken.
    Idle,
    /// Try again after this delay, or when woken.
    RetryIn(Duration),
    /// Rate limited: wait this long whatever happens.
    BackOff(Duration),
    /// The session is gone.
    Gone,
}

impl SessionObserver for MessageService {
    fn status_written(&self, session: &Session) {
        if session.status == SessionStatus::Connected {
            self.ensure_sender(&session.id).wake.notify_one();
        } else if let Some(sender) = lock(&self.senders).get(&session.id) {
            sender.wake.notify_one();
        }
    }
}

/// Stores what the engines deliver: inbound messages, receipts, reactions, edits, revocations,
/// each with its event.
pub struct MessageTraffic {
    store: Arc<dyn Store>,
    /// Where inbound media bytes go (`None`: media is stored without its bytes).
    blobs: Option<Arc<BlobStore>>,
}

impl MessageTraffic {
    pub fn new(store: Arc<dyn Store>, blobs: Option<Arc<BlobStore>>) -> Self {
        Self { store, blobs }
    }

    async fn store_traffic(&self, session: &Session, traffic: Traffic) -> Result<(), StoreError> {
        let id = &session.id;
        match traffic {
            Traffic::Message(inbound) => {
                if let Content::Reaction { target, emoji, .. } = &inbound.content {
                    let reaction = ReactionRecord { chat: &inbound.chat, from: &inbound.from, target, emoji };
                    self.store.record_reaction(&session.org, id, &reaction).await?;
                    return Ok(());
                }
                let message = self.inbound(session, *inbound).await?;
                self.store.insert_inbound(&message).await?;
            }
            Traffic::Receipt { wa_message_ids, kind, at, .. } => {
                let status = match kind {
                    ReceiptKind::Delivered => MessageStatus::Delivered,
                    ReceiptKind::Read => MessageStatus::Read,
                    ReceiptKind::Played => MessageStatus::Played,
                };
                for wa_id in &wa_message_ids {
                    let update = StatusUpdate { wa_message_id: wa_id, status, error: None, at };
                    self.store.update_status(id, &update).await?;
                }
            }
            Traffic::Reaction { chat, from, target, emoji, .. } => {
                let reaction = ReactionRecord { chat: &chat, from: &from, target: &target, emoji: &emoji };
                self.store.record_reaction(&session.org, id, &reaction).await?;
            }
            Traffic::Edited { wa_message_id, text, at, .. } => {
                self.store.apply_edit(id, &wa_message_id, &text, at).await?;
            }
            Traffic::Revoked { from, wa_message_id, at, .. } => {
                self.store.apply_revoke(id, &wa_message_id, &from, at).await?;
            }
        }
        Ok(())
    }

    async fn inbound(&self, session: &Session, inbound: InboundMessage) -> Result<Message, StoreError> {
        let now = wagate_core::now();
        let reply_to = match inbound.reply_to {
            None => None,
            Some(wa_message_id) => {
                let quoted = self.store.find_by_wa_id(&session.id, &wa_message_id).await?;
                Some(ReplyRef { message_id: quoted.map(|q| q.id), wa_message_id })
            }
        };
        let kind = inbound.content.kind();
        // Sent by this account from another of its devices: its own message, already sent.
        let (direction, status) = match inbound.from_me {
            true => (Direction::Outbound, MessageStatus::Sent),
            false => (Direction::Inbound, MessageStatus::Received),
        };
        let mut message = Message {
            id: MessageId::generate(),
            org: session.org.clone(),
            session: session.id.clone(),
            chat: inbound.chat,
            wa_message_id: inbound.wa_message_id,
            direction,
            from_me: inbound.from_me,
            from_phone: inbound.from_phone.or_else(|| inbound.from.phone()),
            from: Some(inbound.from),
            push_name: inbound.push_name,
            kind,
            text: None,
            media: None,
            location: None,
            contact: None,
            reaction: None,
            media_url: None,
            reply_to,
            mentions: inbound.mentions.iter().map(|j| j.phone().map_or_else(|| j.to_string(), |p| p.to_string())).collect(),
            edited: false,
            revoked: false,
            status,
            error: inbound.error,
            timestamp: inbound.timestamp,
            created_at: now,
            updated_at: now,
        };
        match inbound.content {
            Content::Text(text) => message.text = Some(text),
            Content::Location(location) => message.location = Some(location),
            Content::Contact(contact) => message.contact = Some(contact),
            Content::Reaction { .. } => {}
            Content::Unsupported { raw } => tracing::debug!(session = %session.id, %raw, "an unsupported kind of message stored"),
            // Media the engine could not fetch: its description only; `error` says why.
            Content::Media(media) if media.bytes.is_empty() && message.error.is_some() => message.media = Some(media.info),
            Content::Media(media) => {
                let mut info = media.info;
                info.size = u64::try_from(media.bytes.len()).unwrap_or(u64::MAX);
                match &self.blobs {
                    Some(blobs) => match blobs.put(&media.bytes).await {
                        Ok(sha) => info.sha256 = sha,
                        Err(e) => tracing::error!(session = %session.id, error = %e, "cannot store inbound media bytes"),
                    },
                    None => tracing::warn!(session = %session.id, "inbound media stored without its bytes: no media directory"),
                }
                message.media = Some(info);
            }
        }
        Ok(message)
    }
}

#[async_trait]
impl TrafficSink for MessageTraffic {
    async fn deliver(&self, session: &SessionId, traffic: Traffic) {
        let row = match self.store.get_session_unscoped(session).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                tracing::debug!(session = %session, "traffic of a deleted session; dropped");
                return;
            }
            Err(e) => {
                tracing::error!(session = %session, error = %e, "cannot store traffic: the session is unreadable");
                return;
            }
        };
        if let Err(e) = self.store_traffic(&row, traffic).await {
            tracing::error!(session = %session, error = %e, "could not store traffic");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use wagate_core::{EngineKind, Identity, OrgId, SendPolicy};
    use wagate_engine::testing::{eventually, phone};
    use wagate_engine::{Engine, EngineEvent, EngineSession, SessionOutput, SessionSpec, Sent};
    use wagate_store::{EventFilter, IdentityUpdate, SessionSettings, SessionStateUpdate};

    use super::*;
    use crate::supervisor::SupervisorConfig;
    use crate::testing::{new_session, test_store};

    /// An engine whose sessions connect at once and answer sends from a script (then `Ok`),
    /// recording every send with its time.
    #[derive(Default)]
    struct Scripted {
        results: Mutex<VecDeque<Result<(), EngineError>>>,
        sends: Mutex<Vec<(String, Instant)>>,
        /// Presence shown, and sends, in order.
        log: Mutex<Vec<(String, Instant)>>,
    }

    struct ScriptedSession(Arc<Scripted>);

    #[async_trait]
    impl EngineSession for ScriptedSession {
        async fn logout(&self) -> Result<(), EngineError> {
            Ok(())
        }
        async fn stop(&self) {}
        fn messaging(&self) -> Option<&dyn Messaging> {
            Some(self)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[async_trait]
    impl Messaging for ScriptedSession {
        async fn send(&self, message: &OutboundMessage) -> Result<Sent, EngineError> {
            lock(&self.0.sends).push((message.wa_message_id.clone(), Instant::now()));
            lock(&self.0.log).push((format!("send {}", message.wa_message_id), Instant::now()));
            let next = lock(&self.0.results).pop_front().unwrap_or(Ok(()));
            next.map(|()| Sent { at: wagate_core::now() })
        }
        async fn edit(&self, _: &Jid, _: &str, _: &str) -> Result<(), EngineError> {
            Ok(())
        }
        async fn revoke(&self, _: &Jid, _: &str) -> Result<(), EngineError> {
            Ok(())
        }
        async fn mark_read(&self, _: &Jid, _: &[ReadMark]) -> Result<(), EngineError> {
            Ok(())
        }
        async fn presence(&self, chat: &Jid, presence: ChatPresence) -> Result<(), EngineError> {
            lock(&self.0.log).push((format!("{presence:?} {chat}"), Instant::now()));
            Ok(())
        }
        async fn check_numbers(&self, _: &[Phone]) -> Result<Vec<NumberCheck>, EngineError> {
            Ok(Vec::new())
        }
    }

    struct ScriptedEngine(Arc<Scripted>);

    #[async_trait]
    impl Engine for ScriptedEngine {
        fn kind(&self) -> EngineKind {
            EngineKind::Whatsapp
        }
        async fn start(&self, spec: SessionSpec, output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError> {
            tokio::spawn(async move { output.events.emit(&spec.id, EngineEvent::Connected).await });
            Ok(Arc::new(ScriptedSession(Arc::clone(&self.0))))
        }
        async fn purge(&self, _: &SessionId) -> Result<(), EngineError> {
            Ok(())
        }
    }

    struct Fixture {
        store: Arc<dyn Store>,
        service: Arc<MessageService>,
        script: Arc<Scripted>,
        session: Session,
        _db: tempfile::TempDir,
    }

    /// A paired session at `per_minute`, started and connected.
    async fn fixture(per_minute: u32, script: Vec<Result<(), EngineError>>) -> Fixture {
        fixture_with(SendPolicy { messages_per_minute: Some(per_minute), typing: false }, script).await
    }

    async fn fixture_with(policy: SendPolicy, script: Vec<Result<(), EngineError>>) -> Fixture {
        let per_minute = policy.messages_per_minute.expect("a pace");
        let (store, _db) = test_store().await;
        let scripted = Arc::new(Scripted { results: Mutex::new(script.into()), ..Scripted::default() });
        let engine: Arc<dyn Engine> = Arc::new(ScriptedEngine(Arc::clone(&scripted)));
        let supervisor = Supervisor::new(Arc::clone(&store), [engine], SupervisorConfig::default());
        let service = MessageService::new(Arc::clone(&store), Arc::clone(&supervisor), MessagingConfig::default());
        let session = new_session(&store, EngineKind::Whatsapp, false).await;
        let identity = Identity {
            phone: phone("628100000000"),
            jid: "628100000000@s.whatsapp.net".into(),
            lid: None,
            push_name: None,
            platform: None,
        };
        let paired = SessionStateUpdate {
            status: SessionStatus::Stopped,
            status_reason: None,
            desired_running: None,
            identity: IdentityUpdate::Set(identity),
            at: wagate_core::now(),
        };
        store.update_session_state(&session.id, &paired).await.unwrap();
        let pace = SessionSettings {
            send_per_minute: Some(Some(per_minute)),
            send_typing: Some(policy.typing),
            ..SessionSettings::default()
        };
        let session = store.update_session_settings(&session.org, &session.id, &pace, wagate_core::now()).await.unwrap().unwrap();
        assert_eq!(session.send_policy, policy);
        supervisor.start(&session).await.unwrap();
        let session = eventually("connected", || async {
            let row = store.get_session_unscoped(&session.id).await.unwrap().unwrap();
            (row.status == SessionStatus::Connected).then_some(row)
        })
        .await;
        Fixture { store, service, script: scripted, session, _db }
    }

    fn text(to: &str, body: &str) -> SendMessage {
        SendMessage {
            to: Jid::of_phone(&phone(to)),
            content: SendContent::Text(body.into()),
            reply_to: None,
            mentions: Vec::new(),
        }
    }

    impl Fixture {
        async fn status_of(&self, id: &MessageId) -> Message {
            self.store.get_message(&self.session.org, &self.session.id, id).await.unwrap().unwrap()
        }

        async fn wait_status(&self, id: &MessageId, status: MessageStatus) -> Message {
            eventually(status.as_str(), || async { Some(self.status_of(id).await).filter(|m| m.status == status) }).await
        }
    }

    #[tokio::test]
    async fn a_refused_send_fails_with_its_error_and_the_queue_goes_on() {
        let refused = EngineError::Refused { code: "not_on_whatsapp".into(), message: "628299999999 is not on WhatsApp".into() };
        let f = fixture(600, vec![Err(refused)]).await;
        let (first, new) = f.service.send(&f.session, text("628299999999", "a"), None).await.unwrap();
        assert!(new);
        let (second, _) = f.service.send(&f.session, text("628200000000", "b"), None).await.unwrap();
        let failed = f.wait_status(&first.id, MessageStatus::Failed).await;
        assert_eq!(failed.error, Some(MessageError { code: "not_on_whatsapp".into(), message: "628299999999 is not on WhatsApp".into() }));
        f.wait_status(&second.id, MessageStatus::Sent).await;
        let filter = EventFilter { session: Some(f.session.id.clone()), types: Some(vec![wagate_core::EventType::MessageStatus]) };
        let events = f.store.list_events(&f.session.org, &filter, PageRequest { size: 10, after: None }).await.unwrap().items;
        let data: Vec<serde_json::Value> = events.iter().rev().map(|e| serde_json::from_str(e.data.get()).unwrap()).collect();
        assert_eq!(data[0]["status"], "failed");
        assert_eq!(data[0]["error"]["code"], "not_on_whatsapp");
        assert_eq!(data[1]["status"], "sent");
    }

    #[tokio::test]
    async fn a_rate_limit_backs_off_then_sends_the_same_message_again() {
        let limited = EngineError::RateLimited { retry_after: Some(Duration::from_millis(300)) };
        let f = fixture(600, vec![Err(limited)]).await;
        let (m, _) = f.service.send(&f.session, text("628200000000", "a"), None).await.unwrap();
        f.wait_status(&m.id, MessageStatus::Sent).await;
        let sends = lock(&f.script.sends).clone();
        assert_eq!(sends.len(), 2, "{sends:?}");
        assert!(sends.iter().all(|(id, _)| *id == m.wa_message_id), "the same WhatsApp id both times");
        assert!(sends[1].1 - sends[0].1 >= Duration::from_millis(300), "waited out the rate limit");
    }

    #[tokio::test]
    async fn a_dropped_connection_keeps_the_message_queued_and_sends_it_later() {
        let f = fixture(600, vec![Err(EngineError::Upstream("connection lost".into()))]).await;
        let (m, _) = f.service.send(&f.session, text("628200000000", "a"), None).await.unwrap();
        f.wait_status(&m.id, MessageStatus::Sent).await;
        assert_eq!(lock(&f.script.sends).len(), 2);
        assert!(f.status_of(&m.id).await.error.is_none());
    }

    #[tokio::test]
    async fn unpaired_sessions_conflict_and_a_reply_quotes_only_its_own_session() {
        let f = fixture(600, Vec::new()).await;
        let unpaired = new_session(&f.store, EngineKind::Whatsapp, false).await;
        assert!(matches!(f.service.send(&unpaired, text("628200000000", "a"), None).await, Err(SupervisorError::Conflict(_))));
        // A replyTo from another session is a validation error naming the field.
        let (m, _) = f.service.send(&f.session, text("628200000000", "a"), None).await.unwrap();
        let mut other = f.session.clone();
        other.id = unpaired.id.clone();
        assert_eq!(other.org, OrgId::parse("acme").unwrap(), "same organization, another session");
        let reply = SendMessage { reply_to: Some(m.id.clone()), ..text("628200000000", "b") };
        let err = f.service.send(&other, reply, None).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Engine(EngineError::Invalid { field: "replyTo", .. })), "{err:?}");
    }

    #[tokio::test]
    async fn with_typing_the_chat_shows_typing_for_a_while_before_the_text_goes() {
        let f = fixture_with(SendPolicy { messages_per_minute: Some(600), typing: true }, Vec::new()).await;
        let (m, _) = f.service.send(&f.session, text("628200000000", "hello there"), None).await.unwrap();
        f.wait_status(&m.id, MessageStatus::Sent).await;
        let log = lock(&f.script.log).clone();
        let what: Vec<&str> = log.iter().map(|(w, _)| w.as_str()).collect();
        let send = format!("send {}", m.wa_message_id);
        assert_eq!(what, ["Typing 628200000000@s.whatsapp.net", "Paused 628200000000@s.whatsapp.net", send.as_str()]);
        // 11 characters: the 0.5 s minimum.
        assert!(log[1].1 - log[0].1 >= Duration::from_millis(500), "typing shown for {:?}", log[1].1 - log[0].1);
    }
}
