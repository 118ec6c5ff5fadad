//! The event log: events commit with their change, read back in log order, never skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wagate_core::{EventId, EventType, NewEvent, SessionStatus};
use wagate_store::prelude::*;
use wagate_store::{EventFilter, IdentityUpdate, PageRequest};

use crate::{new_session, org, state};

fn data(event: &wagate_core::Event) -> serde_json::Value {
    serde_json::from_str(event.data.get()).unwrap()
}

async fn all_events(store: &dyn Store, org_id: &wagate_core::OrgId) -> Vec<wagate_core::Event> {
    let page = store
        .list_events(org_id, &EventFilter::default(), PageRequest { size: 500, after: None })
        .await
        .unwrap();
    assert!(page.next.is_none());
    page.items
}

pub async fn status_changes_append_events(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = store.insert_session(&new_session(&acme, Some("main"))).await.unwrap();
    let events = all_events(store.as_ref(), &acme).await;
    assert_eq!(events.len(), 1, "creation is the first status");
    assert_eq!(events[0].kind, EventType::SessionStatus);
    assert_eq!(events[0].session.as_ref(), Some(&s.id));
    assert_eq!(data(&events[0]), json!({"status": "stopped", "previousStatus": null, "statusReason": null}));

    let mut up = state(SessionStatus::Reconnecting, Some(true), IdentityUpdate::Keep);
    up.status_reason = Some("connection refused".to_owned());
    store.update_session_state(&s.id, &up).await.unwrap().unwrap();
    // Same status again (a new reason, an identity): no status change, no event.
    up.status_reason = Some("timed out".to_owned());
    store.update_session_state(&s.id, &up).await.unwrap().unwrap();
    store.update_session_state(&s.id, &state(SessionStatus::Connected, None, IdentityUpdate::Keep)).await.unwrap().unwrap();

    let events = all_events(store.as_ref(), &acme).await;
    assert_eq!(events.len(), 3);
    assert!(events.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert_eq!(data(&events[1]), json!({"status": "reconnecting", "previousStatus": "stopped", "statusReason": "connection refused"}));
    assert_eq!(data(&events[0]), json!({"status": "connected", "previousStatus": "reconnecting", "statusReason": null}));

    // Scoped reads.
    assert_eq!(store.get_event(&acme, &events[0].id).await.unwrap().unwrap().id, events[0].id);
    assert!(store.get_event(&org("other"), &events[0].id).await.unwrap().is_none());
    assert!(store.get_event(&acme, &EventId::generate()).await.unwrap().is_none());
    assert!(all_events(store.as_ref(), &org("other")).await.is_empty());
    assert_eq!(store.last_event_seq().await.unwrap(), events[0].seq);
}

pub async fn a_unit_of_work_commits_all_or_nothing(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    let before = all_events(store.as_ref(), &acme).await;
    let seq_before = store.last_event_seq().await.unwrap();

    // Fails after its first writes: a second event with the same id breaks a unique rule.
    let mut uow = store.begin().await.unwrap();
    uow.update_session_state(&s.id, &state(SessionStatus::Connected, Some(true), IdentityUpdate::Keep)).await.unwrap().unwrap();
    let event = NewEvent::session_status(&acme, &s.id, SessionStatus::Connected, Some(SessionStatus::Stopped), None);
    uow.append_event(&event).await.unwrap();
    assert!(uow.append_event(&event).await.is_err());
    drop(uow);
    assert_eq!(store.get_session(&acme, &s.id).await.unwrap().unwrap().status, SessionStatus::Stopped);
    assert_eq!(all_events(store.as_ref(), &acme).await.len(), before.len());
    assert_eq!(store.last_event_seq().await.unwrap(), seq_before);

    // Dropped without commit: nothing either.
    let mut uow = store.begin().await.unwrap();
    uow.update_session_state(&s.id, &state(SessionStatus::Failed, None, IdentityUpdate::Keep)).await.unwrap().unwrap();
    uow.append_event(&NewEvent::session_status(&acme, &s.id, SessionStatus::Failed, None, None)).await.unwrap();
    drop(uow);
    assert_eq!(store.get_session(&acme, &s.id).await.unwrap().unwrap().status, SessionStatus::Stopped);
    assert_eq!(all_events(store.as_ref(), &acme).await.len(), before.len());

    // Committed: both.
    let mut uow = store.begin().await.unwrap();
    let change = uow.update_session_state(&s.id, &state(SessionStatus::Connected, None, IdentityUpdate::Keep)).await.unwrap().unwrap();
    assert_eq!(change.previous, SessionStatus::Stopped);
    let appended = uow.append_event(&event).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(store.get_session(&acme, &s.id).await.unwrap().unwrap().status, SessionStatus::Connected);
    assert_eq!(all_events(store.as_ref(), &acme).await[0].id, appended.id);
    assert!(appended.seq > seq_before);
}

pub async fn event_lists_filter_and_paginate(store: Arc<dyn Store>) {
    let acme = org("acme");
    let a = store.insert_session(&new_session(&acme, Some("a"))).await.unwrap();
    let b = store.insert_session(&new_session(&acme, Some("b"))).await.unwrap();
    store.insert_session(&new_session(&org("other"), Some("a"))).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    for i in 0..5 {
        let session = if i % 2 == 0 { &a.id } else { &b.id };
        uow.append_event(&NewEvent::new(&acme, Some(session), EventType::MessageReceived, &json!({"n": i}))).await.unwrap();
    }
    uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({}))).await.unwrap();
    uow.commit().await.unwrap();

    let all = all_events(store.as_ref(), &acme).await;
    assert_eq!(all.len(), 8, "2 creations, 5 messages, 1 test");

    // Pages of 3, newest first, nothing lost or repeated.
    let mut seen = Vec::new();
    let mut after: Option<EventId> = None;
    loop {
        let page = store
            .list_events(&acme, &EventFilter::default(), PageRequest { size: 3, after: after.as_ref() })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|e| e.id.clone()).collect::<Vec<_>>());

    let by_session = EventFilter { session: Some(a.id.clone()), types: None };
    let events = store.list_events(&acme, &by_session, PageRequest { size: 50, after: None }).await.unwrap().items;
    assert_eq!(events.len(), 4, "a's creation and 3 messages");
    assert!(events.iter().all(|e| e.session.as_ref() == Some(&a.id)));

    let by_type = EventFilter { session: None, types: Some(vec![EventType::MessageReceived, EventType::WebhookTest]) };
    let events = store.list_events(&acme, &by_type, PageRequest { size: 50, after: None }).await.unwrap().items;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e.kind != EventType::SessionStatus));
    let both = EventFilter { session: Some(b.id.clone()), types: Some(vec![EventType::SessionStatus]) };
    let events = store.list_events(&acme, &both, PageRequest { size: 50, after: None }).await.unwrap().items;
    assert_eq!(events.len(), 1);
    assert!(both.matches(&events[0]) && !by_type.matches(&events[0]));
}

