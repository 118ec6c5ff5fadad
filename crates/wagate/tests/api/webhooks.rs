//! Webhooks end to end: a local receiver, the real gateway, the event log as the source.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wagate::config::Layer;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::receiver::{Receiver, signed_by};

/// A gateway whose webhooks may reach the local receiver, with retries 50 ms apart.
async fn app_with(backend: Backend, retries: &str) -> Option<TestApp> {
    let overrides = Layer {
        webhook_allow_private: Some(true),
        webhook_retry_schedule: Some(retries.to_owned()),
        webhook_timeout: Some("5s".to_owned()),
        ..Layer::default()
    };
    spawn_app_with(backend, overrides).await
}

/// [`app_with`], with one delivery in flight at a time, so that deliveries arrive in the order
/// they start (with several in flight, two started in order may arrive swapped).
async fn one_at_a_time(backend: Backend) -> Option<TestApp> {
    let overrides = Layer {
        webhook_allow_private: Some(true),
        webhook_retry_schedule: Some("50ms,50ms,50ms".to_owned()),
        webhook_timeout: Some("5s".to_owned()),
        webhook_workers: Some(1),
        ..Layer::default()
    };
    spawn_app_with(backend, overrides).await
}

async fn app() -> TestApp {
    app_with(Backend::Sqlite, "50ms,50ms,50ms").await.expect("SQLite is always available")
}

/// Creates a webhook (asserting 201); returns it with its secret.
async fn create_webhook(app: &TestApp, body: Value) -> Value {
    let a = app.post("/api/v1/webhooks", body).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.bytes));
    a.json()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The organization's events (oldest first), all of them.
