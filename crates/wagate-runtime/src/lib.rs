//! wagate's runtime: what runs beside the HTTP API and below it.
//!
//! - The session [`supervisor::Supervisor`]: every running session's lifecycle, and a handle to
//!   a running session ([`supervisor::RunningSession`]) for whatever uses its abilities.
//! - The services the API and the CLI call, which turn a request into store writes and
//!   supervisor calls: [`SessionService`], [`SandboxService`], [`ApiKeyService`], and
//!   [`MessageService`] (accepting sends, the paced per-session senders, and the traffic sink
//!   that stores what the engines receive).
//! - The readers of the event log ([`events::EventHub`], retention; [`webhooks`]: the fan-out
//!   and the delivery workers) and the gateway's [`metrics::Metrics`].

pub mod api_keys;
pub mod events;
pub mod media;
pub mod messages;
pub mod metrics;
pub mod sandbox;
pub mod sessions;
pub mod supervisor;
pub mod webhooks;
#[cfg(test)]
mod testing;

pub use api_keys::{ApiKeyService, CreateApiKey, CreatedApiKey};
pub use events::{EventConfig, EventHub};
pub use messages::{MediaSource, MessageService, MessageTraffic, MessagingConfig, SendContent, SendMedia, SendMessage};
pub use metrics::Metrics;
pub use sandbox::{SandboxAction, SandboxService};
pub use sessions::{CreateSession, SessionService};
pub use supervisor::{Supervisor, SupervisorConfig, SupervisorError};
pub use webhooks::{CreateWebhook, WebhookConfig, WebhookError, WebhookService};
