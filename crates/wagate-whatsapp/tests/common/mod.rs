//! Shared helpers of the integration tests: a recording sink, local servers that misbehave
//! in chosen ways, and engine settings with small timeouts.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use wagate_core::{OrgId, SessionId};
use wagate_engine::{EngineEvent, EventSink, SessionSpec};
use wagate_whatsapp::{Backoff, WhatsappConfig};

/// A WhatsApp Web version, so the client makes no online lookup.
pub const VERSION: (u32, u32, u32) = (2, 3000, 1_023_000_000);

/// Generous: the box is a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RecordingSink {
    events: Mutex<Vec<(SessionId, EngineEvent)>>,
    changed: Notify,
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn emit(&self, session: &SessionId, event: EngineEvent) {
        self.events.lock().unwrap().push((session.clone(), event));
        self.changed.notify_waiters();
    }
}

impl RecordingSink {
    pub fn events(&self) -> Vec<EngineEvent> {
        self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    pub fn events_of(&self, id: &SessionId) -> Vec<EngineEvent> {
        self.events.lock().unwrap().iter().filter(|(s, _)| s == id).map(|(_, e)| e.clone()).collect()
    }

    /// Waits until `pred` holds over the events so far; panics after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, what: &str, pred: impl Fn(&[EngineEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.events()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; events so far: {:#?}", self.events());
            }
        }
    }
}

/// `(attempt, retry_in, reason)` of every `Reconnecting`.
pub fn reconnects(events: &[EngineEvent]) -> Vec<(u32, Duration, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Reconnecting { reason, attempt, retry_in } => Some((*attempt, *retry_in, reason.clone())),
            _ => None,
        })
        .collect()
}

pub fn config(dir: &std::path::Path, addr: SocketAddr) -> WhatsappConfig {
    let mut cfg = WhatsappConfig::new(dir);
    cfg.ws_url = Some(format!("ws://{addr}/ws/chat"));
    cfg.version = Some(VERSION);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), jitter: 0.1 };
    cfg.logout_timeout = Duration::from_secs(3);
    cfg.pairing_code_timeout = Duration::from_secs(3);
    cfg
}

pub fn spec() -> SessionSpec {
    SessionSpec { id: SessionId::generate(), org: OrgId::parse("acme").unwrap(), identity: None, device_name: None }
}

/// A local port nobody listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// How a [`Server`] treats each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Accepts TCP and closes at once, before the WebSocket upgrade.
    CloseTcp,
    /// Completes the WebSocket upgrade, then closes.
    CloseAfterUpgrade,
    /// Reads the client's first message, then drops the connection.
    DropAfterFirstFrame,
    /// Accepts TCP and never answers (the upgrade stalls).
    StallTcp,
    /// Completes the upgrade, then never answers (the Noise handshake stalls).
    StallAfterUpgrade,
}

/// When a connection was accepted, and when the server saw it end.
pub type Lifetime = (Instant, Option<Instant>);

pub struct Server {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// When each connection was accepted and when the server saw it end.
    pub lifetimes: Arc<Mutex<Vec<Lifetime>>>,
    /// Bytes of the first binary messages of each connection.
    pub first_messages: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let lifetimes = Arc::new(Mutex::new(Vec::new()));
        let first_messages = Arc::new(Mutex::new(Vec::new()));
        let (a, l, f) = (accepted.clone(), lifetimes.clone(), first_messages.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let index = {
                    let mut l = l.lock().unwrap();
                    l.push((Instant::now(), None));
                    l.len() - 1
                };
                let (l, f) = (l.clone(), f.clone());
                tokio::spawn(async move {
                    serve(stream, behaviour, f).await;
                    l.lock().unwrap()[index].1 = Some(Instant::now());
                });
            }
        });
        Self { addr, accepted, lifetimes, first_messages, task }
    }
}

impl Server {
    /// Most connections open at one time. The server sees a hang-up a little after the
    /// client made it, so each connection's end is taken `slack` earlier than observed.
    pub fn max_concurrent(&self, slack: Duration) -> usize {
        let l = self.lifetimes.lock().unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let spans: Vec<(Instant, Instant)> =
            l.iter().map(|(s, e)| (*s, e.map_or(far, |e| e.checked_sub(slack).unwrap_or(e).max(*s)))).collect();
        spans.iter().map(|(s, _)| spans.iter().filter(|(s2, e2)| s2 <= s && e2 > s).count()).max().unwrap_or(0)
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, first: Arc<Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::AsyncReadExt;
    match behaviour {
        Behaviour::CloseTcp => drop(stream),
        Behaviour::StallTcp => {
            // Hold the socket until the client gives up (EOF or error).
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Behaviour::CloseAfterUpgrade | Behaviour::DropAfterFirstFrame | Behaviour::StallAfterUpgrade => {
            let Ok((_req, mut ws)) = tokio_websockets::ServerBuilder::new().accept(stream).await else { return };
            match behaviour {
                Behaviour::CloseAfterUpgrade => {
                    let _ = futures::SinkExt::close(&mut ws).await;
                }
                Behaviour::DropAfterFirstFrame => {
                    if let Some(Ok(msg)) = ws.next().await {
                        first.lock().unwrap().push(msg.as_payload().to_vec());
                    }
                    drop(ws);
                }
                _ => {
                    // Record what arrives, answer nothing, until the client hangs up.
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_binary() {
                            first.lock().unwrap().push(msg.as_payload().to_vec());
                        }
                    }
                }
            }
        }
    }
}
