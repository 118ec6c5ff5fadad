//! A local emulator of the WhatsApp Web multi-device server and of the primary phone.
//!
//! The real `whatsapp-rust` client pairs with it (QR or pairing code), logs in, stays
//! connected, and is logged out, unlinked, replaced, refused or dropped by it on request.
//!
//! After login it answers what WhatsApp answers (prekey upload, count, digest and fetch,
//! usync, props, blocklist, privacy, app state) and routes end-to-end encrypted messages:
//! each emulated phone is a Signal peer with a persisted identity and sessions, so a test
//! can make a phone send a text ([`Emulator::phone_send_text`]) and read, decrypted, what a
//! companion sent it ([`Emulator::phone_messages`]); two companions on two accounts message
//! each other; receipts, presence, typing, retries and an offline queue work as on WhatsApp.
//! Tests start it in-process on port 0 ([`Emulator::start`]); the `wa-emulator` binary serves
//! it with an HTTP control surface ([`control::router`]) for demos.
//!
//! The emulator signs its Noise certificate with its own root, so only a client built with
//! `danger-skip-cert-chain-verify` (wagate's tests, never its release binary) accepts it.
//! Protocol facts: `docs/WHATSAPP-EMULATOR.md`.
//!
//! # Media
//!
//! Next to the WebSocket the emulator runs a blob host, plain HTTP on its own port
//! ([`Emulator::media_host`], [`EmulatorConfig::media_bind`]), which it names in its
//! `<media_conn>` answers with a fresh auth token. Uploads are
//! `POST /mms/{type}/{token}?auth=…&token=…` (the auth must be one it issued, else 401) and
//! answer `{url, direct_path}`; downloads are `GET {direct_path}` (`/v/{type}/{id}.enc`, 404
//! when unknown). Blobs live in memory, or under `data_dir/blobs/` so a restarted emulator
//! still serves them.
//!
//! Phones send media like a real phone ([`Emulator::phone_send_media`]: wacore's encryption
//! with a fresh media key, the ciphertext on the blob host, an image, video, audio, document
//! or sticker message), and fetch, verify and decrypt the media companions send them
//! ([`PhoneMessage::media`]).
//!
//! The real client builds `https://{host}…` media URLs, always. A test reaches the blob
//! host with an `HttpClient` (`BotBuilder::with_http_client`) that sends
//! `https://{media_host}` to `http://{media_host}`; like the certificate switch, that seam
//! belongs in tests only (see this crate's `tests/media.rs`).

pub mod control;
mod media;
mod messaging;
pub mod noise;
pub mod phone;
mod server;
mod signal;
mod state;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use rand::RngExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node, NodeContent};
use whatsapp_rust::waproto::whatsapp as wa;

pub use media::{MediaKind, PhoneMedia, ReceivedMedia};
pub use noise::Pattern;
pub use state::{Account, AccountSpec, Device, PhoneMessage, PhoneReceipt};

use media::MediaStore;
use messaging::Fault;
use noise::ServerIdentity;
use phone::{CompanionHello, PrimaryHello};
use server::{ConnTx, Outbound};
use state::{AccountRecord, Persisted};

const SERVER: &str = "s.whatsapp.net";

/// Events kept for [`Emulator::events`].
const MAX_EVENTS: usize = 10_000;

/// How long the phone waits for the companion to answer a pair-success.
const PAIR_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Where the blob host (media upload and download, plain HTTP) listens. `None`: the
    /// IP of `bind`, a free port.
    pub media_bind: Option<SocketAddr>,
    /// Keeps the server key and the accounts across restarts when set.
    pub data_dir: Option<PathBuf>,
    /// Pause between the companion's pair-device-sign and the `515` restart. The real server
    /// takes a moment too; sent instantly it races the client's own bookkeeping.
    pub restart_delay: Duration,
    /// QR refs offered to each fresh companion (the first lasts 60 s, the others 20 s).
    pub qr_refs: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            media_bind: None,
            data_dir: None,
            restart_delay: Duration::from_millis(300),
            qr_refs: 6,
        }
    }
}

/// Why a control action failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The companion refused or the flow went wrong on the wire.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Timeout(String),
}

/// Something that happened on the emulated server, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerEvent {
    /// A fresh companion connected and was offered QR refs.
    #[serde(rename_all = "camelCase")]
    Registration { conn: u64 },
    /// A companion asked to link to `phone` by pairing code.
    #[serde(rename_all = "camelCase")]
    PairingCodeRequested { conn: u64, phone: String },
    #[serde(rename_all = "camelCase")]
    Paired { jid: String, via: String },
    #[serde(rename_all = "camelCase")]
    LoggedIn { conn: u64, jid: String, pattern: String },
    #[serde(rename_all = "camelCase")]
    LoginRefused { jid: String, reason: u16 },
    /// The device logged in again elsewhere; this connection was told `replaced`.
    #[serde(rename_all = "camelCase")]
    Replaced { conn: u64, jid: String },
    /// The phone removed the device.
    #[serde(rename_all = "camelCase")]
    Unlinked { jid: String },
    /// The companion logged itself out (`remove-companion-device`).
    #[serde(rename_all = "camelCase")]
    RemoveCompanionDevice { jid: String, reason: String },
    #[serde(rename_all = "camelCase")]
    Dropped { conn: u64, jid: Option<String> },
    #[serde(rename_all = "camelCase")]
    Disconnected { conn: u64, jid: Option<String> },
    /// A companion uploaded `count` one-time prekeys (with its bundle).
    #[serde(rename_all = "camelCase")]
    PrekeysUploaded { jid: String, count: usize },
    /// A companion's message went to `devices` recipient devices.
    #[serde(rename_all = "camelCase")]
    MessageRouted { id: String, from: String, to: String, devices: usize },
    /// An emulated phone decrypted a message (see [`Emulator::phone_messages`]).
    #[serde(rename_all = "camelCase")]
    PhoneReceived { phone: String, id: String, from: String },
    /// An emulated phone could not decrypt a message.
    #[serde(rename_all = "camelCase")]
    PhoneUndecryptable { phone: String, id: String, from: String, error: String },
    /// A receipt went from a companion to the sender's account `to`.
    #[serde(rename_all = "camelCase")]
    ReceiptRouted { id: String, from: String, to: String, kind: String },
    /// An emulated phone sent a message again after a retry receipt.
    #[serde(rename_all = "camelCase")]
    PhoneResent { phone: String, id: String },
    /// A companion of `from` is typing (or stopped) in the chat with `phone`.
    #[serde(rename_all = "camelCase")]
    ChatState { phone: String, from: String, state: String },
}

