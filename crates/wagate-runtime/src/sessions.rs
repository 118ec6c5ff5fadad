//! [`SessionService`]: what the API and the CLI do to sessions, always within one organization.
//!
//! Each method is one request's worth of work: the store writes and the supervisor calls it
//! takes, in the right order. Callers parse their input into domain values first (names are
//! validated at the edge) and map the errors to their own answers.

use std::sync::Arc;

use wagate_core::{EngineKind, InstanceId, NewSession, OrgId, Phone, Session, SessionId, SessionStatus};
use wagate_engine::{PairingCode, QrCode};
use wagate_store::prelude::*;
use wagate_store::{Page, PageRequest, SessionSettings, StoreError};

use crate::supervisor::{ResumeReport, Supervisor, SupervisorError};

/// A session to create.
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    /// Validated: 1 to 100 characters, trimmed, no control characters.
    pub name: Option<String>,
    pub engine: EngineKind,
    /// Validated: 1 to 50 characters, trimmed, no control characters; `None` is the default.
    pub device_name: Option<String>,
    /// Start it at once.
    pub start: bool,
}

/// Sessions: the rows in the store and the runs in the supervisor, kept in step.
pub struct SessionService {
    store: Arc<dyn Store>,
    supervisor: Arc<Supervisor>,
}

impl SessionService {
    pub fn new(store: Arc<dyn Store>, supervisor: Arc<Supervisor>) -> Self {
        Self { store, supervisor }
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// Creates the session (status `stopped`, its first `session.status` event) and, when asked,
    /// starts it. `Store(Conflict("name"))` on a duplicate name.
    pub async fn create(&self, org: &OrgId, req: CreateSession) -> Result<Session, SupervisorError> {
        let new = NewSession {
            id: SessionId::generate(),
            org: org.clone(),
            instance_id: InstanceId::generate(),
            name: req.name,
            engine: req.engine,
            status: SessionStatus::Stopped,
            desired_running: false,
            device_name: req.device_name,
            created_at: wagate_core::now(),
        };
        let session = self.store.insert_session(&new).await?;
        tracing::info!(session = %session.id, org = %session.org, engine = session.engine.as_str(), "session created");
        if req.start {
            return self.supervisor.start(&session).await;
        }
        Ok(session)
    }

    /// The organization's session `id`, if it has one.
    pub async fn get(&self, org: &OrgId, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.store.get_session(org, id).await
    }

    /// The organization's session with the wawp instance id `instance`, if it has one.
    pub async fn by_instance(&self, org: &OrgId, instance: &InstanceId) -> Result<Option<Session>, StoreError> {
        Ok(self.store.get_session_by_instance(instance).await?.filter(|s| &s.org == org))
    }

    /// The organization's sessions, newest first.
    pub async fn list(&self, org: &OrgId, page: PageRequest<'_>) -> Result<Page<Session>, StoreError> {
        self.store.list_sessions(org, page).await
    }

    /// Renames the session and/or changes its linked-device name. `Ok(None)` when it is gone.
    pub async fn update_settings(
        &self,
        org: &OrgId,
        id: &SessionId,
        settings: &SessionSettings<'_>,
    ) -> Result<Option<Session>, StoreError> {
        self.store.update_session_settings(org, id, settings, wagate_core::now()).await
    }

    /// Stops the session, purges its engine keys and deletes its row.
    pub async fn delete(&self, session: &Session) -> Result<(), SupervisorError> {
        self.supervisor.delete(session).await?;
        tracing::info!(session = %session.id, org = %session.org, "session deleted");
        Ok(())
    }

    /// Starts the session (idempotent; see [`Supervisor::start`]).
    pub async fn start(&self, session: &Session) -> Result<Session, SupervisorError> {
        self.supervisor.start(session).await
    }

    /// Stops the session, keeping its keys (idempotent; see [`Supervisor::stop`]).
    pub async fn stop(&self, session: &Session) -> Result<Session, SupervisorError> {
        self.supervisor.stop(session).await
    }

    /// Stops and starts the session again, keeping its paired identity.
    pub async fn restart(&self, session: &Session) -> Result<Session, SupervisorError> {
        self.supervisor.restart(session).await
    }

    /// Unlinks the device and wipes its keys (see [`Supervisor::logout`]).
    pub async fn logout(&self, session: &Session) -> Result<Session, SupervisorError> {
        self.supervisor.logout(session).await
    }

    /// The QR code to show (see [`Supervisor::current_qr`]).
    pub async fn current_qr(&self, session: &Session) -> Result<QrCode, SupervisorError> {
        self.supervisor.current_qr(session).await
    }

    /// A phone pairing code for `phone` (see [`Supervisor::request_pairing_code`]).
    pub async fn request_pairing_code(&self, session: &Session, phone: &Phone) -> Result<PairingCode, SupervisorError> {
        self.supervisor.request_pairing_code(session, phone).await
    }

    /// Starts every session that should run (at gateway start).
    pub async fn resume_all(&self) -> Result<ResumeReport, SupervisorError> {
        self.supervisor.resume_all().await
    }

    /// Stops every running session; they resume at the next start.
    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }
}
