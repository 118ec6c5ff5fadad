//! The session supervisor: owns every running session, drives the engines and turns their
//! events into session status in the store.
//!
//! Locking, from outermost to innermost:
//! - a per-session *lifecycle* lock (`tokio::sync::Mutex`) serialises start, stop, restart,
//!   logout and delete of one session;
//! - a per-run *state* lock (`tokio::sync::Mutex`) serialises the application of that run's
//!   events with its store writes, so the store sees them in order;
//! - plain `std` mutexes around the maps, never held across an `.await`.
//!
//! `emit` never waits for a lifecycle lock nor for an engine session's `stop()`: when an event
//! ends a session (QR codes exhausted, logged out, replaced, failed), the engine session is
//! stopped (and purged) by a background *cleanup* task, which the next lifecycle call on that
//! session waits for. So an engine may emit from its own tasks and await those tasks in `stop()`.
//!
//! Each start of a session is a *run* with its own generation number; the engine gets an event
//! sink bound to that run, so late events of a stopped run never touch the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use wagate_core::{EngineKind, Identity, Phone, Session, SessionId, SessionStatus};
use wagate_store::prelude::*;
use wagate_store::{IdentityUpdate, SessionStateUpdate, StoreError};

use wagate_engine::{
    Engine, EngineError, EngineEvent, EngineSession, EventSink, PairingCode, QrCode, SessionOutput, SessionSpec,
    TrafficSink,
};

/// Told of every session status the supervisor writes (after it is committed). Called inline:
/// return at once, never call back into the supervisor.
pub trait SessionObserver: Send + Sync + 'static {
    fn status_written(&self, session: &Session);
}

/// `status_reason` written when the QR codes of a pairing attempt ran out.
pub const REASON_QR_EXHAUSTED: &str = "qr_codes_exhausted";
/// `status_reason` written when another connection of the same device replaced ours.
pub const REASON_STREAM_REPLACED: &str = "stream_replaced";
/// `status_reason` written when the engine could not start the session.
pub const REASON_START_FAILED: &str = "start_failed";
/// `status_reason` of sessions stopped by a gateway shutdown (they resume on the next start).
pub const REASON_SHUTDOWN: &str = "gateway_shutdown";

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// At most this many `Engine::start` calls in flight at once (resume at boot included).
    pub max_concurrent_starts: usize,
    /// How long `current_qr` waits for the first QR code of a session that just started.
    pub first_qr_wait: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { max_concurrent_starts: 16, first_qr_wait: Duration::from_secs(10) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The session's state does not allow it (not started, paired, shutting down...). HTTP 409.
    #[error("{0}")]
    Conflict(String),
    /// Pairing asked of a paired session. HTTP 400 `validation_error` (the contract says so).
    #[error("session is already paired")]
    AlreadyPaired,
    /// A sandbox action on a session of another engine (see [`crate::sandbox`]). HTTP 404.
    #[error("not a sandbox session")]
    NotSandbox,
    /// No engine of this kind is configured in this gateway. HTTP 501.
    #[error("the {} engine is not available", .0.as_str())]
    Unsupported(EngineKind),
    /// The engine refused or failed. HTTP by variant: `Invalid` 400, `RateLimited` 429,
    /// `Unsupported` 501, `Upstream` 502, `Internal` 500. (`AlreadyPaired` and `InvalidState`
    /// never appear here: they become [`SupervisorError::AlreadyPaired`] and [`SupervisorError::Conflict`].)
    #[error(transparent)]
    Engine(EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EngineError> for SupervisorError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::AlreadyPaired => SupervisorError::AlreadyPaired,
            EngineError::InvalidState(message) => SupervisorError::Conflict(message),
            other => SupervisorError::Engine(other),
        }
    }
}

fn upstream_down() -> SupervisorError {
    SupervisorError::Engine(EngineError::Upstream("not connected to WhatsApp; the session is reconnecting".into()))
}

fn not_started() -> SupervisorError {
    SupervisorError::Conflict("session is not started".into())
}

/// What `resume_all` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeReport {
    pub total: usize,
    pub started: usize,
    pub failed: usize,
}

/// A handle on a running session, for the services that use what its engine offers (its
/// abilities, or controls of the engine's own).
#[derive(Clone)]
pub struct RunningSession {
    kind: EngineKind,
    session: Arc<dyn EngineSession>,
}

impl RunningSession {
    /// The kind of engine running it.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    pub fn engine_session(&self) -> &dyn EngineSession {
        self.session.as_ref()
    }

    pub fn into_engine_session(self) -> Arc<dyn EngineSession> {
        self.session
    }
}

/// In-memory state of one run, changed only under `Run::state`.
struct RunState {
    status: SessionStatus,
    identity: Option<Identity>,
    /// Set when the run ended (stopped, or ended by an event): later events are ignored.
    closed: bool,
    /// The run ended by an event before `Engine::start` returned: `start` must clean up.
    cleanup_on_start: Option<Cleanup>,
}

#[derive(Clone, Copy)]
struct Cleanup {
    purge: bool,
}

/// One start of one session.
struct Run {
    generation: u64,
    kind: EngineKind,
    /// Set once `Engine::start` returned.
    engine_session: OnceLock<Arc<dyn EngineSession>>,
    state: tokio::sync::Mutex<RunState>,
    /// Mirrors `RunState::closed`, readable without the async lock.
    closed: AtomicBool,
    /// The current QR code (None before the first, once paired, and when closed). Every change of
    /// pairing state sends on it, so `current_qr` waiters wake up and re-check.
    qr: watch::Sender<Option<QrCode>>,
    /// Mirrors whether the run knows an identity (paired), readable without the async lock.
    paired: AtomicBool,
    /// The engine reported a failed or dropped connection (`reconnecting`) and has not
    /// connected since: requests that need WhatsApp answer `Upstream` at once instead of waiting.
    /// Every change also sends on `qr`, so waiters re-check.
    upstream_down: AtomicBool,
}

impl Run {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn close(&self, state: &mut RunState) {
        state.closed = true;
        self.closed.store(true, Ordering::Release);
        self.qr.send_replace(None);
    }
}

