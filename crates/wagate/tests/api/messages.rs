//! Messaging on the sandbox engine, end to end through the API: sandbox-to-sandbox delivery
//! with receipts and events, replies, mentions, reactions, edits, revocations, idempotency,
//! pacing, validation and tenancy.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wagate::config::Layer;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::helpers::{Answer, Backend, TestApp, spawn_app, spawn_app_with};

/// A started sandbox session paired with `phone` and connected.
pub async fn connected(app: &TestApp, phone: &str) -> String {
    let id = app.sandbox_session().await;
    app.wait_for(&id, 10, |s| s["status"] == "awaiting_pairing").await;
    let a = app.post(&format!("/api/v1/sessions/{id}/sandbox:scanQr"), json!({"phoneNumber": phone, "pushName": format!("P{phone}")})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.bytes));
    app.wait_for(&id, 10, |s| s["status"] == "connected").await;
    id
}

async fn send(app: &TestApp, session: &str, body: Value) -> Value {
    let a = app.post(&format!("/api/v1/sessions/{session}/messages"), body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&a.bytes));
    let m = a.json();
    assert_eq!(m["status"], "queued", "{m}");
    m
}

async fn message(app: &TestApp, session: &str, id: &str) -> Value {
    let a = app.get(&format!("/api/v1/sessions/{session}/messages/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.bytes));
    a.json()
}

/// Polls `GET path` until `pred` holds on its JSON (panics after 15 s).
async fn poll(app: &TestApp, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = app.get(path).await.json();
        if pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out polling {path}; last: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The session's events of `types`, oldest first.
async fn events(app: &TestApp, session: &str, types: &str) -> Vec<Value> {
    let page = app.get(&format!("/api/v1/events?sessionId={session}&types={types}&pageSize=500")).await.json();
    let mut events = page["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// The inbound messages of a session, oldest first.
async fn inbound(app: &TestApp, session: &str) -> Vec<Value> {
    let page = app.get(&format!("/api/v1/sessions/{session}/messages?direction=inbound&pageSize=500")).await.json();
    let mut messages = page["messages"].as_array().unwrap().clone();
    messages.reverse();
    messages
}

#[tokio::test]
async fn a_text_arrives_and_goes_sent_delivered_read_with_its_events_in_order() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;

    let sent = send(&app, &a, json!({"to": "628222222222", "text": "Hello B"})).await;
    assert_eq!(sent["direction"], "outbound");
    assert_eq!(sent["fromMe"], true);
    assert_eq!(sent["chatId"], "628222222222@s.whatsapp.net");
    assert_eq!(sent["fromPhone"], "628111111111");
    let wa_id = sent["waMessageId"].as_str().unwrap().to_owned();
    assert!(wa_id.starts_with("3EB0") && wa_id.len() == 20, "{wa_id}");
    let id = sent["id"].as_str().unwrap().to_owned();

    // B stores it with A's phone, under the same WhatsApp id, with its event.
    let got = poll(&app, &format!("/api/v1/sessions/{b}/messages?direction=inbound"), |v| v["messages"].as_array().is_some_and(|m| !m.is_empty())).await;
    let got = &got["messages"][0];
    assert_eq!(got["fromPhone"], "628111111111", "{got}");
    assert_eq!(got["from"], "628111111111@s.whatsapp.net");
    assert_eq!(got["chatId"], "628111111111@s.whatsapp.net");
    assert_eq!(got["pushName"], "P628111111111");
    assert_eq!(got["text"], "Hello B");
    assert_eq!(got["waMessageId"], wa_id);
    assert_eq!(got["status"], "received");
    assert_eq!(got["fromMe"], false);
    let received = events(&app, &b, "message.received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["data"], *got, "the event carries the message resource");

    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "delivered").await;
    let chats = app.get(&format!("/api/v1/sessions/{b}/chats")).await.json();
    assert_eq!(chats["chats"][0]["id"], "628111111111@s.whatsapp.net", "{chats}");
    assert_eq!(chats["chats"][0]["unreadCount"], 1);
    assert_eq!(chats["chats"][0]["name"], "P628111111111");

    // B reads the chat: A's message is read, B's copy too.
    let read = app.post(&format!("/api/v1/sessions/{b}/chats/628111111111@s.whatsapp.net:markRead"), json!({})).await;
    assert_eq!(read.status, StatusCode::OK, "{}", String::from_utf8_lossy(&read.bytes));
    assert_eq!(read.json(), json!({"read": 1}));
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "read").await;
    assert_eq!(inbound(&app, &b).await[0]["status"], "read");
    let again = app.post(&format!("/api/v1/sessions/{b}/chats/628111111111@s.whatsapp.net:markRead"), json!({})).await;
    assert_eq!(again.json(), json!({"read": 0}));

    let statuses: Vec<(String, String)> = events(&app, &a, "message.status")
        .await
        .iter()
        .map(|e| (e["data"]["previousStatus"].as_str().unwrap().to_owned(), e["data"]["status"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("queued", "sent"), ("sent", "delivered"), ("delivered", "read")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(statuses, expected);
    let first = &events(&app, &a, "message.status").await[0]["data"];
    assert_eq!(first["messageId"], id.as_str());
    assert_eq!(first["waMessageId"], wa_id.as_str());
    assert_eq!(first["chatId"], "628222222222@s.whatsapp.net");
    assert!(first["error"].is_null());
}

#[tokio::test]
async fn replies_mentions_reactions_edits_and_revocations_arrive_as_their_events() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    let first = send(&app, &a, json!({"to": "628222222222", "text": "first"})).await;
    let first_id = first["id"].as_str().unwrap();
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{first_id}"), |m| m["status"] == "delivered").await;
    let b_copy = inbound(&app, &b).await[0].clone();

    // B replies to it, mentioning A.
    let reply = send(&app, &b, json!({"to": "628111111111", "text": "re @628111111111", "replyTo": b_copy["id"], "mentions": ["628111111111"]})).await;
    assert_eq!(reply["replyTo"]["messageId"], b_copy["id"]);
    let got = poll(&app, &format!("/api/v1/sessions/{a}/messages?direction=inbound"), |v| v["messages"].as_array().is_some_and(|m| !m.is_empty())).await;
    let got = &got["messages"][0];
    assert_eq!(got["replyTo"]["waMessageId"], first["waMessageId"], "{got}");
    assert_eq!(got["replyTo"]["messageId"], first["id"], "A's own stored message is found");
    assert_eq!(got["mentions"], json!(["628111111111"]));

    // B reacts to A's message.
    let reaction = send(&app, &b, json!({"to": "628111111111", "reaction": {"messageId": b_copy["id"], "emoji": "👍"}})).await;
    assert_eq!(reaction["type"], "reaction");
    let reactions = poll_events(&app, &a, "message.reaction", 1).await;
    let data = &reactions[0]["data"];
    assert_eq!(data["messageId"], first["id"]);
    assert_eq!(data["waMessageId"], first["waMessageId"]);
    assert_eq!(data["from"], "628222222222@s.whatsapp.net");
    assert_eq!(data["emoji"], "👍");

    // A edits, then revokes, its message.
    let edited = app.post(&format!("/api/v1/sessions/{a}/messages/{first_id}:edit"), json!({"text": "first, edited"})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", String::from_utf8_lossy(&edited.bytes));
    assert_eq!(edited.json()["edited"], true);
    let on_b = poll_events(&app, &b, "message.edited", 1).await;
    assert_eq!(on_b[0]["data"]["text"], "first, edited");
    assert_eq!(on_b[0]["data"]["messageId"], b_copy["id"]);
    assert_eq!(message(&app, &b, b_copy["id"].as_str().unwrap()).await["text"], "first, edited");
    assert_eq!(events(&app, &a, "message.edited").await.len(), 1, "the sender's own edit is an event too");

    let revoked = app.post(&format!("/api/v1/sessions/{a}/messages/{first_id}:revoke"), json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json()["revoked"], true);
    let on_b = poll_events(&app, &b, "message.revoked", 1).await;
    assert_eq!(on_b[0]["data"]["from"], "628111111111@s.whatsapp.net");
    assert_eq!(message(&app, &b, b_copy["id"].as_str().unwrap()).await["revoked"], true);

    // Only own sent text messages can be edited.
    let theirs = got["id"].as_str().unwrap();
    app.post(&format!("/api/v1/sessions/{a}/messages/{theirs}:edit"), json!({"text": "x"})).await.assert_error(409, "conflict");
}

async fn poll_events(app: &TestApp, session: &str, types: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = events(app, session, types).await;
        if found.len() >= n {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} {types} events of {session}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn send_with_key(app: &TestApp, session: &str, key: &str, body: Value) -> Answer {
    let res = app
        .client
        .post(app.url(&format!("/api/v1/sessions/{session}/messages")))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    Answer { status: res.status(), headers: res.headers().clone(), bytes: res.bytes().await.unwrap().to_vec() }
}

#[tokio::test]
async fn an_idempotency_key_answers_the_first_message_and_sends_once() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    let body = json!({"to": "628222222222", "text": "once"});
    let first = send_with_key(&app, &a, "order-42", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = send_with_key(&app, &a, "order-42", body.clone()).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json()["waMessageId"], first.json()["waMessageId"]);
    send_with_key(&app, &a, "order-42", json!({"to": "628222222222", "text": "other"})).await.assert_error(409, "conflict");
    // Another session may use the same key.
    let other = send_with_key(&app, &b, "order-42", json!({"to": "628111111111", "text": "from b"})).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.json()["id"], first.json()["id"]);
    send_with_key(&app, &a, "", body.clone()).await.assert_validation("Idempotency-Key");
    send_with_key(&app, &a, &"k".repeat(256), body).await.assert_validation("Idempotency-Key");

    let id = first.json()["id"].as_str().unwrap().to_owned();
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "delivered").await;
    poll(&app, &format!("/api/v1/sessions/{a}/messages?direction=inbound"), |v| v["messages"].as_array().is_some_and(|m| !m.is_empty())).await;
    let at_b: Vec<Value> = inbound(&app, &b).await;
    assert_eq!(at_b.len(), 1, "one message at the recipient: {at_b:?}");
    let outbound = app.get(&format!("/api/v1/sessions/{a}/messages?direction=outbound")).await.json();
    assert_eq!(outbound["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn at_60_a_minute_ten_messages_leave_about_a_second_apart_in_order() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    let patched = app.call(Method::PATCH, &format!("/api/v1/sessions/{a}"), Some(&app.key), Some(json!({"sendPolicy": {"messagesPerMinute": 60}}))).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", String::from_utf8_lossy(&patched.bytes));
    assert_eq!(patched.json()["sendPolicy"], json!({"messagesPerMinute": 60, "typing": false}));
    for i in 0..10 {
        send(&app, &a, json!({"to": "628222222222", "text": format!("m{i}")})).await;
    }
    let all = poll(&app, &format!("/api/v1/sessions/{b}/messages?direction=inbound"), |v| v["messages"].as_array().is_some_and(|m| m.len() == 10)).await;
    let mut got = all["messages"].as_array().unwrap().clone();
    got.reverse();
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>(), "in order");
    let times: Vec<chrono::DateTime<chrono::Utc>> = got.iter().map(|m| m["timestamp"].as_str().unwrap().parse().unwrap()).collect();
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!((950..=2_500).contains(&gap), "gap of {gap} ms between sends: {times:?}");
    }
    // The sender's record agrees: every outbound message sent, at those times.
    let outbound = app.get(&format!("/api/v1/sessions/{a}/messages?direction=outbound")).await.json();
    assert!(outbound["messages"].as_array().unwrap().iter().all(|m| m["status"] == "delivered"), "{outbound}");
}

#[tokio::test]
async fn the_default_pace_and_typing_are_shown_and_validated() {
    let overrides = Layer { send_per_minute: Some(30), ..Layer::default() };
    let app = spawn_app_with(Backend::Sqlite, overrides).await.unwrap();
    let id = app.sandbox_session().await;
    let s = app.get(&format!("/api/v1/sessions/{id}")).await.json();
    assert_eq!(s["sendPolicy"], json!({"messagesPerMinute": 30, "typing": false}));
    let path = format!("/api/v1/sessions/{id}");
    let a = app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"sendPolicy": {"typing": true, "messagesPerMinute": 600}}))).await;
    assert_eq!(a.json()["sendPolicy"], json!({"messagesPerMinute": 600, "typing": true}));
    let a = app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"sendPolicy": {"messagesPerMinute": null}}))).await;
    assert_eq!(a.json()["sendPolicy"], json!({"messagesPerMinute": 30, "typing": true}), "null returns to the default");
    for bad in [json!(0), json!(601), json!("fast"), json!(-1)] {
        app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"sendPolicy": {"messagesPerMinute": bad}}))).await.assert_validation("sendPolicy.messagesPerMinute");
    }
    app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"sendPolicy": {"speed": 1}}))).await.assert_validation("sendPolicy.speed");
    // An array of the fields is not the object (serde alone would take it).
    app.call(Method::PATCH, &path, Some(&app.key), Some(json!({"sendPolicy": [null, null]}))).await.assert_validation("sendPolicy");
}