/// A companion connected without credentials, waiting to be paired.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    pub conn: u64,
    /// The phone number a pairing code was requested for, if one was.
    pub code_for: Option<String>,
    pub name: Option<String>,
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops it.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    media: Arc<MediaStore>,
    media_server: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.accept.abort();
        self.media_server.abort();
        self.shared.drop_all();
    }
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Self> {
        let mut persisted = match &config.data_dir {
            Some(dir) => Persisted::load(dir)?,
            None => Persisted::default(),
        };
        let identity = ServerIdentity::new(persisted.server_key.as_deref(), unix_now())?;
        if let Some(dir) = &config.data_dir
            && persisted.server_key.is_none()
        {
            persisted.server_key = Some(identity.private_bytes());
            persisted.save(dir)?;
        }
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let media_listener = TcpListener::bind(config.media_bind.unwrap_or(SocketAddr::new(addr.ip(), 0))).await?;
        let media_addr = media_listener.local_addr()?;
        let media_host = match media_addr.ip() {
            ip if ip.is_unspecified() => format!("127.0.0.1:{}", media_addr.port()),
            _ => media_addr.to_string(),
        };
        let media = Arc::new(MediaStore::new(media_host, config.data_dir.as_ref().map(|d| d.join("blobs"))));
        let media_router = media::router(media.clone());
        let media_server = tokio::spawn(async move {
            if let Err(e) = axum::serve(media_listener, media_router).await {
                tracing::error!("the blob host stopped: {e}");
            }
        });
        let shared = Arc::new(Shared {
            identity,
            inner: Mutex::new(Inner {
                server_key: persisted.server_key,
                accounts: persisted.accounts,
                conns: HashMap::new(),
                pending: HashMap::new(),
                refuse: None,
                events: Vec::new(),
                presence: HashMap::new(),
                subscriptions: HashMap::new(),
                media: media.clone(),
            }),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            config,
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(server::serve(s.clone(), stream));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        tracing::info!(%addr, media = %media.host(), "WhatsApp emulator listening");
        Ok(Self { shared, addr, accept, media, media_server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to point a client at (`ws://ADDR/ws/chat`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// The blob host as `<media_conn>` names it (`127.0.0.1:PORT`). It speaks plain HTTP,
    /// while the client builds `https://` URLs: see [the crate docs](crate#media).
    pub fn media_host(&self) -> String {
        self.media.host().to_owned()
    }

    pub fn create_account(&self, spec: AccountSpec) -> Result<Account, EmulatorError> {
        let mut inner = self.shared.lock();
        let record = inner.new_account(&spec)?;
        let view = record.view(|_| false);
        self.shared.save(&inner);
        Ok(view)
    }

    pub fn accounts(&self) -> Vec<Account> {
        let inner = self.shared.lock();
        inner.accounts.iter().map(|a| a.view(|jid| inner.online(jid))).collect()
    }

    pub fn account(&self, phone: &str) -> Option<Account> {
        self.accounts().into_iter().find(|a| a.phone == phone)
    }

    /// Every linked device of every account.
    pub fn devices(&self) -> Vec<Device> {
        self.accounts().into_iter().flat_map(|a| a.devices).collect()
    }

    pub fn device(&self, jid: &str) -> Option<Device> {
        self.devices().into_iter().find(|d| d.jid == jid)
    }

    /// Companions connected without credentials, waiting to be paired.
    pub fn pairing_requests(&self) -> Vec<PairingRequest> {
        let inner = self.shared.lock();
        let mut out: Vec<PairingRequest> = inner
            .conns
            .iter()
            .filter_map(|(id, c)| match &c.kind {
                ConnKind::Registering(r) => Some(PairingRequest {
                    conn: *id,
                    code_for: r.code.as_ref().map(|c| c.hello.phone.clone()),
                    name: r.name.clone(),
                }),
                ConnKind::LoggedIn { .. } => None,
            })
            .collect();
        out.sort_by_key(|r| r.conn);
        out
    }

    /// The phone scans `qr` (the companion's `ref,noise,identity,adv,…` string) and links the
    /// companion to the account named by `spec.phone`, or to a new account made from `spec`.
    /// Returns once the companion accepted the pair-success; the `515` restart follows.
    pub async fn scan_qr(&self, qr: &str, spec: AccountSpec) -> Result<Device, EmulatorError> {
        let scanned = phone::parse_qr(qr).map_err(|e| EmulatorError::Invalid(format!("{e:#}")))?;
        let (conn, phone_number, name) = {
            let mut inner = self.shared.lock();
            let conn = inner
                .conns
                .iter()
                .find_map(|(id, c)| match &c.kind {
                    ConnKind::Registering(r)
                        if r.noise_pub == scanned.noise_pub && r.refs.contains(&scanned.pairing_ref) =>
                    {
                        Some((*id, r.name.clone()))
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    EmulatorError::NotFound("no companion connected with this QR code (expired, or already paired)".into())
                })?;
            let phone_number = match spec.phone.as_deref().filter(|p| inner.account(p).is_some()) {
                Some(p) => p.to_owned(),
                None => inner.new_account(&spec)?.phone.clone(),
            };
            (conn.0, phone_number, conn.1)
        };
        self.shared.save(&self.shared.lock());
        self.shared
            .clone()
            .complete_pairing(conn, &phone_number, scanned.identity_pub, scanned.adv_secret, name, "qr")
            .await
    }

    /// The user types `code` (shown by the companion) into the phone of `phone`. Returns once
    /// the companion finished the exchange and accepted the pair-success.
    pub async fn enter_code(&self, phone_number: &str, code: &str) -> Result<Device, EmulatorError> {
        let (conn, hello) = {
            let inner = self.shared.lock();
            inner
                .conns
                .iter()
                .filter_map(|(id, c)| match &c.kind {
                    ConnKind::Registering(r) => r.code.as_ref().filter(|f| f.hello.phone == phone_number).map(|f| (*id, f.hello.clone())),
                    _ => None,
                })
                .max_by_key(|(id, _)| *id)
                .ok_or_else(|| EmulatorError::NotFound(format!("no companion is waiting for a code for {phone_number}")))?
        };
        // PBKDF2 with 131072 rounds: off the async threads.
        let code = code.to_owned();
        let primary = tokio::task::spawn_blocking(move || phone::primary_hello(&hello, &code))
            .await
            .map_err(|e| EmulatorError::Rejected(e.to_string()))?
            .map_err(|e| EmulatorError::Invalid(format!("{e:#}")))?;
        let (done_tx, done_rx) = oneshot::channel();
        let notification = {
            let mut inner = self.shared.lock();
            if inner.account(phone_number).is_none() {
                inner.new_account(&AccountSpec { phone: Some(phone_number.to_owned()), ..Default::default() })?;
            }
            let account_key = inner
                .account(phone_number)
                .ok_or_else(|| EmulatorError::NotFound(phone_number.to_owned()))?
                .identity()
                .map_err(|e| EmulatorError::Rejected(e.to_string()))?;
            let Some(ConnKind::Registering(reg)) = inner.conns.get_mut(&conn).map(|c| &mut c.kind) else {
                return Err(EmulatorError::NotFound("the companion went away".into()));
            };
            let flow = reg.code.as_mut().ok_or_else(|| EmulatorError::NotFound("no code flow".into()))?;
            let node = NodeBuilder::new("notification")
                .attr("from", SERVER)
                .attr("type", "link_code_companion_reg")
                .attr("id", self.shared.next_id())
                .attr("t", unix_now().to_string())
                .children([NodeBuilder::new("link_code_companion_reg")
                    .attr("stage", "primary_hello")
                    .children([
                        NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                            .bytes(primary.wrapped.to_vec())
                            .build(),
                        NodeBuilder::new("primary_identity_pub")
                            .bytes(account_key.public_key.public_key_bytes().to_vec())
                            .build(),
                        NodeBuilder::new("link_code_pairing_ref").bytes(flow.hello.pairing_ref.as_bytes().to_vec()).build(),
                    ])
                    .build()])
                .build();
            flow.primary = Some(primary);
            flow.done = Some(done_tx);
            self.shared.save(&inner);
            node
        };
        self.shared.send(conn, Outbound::Node(notification));
        match tokio::time::timeout(PAIR_ANSWER_TIMEOUT * 2, done_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EmulatorError::Rejected("the companion disconnected before pairing finished".into())),
            Err(_) => Err(EmulatorError::Timeout("the companion did not finish pairing by code".into())),
        }
    }

    /// The phone removes a linked device: its connection gets `401 device_removed`.
    pub fn unlink(&self, jid: &str) -> Result<(), EmulatorError> {
        let conns = {
            let mut inner = self.shared.lock();
            inner.remove_device(jid)?;
            inner.push_event(ServerEvent::Unlinked { jid: jid.to_owned() });
            self.shared.save(&inner);
            inner.conns_of(jid)
        };
        for conn in conns {
            self.shared.send(conn, Outbound::CloseWith(stream_error(Some("401"), Some("device_removed"))));
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    /// Another login of the device, as far as its open connection can tell: `conflict replaced`.
    pub fn replace(&self, jid: &str) -> Result<(), EmulatorError> {
        let conns = self.shared.lock().conns_of(jid);
        if conns.is_empty() {
            return Err(EmulatorError::NotFound(format!("{jid} is not connected")));
        }
        let mut inner = self.shared.lock();
        for conn in conns {
            inner.push_event(ServerEvent::Replaced { conn, jid: jid.to_owned() });
            inner.send(conn, Outbound::CloseWith(stream_error(None, Some("replaced"))));
        }
        drop(inner);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    /// Drops the connections of `jid` (or every connection) without a word. Returns how many.
    pub fn drop_connections(&self, jid: Option<&str>) -> usize {
        let mut inner = self.shared.lock();
        let targets: Vec<(u64, Option<String>)> = inner
            .conns
            .iter()
            .filter(|(_, c)| jid.is_none() || c.jid() == jid)
            .map(|(id, c)| (*id, c.jid().map(str::to_owned)))
            .collect();
        for (conn, jid) in &targets {
            inner.push_event(ServerEvent::Dropped { conn: *conn, jid: jid.clone() });
            inner.send(*conn, Outbound::Drop);
        }
        drop(inner);
        self.shared.changed.notify_waiters();
        targets.len()
    }

    /// While set, every login is answered `<failure reason=CODE/>` (401, 403 and 406 log the
    /// device out; 500 and 503 make it retry).
    pub fn refuse_logins(&self, reason: Option<u16>) {
        self.shared.lock().refuse = reason;
    }

    pub fn events(&self) -> Vec<ServerEvent> {
        self.shared.lock().events.clone()
    }

    /// Waits for an event matching `pred` (past or future).
    pub async fn wait_for_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&ServerEvent) -> bool,
    ) -> Result<ServerEvent, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            // Cloned first: `pred` may call back into the emulator.
            let events = self.shared.lock().events.clone();
            if let Some(e) = events.into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(EmulatorError::Timeout(format!(
                    "no such event within {timeout:?}; events: {:?}",
                    self.events()
                )));
            }
        }
    }

    /// Logged-in connections open now.
    pub fn online(&self) -> usize {
        self.shared.lock().conns.values().filter(|c| c.jid().is_some()).count()
    }

    /// Stops listening and drops every connection.
    pub fn shutdown(self) {}

    /// The phone of account `from` sends `text` to `to` (a phone number, or the PN or LID
    /// JID of an emulator account): Signal-encrypted for each of `to`'s companions, and copied
    /// to `from`'s own companions. Returns the message id.
    pub fn phone_send_text(&self, from: &str, to: &str, text: &str) -> Result<String, EmulatorError> {
        let message = wa::Message { conversation: Some(text.to_owned()), ..Default::default() };
        self.phone_send(from, to, &message)
    }

    /// Like [`Emulator::phone_send_text`], for any `Message`.
    pub fn phone_send(&self, from: &str, to: &str, message: &wa::Message) -> Result<String, EmulatorError> {
        let mut inner = self.shared.lock();
        let sender = inner.locate_text(from).ok_or_else(|| EmulatorError::NotFound(format!("no account {from}")))?;
        let target = inner.locate_text(to).ok_or_else(|| EmulatorError::NotFound(format!("no account {to}")))?;
        let id = inner.phone_send(sender, target, message, Fault::None)?;
        self.shared.save(&inner);
        Ok(id)
    }

    /// The phone of account `from` sends media to `to`, as a real phone does: encrypted with
    /// a fresh media key, the ciphertext stored on the blob host, and an image, video, audio
    /// (`ptt` for a voice note), document or sticker message carrying its url, direct path,
    /// key and hashes. Returns the message id.
    pub fn phone_send_media(&self, from: &str, to: &str, media: PhoneMedia) -> Result<String, EmulatorError> {
        {
            let inner = self.shared.lock();
            inner.locate_text(from).ok_or_else(|| EmulatorError::NotFound(format!("no account {from}")))?;
            inner.locate_text(to).ok_or_else(|| EmulatorError::NotFound(format!("no account {to}")))?;
        }
        let message = media::phone_message(&self.media, media, unix_now())?;
        self.phone_send(from, to, &message)
    }

    /// Fault injection: like [`Emulator::phone_send_text`], but the copies for `to` arrive
    /// corrupted. The companion cannot decrypt them and sends a retry receipt; the phone
    /// answers it with a fresh session and the message again ([`ServerEvent::PhoneResent`]).
    pub fn phone_send_text_garbled(&self, from: &str, to: &str, text: &str) -> Result<String, EmulatorError> {
        self.phone_send_faulty(from, to, text, Fault::Garbled)
    }

    /// Fault injection: like [`Emulator::phone_send_text_garbled`], but the phone keeps no copy,
    /// so the companion's retry receipt goes unanswered and the message never decrypts (as when
    /// the sender's phone lost it).
    pub fn phone_send_text_lost(&self, from: &str, to: &str, text: &str) -> Result<String, EmulatorError> {
        self.phone_send_faulty(from, to, text, Fault::Lost)
    }

    fn phone_send_faulty(&self, from: &str, to: &str, text: &str, fault: Fault) -> Result<String, EmulatorError> {
        let message = wa::Message { conversation: Some(text.to_owned()), ..Default::default() };
        let mut inner = self.shared.lock();
        let sender = inner.locate_text(from).ok_or_else(|| EmulatorError::NotFound(format!("no account {from}")))?;
        let target = inner.locate_text(to).ok_or_else(|| EmulatorError::NotFound(format!("no account {to}")))?;
        let id = inner.phone_send(sender, target, &message, fault)?;
        self.shared.save(&inner);
        Ok(id)
    }

    /// What the phone of `phone` received, decrypted, oldest first.
    pub fn phone_messages(&self, phone: &str) -> Vec<PhoneMessage> {
        let inner = self.shared.lock();
        inner.locate_text(phone).map(|a| inner.accounts[a].inbox.clone()).unwrap_or_default()
    }

    /// Receipts for what the phone of `phone` sent, oldest first.
    pub fn phone_receipts(&self, phone: &str) -> Vec<PhoneReceipt> {
        let inner = self.shared.lock();
        inner.locate_text(phone).map(|a| inner.accounts[a].receipts.clone()).unwrap_or_default()
    }

    /// Waits until the phone of `phone` has received a message matching `pred`.
    pub async fn wait_for_phone_message(
        &self,
        phone: &str,
        timeout: Duration,
        pred: impl Fn(&PhoneMessage) -> bool,
    ) -> Result<PhoneMessage, EmulatorError> {
        self.wait_until(timeout, "no such message for the phone", || {
            self.phone_messages(phone).into_iter().find(|m| pred(m))
        })
        .await
    }

    /// Waits until the phone of `phone` has a receipt matching `pred`.
    pub async fn wait_for_phone_receipt(
        &self,
        phone: &str,
        timeout: Duration,
        pred: impl Fn(&PhoneReceipt) -> bool,
    ) -> Result<PhoneReceipt, EmulatorError> {
        self.wait_until(timeout, "no such receipt for the phone", || {
            self.phone_receipts(phone).into_iter().find(|r| pred(r))
        })
        .await
    }

    async fn wait_until<T>(&self, timeout: Duration, what: &str, check: impl Fn() -> Option<T>) -> Result<T, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(found) = check() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check().ok_or_else(|| EmulatorError::Timeout(format!("{what} within {timeout:?}")));
            }
        }
    }

    /// The phone of `phone` reads the messages `ids` it received: read receipts go to
    /// their senders' companions.
    pub fn phone_mark_read(&self, phone: &str, ids: &[&str]) -> Result<(), EmulatorError> {
        let mut inner = self.shared.lock();
        let reader = inner.locate_text(phone).ok_or_else(|| EmulatorError::NotFound(format!("no account {phone}")))?;
        let messages: Vec<PhoneMessage> =
            inner.accounts[reader].inbox.iter().filter(|m| !m.from_me && ids.contains(&m.id.as_str())).cloned().collect();
        if messages.is_empty() {
            return Err(EmulatorError::NotFound("the phone received none of these messages".into()));
        }
        let from = Jid::pn(inner.accounts[reader].phone.as_str());
        for m in messages {
            let Some(sender) = inner.locate_text(&m.from) else { continue };
            let receipt = NodeBuilder::new("receipt")
                .attr("from", from.clone())
                .attr("id", m.id.clone())
                .attr("type", "read")
                .attr("t", unix_now().to_string())
                .build();
            for device in inner.accounts[sender].devices.iter().map(|d| d.device).collect::<Vec<_>>() {
                inner.deliver(sender, device, receipt.clone());
            }
        }
        self.shared.save(&inner);
        Ok(())
    }

    /// The phone of `phone` goes online or offline: its presence subscribers are told.
    pub fn phone_set_presence(&self, phone: &str, available: bool) -> Result<(), EmulatorError> {
        let mut inner = self.shared.lock();
        let a = inner.locate_text(phone).ok_or_else(|| EmulatorError::NotFound(format!("no account {phone}")))?;
        let phone = inner.accounts[a].phone.clone();
        inner.presence.insert(phone.clone(), available);
        let mut b = NodeBuilder::new("presence").attr("from", Jid::pn(phone.as_str()));
        if !available {
            b = b.attr("type", "unavailable").attr("last", unix_now().to_string());
        }
        let node = b.build();
        for conn in inner.subscriptions.get(&phone).map(|s| s.iter().copied().collect::<Vec<_>>()).unwrap_or_default() {
            inner.send(conn, Outbound::Node(node.clone()));
        }
        Ok(())
    }

    /// The phone of `phone` types (`composing`, `recording`) or stops (`paused`) in the chat
    /// with `to`: `<chatstate>` to `to`'s companions.
    pub fn phone_typing(&self, phone: &str, to: &str, state: &str) -> Result<(), EmulatorError> {
        let inner = self.shared.lock();
        let a = inner.locate_text(phone).ok_or_else(|| EmulatorError::NotFound(format!("no account {phone}")))?;
        let b = inner.locate_text(to).ok_or_else(|| EmulatorError::NotFound(format!("no account {to}")))?;
        let child = match state {
            "composing" => NodeBuilder::new("composing").build(),
            "recording" => NodeBuilder::new("composing").attr("media", "audio").build(),
            "paused" => NodeBuilder::new("paused").build(),
            other => return Err(EmulatorError::Invalid(format!("unknown chat state {other:?}"))),
        };
        let node = NodeBuilder::new("chatstate").attr("from", Jid::pn(inner.accounts[a].phone.as_str())).children([child]).build();
        for device in inner.accounts[b].devices.iter().map(|d| d.device).collect::<Vec<_>>() {
            let jid = Jid::pn_device(inner.accounts[b].phone.as_str(), device as u16).to_string();
            for conn in inner.conns_of(&jid) {
                inner.send(conn, Outbound::Node(node.clone()));
            }
        }
        Ok(())
    }

    /// One-time prekeys the server holds for a companion (`PHONE:D@s.whatsapp.net`), if it
    /// uploaded any.
    pub fn prekey_count(&self, device_jid: &str) -> Option<usize> {
        let inner = self.shared.lock();
        let (a, d) = device_jid.parse::<Jid>().ok().and_then(|j| inner.locate(&j))?;
        inner.accounts[a].companions.get(&d)?.keys.as_ref().map(|k| k.prekeys.len())
    }
}

