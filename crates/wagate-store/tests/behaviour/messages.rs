//! Messages: idempotent accepts, inbound messages with their events, statuses that only move
//! forward (each step with its event, in order), edits, revocations, reactions, reads, chats,
//! and tenancy.

use std::sync::Arc;

use wagate_core::{
    Direction, EventType, Jid, Message, MessageError, MessageId, MessageStatus, MessageType, OrgId, Phone, Session,
    Timestamp,
};
use wagate_store::prelude::*;
use wagate_store::{Accepted, EventFilter, Idempotency, MessageFilter, PageRequest, ReactionRecord, StatusUpdate};

use crate::{new_session, org};

fn jid(phone: &str) -> Jid {
    Jid::of_phone(&Phone::parse(phone).unwrap())
}

fn message(session: &Session, direction: Direction, chat: &str, text: &str, at: Timestamp) -> Message {
    let inbound = direction == Direction::Inbound;
    Message {
        id: MessageId::generate(),
        org: session.org.clone(),
        session: session.id.clone(),
        chat: jid(chat),
        wa_message_id: wagate_core::new_wa_message_id(),
        direction,
        from_me: !inbound,
        from: Some(if inbound { jid(chat) } else { jid("628100000000") }),
        from_phone: Some(Phone::parse(if inbound { chat } else { "628100000000" }).unwrap()),
        push_name: inbound.then(|| "Ann".to_owned()),
        kind: MessageType::Text,
        text: Some(text.to_owned()),
        media: None,
        location: None,
        contact: None,
        reaction: None,
        media_url: None,
        reply_to: None,
        mentions: vec!["628222222222".to_owned()],
        edited: false,
        revoked: false,
        status: if inbound { MessageStatus::Received } else { MessageStatus::Queued },
        error: None,
        timestamp: at,
        created_at: at,
        updated_at: at,
    }
}

fn key(key: &str, hash: u8) -> Idempotency {
    Idempotency { key: key.to_owned(), request_hash: [hash; 32] }
}

async fn session(store: &Arc<dyn Store>, org_id: &OrgId) -> Session {
    store.insert_session(&new_session(org_id, None)).await.unwrap()
}

async fn events_of(store: &Arc<dyn Store>, session: &Session, kind: EventType) -> Vec<serde_json::Value> {
    let filter = EventFilter { session: Some(session.id.clone()), types: Some(vec![kind]) };
    let page = store.list_events(&session.org, &filter, PageRequest { size: 500, after: None }).await.unwrap();
    page.items.iter().rev().map(|e| serde_json::from_str(e.data.get()).unwrap()).collect()
}

pub async fn outbound_messages_are_accepted_once_per_idempotency_key(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = session(&store, &acme).await;
    let now = wagate_core::now();
    let first = message(&s, Direction::Outbound, "628222222222", "hi", now);
    let Accepted::New(stored) = store.accept_outbound(&first, Some(&key("k1", 1))).await.unwrap() else { panic!("new") };
    assert_eq!(stored, first, "stored as given");
    assert!(events_of(&store, &s, EventType::MessageStatus).await.is_empty(), "accepting is no event");

    let repeat = message(&s, Direction::Outbound, "628222222222", "hi", now);
    assert_eq!(store.accept_outbound(&repeat, Some(&key("k1", 1))).await.unwrap(), Accepted::Repeat(first.clone()));
    assert_eq!(store.accept_outbound(&repeat, Some(&key("k1", 2))).await.unwrap(), Accepted::KeyConflict);
    let other = session(&store, &acme).await;
    let elsewhere = message(&other, Direction::Outbound, "628222222222", "hi", now);
    assert!(matches!(store.accept_outbound(&elsewhere, Some(&key("k1", 2))).await.unwrap(), Accepted::New(_)), "keys are per session");

    // After 24 h the key is free again.
    let tomorrow = now + chrono::Duration::hours(25);
    let later = message(&s, Direction::Outbound, "628222222222", "again", tomorrow);
    assert!(matches!(store.accept_outbound(&later, Some(&key("k1", 2))).await.unwrap(), Accepted::New(_)));

    let queued = store.queued_messages(&s.id, 10).await.unwrap();
    assert_eq!(queued.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![first.id.clone(), later.id.clone()], "oldest first");
    let mut with_queue = store.sessions_with_queued().await.unwrap();
    with_queue.sort();
    let mut expected = vec![s.id.clone(), other.id.clone()];
    expected.sort();
    assert_eq!(with_queue, expected);
    assert_eq!(store.get_message(&org("globex"), &s.id, &first.id).await.unwrap(), None, "scoped");
    assert_eq!(store.get_message(&acme, &s.id, &first.id).await.unwrap(), Some(first));
}