async fn all_events(app: &TestApp) -> Vec<Value> {
    let mut events = app.get("/api/v1/events?pageSize=500").await.json()["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// Polls a delivery until `done` holds.
async fn wait_delivery(app: &TestApp, webhook: &str, delivery: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = app.get(&format!("/api/v1/webhooks/{webhook}/deliveries/{delivery}")).await.json();
        if done(&d) {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out; delivery {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops and starts a (started) sandbox session `n` times.
async fn toggle(app: &TestApp, session: &str, n: usize) {
    for i in 0..n {
        let verb = if i % 2 == 0 { "stop" } else { "start" };
        let a = app.post(&format!("/api/v1/sessions/{session}:{verb}"), json!({})).await;
        assert_eq!(a.status, 200);
    }
}

/// Waits until a started sandbox session has reached `awaiting_pairing`: its status events
/// up to now are all committed, and no more come by themselves.
async fn settled(app: &TestApp, session: &str) {
    app.wait_for(session, 20, |s| s["status"] == "awaiting_pairing").await;
}

async fn deliveries_are_the_signed_event_envelope(app: TestApp) {
    let rx = Receiver::start().await;
    let hook = create_webhook(&app, json!({"url": rx.url("/hook"), "description": "crm"})).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!((hook["events"].clone(), hook["enabled"].clone(), hook["disabledReason"].clone()), (json!(["*"]), json!(true), Value::Null));
    assert!(app.get(&format!("/api/v1/webhooks/{}", id(&hook))).await.json().get("secret").is_none(), "shown once");

    let session = app.sandbox_session().await;
    toggle(&app, &session, 2).await;
    settled(&app, &session).await;
    let test = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await;
    assert_eq!(test.status, 202);
    let test_event = test.json()["eventId"].as_str().unwrap().to_owned();

    // Every event of the organization arrives (the test one included), each as the bytes of
    // GET /events/{id}, signed, with its id as `webhook-id`.
    let events = all_events(&app).await;
    let expected: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert!(expected.contains(&test_event));
    let received = rx
        .wait_until(20, "every event", |r| expected.iter().all(|id| r.iter().any(|x| &x.id() == id)))
        .await;
    for r in &received {
        let event = app.get(&format!("/api/v1/events/{}", r.id())).await;
        assert_eq!(event.bytes, r.body.as_bytes(), "the body is GET /events/{{id}}, byte for byte");
        assert_eq!(r.json()["id"], r.id());
        assert_eq!(r.header("content-type"), "application/json");
        let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
        assert!((ts - chrono::Utc::now().timestamp()).abs() < 60);
        assert_eq!(signed_by(r, &[&secret]), vec![0], "one valid signature");
    }
    let tested = received.iter().find(|r| r.id() == test_event).unwrap().json();
    assert_eq!((tested["type"].clone(), tested["data"].clone(), tested["sessionId"].clone()), (json!("webhook.test"), json!({"webhookId": id(&hook)}), Value::Null));
    // In event order: the first attempt of each delivery started in log order (and, one in
    // flight at a time, arrived in it).
    let session_ids: Vec<String> = received.iter().filter(|r| r.json()["sessionId"] == session.as_str()).map(|r| r.id()).collect();
    let logged: Vec<String> = events.iter().filter(|e| e["sessionId"] == session.as_str()).map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(session_ids, logged);

    // The deliveries are listed, newest first, each succeeded after one attempt. (The test's
    // delivery need not be the newest: the fan-out may queue the session's events after it.)
    let list = app.get(&format!("/api/v1/webhooks/{}/deliveries?status=succeeded", id(&hook))).await.json();
    let deliveries = list["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), expected.len());
    assert!(deliveries.windows(2).all(|w| w[0]["id"].as_str() > w[1]["id"].as_str()), "newest first: {list}");
    for d in deliveries {
        assert_eq!(d["status"], "succeeded");
        assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["attempts"][0]["responseStatus"], 200);
        assert!(d["attempts"][0]["durationMs"].is_u64() && d["attempts"][0]["error"].is_null());
    }
    let d = deliveries.iter().find(|d| d["eventId"] == test_event.as_str()).unwrap();
    assert_eq!(d["eventType"], "webhook.test");
    assert_eq!(app.get(&format!("/api/v1/webhooks/{}/deliveries?status=failed", id(&hook))).await.json()["deliveries"], json!([]));
}

#[tokio::test]
async fn deliveries_are_the_signed_event_envelope_on_sqlite() {
    deliveries_are_the_signed_event_envelope(one_at_a_time(Backend::Sqlite).await.expect("SQLite is always available")).await;
}

#[tokio::test]
async fn deliveries_are_the_signed_event_envelope_on_postgres() {
    if let Some(app) = one_at_a_time(Backend::Postgres).await {
        deliveries_are_the_signed_event_envelope(app).await;
    }
}

#[tokio::test]
async fn filters_and_session_scope_choose_what_arrives() {
    let app = app().await;
    let rx = Receiver::start().await;
    let (a, b) = (app.sandbox_session().await, app.sandbox_session().await);
    let scoped = create_webhook(&app, json!({"url": rx.url("/scoped"), "sessionId": a})).await;
    let typed = create_webhook(&app, json!({"url": rx.url("/typed"), "events": ["message.received"]})).await;
    let all = create_webhook(&app, json!({"url": rx.url("/all"), "events": ["session.status", "session.status"]})).await;
    assert_eq!(all["events"], json!(["session.status"]));
    assert_eq!(scoped["sessionId"], a.as_str());
    toggle(&app, &a, 2).await;
    toggle(&app, &b, 2).await;
    // Once `all` has every status event after its creation, the others had theirs queued too.
    let events = all_events(&app).await;
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v["createdAt"].as_str().unwrap()).unwrap();
    let later: Vec<&Value> = events.iter().filter(|e| time(e) >= time(&all)).collect();
    rx.wait_until(20, "every status event at /all", |_| rx.at("/all").len() >= later.len()).await;
    let test = app.post(&format!("/api/v1/webhooks/{}:test", id(&typed)), json!({})).await.json();
    rx.wait_until(20, "the test at /typed", |_| !rx.at("/typed").is_empty()).await;
    let typed_got: Vec<String> = rx.at("/typed").iter().map(|r| r.id()).collect();
    assert_eq!(typed_got, vec![test["eventId"].as_str().unwrap().to_owned()], "only its test");
    assert!(rx.at("/all").iter().all(|r| r.json()["type"] == "session.status"));
    let scoped_got = rx.wait_until(20, "its session's stop and start at /scoped", |_| rx.at("/scoped").len() >= 2).await;
    let scoped_got: Vec<_> = scoped_got.into_iter().filter(|r| r.path == "/scoped").collect();
    assert!(scoped_got.iter().all(|r| r.json()["sessionId"] == a.as_str()));
}

#[tokio::test]
async fn failures_are_retried_and_every_attempt_is_recorded() {
    let app = app().await;
    let rx = Receiver::start().await;
    rx.script(&[500, 500, 200]);
    let hook = create_webhook(&app, json!({"url": rx.url("/hook"), "events": ["webhook.test"]})).await;
    let queued = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    assert_eq!((queued["status"].clone(), queued["attempts"].clone()), (json!("pending"), json!([])));
    let done = wait_delivery(&app, &id(&hook), &id(&queued), |d| d["status"] == "succeeded").await;
    let statuses: Vec<Value> = done["attempts"].as_array().unwrap().iter().map(|a| a["responseStatus"].clone()).collect();
    assert_eq!(statuses, vec![json!(500), json!(500), json!(200)]);
    assert_eq!(done["attempts"][0]["error"], "the endpoint answered HTTP 500");
    assert_eq!((done["responseStatus"].clone(), done["error"].clone(), done["nextAttemptAt"].clone()), (json!(200), Value::Null, Value::Null));
    let ids: HashSet<String> = rx.received().iter().map(|r| r.id()).collect();
    assert_eq!((rx.received().len(), ids.len()), (3, 1), "the same webhook-id every time");

    // The schedule spent: `failed` after the last retry; a 429's Retry-After is honoured.
    rx.answer_with(503);
    let queued = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    let failed = wait_delivery(&app, &id(&hook), &id(&queued), |d| d["status"] == "failed").await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 4, "the first attempt and three retries");
    rx.answer_with(200);
    rx.script_with_header(429, "retry-after", "1".to_owned());
    let queued = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    let done = wait_delivery(&app, &id(&hook), &id(&queued), |d| d["status"] == "succeeded").await;
    let at = |n: usize| chrono::DateTime::parse_from_rfc3339(done["attempts"][n]["at"].as_str().unwrap()).unwrap();
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2, "{done}");
    assert_eq!(done["attempts"][0]["responseStatus"], 429);
    assert!((at(1) - at(0)).num_milliseconds() >= 1000, "Retry-After: 1, not the 50 ms schedule: {done}");
}

#[tokio::test]
async fn gone_disables_and_reenabling_delivers_what_waited() {
    let app = app().await;
    let rx = Receiver::start().await;
    rx.script(&[410]);
    let hook = create_webhook(&app, json!({"url": rx.url("/hook")})).await;
    let gone = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    let d = wait_delivery(&app, &id(&hook), &id(&gone), |d| d["status"] == "failed").await;
    assert_eq!(d["responseStatus"], 410);
    let disabled = app.get(&format!("/api/v1/webhooks/{}", id(&hook))).await.json();
    assert_eq!((disabled["enabled"].clone(), disabled["disabledReason"].clone()), (json!(false), json!("gone")));

    // Events while disabled wait for it.
    let session = app.sandbox_session().await;
    toggle(&app, &session, 4).await;
    let waiting = app.get(&format!("/api/v1/webhooks/{}/deliveries?status=pending", id(&hook))).await.json();
    let waiting: Vec<String> = waiting["deliveries"].as_array().unwrap().iter().map(|d| d["eventId"].as_str().unwrap().to_owned()).collect();
    assert!(!waiting.is_empty());
    assert_eq!(rx.received().len(), 1, "nothing sent while disabled");

    let enabled = app.call(Method::PATCH, &format!("/api/v1/webhooks/{}", id(&hook)), Some(&app.key), Some(json!({"enabled": true}))).await.json();
    assert_eq!((enabled["enabled"].clone(), enabled["disabledReason"].clone()), (json!(true), Value::Null));
    let session_events: Vec<String> = all_events(&app).await.iter().filter(|e| e["sessionId"] == session.as_str()).map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    rx.wait_until(20, "what waited", |r| session_events.iter().all(|id| r.iter().any(|x| &x.id() == id))).await;

    // A manual disable says so.
    let off = app.call(Method::PATCH, &format!("/api/v1/webhooks/{}", id(&hook)), Some(&app.key), Some(json!({"enabled": false}))).await.json();
    assert_eq!(off["disabledReason"], "manual");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_for_the_overlap() {
    let app = app().await;
    let rx = Receiver::start().await;
    let hook = create_webhook(&app, json!({"url": rx.url("/hook"), "events": ["webhook.test"]})).await;
    let old = hook["secret"].as_str().unwrap().to_owned();
    let rotated = app.post(&format!("/api/v1/webhooks/{}:rotateSecret", id(&hook)), json!({})).await;
    assert_eq!(rotated.status, 200);
    let new = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await;
    let r = rx.wait_until(20, "the test", |r| !r.is_empty()).await;
    assert_eq!(r[0].header("webhook-signature").split(' ').count(), 2);
    assert_eq!(signed_by(&r[0], &[&new, &old]), vec![0, 1], "new first, then old, both valid");
}

#[tokio::test]
async fn replay_and_retry_deliver_again() {
    let app = app().await;
    let rx = Receiver::start().await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let hook = create_webhook(&app, json!({"url": rx.url("/hook")})).await;
    let session = app.sandbox_session().await;
    toggle(&app, &session, 2).await;
    settled(&app, &session).await;
    let events: Vec<String> = all_events(&app).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    rx.wait_until(20, "every event once", |r| events.iter().all(|id| r.iter().any(|x| &x.id() == id))).await;

    // Replay: every event of the window again (the receiver deduplicates by webhook-id).
    let replay = app.post(&format!("/api/v1/webhooks/{}:replay", id(&hook)), json!({"since": since})).await;
    assert_eq!(replay.status, 202);
    assert_eq!(replay.json()["queued"], events.len());
    let counts = |r: &[crate::receiver::Received]| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        r.iter().for_each(|x| *counts.entry(x.id()).or_default() += 1);
        counts
    };
    rx.wait_until(20, "every event twice", |r| events.iter().all(|id| counts(r).get(id) == Some(&2))).await;
    let empty = app.post(&format!("/api/v1/webhooks/{}:replay", id(&hook)), json!({"since": since, "until": since})).await;
    assert_eq!(empty.json()["queued"], 0);

    // Retry one delivery: attempted again at once.
    let list = app.get(&format!("/api/v1/webhooks/{}/deliveries", id(&hook))).await.json();
    let one = &list["deliveries"][0];
    let before = rx.received().len();
    let retried = app.post(&format!("/api/v1/webhooks/{}/deliveries/{}:retry", id(&hook), id(one)), json!({})).await;
    assert_eq!(retried.status, 202);
    assert_eq!(retried.json()["status"], "pending");
    let got = rx.wait_until(20, "the retry", |r| r.len() > before).await;
    assert_eq!(got.last().unwrap().id(), one["eventId"].as_str().unwrap());

    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": since, "until": "2000-01-01T00:00:00Z"}), "until"),
        (json!({"since": since, "extra": 1}), "extra"),
    ] {
        app.post(&format!("/api/v1/webhooks/{}:replay", id(&hook)), body).await.assert_validation(field);
    }
}

#[tokio::test]
async fn the_address_guard_refuses_internal_targets_when_saved_and_on_every_attempt() {
    // The default gateway: no private networks.
    let strict = spawn_app_with(Backend::Sqlite, Layer { webhook_retry_schedule: Some("1h".into()), ..Layer::default() }).await.unwrap();
    let rx = Receiver::start().await;
    let port = rx.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://10.0.0.7/hook".to_owned(),
        "http://192.168.1.10/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
        "http://[fe80::1]/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
        "http://0.0.0.0/hook".to_owned(),
        "http://224.0.0.1/hook".to_owned(),
        "ftp://example.com/hook".to_owned(),
        "not a url".to_owned(),
    ] {
        strict.post("/api/v1/webhooks", json!({"url": url})).await.assert_validation("url");
    }
    // Saved some other way (a name that resolved elsewhere when saved, then rebinds): every
    // attempt checks the address it connects to, and nothing reaches the receiver.
    let org = wagate_core::OrgId::parse("default").unwrap();
    let sneaky = strict
        .store
        .insert_webhook(&wagate_core::NewWebhook {
            id: wagate_core::WebhookId::generate(),
            org,
            url: format!("http://localhost:{port}/hook"),
            events: None,
            session: None,
            description: None,
            secret: wagate_core::WebhookSecret::generate(),
            created_at: wagate_core::now(),
        })
        .await
        .unwrap();
    let queued = strict.post(&format!("/api/v1/webhooks/{}:test", sneaky.id), json!({})).await.json();
    let d = wait_delivery(&strict, sneaky.id.as_str(), &id(&queued), |d| !d["attempts"].as_array().unwrap().is_empty()).await;
    assert_eq!((d["status"].clone(), d["responseStatus"].clone()), (json!("pending"), Value::Null));
    assert!(d["error"].as_str().unwrap().contains("loopback"), "{d}");
    assert!(rx.received().is_empty());

    // Private networks allowed: loopback is fine, link-local never; redirects are not followed.
    let lenient = app().await;
    lenient.post("/api/v1/webhooks", json!({"url": "http://169.254.169.254/"})).await.assert_validation("url");
    lenient.post("/api/v1/webhooks", json!({"url": "http://[fe80::1]/"})).await.assert_validation("url");
    let target = Receiver::start().await;
    rx.answer_with(302);
    let hook = create_webhook(&lenient, json!({"url": rx.url("/redirect")})).await;
    rx.script_with_header(302, "location", target.url("/stolen"));
    let queued = lenient.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    let d = wait_delivery(&lenient, &id(&hook), &id(&queued), |d| !d["attempts"].as_array().unwrap().is_empty()).await;
    assert_eq!(d["attempts"][0]["responseStatus"], 302);
    assert_eq!(d["attempts"][0]["error"], "the endpoint answered HTTP 302");
    assert!(target.received().is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn bad_input_is_a_validation_error_naming_the_field() {
    let app = app().await;
    let rx = Receiver::start().await;
    let url = rx.url("/hook");
    for (body, field) in [
        (json!({}), "url"),
        (json!({"url": 7}), "url"),
        (json!({"url": url, "events": []}), "events"),
        (json!({"url": url, "events": ["message.deleted"]}), "events"),
        (json!({"url": url, "events": ["*", "session.status"]}), "events"),
        (json!({"url": url, "sessionId": "nope"}), "sessionId"),
        (json!({"url": url, "sessionId": wagate_core::SessionId::generate().to_string()}), "sessionId"),
        (json!({"url": url, "description": "x".repeat(501)}), "description"),
        (json!({"url": url, "secret": "whsec_x"}), "secret"),
        (json!({"url": format!("https://example.com/{}", "x".repeat(2048))}), "url"),
    ] {
        app.post("/api/v1/webhooks", body).await.assert_validation(field);
    }
    let hook = create_webhook(&app, json!({"url": url})).await;
    let path = format!("/api/v1/webhooks/{}", id(&hook));
    for (body, field) in [(json!({"sessionId": null}), "sessionId"), (json!({"enabled": "yes"}), "enabled"), (json!({"url": "gopher://x"}), "url")] {
        app.call(Method::PATCH, &path, Some(&app.key), Some(body)).await.assert_validation(field);
    }
    app.get(&format!("{path}/deliveries?status=lost")).await.assert_validation("status");
    app.get(&format!("{path}/deliveries?status=")).await.assert_validation("status");
    app.get(&format!("{path}/deliveries?pageSize=0")).await.assert_validation("pageSize");
    app.post(&format!("{path}:test"), json!({"x": 1})).await.assert_validation("x");

    // PATCH changes what it names; DELETE removes it.
    let patched = app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"description": "crm", "events": ["*"]}))).await.json();
    assert_eq!((patched["description"].clone(), patched["events"].clone()), (json!("crm"), json!(["*"])));
    let cleared = app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"description": null}))).await.json();
    assert_eq!(cleared["description"], Value::Null);
    let listed = app.get("/api/v1/webhooks").await.json();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(listed["webhooks"][0].get("secret").is_none());
    assert_eq!(app.call(Method::DELETE, &path, Some(&app.key), None).await.status, 204);
    app.get(&path).await.assert_error(404, "not_found");
    app.call(Method::PUT, &path, Some(&app.key), None).await.assert_error(405, "method_not_allowed");
}

