//! A local webhook receiver for the tests: an axum server on 127.0.0.1:0 that records every
//! request and answers what it is told, and the receiver-side signature check (what the
//! README shows a user, written here without the gateway's own code).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The `webhook-id`.
    pub fn id(&self) -> String {
        self.header("webhook-id").to_owned()
    }
}

/// A scripted answer: its status, and an extra header.
type Answer = (u16, Option<(&'static str, String)>);

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    /// Answers to give first, in turn (status, extra header).
    script: Mutex<VecDeque<Answer>>,
    /// The answer once the script is spent.
    default_status: AtomicU16,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner { default_status: AtomicU16::new(200), ..Inner::default() });
        let app = {
            let inner = Arc::clone(&inner);
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
                let inner = Arc::clone(&inner);
                async move { answer(&inner, uri, headers, body) }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { base, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers these statuses first, in turn.
    pub fn script(&self, statuses: &[u16]) {
        self.inner.script.lock().unwrap().extend(statuses.iter().map(|s| (*s, None)));
    }

    /// Answers `status` with one extra header next.
    pub fn script_with_header(&self, status: u16, name: &'static str, value: String) {
        self.inner.script.lock().unwrap().push_back((status, Some((name, value))));
    }

    /// What to answer once the script is spent (200 at first).
    pub fn answer_with(&self, status: u16) {
        self.inner.default_status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests that came to `path`.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Polls until `done` holds for what was received (panics after `secs`).
    pub async fn wait_until(&self, secs: u64, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; received {}", received.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn answer(inner: &Inner, uri: Uri, headers: HeaderMap, body: String) -> Response {
    inner.received.lock().unwrap().push(Received { path: uri.path().to_owned(), headers, body });
    let (status, header) = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((inner.default_status.load(Ordering::SeqCst), None));
    let mut res = StatusCode::from_u16(status).unwrap().into_response();
    if let Some((name, value)) = header {
        res.headers_mut().insert(name, value.parse().unwrap());
    }
    res
}

/// The receiver's check, as the README shows it: HMAC-SHA256 of `id.timestamp.body` keyed with
/// the base64-decoded secret after `whsec_`, compared with each `v1,` signature of the header.
/// Returns which of `secrets` signed, in header order.
pub fn signed_by(r: &Received, secrets: &[&str]) -> Vec<usize> {
    let content = format!("{}.{}.{}", r.header("webhook-id"), r.header("webhook-timestamp"), r.body);
    let mut signers = Vec::new();
    for signature in r.header("webhook-signature").split(' ') {
        let given = signature.strip_prefix("v1,").expect("a v1 signature");
        for (i, secret) in secrets.iter().enumerate() {
            let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
            let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), content.as_bytes());
            if STANDARD.encode(tag.as_ref()) == given {
                signers.push(i);
            }
        }
    }
    signers
}