pub async fn statuses_only_move_forward_each_step_with_its_event(store: Arc<dyn Store>) {
    let s = session(&store, &org("acme")).await;
    let m = message(&s, Direction::Outbound, "628222222222", "hi", wagate_core::now());
    store.accept_outbound(&m, None).await.unwrap();
    let at = wagate_core::now() + chrono::Duration::seconds(1);
    let step = |status| StatusUpdate { wa_message_id: &m.wa_message_id, status, error: None, at };
    // A receipt of a queued message records the `sent` it implies first.
    let delivered = store.update_status(&s.id, &step(MessageStatus::Delivered)).await.unwrap().unwrap();
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert_eq!(delivered.timestamp, at, "the send time");
    assert_eq!(store.update_status(&s.id, &step(MessageStatus::Sent)).await.unwrap(), None, "late: ignored");
    assert_eq!(store.update_status(&s.id, &step(MessageStatus::Delivered)).await.unwrap(), None, "twice: ignored");
    let failed = MessageError { code: "refused".into(), message: "no".into() };
    let fail = StatusUpdate { wa_message_id: &m.wa_message_id, status: MessageStatus::Failed, error: Some(&failed), at };
    assert_eq!(store.update_status(&s.id, &fail).await.unwrap(), None, "a delivered message does not fail");
    assert_eq!(store.update_status(&s.id, &step(MessageStatus::Read)).await.unwrap().unwrap().status, MessageStatus::Read);
    let unknown = StatusUpdate { wa_message_id: "3EB0FFFFFFFFFFFFFFFF", status: MessageStatus::Read, error: None, at };
    assert_eq!(store.update_status(&s.id, &unknown).await.unwrap(), None);

    let steps: Vec<(String, String)> = events_of(&store, &s, EventType::MessageStatus)
        .await
        .iter()
        .map(|d| (d["previousStatus"].as_str().unwrap().to_owned(), d["status"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("queued", "sent"), ("sent", "delivered"), ("delivered", "read")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(steps, expected);

    // A failure carries its error.
    let f = message(&s, Direction::Outbound, "628222222222", "nope", wagate_core::now());
    store.accept_outbound(&f, None).await.unwrap();
    let fail = StatusUpdate { wa_message_id: &f.wa_message_id, status: MessageStatus::Failed, error: Some(&failed), at };
    let stored = store.update_status(&s.id, &fail).await.unwrap().unwrap();
    assert_eq!(stored.error.as_ref(), Some(&failed));
    assert_eq!(store.get_message(&s.org, &s.id, &f.id).await.unwrap().unwrap().error, Some(failed));
    let last = events_of(&store, &s, EventType::MessageStatus).await.pop().unwrap();
    assert_eq!(last["error"], serde_json::json!({"code": "refused", "message": "no"}));
    assert!(store.queued_messages(&s.id, 10).await.unwrap().is_empty());
}

/// A message that could not be decrypted is stored as a placeholder with an error; when the
/// sender's retry brings it, the same row (same id) takes its content, with a second
/// `message.received`. Nothing else replaces a stored message.
pub async fn an_undecryptable_placeholder_gives_way_to_the_message_once(store: Arc<dyn Store>) {
    let s = session(&store, &org("acme")).await;
    let mut placeholder = message(&s, Direction::Inbound, "628333333333", "", wagate_core::now());
    placeholder.kind = MessageType::Unsupported;
    placeholder.text = None;
    placeholder.error = Some(MessageError { code: "undecryptable".into(), message: "could not be decrypted".into() });
    let stored = store.insert_inbound(&placeholder).await.unwrap().unwrap();
    assert_eq!(stored, placeholder);
    let with_same_id = |text: &str| {
        let mut m = message(&s, Direction::Inbound, "628333333333", text, wagate_core::now());
        m.wa_message_id = placeholder.wa_message_id.clone();
        m
    };
    let mut again = with_same_id("");
    again.error = placeholder.error.clone();
    assert_eq!(store.insert_inbound(&again).await.unwrap(), None, "a second failure changes nothing");

    let real = with_same_id("the text");
    let replaced = store.insert_inbound(&real).await.unwrap().expect("the placeholder gives way");
    assert_eq!(replaced.id, placeholder.id, "the same message");
    assert_eq!((replaced.kind, replaced.text.as_deref(), replaced.error.as_ref()), (MessageType::Text, Some("the text"), None));
    assert_eq!(store.get_message(&s.org, &s.id, &placeholder.id).await.unwrap(), Some(replaced.clone()));
    assert_eq!(store.insert_inbound(&with_same_id("other")).await.unwrap(), None, "a real message stays");
    let received = events_of(&store, &s, EventType::MessageReceived).await;
    assert_eq!(received, vec![serde_json::to_value(&placeholder).unwrap(), serde_json::to_value(&replaced).unwrap()]);

    // An outbound message is never replaced, whatever arrives with its id.
    let out = message(&s, Direction::Outbound, "628222222222", "mine", wagate_core::now());
    store.accept_outbound(&out, None).await.unwrap();
    let mut fake = with_same_id("not mine");
    fake.wa_message_id = out.wa_message_id.clone();
    assert_eq!(store.insert_inbound(&fake).await.unwrap(), None);
}

/// A message the account sent from another of its devices arrives as an outbound, `sent`
/// message: stored once with `message.sent` (not `message.received`); the echo of a message this
/// session sent itself changes nothing.
pub async fn own_messages_from_other_devices_are_stored_once_as_sent(store: Arc<dyn Store>) {
    let s = session(&store, &org("acme")).await;
    let mut typed = message(&s, Direction::Outbound, "628333333333", "typed on the phone", wagate_core::now());
    typed.status = MessageStatus::Sent;
    let stored = store.insert_inbound(&typed).await.unwrap().expect("stored");
    assert_eq!(stored, typed);
    assert!(stored.from_me);
    assert_eq!(store.insert_inbound(&typed).await.unwrap(), None, "a redelivery changes nothing");
    assert_eq!(events_of(&store, &s, EventType::MessageSent).await, vec![serde_json::to_value(&typed).unwrap()]);
    assert!(events_of(&store, &s, EventType::MessageReceived).await.is_empty());

    let ours = message(&s, Direction::Outbound, "628333333333", "through the API", wagate_core::now());
    store.accept_outbound(&ours, None).await.unwrap();
    let mut echo = ours.clone();
    echo.id = MessageId::generate();
    echo.status = MessageStatus::Sent;
    assert_eq!(store.insert_inbound(&echo).await.unwrap(), None, "the session's own send is stored once");
    assert_eq!(events_of(&store, &s, EventType::MessageSent).await.len(), 1);

    // Receipts move it on like any outbound message.
    let update = StatusUpdate { wa_message_id: &typed.wa_message_id, status: MessageStatus::Delivered, error: None, at: wagate_core::now() };
    store.update_status(&s.id, &update).await.unwrap();
    let now = store.get_message(&s.org, &s.id, &typed.id).await.unwrap().unwrap();
    assert_eq!(now.status, MessageStatus::Delivered);
}

pub async fn inbound_messages_are_stored_once_with_their_event(store: Arc<dyn Store>) {
    let s = session(&store, &org("acme")).await;
    let m = message(&s, Direction::Inbound, "628333333333", "hello", wagate_core::now());
    let stored = store.insert_inbound(&m).await.unwrap().unwrap();
    assert_eq!(stored, m);
    let mut again = message(&s, Direction::Inbound, "628333333333", "hello", wagate_core::now());
    again.wa_message_id = m.wa_message_id.clone();
    assert_eq!(store.insert_inbound(&again).await.unwrap(), None, "a redelivery changes nothing");
    let received = events_of(&store, &s, EventType::MessageReceived).await;
    assert_eq!(received, vec![serde_json::to_value(&m).unwrap()]);
    assert_eq!(store.find_by_wa_id(&s.id, &m.wa_message_id).await.unwrap(), Some(m.clone()));

    // Reading: once.
    let unread = store.unread_inbound(&s.id, &m.chat).await.unwrap();
    assert_eq!(unread, vec![m.clone()]);
    assert_eq!(store.mark_read(&s.id, std::slice::from_ref(&m.id), wagate_core::now()).await.unwrap(), 1);
    assert_eq!(store.mark_read(&s.id, std::slice::from_ref(&m.id), wagate_core::now()).await.unwrap(), 0);
    assert!(store.unread_inbound(&s.id, &m.chat).await.unwrap().is_empty());

    // Edits, revocations and reactions, each with its event.
    let at = wagate_core::now();
    let edited = store.apply_edit(&s.id, &m.wa_message_id, "hello!", at).await.unwrap().unwrap();
    assert!(edited.edited);
    assert_eq!(edited.text.as_deref(), Some("hello!"));
    assert_eq!(events_of(&store, &s, EventType::MessageEdited).await[0]["text"], "hello!");
    let revoked = store.apply_revoke(&s.id, &m.wa_message_id, &m.chat, at).await.unwrap().unwrap();
    assert!(revoked.revoked);
    assert_eq!(events_of(&store, &s, EventType::MessageRevoked).await[0]["from"], "628333333333@s.whatsapp.net");
    assert_eq!(store.apply_edit(&s.id, "3EB0FFFFFFFFFFFFFFFF", "x", at).await.unwrap(), None);
    let reaction = ReactionRecord { chat: &m.chat, from: &m.chat, target: &m.wa_message_id, emoji: "🎉" };
    store.record_reaction(&s.org, &s.id, &reaction).await.unwrap();
    let unknown = ReactionRecord { chat: &m.chat, from: &m.chat, target: "3EB0FFFFFFFFFFFFFFFF", emoji: "" };
    store.record_reaction(&s.org, &s.id, &unknown).await.unwrap();
    let reactions = events_of(&store, &s, EventType::MessageReaction).await;
    assert_eq!(reactions[0]["messageId"], m.id.as_str());
    assert_eq!(reactions[0]["emoji"], "🎉");
    assert!(reactions[1]["messageId"].is_null(), "no stored message: null");
}

pub async fn messages_and_chats_list_newest_first_within_their_session(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = session(&store, &acme).await;
    let other = session(&store, &acme).await;
    let mut all = Vec::new();
    for (i, (direction, chat)) in [
        (Direction::Inbound, "628333333333"),
        (Direction::Outbound, "628333333333"),
        (Direction::Inbound, "628444444444"),
        (Direction::Outbound, "628555555555"),
    ]
    .into_iter()
    .enumerate()
    {
        let m = message(&s, direction, chat, &format!("m{i}"), wagate_core::now());
        match direction {
            Direction::Inbound => drop(store.insert_inbound(&m).await.unwrap()),
            Direction::Outbound => drop(store.accept_outbound(&m, None).await.unwrap()),
        }
        all.push(m);
    }
    store.insert_inbound(&message(&other, Direction::Inbound, "628333333333", "elsewhere", wagate_core::now())).await.unwrap();

    let list = |filter: MessageFilter, size, after: Option<MessageId>| {
        let store = Arc::clone(&store);
        let (acme, id) = (acme.clone(), s.id.clone());
        async move { store.list_messages(&acme, &id, &filter, PageRequest { size, after: after.as_ref() }).await.unwrap() }
    };
    let texts = |page: &wagate_store::Page<Message, MessageId>| page.items.iter().map(|m| m.text.clone().unwrap()).collect::<Vec<_>>();
    let first = list(MessageFilter::default(), 3, None).await;
    assert_eq!(texts(&first), ["m3", "m2", "m1"]);
    let second = list(MessageFilter::default(), 3, first.next.clone()).await;
    assert_eq!(texts(&second), ["m0"]);
    assert!(second.next.is_none());
    let chat = list(MessageFilter { chat: Some(jid("628333333333")), direction: None }, 10, None).await;
    assert_eq!(texts(&chat), ["m1", "m0"]);
    let inbound = list(MessageFilter { chat: None, direction: Some(Direction::Inbound) }, 10, None).await;
    assert_eq!(texts(&inbound), ["m2", "m0"]);
    let foreign = store.list_messages(&org("globex"), &s.id, &MessageFilter::default(), PageRequest { size: 10, after: None }).await.unwrap();
    assert!(foreign.items.is_empty());

    let chats = store.list_chats(&acme, &s.id, PageRequest { size: 2, after: None }).await.unwrap();
    let ids: Vec<&str> = chats.items.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["628555555555@s.whatsapp.net", "628444444444@s.whatsapp.net"]);
    assert_eq!(chats.items[1].unread_count, 1);
    assert_eq!(chats.items[1].name.as_deref(), Some("Ann"));
    assert_eq!(chats.items[0].name, None);
    let rest = store.list_chats(&acme, &s.id, PageRequest { size: 2, after: chats.next.as_ref() }).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].last_message.text.as_deref(), Some("m1"));
    assert_eq!(rest.items[0].unread_count, 1);
    assert!(rest.next.is_none());

    // Deleting the session deletes its messages.
    assert!(store.delete_session(&acme, &s.id).await.unwrap());
    assert_eq!(store.find_by_wa_id(&s.id, &all[0].wa_message_id).await.unwrap(), None);
}
