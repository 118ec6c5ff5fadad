//! Messaging on the real `whatsapp` engine, end to end through the API and the WhatsApp
//! emulator: two sessions message each other with receipts and `message.status` events in
//! order; an emulated phone and a session exchange end-to-end encrypted texts; read receipts,
//! typing, number lookups, and reactions, edits and revocations both ways; images, voice notes
//! and documents both ways with their bytes unchanged, and inbound media that cannot be had
//! stored with an error; what the account sends from its own phone, stored as its own.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wa_emulator::{AccountSpec, MediaKind, PhoneMedia, ServerEvent};
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
    assert_eq!(r.key.as_option().and_then(|k| k.from_me), Some(false), "the phone's message");
    // A reaction to the session's own message names it as the sender's own.
    let own = send(&app, &a, json!({"to": bob, "reaction": {"messageId": reply["id"], "emoji": "🎉"}})).await;
    let got_own = on_phone(own).await;
    let key = got_own.reaction_message.as_option().and_then(|r| r.key.as_option()).cloned().expect("a reaction");
    assert_eq!((key.id.as_deref(), key.from_me), (Some(reply_wa.as_str()), Some(true)));

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

/// `len` bytes of a pattern seeded by `seed`.
/// What the account sends from its own phone reaches its linked session as well (WhatsApp
/// copies it to every device of the sender): the session stores it as its own outbound message,
/// `sent`, announces it with `message.sent` (never `message.received`, so a bot answering
/// `message.received` does not answer itself), and the recipient's receipts move it on. What the
/// session sends through the API is not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_account_sends_from_its_phone_are_stored_as_its_own() {
    let (emulator, app) = setup().await;
    let bob = "15550200402";
    emulator.create_account(AccountSpec { phone: Some(bob.into()), ..AccountSpec::default() }).unwrap();
    let me = "15550200401";
    let (a, _) = paired_by_qr(&app, &emulator, me).await;

    let typed = emulator.phone_send_text(me, bob, "typed on my phone").unwrap();
    let got = stored(&app, &a, &typed).await;
    assert_eq!(
        (&got["direction"], &got["fromMe"], &got["status"], &got["text"]),
        (&json!("outbound"), &json!(true), &json!("sent"), &json!("typed on my phone")),
        "{got}"
    );
    assert_eq!(got["chatId"], format!("{bob}@s.whatsapp.net"), "the chat is the recipient's: {got}");
    assert_eq!(got["fromPhone"], me, "{got}");
    let announced = events(&app, &a, "message.sent", 1).await;
    assert_eq!(announced[0]["data"]["waMessageId"], typed, "{announced:?}");
    assert_eq!(announced[0]["data"]["id"], got["id"], "{announced:?}");

    // Bob reads it on his phone: the receipt reaches the session and moves the message on.
    emulator.phone_mark_read(bob, &[typed.as_str()]).unwrap();
    let id = got["id"].as_str().unwrap();
    status_reaches(&app, &a, id, "read").await;

    // A message sent through the API: delivered, stored once, announced by its statuses only.
    let api = send(&app, &a, json!({"to": bob, "text": "from the API"})).await;
    status_reaches(&app, &a, api["id"].as_str().unwrap(), "delivered").await;
    let all = app.get(&format!("/api/v1/sessions/{a}/messages?pageSize=100")).await.json();
    let texts: Vec<&str> = all["messages"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["from the API", "typed on my phone"], "newest first, each once: {all}");
    let page = app.get(&format!("/api/v1/events?sessionId={a}&types=message.sent,message.received")).await.json();
    let kinds: Vec<&str> = page["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["message.sent"], "{page}");
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(seed) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_and_a_whatsapp_session_exchange_media_with_the_bytes_unchanged() {
    let (emulator, app) = setup().await;
    let (bob, mine) = ("15550200302", "15550200301");
    let spec = AccountSpec { phone: Some(bob.into()), push_name: Some("Bob".into()), ..AccountSpec::default() };
    emulator.create_account(spec).unwrap();
    let (a, _) = paired_by_qr(&app, &emulator, mine).await;

    // The phone sends a text, an image and a voice note: the session stores each, downloads
    // and decrypts the media on receipt, and serves the bytes unchanged.
    let media = |kind: MediaKind, data: &[u8], mimetype: &str, caption: Option<&str>, ptt: bool| PhoneMedia {
        kind,
        data: data.to_vec(),
        mimetype: mimetype.into(),
        caption: caption.map(str::to_owned),
        file_name: None,
        ptt,
    };
    let (image, voice) = (pattern(150_000, 7), pattern(24_000, 11));
    let text_id = emulator.phone_send_text(bob, mine, "see the chart").unwrap();
    let image_id = emulator.phone_send_media(bob, mine, media(MediaKind::Image, &image, "image/jpeg", Some("the chart"), false)).unwrap();
    let voice_id = emulator.phone_send_media(bob, mine, media(MediaKind::Audio, &voice, "audio/ogg; codecs=opus", None, true)).unwrap();
    assert_eq!(stored(&app, &a, &text_id).await["text"], "see the chart");
    for (wa_id, bytes, kind, mime) in [(&image_id, &image, "image", "image/jpeg"), (&voice_id, &voice, "audio", "audio/ogg; codecs=opus")] {
        let got = stored(&app, &a, wa_id).await;
        assert_eq!((got["type"].as_str(), got["error"].clone()), (Some(kind), Value::Null), "{got}");
        assert_eq!(got["media"]["mimeType"], mime, "{got}");
        assert_eq!(got["media"]["size"], bytes.len(), "{got}");
        assert_eq!(got["fromPhone"], bob, "{got}");
        let served = app.get(&format!("/api/v1/sessions/{a}/messages/{}/media", got["id"].as_str().unwrap())).await;
        assert_eq!(served.status, StatusCode::OK);
        assert_eq!(served.headers["content-type"], mime);
        assert!(served.bytes == *bytes, "{kind}: the bytes as the phone sent them");
    }
    let got_image = stored(&app, &a, &image_id).await;
    assert_eq!(got_image["media"]["caption"], "the chart", "{got_image}");
    assert_eq!(stored(&app, &a, &voice_id).await["media"]["voice"], true);

    // The session replies with a text, an image and a document: the phone downloads and
    // decrypts each and gets the bytes that were sent.
    let paced = app
        .call(Method::PATCH, &format!("/api/v1/sessions/{a}"), Some(&app.key), Some(json!({"sendPolicy": {"messagesPerMinute": 600}})))
        .await;
    assert_eq!(paced.status, StatusCode::OK, "{}", String::from_utf8_lossy(&paced.bytes));
    let (photo, pdf) = (pattern(90_000, 13), pattern(40_000, 17));
    let text = send(&app, &a, json!({"to": bob, "text": "thanks, here is mine"})).await;
    let photo_sent = send(&app, &a, json!({"to": bob, "image": {"data": STANDARD.encode(&photo), "mimeType": "image/png", "caption": "mine", "filename": "mine.png"}})).await;
    let doc_sent = send(&app, &a, json!({"to": bob, "document": {"data": STANDARD.encode(&pdf), "mimeType": "application/pdf", "filename": "report.pdf", "caption": "Q3"}})).await;
    let on_phone = |sent: &Value| {
        let wa_id = sent["waMessageId"].as_str().unwrap().to_owned();
        let emulator = &emulator;
        async move { emulator.wait_for_phone_message(bob, PATIENCE, |m| m.id == wa_id).await.expect("the phone decrypts it") }
    };
    assert_eq!(on_phone(&text).await.text.as_deref(), Some("thanks, here is mine"));
    let got = on_phone(&photo_sent).await.media.expect("an image");
    assert_eq!((got.kind, got.mimetype.as_str(), got.caption.as_deref(), got.error.as_deref()), (MediaKind::Image, "image/png", Some("mine"), None));
    assert!(got.data == photo, "the image's bytes as sent");
    let got = on_phone(&doc_sent).await.media.expect("a document");
    assert_eq!((got.kind, got.file_name.as_deref(), got.caption.as_deref(), got.error.as_deref()), (MediaKind::Document, Some("report.pdf"), Some("Q3"), None));
    assert!(got.data == pdf, "the document's bytes as sent");
    for sent in [&photo_sent, &doc_sent] {
        status_reaches(&app, &a, sent["id"].as_str().unwrap(), "delivered").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_that_cannot_be_had_is_stored_with_an_error_not_dropped() {
    let (emulator, app) = setup().await;
    let (bob, mine) = ("15550200402", "15550200401");
    let spec = AccountSpec { phone: Some(bob.into()), push_name: Some("Bob".into()), ..AccountSpec::default() };
    emulator.create_account(spec).unwrap();
    let (a, _) = paired_by_qr(&app, &emulator, mine).await;

    // An image whose file the media host does not have, and one declared over the size cap.
    let image = |direct_path: &str, file_length: u64| wa::Message {
        image_message: MessageField::some(wa::message::ImageMessage {
            url: Some(format!("https://{}{direct_path}", emulator.media_host())),
            direct_path: Some(direct_path.to_owned()),
            media_key: Some(vec![1; 32]),
            file_sha256: Some(vec![2; 32]),
            file_enc_sha256: Some(vec![3; 32]),
            file_length: Some(file_length),
            mimetype: Some("image/jpeg".into()),
            caption: Some("lost".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let missing = emulator.phone_send(bob, mine, &image("/v/t62.7118-24/missing.enc?ccb=11-4", 1_000)).unwrap();
    let huge = emulator.phone_send(bob, mine, &image("/v/t62.7118-24/huge.enc?ccb=11-4", 1 << 40)).unwrap();
    for (wa_id, code) in [(&missing, "media_unavailable"), (&huge, "media_too_large")] {
        let got = stored(&app, &a, wa_id).await;
        assert_eq!(got["type"], "image", "{got}");
        assert_eq!(got["error"]["code"], code, "{got}");
        assert_eq!(got["media"]["caption"], "lost", "the description is kept: {got}");
        let served = app.get(&format!("/api/v1/sessions/{a}/messages/{}/media", got["id"].as_str().unwrap())).await;
        served.assert_error(404, "not_found");
    }
    // A message the client cannot decrypt, which the phone cannot send again (it kept no
    // copy): stored as a placeholder with an error and its event, not dropped.
    let lost = emulator.phone_send_text_lost(bob, mine, "never readable").unwrap();
    let got = stored(&app, &a, &lost).await;
    assert_eq!((got["type"].as_str(), got["error"]["code"].as_str()), (Some("unsupported"), Some("undecryptable")), "{got}");
    assert_eq!((got["text"].clone(), got["fromPhone"].clone()), (Value::Null, json!(bob)), "{got}");
    let announced = poll(&app, &format!("/api/v1/events?sessionId={a}&types=message.received&pageSize=500"), |page| {
        page["events"].as_array()?.iter().find(|e| e["data"]["waMessageId"] == lost.as_str()).cloned()
    })
    .await;
    assert_eq!(announced["data"]["error"]["code"], "undecryptable", "{announced}");

    // A message the client cannot decrypt at first: it asks the phone to send it again, and
    // the session ends with the message decrypted, with no error, under one id (a placeholder
    // stored before the copy arrived gives way to it, and a second event follows).
    let garbled = emulator.phone_send_text_garbled(bob, mine, "say again?").unwrap();
    let got = poll(&app, &format!("/api/v1/sessions/{a}/messages?pageSize=100"), |v| {
        v["messages"].as_array()?.iter().find(|m| m["waMessageId"] == garbled.as_str() && m["text"] == "say again?").cloned()
    })
    .await;
    assert_eq!((got["type"].as_str(), got["error"].clone()), (Some("text"), Value::Null), "{got}");
    let received: Vec<Value> = events(&app, &a, "message.received", 4)
        .await
        .into_iter()
        .filter(|e| e["data"]["waMessageId"] == garbled.as_str())
        .map(|e| e["data"].clone())
        .collect();
    assert!(received.iter().all(|m| m["id"] == got["id"]), "one message: {received:?}");
    assert_eq!(received.last().map(|m| m["error"].clone()), Some(Value::Null), "{received:?}");
    if let [placeholder, _] = received.as_slice() {
        assert_eq!(placeholder["error"]["code"], "undecryptable", "{received:?}");
    }

    // The session goes on receiving.
    let after = emulator.phone_send_text(bob, mine, "still there?").unwrap();
    assert_eq!(stored(&app, &a, &after).await["text"], "still there?");
}
