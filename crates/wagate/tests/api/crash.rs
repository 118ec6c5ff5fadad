//! `kill -9` of a real gateway process in the middle of lifecycle churn: every session's
//! status is the status of its latest `session.status` event, before and after a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wagate_core::{OrgId, SessionId};
use wagate_store::prelude::*;
use wagate_store::{EventFilter, PageRequest};

/// A `wagate serve` child process, killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub base: String,
    pub key: Option<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wagate serve`; on the `first` start, also waits for the bootstrap key it prints.
fn serve(data_dir: &std::path::Path, first: bool) -> Gateway {
    serve_with(data_dir, first, &[])
}

/// As [`serve`], with more `WAGATE_*` variables.
pub fn serve_with(data_dir: &std::path::Path, first: bool, env: &[(&str, &str)]) -> Gateway {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wagate"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WAGATE_DATA_DIR", data_dir)
        .env("WAGATE_LISTEN", "127.0.0.1:0")
        .env("WAGATE_LOG_FORMAT", "json");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wagate runs");
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx2.send((true, l)))));
    std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx.send((false, l)))));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut key, mut addr) = (None, None);
    while addr.is_none() || (first && key.is_none()) {
        let (stdout, line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("wagate starts");
        if stdout && line.starts_with("wag_") {
            key = Some(line);
        } else if !stdout && line.contains("wagate listening") {
            let log: Value = serde_json::from_str(&line).unwrap();
            addr = log["fields"]["addr"].as_str().map(str::to_owned);
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || rx.into_iter().for_each(drop));
    Gateway { child, base: format!("http://{}", addr.unwrap()), key }
}

async fn call(client: &reqwest::Client, gw_base: &str, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Result<Value> {
    let mut req = client.request(method, format!("{gw_base}{path}")).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await?.json().await
}

/// The status of the session's latest `session.status` event, read from the store.
async fn latest_status_event(store: &dyn Store, org: &OrgId, session: &SessionId) -> String {
    let filter = EventFilter { session: Some(session.clone()), types: Some(vec![wagate_core::EventType::SessionStatus]) };
    let page = store.list_events(org, &filter, PageRequest { size: 1, after: None }).await.unwrap();
    let data: Value = serde_json::from_str(page.items[0].data.get()).unwrap();
    data["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn kill_9_during_lifecycle_churn_keeps_status_and_events_together() {
    const SESSIONS: usize = 16;
    const CHURNERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let gw = serve(dir.path(), true);
    let key = gw.key.clone().expect("bootstrap key on the first start");
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let s = call(&client, &gw.base, &key, reqwest::Method::POST, "/api/v1/sessions", Some(json!({"engine": "sandbox", "name": format!("s{i}")}))).await.unwrap();
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    // Half of them paired, so that churn moves them through connected too.
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let phone = format!("62811{:07}", i);
            let a = call(&client, &gw.base, &key, reqwest::Method::POST, &format!("/api/v1/sessions/{id}/sandbox:scanQr"), Some(json!({"phoneNumber": phone}))).await.unwrap();
            if a["status"].is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "could not pair {id}: {a}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Churn from several clients; kill -9 once enough lifecycle calls went through.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(ids);
    let mut churners = Vec::new();
    for c in 0..CHURNERS {
        let (client, base, key, ids, done, stop) = (client.clone(), gw.base.clone(), key.clone(), Arc::clone(&ids), Arc::clone(&done), Arc::clone(&stop));
        churners.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[n % ids.len()];
                let verb = if (n / ids.len() + c) % 2 == 0 { "stop" } else { "start" };
                if call(&client, &base, &key, reqwest::Method::POST, &format!("/api/v1/sessions/{id}:{verb}"), Some(json!({}))).await.is_err() {
                    return; // the gateway is gone
                }
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "churn too slow: {} calls", done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.await.unwrap();
    }

    // What the dead process left: each status with its event.
    let org = OrgId::parse("default").unwrap();
    let url = format!("sqlite://{}", dir.path().join("wagate.db").display());
    {
        let store = wagate_store::connect(&url).await.unwrap();
        for id in ids.iter() {
            let id = SessionId::parse(id).unwrap();
            let session = store.get_session(&org, &id).await.unwrap().unwrap();
            assert_eq!(latest_status_event(store.as_ref(), &org, &id).await, session.status.as_str(), "{id} after kill -9");
        }
    }

    // Restarted: the gateway resumes the sessions; every status still has its event.
    let gw = serve(dir.path(), false);
    for id in ids.iter() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let session = call(&client, &gw.base, &key, reqwest::Method::GET, &format!("/api/v1/sessions/{id}"), None).await.unwrap();
            let events = call(&client, &gw.base, &key, reqwest::Method::GET, &format!("/api/v1/events?sessionId={id}&types=session.status&pageSize=1"), None).await.unwrap();
            let again = call(&client, &gw.base, &key, reqwest::Method::GET, &format!("/api/v1/sessions/{id}"), None).await.unwrap();
            // Compare only when the status held still around the event read.
            if session["status"] == again["status"] && events["events"][0]["data"]["status"] == session["status"] {
                break;
            }
            assert!(Instant::now() < deadline, "{id}: status {} but latest event {}", again["status"], events["events"][0]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
