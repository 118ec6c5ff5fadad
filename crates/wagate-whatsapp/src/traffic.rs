//! The traffic path of a session, apart from its lifecycle lane (`lane.rs`).
//!
//! - **Messages** come through the crate's inbound durability hook ([`InboundHook`]): the crate
//!   calls it with every decrypted message before it acknowledges it to WhatsApp, and the hook
//!   returns once the message is stored (the [`TrafficSink`] contract). A crash before that
//!   leaves the message unacknowledged: WhatsApp delivers it again and the store keeps one copy
//!   (an inbound message is unique by session and WhatsApp id).
//! - **Receipts** are events: the [`ReceiptForwarder`] queues them, without waiting, for a task
//!   of the session that delivers them in order.
//!
//! Both deliver through one [`TrafficOut`], which hands the sink one item at a time.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use wagate_core::{Phone, SessionId};
use wagate_engine::{Traffic, TrafficSink};
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind, InboundMessage};
use whatsapp_rust::types::message::MessageInfo;
use whatsapp_rust::{Client, InboundDurabilityHook};

use crate::inbound::{phone_of, receipt_traffic, traffic_of};

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

/// Stores each decrypted message before the crate acknowledges it.
pub(crate) struct InboundHook {
    out: Arc<TrafficOut>,
}

impl InboundHook {
    pub fn new(out: Arc<TrafficOut>) -> Self {
        Self { out }
    }
}

#[async_trait]
impl InboundDurabilityHook for InboundHook {
    async fn on_messages(&self, client: Arc<Client>, batch: &[InboundMessage]) -> anyhow::Result<()> {
        for inbound in batch {
            let from_phone = sender_phone(&client, &inbound.info).await;
            if let Some(traffic) = traffic_of(&inbound.message, &inbound.info, from_phone) {
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
            if let Event::Receipt(receipt) = &*event
                && let Some(traffic) = receipt_traffic(receipt)
            {
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
        EventInterest::of(&[EventKind::Receipt])
    }
}
