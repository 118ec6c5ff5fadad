//! wagate's runtime: what runs beside the HTTP API and below it. The session
//! [`supervisor::Supervisor`] (every running session's lifecycle), the readers of the event log
//! ([`events::EventHub`], retention) and the gateway's [`metrics::Metrics`]; the services that
//! turn API calls and engine traffic into stored state plus events move here next.

pub mod events;
pub mod metrics;
pub mod supervisor;
#[cfg(test)]
mod testing;

pub use events::{EventConfig, EventHub};
pub use metrics::Metrics;
pub use supervisor::{Supervisor, SupervisorConfig, SupervisorError};
