//! The `sandbox` engine of wagate: a simulated WhatsApp network inside the gateway, a peer
//! of the real engine (`wagate-whatsapp`).
//!
//! A sandbox session goes through the same states as a real one (QR codes that rotate and run
//! out, phone pairing codes, pairing, connecting, dropped connections, unlinking), driven by
//! timers and by the [`SandboxControl`] calls that stand in for the user's phone. Nothing leaves
//! the process.
//!
//! Ordering: every event of one session is emitted while holding that session's emit lock, and
//! every background task checks, under that lock, that it still belongs to the current link
//! attempt (its *epoch*) before emitting. So a QR rotation can never land after `Paired`, and
//! nothing is emitted once `stop()` has begun.
//!
//! The phone-side controls are this crate's own trait, [`SandboxControl`]; the engine boundary
//! knows nothing of them. Whoever holds a running session finds them with [`control`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wagate_core::{EngineKind, Identity, Jid, JidServer, OrgId, Phone, SessionId, Timestamp};

use wagate_engine::{
    ChatPresence, Content, Engine, EngineError, EngineEvent, EngineSession, EventSink, InboundMessage, Messaging,
    NumberCheck, OutboundMessage, Pairing, PairingCode, QrCode, ReadMark, ReceiptKind, Sent, SessionOutput, SessionSpec,
    Traffic, TrafficSink,
};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The sandbox controls of a running session, if it is a sandbox session.
pub fn control(session: &dyn EngineSession) -> Option<&dyn SandboxControl> {
    session.as_any().downcast_ref::<SandboxSession>().map(|s| s as &dyn SandboxControl)
}

/// The phone-side controls of a sandbox session (the `sandbox:*` routes).
///
/// Every method returns once its events have been applied (the store reflects them), except for
/// what happens later on a timer (the reconnection after [`disconnect`](Self::disconnect)).
#[async_trait]
pub trait SandboxControl: Send + Sync {
    /// The simulated phone `phone` scans the current QR code: the session pairs and connects.
    ///
    /// `InvalidState` when there is no unexpired QR code; `AlreadyPaired` when paired.
    async fn scan_qr(&self, phone: Phone, push_name: Option<String>, platform: Option<String>)
    -> Result<(), EngineError>;

    /// Completes a pending pairing code (case-insensitive, dash optional). A wrong, expired or
    /// never requested code is `Invalid { field: "code" }`; `AlreadyPaired` when paired.
    async fn enter_pairing_code(&self, code: &str) -> Result<(), EngineError>;

    /// The simulated connection drops: `Reconnecting`, then after the configured delay
    /// `Connected` again (or new QR codes when the session is not paired).
    async fn disconnect(&self) -> Result<(), EngineError>;

    /// The simulated phone removes the linked device: `LoggedOut { reason: "device_removed" }`.
    /// `InvalidState` when the session is not paired.
    async fn unlink(&self) -> Result<(), EngineError>;

    /// A message from the phone number `from` arrives (`sandbox:receive`); returns its WhatsApp
    /// id once it is stored. `Upstream` when the session is not connected.
    async fn receive(&self, from: Phone, push_name: Option<String>, content: Content) -> Result<String, EngineError>;
}

/// Timings of the simulated network.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// How long the first QR code of a pairing attempt is valid (WhatsApp: 60 s).
    pub qr_first_ttl: Duration,
    /// How long each later QR code is valid (WhatsApp: 20 s).
    pub qr_next_ttl: Duration,
    /// How many QR codes one pairing attempt shows before `QrExhausted`.
    pub qr_count: u32,
    /// How long a phone pairing code stays valid (WhatsApp: 180 s).
    pub pairing_code_ttl: Duration,
    /// How long a dropped connection waits before it is back.
    pub reconnect_delay: Duration,
    /// How long connecting takes (before `Connected`, or before the first QR code).
    pub connect_delay: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            qr_first_ttl: Duration::from_secs(60),
            qr_next_ttl: Duration::from_secs(20),
            qr_count: 6,
            pairing_code_ttl: Duration::from_secs(180),
            reconnect_delay: Duration::from_secs(2),
            connect_delay: Duration::from_millis(20),
        }
    }
}

/// What all sandbox sessions of one engine share: the simulated WhatsApp network.
#[derive(Default)]
struct Network {
    /// The LID of each phone, stable for the life of the process.
    lids: Mutex<HashMap<Phone, String>>,
    /// The sandbox sessions of each organization by their phone number (from their first
    /// connection until they are unlinked or logged out): where messages to that number go.
    peers: Mutex<HashMap<(OrgId, Phone), Weak<Inner>>>,
    /// What waits, in order, for a known number whose session is offline (stopped,
    /// reconnecting), as WhatsApp's server keeps messages for an offline phone. In memory only.
    pending: Mutex<HashMap<(OrgId, Phone), Vec<Pending>>>,
}

/// Traffic held for an offline session, and the receipt its sender gets once it arrives.
struct Pending {
    traffic: Traffic,
    receipt: Option<(Arc<dyn TrafficSink>, SessionId, Traffic)>,
}