/// The event sink handed to an engine for one run.
struct RunSink {
    supervisor: Weak<Supervisor>,
    generation: u64,
}

#[async_trait]
impl EventSink for RunSink {
    async fn emit(&self, session: &SessionId, event: EngineEvent) {
        if let Some(supervisor) = self.supervisor.upgrade() {
            supervisor.apply(session, Some(self.generation), event).await;
        }
    }
}

pub struct Supervisor {
    store: Arc<dyn Store>,
    engines: HashMap<EngineKind, Arc<dyn Engine>>,
    config: SupervisorConfig,
    me: Weak<Supervisor>,
    start_permits: Semaphore,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
    running: Mutex<HashMap<SessionId, Arc<Run>>>,
    lifecycle: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
    cleanups: Mutex<HashMap<SessionId, JoinHandle<()>>>,
    /// Where the engines deliver traffic (none: dropped).
    traffic: OnceLock<Arc<dyn TrafficSink>>,
    observer: OnceLock<Weak<dyn SessionObserver>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Supervisor {
    /// Builds the supervisor over `engines` (keyed by their kind; a later one of the same kind
    /// replaces an earlier one).
    pub fn new(
        store: Arc<dyn Store>,
        engines: impl IntoIterator<Item = Arc<dyn Engine>>,
        config: SupervisorConfig,
    ) -> Arc<Self> {
        let engines = engines.into_iter().map(|e| (e.kind(), e)).collect();
        let permits = config.max_concurrent_starts.max(1);
        Arc::new_cyclic(|me| Supervisor {
            store,
            engines,
            config,
            me: me.clone(),
            start_permits: Semaphore::new(permits),
            next_generation: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            running: Mutex::default(),
            lifecycle: Mutex::default(),
            cleanups: Mutex::default(),
            traffic: OnceLock::new(),
            observer: OnceLock::new(),
        })
    }

    /// Sets where the engines of sessions started from now on deliver their traffic (once).
    pub fn set_traffic(&self, traffic: Arc<dyn TrafficSink>) {
        let _ = self.traffic.set(traffic);
    }

    /// Sets who is told of every status written (once).
    pub fn set_observer(&self, observer: Weak<dyn SessionObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Number of running sessions (including ones starting).
    pub fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    pub fn is_running(&self, id: &SessionId) -> bool {
        lock(&self.running).contains_key(id)
    }

    fn run(&self, id: &SessionId) -> Option<Arc<Run>> {
        lock(&self.running).get(id).cloned()
    }

    fn engine(&self, kind: EngineKind) -> Result<&Arc<dyn Engine>, SupervisorError> {
        self.engines.get(&kind).ok_or(SupervisorError::Unsupported(kind))
    }

    /// Takes the session's lifecycle lock, after any cleanup of an ended run has finished.
    async fn lifecycle(&self, id: &SessionId) -> tokio::sync::OwnedMutexGuard<()> {
        let m = Arc::clone(lock(&self.lifecycle).entry(id.clone()).or_default());
        let guard = m.lock_owned().await;
        self.await_cleanup(id).await;
        guard
    }

    async fn await_cleanup(&self, id: &SessionId) {
        let pending = lock(&self.cleanups).remove(id);
        if let Some(task) = pending
            && let Err(e) = task.await
        {
            tracing::error!(session = %id, error = %e, "session cleanup task failed");
        }
    }

    /// The stored row, or the given one when it vanished meanwhile.
    async fn fresh(&self, session: &Session) -> Result<Session, SupervisorError> {
        Ok(self.store.get_session_unscoped(&session.id).await?.unwrap_or_else(|| session.clone()))
    }

    async fn write(&self, id: &SessionId, update: SessionStateUpdate) -> Result<Option<Session>, StoreError> {
        let written = self.store.update_session_state(id, &update).await?;
        if let Some(session) = &written
            && let Some(observer) = self.observer.get().and_then(Weak::upgrade)
        {
            observer.status_written(session);
        }
        Ok(written)
    }

    /// Starts the session. Idempotent: a running session is returned unchanged. Starting a
    /// `logged_out` session begins a fresh pairing; a `failed` one is simply tried again.
    pub async fn start(&self, session: &Session) -> Result<Session, SupervisorError> {
        let engine = Arc::clone(self.engine(session.engine)?);
        let _lifecycle = self.lifecycle(&session.id).await;
        if self.is_running(&session.id) {
            return self.fresh(session).await;
        }
        self.start_locked(session, engine).await
    }

    async fn start_locked(&self, session: &Session, engine: Arc<dyn Engine>) -> Result<Session, SupervisorError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SupervisorError::Conflict("the gateway is shutting down".into()));
        }
        let id = &session.id;
        // Written before the engine runs, so no event of this run can be overwritten by it.
        let Some(row) = self
            .write(id, SessionStateUpdate {
                status: SessionStatus::Starting,
                status_reason: None,
                desired_running: Some(true),
                identity: IdentityUpdate::Keep,
                at: wagate_core::now(),
            })
            .await?
        else {
            return Err(SupervisorError::Conflict("session was deleted".into()));
        };

        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let run = Arc::new(Run {
            generation,
            kind: row.engine,
            engine_session: OnceLock::new(),
            state: tokio::sync::Mutex::new(RunState {
                status: SessionStatus::Starting,
                identity: row.identity.clone(),
                closed: false,
                cleanup_on_start: None,
            }),
            closed: AtomicBool::new(false),
            qr: watch::Sender::new(None),
            paired: AtomicBool::new(row.identity.is_some()),
            upstream_down: AtomicBool::new(false),
        });
        lock(&self.running).insert(id.clone(), Arc::clone(&run));

        let spec = SessionSpec {
            id: id.clone(),
            org: row.org.clone(),
            identity: row.identity.clone(),
            device_name: row.device_name.clone(),
        };
        // Lifecycle events come back to this run; traffic goes to the message service.
        let mut output = SessionOutput::new(Arc::new(RunSink { supervisor: self.me.clone(), generation }));
        if let Some(traffic) = self.traffic.get() {
            output = output.with_traffic(Arc::clone(traffic));
        }
        let started = {
            let _permit = self.start_permits.acquire().await.expect("the semaphore is never closed");
            engine.start(spec, output).await
        };

