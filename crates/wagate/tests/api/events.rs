//! The event log through the API: list, get, filters, paging, the stream and its resume.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wagate::config::Layer;

use crate::helpers::{Backend, SseReader, TestApp, spawn_app, spawn_app_with};

async fn events(app: &TestApp, query: &str) -> Value {
    let a = app.get(&format!("/api/v1/events{query}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.bytes));
    a.json()
}

/// The session's `session.status` events, oldest first.
async fn status_chain(app: &TestApp, session: &str) -> Vec<Value> {
    let mut list = events(app, &format!("?sessionId={session}&types=session.status&pageSize=500")).await["events"]
        .as_array()
        .unwrap()
        .clone();
    list.reverse();
    list
}

/// Each event's `previousStatus` is the status of the one before; the first has none; the
/// last is the session's status now.
#[track_caller]
fn assert_chain(chain: &[Value], current: &str) {
    assert!(!chain.is_empty());
    assert_eq!(chain[0]["data"]["previousStatus"], Value::Null, "{chain:?}");
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["data"]["previousStatus"], pair[0]["data"]["status"], "{chain:?}");
    }
    assert_eq!(chain.last().unwrap()["data"]["status"], current, "{chain:?}");
}

async fn connected_sandbox(app: &TestApp, phone: &str) -> String {
    let id = app.sandbox_session().await;
    app.wait_for(&id, 10, |s| s["status"] == "awaiting_pairing").await;
    let a = app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": phone})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.bytes));
    app.wait_for(&id, 10, |s| s["status"] == "connected").await;
    id
}

async fn list_get_filter_and_page(app: TestApp) {
    let a = connected_sandbox(&app, "628111111111").await;
    let b = app.sandbox_session().await;
    app.wait_for(&b, 10, |s| s["status"] == "awaiting_pairing").await;
    app.post(&format!("/api/v1/sessions/{b}:stop"), json!({})).await;

    let chain = status_chain(&app, &a).await;
    assert_chain(&chain, "connected");
    let chain_b = status_chain(&app, &b).await;
    assert_chain(&chain_b, "stopped");
    for event in chain.iter().chain(&chain_b) {
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["type"], "session.status");
        assert!(event["createdAt"].is_string());
        assert!(event["data"].as_object().unwrap().contains_key("statusReason"));
    }

    // Everything, newest first, page by page: the same events as one big page.
    let all: Vec<Value> = events(&app, "?pageSize=500").await["events"].as_array().unwrap().clone();
    assert_eq!(all.len(), chain.len() + chain_b.len());
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = events(&app, &format!("?pageSize=2&pageToken={token}")).await;
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["nextPageToken"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // One event: the very bytes the list shows.
    let one = app.get(&format!("/api/v1/events/{}", all[0]["id"].as_str().unwrap())).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json(), all[0]);
    assert_eq!(one.headers["content-type"], "application/json");

    // Filters that match nothing, and bad filters.
    assert_eq!(events(&app, "?types=message.received").await["events"], json!([]));
    assert_eq!(events(&app, "?types=message.received,session.status").await["events"].as_array().unwrap().len(), all.len());
    app.get("/api/v1/events?types=session.bogus").await.assert_validation("types");
    app.get("/api/v1/events?sessionId=nope").await.assert_validation("sessionId");
    app.get("/api/v1/events?pageToken=%%%").await.assert_validation("pageToken");
    app.get("/api/v1/events?pageSize=0").await.assert_validation("pageSize");
}

#[tokio::test]
async fn events_list_get_filter_and_page() {
    list_get_filter_and_page(spawn_app().await).await;
}

#[tokio::test]
async fn events_list_get_filter_and_page_on_postgres() {
    if let Some(app) = spawn_app_with(Backend::Postgres, Layer::default()).await {
        list_get_filter_and_page(app).await;
    }
}

#[tokio::test]
async fn events_are_scoped_to_the_organization_and_need_read() {
    let app = spawn_app().await;
    let id = app.sandbox_session().await;
    let event = status_chain(&app, &id).await.remove(0);
    let event_id = event["id"].as_str().unwrap();

    let (other, _) = app.key_for("other-org", "read").await;
    let theirs = app.call(reqwest::Method::GET, &format!("/api/v1/events/{event_id}"), Some(&other), None).await;
    let unknown = app.call(reqwest::Method::GET, "/api/v1/events/evt_01J9Z3QK8M5W4X6Y7Z8A9B0C1D", Some(&other), None).await;
    theirs.assert_error(404, "not_found");
    assert_eq!(theirs.bytes, unknown.bytes, "another organization's event looks exactly unknown");
    let garbage = app.call(reqwest::Method::GET, "/api/v1/events/nope", Some(&other), None).await;
    assert_eq!(garbage.bytes, unknown.bytes);
    let list = app.call(reqwest::Method::GET, "/api/v1/events", Some(&other), None).await;
    assert_eq!(list.json()["events"], json!([]));

    let (send_only, _) = app.key_for("default", "send").await;
    for path in ["/api/v1/events", &format!("/api/v1/events/{event_id}"), "/api/v1/events:stream"] {
        app.call(reqwest::Method::GET, path, Some(&send_only), None).await.assert_error(403, "forbidden");
        app.call(reqwest::Method::GET, path, None, None).await.assert_error(401, "unauthorized");
    }
}