fn webhook_routes(webhook: &str, delivery: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/api/v1/webhooks/{webhook}"), None),
        (Method::PATCH, format!("/api/v1/webhooks/{webhook}"), Some(json!({"enabled": false}))),
        (Method::DELETE, format!("/api/v1/webhooks/{webhook}"), None),
        (Method::POST, format!("/api/v1/webhooks/{webhook}:rotateSecret"), Some(json!({}))),
        (Method::POST, format!("/api/v1/webhooks/{webhook}:test"), Some(json!({}))),
        (Method::POST, format!("/api/v1/webhooks/{webhook}:replay"), Some(json!({"since": "2020-01-01T00:00:00Z"}))),
        (Method::GET, format!("/api/v1/webhooks/{webhook}/deliveries"), None),
        (Method::GET, format!("/api/v1/webhooks/{webhook}/deliveries/{delivery}"), None),
        (Method::POST, format!("/api/v1/webhooks/{webhook}/deliveries/{delivery}:retry"), Some(json!({}))),
    ]
}

#[tokio::test]
async fn another_organizations_webhooks_are_not_found_and_manage_is_required() {
    let app = app().await;
    let rx = Receiver::start().await;
    let hook = create_webhook(&app, json!({"url": rx.url("/hook")})).await;
    let delivery = app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await.json();
    rx.wait_until(20, "the test", |r| !r.is_empty()).await;
    let (intruder, _) = app.key_for("intruder-corp", "manage,send,read").await;
    let (unknown_hook, unknown_delivery) = (wagate_core::WebhookId::generate().to_string(), wagate_core::DeliveryId::generate().to_string());
    let routes = webhook_routes(&id(&hook), &id(&delivery));
    for ((method, path, body), (_, unknown, _)) in routes.into_iter().zip(webhook_routes(&unknown_hook, &unknown_delivery)) {
        let a = app.call(method.clone(), &path, Some(&intruder), body.clone()).await;
        let b = app.call(method.clone(), &unknown, Some(&intruder), body).await;
        a.assert_error(404, "not_found");
        assert_eq!(a.bytes, b.bytes, "{method} {path}: identical to an unknown id");
    }
    assert_eq!(app.call(Method::GET, "/api/v1/webhooks", Some(&intruder), None).await.json()["webhooks"], json!([]));

    let (reader, _) = app.key_for("default", "send,read").await;
    for (method, path, body) in webhook_routes(&id(&hook), &id(&delivery))
        .into_iter()
        .chain([(Method::GET, "/api/v1/webhooks".to_owned(), None), (Method::POST, "/api/v1/webhooks".to_owned(), Some(json!({"url": rx.url("/x")})))])
    {
        let details = app.call(method.clone(), &path, Some(&reader), body).await.assert_error(403, "forbidden");
        assert_eq!(details["capability"], "manage", "{method} {path}");
    }
    // Nothing of the victim changed.
    let still = app.get(&format!("/api/v1/webhooks/{}", id(&hook))).await.json();
    assert_eq!(still["enabled"], true);
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_everything_once_it_is_up() {
    let app = app_with(Backend::Sqlite, &["100ms"; 40].join(",")).await.unwrap();
    let rx = Receiver::start().await;
    rx.answer_with(503);
    let hook = create_webhook(&app, json!({"url": rx.url("/hook")})).await;
    let session = app.sandbox_session().await;
    toggle(&app, &session, 6).await;
    for _ in 0..5 {
        app.post(&format!("/api/v1/webhooks/{}:test", id(&hook)), json!({})).await;
    }
    let events: Vec<String> = all_events(&app).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    // Down: every event is tried at least once and fails.
    rx.wait_until(20, "a first attempt of each", |r| events.iter().all(|id| r.iter().any(|x| &x.id() == id))).await;
    rx.answer_with(200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending = app.get(&format!("/api/v1/webhooks/{}/deliveries?status=pending", id(&hook))).await.json();
        let succeeded = app.get(&format!("/api/v1/webhooks/{}/deliveries?status=succeeded&pageSize=500", id(&hook))).await.json();
        let done: HashSet<String> = succeeded["deliveries"].as_array().unwrap().iter().map(|d| d["eventId"].as_str().unwrap().to_owned()).collect();
        if pending["deliveries"].as_array().unwrap().is_empty() && events.iter().all(|e| done.contains(e)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not everything arrived: {pending}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8(metrics.bytes).unwrap();
    assert!(text.contains("wagate_webhook_deliveries_total{outcome=\"succeeded\"}"), "{text}");
    assert!(text.contains("wagate_webhook_deliveries_total{outcome=\"retrying\"}"));
    assert!(text.contains("wagate_webhook_attempt_duration_seconds_count"));
    assert!(text.contains("wagate_webhook_backlog"));
}
