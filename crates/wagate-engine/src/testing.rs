//! Test helpers for engines and their users: a recording event sink, `eventually` for
//! conditions reached on timers (generous deadlines, no tight timing), and short-hands.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use wagate_core::{Phone, SessionId};

use crate::{EngineEvent, EventSink};

/// Deadline of every wait in the tests: far above what anything needs, even on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` every 10 ms until it returns `Some`, or panics after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

/// Records every event it receives.
#[derive(Default)]
pub struct RecordingSink {
    pub events: Mutex<Vec<EngineEvent>>,
}

impl RecordingSink {
    pub fn events(&self) -> Vec<EngineEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until at least `n` events arrived, and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<EngineEvent> {
        eventually(&format!("{n} events"), || async {
            let events = self.events();
            (events.len() >= n).then_some(events)
        })
        .await
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn emit(&self, _session: &SessionId, event: EngineEvent) {
        self.events.lock().unwrap().push(event);
    }
}