pub async fn events_are_read_in_log_order_after_a_position(store: Arc<dyn Store>) {
    let acme = org("acme");
    let other = org("other");
    assert_eq!(store.last_event_seq().await.unwrap(), 0, "an empty log");
    for i in 0..6 {
        let org_id = if i % 3 == 2 { &other } else { &acme };
        store.insert_session(&new_session(org_id, Some(&format!("s{i}")))).await.unwrap();
    }
    let everything = store.events_after(0, 100).await.unwrap();
    assert_eq!(everything.len(), 6);
    assert!(everything.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    let rest = store.events_after(everything[1].seq, 2).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![everything[2].seq, everything[3].seq]);

    let mine = store.org_events_after(&acme, &EventFilter::default(), 0, 100).await.unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine.iter().all(|e| e.org == acme));
    let later = store.org_events_after(&acme, &EventFilter::default(), mine[1].seq, 100).await.unwrap();
    assert_eq!(later.iter().map(|e| &e.id).collect::<Vec<_>>(), mine[2..].iter().map(|e| &e.id).collect::<Vec<_>>());
    let none = EventFilter { session: None, types: Some(vec![EventType::MessageStatus]) };
    assert!(store.org_events_after(&acme, &none, 0, 100).await.unwrap().is_empty());
}

/// Writers hold their transaction open a little after appending, in random order; a reader
/// tails the log by position the whole time. Were positions not in commit order, the reader
/// would pass a position whose event committed later, and never see that event.
pub async fn concurrent_writers_never_make_a_resuming_reader_skip(store: Arc<dyn Store>) {
    const WRITERS: usize = 6;
    const EACH: usize = 20;
    let acme = org("acme");
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        let acme = acme.clone();
        writers.spawn(async move {
            for i in 0..EACH {
                let mut uow = store.begin().await.unwrap();
                uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({"w": w, "i": i}))).await.unwrap();
                let pause = (w * 7 + i * 3) % 4;
                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
                uow.commit().await.unwrap();
            }
        });
    }
    let mut cursor = 0;
    let mut seen = HashSet::new();
    let mut finished = false;
    loop {
        let batch = store.events_after(cursor, 7).await.unwrap();
        for event in &batch {
            assert!(event.seq > cursor);
            cursor = event.seq;
            assert!(seen.insert(event.id.clone()), "no duplicate");
        }
        if batch.is_empty() {
            if finished {
                break;
            }
            if writers.is_empty() {
                finished = true; // one more read after the last commit
            } else {
                tokio::select! {
                    done = writers.join_next() => { done.unwrap().unwrap(); }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        }
    }
    assert_eq!(seen.len(), WRITERS * EACH, "the tailing reader saw every event");
}

pub async fn pruning_removes_only_old_events(store: Arc<dyn Store>) {
    let acme = org("acme");
    let mut uow = store.begin().await.unwrap();
    let mut old = NewEvent::new(&acme, None, EventType::WebhookTest, &json!({"old": true}));
    old.created_at = wagate_core::now() - chrono::TimeDelta::days(8);
    uow.append_event(&old).await.unwrap();
    let fresh = uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({}))).await.unwrap();
    uow.commit().await.unwrap();

    let cutoff = wagate_core::now() - chrono::TimeDelta::days(7);
    assert_eq!(store.prune_events(cutoff, 100).await.unwrap(), 1);
    assert_eq!(store.prune_events(cutoff, 100).await.unwrap(), 0);
    assert!(store.get_event(&acme, &old.id).await.unwrap().is_none());
    assert!(store.get_event(&acme, &fresh.id).await.unwrap().is_some());
    // Positions are never reused, even once the newest event is pruned.
    assert_eq!(store.prune_events(wagate_core::now() + chrono::TimeDelta::days(1), 100).await.unwrap(), 1);
    let next = store.insert_session(&new_session(&acme, None)).await.unwrap();
    let event = store.events_after(0, 10).await.unwrap();
    assert_eq!(event.len(), 1);
    assert_eq!(event[0].session.as_ref(), Some(&next.id));
    assert!(event[0].seq > fresh.seq);
}

