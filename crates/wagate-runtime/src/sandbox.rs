//! [`SandboxService`]: the `sandbox:*` routes' work, on the sandbox engine's own controls.
//!
//! The supervisor knows no engine's special controls: it hands out the running engine session,
//! and [`wagate_sandbox::control`] finds the sandbox's [`SandboxControl`] in it.

use std::sync::Arc;

use async_trait::async_trait;
use wagate_core::{EngineKind, Message, Phone, Session};
use wagate_engine::{Content, EngineError, EngineSession};
use wagate_sandbox::SandboxControl;
use wagate_store::prelude::*;

use crate::supervisor::{Supervisor, SupervisorError};

/// What the simulated phone or network does.
#[derive(Debug, Clone)]
pub enum SandboxAction {
    /// The phone `phone` scans the current QR code (waiting for the first one of a session that
    /// just started).
    ScanQr { phone: Phone, push_name: Option<String>, platform: Option<String> },
    /// The phone enters a pairing code.
    EnterPairingCode(String),
    /// The connection drops (and comes back).
    Disconnect,
    /// The phone removes the linked device.
    Unlink,
}

/// A running sandbox session's controls. It implements [`SandboxControl`] by forwarding to the
/// engine session it holds.
pub struct SandboxHandle(Arc<dyn EngineSession>);

impl SandboxHandle {
    fn control(&self) -> Result<&dyn SandboxControl, EngineError> {
        wagate_sandbox::control(self.0.as_ref()).ok_or_else(|| EngineError::Internal("not a sandbox session".into()))
    }
}

#[async_trait]
impl SandboxControl for SandboxHandle {
    async fn scan_qr(&self, phone: Phone, push_name: Option<String>, platform: Option<String>)
    -> Result<(), EngineError> {
        self.control()?.scan_qr(phone, push_name, platform).await
    }

    async fn enter_pairing_code(&self, code: &str) -> Result<(), EngineError> {
        self.control()?.enter_pairing_code(code).await
    }

    async fn disconnect(&self) -> Result<(), EngineError> {
        self.control()?.disconnect().await
    }

    async fn unlink(&self) -> Result<(), EngineError> {
        self.control()?.unlink().await
    }

    async fn receive(&self, from: Phone, push_name: Option<String>, content: Content) -> Result<String, EngineError> {
        self.control()?.receive(from, push_name, content).await
    }
}

/// The sandbox controls of a running session, from the supervisor.
pub trait SandboxAccess {
    /// `NotSandbox` for a session of another engine (or an engine session without sandbox
    /// controls), `Conflict` when it is not running (or still starting).
    fn sandbox(&self, session: &Session) -> Result<SandboxHandle, SupervisorError>;
}

impl SandboxAccess for Supervisor {
    fn sandbox(&self, session: &Session) -> Result<SandboxHandle, SupervisorError> {
        if session.engine != EngineKind::Sandbox {
            return Err(SupervisorError::NotSandbox);
        }
        let running = self.running(session)?;
        if running.kind() != EngineKind::Sandbox || wagate_sandbox::control(running.engine_session()).is_none() {
            return Err(SupervisorError::NotSandbox);
        }
        Ok(SandboxHandle(running.into_engine_session()))
    }
}

/// The `sandbox:*` routes' work.
pub struct SandboxService {
    store: Arc<dyn Store>,
    supervisor: Arc<Supervisor>,
}

impl SandboxService {
    pub fn new(store: Arc<dyn Store>, supervisor: Arc<Supervisor>) -> Self {
        Self { store, supervisor }
    }

    /// `NotSandbox` unless `session` is a sandbox session (checked before anything else).
    pub fn check(&self, session: &Session) -> Result<(), SupervisorError> {
        if session.engine == EngineKind::Sandbox { Ok(()) } else { Err(SupervisorError::NotSandbox) }
    }

    /// Does `action` on the running sandbox session and returns the session as it is afterwards
    /// (`None` when it was deleted meanwhile): every control returns once its events are stored.
    ///
    /// `Conflict` when the session is not running, or (scanning) already paired or shows no
    /// QR code.
    pub async fn act(&self, session: &Session, action: SandboxAction) -> Result<Option<Session>, SupervisorError> {
        let control = self.supervisor.sandbox(session)?;
        let scan = matches!(action, SandboxAction::ScanQr { .. });
        if scan && session.identity.is_none() {
            // The phone scans what the screen shows: wait for the first QR of a session that just started.
            self.supervisor.current_qr(session).await?;
        }
        let already_paired = || SupervisorError::Conflict("session is already paired; nothing to scan".into());
        if scan && session.identity.is_some() {
            return Err(already_paired());
        }
        match action {
            SandboxAction::ScanQr { phone, push_name, platform } => match control.scan_qr(phone, push_name, platform).await {
                Err(EngineError::AlreadyPaired) => return Err(already_paired()),
                other => other?,
            },
            SandboxAction::EnterPairingCode(code) => control.enter_pairing_code(&code).await?,
            SandboxAction::Disconnect => control.disconnect().await?,
            SandboxAction::Unlink => control.unlink().await?,
        }
        Ok(self.store.get_session(&session.org, &session.id).await?)
    }

    /// A message from `from` arrives at the running sandbox session; returns it as stored.
    /// `Upstream` when the session is not connected.
    pub async fn receive(
        &self,
        session: &Session,
        from: Phone,
        push_name: Option<String>,
        content: Content,
    ) -> Result<Message, SupervisorError> {
        let control = self.supervisor.sandbox(session)?;
        let wa_message_id = control.receive(from, push_name, content).await?;
        self.store
            .find_by_wa_id(&session.id, &wa_message_id)
            .await?
            .ok_or_else(|| SupervisorError::Engine(EngineError::Internal("the received message was not stored".into())))
    }
}
