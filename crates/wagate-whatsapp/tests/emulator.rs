//! The real client, through `WhatsappEngine`, against the WhatsApp emulator: QR pairing, the
//! 515 restart, login, reconnect from stored keys, unlink, logout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wa_emulator::{AccountSpec, Emulator, EmulatorConfig, ServerEvent};
use wagate_engine::{Engine, EngineEvent, SessionOutput};
use wagate_whatsapp::WhatsappEngine;

fn emulated(dir: &std::path::Path, emulator: &Emulator) -> WhatsappEngine {
    WhatsappEngine::new(config(dir, emulator.addr()))
}

async fn first_qr(sink: &RecordingSink) -> String {
    sink.wait_until(PATIENCE, "a QR code", |e| e.iter().any(|e| matches!(e, EngineEvent::Qr(_)))).await;
    sink.events()
        .into_iter()
        .find_map(|e| match e {
            EngineEvent::Qr(q) => Some(q.code),
            _ => None,
        })
        .unwrap()
}

fn connected_count(events: &[EngineEvent]) -> usize {
    events.iter().filter(|e| matches!(e, EngineEvent::Connected)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_pairing_connects_and_reconnects_from_stored_keys() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = emulated(dir.path(), &emulator);
    let sink = Arc::new(RecordingSink::default());
    let spec = spec();
    let session = engine.start(spec.clone(), SessionOutput::new(sink.clone())).await.expect("start");

    let qr = first_qr(&sink).await;
    let account = AccountSpec { phone: Some("15550100001".into()), push_name: Some("Ada".into()), ..Default::default() };
    let device = emulator.scan_qr(&qr, account).await.expect("the companion accepts the pair-success");
    assert_eq!(device.phone, "15550100001");

    sink.wait_until(PATIENCE, "Connected", |e| connected_count(e) >= 1).await;
    let identity = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            EngineEvent::Paired(i) => Some(i),
            _ => None,
        })
        .expect("Paired before Connected");
    assert_eq!(identity.phone.as_str(), "15550100001");
    let account = emulator.account("15550100001").unwrap();
    assert_eq!(identity.jid, account.jid);
    assert_eq!(identity.lid.as_deref(), Some(account.lid.as_str()));
    assert_eq!(identity.platform.as_deref(), Some("android"));
    // WhatsApp names only business accounts at pairing (`<biz name>`); a personal account's
    // push name reaches the companion later, through app state.
    assert_eq!(identity.push_name, None);

    // Stop and start again from the stored keys: no new pairing, a login (IK this time).
    session.stop().await;
    let sink2 = Arc::new(RecordingSink::default());
    let mut spec2 = spec.clone();
    spec2.identity = Some(identity.clone());
    let session = engine.start(spec2, SessionOutput::new(sink2.clone())).await.expect("restart");
    sink2.wait_until(PATIENCE, "Connected again", |e| connected_count(e) >= 1).await;
    assert!(!sink2.events().iter().any(|e| matches!(e, EngineEvent::Qr(_))), "no QR for a paired session");
    let logins: Vec<_> = emulator
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::LoggedIn { pattern, .. } => Some(pattern),
            _ => None,
        })
        .collect();
    assert!(logins.len() >= 2, "{logins:?}");
    assert_eq!(logins.last().unwrap(), "ik", "a returning device uses IK: {logins:?}");

    // A dropped connection comes back by itself.
    assert_eq!(emulator.drop_connections(Some(&device.jid)), 1);
    sink2
        .wait_until(PATIENCE, "Reconnecting then Connected", |e| {
            let r = e.iter().position(|e| matches!(e, EngineEvent::Reconnecting { .. }));
            r.is_some_and(|r| e[r..].iter().any(|e| matches!(e, EngineEvent::Connected)))
        })
        .await;

    // The phone unlinks the device.
    emulator.unlink(&device.jid).unwrap();
    sink2
        .wait_until(PATIENCE, "LoggedOut", |e| e.iter().any(|e| matches!(e, EngineEvent::LoggedOut { .. })))
        .await;
    session.stop().await;
    assert!(emulator.device(&device.jid).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_then_logout_reaches_the_server() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), emulator.addr());
    cfg.pairing_code_timeout = Duration::from_secs(30);
    let engine = WhatsappEngine::new(cfg);
    let sink = Arc::new(RecordingSink::default());
    let session = engine.start(spec(), SessionOutput::new(sink.clone())).await.expect("start");
    first_qr(&sink).await;

    let phone = wagate_core::Phone::parse("15550100002").unwrap();
    let code = session.pairing().expect("pairing").request_pairing_code(&phone).await.expect("a pairing code");
    let device = emulator.enter_code("15550100002", &code.code).await.expect("pairing by code");
    sink.wait_until(PATIENCE, "Connected", |e| connected_count(e) >= 1).await;

    session.logout().await.expect("logout");
    let event = emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::RemoveCompanionDevice { .. }))
        .await
        .unwrap();
    assert_eq!(event, ServerEvent::RemoveCompanionDevice { jid: device.jid.clone(), reason: "user_initiated".into() });
    assert!(emulator.device(&device.jid).is_none());
}
