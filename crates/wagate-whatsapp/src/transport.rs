//! A thin wrapper around the crate's WebSocket transport factory: it bounds the dial with
//! the configured timeout, remembers why the last dial failed (the crate only logs it), and
//! keeps a handle on the live transport so a stalled handshake can be cut short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use whatsapp_rust::async_channel::Receiver;
use whatsapp_rust::transport::{TokioWebSocketTransportFactory, Transport, TransportEvent, TransportFactory};

/// What one session's factory shares with its session loop.
#[derive(Default)]
pub(crate) struct TransportSlot {
    current: Mutex<Option<Arc<dyn Transport>>>,
    last_error: Mutex<Option<String>>,
}

impl TransportSlot {
    /// Forgets the previous attempt.
    pub fn reset(&self) {
        *lock(&self.current) = None;
        *lock(&self.last_error) = None;
    }

    /// Why the last dial failed, if it did (consumed).
    pub fn take_error(&self) -> Option<String> {
        lock(&self.last_error).take()
    }

    /// Closes the live transport, if any: a handshake waiting on it fails at once.
    pub async fn close(&self) {
        let current = lock(&self.current).take();
        if let Some(t) = current {
            t.disconnect().await;
        }
    }
}

pub(crate) struct GatedFactory {
    inner: TokioWebSocketTransportFactory,
    timeout: Duration,
    slot: Arc<TransportSlot>,
}

impl GatedFactory {
    pub fn new(url: Option<&str>, timeout: Duration, slot: Arc<TransportSlot>) -> Self {
        let inner = match url {
            Some(url) => TokioWebSocketTransportFactory::new().with_url(url),
            None => TokioWebSocketTransportFactory::new(),
        };
        Self { inner, timeout, slot }
    }
}

#[async_trait]
impl TransportFactory for GatedFactory {
    async fn create_transport(&self) -> Result<(Arc<dyn Transport>, Receiver<TransportEvent>), anyhow::Error> {
        match tokio::time::timeout(self.timeout, self.inner.create_transport()).await {
            Ok(Ok((transport, events))) => {
                *lock(&self.slot.current) = Some(Arc::clone(&transport));
                Ok((transport, events))
            }
            Ok(Err(e)) => {
                *lock(&self.slot.last_error) = Some(format!("{e:#}"));
                Err(e)
            }
            Err(_) => {
                let msg = format!("WebSocket connect timed out after {}s", self.timeout.as_secs_f32());
                *lock(&self.slot.last_error) = Some(msg.clone());
                Err(anyhow::anyhow!(msg))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
