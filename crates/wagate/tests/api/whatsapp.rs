//! The real `whatsapp` engine through the API, pointed (WAGATE_WA_URL, WAGATE_WA_VERSION) at
//! local endpoints that refuse, drop or stall the connection: the session reports
//! `reconnecting` with the cause, never sticks in `starting`, the gateway keeps serving, and
//! `:stop` ends the retries.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use wagate::config::Layer;

use crate::helpers::{Backend, TestApp, spawn_app_with};

enum Peer {
    /// Nothing listens: connection refused.
    Refuse,
    /// Accepts, reads the first bytes, closes.
    Drop,
    /// Accepts and never answers.
    Stall,
}

async fn endpoint(peer: Peer) -> (String, Option<tokio::task::JoinHandle<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("ws://{addr}/ws/chat");
    let task = match peer {
        Peer::Refuse => {
            drop(listener);
            None
        }
        Peer::Drop => Some(tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 64];
                let _ = sock.read(&mut buf).await;
            }
        })),
        Peer::Stall => Some(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        })),
    };
    (url, task)
}

async fn app_against(url: String) -> TestApp {
    let env = Layer {
        wa_url: Some(url),
        wa_version: Some("2.3000.1027934701".into()),
        wa_connect_timeout: Some(2),
        ..Layer::default()
    };
    spawn_app_with(Backend::Sqlite, env).await.unwrap()
}

async fn reports_reconnecting(peer: Peer) -> String {
    let (url, _server) = endpoint(peer).await;
    let app = app_against(url).await;
    let s = app.create_session(json!({"name": "real"})).await;
    assert_eq!(s["engine"], "whatsapp", "the default engine");
    let id = s["id"].as_str().unwrap().to_owned();

    let s = app.wait_for(&id, 30, |s| s["status"] == "reconnecting").await;
    let reason = s["statusReason"].as_str().expect("a reason is shown").to_owned();
    // It keeps retrying (never back to a silent `starting`), and the gateway keeps answering.
    for _ in 0..10 {
        let s = app.get(&format!("/api/v1/sessions/{id}")).await.json();
        assert!(["reconnecting", "starting"].contains(&s["status"].as_str().unwrap()), "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.get(&format!("/api/v1/sessions/{id}/qr")).await.assert_error(502, "upstream_unavailable");
    app.get(&format!("/api/v1/sessions/{id}/me")).await.assert_error(404, "not_found");
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})))
        .await
        .expect(":stop is prompt even mid-attempt")
        .json();
    assert_eq!(stopped["status"], "stopped");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.get(&format!("/api/v1/sessions/{id}")).await.json()["status"], "stopped", "no retry after stop");
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_reported_as_reconnecting() {
    let reason = reports_reconnecting(Peer::Refuse).await;
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reported_as_reconnecting() {
    reports_reconnecting(Peer::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_times_out_into_reconnecting() {
    let reason = reports_reconnecting(Peer::Stall).await;
    assert!(reason.contains("timed out"), "{reason}");
}
