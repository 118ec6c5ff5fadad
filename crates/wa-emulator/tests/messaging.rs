//! The real `whatsapp-rust` client against the emulator, messaging: a paired client and an
//! emulated phone exchange end-to-end encrypted texts and receipts; two clients paired to two
//! accounts message each other; typing and number lookups.

mod common;

use std::sync::Arc;

use common::{Companion, PATIENCE, emulator};
use wa_emulator::{AccountSpec, Emulator, EmulatorConfig, ServerEvent};
use whatsapp_rust::Jid;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_an_emulated_phone_exchange_texts_and_receipts() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emulator
        .create_account(AccountSpec { phone: Some("15550100102".into()), push_name: Some("Bob".into()), ..Default::default() })
        .unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550100101", "Ada").await;
    let bob = Jid::pn("15550100102");

    // The client's first text: usync, prekey fetch, a pkmsg the phone decrypts.
    let sent = ada.client.send_text(bob.clone(), "hello Bob").await.expect("sent");
    let got = emulator
        .wait_for_phone_message("15550100102", PATIENCE, |m| m.id == sent.message_id)
        .await
        .expect("the phone decrypts it");
    assert_eq!(got.text.as_deref(), Some("hello Bob"));
    assert_eq!(got.chat, "15550100101@s.whatsapp.net");
    assert!(got.from.starts_with("15550100101:"), "{}", got.from);
    assert!(!got.from_me);
    // Ada's own phone gets the device-sent copy, for the chat with Bob.
    let copy = emulator
        .wait_for_phone_message("15550100101", PATIENCE, |m| m.id == sent.message_id)
        .await
        .expect("the own phone decrypts its copy");
    assert!(copy.from_me);
    assert_eq!((copy.text.as_deref(), copy.chat.as_str()), (Some("hello Bob"), "15550100102@s.whatsapp.net"));
    // The phone's delivery receipt.
    ada.receipt(&sent.message_id, ReceiptType::Delivered).await;

    // A second text rides the established session.
    let second = ada.client.send_text(bob.clone(), "second").await.expect("sent");
    let got = emulator.wait_for_phone_message("15550100102", PATIENCE, |m| m.id == second.message_id).await.unwrap();
    assert_eq!(got.text.as_deref(), Some("second"));

    // The phone answers: the client emits it as a message from Bob.
    let reply = emulator.phone_send_text("15550100102", "15550100101", "hi Ada").unwrap();
    let (text, sender) = ada.received_text(&reply).await;
    assert_eq!(text, "hi Ada");
    let bob_lid = emulator.account("15550100102").unwrap().lid;
    assert!(sender.user == "15550100102" || bob_lid.starts_with(sender.user.as_str()), "sender {sender}");
    emulator
        .wait_for_phone_receipt("15550100102", PATIENCE, |r| r.id == reply && r.kind == "delivery")
        .await
        .expect("the client's delivery receipt reaches the phone");
    let again = emulator.phone_send_text("15550100102", "15550100101", "and again").unwrap();
    assert_eq!(ada.received_text(&again).await.0, "and again");

    // Read receipts both ways.
    ada.client.mark_as_read(&bob, None, &[reply.as_str()]).await.expect("marked read");
    emulator
        .wait_for_phone_receipt("15550100102", PATIENCE, |r| r.id == reply && r.kind == "read")
        .await
        .expect("the read receipt reaches the phone");
    emulator.phone_mark_read("15550100102", &[second.message_id.as_str()]).unwrap();
    ada.receipt(&second.message_id, ReceiptType::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_two_accounts_message_each_other() {
    let emulator = emulator().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ada = Companion::paired(&emulator, dir_a.path(), "15550100201", "Ada").await;
    let bob = Companion::paired(&emulator, dir_b.path(), "15550100202", "Bob").await;

    let sent = ada.client.send_text(Jid::pn("15550100202"), "hello from Ada").await.expect("sent");
    let (text, sender) = bob.received_text(&sent.message_id).await;
    assert_eq!(text, "hello from Ada");
    let ada_lid = emulator.account("15550100201").unwrap().lid;
    assert!(sender.user == "15550100201" || ada_lid.starts_with(sender.user.as_str()), "sender {sender}");
    ada.receipt(&sent.message_id, ReceiptType::Delivered).await;
    // Bob's phone saw it too (Bob's primary is a device of the recipient account).
    emulator.wait_for_phone_message("15550100202", PATIENCE, |m| m.id == sent.message_id).await.unwrap();

    let answer = bob.client.send_text(Jid::pn("15550100201"), "hello from Bob").await.expect("sent");
    assert_eq!(ada.received_text(&answer.message_id).await.0, "hello from Bob");

    bob.client.mark_as_read(&Jid::pn("15550100201"), None, &[sent.message_id.as_str()]).await.unwrap();
    ada.receipt(&sent.message_id, ReceiptType::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_number_lookups() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550100302".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550100301", "Ada").await;

    let found = ada
        .client
        .contacts()
        .is_on_whatsapp(&[Jid::pn("15550100302"), Jid::pn("15550109999")])
        .await
        .expect("usync contact lookup");
    let registered = |n: &str| found.iter().find(|r| r.jid.user == n).map(|r| r.is_registered);
    assert_eq!(registered("15550100302"), Some(true));
    assert_eq!(registered("15550109999"), Some(false));

    ada.client.chatstate().send_composing(&Jid::pn("15550100302")).await.expect("typing");
    emulator
        .wait_for_event(PATIENCE, |e| {
            matches!(e, ServerEvent::ChatState { phone, from, state } if phone == "15550100302" && from == "15550100301" && state == "composing")
        })
        .await
        .unwrap();

    emulator.phone_typing("15550100302", "15550100301", "composing").unwrap();
    ada.wait("the phone typing", |e| matches!(e, Event::ChatPresence(_)).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_an_offline_client_wait_in_its_queue() {
    let emulator = emulator().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    emulator.create_account(AccountSpec { phone: Some("15550100403".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir_a.path(), "15550100401", "Ada").await;
    let bob = Companion::paired(&emulator, dir_b.path(), "15550100402", "Bob").await;
    let bob_device = emulator.account("15550100402").unwrap().devices[0].jid.clone();

    bob.stop().await;
    emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::Disconnected { jid: Some(j), .. } if *j == bob_device))
        .await
        .unwrap();
    let sent = ada.client.send_text(Jid::pn("15550100402"), "while you were away").await.expect("sent");
    emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::MessageRouted { id, .. } if *id == sent.message_id))
        .await
        .unwrap();
    let from_phone = emulator.phone_send_text("15550100403", "15550100402", "me too").unwrap();

    // Back online from its stored keys: the queue is delivered, marked offline.
    let bob = Companion::start(&emulator, dir_b.path()).await;
    let (text, _) = bob.received_text(&sent.message_id).await;
    assert_eq!(text, "while you were away");
    assert_eq!(bob.received_text(&from_phone).await.0, "me too");
    let offline = bob
        .wait("the offline flag", |e| e.messages().find(|m| m.info.id == sent.message_id).map(|m| m.info.is_offline))
        .await;
    assert!(offline, "delivered from the offline queue");
    ada.receipt(&sent.message_id, ReceiptType::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_client_cannot_decrypt_is_sent_again_after_its_retry_receipt() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550100502".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550100501", "Ada").await;

    let id = emulator.phone_send_text_garbled("15550100502", "15550100501", "second try").unwrap();
    ada.wait("UndecryptableMessage", |e| match e {
        Event::UndecryptableMessage(u) if u.info.id == id => Some(()),
        _ => None,
    })
    .await;
    emulator
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::PhoneResent { phone, id: i } if phone == "15550100502" && *i == id))
        .await
        .expect("the phone honours the retry receipt");
    assert_eq!(ada.received_text(&id).await.0, "second try");

    // The session the retry built carries on.
    let next = emulator.phone_send_text("15550100502", "15550100501", "and on").unwrap();
    assert_eq!(ada.received_text(&next).await.0, "and on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_subscriptions_follow_the_phone() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550100602".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550100601", "Ada").await;

    ada.client.presence().subscribe(Jid::pn("15550100602")).await.expect("subscribed");
    ada.wait("the current presence", |e| match e {
        Event::Presence(p) if p.from.user == "15550100602" && p.unavailable => Some(()),
        _ => None,
    })
    .await;
    emulator.phone_set_presence("15550100602", true).unwrap();
    ada.wait("online", |e| match e {
        Event::Presence(p) if p.from.user == "15550100602" && !p.unavailable => Some(()),
        _ => None,
    })
    .await;
}

