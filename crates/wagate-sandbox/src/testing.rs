//! Test helpers for users of the sandbox engine.

use std::time::Duration;

use crate::SandboxConfig;

/// Timings that keep tests quick: QR codes that last, a short connect and reconnect.
pub fn fast_sandbox() -> SandboxConfig {
    SandboxConfig {
        qr_first_ttl: Duration::from_secs(60),
        qr_next_ttl: Duration::from_secs(20),
        qr_count: 6,
        pairing_code_ttl: Duration::from_secs(180),
        reconnect_delay: Duration::from_millis(50),
        connect_delay: Duration::from_millis(5),
    }
}
