//! The real client, through `WhatsappEngine`, against local endpoints that refuse, drop or
//! stall: the engine keeps reporting `Reconnecting` with growing delays, never crashes and
//! never goes silent, and `stop()` ends it promptly for good.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use wagate_engine::{Engine, EngineEvent, SessionOutput};
use wagate_whatsapp::WhatsappEngine;

/// Starts one session against `addr`, waits for `n` reconnect reports, checks them, stops.
async fn assert_keeps_retrying(addr: std::net::SocketAddr, n: usize, reason_hint: &str) {
    let dir = tempfile::tempdir().unwrap();
    let engine = WhatsappEngine::new(config(dir.path(), addr));
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.expect("start");

    sink.wait_until(PATIENCE, "reconnect reports", |e| reconnects(e).len() >= n).await;
    let events = sink.events();
    assert!(
        events.iter().all(|e| matches!(e, EngineEvent::Reconnecting { .. })),
        "only Reconnecting expected: {events:#?}"
    );
    let r = reconnects(&events);
    for (i, (attempt, _, reason)) in r.iter().enumerate() {
        assert_eq!(*attempt as usize, i + 1, "attempts count up: {r:#?}");
        assert!(!reason.is_empty());
    }
    assert!(
        r.iter().any(|(_, _, reason)| reason.contains(reason_hint)),
        "a reason should mention {reason_hint:?}: {r:#?}"
    );
    for w in r.windows(2) {
        assert!(w[1].1 >= w[0].1, "retry_in never shrinks: {r:#?}");
    }
    assert!(r[n - 1].1 > r[0].1, "retry_in grows: {r:#?}");

    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), session.stop()).await.expect("stop() returns");
    let stopped_after = t.elapsed();
    eprintln!("stop took {stopped_after:?}");
    let count = sink.events().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.events().len(), count, "no reconnect after stop (stop took {stopped_after:?})");
    // stop() is idempotent.
    tokio::time::timeout(Duration::from_secs(10), session.stop()).await.expect("second stop() returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_closed() {
    let addr = closed_port().await;
    assert_keeps_retrying(addr, 4, "refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_before_the_upgrade() {
    let server = Server::start(Behaviour::CloseTcp).await;
    assert_keeps_retrying(server.addr, 4, "WebSocket connect failed").await;
    assert!(server.accepted.load(Ordering::SeqCst) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_right_after_the_upgrade() {
    let server = Server::start(Behaviour::CloseAfterUpgrade).await;
    assert_keeps_retrying(server.addr, 4, "handshake").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_drops_after_the_first_frame() {
    let server = Server::start(Behaviour::DropAfterFirstFrame).await;
    assert_keeps_retrying(server.addr, 4, "handshake").await;
    assert!(!server.first_messages.lock().unwrap().is_empty(), "the client sent its hello each time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stalls_before_the_upgrade() {
    let server = Server::start(Behaviour::StallTcp).await;
    // Each attempt waits out connect_timeout (2 s here).
    assert_keeps_retrying(server.addr, 3, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stalls_the_noise_handshake() {
    let server = Server::start(Behaviour::StallAfterUpgrade).await;
    assert_keeps_retrying(server.addr, 3, "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_stalled_attempt_is_prompt() {
    let server = Server::start(Behaviour::StallAfterUpgrade).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), server.addr);
    cfg.connect_timeout = Duration::from_secs(60); // the attempt would hang for a minute
    let engine = WhatsappEngine::new(cfg);
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap();
    // Wait until the client is connected to the stalling server.
    let deadline = Instant::now() + PATIENCE;
    while server.first_messages.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "client never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), session.stop()).await.expect("stop() cuts the attempt short");
    eprintln!("stop took {:?}", t.elapsed());
    assert!(sink.events().is_empty(), "nothing to report: {:#?}", sink.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_a_stalled_dial_is_prompt() {
    let server = Server::start(Behaviour::StallTcp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), server.addr);
    cfg.connect_timeout = Duration::from_secs(60); // the dial would hang for a minute
    let engine = WhatsappEngine::new(cfg);
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while server.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "client never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), session.stop()).await.expect("stop() cuts the dial short");
    eprintln!("stop took {:?}", t.elapsed());
    assert!(sink.events().is_empty(), "nothing to report: {:#?}", sink.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_are_capped_across_sessions() {
    let server = Server::start(Behaviour::StallTcp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), server.addr);
    cfg.max_concurrent_connects = 2;
    cfg.connect_timeout = Duration::from_secs(3);
    let engine = WhatsappEngine::new(cfg);
    let sink = Arc::new(RecordingSink::default());
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap());
    }
    sink.wait_until(PATIENCE, "every session retrying", |e| reconnects(e).len() >= 8).await;
    assert!(server.accepted.load(Ordering::SeqCst) >= 5);
    // Each attempt holds its connection for the 3 s connect timeout; without the cap all 5
    // would overlap from their start. The server sees a hang-up late on a loaded machine, so
    // only the first second of each observed lifetime is counted: with the cap, an attempt
    // starts only once another one's connection has closed.
    let max = server.max_concurrent(Duration::from_secs(2));
    assert!(max <= 2, "at most 2 connection attempts at once, saw {max}");
    for s in sessions {
        tokio::time::timeout(Duration::from_secs(30), s.stop()).await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_without_a_connection_is_an_upstream_error() {
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = WhatsappEngine::new(config(dir.path(), addr));
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap();
    let phone = wagate_core::Phone::parse("628123456789").unwrap();
    let pairing = session.pairing().expect("pairing");
    let err = tokio::time::timeout(Duration::from_secs(30), pairing.request_pairing_code(&phone))
        .await
        .expect("bounded")
        .expect_err("not connected");
    assert!(matches!(err, wagate_engine::EngineError::Upstream(_)), "{err:?}");
    session.stop().await;
    let err = pairing.request_pairing_code(&phone).await.expect_err("stopped");
    assert!(matches!(err, wagate_engine::EngineError::InvalidState(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_a_connection_still_ends_the_session() {
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = WhatsappEngine::new(config(dir.path(), addr));
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.unwrap();
    sink.wait_until(PATIENCE, "a reconnect report", |e| !reconnects(e).is_empty()).await;
    tokio::time::timeout(Duration::from_secs(30), session.logout()).await.expect("bounded").expect("logout");
    let count = sink.events().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.events().len(), count, "no reconnect after logout: {:#?}", sink.events());
}
