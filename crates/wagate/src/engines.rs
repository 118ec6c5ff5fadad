//! The engines this build runs.

use std::sync::Arc;

use wagate_engine::Engine;
use wagate_engine::sandbox::SandboxEngine;

use crate::config::Config;

pub fn build(_config: &Config) -> Vec<Arc<dyn Engine>> {
    vec![Arc::new(SandboxEngine::default())]
}