        let engine_session = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "engine failed to start the session");
                {
                    let mut state = run.state.lock().await;
                    run.close(&mut state);
                }
                self.remove_run(id, generation);
                // desired_running is kept: a transient failure is retried at the next gateway start.
                self.write(id, SessionStateUpdate {
                    status: SessionStatus::Failed,
                    status_reason: Some(REASON_START_FAILED.into()),
                    desired_running: None,
                    identity: IdentityUpdate::Keep,
                    at: wagate_core::now(),
                })
                .await?;
                return Err(e.into());
            }
        };
        let _ = run.engine_session.set(Arc::clone(&engine_session));

        // An event may have ended the run while the engine was starting; clean up here then.
        let cleanup = run.state.lock().await.cleanup_on_start.take();
        if let Some(cleanup) = cleanup {
            engine_session.stop().await;
            if cleanup.purge
                && let Err(e) = engine.purge(id).await
            {
                tracing::error!(session = %id, error = %e, "failed to purge the keys of a logged-out session");
            }
        }
        tracing::info!(session = %id, engine = row.engine.as_str(), paired = row.identity.is_some(), "session started");
        self.fresh(&row).await
    }

    fn remove_run(&self, id: &SessionId, generation: u64) {
        let mut running = lock(&self.running);
        if running.get(id).is_some_and(|r| r.generation == generation) {
            running.remove(id);
        }
    }

    /// Ends the run in memory and stops its engine session; writes nothing to the store.
    async fn stop_run(&self, id: &SessionId) -> Option<Arc<Run>> {
        let run = self.run(id)?;
        {
            let mut state = run.state.lock().await;
            run.close(&mut state);
        }
        self.remove_run(id, run.generation);
        if let Some(es) = run.engine_session.get() {
            es.stop().await;
        }
        Some(run)
    }

    /// Stops the session (keeping its keys) and clears `desired_running`. Idempotent: a session
    /// that is not running and already settled (`stopped`, `logged_out` or `failed` with
    /// `desired_running` false) is returned unchanged; a stale row (e.g. `connected` after a
    /// crash) is written `stopped`.
    pub async fn stop(&self, session: &Session) -> Result<Session, SupervisorError> {
        let _lifecycle = self.lifecycle(&session.id).await;
        let was_running = self.stop_run(&session.id).await.is_some();
        if !was_running {
            let row = self.fresh(session).await?;
            let settled = matches!(row.status, SessionStatus::Stopped | SessionStatus::LoggedOut | SessionStatus::Failed);
            if settled && !row.desired_running {
                return Ok(row);
            }
        }
        let update = SessionStateUpdate {
            status: SessionStatus::Stopped,
            status_reason: None,
            desired_running: Some(false),
            identity: IdentityUpdate::Keep,
            at: wagate_core::now(),
        };
        Ok(self.write(&session.id, update).await?.unwrap_or_else(|| session.clone()))
    }

    /// Stops and starts the session again, keeping its paired identity.
    pub async fn restart(&self, session: &Session) -> Result<Session, SupervisorError> {
        let engine = Arc::clone(self.engine(session.engine)?);
        let _lifecycle = self.lifecycle(&session.id).await;
        self.stop_run(&session.id).await;
        self.start_locked(session, engine).await
    }

    /// Unlinks the device (when running), stops the session, purges the engine's keys and leaves
    /// the session `logged_out` with no identity and `desired_running` false.
    ///
    /// Logging out a session that is not running or not paired is harmless and succeeds the same
    /// way (the keys are purged regardless, and the result is always `logged_out`). A failure of
    /// the engine to tell WhatsApp is logged and does not stop the local logout: the keys are
    /// wiped either way, which also voids the device.
    pub async fn logout(&self, session: &Session) -> Result<Session, SupervisorError> {
        let engine = self.engine(session.engine).ok();
        let _lifecycle = self.lifecycle(&session.id).await;
        if let Some(run) = self.run(&session.id) {
            {
                let mut state = run.state.lock().await;
                run.close(&mut state);
            }
            self.remove_run(&session.id, run.generation);
            if let Some(es) = run.engine_session.get() {
                if let Err(e) = es.logout().await {
                    tracing::warn!(session = %session.id, error = %e, "engine logout failed; wiping the keys anyway");
                }
                es.stop().await;
            }
        }
        if let Some(engine) = engine {
            engine.purge(&session.id).await?;
        }
        let update = SessionStateUpdate {
            status: SessionStatus::LoggedOut,
            status_reason: None,
            desired_running: Some(false),
            identity: IdentityUpdate::Clear,
            at: wagate_core::now(),
        };
        Ok(self.write(&session.id, update).await?.unwrap_or_else(|| session.clone()))
    }

    /// Stops the session if running, purges its engine data and deletes the row. False when the
    /// row was already gone.
    pub async fn delete(&self, session: &Session) -> Result<bool, SupervisorError> {
        let lifecycle = self.lifecycle(&session.id).await;
        self.stop_run(&session.id).await;
        if let Ok(engine) = self.engine(session.engine) {
            engine.purge(&session.id).await?;
        }
        let deleted = self.store.delete_session(&session.org, &session.id).await?;
        drop(lifecycle);
        lock(&self.lifecycle).remove(&session.id);
        Ok(deleted)
    }

    /// The QR code to show. `Conflict` when paired or not started; `Engine(Upstream)` at once when
    /// the engine is not connected to WhatsApp (`reconnecting`: its last attempt failed or the
    /// connection dropped); otherwise waits up to `first_qr_wait` for the first code of a
    /// session that just started. The code returned is unexpired.
    pub async fn current_qr(&self, session: &Session) -> Result<QrCode, SupervisorError> {
        let paired = || SupervisorError::Conflict("session is paired".into());
        let Some(run) = self.run(&session.id) else {
            return Err(if session.identity.is_some() { paired() } else { not_started() });
        };
        let mut rx = run.qr.subscribe();
        let wait = async {
            loop {
                if run.paired.load(Ordering::Acquire) {
                    return Err(paired());
                }
                if run.is_closed() {
                    return Err(not_started());
                }
                if run.upstream_down.load(Ordering::Acquire) {
                    return Err(upstream_down());
                }
                if let Some(qr) = rx.borrow_and_update().as_ref()
                    && qr.expires_at > wagate_core::now()
                {
                    return Ok(qr.clone());
                }
                if rx.changed().await.is_err() {
                    return Err(not_started());
                }
            }
        };
        match tokio::time::timeout(self.config.first_qr_wait, wait).await {
            Ok(result) => result,
            Err(_) => Err(SupervisorError::Conflict("no QR code available yet; try again".into())),
        }
    }

    /// Asks the engine for a phone pairing code. `AlreadyPaired` when paired, `Conflict` when
    /// not started, `Engine(Upstream)` at once when the engine is not connected to WhatsApp (or
    /// as soon as its connection attempt fails while the request waits for it).
    pub async fn request_pairing_code(&self, session: &Session, phone: &Phone) -> Result<PairingCode, SupervisorError> {
        let Some(run) = self.run(&session.id) else {
            return Err(if session.identity.is_some() { SupervisorError::AlreadyPaired } else { not_started() });
        };
        if run.paired.load(Ordering::Acquire) {
            return Err(SupervisorError::AlreadyPaired);
        }
        let es = run.engine_session.get().ok_or_else(|| SupervisorError::Conflict("session is starting".into()))?;
        let pairing = es.pairing().ok_or(EngineError::Unsupported("pairing codes"))?;
        let mut rx = run.qr.subscribe();
        let went_down = async {
            while !run.upstream_down.load(Ordering::Acquire) {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            code = pairing.request_pairing_code(phone) => Ok(code?),
            () = went_down => Err(upstream_down()),
        }
    }

    /// The running session. `Conflict` when it is not running, or still starting.
    pub fn running(&self, session: &Session) -> Result<RunningSession, SupervisorError> {
        let run = self.run(&session.id).ok_or_else(not_started)?;
        let es = run.engine_session.get().ok_or_else(|| SupervisorError::Conflict("session is starting".into()))?;
        Ok(RunningSession { kind: run.kind, session: Arc::clone(es) })
    }

    /// Starts every session whose `desired_running` is set (at gateway start). At most
    /// `max_concurrent_starts` starts are in flight; failures are logged and counted.
    pub async fn resume_all(&self) -> Result<ResumeReport, SupervisorError> {
        let sessions = self.store.sessions_to_resume().await?;
        let total = sessions.len();
        let mut report = ResumeReport { total, ..ResumeReport::default() };
        if total == 0 {
            tracing::info!("no session to resume");
            return Ok(report);
        }
        tracing::info!(total, "resuming sessions");
        let Some(me) = self.me.upgrade() else { return Ok(report) };
        let limit = self.config.max_concurrent_starts.max(1);
        let log_every = (total / 10).max(1);
        let mut pending = sessions.into_iter();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < limit {
                let Some(session) = pending.next() else { break };
                let me = Arc::clone(&me);
                tasks.spawn(async move {
                    let result = me.start(&session).await;
                    (session.id, result)
                });
            }
            let Some(joined) = tasks.join_next().await else { break };
            match joined {
                Ok((_, Ok(_))) => report.started += 1,
                Ok((id, Err(e))) => {
                    report.failed += 1;
                    tracing::warn!(session = %id, error = %e, "could not resume session");
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(error = %e, "resume task failed");
                }
            }
            let done = report.started + report.failed;
            if done.is_multiple_of(log_every) || done == total {
                tracing::info!("resumed {} of {total} sessions ({} failed)", report.started, report.failed);
            }
        }
        Ok(report)
    }

    /// Stops every running session cleanly (concurrently, bounded) and refuses new starts.
    ///
    /// Each stopped session is written `stopped` with reason `gateway_shutdown` and its
    /// `desired_running` left as it is (true), so the row tells the truth while the gateway is
    /// down and `resume_all` brings the session back at the next start.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let runs: Vec<(SessionId, Arc<Run>)> = lock(&self.running).drain().collect();
        let pending: Vec<(SessionId, JoinHandle<()>)> = lock(&self.cleanups).drain().collect();
        tracing::info!(sessions = runs.len(), "stopping sessions");
        let Some(me) = self.me.upgrade() else { return };
        let limit = self.config.max_concurrent_starts.max(1);
        let mut runs = runs.into_iter();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < limit {
                let Some((id, run)) = runs.next() else { break };
                let me = Arc::clone(&me);
                tasks.spawn(async move {
                    {
                        let mut state = run.state.lock().await;
                        run.close(&mut state);
                    }
                    if let Some(es) = run.engine_session.get() {
                        es.stop().await;
                    }
                    let update = SessionStateUpdate {
                        status: SessionStatus::Stopped,
                        status_reason: Some(REASON_SHUTDOWN.into()),
                        desired_running: None,
                        identity: IdentityUpdate::Keep,
                        at: wagate_core::now(),
                    };
                    if let Err(e) = me.write(&id, update).await {
                        tracing::warn!(session = %id, error = %e, "could not record the shutdown of a session");
                    }
                });
            }
            if tasks.join_next().await.is_none() {
                break;
            }
        }
        for (id, task) in pending {
            if let Err(e) = task.await {
                tracing::error!(session = %id, error = %e, "session cleanup task failed");
            }
        }
        tracing::info!("all sessions stopped");
    }

    /// Applies one engine event: in-memory state, then the store, before returning.
    async fn apply(&self, id: &SessionId, generation: Option<u64>, event: EngineEvent) {
        let Some(run) = self.run(id) else {
            tracing::debug!(session = %id, ?event, "event of a session that is not running; ignored");
            return;
        };
        if generation.is_some_and(|g| g != run.generation) {
            tracing::debug!(session = %id, ?event, "event of an earlier run; ignored");
            return;
        }
        let mut state = run.state.lock().await;
        if state.closed {
            tracing::debug!(session = %id, ?event, "event after the run ended; ignored");
            return;
        }

        let mut update = SessionStateUpdate {
            status: state.status,
            status_reason: None,
            desired_running: None,
            identity: IdentityUpdate::Keep,
            at: wagate_core::now(),
        };
        // Some(purge?) when the event ends the run.
        let mut ends: Option<Cleanup> = None;
        // A first QR code is shown only once its status is stored, so that a client that got
        // the code never reads an older status.
        let mut first_qr = None;
        match event {
            EngineEvent::Qr(qr) => {
                run.upstream_down.store(false, Ordering::Release);
                if state.status == SessionStatus::AwaitingPairing {
                    run.qr.send_replace(Some(qr));
                    return; // a rotation: nothing new to store
                }
                first_qr = Some(qr);
                update.status = SessionStatus::AwaitingPairing;
            }
            EngineEvent::QrExhausted => {
                update.status = SessionStatus::Stopped;
                update.status_reason = Some(REASON_QR_EXHAUSTED.into());
                update.desired_running = Some(false);
                ends = Some(Cleanup { purge: false });
            }
            EngineEvent::Paired(identity) => {
                state.identity = Some(identity.clone());
                run.paired.store(true, Ordering::Release);
                run.upstream_down.store(false, Ordering::Release);
                run.qr.send_replace(None);
                update.identity = IdentityUpdate::Set(identity);
            }
            EngineEvent::Connected => {
                run.upstream_down.store(false, Ordering::Release);
                update.status = SessionStatus::Connected;
            }
            EngineEvent::Reconnecting { reason, attempt, retry_in } => {
                tracing::info!(session = %id, %reason, attempt, ?retry_in, "session reconnecting");
                update.status = SessionStatus::Reconnecting;
                update.status_reason = Some(reason);
                // A dropped pairing connection shows new codes after reconnecting.
                run.upstream_down.store(true, Ordering::Release);
                run.qr.send_replace(None);
            }
            EngineEvent::LoggedOut { reason } => {
                state.identity = None;
                run.paired.store(false, Ordering::Release);
                update.status = SessionStatus::LoggedOut;
                update.status_reason = Some(reason);
                update.desired_running = Some(false);
                update.identity = IdentityUpdate::Clear;
                ends = Some(Cleanup { purge: true });
            }
            EngineEvent::StreamReplaced => {
                update.status = SessionStatus::Failed;
                update.status_reason = Some(REASON_STREAM_REPLACED.into());
                update.desired_running = Some(false);
                ends = Some(Cleanup { purge: false });
            }
            EngineEvent::Failed { reason } => {
                update.status = SessionStatus::Failed;
                update.status_reason = Some(reason);
                update.desired_running = Some(false);
                ends = Some(Cleanup { purge: false });
            }
        }
        state.status = update.status;
        if !matches!(update.status, SessionStatus::Connected | SessionStatus::Starting | SessionStatus::AwaitingPairing)
        {
            tracing::info!(session = %id, status = update.status.as_str(), reason = ?update.status_reason, "session status");
        }
        if let Some(cleanup) = ends {
            run.close(&mut state);
            self.remove_run(id, run.generation);
            match run.engine_session.get() {
                Some(es) => self.spawn_cleanup(id, run.kind, Arc::clone(es), cleanup),
                None => state.cleanup_on_start = Some(cleanup),
            }
        }
        match self.write(id, update).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(session = %id, "event of a deleted session"),
            Err(e) => tracing::error!(session = %id, error = %e, "could not record a session status change"),
        }
        if let Some(qr) = first_qr {
            run.qr.send_replace(Some(qr));
        }
    }

    /// Stops (and purges) an ended run's engine session in the background; the next lifecycle
    /// call on the session waits for it.
    fn spawn_cleanup(&self, id: &SessionId, kind: EngineKind, es: Arc<dyn EngineSession>, cleanup: Cleanup) {
        let engine = self.engines.get(&kind).cloned();
        let sid = id.clone();
        let task = tokio::spawn(async move {
            es.stop().await;
            if cleanup.purge
                && let Some(engine) = engine
                && let Err(e) = engine.purge(&sid).await
            {
                tracing::error!(session = %sid, error = %e, "failed to purge the keys of a logged-out session");
            }
        });
        let mut cleanups = lock(&self.cleanups);
        // A previous cleanup still unclaimed is already ending on its own; keep the newest.
        if let Some(previous) = cleanups.insert(id.clone(), task) {
            drop(previous);
        }
    }
}