#[tokio::test]
async fn bad_sends_are_validation_errors_naming_the_field() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let path = format!("/api/v1/sessions/{a}/messages");
    let cases = [
        (json!({"text": "x"}), "to"),
        (json!({"to": "+628222222222", "text": "x"}), "to"),
        (json!({"to": "120363012345678901@g.us", "text": "x"}), "to"),
        (json!({"to": "628222222222"}), "text"),
        (json!({"to": "628222222222", "text": ""}), "text"),
        (json!({"to": "628222222222", "text": "   "}), "text"),
        (json!({"to": "628222222222", "text": 5}), "text"),
        (json!({"to": "628222222222", "text": "x", "location": {"latitude": 1, "longitude": 2}}), "location"),
        (json!({"to": "628222222222", "location": {"latitude": 91, "longitude": 2}}), "location.latitude"),
        (json!({"to": "628222222222", "location": {"latitude": 1}}), "location.longitude"),
        (json!({"to": "628222222222", "location": [1, 2]}), "location"),
        (json!({"to": "628222222222", "image": ["https://example.com/a.png"]}), "image"),
        (json!({"to": "628222222222", "contact": {"name": "Ann", "phone": "12"}}), "contact.phone"),
        (json!({"to": "628222222222", "reaction": {"messageId": "nope", "emoji": "x"}}), "reaction.messageId"),
        (json!({"to": "628222222222", "reaction": {"messageId": "msg_01J9Z3QK8M5W4X6Y7Z8A9B0C1D", "emoji": "x"}}), "reaction.messageId"),
        (json!({"to": "628222222222", "text": "x", "replyTo": "msg_01J9Z3QK8M5W4X6Y7Z8A9B0C1D"}), "replyTo"),
        (json!({"to": "628222222222", "text": "x", "replyTo": "12"}), "replyTo"),
        (json!({"to": "628222222222", "text": "x", "mentions": ["1"]}), "mentions[0]"),
        (json!({"to": "628222222222", "location": {"latitude": 1, "longitude": 2}, "mentions": []}), "mentions"),
        (json!({"to": "628222222222", "text": "x", "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let answer = app.post(&path, body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", String::from_utf8_lossy(&answer.bytes));
        answer.assert_validation(field);
    }
    for (body, field) in [
        (json!({"to": "628222222222", "image": {}}), "image"),
        (json!({"to": "628222222222", "image": {"url": "https://example.com/a.png", "data": "aGk="}}), "image"),
        (json!({"to": "628222222222", "image": {"data": "not base64!"}}), "image.data"),
        (json!({"to": "628222222222", "image": {"data": ""}}), "image.data"),
        (json!({"to": "628222222222", "image": {"url": "file:///etc/passwd"}}), "image.url"),
        (json!({"to": "628222222222", "image": {"data": "aGk=", "voice": true}}), "image.voice"),
        (json!({"to": "628222222222", "image": {"data": "aGk=", "mimeType": "png"}}), "image.mimeType"),
        (json!({"to": "628222222222", "image": {"data": "aGk=", "size": 2}}), "image.size"),
    ] {
        app.post(&path, body.clone()).await.assert_validation(field);
    }
    let list = format!("/api/v1/sessions/{a}/messages");
    app.get(&format!("{list}?direction=sideways")).await.assert_validation("direction");
    app.get(&format!("{list}?chatId=nobody")).await.assert_validation("chatId");
    app.get(&format!("{list}?direction=")).await.assert_validation("direction");
    app.get(&format!("{list}?chatId=")).await.assert_validation("chatId");
    app.get(&format!("{list}?pageToken=zzz")).await.assert_validation("pageToken");
    app.post(&format!("/api/v1/sessions/{a}:checkNumbers"), json!({"phones": []})).await.assert_validation("phones");
    let many: Vec<String> = (0..51).map(|i| format!("6281100000{i:02}")).collect();
    app.post(&format!("/api/v1/sessions/{a}:checkNumbers"), json!({"phones": many})).await.assert_validation("phones");
    app.post(&format!("/api/v1/sessions/{a}:checkNumbers"), json!({"phones": ["628111111111", "x"]})).await.assert_validation("phones[1]");
    let checked = app.post(&format!("/api/v1/sessions/{a}:checkNumbers"), json!({"phones": ["628999999999"]})).await;
    assert_eq!(checked.json(), json!({"results": [{"phone": "628999999999", "onWhatsApp": true, "jid": "628999999999@s.whatsapp.net"}]}));
    app.post(&format!("/api/v1/sessions/{a}/chats/628222222222@s.whatsapp.net:presence"), json!({"state": "dancing"})).await.assert_validation("state");
    let ok = app.post(&format!("/api/v1/sessions/{a}/chats/628222222222@s.whatsapp.net:presence"), json!({"state": "typing"})).await;
    assert_eq!(ok.status, StatusCode::OK);
    app.post(&format!("/api/v1/sessions/{a}/chats/nobody:markRead"), json!({})).await.assert_validation("chat");
    app.get(&format!("/api/v1/sessions/{a}/messages/msg_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")).await.assert_error(404, "not_found");
    app.get(&format!("/api/v1/sessions/{a}/messages/garbage")).await.assert_error(404, "not_found");
    // A message to a number with no sandbox session is delivered at once.
    let m = send(&app, &a, json!({"to": "628999999999", "location": {"latitude": -6.2, "longitude": 106.8, "name": "Monas"}})).await;
    let id = m["id"].as_str().unwrap();
    let m = poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "delivered").await;
    assert_eq!(m["location"]["name"], "Monas");
    assert_eq!(m["type"], "location");
}

