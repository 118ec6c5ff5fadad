//! One running WhatsApp session: a `whatsapp-rust` client plus the loop that drives it.
//!
//! The crate's `Client::run` would reconnect by itself (Fibonacci backoff from 1 s to 15 min),
//! but it reports nothing when an attempt fails before the socket is up, its delays are not
//! configurable and it cannot take part in a cap on concurrent connects. So the engine turns
//! the crate's auto-reconnect off (`client.enable_auto_reconnect`, which the crate itself only
//! ever clears) and calls `run()` once per attempt: each call makes one connection and returns
//! when it ends. Between attempts the loop reports `Reconnecting{reason, attempt, retry_in}`
//! and sleeps a capped exponential backoff with jitter.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use wagate_core::{Identity, Phone, SessionId};
use wagate_engine::{EngineError, EngineEvent, EngineSession, EventSink, Messaging, Pairing, PairingCode};
use whatsapp_rust::Client;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::pair_code::{PairCodeError, PairCodeOptions, PairCodeRejection};
use whatsapp_rust::pair_code::PairError;
use whatsapp_rust::types::events::Event;

use crate::config::WhatsappConfig;
use crate::lane::Lane;
use crate::mapping::{EventMapper, SelfInfo};
use crate::transport::TransportSlot;

/// A connection that stayed up this long resets the backoff (WA Web's `resetDelay`).
const STABLE_CONNECTION: Duration = Duration::from_secs(30);
/// Validity of a phone pairing code (the crate's `PairingCode.timeout`, about 180 s).
const PAIRING_CODE_TTL: Duration = Duration::from_secs(180);
/// Bound on the crate's own `disconnect()` (it flushes for at most 5 s + 5 s).
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a run may take to end after `disconnect()` before it is aborted.
const RUN_END_GRACE: Duration = Duration::from_secs(3);
/// Bound on waiting for the client's last references to go after stopping.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the session handle and its loop.
struct Shared {
    id: SessionId,
    cfg: Arc<WhatsappConfig>,
    sink: Arc<dyn EventSink>,
    gate: Arc<Semaphore>,
    slot: Arc<TransportSlot>,
    /// Known to be paired (from the stored identity, `PairSuccess` or the client's store).
    paired: AtomicBool,
    /// The last phone code handed out, reused while valid for the same phone.
    pending_code: Mutex<Option<(Phone, PairingCode)>>,
}