/// Applies an event to the session's current run, whatever its generation (engines get a sink
/// bound to their run; this is for callers outside that path).
#[async_trait]
impl EventSink for Supervisor {
    async fn emit(&self, session: &SessionId, event: EngineEvent) {
        self.apply(session, None, event).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::sandbox::SandboxAccess;
    use wagate_sandbox::SandboxControl;
    use crate::testing::*;
    use wagate_engine::testing::*;
    use wagate_sandbox::testing::fast_sandbox;
    use wagate_sandbox::{SandboxConfig, SandboxEngine};

    struct Fixture {
        store: Arc<dyn Store>,
        sandbox: Arc<PurgeCounting<SandboxEngine>>,
        sup: Arc<Supervisor>,
        _db: tempfile::TempDir,
    }

    async fn fixture_with(config: SandboxConfig, sup_config: SupervisorConfig) -> Fixture {
        let (store, _db) = test_store().await;
        let sandbox = PurgeCounting::new(SandboxEngine::new(config));
        let sup = Supervisor::new(Arc::clone(&store), [sandbox.clone() as Arc<dyn Engine>], sup_config);
        Fixture { store, sandbox, sup, _db }
    }

    async fn fixture() -> Fixture {
        fixture_with(fast_sandbox(), SupervisorConfig::default()).await
    }

    impl Fixture {
        async fn session(&self) -> Session {
            new_session(&self.store, EngineKind::Sandbox, false).await
        }

        async fn row(&self, s: &Session) -> Session {
            row(&self.store, &s.id).await
        }

        async fn wait_status(&self, s: &Session, status: SessionStatus) -> Session {
            eventually(&format!("status {}", status.as_str()), || async {
                let r = self.row(s).await;
                (r.status == status).then_some(r)
            })
            .await
        }

        /// A started, scanned, connected sandbox session.
        async fn connected(&self, number: &str) -> Session {
            let s = self.session().await;
            self.sup.start(&s).await.unwrap();
            self.sup.current_qr(&s).await.unwrap();
            self.sup.sandbox(&s).unwrap().scan_qr(phone(number), Some("Shop".into()), None).await.unwrap();
            let r = self.row(&s).await;
            assert_eq!(r.status, SessionStatus::Connected);
            r
        }
    }

    #[tokio::test]
    async fn start_scan_connect_stores_the_identity() {
        let f = fixture().await;
        let s = f.session().await;
        let started = f.sup.start(&s).await.unwrap();
        assert!(matches!(started.status, SessionStatus::Starting | SessionStatus::AwaitingPairing));
        assert!(started.desired_running);
        assert!(f.sup.is_running(&s.id));
        let qr = f.sup.current_qr(&s).await.unwrap();
        assert!(qr.code.starts_with("2@") && qr.expires_at > wagate_core::now());
        f.wait_status(&s, SessionStatus::AwaitingPairing).await;

        f.sup.sandbox(&s).unwrap().scan_qr(phone("628123456789"), Some("Shop".into()), None).await.unwrap();
        let r = f.row(&s).await;
        assert_eq!(r.status, SessionStatus::Connected);
        assert_eq!(r.status_reason, None);
        let identity = r.identity.expect("identity stored");
        assert_eq!(identity.jid, "628123456789@s.whatsapp.net");
        assert_eq!(identity.push_name.as_deref(), Some("Shop"));
        assert!(identity.lid.unwrap().ends_with("@lid"));

        let err = f.sup.current_qr(&f.row(&s).await).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Conflict(ref m) if m.contains("paired")), "{err:?}");
        let err = f.sup.request_pairing_code(&s, &phone("628123456789")).await.unwrap_err();
        assert!(matches!(err, SupervisorError::AlreadyPaired), "{err:?}");
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn qr_exhaustion_stops_the_session() {
        let config = SandboxConfig {
            qr_first_ttl: Duration::from_millis(400),
            qr_next_ttl: Duration::from_millis(50),
            qr_count: 3,
            ..fast_sandbox()
        };
        let f = fixture_with(config, SupervisorConfig::default()).await;
        let s = f.session().await;
        f.sup.start(&s).await.unwrap();
        let r = f.wait_status(&s, SessionStatus::Stopped).await;
        assert_eq!(r.status_reason.as_deref(), Some(REASON_QR_EXHAUSTED));
        assert!(!r.desired_running);
        assert!(!f.sup.is_running(&s.id));
        let err = f.sup.current_qr(&r).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Conflict(ref m) if m.contains("not started")), "{err:?}");
        // It can be started again: a fresh pairing attempt.
        f.sup.start(&r).await.unwrap();
        f.sup.current_qr(&r).await.unwrap();
        f.sup.stop(&r).await.unwrap();
    }

    #[tokio::test]
    async fn pairing_codes_through_the_supervisor() {
        let f = fixture().await;
        let s = f.session().await;
        let err = f.sup.request_pairing_code(&s, &phone("628123456789")).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Conflict(ref m) if m.contains("not started")), "{err:?}");

        f.sup.start(&s).await.unwrap();
        let code = f.sup.request_pairing_code(&s, &phone("628123456789")).await.unwrap();
        let sandbox = f.sup.sandbox(&s).unwrap();
        let err = SupervisorError::from(sandbox.enter_pairing_code("ZZZZ-ZZZZ").await.unwrap_err());
        assert!(matches!(err, SupervisorError::Engine(EngineError::Invalid { field: "code", .. })), "{err:?}");
        sandbox.enter_pairing_code(&code.code).await.unwrap();
        let r = f.row(&s).await;
        assert_eq!(r.status, SessionStatus::Connected);
        assert_eq!(r.identity.unwrap().phone.as_str(), "628123456789");
        let err = f.sup.request_pairing_code(&s, &phone("628123456789")).await.unwrap_err();
        assert!(matches!(err, SupervisorError::AlreadyPaired), "{err:?}");
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn disconnect_goes_through_reconnecting_back_to_connected() {
        let config = SandboxConfig { reconnect_delay: Duration::from_millis(100), ..fast_sandbox() };
        let f = fixture_with(config, SupervisorConfig::default()).await;
        let s = f.connected("628123456789").await;
        f.sup.sandbox(&s).unwrap().disconnect().await.unwrap();
        let r = f.row(&s).await;
        assert_eq!(r.status, SessionStatus::Reconnecting);
        assert_eq!(r.status_reason.as_deref(), Some("connection_lost"));
        let r = f.wait_status(&s, SessionStatus::Connected).await;
        assert_eq!(r.status_reason, None);
        assert!(r.identity.is_some());
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn unlink_logs_out_clears_identity_and_purges() {
        let f = fixture().await;
        let s = f.connected("628123456789").await;
        f.sup.sandbox(&s).unwrap().unlink().await.unwrap();
        let r = f.row(&s).await;
        assert_eq!(r.status, SessionStatus::LoggedOut);
        assert_eq!(r.status_reason.as_deref(), Some("device_removed"));
        assert_eq!(r.identity, None);
        assert!(!r.desired_running);
        assert!(!f.sup.is_running(&s.id));
        eventually("purge", || async { (f.sandbox.purges() == 1).then_some(()) }).await;
        // Starting again means pairing afresh.
        f.sup.start(&r).await.unwrap();
        f.sup.current_qr(&r).await.unwrap();
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn start_and_stop_are_idempotent() {
        let f = fixture().await;
        let s = f.session().await;
        f.sup.start(&s).await.unwrap();
        f.wait_status(&s, SessionStatus::AwaitingPairing).await;
        let again = f.sup.start(&s).await.unwrap();
        assert_eq!(again.status, SessionStatus::AwaitingPairing, "a running session is returned unchanged");
        assert_eq!(f.sup.running_count(), 1);

        let stopped = f.sup.stop(&s).await.unwrap();
        assert_eq!(stopped.status, SessionStatus::Stopped);
        assert!(!stopped.desired_running);
        assert!(!f.sup.is_running(&s.id));
        assert_eq!(f.sup.running_count(), 0);
        let again = f.sup.stop(&stopped).await.unwrap();
        assert_eq!(again, stopped, "stopping a stopped session changes nothing");
        // A stale row (e.g. left `connected` by a crash) is settled as stopped.
        f.store
            .update_session_state(&s.id, &SessionStateUpdate {
                status: SessionStatus::Connected,
                status_reason: None,
                desired_running: Some(true),
                identity: IdentityUpdate::Keep,
                at: wagate_core::now(),
            })
            .await
            .unwrap();
        let settled = f.sup.stop(&s).await.unwrap();
        assert_eq!((settled.status, settled.desired_running), (SessionStatus::Stopped, false));
    }

    #[tokio::test]
    async fn restart_keeps_the_paired_identity() {
        let f = fixture().await;
        let s = f.connected("628123456789").await;
        let before = f.row(&s).await.identity;
        let restarted = f.sup.restart(&s).await.unwrap();
        assert!(restarted.desired_running);
        let r = f.wait_status(&s, SessionStatus::Connected).await;
        assert_eq!(r.identity, before);
        assert_eq!(f.sup.running_count(), 1);
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn logout_purges_and_ends_logged_out() {
        let f = fixture().await;
        let s = f.connected("628123456789").await;
        let r = f.sup.logout(&s).await.unwrap();
        assert_eq!(r.status, SessionStatus::LoggedOut);
        assert_eq!(r.identity, None);
        assert!(!r.desired_running);
        assert!(!f.sup.is_running(&s.id));
        assert_eq!(f.sandbox.purges(), 1);

        // Logging out an unpaired, stopped session is harmless.
        let other = f.session().await;
        let r = f.sup.logout(&other).await.unwrap();
        assert_eq!((r.status, r.identity, r.desired_running), (SessionStatus::LoggedOut, None, false));
    }

    #[tokio::test]
    async fn delete_stops_purges_and_removes_the_row() {
        let f = fixture().await;
        let s = f.connected("628123456789").await;
        assert!(f.sup.delete(&s).await.unwrap());
        assert!(!f.sup.is_running(&s.id));
        assert_eq!(f.sandbox.purges(), 1);
        assert!(f.store.get_session_unscoped(&s.id).await.unwrap().is_none());
        let err = f.sup.start(&s).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Conflict(_)), "{err:?}");
        assert_eq!(f.sup.running_count(), 0);
    }

    #[tokio::test]
    async fn current_qr_waits_for_the_first_code() {
        let config = SandboxConfig { connect_delay: Duration::from_millis(300), ..fast_sandbox() };
        let f = fixture_with(config, SupervisorConfig::default()).await;
        let s = f.session().await;
        let err = f.sup.current_qr(&s).await.unwrap_err();
        assert!(matches!(err, SupervisorError::Conflict(ref m) if m.contains("not started")), "{err:?}");
        f.sup.start(&s).await.unwrap();
        let qr = f.sup.current_qr(&s).await.unwrap();
        assert!(qr.expires_at > wagate_core::now());
        f.sup.shutdown().await;
    }

    #[tokio::test]
    async fn current_qr_gives_up_after_first_qr_wait() {
        let config = SandboxConfig { connect_delay: Duration::from_secs(3600), ..fast_sandbox() };
        let sup_config = SupervisorConfig { first_qr_wait: Duration::from_millis(50), ..SupervisorConfig::default() };
        let f = fixture_with(config, sup_config).await;
        let s = f.session().await;
        f.sup.start(&s).await.unwrap();
        assert!(matches!(f.sup.current_qr(&s).await, Err(SupervisorError::Conflict(_))));
        // Stopping wakes nothing up late and ends at once.
        f.sup.stop(&s).await.unwrap();
    }

    #[tokio::test]
    async fn resume_all_starts_desired_sessions_within_the_cap() {
        let (store, _db) = test_store().await;
        let engine = CountingEngine::new(EngineKind::Whatsapp, Duration::from_millis(30));
        let sup = Supervisor::new(
            Arc::clone(&store),
            [engine.clone() as Arc<dyn Engine>],
            SupervisorConfig { max_concurrent_starts: 4, ..SupervisorConfig::default() },
        );
        let mut wanted = Vec::new();
        let mut idle = Vec::new();
        for i in 0..30 {
            let s = new_session(&store, EngineKind::Whatsapp, i % 3 != 0).await;
            if s.desired_running { wanted.push(s) } else { idle.push(s) }
        }
        let report = sup.resume_all().await.unwrap();
        assert_eq!(report, ResumeReport { total: 20, started: 20, failed: 0 });
        assert_eq!(engine.starts.load(Ordering::SeqCst), 20);
        let max = engine.max_in_flight.load(Ordering::SeqCst);
        assert!((1..=4).contains(&max), "max in flight {max}");
        assert_eq!(sup.running_count(), 20);
        assert!(wanted.iter().all(|s| sup.is_running(&s.id)));
        assert!(idle.iter().all(|s| !sup.is_running(&s.id)));
        for s in &wanted {
            let r = row(&store, &s.id).await;
            assert_eq!((r.status, r.desired_running), (SessionStatus::Starting, true));
        }

        // Shutdown stops them all and keeps them wanted for the next start.
        sup.shutdown().await;
        assert_eq!(sup.running_count(), 0);
        let stops: usize = engine.sessions.lock().unwrap().iter().map(|s| s.stops.load(Ordering::SeqCst)).sum();
        assert_eq!(stops, 20);
        for s in &wanted {
            let r = row(&store, &s.id).await;
            assert_eq!(r.status, SessionStatus::Stopped);
            assert_eq!(r.status_reason.as_deref(), Some(REASON_SHUTDOWN));
            assert!(r.desired_running);
        }
        assert_eq!(store.sessions_to_resume().await.unwrap().len(), 20);
        assert!(matches!(sup.start(&wanted[0]).await, Err(SupervisorError::Conflict(_))));
    }

    #[tokio::test]
    async fn terminal_events_end_the_run() {
        let (store, _db) = test_store().await;
        let engine = CountingEngine::new(EngineKind::Whatsapp, Duration::ZERO);
        let sup = Supervisor::new(Arc::clone(&store), [engine.clone() as Arc<dyn Engine>], SupervisorConfig::default());
        let cases = [
            (EngineEvent::StreamReplaced, SessionStatus::Failed, REASON_STREAM_REPLACED),
            (EngineEvent::Failed { reason: "temporary_ban".into() }, SessionStatus::Failed, "temporary_ban"),
            (EngineEvent::QrExhausted, SessionStatus::Stopped, REASON_QR_EXHAUSTED),
            (EngineEvent::LoggedOut { reason: "device_removed".into() }, SessionStatus::LoggedOut, "device_removed"),
        ];
        for (i, (event, status, reason)) in cases.into_iter().enumerate() {
            let s = new_session(&store, EngineKind::Whatsapp, false).await;
            sup.start(&s).await.unwrap();
            sup.emit(&s.id, EngineEvent::Connected).await;
            assert_eq!(row(&store, &s.id).await.status, SessionStatus::Connected);
            sup.emit(&s.id, event).await;
            let r = row(&store, &s.id).await;
            assert_eq!((r.status, r.status_reason.as_deref(), r.desired_running), (status, Some(reason), false));
            assert!(!sup.is_running(&s.id));
            let fake = Arc::clone(&engine.sessions.lock().unwrap()[i]);
            eventually("engine session stopped", || async { (fake.stops.load(Ordering::SeqCst) == 1).then_some(()) })
                .await;
            // Late events of an ended run change nothing.
            sup.emit(&s.id, EngineEvent::Connected).await;
            assert_eq!(row(&store, &s.id).await.status, status);
            // The next lifecycle call waits for the cleanup (stop, and purge after a logout).
            sup.stop(&s).await.unwrap();
        }
        assert_eq!(engine.purges.load(Ordering::SeqCst), 1, "only the logged-out session is purged");
    }

    #[tokio::test]
    async fn start_passes_the_stored_device_name_to_the_engine() {
        use wagate_core::{InstanceId, NewSession, OrgId};

        let (store, _db) = test_store().await;
        let engine = CountingEngine::new(EngineKind::Whatsapp, Duration::ZERO);
        let sup = Supervisor::new(Arc::clone(&store), [engine.clone() as Arc<dyn Engine>], SupervisorConfig::default());
        let default = new_session(&store, EngineKind::Whatsapp, false).await;
        let named = store
            .insert_session(&NewSession {
                id: SessionId::generate(),
                org: OrgId::parse("acme").unwrap(),
                instance_id: InstanceId::generate(),
                name: None,
                engine: EngineKind::Whatsapp,
                status: SessionStatus::Stopped,
                desired_running: false,
                device_name: Some("Front desk".into()),
                created_at: wagate_core::now(),
            })
            .await
            .unwrap();
        sup.start(&default).await.unwrap();
        sup.start(&named).await.unwrap();
        let specs = engine.specs.lock().unwrap().clone();
        let names: Vec<_> = specs.iter().map(|s| (s.id.clone(), s.device_name.clone())).collect();
        assert_eq!(names, vec![(default.id.clone(), None), (named.id.clone(), Some("Front desk".to_owned()))]);
        sup.shutdown().await;
    }

    #[tokio::test]
    async fn paired_event_stores_identity_and_keeps_status() {
        let (store, _db) = test_store().await;
        let engine = CountingEngine::new(EngineKind::Whatsapp, Duration::ZERO);
        let sup = Supervisor::new(Arc::clone(&store), [engine as Arc<dyn Engine>], SupervisorConfig::default());
        let s = new_session(&store, EngineKind::Whatsapp, false).await;
        sup.start(&s).await.unwrap();
        let qr = QrCode { code: "2@x,a,b,c".into(), expires_at: wagate_core::now() + chrono::Duration::seconds(60) };
        sup.emit(&s.id, EngineEvent::Qr(qr.clone())).await;
        assert_eq!(sup.current_qr(&s).await.unwrap(), qr);
        let identity = Identity {
            phone: phone("628123456789"),
            jid: "628123456789@s.whatsapp.net".into(),
            lid: None,
            push_name: None,
            platform: None,
        };
        sup.emit(&s.id, EngineEvent::Paired(identity.clone())).await;
        let r = row(&store, &s.id).await;
        assert_eq!((r.status, r.identity), (SessionStatus::AwaitingPairing, Some(identity)));
        assert!(matches!(sup.current_qr(&s).await, Err(SupervisorError::Conflict(_))));
        sup.emit(&s.id, EngineEvent::Connected).await;
        assert_eq!(row(&store, &s.id).await.status, SessionStatus::Connected);
        sup.shutdown().await;
    }

    #[tokio::test]
    async fn sandbox_access_and_unsupported_engines() {
        let (store, _db) = test_store().await;
        let engine = CountingEngine::new(EngineKind::Whatsapp, Duration::ZERO);
        let sup = Supervisor::new(Arc::clone(&store), [engine as Arc<dyn Engine>], SupervisorConfig::default());
        let wa = new_session(&store, EngineKind::Whatsapp, false).await;
        assert!(matches!(sup.sandbox(&wa), Err(SupervisorError::NotSandbox)));
        sup.start(&wa).await.unwrap();
        assert!(matches!(sup.sandbox(&wa), Err(SupervisorError::NotSandbox)));
        let sb = new_session(&store, EngineKind::Sandbox, false).await;
        assert!(matches!(sup.start(&sb).await, Err(SupervisorError::Unsupported(EngineKind::Sandbox))));
        assert!(matches!(sup.sandbox(&sb), Err(SupervisorError::Conflict(_))));
        sup.shutdown().await;
    }
}
