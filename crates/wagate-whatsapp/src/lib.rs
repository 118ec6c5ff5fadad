//! The `whatsapp` engine of wagate: real WhatsApp Web multi-device sessions on top of
//! [`whatsapp-rust`](https://crates.io/crates/whatsapp-rust) 0.7.0.
//!
//! Only [`WhatsappEngine`], [`WhatsappConfig`] and [`Backoff`] are public: nothing above this
//! crate names a `whatsapp-rust` type. The engine reports through
//! [`wagate_engine::EventSink`]; the crate's events reach each session's loop on a bounded lane
//! (`lane.rs`), and the mapping from them is in `mapping.rs`. Traffic (messages, receipts)
//! goes to [`wagate_engine::TrafficSink`] on a path of its own (`traffic.rs`, mapped in
//! `inbound.rs`); sending and the rest of [`wagate_engine::Messaging`] are in `messaging.rs`.
//! Media goes up before a send and comes down on receipt, through the client's HTTP client
//! (test builds: `media_seam.rs`).

mod config;
mod engine;
mod inbound;
mod lane;
mod mapping;
#[cfg(feature = "test-media-seam")]
pub mod media_seam;
mod messaging;
mod session;
mod traffic;
mod transport;

#[cfg(test)]
mod tests;

pub use config::{Backoff, WhatsappConfig};
pub use engine::WhatsappEngine;