#[tokio::test]
async fn unpaired_sessions_conflict_and_stopped_ones_queue_until_started() {
    let app = spawn_app().await;
    let never = app.create_session(json!({"engine": "sandbox", "start": false})).await["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/sessions/{never}/messages"), json!({"to": "628222222222", "text": "x"})).await.assert_error(409, "conflict");

    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    app.post(&format!("/api/v1/sessions/{a}:stop"), json!({})).await;
    let queued = send(&app, &a, json!({"to": "628222222222", "text": "later"})).await;
    let id = queued["id"].as_str().unwrap().to_owned();
    // Stopped: nothing goes (look twice, some time apart, while other requests go through).
    for _ in 0..3 {
        assert_eq!(message(&app, &a, &id).await["status"], "queued");
        assert!(inbound(&app, &b).await.is_empty());
    }
    app.post(&format!("/api/v1/sessions/{a}:start"), json!({})).await;
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "delivered").await;
    assert_eq!(inbound(&app, &b).await.len(), 1);

    app.post(&format!("/api/v1/sessions/{a}:logout"), json!({})).await;
    app.post(&format!("/api/v1/sessions/{a}/messages"), json!({"to": "628222222222", "text": "x"})).await.assert_error(409, "conflict");
}

#[tokio::test]
async fn sandbox_receive_stores_inbound_messages_and_other_organizations_see_nothing() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let got = app.post(&format!("/api/v1/sessions/{a}/sandbox:receive"), json!({"from": "628333333333", "pushName": "Cy", "text": "hi"})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", String::from_utf8_lossy(&got.bytes));
    let got = got.json();
    assert_eq!(got["direction"], "inbound");
    assert_eq!(got["fromPhone"], "628333333333");
    assert_eq!(got["pushName"], "Cy");
    assert_eq!(got["text"], "hi");
    let contact = app.post(&format!("/api/v1/sessions/{a}/sandbox:receive"), json!({"from": "628333333333", "contact": {"name": "Di", "phone": "628444444444"}})).await;
    assert_eq!(contact.json()["contact"], json!({"name": "Di", "phone": "628444444444"}));
    app.post(&format!("/api/v1/sessions/{a}/sandbox:receive"), json!({"from": "x", "text": "hi"})).await.assert_validation("from");
    app.post(&format!("/api/v1/sessions/{a}/sandbox:receive"), json!({"from": "628333333333"})).await.assert_validation("text");
    let events = events(&app, &a, "message.received").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["data"], got);

    // Pages: newest first, two pages of one.
    let page = app.get(&format!("/api/v1/sessions/{a}/messages?pageSize=1")).await.json();
    assert_eq!(page["messages"][0]["type"], "contact");
    let token = page["nextPageToken"].as_str().unwrap();
    let next = app.get(&format!("/api/v1/sessions/{a}/messages?pageSize=1&pageToken={token}")).await.json();
    assert_eq!(next["messages"][0]["id"], got["id"]);
    assert!(next["nextPageToken"].is_null());
    let chat = app.get(&format!("/api/v1/sessions/{a}/messages?chatId=628333333333@s.whatsapp.net")).await.json();
    assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
    let none = app.get(&format!("/api/v1/sessions/{a}/messages?chatId=628999999999@s.whatsapp.net")).await.json();
    assert!(none["messages"].as_array().unwrap().is_empty());

    // Another organization: the same answers as for unknown ids.
    let (other, _) = app.key_for("globex", "manage,send,read").await;
    let msg = got["id"].as_str().unwrap();
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/sessions/{a}/messages"), None),
        (Method::GET, format!("/api/v1/sessions/{a}/messages/{msg}"), None),
        (Method::POST, format!("/api/v1/sessions/{a}/messages"), Some(json!({"to": "628222222222", "text": "x"}))),
        (Method::POST, format!("/api/v1/sessions/{a}/messages/{msg}:revoke"), Some(json!({}))),
        (Method::GET, format!("/api/v1/sessions/{a}/chats"), None),
        (Method::POST, format!("/api/v1/sessions/{a}/chats/628333333333@s.whatsapp.net:markRead"), Some(json!({}))),
        (Method::POST, format!("/api/v1/sessions/{a}/sandbox:receive"), Some(json!({"from": "628333333333", "text": "x"}))),
    ] {
        let answer = app.call(method, &path, Some(&other), body).await;
        answer.assert_error(404, "not_found");
    }
    // Capabilities: read cannot send, send cannot drive the sandbox.
    let (reader, _) = app.key_for("default", "read").await;
    app.call(Method::POST, &format!("/api/v1/sessions/{a}/messages"), Some(&reader), Some(json!({"to": "628222222222", "text": "x"}))).await.assert_error(403, "forbidden");
    let list = app.call(Method::GET, &format!("/api/v1/sessions/{a}/messages"), Some(&reader), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let (sender, _) = app.key_for("default", "send").await;
    app.call(Method::GET, &format!("/api/v1/sessions/{a}/messages"), Some(&sender), None).await.assert_error(403, "forbidden");
    app.call(Method::POST, &format!("/api/v1/sessions/{a}/sandbox:receive"), Some(&sender), Some(json!({"from": "628333333333", "text": "x"}))).await.assert_error(403, "forbidden");
    // Marking read needs a running session.
    app.post(&format!("/api/v1/sessions/{a}:stop"), json!({})).await;
    app.post(&format!("/api/v1/sessions/{a}/chats/628333333333@s.whatsapp.net:markRead"), json!({})).await.assert_error(409, "conflict");
}

