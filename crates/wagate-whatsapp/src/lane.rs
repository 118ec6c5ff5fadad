//! The lane that carries a session's lifecycle events from the crate's dispatch to the session
//! loop: bounded, in order, and never silently short of an event.
//!
//! whatsapp-rust dispatches events synchronously, inline on its own tasks (the socket reader
//! among them), so a handler cannot wait. The [`Forwarder`] only queues, on a bounded channel
//! of [`LIFECYCLE_CAPACITY`] events; the session loop reads them in order and applies each one
//! (awaiting the supervisor's store write) before the next.
//!
//! Only lifecycle events travel here: the kinds in [`INTEREST`](crate::mapping::INTEREST)
//! (pairing, connection, logout), a handful per connection. Traffic (messages, receipts) is not
//! subscribed; the messaging work gives it a lane of its own, apart from this one, so that a
//! burst of messages never delays a status change and a slow status write never holds up
//! messages.
//!
//! **Under pressure.** The channel fills only when the loop is [`LIFECYCLE_CAPACITY`] events
//! behind within one connection (the store stalled while WhatsApp kept talking). The forwarder
//! cannot wait for room, and it does not skip an event and carry on: it stops queueing. The
//! event that did not fit and every later one of that connection are discarded and counted, an
//! error is logged, and the loop is woken. The loop applies everything queued before the gap,
//! cuts the connection and reports `Reconnecting` with a reason that says so; the next
//! connection reports the state afresh (its QR codes, `Connected` with the identity the client
//! stored, or the login refusal of a device that was unlinked meanwhile). So what was applied
//! never has a hole in it. What a fresh connection cannot report again is an ending the lost
//! events carried (another connection replaced this one, the QR codes ran out): the session
//! then reconnects instead of ending, and a replacement ends it on its next report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};
use wagate_core::SessionId;
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest};

use crate::mapping::INTEREST;

/// Lifecycle events one session may have queued and not yet applied.
pub(crate) const LIFECYCLE_CAPACITY: usize = 128;

/// Shared by both ends: whether the lane overflowed, and how many events it discarded since.
#[derive(Default)]
struct Overflow {
    tripped: AtomicBool,
    discarded: AtomicU64,
    wake: Notify,
}

/// A session's lifecycle lane of `capacity` events: the crate's end and the loop's end.
pub(crate) fn lifecycle_lane(session: SessionId, capacity: usize) -> (Forwarder, Lane) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflow = Arc::new(Overflow::default());
    (Forwarder { session, tx, overflow: Arc::clone(&overflow), capacity }, Lane { rx, overflow })
}

/// The crate's end: queues each event, in dispatch order, without waiting.
pub(crate) struct Forwarder {
    session: SessionId,
    tx: mpsc::Sender<Arc<Event>>,
    overflow: Arc<Overflow>,
    capacity: usize,
}

impl EventHandler for Forwarder {
    fn handle_event(&self, event: Arc<Event>) {
        let overflow = &self.overflow;
        if overflow.tripped.load(Ordering::Acquire) {
            overflow.discarded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                overflow.tripped.store(true, Ordering::Release);
                overflow.discarded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    session = %self.session,
                    capacity = self.capacity,
                    event = ?event.kind(),
                    "lifecycle events are not being applied fast enough; discarding this connection's \
                     later events and reconnecting"
                );
                overflow.wake.notify_waiters();
            }
            // The session loop has ended (the session is stopping): nothing applies events any more.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(INTEREST)
    }
}

/// The session loop's end.
pub(crate) struct Lane {
    rx: mpsc::Receiver<Arc<Event>>,
    overflow: Arc<Overflow>,
}

impl Lane {
    /// The next event, in dispatch order.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// An event already queued, if any.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
    }

    /// A handle that resolves [`OverflowSignal::tripped`] once the lane has overflowed.
    pub fn signal(&self) -> OverflowSignal {
        OverflowSignal(Arc::clone(&self.overflow))
    }

    /// Opens the lane again after an overflow (call once the connection is over and the queue is
    /// drained). Returns how many events were discarded, or `None` when it had not overflowed.
    pub fn reopen(&self) -> Option<u64> {
        self.overflow
            .tripped
            .swap(false, Ordering::AcqRel)
            .then(|| self.overflow.discarded.swap(0, Ordering::Relaxed))
    }
}

/// Wakes the session loop when its lane overflows.
#[derive(Clone)]
pub(crate) struct OverflowSignal(Arc<Overflow>);

impl OverflowSignal {
    /// Resolves once the lane has overflowed (at once if it already has).
    pub async fn tripped(&self) {
        loop {
            // Registered before the check, so a trip between the two still wakes it.
            let woken = self.0.wake.notified();
            if self.0.tripped.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use whatsapp_rust::types::events as ev;

    use super::*;

    fn connected() -> Arc<Event> {
        Arc::new(Event::Connected(ev::Connected::builder().build()))
    }

    #[tokio::test]
    async fn a_full_lane_stops_queueing_says_so_and_reopens() {
        let (forwarder, mut lane) = lifecycle_lane(SessionId::generate(), 2);
        let signal = lane.signal();
        let tripped = tokio::spawn({
            let signal = signal.clone();
            async move { signal.tripped().await }
        });
        forwarder.handle_event(connected());
        forwarder.handle_event(connected());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!tripped.is_finished(), "room for two");

        // The third does not fit: it and every later one are discarded, and the loop is woken.
        forwarder.handle_event(connected());
        tokio::time::timeout(Duration::from_secs(5), tripped).await.expect("woken").unwrap();
        forwarder.handle_event(connected());
        assert!(lane.try_recv().is_some() && lane.try_recv().is_some(), "what came before the gap stays");
        assert!(lane.try_recv().is_none(), "nothing after the gap, even with room again");
        tokio::time::timeout(Duration::from_secs(5), signal.tripped()).await.expect("still tripped");

        assert_eq!(lane.reopen(), Some(2), "the two discarded events are counted");
        forwarder.handle_event(connected());
        assert!(lane.try_recv().is_some(), "reopened");
        assert_eq!(lane.reopen(), None);
        assert!(tokio::time::timeout(Duration::from_millis(50), signal.tripped()).await.is_err(), "not tripped");
    }

    #[tokio::test]
    async fn events_after_the_loop_ended_go_nowhere() {
        let (forwarder, lane) = lifecycle_lane(SessionId::generate(), 2);
        let signal = lane.signal();
        drop(lane);
        for _ in 0..3 {
            forwarder.handle_event(connected());
        }
        assert!(tokio::time::timeout(Duration::from_millis(50), signal.tripped()).await.is_err());
    }
}
