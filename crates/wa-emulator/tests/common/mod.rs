//! What the tests of the real client against the emulator share: a paired companion client
//! that records its events, and its HTTP seam for media.
//!
//! The client always builds `https://{host}…` media URLs. Its HTTP here goes through
//! [`PlainMediaHttp`], which sends those for the emulator's blob host to `http://` instead:
//! a seam for tests only.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use wa_emulator::{AccountSpec, Emulator, EmulatorConfig};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse, UreqHttpClient};
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::net::{StreamingHttpResponse, UploadBody};
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};

/// The client's HTTP, with `https://{media_host}` sent to `http://{media_host}`.
struct PlainMediaHttp {
    inner: UreqHttpClient,
    media_host: String,
}

impl PlainMediaHttp {
    fn rewrite(&self, mut request: HttpRequest) -> HttpRequest {
        if let Some(rest) = request.url.strip_prefix(&format!("https://{}", self.media_host))
            && (rest.is_empty() || rest.starts_with(['/', '?']))
        {
            request.url = format!("http://{}{rest}", self.media_host);
        }
        request
    }
}

#[whatsapp_rust::async_trait]
impl HttpClient for PlainMediaHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        self.inner.execute(self.rewrite(request)).await
    }

    fn supports_streaming(&self) -> bool {
        self.inner.supports_streaming()
    }

    fn execute_streaming(&self, request: HttpRequest) -> anyhow::Result<StreamingHttpResponse> {
        self.inner.execute_streaming(self.rewrite(request))
    }

    fn supports_upload_streaming(&self) -> bool {
        self.inner.supports_upload_streaming()
    }

    fn execute_upload(&self, request: HttpRequest, body: UploadBody, content_length: u64) -> anyhow::Result<HttpResponse> {
        self.inner.execute_upload(self.rewrite(request), body, content_length)
    }
}

/// A WhatsApp Web version, so the client makes no online lookup.
pub const VERSION: (u32, u32, u32) = (2, 3000, 1_023_000_000);

/// Generous: the box is a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Companion {
    pub client: Arc<Client>,
    pub events: Arc<Mutex<Vec<Arc<Event>>>>,
    changed: Arc<Notify>,
    handle: Option<BotHandle>,
}

impl Drop for Companion {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

impl Companion {
    pub async fn start(emulator: &Emulator, dir: &Path) -> Self {
        let store = SqliteStore::new(dir.join("client.db").to_str().unwrap()).await.unwrap();
        let events: Arc<Mutex<Vec<Arc<Event>>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (sink, notify) = (events.clone(), changed.clone());
        let bot = Bot::builder()
            .with_backend(store)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(emulator.ws_url()))
            .with_http_client(PlainMediaHttp { inner: UreqHttpClient::new(), media_host: emulator.media_host() })
            .with_version(VERSION)
            .skip_history_sync()
            .on_event(move |event, _client| {
                let (sink, notify) = (sink.clone(), notify.clone());
                async move {
                    sink.lock().unwrap().push(event);
                    notify.notify_waiters();
                }
            })
            .build()
            .await
            .unwrap();
        let client = bot.client();
        Self { client, events, changed, handle: Some(bot.spawn()) }
    }

    /// Pairs a fresh client with the account `phone` (created if new) and waits for `Connected`.
    pub async fn paired(emulator: &Emulator, dir: &Path, phone: &str, name: &str) -> Self {
        let c = Self::start(emulator, dir).await;
        let qr = c
            .wait("a QR code", |e| match e {
                Event::PairingQrCode(q) => Some(q.code.clone()),
                _ => None,
            })
            .await;
        let spec = AccountSpec { phone: Some(phone.into()), push_name: Some(name.into()), ..Default::default() };
        emulator.scan_qr(&qr, spec).await.expect("paired");
        c.wait("Connected", |e| matches!(e, Event::Connected(_)).then_some(())).await;
        // Delivery receipts of type "delivery" (not "inactive") without a push name.
        c.client.set_force_active_delivery_receipts(true);
        c
    }

    /// The first event (past or future) for which `f` says something.
    pub async fn wait<T>(&self, what: &str, f: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            let found = self.events.lock().unwrap().iter().find_map(|e| f(e));
            if let Some(found) = found {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no {what} within {PATIENCE:?}");
            }
        }
    }

    /// The text of a received message with id `id`.
    pub async fn received_text(&self, id: &str) -> (String, Jid) {
        self.wait(&format!("message {id}"), |e| {
            e.messages().find(|m| m.info.id == id).map(|m| {
                let text = m.message.conversation.clone().or_else(|| {
                    m.message.extended_text_message.as_option().and_then(|x| x.text.clone())
                });
                (text.unwrap_or_default(), m.info.source.sender.clone())
            })
        })
        .await
    }

    /// A received message with id `id`.
    pub async fn received(&self, id: &str) -> Arc<wa::Message> {
        self.wait(&format!("message {id}"), |e| e.messages().find(|m| m.info.id == id).map(|m| m.message.clone())).await
    }

    /// Disconnects gracefully (the device stays linked).
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    pub async fn receipt(&self, id: &str, kind: ReceiptType) {
        self.wait(&format!("a {kind:?} receipt for {id}"), |e| match e {
            Event::Receipt(r) if r.r#type == kind && r.message_ids.iter().any(|m| m.as_str() == id) => Some(()),
            _ => None,
        })
        .await;
    }
}

/// An emulator with `config`, its logs in the test's output (`RUST_LOG`).
pub async fn emulator_with(config: EmulatorConfig) -> Emulator {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Emulator::start(config).await.unwrap()
}

/// An emulator with the default configuration.
pub async fn emulator() -> Emulator {
    emulator_with(EmulatorConfig::default()).await
}
