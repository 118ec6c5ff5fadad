//! `kill -9` of a real gateway process while events pour in from several clients (inbound
//! sandbox messages, and `:test`s): after a restart, every event the API acknowledged (every
//! message `sandbox:receive` answered 200, every `:test` answered 202, everything in the log)
//! reaches the receiver at least once (deduplicated by `webhook-id`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::crash::serve_with;
use crate::messages_crash::paired;
use crate::receiver::Receiver;

async fn call(client: &reqwest::Client, base: &str, key: &str, method: Method, path: &str, body: Option<Value>) -> reqwest::Result<(u16, Value)> {
    let mut req = client.request(method, format!("{base}{path}")).bearer_auth(key).timeout(Duration::from_secs(20));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// Every event id of the organization, through the API.
async fn all_event_ids(client: &reqwest::Client, base: &str, key: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut token = String::new();
    loop {
        let path = format!("/api/v1/events?pageSize=500&pageToken={token}");
        let (_, page) = call(client, base, key, Method::GET, &path, None).await.unwrap();
        ids.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => return ids,
        }
    }
}

async fn kill_9_mid_flood_loses_no_event(database_url: Option<&str>) {
    const CLIENTS: usize = 4;
    const SESSIONS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let mut env = vec![("WAGATE_WEBHOOK_ALLOW_PRIVATE", "true"), ("WAGATE_WEBHOOK_RETRY_SCHEDULE", "100ms,200ms,500ms,1s,1s,1s,1s,1s")];
    if let Some(url) = database_url {
        env.push(("WAGATE_DATABASE_URL", url));
    }
    let gw = serve_with(dir.path(), true, &env);
    let key = gw.key.clone().expect("bootstrap key on the first start");
    let client = reqwest::Client::new();
    let (status, hook) = call(&client, &gw.base, &key, Method::POST, "/api/v1/webhooks", Some(json!({"url": rx.url("/hook")}))).await.unwrap();
    assert_eq!(status, 201, "{hook}");
    let hook = hook["id"].as_str().unwrap().to_owned();
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        sessions.push(paired(&client, &gw.base, &key, &format!("6281000000{i:02}")).await);
    }

    // Several clients: inbound messages (`sandbox:receive`, whose 200 is the stored message)
    // and, one request in four, `:test` (whose 202 names its event), until killed.
    let tests = Arc::new(Mutex::new(HashSet::new()));
    let messages = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sessions = Arc::new(sessions);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, key, hook) = (client.clone(), gw.base.clone(), key.clone(), hook.clone());
        let (tests, messages, stop, sessions) = (Arc::clone(&tests), Arc::clone(&messages), Arc::clone(&stop), Arc::clone(&sessions));
        clients.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                if n % 4 == 0 {
                    let Ok((status, body)) = call(&client, &base, &key, Method::POST, &format!("/api/v1/webhooks/{hook}:test"), Some(json!({}))).await else { return };
                    if status == 202 {
                        tests.lock().unwrap().insert(body["eventId"].as_str().unwrap().to_owned());
                    }
                } else {
                    let session = &sessions[n % sessions.len()];
                    let inbound = json!({"from": format!("62822222{c:04}"), "text": format!("message {n} from client {c}")});
                    let Ok((status, body)) = call(&client, &base, &key, Method::POST, &format!("/api/v1/sessions/{session}/sandbox:receive"), Some(inbound)).await else { return };
                    if status == 200 {
                        messages.lock().unwrap().insert(body["id"].as_str().unwrap().to_owned());
                    }
                }
                n += 1;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages.lock().unwrap().len() < 300 || rx.received().len() < 50 {
        assert!(Instant::now() < deadline, "flood too slow: {} messages acknowledged", messages.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL, mid-flood
    gw.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let tests = tests.lock().unwrap().clone();
    let messages = messages.lock().unwrap().clone();
    let before_restart = rx.received().len();

    // Restarted: what was committed before the kill, acknowledged or not, arrives.
    let gw = serve_with(dir.path(), false, &env);
    let committed = all_event_ids(&client, &gw.base, &key).await;
    assert!(tests.is_subset(&committed), "an acknowledged test event is in the log");
    let received = rx
        .wait_until(60, "every committed event", |r| {
            let seen: HashSet<String> = r.iter().map(|x| x.id()).collect();
            committed.is_subset(&seen)
        })
        .await;
    // Every acknowledged inbound message arrived as its `message.received` event.
    let delivered: HashSet<String> = received
        .iter()
        .map(|r| r.json())
        .filter(|e| e["type"] == "message.received")
        .filter_map(|e| e["data"]["id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = messages.difference(&delivered).collect();
    assert!(missing.is_empty(), "{} acknowledged messages never delivered, e.g. {:?}", missing.len(), missing.first());
    let distinct: HashSet<String> = received.iter().map(|r| r.id()).collect();
    eprintln!(
        "{} events committed ({} acknowledged messages, {} acknowledged tests), {} requests received ({} before the restart), {} distinct",
        committed.len(),
        messages.len(),
        tests.len(),
        received.len(),
        before_restart,
        distinct.len()
    );
}

#[tokio::test]
async fn kill_9_mid_flood_loses_no_webhook_delivery_on_sqlite() {
    kill_9_mid_flood_loses_no_event(None).await;
}

#[tokio::test]
async fn kill_9_mid_flood_loses_no_webhook_delivery_on_postgres() {
    let Some(admin) = wagate_store::testing::postgres_url_from_env() else {
        eprintln!("skipped: WAGATE_TEST_POSTGRES_URL not set");
        return;
    };
    let (url, _guard) = wagate_store::testing::fresh_postgres(&admin).await.expect("fresh PostgreSQL database");
    kill_9_mid_flood_loses_no_event(Some(&url)).await;
}
