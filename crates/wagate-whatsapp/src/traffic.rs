//! The traffic path of a session, apart from its lifecycle lane (`lane.rs`).
//!
//! - **Messages** come through the crate's inbound durability hook ([`InboundHook`]): the crate
//!   calls it with every decrypted message before it acknowledges it to WhatsApp, and the hook
//!   returns once the message is stored (the [`TrafficSink`] contract). A crash before that
//!   leaves the message unacknowledged: WhatsApp delivers it again and the store keeps one copy
//!   (an inbound message is unique by session and WhatsApp id).
//! - **Receipts** are events: the [`ReceiptForwarder`] queues them, without waiting, for a task
//!   of the session that delivers them in order. So are messages the client could not decrypt:
//!   each is stored as a placeholder with an error, which the message replaces if the sender's
//!   retry brings it.
//!
//! Both deliver through one [`TrafficOut`], which hands the sink one item at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use wagate_core::{MessageError, Phone, SessionId};
use wagate_engine::{Content, Traffic, TrafficSink};
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind, InboundMessage};
use whatsapp_rust::types::message::MessageInfo;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, InboundDurabilityHook};

use crate::config::WhatsappConfig;
use crate::inbound::{downloadable_of, phone_of, receipt_traffic, traffic_of, undecryptable_traffic};

/// Where a session's traffic goes, one item at a time.
pub(crate) struct TrafficOut {
    id: SessionId,
    sink: Arc<dyn TrafficSink>,
    order: tokio::sync::Mutex<()>,
}

impl TrafficOut {
    pub fn new(id: SessionId, sink: Arc<dyn TrafficSink>) -> Arc<Self> {
        Arc::new(Self { id, sink, order: tokio::sync::Mutex::new(()) })
    }

    /// Returns once the sink has stored `traffic`.
    pub async fn deliver(&self, traffic: Traffic) {
        let _one_at_a_time = self.order.lock().await;
        self.sink.deliver(&self.id, traffic).await;
    }
}

/// Stores each decrypted message before the crate acknowledges it, media downloaded first
/// (WhatsApp's media URLs expire).
pub(crate) struct InboundHook {
    out: Arc<TrafficOut>,
    media_max_bytes: u64,
    media_timeout: Duration,
}

impl InboundHook {
    pub fn new(out: Arc<TrafficOut>, cfg: &WhatsappConfig) -> Self {
        Self { out, media_max_bytes: cfg.media_max_bytes, media_timeout: cfg.media_download_timeout }
    }

    /// Fills in the bytes of the media `message` carries, or says in `inbound.error` why it
    /// has none (too large, or the download failed): the message is stored either way.
    async fn fetch_media(&self, client: &Client, message: &wa::Message, inbound: &mut wagate_engine::InboundMessage) {
        let Content::Media(media) = &mut inbound.content else { return };
        let Some(source) = downloadable_of(message) else { return };
        let failed = |code: &str, message: String| Some(MessageError { code: code.into(), message });
        if media.info.size > self.media_max_bytes {
            inbound.error = failed(
                "media_too_large",
                format!("the media ({} bytes) is over WAGATE_MEDIA_MAX_BYTES ({} bytes); not downloaded", media.info.size, self.media_max_bytes),
            );
            return;
        }
        match tokio::time::timeout(self.media_timeout, client.download(source)).await {
            Ok(Ok(bytes)) if bytes.len() as u64 > self.media_max_bytes => {
                inbound.error = failed("media_too_large", format!("the media is over WAGATE_MEDIA_MAX_BYTES ({} bytes)", self.media_max_bytes));
            }
            Ok(Ok(bytes)) => media.bytes = bytes.into(),
            Ok(Err(e)) => {
                tracing::warn!(session = %self.out.id, message = %inbound.wa_message_id, error = %format!("{e:#}"), "cannot download inbound media");
                inbound.error = failed("media_unavailable", format!("the media could not be downloaded: {e:#}"));
            }
            Err(_) => {
                tracing::warn!(session = %self.out.id, message = %inbound.wa_message_id, "inbound media download timed out");
                inbound.error = failed(
                    "media_unavailable",
                    format!("the media download took longer than {}s", self.media_timeout.as_secs()),
                );
            }
        }
    }
}

#[async_trait]
impl InboundDurabilityHook for InboundHook {
    async fn on_messages(&self, client: Arc<Client>, batch: &[InboundMessage]) -> anyhow::Result<()> {
        for inbound in batch {
            let from_phone = sender_phone(&client, &inbound.info).await;
            if let Some(mut traffic) = traffic_of(&inbound.message, &inbound.info, from_phone) {
                if let Traffic::Message(message) = &mut traffic {
                    self.fetch_media(&client, &inbound.message, message).await;
                }
                self.out.deliver(traffic).await;
            }
        }
        Ok(())
    }
}

/// The sender's phone number: from its JID, the phone-number JID WhatsApp sent alongside an
/// `@lid` sender, or the LID ↔ PN mapping the client learned (kept in its store, so it
/// survives restarts).
async fn sender_phone(client: &Client, info: &MessageInfo) -> Option<Phone> {
    let sender = &info.source.sender;
    if let Some(phone) = phone_of(sender) {
        return Some(phone);
    }
    if let Some(phone) = info.source.sender_alt.as_ref().and_then(phone_of) {
        return Some(phone);
    }
    if !sender.is_lid() {
        return None;
    }
    match client.get_lid_pn_entry(sender).await {
        Ok(entry) => entry.and_then(|e| Phone::parse(&e.phone_number).ok()),
        Err(e) => {
            tracing::warn!(sender = %sender, error = %e, "cannot look up the phone number of a LID sender");
            None
        }
    }
}

/// The crate's end of the receipt path: queues each receipt, in dispatch order, without waiting.
pub(crate) struct ReceiptForwarder {
    tx: mpsc::UnboundedSender<Arc<Event>>,
}

/// Forwards the session's receipts to a task that delivers them through `out`, in order. The
/// task ends when the client (which owns the forwarder) is gone.
pub(crate) fn receipt_path(out: Arc<TrafficOut>) -> ReceiptForwarder {
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Event>>();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let traffic = match &*event {
                Event::Receipt(receipt) => receipt_traffic(receipt),
                Event::UndecryptableMessage(failed) => undecryptable_traffic(failed),
                _ => None,
            };
            if let Some(traffic) = traffic {
                out.deliver(traffic).await;
            }
        }
    });
    ReceiptForwarder { tx }
}

impl EventHandler for ReceiptForwarder {
    fn handle_event(&self, event: Arc<Event>) {
        // Closed only once the delivering task is gone (the session is ending).
        let _ = self.tx.send(event);
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(&[EventKind::Receipt, EventKind::UndecryptableMessage])
    }
}