/// Where traffic for a chat goes.
enum Reach {
    /// A connected session of the organization has that number.
    Online(Arc<Inner>),
    /// A session of the organization has that number but is offline: it waits.
    Offline((OrgId, Phone)),
    /// No session of the organization has that number (or it is the sender's own).
    Nobody,
}

impl Network {
    fn phone_of(&self, chat: &Jid) -> Option<Phone> {
        match chat.server() {
            JidServer::User => chat.phone(),
            JidServer::Lid => {
                let lids = lock(&self.lids);
                lids.iter().find(|(_, lid)| lid.as_str() == chat.as_str()).map(|(phone, _)| phone.clone())
            }
            JidServer::Group => None,
        }
    }

    fn reach(&self, from: &Inner, chat: &Jid) -> Reach {
        let Some(phone) = self.phone_of(chat) else { return Reach::Nobody };
        let key = (from.org.clone(), phone);
        let Some(peer) = lock(&self.peers).get(&key).cloned() else { return Reach::Nobody };
        match peer.upgrade() {
            Some(peer) if peer.id == from.id => Reach::Nobody,
            Some(peer) if peer.connected.load(Ordering::Acquire) => Reach::Online(peer),
            _ => Reach::Offline(key),
        }
    }

    /// Holds `pending` for the offline number `key`; gives it back with the number's session
    /// when that came online meanwhile (deliver it then).
    fn hold(&self, key: (OrgId, Phone), pending: Pending) -> Option<(Arc<Inner>, Pending)> {
        let mut waiting = lock(&self.pending);
        let online = lock(&self.peers).get(&key).and_then(Weak::upgrade).filter(|p| p.connected.load(Ordering::Acquire));
        if let Some(peer) = online {
            return Some((peer, pending));
        }
        waiting.entry(key).or_default().push(pending);
        None
    }

    /// Removes `inner` from the network (not a later session that took its number), with what
    /// waited for it.
    fn leave(&self, inner: &Inner) {
        let mut waiting = lock(&self.pending);
        lock(&self.peers).retain(|key, peer| {
            let mine = std::ptr::eq(peer.as_ptr(), inner);
            if mine {
                waiting.remove(key);
            }
            !mine
        });
    }

    fn lid_for(&self, phone: &Phone) -> String {
        let mut lids = lock(&self.lids);
        lids.entry(phone.clone())
            .or_insert_with(|| {
                let mut rng = rand::thread_rng();
                let first = rng.gen_range(1..=9u8);
                let rest: String = (0..14).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect();
                format!("{first}{rest}@lid")
            })
            .clone()
    }
}

/// The sandbox engine (kind [`EngineKind::Sandbox`]).
pub struct SandboxEngine {
    config: SandboxConfig,
    network: Arc<Network>,
}

impl SandboxEngine {
    pub fn new(config: SandboxConfig) -> Self {
        Self { config, network: Arc::default() }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }
}

impl Default for SandboxEngine {
    fn default() -> Self {
        Self::new(SandboxConfig::default())
    }
}

#[async_trait]
impl Engine for SandboxEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sandbox
    }

    async fn start(&self, spec: SessionSpec, output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError> {
        let paired = spec.identity.is_some();
        let inner = Arc::new(Inner {
            id: spec.id,
            org: spec.org,
            config: self.config.clone(),
            network: Arc::clone(&self.network),
            events: output.events,
            traffic: output.traffic,
            connected: AtomicBool::new(false),
            keys: DeviceKeys::generate(),
            epoch: watch::Sender::new(FIRST_EPOCH),
            emit_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                identity: spec.identity,
                qr: None,
                pending_code: None,
                reconnect_attempt: 0,
            }),
            tasks: Mutex::new(Vec::new()),
        });
        let delay = self.config.connect_delay;
        if paired {
            Inner::spawn(&inner, FIRST_EPOCH, move |inner| async move { inner.connect_after(FIRST_EPOCH, delay).await });
        } else {
            Inner::spawn(&inner, FIRST_EPOCH, move |inner| async move {
                if inner.sleep(FIRST_EPOCH, delay).await {
                    inner.qr_loop(FIRST_EPOCH).await;
                }
            });
        }
        Ok(Arc::new(SandboxSession { inner }))
    }

    /// A no-op: the sandbox keeps no keys of its own. Its "keys" are the identity in the session
    /// row, which the supervisor clears.
    async fn purge(&self, _id: &SessionId) -> Result<(), EngineError> {
        Ok(())
    }
}

const FIRST_EPOCH: u64 = 1;
/// The epoch of a session whose link has ended (stopped, logged out, unlinked, QR exhausted).
const ENDED: u64 = u64::MAX;

/// The companion's long-lived keys shown in every QR code of a session (random bytes here).
struct DeviceKeys {
    noise_pub: [u8; 32],
    identity_pub: [u8; 32],
    adv_secret: [u8; 32],
}