pub(crate) struct Shared {
    config: EmulatorConfig,
    identity: ServerIdentity,
    inner: Mutex<Inner>,
    changed: Notify,
    next_id: AtomicU64,
}

struct Inner {
    server_key: Option<Vec<u8>>,
    accounts: Vec<AccountRecord>,
    conns: HashMap<u64, Conn>,
    /// Server-initiated IQs waiting for the companion's answer, by id.
    pending: HashMap<String, oneshot::Sender<Node>>,
    refuse: Option<u16>,
    events: Vec<ServerEvent>,
    /// Whether each account (by phone) said it is available.
    presence: HashMap<String, bool>,
    /// Connections subscribed to an account's presence, by the account's phone.
    subscriptions: HashMap<String, HashSet<u64>>,
    /// The blob host's storage.
    media: Arc<MediaStore>,
}

struct Conn {
    tx: ConnTx,
    kind: ConnKind,
}

impl Conn {
    fn jid(&self) -> Option<&str> {
        match &self.kind {
            ConnKind::LoggedIn { jid } => Some(jid),
            ConnKind::Registering(_) => None,
        }
    }
}

enum ConnKind {
    Registering(Box<Registration>),
    LoggedIn { jid: String },
}

struct Registration {
    noise_pub: [u8; 32],
    refs: Vec<String>,
    name: Option<String>,
    code: Option<CodeFlow>,
}