/// The phones' Signal sessions, the companions' uploaded keys and the devices survive an
/// emulator restart on the same data directory: the conversation carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_survive_an_emulator_restart() {
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = EmulatorConfig { data_dir: Some(data.path().to_owned()), ..Default::default() };
    let first = Emulator::start(config.clone()).await.unwrap();
    let addr = first.addr();
    first.create_account(AccountSpec { phone: Some("15550100702".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&first, dir.path(), "15550100701", "Ada").await;
    let hello = first.phone_send_text("15550100702", "15550100701", "before").unwrap();
    assert_eq!(ada.received_text(&hello).await.0, "before");
    let sent = ada.client.send_text(Jid::pn("15550100702"), "before too").await.unwrap();
    first.wait_for_phone_message("15550100702", PATIENCE, |m| m.id == sent.message_id).await.unwrap();
    let keys_left = first.prekey_count("15550100701:1@s.whatsapp.net").unwrap();
    drop(first);

    // The same address, so the client finds it again; binding polls until the old
    // listener is gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let second = loop {
        match Emulator::start(EmulatorConfig { bind: addr, ..config.clone() }).await {
            Ok(e) => break e,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    };
    assert_eq!(second.prekey_count("15550100701:1@s.whatsapp.net"), Some(keys_left));
    second
        .wait_for_event(PATIENCE, |e| matches!(e, ServerEvent::LoggedIn { jid, .. } if jid == "15550100701:1@s.whatsapp.net"))
        .await
        .expect("the client logs in again");
    let after = second.phone_send_text("15550100702", "15550100701", "after").unwrap();
    assert_eq!(ada.received_text(&after).await.0, "after");
    let reply = ada.client.send_text(Jid::pn("15550100702"), "after too").await.unwrap();
    let got = second.wait_for_phone_message("15550100702", PATIENCE, |m| m.id == reply.message_id).await.unwrap();
    assert_eq!(got.text.as_deref(), Some("after too"));
    assert!(second.phone_messages("15550100702").iter().any(|m| m.id == sent.message_id), "the inbox persisted");
    assert!(
        !second.events().iter().any(|e| matches!(e, ServerEvent::PhoneUndecryptable { .. })),
        "{:?}",
        second.events()
    );
}

/// The HTTP control surface drives a phone like the Rust API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_control_surface_sends_and_reads_for_a_phone() {
    use tower::ServiceExt as _;
    let emulator = Arc::new(emulator().await);
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550100802".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550100801", "Ada").await;
    let router = wa_emulator::control::router(emulator.clone());
    let call = |method: &str, uri: &str, body: Option<serde_json::Value>| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status.as_u16(), serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default())
        }
    };

    let (status, body) =
        call("POST", "/phones/15550100802/send", Some(serde_json::json!({"to": "15550100801", "text": "over http"}))).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(ada.received_text(&id).await.0, "over http");

    let sent = ada.client.send_text(Jid::pn("15550100802"), "answer").await.unwrap();
    emulator.wait_for_phone_message("15550100802", PATIENCE, |m| m.id == sent.message_id).await.unwrap();
    let (status, body) = call("GET", "/phones/15550100802/messages", None).await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = body.as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.contains(&"answer"), "{body}");

    let (status, _) =
        call("POST", "/phones/15550100802/read", Some(serde_json::json!({"ids": [sent.message_id.clone()]}))).await;
    assert_eq!(status, 204);
    ada.receipt(&sent.message_id, ReceiptType::Read).await;
    let (status, _) = call("GET", "/phones/15550109999/messages", None).await;
    assert_eq!(status, 404);
}