#[tokio::test]
async fn sandbox_to_sandbox_on_postgres() {
    let Some(app) = spawn_app_with(Backend::Postgres, Layer::default()).await else { return };
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    let sent = send(&app, &a, json!({"to": "628222222222", "text": "over postgres"})).await;
    let id = sent["id"].as_str().unwrap();
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "delivered").await;
    assert_eq!(inbound(&app, &b).await[0]["text"], "over postgres");
    app.post(&format!("/api/v1/sessions/{b}/chats/628111111111@s.whatsapp.net:markRead"), json!({})).await;
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "read").await;
    let kinds: Vec<String> = events(&app, &a, "message.status").await.iter().map(|e| e["data"]["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["sent", "delivered", "read"]);
}

#[tokio::test]
async fn a_message_to_a_stopped_sandbox_session_waits_for_it_and_is_delivered_when_it_connects() {
    let app = spawn_app().await;
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    app.post(&format!("/api/v1/sessions/{b}:stop"), json!({})).await;
    let first = send(&app, &a, json!({"to": "628222222222", "text": "while you were out"})).await;
    let second = send(&app, &a, json!({"to": "628222222222", "text": "and again"})).await;
    let second_id = second["id"].as_str().unwrap();
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{second_id}"), |m| m["status"] == "sent").await;
    assert_eq!(message(&app, &a, first["id"].as_str().unwrap()).await["status"], "sent", "not delivered while B is stopped");
    assert!(inbound(&app, &b).await.is_empty());

    app.post(&format!("/api/v1/sessions/{b}:start"), json!({})).await;
    poll(&app, &format!("/api/v1/sessions/{a}/messages/{second_id}"), |m| m["status"] == "delivered").await;
    let texts: Vec<String> = inbound(&app, &b).await.iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts, ["while you were out", "and again"]);
}

