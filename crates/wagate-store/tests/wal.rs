//! The SQLite write-ahead log shrinks again after a write burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wagate_core::{EngineKind, InstanceId, NewSession, OrgId, SessionId, SessionStatus};
use wagate_store::prelude::*;
use wagate_store::{PageRequest, SqliteStore};

fn wal_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_shrinks_after_a_write_burst() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wagate.db");
    let wal = dir.path().join("wagate.db-wal");
    let store = Arc::new(SqliteStore::connect(&format!("sqlite://{}", db.display())).await.unwrap());
    let org = OrgId::parse("acme").unwrap();
    store.ensure_org(&org).await.unwrap();

    let biggest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (biggest, done, wal) = (Arc::clone(&biggest), Arc::clone(&done), wal.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                biggest.fetch_max(wal_len(&wal), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    // Writers and readers at once, as under load.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, org) = (Arc::clone(&store), org.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..400 {
                let new = NewSession {
                    id: SessionId::generate(),
                    org: org.clone(),
                    instance_id: InstanceId::generate(),
                    name: Some(format!("writer {w} session {i} {}", "x".repeat(200))),
                    engine: EngineKind::Sandbox,
                    status: SessionStatus::Stopped,
                    desired_running: false,
                    device_name: None,
                    created_at: wagate_core::now(),
                };
                store.insert_session(&new).await.unwrap();
                if i % 10 == 0 {
                    store.list_sessions(&org, PageRequest { size: 50, after: None }).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = biggest.load(Ordering::Relaxed);
    const BOUND: u64 = 2 * 1024 * 1024;
    assert!(peak > BOUND, "the burst should grow the WAL past {BOUND} bytes (peak {peak})");

    // No further writes: the gateway is idle after the burst, and the WAL must still shrink.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len = wal_len(&wal);
        if len <= BOUND {
            break;
        }
        assert!(Instant::now() < deadline, "the WAL stayed at {len} bytes after the burst (peak {peak})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = store.list_sessions(&org, PageRequest { size: 10, after: None }).await.unwrap();
    assert_eq!(page.items.len(), 10, "nothing lost");
}
