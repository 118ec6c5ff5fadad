//! Test helpers of the supervisor: fake engines and session rows in a fresh SQLite store
//! (the generic ones are `wagate_engine::testing`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use wagate_core::{EngineKind, InstanceId, NewSession, OrgId, Session, SessionId, SessionStatus};
use wagate_engine::{Engine, EngineError, EngineSession, SessionOutput, SessionSpec};
use wagate_store::prelude::*;

/// A fresh SQLite store in a temporary directory, which must outlive the store.
pub async fn test_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = wagate_store::connect(&format!("sqlite://{}", dir.path().join("wagate.db").display()))
        .await
        .expect("sqlite store");
    (store, dir)
}

pub async fn new_session(store: &Arc<dyn Store>, engine: EngineKind, desired_running: bool) -> Session {
    let new = NewSession {
        id: SessionId::generate(),
        org: OrgId::parse("acme").unwrap(),
        instance_id: InstanceId::generate(),
        name: None,
        engine,
        status: SessionStatus::Stopped,
        desired_running,
        device_name: None,
        created_at: wagate_core::now(),
    };
    store.insert_session(&new).await.expect("insert session")
}

pub async fn row(store: &Arc<dyn Store>, id: &SessionId) -> Session {
    store.get_session_unscoped(id).await.unwrap().expect("session row")
}

/// A fake engine (of any kind) whose starts take `start_delay` and are counted, with the most
/// starts ever in flight at once; its sessions count their stops and offer no ability (a pairing
/// code request is `Unsupported`).
pub struct CountingEngine {
    pub kind: EngineKind,
    pub start_delay: Duration,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub starts: AtomicUsize,
    pub purges: AtomicUsize,
    pub sessions: Mutex<Vec<Arc<FakeSession>>>,
    /// Every spec a start was given, in order.
    pub specs: Mutex<Vec<SessionSpec>>,
}

impl CountingEngine {
    pub fn new(kind: EngineKind, start_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            kind,
            start_delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            starts: AtomicUsize::new(0),
            purges: AtomicUsize::new(0),
            sessions: Mutex::default(),
            specs: Mutex::default(),
        })
    }
}

#[derive(Default)]
pub struct FakeSession {
    pub stops: AtomicUsize,
    pub logouts: AtomicUsize,
}

#[async_trait]
impl EngineSession for FakeSession {
    async fn logout(&self) -> Result<(), EngineError> {
        self.logouts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn stop(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[async_trait]
impl Engine for CountingEngine {
    fn kind(&self) -> EngineKind {
        self.kind
    }

    async fn start(&self, spec: SessionSpec, _output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError> {
        self.specs.lock().unwrap().push(spec);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.start_delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.starts.fetch_add(1, Ordering::SeqCst);
        let session = Arc::new(FakeSession::default());
        self.sessions.lock().unwrap().push(Arc::clone(&session));
        Ok(session)
    }

    async fn purge(&self, _id: &SessionId) -> Result<(), EngineError> {
        self.purges.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Wraps an engine and counts its purges.
pub struct PurgeCounting<E> {
    pub inner: E,
    pub purges: AtomicUsize,
}

impl<E> PurgeCounting<E> {
    pub fn new(inner: E) -> Arc<Self> {
        Arc::new(Self { inner, purges: AtomicUsize::new(0) })
    }

    pub fn purges(&self) -> usize {
        self.purges.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<E: Engine> Engine for PurgeCounting<E> {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    async fn start(&self, spec: SessionSpec, output: SessionOutput) -> Result<Arc<dyn EngineSession>, EngineError> {
        self.inner.start(spec, output).await
    }

    async fn purge(&self, id: &SessionId) -> Result<(), EngineError> {
        self.purges.fetch_add(1, Ordering::SeqCst);
        self.inner.purge(id).await
    }
}
