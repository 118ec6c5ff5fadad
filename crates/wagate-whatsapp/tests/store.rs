//! Keys on disk: one SQLite file per session that survives stop/start, and `purge` removes
//! it with its `-wal`/`-shm` companions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wagate_engine::{Engine, SessionOutput};
use wagate_whatsapp::WhatsappEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_restart_and_purge_deletes_it() {
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = WhatsappEngine::new(config(dir.path(), addr));
    let sink = Arc::new(RecordingSink::default());
    let spec = spec();
    let db = dir.path().join("whatsapp").join(format!("{}.db", spec.id.as_str()));

    let session = engine.start(spec.clone(), SessionOutput::new(sink.clone())).await.unwrap();
    sink.wait_until(PATIENCE, "a reconnect report", |e| !reconnects(e).is_empty()).await;
    tokio::time::timeout(Duration::from_secs(30), session.stop()).await.expect("stop");
    assert!(db.exists(), "the key store stays after stop");
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 0);

    // Start again on the same store: it opens and runs (resuming from the stored keys).
    let sink2 = Arc::new(RecordingSink::default());
    let session = engine.start(spec.clone(), SessionOutput::new(sink2.clone())).await.unwrap();
    sink2.wait_until(PATIENCE, "a reconnect report after restart", |e| !reconnects(e).is_empty()).await;
    tokio::time::timeout(Duration::from_secs(30), session.stop()).await.expect("stop");

    // Make sure companions are there, as SQLite leaves them, then purge. Only created when
    // missing: overwriting a live `-shm` (memory-mapped by a connection the client may still be
    // closing) would crash that connection with SIGBUS.
    let wal = db.with_extension("db-wal");
    let shm = db.with_extension("db-shm");
    for companion in [&wal, &shm] {
        let _ = std::fs::OpenOptions::new().write(true).create_new(true).open(companion);
    }
    engine.purge(&spec.id).await.unwrap();
    assert!(!db.exists() && !wal.exists() && !shm.exists(), "purge removes the store and its companions");
    engine.purge(&spec.id).await.expect("purge is idempotent");
}
