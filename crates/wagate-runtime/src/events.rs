//! Readers of the event log: the live fan-out to stream subscribers, and retention.
//!
//! The [`EventHub`] tails the log (woken by the store after every commit that appended events,
//! and by a slow timer as a safety net), counts each event once, and broadcasts it in log
//! order. A subscriber first subscribes to that broadcast, then reads what it missed from the
//! store (after its resume position), then takes the broadcast, skipping anything at or before
//! the last position it delivered: no gap between the stored and the live part, no duplicate.
//! A subscriber that falls behind the broadcast goes back to reading the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use wagate_core::{Event, OrgId, Timestamp};
use wagate_store::prelude::*;
use wagate_store::{EventFilter, StoreError};

use crate::metrics::{Metrics, TypeLabels};

/// Events read from the store per query.
const BATCH: u32 = 500;
/// Broadcast buffer; a subscriber further behind than this reads the store instead.
const BROADCAST_CAPACITY: usize = 4096;
/// The hub also looks for new events this often without being woken.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// How long events are kept, and how streams keep idle connections alive.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// Events older than this are pruned; resuming after one answers 409.
    pub retention: Duration,
    /// How often retention runs.
    pub prune_every: Duration,
    /// An idle stream sends a comment line this often.
    pub keep_alive: Duration,
}

impl EventConfig {
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

    /// Pruning runs every tenth of the retention, at most every 10 minutes, at least every second.
    pub fn with_retention(retention: Duration) -> Self {
        let prune_every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        Self { retention, prune_every, keep_alive: Duration::from_secs(15) }
    }
}

impl Default for EventConfig {
    fn default() -> Self {
        Self::with_retention(Self::DEFAULT_RETENTION)
    }
}

pub struct EventHub {
    config: EventConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    live: broadcast::Sender<Arc<Event>>,
    /// The position of the last event broadcast.
    position: AtomicI64,
    closed: watch::Sender<bool>,
}

impl EventHub {
    /// Starts tailing the log from its current end, and pruning it.
    pub async fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>, config: EventConfig) -> Result<Arc<Self>, StoreError> {
        let position = store.last_event_seq().await?;
        let hub = Arc::new(Self {
            config,
            store,
            metrics,
            live: broadcast::Sender::new(BROADCAST_CAPACITY),
            position: AtomicI64::new(position),
            closed: watch::Sender::new(false),
        });
        tokio::spawn(Arc::clone(&hub).tail());
        tokio::spawn(Arc::clone(&hub).prune_now_and_then());
        Ok(hub)
    }

    pub fn config(&self) -> &EventConfig {
        &self.config
    }

    /// Ends the tail and every open stream (at shutdown: open streams would hold it up).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// The position of the last event broadcast.
    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// Deletes events older than the retention, now and then every `prune_every`, until closed.
    async fn prune_now_and_then(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        loop {
            match prune(self.store.as_ref(), retention_cutoff(self.config.retention)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "events past their retention pruned"),
                Err(e) => tracing::warn!(error = %e, "cannot prune old events"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.prune_every) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    async fn tail(self: Arc<Self>) {
        let mut commits = self.store.event_commits();
        let mut closed = self.closed.subscribe();
        let mut failures = 0u32;
        loop {
            match self.drain().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "cannot read the event log; retrying");
                }
            }
            let wait = if failures == 0 { SAFETY_POLL } else { Duration::from_millis(100 << failures.min(5)) };
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    /// Broadcasts every event committed after the current position.
    async fn drain(&self) -> Result<(), StoreError> {
        loop {
            let batch = self.store.events_after(self.position(), BATCH).await?;
            let full = batch.len() == BATCH as usize;
            for event in batch {
                self.metrics.events_appended.get_or_create(&TypeLabels { event_type: event.kind.as_str().to_owned() }).inc();
                self.position.store(event.seq, Ordering::Release);
                // No receiver is not an error: nobody is listening right now.
                let _ = self.live.send(Arc::new(event));
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The events of `org` that match `filter`, in log order: those after position `after`
    /// first (from the store), then live ones as they are committed. Without `after`, only
    /// events committed from now on. The stream ends when the hub closes.
    pub fn subscribe(
        self: &Arc<Self>,
        org: OrgId,
        filter: EventFilter,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<Arc<Event>, StoreError>> + Send + 'static {
        // Subscribe before reading the position or the store: whatever is committed from here
        // on reaches the receiver.
        let live = self.live.subscribe();
        let (cursor, catching_up) = match after {
            Some(after) => (after, true),
            None => (self.position(), false),
        };
        let subscriber = Subscriber {
            hub: Arc::clone(self),
            live,
            closed: self.closed.subscribe(),
            org,
            filter,
            cursor,
            catching_up,
            pending: VecDeque::new(),
            _open: OpenStream::new(&self.metrics),
        };
        futures::stream::unfold(subscriber, |mut s| async move { s.next().await.map(|item| (item, s)) })
    }
}

struct Subscriber {
    hub: Arc<EventHub>,
    live: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    org: OrgId,
    filter: EventFilter,
    /// The position of the last event delivered (or skipped as not matching).
    cursor: i64,
    /// Reading from the store rather than the broadcast.
    catching_up: bool,
    pending: VecDeque<Arc<Event>>,
    _open: OpenStream,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if *self.closed.borrow() {
                return None;
            }
            if self.catching_up {
                let batch = match self.hub.store.org_events_after(&self.org, &self.filter, self.cursor, BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => return Some(Err(e)),
                };
                match batch.last() {
                    None => self.catching_up = false,
                    Some(last) => self.cursor = last.seq,
                }
                self.pending.extend(batch.into_iter().map(Arc::new));
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(event) => {
                        if event.seq <= self.cursor {
                            continue;
                        }
                        self.cursor = event.seq;
                        if event.org == self.org && self.filter.matches(&event) {
                            return Some(Ok(event));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closed.wait_for(|c| *c) => return None,
            }
        }
    }
}

/// Counts an open stream for as long as it lives.
struct OpenStream(Arc<Metrics>);

impl OpenStream {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.event_streams.inc();
        Self(Arc::clone(metrics))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.event_streams.dec();
    }
}

/// The oldest creation time still within `retention`.
pub fn retention_cutoff(retention: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(retention)
        .ok()
        .and_then(|d| wagate_core::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Deletes, in batches, every event created before `cutoff`.
pub async fn prune(store: &dyn Store, cutoff: Timestamp) -> Result<u64, StoreError> {
    const PRUNE_BATCH: u32 = 10_000;
    let mut total = 0;
    loop {
        let n = store.prune_events(cutoff, PRUNE_BATCH).await?;
        total += n;
        if n < u64::from(PRUNE_BATCH) {
            return Ok(total);
        }
    }
}