/// A local server answering `GET /file` with `bytes` as `content_type`.
async fn serve_file(bytes: Vec<u8>, content_type: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/file",
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, content_type)], bytes) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/file")
}

#[tokio::test]
async fn media_by_data_and_by_url_arrive_with_their_bytes_unchanged() {
    let overrides = Layer { webhook_allow_private: Some(true), ..Layer::default() };
    let app = spawn_app_with(Backend::Sqlite, overrides).await.unwrap();
    let a = connected(&app, "628111111111").await;
    let b = connected(&app, "628222222222").await;
    let image: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sent = send(&app, &a, json!({"to": "628222222222", "image": {"data": STANDARD.encode(&image), "mimeType": "image/png", "caption": "chart", "filename": "chart.png"}})).await;
    assert_eq!(sent["type"], "image");
    assert_eq!(sent["media"]["size"], 70_000);
    assert_eq!(sent["media"]["mimeType"], "image/png");
    assert_eq!(sent["media"]["sha256"].as_str().unwrap().len(), 64);
    let voice: Vec<u8> = b"OggS voice note bytes".to_vec();
    let url = serve_file(voice.clone(), "audio/ogg").await;
    let by_url = send(&app, &a, json!({"to": "628222222222", "audio": {"url": url, "voice": true}})).await;
    assert_eq!(by_url["media"]["size"], 0, "not fetched yet");
    let by_url_id = by_url["id"].as_str().unwrap();
    let done = poll(&app, &format!("/api/v1/sessions/{a}/messages/{by_url_id}"), |m| m["status"] == "delivered").await;
    assert_eq!(done["media"]["size"], voice.len());
    assert_eq!(done["media"]["mimeType"], "audio/ogg", "from the answer's Content-Type");

    let got = poll(&app, &format!("/api/v1/sessions/{b}/messages?direction=inbound"), |v| v["messages"].as_array().is_some_and(|m| m.len() == 2)).await;
    let mut got = got["messages"].as_array().unwrap().clone();
    got.reverse();
    assert_eq!(got[0]["type"], "image");
    assert_eq!(got[0]["media"]["caption"], "chart");
    assert_eq!(got[0]["media"]["filename"], "chart.png");
    assert_eq!(got[1]["type"], "audio");
    assert_eq!(got[1]["media"]["voice"], true);
    for (m, bytes, ct) in [(&got[0], &image, "image/png"), (&got[1], &voice, "audio/ogg")] {
        let id = m["id"].as_str().unwrap();
        let a = app.get(&format!("/api/v1/sessions/{b}/messages/{id}/media")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["content-type"], ct);
        assert_eq!(&a.bytes, bytes, "the bytes unchanged");
    }
    let own = app.get(&format!("/api/v1/sessions/{a}/messages/{}/media", sent["id"].as_str().unwrap())).await;
    assert_eq!(own.bytes, image);
    // A text message has no media.
    let text = send(&app, &a, json!({"to": "628222222222", "text": "x"})).await;
    app.get(&format!("/api/v1/sessions/{a}/messages/{}/media", text["id"].as_str().unwrap())).await.assert_error(404, "not_found");

    // sandbox:receive takes the media shapes too.
    let doc = app.post(&format!("/api/v1/sessions/{a}/sandbox:receive"), json!({"from": "628333333333", "document": {"data": STANDARD.encode(b"%PDF-1.7"), "filename": "a.pdf", "mimeType": "application/pdf"}})).await;
    assert_eq!(doc.status, StatusCode::OK, "{}", String::from_utf8_lossy(&doc.bytes));
    let doc = doc.json();
    let bytes = app.get(&format!("/api/v1/sessions/{a}/messages/{}/media", doc["id"].as_str().unwrap())).await;
    assert_eq!(bytes.bytes, b"%PDF-1.7");
}

