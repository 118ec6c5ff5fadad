//! wagate's runtime: what runs beside the HTTP API and below it. For now the readers of the
//! event log ([`events::EventHub`], retention) and the gateway's [`metrics::Metrics`]; the
//! session supervisor and the services that turn API calls and engine traffic into stored
//! state plus events move here next.

pub mod events;
pub mod metrics;

pub use events::{EventConfig, EventHub};
pub use metrics::Metrics;
