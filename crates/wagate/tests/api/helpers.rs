//! `spawn_app`: the real gateway on 127.0.0.1:0 with a fresh database, and a client for it.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wagate::Application;
use wagate::config::{Config, Layer, Secret};
use wagate_core::{ApiKeyId, ApiKeyRecord, Capabilities, OrgId};
use wagate_store::prelude::*;

/// Which database a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The bootstrap key of organization `default` (every capability).
    pub key: String,
    pub store: Arc<dyn Store>,
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<wagate_store::testing::TestDbGuard>,
}

/// A fresh SQLite-backed gateway.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, Layer::default()).await.expect("SQLite is always available")
}

/// A fresh gateway on `backend`; `None` (after saying so) when PostgreSQL is not configured.
pub async fn spawn_app_with(backend: Backend, overrides: Layer) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, pg) = match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.path().join("wagate.db").display()), None),
        Backend::Postgres => {
            let Some(admin) = wagate_store::testing::postgres_url_from_env() else {
                eprintln!("skipped: WAGATE_TEST_POSTGRES_URL not set");
                return None;
            };
            let (url, guard) = wagate_store::testing::fresh_postgres(&admin).await.expect("fresh PostgreSQL database");
            (url, Some(guard))
        }
    };
    let flags = Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        database_url: Some(Secret::new(database_url)),
        ..Layer::default()
    };
    let config = Config::resolve(None, flags, overrides).expect("valid test configuration");
    Some(start(config, Some(dir), pg).await)
}

async fn start(config: Config, dir: Option<tempfile::TempDir>, pg: Option<wagate_store::testing::TestDbGuard>) -> TestApp {
    let app = Application::build(&config).await.expect("the gateway builds");
    let key = app.bootstrap_key().map(str::to_owned).unwrap_or_default();
    let base = format!("http://{}", app.local_addr());
    let store = Arc::clone(&app.state().store);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        key,
        store,
        config,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _pg: pg,
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// Asserts the documented error envelope with `code`, returning `details`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "status; body: {body}");
        assert_eq!(body["error"]["code"], code, "code; body: {body}");
        assert!(body["error"]["message"].is_string(), "message; body: {body}");
        assert!(body["error"]["details"].is_object(), "details; body: {body}");
        body["error"]["details"].clone()
    }

    #[track_caller]
    pub fn assert_validation(&self, field: &str) {
        let details = self.assert_error(400, "validation_error");
        assert_eq!(details["field"], field, "field named in details: {details}");
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Answer { status: res.status(), headers: res.headers().clone(), bytes: res.bytes().await.expect("body").to_vec() }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.key), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(&self.key), Some(body)).await
    }

    /// Creates a session with `body` and returns it (asserting 201).
    pub async fn create_session(&self, body: Value) -> Value {
        let a = self.post("/api/v1/sessions", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&a.bytes));
        a.json()
    }

    pub async fn sandbox_session(&self) -> String {
        self.create_session(json!({"engine": "sandbox"})).await["id"].as_str().unwrap().to_owned()
    }

    /// A new API key in `org` with `caps`, inserted straight into the store.
    pub async fn key_for(&self, org: &str, caps: &str) -> (String, ApiKeyId) {
        let key = wagate_auth::apikey::generate();
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(),
            org: OrgId::parse(org).unwrap(),
            name: format!("test {caps}"),
            capabilities: Capabilities::parse_list(caps).unwrap(),
            hash: key.hash,
            created_at: wagate_core::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        self.store.insert_api_key(&record).await.unwrap();
        (key.secret, record.id)
    }

    /// Stops the server gracefully and waits for it (sessions are stopped cleanly).
    pub async fn stop(mut self) -> (Config, Option<tempfile::TempDir>, Option<wagate_store::testing::TestDbGuard>) {
        self.shutdown_now().await;
        (self.config.clone(), self._dir.take(), self._pg.take())
    }

    async fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran cleanly");
        }
    }

    /// Restarts the gateway on the same database and data directory (a new port).
    pub async fn restart(self) -> TestApp {
        let key = self.key.clone();
        let (mut config, dir, pg) = self.stop().await;
        config.listen = "127.0.0.1:0".into();
        let mut app = start(config, dir, pg).await;
        // The bootstrap key is printed only on the first start; it stays valid.
        app.key = key;
        app
    }

    /// Polls the session until `pred` holds (or panics after `secs`).
    pub async fn wait_for(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let s = self.get(&format!("/api/v1/sessions/{id}")).await.json();
            if pred(&s) {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting; last state: {s}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Reads an open `text/event-stream` answer event by event.
pub struct SseReader {
    res: reqwest::Response,
    buf: String,
    /// Comment lines (keep-alives) seen so far.
    pub comments: usize,
}

impl SseReader {
    /// Opens `GET path` as a stream (asserting 200 and the content type).
    pub async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = app.client.get(app.url(path)).bearer_auth(&app.key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.expect("stream request sent");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        SseReader { res, buf: String::new(), comments: 0 }
    }

    /// The next event, or `None` when the stream ends; panics after `secs` without one.
    pub async fn next(&mut self, secs: u64) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                        id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:")) {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                        data.push(v.to_owned());
                    }
                }
                if !data.is_empty() {
                    return Some(SseMessage { id, event, data: data.join("\n") });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {secs} s; buffered: {:?}", self.buf))
                .expect("stream readable")?;
            self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize, secs: u64) -> Vec<SseMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next(secs).await.expect("the stream stays open"));
        }
        out
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
