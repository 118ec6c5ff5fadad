//! The wagate binary's library half: configuration, CLI commands and the application, so
//! integration tests can start the real server in-process on port 0.

pub mod app;
pub mod cli;
pub mod config;
pub mod engines;
pub mod server;

pub use app::Application;

/// The allocator of every process that runs the gateway (the binary, its tests, the benches):
/// jemalloc, which hands the pages that traffic used and freed back to the system within
/// seconds. With glibc's malloc a connected session's share of the process grew by ~0.9 MB
/// over 1,000 messages each way while its live heap grew by less than 0.1 MB: freed memory
/// kept, fragmented, by the allocator (docs/PERFORMANCE.md, "Messaging through the emulator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub use config::Config;
