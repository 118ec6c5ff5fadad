//! The wagate binary's library half: configuration, CLI commands and the application, so
//! integration tests can start the real server in-process on port 0.

pub mod app;
pub mod cli;
pub mod config;
pub mod engines;
pub mod server;

pub use app::Application;
pub use config::Config;