pub async fn commits_wake_readers(store: Arc<dyn Store>) {
    let acme = org("acme");
    let mut commits = store.event_commits();
    commits.borrow_and_update();
    // A rolled-back unit wakes nobody.
    let mut uow = store.begin().await.unwrap();
    uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({}))).await.unwrap();
    drop(uow);
    assert!(!commits.has_changed().unwrap());
    store.insert_session(&new_session(&acme, None)).await.unwrap();
    assert!(commits.has_changed().unwrap());
    commits.borrow_and_update();
    let mut uow = store.begin().await.unwrap();
    uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({}))).await.unwrap();
    uow.commit().await.unwrap();
    assert!(commits.has_changed().unwrap());
}

/// Units of work running at once, some committing, some failing after their first write, some
/// dropped: each commits or not on its own (on SQLite they share transactions, see the group
/// commit in `sqlite/writer.rs`), and every commit that returned Ok is stored.
pub async fn concurrent_units_of_work_fail_alone(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const EACH: usize = 30;
    let acme = org("acme");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let acme = acme.clone();
        tasks.spawn(async move {
            let mut committed = Vec::new();
            let mut undone = Vec::new();
            for i in 0..EACH {
                let mut uow = store.begin().await.unwrap();
                let event = NewEvent::new(&acme, None, EventType::WebhookTest, &json!({"t": t, "i": i}));
                uow.append_event(&event).await.unwrap();
                match (t + i) % 3 {
                    0 => {
                        uow.commit().await.unwrap();
                        committed.push(event.id);
                    }
                    1 => {
                        // Fails after its first write (a duplicate id), then is dropped.
                        assert!(uow.append_event(&event).await.is_err());
                        undone.push(event.id);
                    }
                    _ => undone.push(event.id),
                }
                tokio::task::yield_now().await;
            }
            (committed, undone)
        });
    }
    let (mut committed, mut undone) = (HashSet::new(), HashSet::new());
    while let Some(done) = tasks.join_next().await {
        let (c, u) = done.unwrap();
        committed.extend(c);
        undone.extend(u);
    }
    let stored: HashSet<EventId> = store.events_after(0, 1000).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(stored, committed, "exactly the committed units' events are stored");
    assert!(undone.iter().all(|id| !stored.contains(id)));
}

/// A caller that stops waiting for its commit (a dropped request) neither loses the writes of
/// the others in its transaction nor leaves the store unable to write.
pub async fn an_abandoned_commit_blocks_nobody(store: Arc<dyn Store>) {
    let acme = org("acme");
    for round in 0..20 {
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = Arc::clone(&store);
            let acme = acme.clone();
            tasks.push(tokio::spawn(async move {
                let mut uow = store.begin().await.unwrap();
                let event = NewEvent::new(&acme, None, EventType::WebhookTest, &json!({"round": round, "w": w}));
                uow.append_event(&event).await.unwrap();
                uow.commit().await.unwrap();
                event.id
            }));
        }
        // Give up on one of them at some point of its life.
        for _ in 0..(round % 4) {
            tokio::task::yield_now().await;
        }
        tasks[round % 4].abort();
        for (w, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(id) => assert!(store.get_event(&acme, &id).await.unwrap().is_some(), "round {round}: writer {w}'s commit returned Ok"),
                Err(e) => assert!(e.is_cancelled()),
            }
        }
        let write = async {
            let mut uow = store.begin().await.unwrap();
            uow.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &json!({}))).await.unwrap();
            uow.commit().await.unwrap();
            store.ensure_org(&org("other")).await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), write).await.expect("the store still writes");
    }
}
