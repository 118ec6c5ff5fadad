//! Shared application state and the authentication extractor.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use wagate_auth::Authenticator;
use wagate_core::{Capability, Principal, Session, SessionId};
use wagate_runtime::{EventHub, MessageService, SandboxService, SessionService, Supervisor, WebhookService};
use wagate_store::prelude::*;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Everything a handler needs. Cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// For reads the runtime's services do not cover (the event log, readiness).
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    /// Every session operation.
    pub sessions: Arc<SessionService>,
    /// The `sandbox:*` routes' work.
    pub sandbox: Arc<SandboxService>,
    pub metrics: Arc<Metrics>,
    /// The live reader of the event log, for streams.
    pub events: Arc<EventHub>,
    /// Webhooks and their deliveries.
    pub webhooks: Arc<WebhookService>,
    /// Messages in and out.
    pub messages: Arc<MessageService>,
}

impl AppState {
    /// The state over `store` and `supervisor`, with the services they make, and the webhook
    /// service (whose workers the caller starts).
    pub fn new(
        store: Arc<dyn Store>,
        auth: Arc<Authenticator>,
        supervisor: Arc<Supervisor>,
        metrics: Arc<Metrics>,
        events: Arc<EventHub>,
        webhooks: Arc<WebhookService>,
        messages: Arc<MessageService>,
    ) -> Self {
        let sessions = Arc::new(SessionService::new(Arc::clone(&store), Arc::clone(&supervisor)));
        let sandbox = Arc::new(SandboxService::new(Arc::clone(&store), supervisor));
        Self { store, auth, sessions, sandbox, metrics, events, webhooks, messages }
    }

    /// The caller's session `raw_id`. Malformed ids, unknown ids and other organizations'
    /// sessions all give the same `not_found`.
    pub async fn session(&self, principal: &Principal, raw_id: &str) -> ApiResult<Session> {
        let id = SessionId::parse(raw_id).map_err(|_| ApiError::session_not_found())?;
        self.sessions.get(&principal.org, &id).await?.ok_or_else(ApiError::session_not_found)
    }
}

/// The authenticated caller. Extracting it answers 401 for a missing or bad credential.
pub struct Auth(pub Principal);

impl Auth {
    /// The principal, if it holds `capability`; `forbidden` otherwise.
    pub fn require(&self, capability: Capability) -> ApiResult<&Principal> {
        if self.0.can(capability) { Ok(&self.0) } else { Err(ApiError::forbidden(capability.as_str())) }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next();
        if values.next().is_some() {
            // Proxies disagree on which of several wins; accept none.
            return Err(ApiError::unauthorized("more than one Authorization header"));
        }
        let value = value
            .ok_or_else(|| ApiError::unauthorized("missing credential: send Authorization: Bearer <token>"))?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let (scheme, token) = value.split_once(' ').ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized("malformed Authorization header: expected Bearer <token>"));
        }
        authenticate(state, token.trim()).await.map(Auth)
    }
}

/// Authenticates a bearer token (API key or login JWT).
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<Principal> {
    state.auth.authenticate(token).await.map_err(|e| {
        if e.is_unavailable() {
            ApiError::internal(&e)
        } else {
            ApiError::unauthorized(e.client_message())
        }
    })
}