impl DeviceKeys {
    fn generate() -> Self {
        let mut rng = rand::thread_rng();
        Self { noise_pub: rng.r#gen(), identity_pub: rng.r#gen(), adv_secret: rng.r#gen() }
    }

    /// `ref,noise_pub,identity_pub,adv_secret` as WhatsApp's QR codes carry them, with a fresh
    /// server ref (`2@` + base64) for each code.
    fn qr_string(&self) -> String {
        let mut rng = rand::thread_rng();
        let mut ref_bytes = [0u8; 48];
        rng.fill(&mut ref_bytes[..]);
        format!(
            "2@{},{},{},{}",
            B64.encode(ref_bytes),
            B64.encode(self.noise_pub),
            B64.encode(self.identity_pub),
            B64.encode(self.adv_secret)
        )
    }
}

const PAIRING_ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";

/// Eight characters of WhatsApp's pairing-code alphabet, as `ABCD-1234`.
fn new_pairing_code() -> String {
    let mut rng = rand::thread_rng();
    let chars: Vec<char> =
        (0..8).map(|_| char::from(PAIRING_ALPHABET[rng.gen_range(0..PAIRING_ALPHABET.len())])).collect();
    format!("{}-{}", chars[..4].iter().collect::<String>(), chars[4..].iter().collect::<String>())
}

/// Upper-cases and drops dashes and spaces, so `abcd-1234`, `ABCD1234` and `ABCD-1234` compare equal.
fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect()
}