#[tokio::test]
async fn media_over_the_limit_or_out_of_reach_fails() {
    let overrides = Layer { media_max_bytes: Some(1_000), ..Layer::default() };
    let app = spawn_app_with(Backend::Sqlite, overrides).await.unwrap();
    let a = connected(&app, "628111111111").await;
    let big = STANDARD.encode(vec![1u8; 1_001]);
    let answer = app.post(&format!("/api/v1/sessions/{a}/messages"), json!({"to": "628222222222", "image": {"data": big}})).await;
    answer.assert_error(413, "payload_too_large");
    let huge = STANDARD.encode(vec![1u8; 100_000]);
    app.post(&format!("/api/v1/sessions/{a}/messages"), json!({"to": "628222222222", "image": {"data": huge}})).await.assert_error(413, "payload_too_large");
    let fits = send(&app, &a, json!({"to": "628222222222", "image": {"data": STANDARD.encode(vec![1u8; 1_000])}})).await;
    assert_eq!(fits["media"]["mimeType"], "image/jpeg", "the default of its kind");
    // Loopback is refused without WAGATE_WEBHOOK_ALLOW_PRIVATE: the message fails with the reason.
    let url = serve_file(vec![1, 2, 3], "image/png").await;
    let m = send(&app, &a, json!({"to": "628222222222", "image": {"url": url}})).await;
    let id = m["id"].as_str().unwrap();
    let failed = poll(&app, &format!("/api/v1/sessions/{a}/messages/{id}"), |m| m["status"] == "failed").await;
    assert_eq!(failed["error"]["code"], "media_unreachable", "{failed}");
    let failed_events = poll_events(&app, &a, "message.status", 1).await;
    assert!(failed_events.iter().any(|e| e["data"]["status"] == "failed" && e["data"]["error"]["code"] == "media_unreachable"));
}
