//! The acceptance of the real `whatsapp` engine, end to end through the API, against the
//! WhatsApp emulator (server + phone): QR and code pairing, identity on `/me` and the wawp
//! `/v2/session/me`, resume after a gateway restart and after `:stop`/`:start`, logout,
//! unlink, replaced stream, refused login and a dropped connection.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wa_emulator::{AccountSpec, Emulator, EmulatorConfig, ServerEvent};
use wagate::config::Layer;

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// The first login after pairing waits ~10 s for the phone's app-state keys (the real
/// client's grace period); the box is a loaded 2-core machine.
const PAIRING: u64 = 90;
const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) async fn setup() -> (Emulator, TestApp) {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let env = Layer {
        wa_url: Some(emulator.ws_url()),
        wa_version: Some("2.3000.1027934701".into()),
        wa_connect_timeout: Some(5),
        ..Layer::default()
    };
    let app = spawn_app_with(Backend::Sqlite, env).await.unwrap();
    (emulator, app)
}

async fn current_qr(app: &TestApp, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = app.get(&format!("/api/v1/sessions/{id}/qr")).await;
        if answer.status == 200 {
            return answer.json()["qr"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no QR code: {}", answer.json());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phone_spec(phone: &str, push_name: &str) -> AccountSpec {
    AccountSpec { phone: Some(phone.into()), push_name: Some(push_name.into()), platform: Some("android".into()) }
}

/// A `whatsapp` session paired by QR with the emulated phone `phone`; returns (id, session).
pub(crate) async fn paired_by_qr(app: &TestApp, emulator: &Emulator, phone: &str) -> (String, Value) {
    let s = app.create_session(json!({"name": format!("wa-{phone}")})).await;
    assert_eq!(s["engine"], "whatsapp");
    let id = s["id"].as_str().unwrap().to_owned();
    let qr = current_qr(app, &id).await;
    assert!(qr.starts_with("2@"), "the client's own QR string: {qr}");
    emulator.scan_qr(&qr, phone_spec(phone, "Ada Lovelace")).await.expect("the phone scans the QR");
    let s = app.wait_for(&id, PAIRING, |s| s["status"] == "connected").await;
    (id, s)
}

fn logins(emulator: &Emulator) -> usize {
    emulator.events().iter().filter(|e| matches!(e, ServerEvent::LoggedIn { .. })).count()
}

fn registrations(emulator: &Emulator) -> usize {
    emulator.events().iter().filter(|e| matches!(e, ServerEvent::Registration { .. })).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_pairing_identity_and_resume_without_repairing() {
    let (emulator, app) = setup().await;
    let (id, s) = paired_by_qr(&app, &emulator, "15550100101").await;
    let account = emulator.account("15550100101").unwrap();
    assert_eq!(s["statusReason"], Value::Null);

    let me = app.get(&format!("/api/v1/sessions/{id}/me")).await.json();
    assert_eq!(me["phoneNumber"], "15550100101", "{me}");
    assert_eq!(me["waJid"], account.jid, "{me}");
    assert_eq!(me["waLid"], account.lid, "{me}");
    assert_eq!(me["pushName"], "Ada Lovelace", "{me}");
    assert_eq!(me["connected"], true, "{me}");

    let instance = s["instanceId"].as_str().unwrap();
    let wawp = app
        .call(Method::GET, &format!("/v2/session/me?instance_id={instance}&access_token={}", app.key), None, None)
        .await;
    assert_eq!(wawp.status, 200);
    assert_eq!(
        wawp.json(),
        json!({"id": "15550100101@c.us", "pushName": "Ada Lovelace", "platform": "android",
               "me": {"id": "15550100101@c.us", "name": "Ada Lovelace"}})
    );

    // Gateway restart: the session comes back from its stored keys, without a new pairing.
    let (before_logins, before_registrations) = (logins(&emulator), registrations(&emulator));
    let app = app.restart().await;
    let s = app.wait_for(&id, PAIRING, |s| s["status"] == "connected").await;
    assert_eq!(s["phoneNumber"], "15550100101", "{s}");
    assert!(logins(&emulator) > before_logins, "logged in again");
    assert_eq!(registrations(&emulator), before_registrations, "no new pairing");

    // :stop then :start, likewise.
    let stopped = app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await.json();
    assert_eq!(stopped["status"], "stopped");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while emulator.online() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emulator.online(), 0, "the stopped session hung up");
    let before = logins(&emulator);
    app.post(&format!("/api/v1/sessions/{id}:start"), json!({})).await;
    app.wait_for(&id, PAIRING, |s| s["status"] == "connected").await;
    assert!(logins(&emulator) > before);
    assert_eq!(registrations(&emulator), before_registrations, "no new pairing");
    assert_eq!(app.get(&format!("/api/v1/sessions/{id}/me")).await.json()["pushName"], "Ada Lovelace");

    // A dropped connection goes `reconnecting`, then comes back.
    let jid = &emulator.account("15550100101").unwrap().devices[0].jid;
    assert_eq!(emulator.drop_connections(Some(jid)), 1);
    let s = app.wait_for(&id, 30, |s| s["status"] == "reconnecting").await;
    assert!(s["statusReason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
    app.wait_for(&id, PAIRING, |s| s["status"] == "connected").await;

    // Another login of the same device replaces this stream: reported, and not retried.
    emulator.replace(jid).unwrap();
    let s = app.wait_for(&id, 30, |s| s["status"] == "failed").await;
    assert_eq!(s["statusReason"], "stream_replaced", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_then_logout_reaches_the_phone() {
    let (emulator, app) = setup().await;
    let s = app.create_session(json!({"name": "by-code"})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    current_qr(&app, &id).await; // started and talking to the server
    let answer = app.post(&format!("/api/v1/sessions/{id}:requestPairingCode"), json!({"phone": "15550100102"})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let code = answer.json()["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 9, "ABCD-EFGH: {code}");

    let device = emulator.enter_code("15550100102", &code).await.expect("the phone accepts the code");
    let s = app.wait_for(&id, PAIRING, |s| s["status"] == "connected").await;
    assert_eq!(s["phoneNumber"], "15550100102", "{s}");

    let s = app.post(&format!("/api/v1/sessions/{id}:logout"), json!({})).await.json();
    assert_eq!(s["status"], "logged_out", "{s}");
    let removed = emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::RemoveCompanionDevice { .. }))
        .await
        .unwrap();
    assert_eq!(removed, ServerEvent::RemoveCompanionDevice { jid: device.jid.clone(), reason: "user_initiated".into() });
    assert!(emulator.device(&device.jid).is_none(), "the phone no longer lists the device");
    app.get(&format!("/api/v1/sessions/{id}/me")).await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_from_the_phone_and_refused_logins() {
    let (emulator, app) = setup().await;
    let (first, _) = paired_by_qr(&app, &emulator, "15550100103").await;
    let (second, _) = paired_by_qr(&app, &emulator, "15550100104").await;

    // The phone removes the first device: logged out, with the reason.
    let jid = emulator.account("15550100103").unwrap().devices[0].jid.clone();
    emulator.unlink(&jid).unwrap();
    let s = app.wait_for(&first, 30, |s| s["status"] == "logged_out").await;
    assert_eq!(s["statusReason"], "device_removed", "{s}");
    assert_eq!(s["phoneNumber"], Value::Null);

    // The server refuses the second device's next login.
    app.post(&format!("/api/v1/sessions/{second}:stop"), json!({})).await;
    emulator.refuse_logins(Some(401));
    app.post(&format!("/api/v1/sessions/{second}:start"), json!({})).await;
    let s = app.wait_for(&second, 60, |s| s["status"] == "logged_out").await;
    let reason = s["statusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("401") || reason.contains("logged_out") || reason.contains("unauthorized"), "{s}");
    assert!(emulator.events().iter().any(|e| matches!(e, ServerEvent::LoginRefused { reason: 401, .. })));
}
