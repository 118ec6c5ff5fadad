//! [`WhatsappEngine`]: the `whatsapp` kind of [`Engine`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use wagate_core::{EngineKind, SessionId};
use wagate_engine::{Engine, EngineError, EngineSession, SessionOutput, SessionSpec};
use whatsapp_rust::bot::Bot;
use whatsapp_rust::store::{SqliteStore, SqliteStoreConfig};
use whatsapp_rust::wacore::store::DevicePropsOverride;

use crate::config::WhatsappConfig;
use crate::lane::{LIFECYCLE_CAPACITY, lifecycle_lane};
use crate::session::{Parts, WhatsappSession};
use crate::traffic::{InboundHook, TrafficOut, receipt_path};
use crate::transport::{GatedFactory, TransportSlot};

/// The page cache of each session's key store (it has one connection), in KiB. whatsapp-rust's
/// default is 512 KiB, paid by every connected session once traffic has filled it; the working
/// set of a key store (the Signal sessions and identities of recent peers, the prekeys still
/// unused, app-state keys) is a fraction of that. Measured in docs/PERFORMANCE.md (issue 10).
const KEY_STORE_CACHE_KIB: u32 = 128;

/// Runs sessions on the real WhatsApp Web multi-device protocol (`whatsapp-rust` 0.7.0).
///
/// One client per session, each with its own SQLite key store under
/// `data_dir/whatsapp/<session_id>.db`. All sessions share one cap on concurrent
/// connection attempts ([`WhatsappConfig::max_concurrent_connects`]).
pub struct WhatsappEngine {
    cfg: Arc<WhatsappConfig>,
    gate: Arc<Semaphore>,
}

impl WhatsappEngine {
    pub fn new(cfg: WhatsappConfig) -> Self {
        #[cfg(feature = "test-media-seam")]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| tracing::warn!("{}", crate::media_seam::ANNOUNCEMENT));
        }
        let gate = Arc::new(Semaphore::new(cfg.max_concurrent_connects.max(1)));
        Self { cfg: Arc::new(cfg), gate }
    }

    pub fn config(&self) -> &WhatsappConfig {
        &self.cfg
    }

    /// The files a session's store may consist of.
    fn store_files(&self, id: &SessionId) -> Vec<PathBuf> {
        let db = self.cfg.store_path(id.as_str());
        let mut files = vec![db.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        files
    }
}

/// The linked-device name for a session: its own when set (and not blank), else the
/// gateway-wide [`WhatsappConfig::device_name`].
fn device_name<'a>(cfg: &'a WhatsappConfig, spec: &'a SessionSpec) -> &'a str {
    spec.device_name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or(&cfg.device_name)
}

impl std::fmt::Debug for WhatsappEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsappEngine").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

#[async_trait]
impl Engine for WhatsappEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Whatsapp
    }

    async fn start(&self, spec: SessionSpec, output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError> {
        let path = self.cfg.store_path(spec.id.as_str());
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| EngineError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let url = path_url(&path)?;
        let store_config = SqliteStoreConfig { cache_size_kib: KEY_STORE_CACHE_KIB, ..SqliteStoreConfig::default() };
        let store = SqliteStore::with_config(&url, store_config)
            .await
            .map_err(|e| EngineError::Internal(format!("cannot open the key store {}: {e}", path.display())))?;

        let slot = Arc::new(TransportSlot::default());
        let factory = GatedFactory::new(self.cfg.ws_url.as_deref(), self.cfg.connect_timeout, Arc::clone(&slot));
        let (forwarder, lane) = lifecycle_lane(spec.id.clone(), LIFECYCLE_CAPACITY);
        let traffic = TrafficOut::new(spec.id.clone(), output.traffic);
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(factory)
            .with_device_props(DevicePropsOverride::new().with_os(device_name(&self.cfg, &spec).to_owned()))
            .with_event_handler(forwarder)
            // Traffic on a path of its own: messages are stored before the crate acknowledges
            // them; receipts follow as events (see `traffic.rs`).
            .with_inbound_durability_hook(InboundHook::new(Arc::clone(&traffic), &self.cfg))
            .with_event_handler(receipt_path(traffic))
            // The gateway does not keep chat history; acknowledge it without downloading.
            .skip_history_sync();
        if let Some(version) = self.cfg.version {
            builder = builder.with_version(version);
        }
        #[cfg(feature = "test-media-seam")]
        {
            builder = builder.with_http_client(crate::media_seam::LoopbackPlainHttp::new());
        }
        let bot = builder
            .build()
            .await
            .map_err(|e| EngineError::Internal(format!("cannot build the WhatsApp client: {e}")))?;

        let session = WhatsappSession::spawn(Parts {
            id: spec.id,
            cfg: Arc::clone(&self.cfg),
            sink: output.events,
            gate: Arc::clone(&self.gate),
            slot,
            bot,
            events: lane,
            identity: spec.identity,
        });
        Ok(session)
    }

    async fn purge(&self, id: &SessionId) -> Result<(), EngineError> {
        for file in self.store_files(id) {
            match tokio::fs::remove_file(&file).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::Internal(format!("cannot delete {}: {e}", file.display()))),
            }
        }
        Ok(())
    }
}

fn path_url(path: &Path) -> Result<String, EngineError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| EngineError::Internal(format!("data directory path is not UTF-8: {}", path.display())))
}

#[cfg(test)]
mod tests {
    use wagate_core::OrgId;

    use super::*;

    fn spec(device_name: Option<&str>) -> SessionSpec {
        SessionSpec {
            id: SessionId::generate(),
            org: OrgId::parse("acme").unwrap(),
            identity: None,
            device_name: device_name.map(str::to_owned),
        }
    }

    #[test]
    fn the_session_device_name_overrides_the_default() {
        let mut cfg = WhatsappConfig::new("/nonexistent");
        cfg.device_name = "Gateway".to_owned();
        assert_eq!(device_name(&cfg, &spec(None)), "Gateway");
        assert_eq!(device_name(&cfg, &spec(Some("Front desk"))), "Front desk");
        assert_eq!(device_name(&cfg, &spec(Some("  "))), "Gateway", "a blank name falls back");
    }
}
