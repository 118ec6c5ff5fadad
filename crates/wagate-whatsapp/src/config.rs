//! Settings of the WhatsApp engine.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the WhatsApp engine needs, in one place.
///
/// **Proxy support.** The WebSocket transport of `whatsapp-rust` 0.7.0
/// (`TokioWebSocketTransportFactory`) has no proxy setting: it dials the URL directly. A
/// per-session proxy is *possible* — the crate lets each client bring its own
/// `TransportFactory`, and `whatsapp_rust::transport::from_websocket` wraps any
/// already-upgraded WebSocket stream, so a factory could open the TCP stream through an
/// HTTP `CONNECT` or SOCKS5 proxy, add TLS and upgrade — but that is our code to write, not a
/// crate feature, and this engine does not implement it yet. There is therefore no `proxy`
/// field.
#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    /// Root data directory. Each session keeps its keys in one SQLite file,
    /// `DATA_DIR/whatsapp/<session_id>.db` (plus SQLite's `-wal`/`-shm` companions).
    pub data_dir: PathBuf,
    /// Override of the WhatsApp WebSocket URL (`wss://web.whatsapp.com/ws/chat` when unset).
    /// Tests point it at `ws://127.0.0.1:PORT/ws/chat`.
    pub ws_url: Option<String>,
    /// WhatsApp Web version override. When set, the client makes no online version lookup
    /// before connecting.
    pub version: Option<(u32, u32, u32)>,
    /// Name of the linked device as shown on the phone (Linked devices). Applied at pairing.
    pub device_name: String,
    /// Cap on connection attempts in flight at once across all sessions, so that a restart
    /// with hundreds of sessions does not stampede. A permit is held from dialing until the
    /// Noise handshake completes (or the attempt fails or times out). At least 1.
    pub max_concurrent_connects: usize,
    /// How long one connection attempt may take: the WebSocket dial, then the Noise handshake,
    /// each bounded by this. The crate's own bounds are 20 s each; this may only shorten them.
    pub connect_timeout: Duration,
    /// Reconnect delays after an unexpected disconnect or a failed attempt.
    pub backoff: Backoff,
    /// Upper bound on `logout()`'s call to WhatsApp; past it the session is torn down locally.
    pub logout_timeout: Duration,
    /// Upper bound on `request_pairing_code()`, waiting for the connection included.
    pub pairing_code_timeout: Duration,
    /// The largest inbound media downloaded (`WAGATE_MEDIA_MAX_BYTES`); a larger file is
    /// stored as a message without its bytes, with an error.
    pub media_max_bytes: u64,
    /// Upper bound on downloading one inbound media file.
    pub media_download_timeout: Duration,
}

impl WhatsappConfig {
    /// Defaults for a data directory: the real WhatsApp endpoint, online version lookup.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ws_url: None,
            version: None,
            device_name: "wagate".to_owned(),
            max_concurrent_connects: 16,
            connect_timeout: Duration::from_secs(20),
            backoff: Backoff::default(),
            logout_timeout: Duration::from_secs(10),
            pairing_code_timeout: Duration::from_secs(30),
            media_max_bytes: 16 * 1024 * 1024,
            media_download_timeout: Duration::from_secs(120),
        }
    }

    /// Where the keys of `session_id` live.
    pub fn store_path(&self, session_id: &str) -> PathBuf {
        self.data_dir.join("whatsapp").join(format!("{session_id}.db"))
    }
}

/// Capped exponential backoff with jitter: attempt `n` (1-based) waits
/// `min(initial * 2^(n-1), max)`, then ± `jitter` of that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction in `0.0..=0.5`; 0.1 means ±10 %. With at most 0.3 the delays of successive
    /// attempts are strictly growing until the cap.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(300), jitter: 0.1 }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based), jitter drawn from `rand01` in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, rand01: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let jitter = self.jitter.clamp(0.0, 0.5);
        let factor = 1.0 + jitter * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor)
    }

    /// The delay before retry number `attempt` (1-based), with random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), jitter: 0.0 };
        let d: Vec<_> = (1..=6).map(|n| b.delay_with(n, 0.5).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_in_bounds_and_keeps_growth() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(100), jitter: 0.1 };
        assert_eq!(b.delay_with(1, 0.0), Duration::from_millis(90));
        assert_eq!(b.delay_with(1, 1.0), Duration::from_millis(110));
        // worst case: previous attempt at +10 %, next at -10 %
        assert!(b.delay_with(2, 0.0) > b.delay_with(1, 1.0));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(u32::MAX, 0.5), b.max);
    }

    #[test]
    fn store_path_is_one_file_per_session() {
        let c = WhatsappConfig::new("/data");
        assert_eq!(c.store_path("sess_1"), PathBuf::from("/data/whatsapp/sess_1.db"));
    }
}