fn deadline(ttl: Duration) -> (Instant, Timestamp) {
    let expires_at = wagate_core::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    (Instant::now() + ttl, expires_at)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct PendingCode {
    /// Normalized (no dash, upper case).
    code: String,
    phone: Phone,
    expires: Instant,
}

struct State {
    identity: Option<Identity>,
    /// The QR code currently shown, and when it stops being scannable.
    qr: Option<(QrCode, Instant)>,
    pending_code: Option<PendingCode>,
    /// Attempts since the last `Connected` (for `Reconnecting { attempt }`).
    reconnect_attempt: u32,
}

struct Inner {
    id: SessionId,
    /// The network is per organization.
    org: OrgId,
    config: SandboxConfig,
    network: Arc<Network>,
    events: Arc<dyn EventSink>,
    traffic: Arc<dyn TrafficSink>,
    /// Connected (after `Connected`, until the link drops or ends): messages can go.
    connected: AtomicBool,
    keys: DeviceKeys,
    /// The current link attempt. Bumped (under `emit_lock`) whenever the link changes course, which
    /// also wakes and retires the tasks of the previous attempt; [`ENDED`] once the link is over.
    epoch: watch::Sender<u64>,
    /// Held while emitting, so the events of one session are emitted one at a time, in order.
    emit_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn current_epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// Spawns a timer task of link attempt `epoch` (not at all if the link has moved on), tracked
    /// so that `stop()` can wait for it.
    fn spawn<F, Fut>(self: &Arc<Self>, epoch: u64, f: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.tasks);
        // Checked under the tasks lock: stop() marks the link ENDED before draining this list.
        if self.current_epoch() != epoch {
            return;
        }
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(f(Arc::clone(self))));
    }

    /// Ends the link attempt in progress and starts `next` (or [`ENDED`]). Call with `emit_lock` held.
    fn advance_epoch(&self, next: Option<u64>) -> u64 {
        let mut new = ENDED;
        self.epoch.send_modify(|e| {
            if *e != ENDED {
                *e = next.unwrap_or(*e + 1);
            }
            new = *e;
        });
        new
    }

    /// Sleeps for `d`; false when the link attempt `epoch` ended meanwhile.
    async fn sleep(&self, epoch: u64, d: Duration) -> bool {
        let mut rx = self.epoch.subscribe();
        if *rx.borrow_and_update() != epoch {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => self.current_epoch() == epoch,
            _ = rx.wait_for(|e| *e != epoch) => false,
        }
    }

    /// Emits `event` if attempt `epoch` is still current; `on_emit` updates the state first.
    async fn emit_if_current(&self, epoch: u64, event: EngineEvent, on_emit: impl FnOnce(&mut State)) -> bool {
        let _order = self.emit_lock.lock().await;
        if self.current_epoch() != epoch {
            return false;
        }
        on_emit(&mut lock(&self.state));
        self.events.emit(&self.id, event).await;
        true
    }

    async fn connect_after(self: Arc<Self>, epoch: u64, delay: Duration) {
        if self.sleep(epoch, delay).await
            && self.emit_if_current(epoch, EngineEvent::Connected, |s| s.reconnect_attempt = 0).await
        {
            self.went_online().await;
        }
    }

    /// Connected: joins the network under its number and receives what waited for it, in
    /// order, before anything new.
    async fn went_online(self: &Arc<Self>) {
        let phone = lock(&self.state).identity.as_ref().map(|i| i.phone.clone());
        let Some(phone) = phone else { return };
        let key = (self.org.clone(), phone);
        lock(&self.network.peers).insert(key.clone(), Arc::downgrade(self));
        loop {
            let waiting = {
                let mut pending = lock(&self.network.pending);
                match pending.remove(&key) {
                    Some(waiting) if !waiting.is_empty() => waiting,
                    _ => {
                        // Under the lock `hold` takes: nothing can be held for us after this.
                        self.connected.store(true, Ordering::Release);
                        return;
                    }
                }
            };
            for held in waiting {
                self.arrive(held).await;
            }
        }
    }

    /// Delivers held traffic here, then its receipt to its sender.
    async fn arrive(&self, held: Pending) {
        self.traffic.deliver(&self.id, held.traffic).await;
        if let Some((sink, sender, receipt)) = held.receipt {
            sink.deliver(&sender, receipt).await;
        }
    }

    /// Sends `traffic` to whoever has the number of `chat`: at once when online (then the
    /// `receipt` goes back to this session at once), held until it connects when offline, and
    /// to nobody (the `receipt` at once) when no session of the organization has the number.
    async fn route(&self, chat: &Jid, traffic: Traffic, receipt: Option<Traffic>) {
        let receipt = receipt.map(|r| (Arc::clone(&self.traffic), self.id.clone(), r));
        let held = Pending { traffic, receipt };
        match self.network.reach(self, chat) {
            Reach::Online(peer) => peer.arrive(held).await,
            Reach::Offline(key) => {
                if let Some((peer, held)) = self.network.hold(key, held) {
                    peer.arrive(held).await;
                }
            }
            Reach::Nobody => {
                if let Some((sink, sender, receipt)) = held.receipt {
                    sink.deliver(&sender, receipt).await;
                }
            }
        }
    }

    /// The link dropped or ended: nothing goes until it is back.
    fn went_offline(&self) {
        self.connected.store(false, Ordering::Release);
    }

    /// This session's identity, when it is connected; `Upstream` otherwise.
    fn online_identity(&self) -> Result<Identity, EngineError> {
        let identity = lock(&self.state).identity.clone();
        match identity {
            Some(identity) if self.connected.load(Ordering::Acquire) && self.current_epoch() != ENDED => Ok(identity),
            _ => Err(EngineError::Upstream("the sandbox session is not connected".into())),
        }
    }

    /// Shows `qr_count` QR codes, each replacing the previous, then gives up (`QrExhausted`).
    async fn qr_loop(self: Arc<Self>, epoch: u64) {
        for i in 0..self.config.qr_count {
            let ttl = if i == 0 { self.config.qr_first_ttl } else { self.config.qr_next_ttl };
            let (valid_until, expires_at) = deadline(ttl);
            let qr = QrCode { code: self.keys.qr_string(), expires_at };
            let shown = qr.clone();
            if !self.emit_if_current(epoch, EngineEvent::Qr(qr), |s| s.qr = Some((shown, valid_until))).await {
                return;
            }
            if !self.sleep(epoch, ttl).await {
                return;
            }
        }
        let _order = self.emit_lock.lock().await;
        if self.current_epoch() != epoch {
            return;
        }
        self.advance_epoch(Some(ENDED));
        {
            let mut state = lock(&self.state);
            state.qr = None;
            state.pending_code = None;
        }
        self.events.emit(&self.id, EngineEvent::QrExhausted).await;
    }

    /// Common checks of the phone-side actions: the link must be live and not yet paired.
    fn check_pairable(&self) -> Result<(), EngineError> {
        if self.current_epoch() == ENDED {
            return Err(EngineError::InvalidState("session is not running".into()));
        }
        if lock(&self.state).identity.is_some() {
            return Err(EngineError::AlreadyPaired);
        }
        Ok(())
    }

    /// Pairs with `phone` and connects: `Paired` then `Connected`. Call with `emit_lock` held.
    async fn pair(self: &Arc<Self>, phone: Phone, push_name: Option<String>, platform: Option<String>) {
        let identity = Identity {
            jid: format!("{phone}@s.whatsapp.net"),
            lid: Some(self.network.lid_for(&phone)),
            phone,
            push_name: push_name.filter(|n| !n.trim().is_empty()),
            platform: Some(platform.filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "android".into())),
        };
        // Retires the QR rotation: it sees a newer epoch and stops without emitting.
        self.advance_epoch(None);
        {
            let mut state = lock(&self.state);
            state.identity = Some(identity.clone());
            state.qr = None;
            state.pending_code = None;
            state.reconnect_attempt = 0;
        }
        self.events.emit(&self.id, EngineEvent::Paired(identity)).await;
        self.events.emit(&self.id, EngineEvent::Connected).await;
        self.went_online().await;
    }

    /// Cancels every timer and waits until the tasks are gone.
    async fn shutdown(&self) {
        self.epoch.send_replace(ENDED);
        // Offline, still known by its number: messages to it wait for its next connection.
        self.went_offline();
        loop {
            let tasks: Vec<_> = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                break;
            }
            for task in tasks {
                if let Err(e) = task.await
                    && e.is_panic()
                {
                    tracing::error!(session = %self.id, "sandbox task panicked");
                }
            }
        }
    }
}