struct CodeFlow {
    hello: CompanionHello,
    primary: Option<PrimaryHello>,
    done: Option<oneshot::Sender<Result<Device, EmulatorError>>>,
}

impl Inner {
    fn account(&self, phone: &str) -> Option<&AccountRecord> {
        self.accounts.iter().find(|a| a.phone == phone)
    }

    fn new_account(&mut self, spec: &AccountSpec) -> Result<&AccountRecord, EmulatorError> {
        let record = AccountRecord::generate(spec, |p| self.account(p).is_some())
            .map_err(|e| EmulatorError::Invalid(format!("{e:#}")))?;
        self.accounts.push(record);
        Ok(self.accounts.last().expect("just pushed"))
    }

    fn online(&self, jid: &str) -> bool {
        self.conns.values().any(|c| c.jid() == Some(jid))
    }

    fn conns_of(&self, jid: &str) -> Vec<u64> {
        self.conns.iter().filter(|(_, c)| c.jid() == Some(jid)).map(|(id, _)| *id).collect()
    }

    fn remove_device(&mut self, jid: &str) -> Result<Device, EmulatorError> {
        for account in &mut self.accounts {
            if let Some(i) = account.devices.iter().position(|d| d.jid == jid) {
                let device = account.devices.remove(i);
                account.companions.remove(&device.device);
                return Ok(device);
            }
        }
        Err(EmulatorError::NotFound(format!("no linked device {jid}")))
    }