async fn stream_live_and_resume(app: TestApp, restart: bool) {
    let mut stream = SseReader::open(&app, "/api/v1/events:stream?types=session.status", None).await;
    let id = connected_sandbox(&app, "628122222222").await;
    let chain = status_chain(&app, &id).await;
    // Live: exactly the stored events, in order, with the stored bytes as data.
    let live = stream.take(chain.len(), 10).await;
    for (message, stored) in live.iter().zip(&chain) {
        assert_eq!(message.id, stored["id"].as_str().unwrap());
        assert_eq!(message.event, "session.status");
        assert_eq!(&message.json(), stored);
    }
    drop(stream);

    // Missed while away: a stop and a start.
    app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await;
    app.post(&format!("/api/v1/sessions/{id}:start"), json!({})).await;
    app.wait_for(&id, 10, |s| s["status"] == "connected").await;
    let app = if restart { app.restart().await } else { app };
    app.wait_for(&id, 10, |s| s["status"] == "connected").await;
    let chain = status_chain(&app, &id).await;
    let last_seen = live.last().unwrap().id.clone();
    let seen = chain.iter().position(|e| e["id"] == last_seen.as_str()).unwrap();
    let missed = &chain[seen + 1..];
    assert!(missed.len() >= 2, "stopped, then at least starting again: {missed:?}");

    let mut stream = SseReader::open(&app, "/api/v1/events:stream", Some(&last_seen)).await;
    let resumed = stream.take(missed.len(), 10).await;
    assert_eq!(resumed.iter().map(|m| m.json()).collect::<Vec<_>>(), missed, "exactly the missed ones, in order");
    // Then live, with nothing in between or repeated.
    app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await;
    let next = stream.next(10).await.unwrap().json();
    assert_eq!(next["data"], json!({"status": "stopped", "previousStatus": "connected", "statusReason": null}));
    // The query form of the resume id works the same way.
    let mut by_query = SseReader::open(&app, &format!("/api/v1/events:stream?lastEventId={last_seen}"), None).await;
    assert_eq!(by_query.take(missed.len() + 1, 10).await.iter().map(|m| m.json()).collect::<Vec<_>>()[..missed.len()], *missed);
}

#[tokio::test]
async fn the_stream_delivers_live_events_and_resumes_without_gap_or_duplicate() {
    stream_live_and_resume(spawn_app().await, false).await;
}

#[tokio::test]
async fn the_stream_resumes_across_a_restart() {
    stream_live_and_resume(spawn_app().await, true).await;
}

#[tokio::test]
async fn the_stream_resumes_across_a_restart_on_postgres() {
    if let Some(app) = spawn_app_with(Backend::Postgres, Layer::default()).await {
        stream_live_and_resume(app, true).await;
    }
}

#[tokio::test]
async fn the_stream_filters_by_session_and_type() {
    let app = spawn_app().await;
    let a = app.sandbox_session().await;
    let mut only_a = SseReader::open(&app, &format!("/api/v1/events:stream?sessionId={a}"), None).await;
    let b = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{b}:stop"), json!({})).await;
    app.post(&format!("/api/v1/sessions/{a}:stop"), json!({})).await;
    let next = only_a.next(10).await.unwrap().json();
    assert_eq!(next["sessionId"], a.as_str(), "b's events were skipped");
    app.get("/api/v1/events:stream?types=nope").await.assert_validation("types");
}

#[tokio::test]
async fn resume_ids_past_retention_are_a_conflict_and_unknown_ids_invalid() {
    let app = spawn_app_with(Backend::Sqlite, Layer { event_retention: Some("3s".into()), ..Layer::default() }).await.unwrap();
    let id = app.sandbox_session().await;
    app.post(&format!("/api/v1/sessions/{id}:stop"), json!({})).await;
    let first = status_chain(&app, &id).await.remove(0);
    let first_id = first["id"].as_str().unwrap();
    // Pruned once past the retention (pruning runs every second here).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while app.get(&format!("/api/v1/events/{first_id}")).await.status != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "the old event was never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let a = app.get(&format!("/api/v1/events:stream?lastEventId={first_id}")).await;
    assert_eq!(a.assert_error(409, "conflict")["field"], "lastEventId");

    // A well-formed id made just now that this organization never had.
    let (other, _) = app.key_for("other-org", "manage,read").await;
    let theirs = app.call(reqwest::Method::POST, "/api/v1/sessions", Some(&other), Some(json!({"engine": "sandbox", "start": false}))).await;
    let theirs = theirs.json()["id"].as_str().unwrap().to_owned();
    let their_event = app.call(reqwest::Method::GET, &format!("/api/v1/events?sessionId={theirs}"), Some(&other), None).await;
    let their_event = their_event.json()["events"][0]["id"].as_str().unwrap().to_owned();
    app.get(&format!("/api/v1/events:stream?lastEventId={their_event}")).await.assert_validation("lastEventId");
    app.get("/api/v1/events:stream?lastEventId=evt_nope").await.assert_validation("lastEventId");
}

#[tokio::test]
async fn an_open_stream_outlives_the_idle_timeout() {
    let app = spawn_app_with(Backend::Sqlite, Layer { idle_timeout: Some(1), ..Layer::default() }).await.unwrap();
    let mut stream = SseReader::open(&app, "/api/v1/events:stream", None).await;
    // Longer than the idle timeout: a connection answering a stream is not idle.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let id = app.sandbox_session().await;
    assert_eq!(stream.next(10).await.expect("the stream is still open").json()["sessionId"], id.as_str());
}
