//! Messaging on the real `whatsapp` engine, end to end through the API and the WhatsApp
//! emulator: two sessions message each other with receipts and `message.status` events in
//! order; an emulated phone and a session exchange end-to-end encrypted texts; read receipts,
//! typing, number lookups, and reactions, edits and revocations both ways.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wa_emulator::{AccountSpec, ServerEvent};
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::emulator::{paired_by_qr, setup};
use crate::helpers::TestApp;

/// Generous: real Signal sessions, usync and prekey fetches on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

async fn send(app: &TestApp, session: &str, body: Value) -> Value {
    let a = app.post(&format!("/api/v1/sessions/{session}/messages"), body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&a.bytes));
    let m = a.json();
    assert_eq!(m["status"], "queued", "{m}");
    m
}

/// Polls `GET path` until `pick` finds something in its JSON.
async fn poll<T>(app: &TestApp, path: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = app.get(path).await.json();
        if let Some(found) = pick(&v) {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out polling {path}; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored message of `session` with WhatsApp id `wa_id`, once it is there.
async fn stored(app: &TestApp, session: &str, wa_id: &str) -> Value {
    poll(app, &format!("/api/v1/sessions/{session}/messages?pageSize=100"), |v| {
        v["messages"].as_array()?.iter().find(|m| m["waMessageId"] == wa_id).cloned()
    })
    .await
}

async fn status_reaches(app: &TestApp, session: &str, id: &str, status: &str) -> Value {
    poll(app, &format!("/api/v1/sessions/{session}/messages/{id}"), |m| (m["status"] == status).then(|| m.clone())).await
}

/// The session's events of `types`, oldest first, once there are at least `n`.
async fn events(app: &TestApp, session: &str, types: &str, n: usize) -> Vec<Value> {
    poll(app, &format!("/api/v1/events?sessionId={session}&types={types}&pageSize=500"), |page| {
        let mut events = page["events"].as_array()?.clone();
        events.reverse();
        (events.len() >= n).then_some(events)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_whatsapp_sessions_message_each_other_sent_delivered_read() {
    let (emulator, app) = setup().await;
    let (a, _) = paired_by_qr(&app, &emulator, "15550200101").await;
    let (b, _) = paired_by_qr(&app, &emulator, "15550200102").await;

    let sent = send(&app, &a, json!({"to": "15550200102", "text": "Hello B"})).await;
    let (id, wa_id) = (sent["id"].as_str().unwrap().to_owned(), sent["waMessageId"].as_str().unwrap().to_owned());

    // B stores it, decrypted, under the id A fixed at accept time, with A's phone.
    let got = stored(&app, &b, &wa_id).await;
    assert_eq!(got["direction"], "inbound", "{got}");
    assert_eq!(got["text"], "Hello B", "{got}");
    assert_eq!(got["fromPhone"], "15550200101", "{got}");
    assert_eq!(got["status"], "received", "{got}");
    assert_eq!(events(&app, &b, "message.received", 1).await[0]["data"]["waMessageId"], wa_id.as_str());

    status_reaches(&app, &a, &id, "delivered").await;
    let chat = got["chatId"].as_str().unwrap();
    let read = app.post(&format!("/api/v1/sessions/{b}/chats/{chat}:markRead"), json!({})).await;
    assert_eq!(read.status, StatusCode::OK, "{}", String::from_utf8_lossy(&read.bytes));
    assert_eq!(read.json(), json!({"read": 1}));
    status_reaches(&app, &a, &id, "read").await;

    let statuses: Vec<(String, String)> = events(&app, &a, "message.status", 3)
        .await
        .iter()
        .map(|e| (e["data"]["previousStatus"].as_str().unwrap().to_owned(), e["data"]["status"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("queued", "sent"), ("sent", "delivered"), ("delivered", "read")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(statuses, expected);

    // B answers: A stores it with B's phone.
    let answer = send(&app, &b, json!({"to": "15550200101", "text": "Hello A"})).await;
    let got = stored(&app, &a, answer["waMessageId"].as_str().unwrap()).await;
    assert_eq!((got["text"].as_str(), got["fromPhone"].as_str()), (Some("Hello A"), Some("15550200102")), "{got}");

    // A message accepted while A is stopped waits, and goes once A is back after a gateway
    // restart: B stores it once, with A's phone.
    let stopped = app.post(&format!("/api/v1/sessions/{a}:stop"), json!({})).await.json();
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let waiting = send(&app, &a, json!({"to": "15550200102", "text": "after the restart"})).await;
    let app = app.restart().await;
    app.wait_for(&b, 60, |s| s["status"] == "connected").await;
    app.post(&format!("/api/v1/sessions/{a}:start"), json!({})).await;
    app.wait_for(&a, 60, |s| s["status"] == "connected").await;
    let wa_id = waiting["waMessageId"].as_str().unwrap();
    let got = stored(&app, &b, wa_id).await;
    assert_eq!((got["text"].as_str(), got["fromPhone"].as_str()), (Some("after the restart"), Some("15550200101")), "{got}");
    status_reaches(&app, &a, waiting["id"].as_str().unwrap(), "delivered").await;
    let copies = app.get(&format!("/api/v1/sessions/{b}/messages?direction=inbound&pageSize=100")).await.json();
    let copies = copies["messages"].as_array().unwrap().iter().filter(|m| m["waMessageId"] == wa_id).count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_and_a_whatsapp_session_exchange_texts_receipts_and_more() {
    let (emulator, app) = setup().await;
    let bob = "15550200202";
    let spec = AccountSpec { phone: Some(bob.into()), push_name: Some("Bob".into()), ..AccountSpec::default() };
    emulator.create_account(spec).unwrap();
    let (a, _) = paired_by_qr(&app, &emulator, "15550200201").await;

    // The phone writes: the session stores it with the phone's number and push name.
    let hello = emulator.phone_send_text(bob, "15550200201", "hi from the phone").unwrap();
    let got = stored(&app, &a, &hello).await;
    assert_eq!(got["text"], "hi from the phone", "{got}");
    assert_eq!(got["fromPhone"], bob, "{got}");
    assert_eq!(got["pushName"], "Bob", "{got}");
    let chat = got["chatId"].as_str().unwrap().to_owned();

    // The session marks it read: the phone gets the read receipt.
    let read = app.post(&format!("/api/v1/sessions/{a}/chats/{chat}:markRead"), json!({})).await;
    assert_eq!(read.json(), json!({"read": 1}));
    emulator.wait_for_phone_receipt(bob, PATIENCE, |r| r.id == hello && r.kind == "read").await.expect("read receipt");

    // The session replies, quoting it: the phone decrypts the text and the quote.
    let reply = send(&app, &a, json!({"to": bob, "text": "hi phone", "replyTo": got["id"]})).await;
    let reply_wa = reply["waMessageId"].as_str().unwrap().to_owned();
    let on_phone = emulator.wait_for_phone_message(bob, PATIENCE, |m| m.id == reply_wa).await.expect("the phone decrypts it");
    assert_eq!(on_phone.text.as_deref(), Some("hi phone"));
    let quoted = on_phone.message().and_then(|m| m.extended_text_message.as_option()?.context_info.as_option()?.stanza_id.clone());
    assert_eq!(quoted.as_deref(), Some(hello.as_str()));
    let reply_id = reply["id"].as_str().unwrap();
    status_reaches(&app, &a, reply_id, "delivered").await;
    emulator.phone_mark_read(bob, &[reply_wa.as_str()]).unwrap();
    status_reaches(&app, &a, reply_id, "read").await;

    // A location, a contact card and a reaction to the phone's message reach the phone.
    let paced = app
        .call(Method::PATCH, &format!("/api/v1/sessions/{a}"), Some(&app.key), Some(json!({"sendPolicy": {"messagesPerMinute": 600}})))
        .await;
    assert_eq!(paced.status, StatusCode::OK, "{}", String::from_utf8_lossy(&paced.bytes));
    let on_phone = |sent: Value| {
        let wa_id = sent["waMessageId"].as_str().unwrap().to_owned();
        let emulator = &emulator;
        async move {
            let got = emulator.wait_for_phone_message(bob, PATIENCE, |m| m.id == wa_id).await.expect("the phone decrypts it");
            got.message().expect("a Message")
        }
    };
    let location = send(&app, &a, json!({"to": bob, "location": {"latitude": -6.175, "longitude": 106.827, "name": "Monas"}})).await;
    let got_location = on_phone(location).await;
    let loc = got_location.location_message.as_option().expect("a location");
    assert_eq!((loc.degrees_latitude, loc.degrees_longitude, loc.name.as_deref()), (Some(-6.175), Some(106.827), Some("Monas")));
    let contact = send(&app, &a, json!({"to": bob, "contact": {"name": "Ada", "phone": "15550200201"}})).await;
    let got_contact = on_phone(contact).await;
    let card = got_contact.contact_message.as_option().expect("a contact");
    assert_eq!(card.display_name.as_deref(), Some("Ada"));
    assert!(card.vcard.as_deref().is_some_and(|v| v.contains("waid=15550200201")), "{:?}", card.vcard);
    let reaction = send(&app, &a, json!({"to": bob, "reaction": {"messageId": got["id"], "emoji": "❤"}})).await;
    let got_reaction = on_phone(reaction).await;
    let r = got_reaction.reaction_message.as_option().expect("a reaction");
    assert_eq!(r.text.as_deref(), Some("❤"));
    assert_eq!(r.key.as_option().and_then(|k| k.id.as_deref()), Some(hello.as_str()));

    // Typing shows on the phone's side; number lookups tell accounts from strangers.
    let typing = app.post(&format!("/api/v1/sessions/{a}/chats/{bob}@s.whatsapp.net:presence"), json!({"state": "typing"})).await;
    assert_eq!(typing.status, StatusCode::OK, "{}", String::from_utf8_lossy(&typing.bytes));
    emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::ChatState { phone, state, .. } if phone == bob && state == "composing"))
        .await
        .expect("the chat state reaches the phone");
    let checked = app.post(&format!("/api/v1/sessions/{a}:checkNumbers"), json!({"phones": [bob, "15550209999"]})).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", String::from_utf8_lossy(&checked.bytes));
    let results = checked.json()["results"].clone();
    assert_eq!(results[0]["phone"], bob, "{results}");
    assert_eq!(results[0]["onWhatsApp"], true, "{results}");
    assert_eq!(results[0]["jid"], format!("{bob}@s.whatsapp.net"), "{results}");
    assert_eq!(results[1]["onWhatsApp"], false, "{results}");

    // The phone reacts to the reply, edits and then revokes its own message.
    let key = |id: &str, from_me: bool| wa::MessageKey {
        remote_jid: Some("15550200201@s.whatsapp.net".into()),
        from_me: Some(from_me),
        id: Some(id.to_owned()),
        participant: None,
    };
    let reaction = wa::Message {
        reaction_message: MessageField::some(wa::message::ReactionMessage {
            key: MessageField::some(key(&reply_wa, false)),
            text: Some("👍".into()),
            sender_timestamp_ms: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    emulator.phone_send(bob, "15550200201", &reaction).unwrap();
    let reacted = events(&app, &a, "message.reaction", 1).await;
    assert_eq!(reacted[0]["data"]["waMessageId"], reply_wa.as_str(), "{reacted:?}");
    assert_eq!(reacted[0]["data"]["emoji"], "👍");

    let protocol = |kind: wa::message::protocol_message::Type, edited: Option<wa::Message>| wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            key: MessageField::some(key(&hello, true)),
            r#type: Some(kind),
            edited_message: edited.map_or_else(MessageField::none, MessageField::some),
            ..Default::default()
        }),
        ..Default::default()
    };
    let edit = wa::Message { conversation: Some("hi, edited".into()), ..Default::default() };
    emulator.phone_send(bob, "15550200201", &protocol(wa::message::protocol_message::Type::MessageEdit, Some(edit))).unwrap();
    let edited = events(&app, &a, "message.edited", 1).await;
    assert_eq!(edited[0]["data"]["text"], "hi, edited", "{edited:?}");
    let got_id = got["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/sessions/{a}/messages/{got_id}")).await.json()["text"], "hi, edited");
    emulator.phone_send(bob, "15550200201", &protocol(wa::message::protocol_message::Type::Revoke, None)).unwrap();
    events(&app, &a, "message.revoked", 1).await;
    assert_eq!(app.get(&format!("/api/v1/sessions/{a}/messages/{got_id}")).await.json()["revoked"], true);

    // The session edits and revokes its reply: the phone receives both.
    let edited = app.post(&format!("/api/v1/sessions/{a}/messages/{reply_id}:edit"), json!({"text": "hi phone, edited"})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", String::from_utf8_lossy(&edited.bytes));
    let protocol_on_phone = |kind: wa::message::protocol_message::Type| {
        let reply_wa = reply_wa.clone();
        move |m: &wa_emulator::PhoneMessage| {
            m.message().is_some_and(|msg| {
                msg.protocol_message
                    .as_option()
                    .is_some_and(|p| p.r#type == Some(kind) && p.key.as_option().and_then(|k| k.id.as_deref()) == Some(reply_wa.as_str()))
            })
        }
    };
    emulator
        .wait_for_phone_message(bob, PATIENCE, protocol_on_phone(wa::message::protocol_message::Type::MessageEdit))
        .await
        .expect("the phone gets the edit");
    let revoked = app.post(&format!("/api/v1/sessions/{a}/messages/{reply_id}:revoke"), json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", String::from_utf8_lossy(&revoked.bytes));
    emulator
        .wait_for_phone_message(bob, PATIENCE, protocol_on_phone(wa::message::protocol_message::Type::Revoke))
        .await
        .expect("the phone gets the revocation");
}