/// A personal account's companion gets no `<biz name>` at pairing; it learns its push name
/// as WhatsApp Web does, from the phone's `critical_block` app state, decrypted with the
/// key the phone shared; a business account's companion gets it at pairing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_name_comes_by_app_state_and_biz_name_only_for_business() {
    let emulator = emulator().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ada = Companion::paired(&emulator, dir_a.path(), "15550100901", "Ada").await;
    ada.wait("the push name from app state", |e| match e {
        Event::SelfPushNameUpdated(u) if u.from_server && u.new_name == "Ada" => Some(()),
        _ => None,
    })
    .await;
    assert!(
        !ada.events.lock().unwrap().iter().any(|e| matches!(&**e, Event::PairSuccess(p) if !p.business_name.is_empty())),
        "no business name for a personal account"
    );

    let shop = Companion::start(&emulator, dir_b.path()).await;
    let qr = shop
        .wait("a QR code", |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await;
    let spec = AccountSpec { phone: Some("15550100902".into()), push_name: Some("Shop".into()), platform: Some("smba".into()) };
    emulator.scan_qr(&qr, spec).await.expect("paired");
    shop.wait("the business name at pairing", |e| match e {
        Event::PairSuccess(p) if p.business_name == "Shop" => Some(()),
        _ => None,
    })
    .await;
}