pub(crate) struct WhatsappSession {
    shared: Arc<Shared>,
    client: Mutex<Option<Arc<Client>>>,
    weak_client: Weak<Client>,
    stop_tx: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct Parts {
    pub id: SessionId,
    pub cfg: Arc<WhatsappConfig>,
    pub sink: Arc<dyn EventSink>,
    pub gate: Arc<Semaphore>,
    pub slot: Arc<TransportSlot>,
    pub bot: Bot,
    /// The lifecycle events of the crate, in dispatch order (see [`crate::lane`]).
    pub events: Lane,
    pub identity: Option<Identity>,
}

impl WhatsappSession {
    /// Starts the session loop; returns at once.
    pub fn spawn(parts: Parts) -> Arc<Self> {
        let client = parts.bot.client();
        // The loop drives reconnects itself (see the module docs).
        client.enable_auto_reconnect.store(false, Ordering::Relaxed);
        // A gateway processes what it receives at once: its delivery receipts say `delivery`,
        // not the `inactive` of a backgrounded WhatsApp Web tab.
        client.set_force_active_delivery_receipts(true);
        let paired = parts.identity.is_some() || client.pn().is_some();
        let shared = Arc::new(Shared {
            id: parts.id,
            cfg: parts.cfg,
            sink: parts.sink,
            gate: parts.gate,
            slot: parts.slot,
            paired: AtomicBool::new(paired),
            pending_code: Mutex::new(None),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let runner = Runner {
            shared: Arc::clone(&shared),
            client: Arc::clone(&client),
            bot: Some(parts.bot),
            events: parts.events,
            mapper: EventMapper::new(parts.identity),
            resync: false,
        };
        let task = tokio::spawn(runner.run(stop_rx));
        Arc::new(Self {
            shared,
            weak_client: Arc::downgrade(&client),
            client: Mutex::new(Some(client)),
            stop_tx,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    pub(crate) fn client(&self) -> Option<Arc<Client>> {
        lock(&self.client).clone()
    }

    fn is_running(&self) -> bool {
        !*self.stop_tx.borrow() && self.client().is_some()
    }
}

#[async_trait]
impl Pairing for WhatsappSession {
    async fn request_pairing_code(&self, phone: &Phone) -> Result<PairingCode, EngineError> {
        let client = self.client().filter(|_| self.is_running()).ok_or_else(not_running)?;
        if self.shared.paired.load(Ordering::Acquire) || client.pn().is_some() {
            return Err(EngineError::AlreadyPaired);
        }
        if let Some((p, code)) = lock(&self.shared.pending_code).as_ref()
            && p == phone
            && code.expires_at > wagate_core::now()
        {
            return Ok(code.clone());
        }
        let timeout = self.shared.cfg.pairing_code_timeout;
        let request = async {
            client
                .wait_for_socket(timeout)
                .await
                .map_err(|_| EngineError::Upstream("not connected to WhatsApp yet; try again shortly".into()))?;
            let options = PairCodeOptions { phone_number: phone.as_str().to_owned(), ..PairCodeOptions::default() };
            client.pair_with_code(options).await.map_err(pair_error)
        };
        let raw = tokio::time::timeout(timeout, request).await.map_err(|_| {
            EngineError::Upstream(format!("WhatsApp did not answer the pairing code request within {}s", timeout.as_secs()))
        })??;
        let code = PairingCode {
            code: format_code(&raw),
            expires_at: wagate_core::now() + chrono::Duration::from_std(PAIRING_CODE_TTL).unwrap_or_default(),
        };
        *lock(&self.shared.pending_code) = Some((phone.clone(), code.clone()));
        Ok(code)
    }
}

#[async_trait]
impl EngineSession for WhatsappSession {
    async fn logout(&self) -> Result<(), EngineError> {
        let Some(client) = self.client() else {
            return Ok(()); // stopped: nothing is connected, the supervisor wipes the keys
        };
        let timeout = self.shared.cfg.logout_timeout;
        // `Client::logout` turns auto-reconnect off, tells WhatsApp (best effort, when
        // connected), dispatches `LoggedOut` and disconnects.
        let outcome = tokio::time::timeout(timeout, client.logout()).await;
        drop(client);
        // Whatever WhatsApp said, the session ends here.
        self.stop().await;
        match outcome {
            Ok(()) => Ok(()),
            Err(_) => Err(EngineError::Upstream(format!(
                "WhatsApp did not confirm the logout within {}s; the session was logged out locally",
                timeout.as_secs()
            ))),
        }
    }

    async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let mut task = self.task.lock().await;
        if let Some(handle) = task.take()
            && let Err(e) = handle.await
        {
            tracing::error!(session = %self.shared.id, error = %e, "whatsapp session loop failed");
        }
        drop(task);
        lock(&self.client).take();
        // The crate's background tasks (keepalive, sync worker, store saver) hold the client
        // until they notice the shutdown; wait for them so a following start opens the store
        // alone and memory is really returned.
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        while self.weak_client.strong_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    session = %self.shared.id,
                    refs = self.weak_client.strong_count(),
                    "whatsapp client still referenced after stop"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pairing(&self) -> Option<&dyn Pairing> {
        Some(self)
    }

    fn messaging(&self) -> Option<&dyn Messaging> {
        Some(self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn not_running() -> EngineError {
    EngineError::InvalidState("the session is not running".into())
}

/// `ABCD1234` → `ABCD-1234`.
fn format_code(raw: &str) -> String {
    let clean: String = raw.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if clean.len() == 8 { format!("{}-{}", &clean[..4], &clean[4..]) } else { raw.to_owned() }
}

/// Maps a failed `pair_with_code` onto the engine's errors.
pub(crate) fn pair_error(e: PairError) -> EngineError {
    if let PairError::PairCode(inner) = &e {
        return match inner {
            PairCodeError::PhoneNumberRequired
            | PairCodeError::PhoneNumberTooShort
            | PairCodeError::PhoneNumberNotInternational => {
                EngineError::Invalid { field: "phone", message: inner.to_string() }
            }
            PairCodeError::CodeAlreadyOutstanding { remaining } => EngineError::InvalidState(format!(
                "a pairing code is still valid for {}s; enter it on the phone or wait for it to expire",
                remaining.as_secs()
            )),
            PairCodeError::Cancelled => {
                EngineError::InvalidState("another pairing code request replaced this one".into())
            }
            other => EngineError::Upstream(format!("pairing code request failed: {other}")),
        };
    }
    match e.rejection() {
        Some(r) if r.is_throttled() => EngineError::RateLimited { retry_after: e.backoff() },
        Some(PairCodeRejection::FeatureNotAvailable) => EngineError::Invalid {
            field: "phone",
            message: "WhatsApp does not offer linking by phone number for this account; scan the QR code instead"
                .into(),
        },
        Some(PairCodeRejection::Forbidden) => EngineError::Invalid {
            field: "phone",
            message: "WhatsApp refused a pairing code for this phone number".into(),
        },
        Some(_) => EngineError::Upstream(format!("WhatsApp refused the pairing code request: {e}")),
        None => EngineError::Upstream(format!("pairing code request failed: {e}")),
    }
}

/// One `Client::run` in flight (one connection attempt and its lifetime), on its own task.
struct RunTask(Option<JoinHandle<()>>);

impl RunTask {
    /// Resolves when the run is over; safe to cancel and call again.
    async fn wait(&mut self) {
        if let Some(handle) = self.0.as_mut() {
            let _ = handle.await;
            self.0 = None;
        }
    }

    /// Ends the run task at its next await point (last resort when stopping).
    fn abort(&self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// How the loop left an attempt.
enum Exit {
    Stop,
    Terminal,
}

struct Runner {
    shared: Arc<Shared>,
    client: Arc<Client>,
    /// Consumed by the first attempt: `Bot::spawn` wires the crate's background workers and
    /// our event handler, then runs the first connection.
    bot: Option<Bot>,
    events: Lane,
    mapper: EventMapper,
    /// The lane overflowed during this connection, which is being cut (see [`crate::lane`]).
    resync: bool,
}

impl Runner {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let exit = self.attempts(&mut stop).await;
        // Disconnect whatever the reason (idempotent): flushes the store, ends the crate's tasks.
        if tokio::time::timeout(DISCONNECT_TIMEOUT, self.client.disconnect()).await.is_err() {
            tracing::warn!(session = %self.shared.id, "whatsapp client disconnect timed out");
        }
        if let Some(bot) = self.bot.take() {
            drop(bot);
        }
        self.drain().await;
        tracing::debug!(session = %self.shared.id, terminal = matches!(exit, Exit::Terminal), "whatsapp session loop ended");
    }

    async fn attempts(&mut self, stop: &mut watch::Receiver<bool>) -> Exit {
        let connect_timeout = self.shared.cfg.connect_timeout;
        let mut failures: u32 = 0;
        let mut immediate_used = false;
        loop {
            // 1. A connect permit (cap on concurrent connection attempts).
            let gate = Arc::clone(&self.shared.gate);
            let permit: OwnedSemaphorePermit = match self.drive(stop, gate.acquire_owned()).await {
                Some(Ok(p)) => p,
                Some(Err(_)) | None => return Exit::Stop,
            };
            if self.mapper.is_terminal() {
                return Exit::Terminal;
            }

            // 2. Dial and handshake, bounded.
            self.shared.slot.reset();
            let started = Instant::now();
            let mut run = self.start_run();
            let client = Arc::clone(&self.client);
            let phase1 = async {
                tokio::select! {
                    r = client.wait_for_socket(connect_timeout) => Some(r.is_ok()),
                    () = run.wait() => None,
                }
            };
            let (socket_ready, timed_out) = match self.drive(stop, phase1).await {
                None => return self.stop_run(run).await,
                Some(Some(true)) => (true, false),
                Some(Some(false)) => {
                    // Stalled: cut the transport so the crate's handshake fails now.
                    self.shared.slot.close().await;
                    (false, true)
                }
                Some(None) => (false, false),
            };
            // An attempt whose socket came up is through: the permit goes to the next one. One
            // whose socket never came up keeps it until its run has ended, since the crate's dial
            // (a TCP connect or WebSocket upgrade, which nothing but its own timeout ends) may
            // still hold a connection open: released earlier, the cap would not bound the
            // connections actually open.
            let mut permit = Some(permit);
            if socket_ready {
                drop(permit.take());
            }

            // 3. The connection's life.
            if self.drive(stop, run.wait()).await.is_none() {
                return self.stop_run(run).await;
            }
            drop(permit);
            self.drain().await;
            if self.mapper.is_terminal() {
                return Exit::Terminal;
            }
            if stop_requested(stop) {
                return Exit::Stop;
            }

            // 4. Decide how to come back.
            let connected = self.mapper.take_connected();
            if connected {
                immediate_used = false;
                self.shared.paired.store(true, Ordering::Release);
            }
            let crate_reason = self.mapper.take_disconnect_reason();
            // The connection is over and its queued events applied: the lane may take the next
            // connection's events again.
            let overflowed = self.events.reopen();
            self.resync = false;
            if overflowed.is_none() && socket_ready && crate_reason.is_none() && !immediate_used {
                // The socket was up and the crate ended it without reporting a disconnect:
                // its "expected disconnect" (the 515 restart after pairing). It would
                // reconnect at once; so do we, once in a row.
                immediate_used = true;
                continue;
            }
            if connected && started.elapsed() >= STABLE_CONNECTION {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let overflow_reason = overflowed.map(|discarded| {
                format!("lifecycle event backlog overflowed ({discarded} events discarded); reconnecting to resync")
            });
            let reason =
                overflow_reason.or(crate_reason).or_else(|| self.shared.slot.take_error()).unwrap_or_else(|| {
                    if timed_out {
                        format!("connect timed out after {}s", connect_timeout.as_secs_f32())
                    } else if socket_ready {
                        "connection closed".to_owned()
                    } else {
                        "WhatsApp handshake failed".to_owned()
                    }
                });
            let retry_in = self.shared.cfg.backoff.delay(failures);
            self.emit(EngineEvent::Reconnecting { reason, attempt: failures, retry_in }).await;
            if self.drive(stop, tokio::time::sleep(retry_in)).await.is_none() {
                return Exit::Stop;
            }
        }
    }

    /// Starts one `Client::run` (the first through `Bot::spawn`).
    fn start_run(&mut self) -> RunTask {
        let handle = match self.bot.take() {
            Some(bot) => {
                // Awaiting the BotHandle waits for the run; aborting this task drops the
                // handle, which aborts the run.
                let bot_handle = bot.spawn();
                tokio::spawn(bot_handle)
            }
            None => {
                let client = Arc::clone(&self.client);
                tokio::spawn(async move { client.run().await })
            }
        };
        RunTask(Some(handle))
    }

    /// Stop requested while a run is in flight: end it cleanly and wait for it.
    async fn stop_run(&mut self, mut run: RunTask) -> Exit {
        // `Client::disconnect` does not interrupt a dial or a Noise handshake in progress:
        // cut the transport first so the handshake fails at once.
        self.shared.slot.close().await;
        if tokio::time::timeout(DISCONNECT_TIMEOUT, self.client.disconnect()).await.is_err() {
            tracing::warn!(session = %self.shared.id, "whatsapp client disconnect timed out");
        }
        if tokio::time::timeout(RUN_END_GRACE, run.wait()).await.is_err() {
            // Still dialing (a stalled TCP connect or WebSocket upgrade): nothing else can
            // interrupt it, and the client is being discarded anyway.
            run.abort();
            run.wait().await;
        }
        Exit::Stop
    }

    /// Polls `fut` while applying events as they come; `None` when a stop was requested. When
    /// the lane overflows, cuts the connection (once): the run then ends, and the loop
    /// reconnects (see [`crate::lane`]).
    async fn drive<F: Future>(&mut self, stop: &mut watch::Receiver<bool>, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        let overflow = self.events.signal();
        loop {
            tokio::select! {
                biased;
                () = stopped(stop) => return None,
                Some(event) = self.events.recv() => self.apply(&event).await,
                () = overflow.tripped(), if !self.resync => {
                    self.resync = true;
                    self.shared.slot.close().await;
                }
                out = &mut fut => return Some(out),
            }
        }
    }

    /// Applies the events already queued.
    async fn drain(&mut self) {
        while let Some(event) = self.events.try_recv() {
            self.apply(&event).await;
        }
    }

    async fn apply(&mut self, event: &Event) {
        let me = SelfInfo { pn: self.client.pn(), lid: self.client.lid(), push_name: self.client.push_name() };
        for out in self.mapper.map(event, wagate_core::now(), &me) {
            if matches!(out, EngineEvent::Paired(_)) {
                self.shared.paired.store(true, Ordering::Release);
                lock(&self.shared.pending_code).take();
            }
            if matches!(out, EngineEvent::LoggedOut { .. }) {
                self.shared.paired.store(false, Ordering::Release);
            }
            self.emit(out).await;
        }
    }

    async fn emit(&self, event: EngineEvent) {
        self.shared.sink.emit(&self.shared.id, event).await;
    }
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Resolves once a stop is requested (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