    /// The log keeps the latest [`MAX_EVENTS`], so a long-running emulator stays small.
    fn push_event(&mut self, event: ServerEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.drain(..MAX_EVENTS / 2);
        }
        self.events.push(event);
    }

    fn send(&self, conn: u64, out: Outbound) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(out);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> String {
        format!("emu.{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, conn: u64, out: Outbound) {
        self.lock().send(conn, out);
    }

    fn save(&self, inner: &Inner) {
        if let Some(dir) = &self.config.data_dir {
            let persisted = Persisted { server_key: inner.server_key.clone(), accounts: inner.accounts.clone() };
            if let Err(e) = persisted.save(dir) {
                tracing::error!("saving the emulator state: {e:#}");
            }
        }
    }

    fn drop_all(&self) {
        let inner = self.lock();
        for c in inner.conns.values() {
            let _ = c.tx.send(Outbound::Drop);
        }
    }

    fn event(&self, event: ServerEvent) {
        tracing::debug!(?event, "emulator");
        self.lock().push_event(event);
        self.changed.notify_waiters();
    }

    /// A handshake finished: a fresh companion gets QR refs, a paired one logs in (or not).
    fn on_established(
        self: &Arc<Self>,
        tx: ConnTx,
        payload: &wa::ClientPayload,
        client_static: [u8; 32],
        pattern: Pattern,
    ) -> u64 {
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        match payload.username {
            None => {
                let refs: Vec<String> = (0..self.config.qr_refs.max(1)).map(|_| random_ref()).collect();
                let name = payload
                    .device_pairing_data
                    .as_option()
                    .and_then(|d| d.device_props.as_deref())
                    .and_then(|p| {
                        use whatsapp_rust::buffa::Message as _;
                        wa::DeviceProps::decode_from_slice(p).ok()
                    })
                    .and_then(|p| p.os);
                let iq = NodeBuilder::new("iq")
                    .attr("from", SERVER)
                    .attr("type", "set")
                    .attr("id", self.next_id())
                    .attr("xmlns", "md")
                    .children([NodeBuilder::new("pair-device")
                        .children(refs.iter().map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build()))
                        .build()])
                    .build();
                let _ = tx.send(Outbound::Node(iq));
                let registration = Registration { noise_pub: client_static, refs, name, code: None };
                self.lock().conns.insert(conn, Conn { tx, kind: ConnKind::Registering(Box::new(registration)) });
                self.event(ServerEvent::Registration { conn });
            }
            Some(username) => {
                let phone_number = username.to_string();
                let device = payload.device.unwrap_or(0);
                let jid = format!("{phone_number}:{device}@s.whatsapp.net");
                let mut inner = self.lock();
                let known = inner
                    .account(&phone_number)
                    .and_then(|a| a.devices.iter().find(|d| d.device == device).map(|d| (a, d)));
                let refusal = match (inner.refuse, known) {
                    (Some(code), _) => Some(code),
                    (None, None) => Some(401),
                    (None, Some((_, d))) if d.noise_pub != client_static => Some(401),
                    _ => None,
                };
                if let Some(reason) = refusal {
                    let _ = tx.send(Outbound::CloseWith(
                        NodeBuilder::new("failure").attr("reason", reason.to_string()).attr("location", "emu").build(),
                    ));
                    drop(inner);
                    self.event(ServerEvent::LoginRefused { jid, reason });
                    return conn;
                }
                let lid = known.map(|(_, d)| d.lid.clone()).unwrap_or_default();
                for other in inner.conns_of(&jid) {
                    inner.send(other, Outbound::CloseWith(stream_error(None, Some("replaced"))));
                    inner.push_event(ServerEvent::Replaced { conn: other, jid: jid.clone() });
                }
                if let Some(d) = inner
                    .accounts
                    .iter_mut()
                    .find(|a| a.phone == phone_number)
                    .and_then(|a| a.devices.iter_mut().find(|d| d.device == device))
                {
                    d.logins += 1;
                }
                let mut success = NodeBuilder::new("success")
                    .attr("t", unix_now().to_string())
                    .attr("location", "emu")
                    .attr("creation", unix_now().to_string());
                if let Ok(lid) = lid.parse::<Jid>() {
                    success = success.attr("lid", lid);
                }
                let _ = tx.send(Outbound::Node(success.build()));
                inner.conns.insert(conn, Conn { tx, kind: ConnKind::LoggedIn { jid: jid.clone() } });
                let pattern = match pattern {
                    Pattern::Xx => "xx",
                    Pattern::Ik => "ik",
                    Pattern::XxFallback => "xxfallback",
                };
                inner.push_event(ServerEvent::LoggedIn { conn, jid, pattern: pattern.to_owned() });
                drop(inner);
                self.changed.notify_waiters();
            }
        }
        conn
    }

    fn on_closed(&self, conn: u64) {
        let removed = self.lock().conns.remove(&conn);
        if let Some(c) = removed {
            let jid = c.jid().map(str::to_owned);
            self.event(ServerEvent::Disconnected { conn, jid });
        }
    }

    /// A node from a connection. Never waits on the client (that would stall its reader).
    fn on_node(self: &Arc<Self>, conn: u64, node: Node) {
        match node.tag.as_ref() {
            "iq" => {}
            "message" => return self.on_client_message(conn, &node),
            "receipt" => return self.on_client_receipt(conn, &node),
            "presence" => return self.on_client_presence(conn, &node),
            "chatstate" => return self.on_client_chatstate(conn, &node),
            // Acks of what we delivered, and anything else: nothing to do.
            _ => return,
        }
        let mut attrs = node.attrs();
        let id = attrs.optional_string("id").map(|s| s.into_owned()).unwrap_or_default();
        let kind = attrs.optional_string("type").map(|s| s.into_owned()).unwrap_or_default();
        let xmlns = attrs.optional_string("xmlns").map(|s| s.into_owned()).unwrap_or_default();
        match kind.as_str() {
            "result" | "error" => {
                if let Some(waiter) = self.lock().pending.remove(&id) {
                    let _ = waiter.send(node);
                }
            }
            "get" | "set" => self.on_client_iq(conn, &id, &xmlns, &node),
            _ => {}
        }
    }

    fn on_client_iq(self: &Arc<Self>, conn: u64, id: &str, xmlns: &str, node: &Node) {
        let child = node.children().and_then(|c| c.first());
        let child_tag = child.map(|c| c.tag.as_ref()).unwrap_or("");
        match (xmlns, child_tag) {
            ("w:p", _) => self.send(conn, Outbound::Node(iq_result(id, None))),
            ("passive", tag) => {
                self.send(conn, Outbound::Node(iq_result(id, None)));
                if tag == "active" {
                    self.drain_offline(conn);
                }
            }
            ("w:sync:app:state", "sync") => {
                // Every requested collection exists. The phone's only data is the push name
                // in `critical_block`, once it has shared its key with the companion; the
                // rest is empty.
                let push_name = {
                    let inner = self.lock();
                    inner.conn_device(conn).and_then(|(a, d)| {
                        let account = &inner.accounts[a];
                        let shared = account.companions.get(&d).is_some_and(|c| c.key_shared);
                        shared.then(|| (account.app_state_key.clone(), account.push_name.clone()))
                    })
                };
                let collections = child
                    .and_then(|c| c.children())
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c.tag == "collection")
                    .filter_map(|c| {
                        let name = c.attrs.get("name").map(|n| n.as_str().into_owned())?;
                        let version = c.attrs.get("version").and_then(|v| v.as_str().parse::<u64>().ok()).unwrap_or(0);
                        Some((name, version))
                    })
                    .map(|(name, version)| {
                        let patch = match (&push_name, name.as_str(), version) {
                            (Some((key, push_name)), "critical_block", 0) => messaging::push_name_patch(key, push_name),
                            _ => None,
                        };
                        match patch {
                            Some(patch) => NodeBuilder::new("collection")
                                .attr("name", name)
                                .attr("version", "1")
                                .children([NodeBuilder::new("patches")
                                    .children([NodeBuilder::new("patch").bytes(patch).build()])
                                    .build()])
                                .build(),
                            None => NodeBuilder::new("collection").attr("name", name).attr("version", version.to_string()).build(),
                        }
                    });
                let sync = NodeBuilder::new("sync").children(collections).build();
                self.send(conn, Outbound::Node(iq_result(id, Some(sync))));
            }
            ("md", "remove-companion-device") => {
                let child = child.expect("matched on its tag");
                let jid = child.attrs.get("jid").map(|j| j.as_str().into_owned()).unwrap_or_default();
                let reason = child.attrs.get("reason").map(|j| j.as_str().into_owned()).unwrap_or_default();
                let removed = {
                    let mut inner = self.lock();
                    let removed = inner.remove_device(&jid);
                    if removed.is_ok() {
                        self.save(&inner);
                    }
                    removed
                };
                match removed {
                    Ok(_) => self.send(conn, Outbound::Node(iq_result(id, None))),
                    Err(_) => self.send(conn, Outbound::Node(iq_error(id, 404, "item-not-found"))),
                }
                self.event(ServerEvent::RemoveCompanionDevice { jid, reason });
            }
            ("md", "link_code_companion_reg") => {
                let child = child.expect("matched on its tag");
                let stage = child.attrs.get("stage").map(|s| s.as_str().into_owned()).unwrap_or_default();
                match stage.as_str() {
                    "companion_hello" => self.on_companion_hello(conn, id, child),
                    "companion_finish" => {
                        let this = self.clone();
                        let (id, child) = (id.to_owned(), child.clone());
                        tokio::spawn(async move { this.on_companion_finish(conn, &id, &child).await });
                    }
                    _ => self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request"))),
                }
            }
            _ => match self.on_messaging_iq(conn, id, xmlns, node) {
                Some(answer) => self.send(conn, Outbound::Node(answer)),
                None => self.send(conn, Outbound::Node(iq_error(id, 501, "feature-not-implemented"))),
            },
        }
    }

    fn on_companion_hello(&self, conn: u64, id: &str, reg: &Node) {
        let jid = reg.attrs.get("jid").map(|j| j.as_str().into_owned()).unwrap_or_default();
        let phone_number = jid.split(['@', ':']).next().unwrap_or_default().to_owned();
        let bytes = |tag: &str| child_bytes(reg, tag);
        let (Some(wrapped), Some(noise_pub)) =
            (bytes("link_code_pairing_wrapped_companion_ephemeral_pub"), bytes("companion_server_auth_key_pub"))
        else {
            self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request")));
            return;
        };
        if wrapped.len() != 80 || phone_number.is_empty() {
            self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request")));
            return;
        }
        let pairing_ref = random_ref();
        let hello = CompanionHello {
            phone: phone_number.clone(),
            wrapped_ephemeral: wrapped,
            noise_pub,
            platform_display: bytes("companion_platform_display").and_then(|b| String::from_utf8(b).ok()),
            pairing_ref: pairing_ref.clone(),
        };
        {
            let mut inner = self.lock();
            let Some(ConnKind::Registering(r)) = inner.conns.get_mut(&conn).map(|c| &mut c.kind) else {
                drop(inner);
                self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request")));
                return;
            };
            if r.name.is_none() {
                r.name.clone_from(&hello.platform_display);
            }
            r.code = Some(CodeFlow { hello, primary: None, done: None });
        }
        let answer = NodeBuilder::new("link_code_companion_reg")
            .children([NodeBuilder::new("link_code_pairing_ref").bytes(pairing_ref.into_bytes()).build()])
            .build();
        self.send(conn, Outbound::Node(iq_result(id, Some(answer))));
        self.event(ServerEvent::PairingCodeRequested { conn, phone: phone_number });
    }

    async fn on_companion_finish(self: Arc<Self>, conn: u64, id: &str, reg: &Node) {
        let bytes = |tag: &str| child_bytes(reg, tag);
        let taken = {
            let mut inner = self.lock();
            let phone = match inner.conns.get(&conn).map(|c| &c.kind) {
                Some(ConnKind::Registering(r)) => r.code.as_ref().map(|f| f.hello.phone.clone()),
                _ => None,
            };
            let key = phone.as_deref().and_then(|p| inner.account(p)).and_then(|a| a.identity().ok());
            match (phone, key, inner.conns.get_mut(&conn).map(|c| &mut c.kind)) {
                (Some(phone), Some(key), Some(ConnKind::Registering(r))) => {
                    let name = r.name.clone();
                    r.code.as_mut().and_then(|f| f.primary.take().map(|p| (phone, key, p, f.done.take(), name)))
                }
                _ => None,
            }
        };
        let Some((phone_number, account_key, primary, done, name)) = taken else {
            self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request")));
            return;
        };
        let finished = match (bytes("link_code_pairing_wrapped_key_bundle"), bytes("companion_identity_public")) {
            (Some(bundle), Some(identity)) => phone::companion_finish(&primary, &account_key, &bundle, &identity),
            _ => Err(anyhow::anyhow!("companion_finish without a key bundle or identity")),
        };
        let result = match finished {
            Ok(finish) => {
                self.send(conn, Outbound::Node(iq_result(id, None)));
                self.clone()
                    .complete_pairing(conn, &phone_number, finish.companion_identity, finish.adv_secret, name, "code")
                    .await
            }
            Err(e) => {
                self.send(conn, Outbound::Node(iq_error(id, 400, "bad-request")));
                Err(EmulatorError::Rejected(format!("pairing by code failed: {e:#}")))
            }
        };
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }

    /// Sends the pair-success for a new device of `phone_number`, waits for the companion's
    /// pair-device-sign, records the device and schedules the `515` restart.
    async fn complete_pairing(
        self: Arc<Self>,
        conn: u64,
        phone_number: &str,
        companion_identity: [u8; 32],
        adv_secret: [u8; 32],
        name: Option<String>,
        via: &str,
    ) -> Result<Device, EmulatorError> {
        let (iq_id, node, device, answer) = {
            let mut inner = self.lock();
            let noise_pub = match inner.conns.get(&conn).map(|c| &c.kind) {
                Some(ConnKind::Registering(r)) => r.noise_pub,
                _ => return Err(EmulatorError::NotFound("the companion went away".into())),
            };
            let account = inner
                .accounts
                .iter_mut()
                .find(|a| a.phone == phone_number)
                .ok_or_else(|| EmulatorError::NotFound(format!("no account {phone_number}")))?;
            let key = account.identity().map_err(|e| EmulatorError::Rejected(e.to_string()))?;
            let (device_id, key_index) = (account.next_device, account.next_key_index);
            account.next_device += 1;
            account.next_key_index += 1;
            let now = unix_now();
            let identity = phone::signed_device_identity(&key, &companion_identity, &adv_secret, 1, key_index, now)
                .map_err(|e| EmulatorError::Rejected(e.to_string()))?;
            let device = Device {
                jid: format!("{}:{device_id}@s.whatsapp.net", account.phone),
                lid: format!("{}:{device_id}@lid", account.lid_user),
                phone: account.phone.clone(),
                device: device_id,
                name,
                linked_at: now,
                logins: 0,
                online: false,
                noise_pub: noise_pub.to_vec(),
                identity_pub: companion_identity.to_vec(),
            };
            let jid: Jid = device.jid.parse().map_err(|e| EmulatorError::Rejected(format!("{e}")))?;
            let lid: Jid = device.lid.parse().map_err(|e| EmulatorError::Rejected(format!("{e}")))?;
            let mut success = vec![
                NodeBuilder::new("device-identity").bytes(identity).build(),
                NodeBuilder::new("device").attr("jid", jid).attr("lid", lid).build(),
                NodeBuilder::new("platform").attr("name", account.platform.clone()).build(),
            ];
            // Business accounts only, as WhatsApp does; other companions learn the push name
            // from the phone (app state), and the phone shares its app-state key at once.
            if account.business {
                success.push(NodeBuilder::new("biz").attr("name", account.push_name.clone()).build());
            }
            let iq_id = self.next_id();
            let node = NodeBuilder::new("iq")
                .attr("from", SERVER)
                .attr("type", "set")
                .attr("id", iq_id.clone())
                .attr("xmlns", "md")
                .attr("t", now.to_string())
                .children([NodeBuilder::new("pair-success").children(success).build()])
                .build();
            let (answer_tx, answer_rx) = oneshot::channel();
            inner.pending.insert(iq_id.clone(), answer_tx);
            (iq_id, node, device, (answer_rx, key, key_index))
        };
        let (answer, account_key, key_index) = answer;
        self.send(conn, Outbound::Node(node));
        let answer = match tokio::time::timeout(PAIR_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(EmulatorError::Rejected("the companion went away".into())),
            Err(_) => {
                self.lock().pending.remove(&iq_id);
                return Err(EmulatorError::Timeout("the companion did not answer the pair-success".into()));
            }
        };
        let signed = answer.get_optional_child_by_tag(&["pair-device-sign", "device-identity"]);
        if signed.is_none() || answer.attrs.get("type").is_some_and(|t| t.as_str() == "error") {
            let error = answer
                .get_optional_child("error")
                .map(|e| {
                    let code = e.attrs.get("code").map(|c| c.as_str().into_owned()).unwrap_or_default();
                    let text = e.attrs.get("text").map(|c| c.as_str().into_owned()).unwrap_or_default();
                    format!("{code} {text}")
                })
                .unwrap_or_else(|| "no pair-device-sign".into());
            return Err(EmulatorError::Rejected(format!("the companion refused the pair-success: {error}")));
        }
        // The companion's own signature over its identity, checked as every peer will check it.
        let signed = signed.expect("checked above");
        let device_identity = messaging::bytes_of(signed).unwrap_or_default().to_vec();
        let answered_index = signed.attrs.get("key-index").and_then(|k| k.as_str().parse::<u32>().ok());
        if let Err(e) = phone::verify_device_signature(&device_identity, &companion_identity, &account_key, key_index)
            .and_then(|()| {
                anyhow::ensure!(answered_index == Some(key_index), "key-index {answered_index:?}, expected {key_index}");
                Ok(())
            })
        {
            self.send(conn, Outbound::CloseWith(stream_error(Some("401"), None)));
            return Err(EmulatorError::Rejected(format!("the companion's pair-device-sign does not verify: {e:#}")));
        }
        {
            let mut inner = self.lock();
            if let Some(account) = inner.accounts.iter_mut().find(|a| a.phone == phone_number) {
                account.devices.push(device.clone());
                account.companions.insert(
                    device.device,
                    state::CompanionState { key_index, device_identity, ..Default::default() },
                );
            }
            if let Some(Conn { kind: ConnKind::Registering(r), .. }) = inner.conns.get_mut(&conn) {
                // Paired: this connection's QR codes are spent.
                r.refs.clear();
                r.code = None;
            }
            self.save(&inner);
        }
        self.event(ServerEvent::Paired { jid: device.jid.clone(), via: via.to_owned() });
        let this = self.clone();
        let delay = self.config.restart_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.send(conn, Outbound::CloseWith(stream_error(Some("515"), None)));
        });
        Ok(device)
    }
}

/// The byte content of `node`'s child `tag`.
fn child_bytes(node: &Node, tag: &str) -> Option<Vec<u8>> {
    match &node.get_optional_child(tag)?.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        _ => None,
    }
}

fn iq_result(id: &str, child: Option<Node>) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id.to_owned())
        .children(child)
        .build()
}

fn iq_error(id: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id.to_owned())
        .children([NodeBuilder::new("error").attr("code", code.to_string()).attr("text", text.to_owned()).build()])
        .build()
}

/// `<stream:error code=…><conflict type=…/></stream:error>`
fn stream_error(code: Option<&str>, conflict: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("stream:error");
    if let Some(code) = code {
        b = b.attr("code", code.to_owned());
    }
    b.children(conflict.map(|t| NodeBuilder::new("conflict").attr("type", t.to_owned()).build())).build()
}

fn random_ref() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill(&mut bytes);
    format!("2@{}", BASE64_URL_SAFE_NO_PAD.encode(bytes))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