/// One running sandbox session.
struct SandboxSession {
    inner: Arc<Inner>,
}

impl Drop for SandboxSession {
    /// A session dropped without `stop()` still ends its timers (they notice on their next wake-up).
    fn drop(&mut self) {
        self.inner.epoch.send_replace(ENDED);
        self.inner.went_offline();
    }
}

#[async_trait]
impl EngineSession for SandboxSession {
    /// Ends the simulated link (the identity is forgotten; the supervisor clears the stored one).
    async fn logout(&self) -> Result<(), EngineError> {
        let _order = self.inner.emit_lock.lock().await;
        self.inner.advance_epoch(Some(ENDED));
        self.inner.went_offline();
        self.inner.network.leave(&self.inner);
        let mut state = lock(&self.inner.state);
        state.identity = None;
        state.qr = None;
        state.pending_code = None;
        Ok(())
    }

    async fn stop(&self) {
        self.inner.shutdown().await;
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

#[async_trait]
impl Pairing for SandboxSession {
    async fn request_pairing_code(&self, phone: &Phone) -> Result<PairingCode, EngineError> {
        self.inner.check_pairable()?;
        let code = new_pairing_code();
        let (expires, expires_at) = deadline(self.inner.config.pairing_code_ttl);
        lock(&self.inner.state).pending_code =
            Some(PendingCode { code: normalize_code(&code), phone: phone.clone(), expires });
        Ok(PairingCode { code, expires_at })
    }
}

#[async_trait]
impl SandboxControl for SandboxSession {
    async fn scan_qr(&self, phone: Phone, push_name: Option<String>, platform: Option<String>) -> Result<(), EngineError> {
        let inner = &self.inner;
        let _order = inner.emit_lock.lock().await;
        inner.check_pairable()?;
        let scannable = lock(&inner.state).qr.as_ref().is_some_and(|(_, until)| Instant::now() < *until);
        if !scannable {
            return Err(EngineError::InvalidState("no QR code to scan (not shown yet, or expired)".into()));
        }
        inner.pair(phone, push_name, platform).await;
        Ok(())
    }

    async fn enter_pairing_code(&self, code: &str) -> Result<(), EngineError> {
        let inner = &self.inner;
        let _order = inner.emit_lock.lock().await;
        inner.check_pairable()?;
        let invalid = |message: &str| EngineError::Invalid { field: "code", message: message.into() };
        let phone = {
            let state = lock(&inner.state);
            let pending = state.pending_code.as_ref().ok_or_else(|| invalid("no pairing code was requested"))?;
            if Instant::now() >= pending.expires {
                return Err(invalid("the pairing code has expired"));
            }
            if normalize_code(code) != pending.code {
                return Err(invalid("wrong pairing code"));
            }
            pending.phone.clone()
        };
        inner.pair(phone, None, None).await;
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        let _order = inner.emit_lock.lock().await;
        if inner.current_epoch() == ENDED {
            return Err(EngineError::InvalidState("session is not running".into()));
        }
        let epoch = inner.advance_epoch(None);
        inner.went_offline();
        let (attempt, paired) = {
            let mut state = lock(&inner.state);
            state.reconnect_attempt += 1;
            state.qr = None;
            state.pending_code = None;
            (state.reconnect_attempt, state.identity.is_some())
        };
        let retry_in = inner.config.reconnect_delay;
        inner
            .events
            .emit(&inner.id, EngineEvent::Reconnecting { reason: "connection_lost".into(), attempt, retry_in })
            .await;
        Inner::spawn(inner, epoch, move |inner| async move {
            if paired {
                inner.connect_after(epoch, retry_in).await;
            } else if inner.sleep(epoch, retry_in).await {
                inner.qr_loop(epoch).await;
            }
        });
        Ok(())
    }

    async fn unlink(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        let _order = inner.emit_lock.lock().await;
        if inner.current_epoch() == ENDED {
            return Err(EngineError::InvalidState("session is not running".into()));
        }
        {
            let mut state = lock(&inner.state);
            if state.identity.is_none() {
                return Err(EngineError::InvalidState("session is not paired".into()));
            }
            state.identity = None;
        }
        inner.advance_epoch(Some(ENDED));
        inner.went_offline();
        inner.network.leave(inner);
        inner.events.emit(&inner.id, EngineEvent::LoggedOut { reason: "device_removed".into() }).await;
        Ok(())
    }

    async fn receive(&self, from: Phone, push_name: Option<String>, content: Content) -> Result<String, EngineError> {
        let inner = &self.inner;
        inner.online_identity()?;
        let jid = Jid::of_phone(&from);
        let wa_message_id = wagate_core::new_wa_message_id();
        let message = InboundMessage {
            wa_message_id: wa_message_id.clone(),
            chat: jid.clone(),
            from: jid,
            from_me: false,
            from_phone: Some(from),
            push_name: push_name.filter(|n| !n.trim().is_empty()),
            timestamp: wagate_core::now(),
            content,
            reply_to: None,
            mentions: Vec::new(),
            error: None,
        };
        inner.traffic.deliver(&inner.id, Traffic::Message(Box::new(message))).await;
        Ok(wa_message_id)
    }
}

/// Messaging on the simulated network: a message to the number of a connected sandbox session
/// of the same organization arrives there at once, and the sender gets its delivery receipt at
/// once; to a sandbox session that is offline (stopped, reconnecting) it waits, in memory, until
/// that session connects, and the receipt comes then; a message to any other valid number is
/// delivered at once to nobody (every number is on the sandbox's WhatsApp). Read receipts go
/// back when the recipient marks the chat read.
#[async_trait]
impl Messaging for SandboxSession {
    async fn send(&self, message: &OutboundMessage) -> Result<Sent, EngineError> {
        let inner = &self.inner;
        let me = inner.online_identity()?;
        let my_jid = Jid::of_phone(&me.phone);
        let at = wagate_core::now();
        let traffic = match &message.content {
            Content::Reaction { target, emoji, .. } => Traffic::Reaction {
                chat: my_jid.clone(),
                from: my_jid.clone(),
                target: target.clone(),
                emoji: emoji.clone(),
                at,
            },
            content => Traffic::Message(Box::new(InboundMessage {
                wa_message_id: message.wa_message_id.clone(),
                chat: my_jid.clone(),
                from: my_jid.clone(),
                from_me: false,
                from_phone: Some(me.phone.clone()),
                push_name: me.push_name.clone(),
                timestamp: at,
                content: content.clone(),
                reply_to: message.reply_to.as_ref().map(|q| q.wa_message_id.clone()),
                mentions: message.mentions.clone(),
                error: None,
            })),
        };
        let receipt = Traffic::Receipt {
            chat: message.chat.clone(),
            wa_message_ids: vec![message.wa_message_id.clone()],
            kind: ReceiptKind::Delivered,
            at,
        };
        inner.route(&message.chat, traffic, Some(receipt)).await;
        Ok(Sent { at })
    }

    async fn edit(&self, chat: &Jid, wa_message_id: &str, text: &str) -> Result<(), EngineError> {
        let inner = &self.inner;
        let me = Jid::of_phone(&inner.online_identity()?.phone);
        let traffic = Traffic::Edited {
            chat: me.clone(),
            from: me,
            wa_message_id: wa_message_id.to_owned(),
            text: text.to_owned(),
            at: wagate_core::now(),
        };
        inner.route(chat, traffic, None).await;
        Ok(())
    }

    async fn revoke(&self, chat: &Jid, wa_message_id: &str) -> Result<(), EngineError> {
        let inner = &self.inner;
        let me = Jid::of_phone(&inner.online_identity()?.phone);
        let traffic = Traffic::Revoked { chat: me.clone(), from: me, wa_message_id: wa_message_id.to_owned(), at: wagate_core::now() };
        inner.route(chat, traffic, None).await;
        Ok(())
    }

    async fn mark_read(&self, chat: &Jid, messages: &[ReadMark]) -> Result<(), EngineError> {
        let inner = &self.inner;
        let me = Jid::of_phone(&inner.online_identity()?.phone);
        if messages.is_empty() {
            return Ok(());
        }
        let traffic = Traffic::Receipt {
            chat: me,
            wa_message_ids: messages.iter().map(|m| m.wa_message_id.clone()).collect(),
            kind: ReceiptKind::Read,
            at: wagate_core::now(),
        };
        inner.route(chat, traffic, None).await;
        Ok(())
    }

    async fn presence(&self, _chat: &Jid, _presence: ChatPresence) -> Result<(), EngineError> {
        // Nobody watches presence on the simulated network; it only needs a live connection.
        self.inner.online_identity().map(|_| ())
    }

    async fn check_numbers(&self, phones: &[Phone]) -> Result<Vec<NumberCheck>, EngineError> {
        self.inner.online_identity()?;
        Ok(phones.iter().map(|p| NumberCheck { phone: p.clone(), jid: Some(Jid::of_phone(p)) }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fast_sandbox;
    use wagate_engine::testing::{RecordingSink, phone};

    fn spec(identity: Option<Identity>) -> SessionSpec {
        SessionSpec { id: SessionId::generate(), org: OrgId::parse("acme").unwrap(), identity, device_name: None }
    }

    async fn start(config: SandboxConfig, identity: Option<Identity>) -> (Arc<dyn EngineSession>, Arc<RecordingSink>) {
        let engine = SandboxEngine::new(config);
        let sink = Arc::new(RecordingSink::default());
        let session = engine.start(spec(identity), SessionOutput::new(sink.clone())).await.unwrap();
        (session, sink)
    }

    fn qr_of(event: &EngineEvent) -> &QrCode {
        match event {
            EngineEvent::Qr(qr) => qr,
            other => panic!("expected a QR code, got {other:?}"),
        }
    }

    fn some_identity() -> Identity {
        Identity {
            phone: phone("628123456789"),
            jid: "628123456789@s.whatsapp.net".into(),
            lid: Some("123456789012345@lid".into()),
            push_name: None,
            platform: Some("android".into()),
        }
    }

    #[tokio::test]
    async fn qr_codes_have_whatsapp_shape_rotate_and_run_out() {
        let config = SandboxConfig {
            qr_first_ttl: Duration::from_millis(150),
            qr_next_ttl: Duration::from_millis(60),
            qr_count: 3,
            connect_delay: Duration::ZERO,
            ..fast_sandbox()
        };
        let (_session, sink) = start(config, None).await;
        let events = sink.wait_for(4).await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[3], EngineEvent::QrExhausted);
        let codes: Vec<&QrCode> = events[..3].iter().map(qr_of).collect();
        let mut refs = Vec::new();
        let mut keys = Vec::new();
        for qr in &codes {
            let parts: Vec<&str> = qr.code.split(',').collect();
            assert_eq!(parts.len(), 4, "{}", qr.code);
            let reference = parts[0].strip_prefix("2@").expect("ref starts with 2@");
            assert!(B64.decode(reference).is_ok());
            for (part, len) in parts[1..].iter().zip([32, 32, 32]) {
                assert_eq!(B64.decode(part).unwrap().len(), len);
            }
            refs.push(parts[0].to_owned());
            keys.push(parts[1..].join(","));
        }
        refs.dedup();
        assert_eq!(refs.len(), 3, "each code has a new ref");
        keys.dedup();
        assert_eq!(keys.len(), 1, "the device keys stay the same");
        assert!(codes[0].expires_at <= codes[1].expires_at && codes[1].expires_at <= codes[2].expires_at);
        // Nothing after the end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.events().len(), 4);
    }

    #[tokio::test]
    async fn paired_start_connects_without_qr() {
        let (_session, sink) = start(fast_sandbox(), Some(some_identity())).await;
        assert_eq!(sink.wait_for(1).await, vec![EngineEvent::Connected]);
    }

    #[tokio::test]
    async fn scan_pairs_then_connects_and_refuses_a_second_scan() {
        let (session, sink) = start(fast_sandbox(), None).await;
        sink.wait_for(1).await;
        let control = control(&*session).expect("sandbox controls");
        control.scan_qr(phone("628123456789"), Some("Support".into()), None).await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 3, "{events:?}");
        let EngineEvent::Paired(identity) = &events[1] else { panic!("{events:?}") };
        assert_eq!(identity.phone.as_str(), "628123456789");
        assert_eq!(identity.jid, "628123456789@s.whatsapp.net");
        let lid = identity.lid.as_deref().unwrap();
        let digits = lid.strip_suffix("@lid").unwrap();
        assert!(digits.len() == 15 && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'), "{lid}");
        assert_eq!(identity.push_name.as_deref(), Some("Support"));
        assert_eq!(identity.platform.as_deref(), Some("android"));
        assert_eq!(events[2], EngineEvent::Connected);

        assert!(matches!(control.scan_qr(phone("628123456789"), None, None).await, Err(EngineError::AlreadyPaired)));
        let pairing = session.pairing().expect("pairing");
        assert!(matches!(pairing.request_pairing_code(&phone("628123456789")).await, Err(EngineError::AlreadyPaired)));
        session.stop().await;
    }

    #[tokio::test]
    async fn the_lid_of_a_phone_is_stable_within_an_engine() {
        let engine = SandboxEngine::new(fast_sandbox());
        let mut lids = Vec::new();
        for platform in ["iphone", "smba"] {
            let sink = Arc::new(RecordingSink::default());
            let session = engine.start(spec(None), SessionOutput::new(sink.clone())).await.unwrap();
            sink.wait_for(1).await;
            control(&*session).unwrap().scan_qr(phone("4915112345678"), None, Some(platform.into())).await.unwrap();
            let EngineEvent::Paired(identity) = &sink.events()[1] else { panic!() };
            assert_eq!(identity.platform.as_deref(), Some(platform));
            assert_eq!(identity.push_name, None);
            lids.push(identity.lid.clone().unwrap());
            session.stop().await;
        }
        assert_eq!(lids[0], lids[1]);
    }

    #[tokio::test]
    async fn scanning_needs_a_shown_qr_code() {
        let config = SandboxConfig { connect_delay: Duration::from_secs(3600), ..fast_sandbox() };
        let (session, sink) = start(config, None).await;
        let err = control(&*session).unwrap().scan_qr(phone("628123456789"), None, None).await.unwrap_err();
        assert!(matches!(err, EngineError::InvalidState(_)), "{err:?}");
        session.stop().await;
        assert!(sink.events().is_empty());
    }

    #[tokio::test]
    async fn pairing_codes_have_the_whatsapp_format_and_pair_with_the_requested_phone() {
        let (session, sink) = start(fast_sandbox(), None).await;
        let control = control(&*session).unwrap();
        let err = control.enter_pairing_code("ABCD-1234").await.unwrap_err();
        assert!(matches!(err, EngineError::Invalid { field: "code", .. }), "no code requested: {err:?}");

        let code = session.pairing().expect("pairing").request_pairing_code(&phone("628111222333")).await.unwrap();
        assert_eq!(code.code.len(), 9);
        let (a, b) = code.code.split_once('-').unwrap();
        assert!(a.len() == 4 && b.len() == 4);
        assert!(format!("{a}{b}").bytes().all(|c| PAIRING_ALPHABET.contains(&c)), "{}", code.code);
        assert!(code.expires_at > wagate_core::now() + chrono::Duration::seconds(170));

        let wrong = if code.code.starts_with('1') { "2222-2222" } else { "1111-1111" };
        let err = control.enter_pairing_code(wrong).await.unwrap_err();
        assert!(matches!(err, EngineError::Invalid { field: "code", .. }), "{err:?}");

        // Case-insensitive, dash optional.
        control.enter_pairing_code(&code.code.replace('-', "").to_lowercase()).await.unwrap();
        let paired = sink
            .events()
            .into_iter()
            .find_map(|e| if let EngineEvent::Paired(i) = e { Some(i) } else { None })
            .expect("paired");
        assert_eq!(paired.phone.as_str(), "628111222333");
        assert_eq!(sink.events().last(), Some(&EngineEvent::Connected));
        assert!(matches!(control.enter_pairing_code(&code.code).await, Err(EngineError::AlreadyPaired)));
        session.stop().await;
    }

    #[tokio::test]
    async fn an_expired_pairing_code_is_refused() {
        let config = SandboxConfig { pairing_code_ttl: Duration::from_millis(20), ..fast_sandbox() };
        let (session, _sink) = start(config, None).await;
        let code = session.pairing().expect("pairing").request_pairing_code(&phone("628111222333")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = control(&*session).unwrap().enter_pairing_code(&code.code).await.unwrap_err();
        match err {
            EngineError::Invalid { field: "code", message } => assert!(message.contains("expired"), "{message}"),
            other => panic!("{other:?}"),
        }
        session.stop().await;
    }

    #[tokio::test]
    async fn disconnect_reconnects_a_paired_session() {
        let (session, sink) = start(fast_sandbox(), Some(some_identity())).await;
        sink.wait_for(1).await;
        control(&*session).unwrap().disconnect().await.unwrap();
        assert_eq!(
            sink.events()[1],
            EngineEvent::Reconnecting {
                reason: "connection_lost".into(),
                attempt: 1,
                retry_in: Duration::from_millis(50)
            }
        );
        assert_eq!(sink.wait_for(3).await[2], EngineEvent::Connected);
        session.stop().await;
    }

    #[tokio::test]
    async fn disconnect_of_an_unpaired_session_shows_new_qr_codes() {
        let (session, sink) = start(fast_sandbox(), None).await;
        let first = qr_of(&sink.wait_for(1).await[0]).clone();
        control(&*session).unwrap().disconnect().await.unwrap();
        assert!(matches!(sink.events()[1], EngineEvent::Reconnecting { attempt: 1, .. }));
        let events = sink.wait_for(3).await;
        assert_ne!(qr_of(&events[2]).code, first.code);
        session.stop().await;
    }

    #[tokio::test]
    async fn unlink_logs_out_and_needs_a_paired_session() {
        let (session, sink) = start(fast_sandbox(), None).await;
        sink.wait_for(1).await;
        let control = control(&*session).unwrap();
        assert!(matches!(control.unlink().await, Err(EngineError::InvalidState(_))));
        control.scan_qr(phone("628123456789"), None, None).await.unwrap();
        control.unlink().await.unwrap();
        assert_eq!(sink.events().last(), Some(&EngineEvent::LoggedOut { reason: "device_removed".into() }));
        assert!(matches!(control.disconnect().await, Err(EngineError::InvalidState(_))));
        session.stop().await;
    }

    #[tokio::test]
    async fn stop_cancels_every_timer() {
        let config = SandboxConfig {
            qr_first_ttl: Duration::from_millis(50),
            qr_next_ttl: Duration::from_millis(50),
            qr_count: 3,
            ..fast_sandbox()
        };
        let (session, sink) = start(config, None).await;
        sink.wait_for(1).await;
        session.stop().await;
        let seen = sink.events().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.events().len(), seen, "no event after stop: {:?}", sink.events());
        assert!(!sink.events().contains(&EngineEvent::QrExhausted));
        // Idempotent.
        session.stop().await;
    }

    #[tokio::test]
    async fn stop_also_ends_a_pending_reconnection() {
        let config = SandboxConfig { reconnect_delay: Duration::from_millis(100), ..fast_sandbox() };
        let (session, sink) = start(config, Some(some_identity())).await;
        sink.wait_for(1).await;
        control(&*session).unwrap().disconnect().await.unwrap();
        session.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.events().len(), 2, "{:?}", sink.events());
    }

    #[test]
    fn codes_normalize() {
        assert_eq!(normalize_code(" abcd-12z4 "), "ABCD12Z4");
        for _ in 0..100 {
            let code = new_pairing_code();
            assert_eq!(normalize_code(&code).len(), 8);
            assert_eq!(&code[4..5], "-");
        }
    }
}
