//! The engines this build runs: the real WhatsApp engine and the sandbox.

use std::sync::Arc;

use wagate_engine::Engine;
use wagate_sandbox::SandboxEngine;
use wagate_whatsapp::{WhatsappConfig, WhatsappEngine};

use crate::config::Config;

pub fn build(config: &Config) -> Vec<Arc<dyn Engine>> {
    let wa = &config.whatsapp;
    let whatsapp = WhatsappConfig {
        ws_url: wa.url.clone(),
        version: wa.version,
        device_name: wa.device_name.clone(),
        max_concurrent_connects: wa.max_concurrent_connects,
        connect_timeout: wa.connect_timeout,
        media_max_bytes: u64::try_from(config.messaging.media_max_bytes).unwrap_or(u64::MAX),
        ..WhatsappConfig::new(&config.data_dir)
    };
    vec![Arc::new(WhatsappEngine::new(whatsapp)), Arc::new(SandboxEngine::default())]
}
