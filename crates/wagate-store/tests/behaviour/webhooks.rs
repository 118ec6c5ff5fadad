//! Webhooks and their deliveries: scoped endpoints, a fan-out that queues each (event, webhook)
//! pair once, claims with a lease in event order under a per-webhook limit, recorded attempts.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;
use wagate_core::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus, DisabledReason, EventType, NewEvent, NewWebhook, OrgId, SessionId,
    SessionStatus, Timestamp, Webhook, WebhookId, WebhookSecret,
};
use wagate_store::prelude::*;
use wagate_store::{AttemptRecord, IdentityUpdate, NextStep, PageRequest, ReplayWindow, WebhookUpdate};

use crate::{new_session, org, state};

fn new_webhook(org_id: &OrgId, session: Option<&SessionId>, events: Option<Vec<EventType>>) -> NewWebhook {
    NewWebhook {
        id: WebhookId::generate(),
        org: org_id.clone(),
        url: "https://hooks.example.com/wagate".to_owned(),
        events,
        session: session.cloned(),
        description: Some("crm".to_owned()),
        secret: WebhookSecret::generate(),
        created_at: wagate_core::now(),
    }
}

fn attempt(at: Timestamp, status: Option<u16>) -> DeliveryAttempt {
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    DeliveryAttempt { at, duration_ms: 12, response_status: status, error: (!ok).then(|| "HTTP 500".to_owned()) }
}

fn deliveries_of(records: Vec<wagate_store::DeliveryRecord>) -> Vec<Delivery> {
    records.into_iter().map(|(d, _)| d).collect()
}

fn later(ms: i64) -> Timestamp {
    wagate_core::now() + Duration::milliseconds(ms)
}

/// Claims everything due at `now` (one lease each), in claim order.
async fn claim_all(store: &dyn Store, now: Timestamp, per_webhook: u32) -> Vec<wagate_store::Claimed> {
    let mut claimed = Vec::new();
    while let Some(c) = store.claim_delivery(now, now + Duration::seconds(60), per_webhook).await.unwrap() {
        claimed.push(c);
    }
    claimed
}

async fn fan_out_all(store: &dyn Store) -> u64 {
    let mut total = 0;
    loop {
        let step = store.fan_out(3).await.unwrap();
        if step.events == 0 {
            return total;
        }
        total += step.deliveries;
    }
}

pub async fn webhooks_are_scoped_to_their_organization(store: Arc<dyn Store>) {
    let (acme, globex) = (org("acme"), org("globex"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap().id);
    }
    let theirs = store.insert_webhook(&new_webhook(&globex, None, Some(vec![EventType::SessionStatus]))).await.unwrap();
    assert_eq!(theirs.events, Some(vec![EventType::SessionStatus]));
    assert!(theirs.enabled && theirs.disabled_reason.is_none());

    let first = store.list_webhooks(&acme, PageRequest { size: 2, after: None }).await.unwrap();
    assert_eq!(first.items.iter().map(|w| w.id.clone()).collect::<Vec<_>>(), vec![ids[2].clone(), ids[1].clone()]);
    let rest = store.list_webhooks(&acme, PageRequest { size: 2, after: first.next.as_ref() }).await.unwrap();
    assert_eq!((rest.items.len(), rest.next), (1, None));
    assert_eq!(rest.items[0].id, ids[0]);

    assert!(store.get_webhook(&globex, &ids[0]).await.unwrap().is_none());
    assert!(store.update_webhook(&globex, &ids[0], &WebhookUpdate::default(), wagate_core::now()).await.unwrap().is_none());
    assert!(!store.delete_webhook(&globex, &ids[0]).await.unwrap());
    let secret = WebhookSecret::generate();
    assert!(store.rotate_webhook_secret(&globex, &ids[0], &secret, later(1000), wagate_core::now()).await.unwrap().is_none());
    assert!(store.delete_webhook(&acme, &ids[0]).await.unwrap());
    assert!(store.get_webhook(&acme, &ids[0]).await.unwrap().is_none());
}

pub async fn webhook_updates_and_rotation(store: Arc<dyn Store>) {
    let acme = org("acme");
    let hook = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let at = later(5);
    let update = WebhookUpdate {
        url: Some("https://other.example.com/".to_owned()),
        events: Some(Some(vec![EventType::MessageReceived, EventType::SessionStatus])),
        description: Some(None),
        enabled: None,
    };
    let changed = store.update_webhook(&acme, &hook.id, &update, at).await.unwrap().unwrap();
    assert_eq!(changed.url, "https://other.example.com/");
    assert_eq!(changed.events, Some(vec![EventType::MessageReceived, EventType::SessionStatus]));
    assert_eq!((changed.description, changed.updated_at, changed.secret.clone()), (None, at, hook.secret.clone()));
    let all = WebhookUpdate { events: Some(None), ..WebhookUpdate::default() };
    assert_eq!(store.update_webhook(&acme, &hook.id, &all, at).await.unwrap().unwrap().events, None);

    let off = WebhookUpdate { enabled: Some(false), ..WebhookUpdate::default() };
    let disabled = store.update_webhook(&acme, &hook.id, &off, at).await.unwrap().unwrap();
    assert_eq!((disabled.enabled, disabled.disabled_reason), (false, Some(DisabledReason::Manual)));
    let on = WebhookUpdate { enabled: Some(true), ..WebhookUpdate::default() };
    let enabled = store.update_webhook(&acme, &hook.id, &on, at).await.unwrap().unwrap();
    assert_eq!((enabled.enabled, enabled.disabled_reason), (true, None));

    let fresh = WebhookSecret::generate();
    let until = later(86_400_000);
    let rotated = store.rotate_webhook_secret(&acme, &hook.id, &fresh, until, at).await.unwrap().unwrap();
    assert_eq!(rotated.secret, fresh);
    assert_eq!(rotated.previous_secret, Some((hook.secret.clone(), until)));
    assert_eq!(store.get_webhook(&acme, &hook.id).await.unwrap().unwrap(), rotated);
}

pub async fn fan_out_queues_each_matching_pair_once(store: Arc<dyn Store>) {
    let (acme, globex) = (org("acme"), org("globex"));
    let (n1, n2) = (new_session(&acme, Some("one")), new_session(&acme, Some("two")));
    let all = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let scoped = store.insert_webhook(&new_webhook(&acme, Some(&n2.id), None)).await.unwrap();
    let typed = store.insert_webhook(&new_webhook(&acme, None, Some(vec![EventType::MessageReceived]))).await.unwrap();
    let other = store.insert_webhook(&new_webhook(&globex, None, None)).await.unwrap();
    let off = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    store.update_webhook(&acme, &off.id, &WebhookUpdate { enabled: Some(false), ..WebhookUpdate::default() }, wagate_core::now()).await.unwrap();
    for new in [&n1, &n2] {
        store.insert_session(new).await.unwrap();
        store.update_session_state(&new.id, &state(SessionStatus::Starting, None, IdentityUpdate::Keep)).await.unwrap();
    }

    let queued = fan_out_all(store.as_ref()).await;
    assert_eq!(store.fan_out_position().await.unwrap(), store.last_event_seq().await.unwrap());
    assert_eq!(fan_out_all(store.as_ref()).await, 0, "a second pass queues nothing");
    let count = |hook: &Webhook| {
        let (store, org_id, id) = (Arc::clone(&store), hook.org.clone(), hook.id.clone());
        async move { deliveries_of(store.list_deliveries(&org_id, &id, None, PageRequest { size: 500, after: None }).await.unwrap().items) }
    };
    let for_all = count(&all).await;
    assert_eq!(for_all.len(), 4, "two creations and two starts");
    assert!(for_all.windows(2).all(|w| w[0].event_seq > w[1].event_seq), "newest first");
    assert!(for_all.iter().all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0 && d.next_attempt_at.is_some()));
    let for_scoped = count(&scoped).await;
    assert_eq!(for_scoped.len(), 2, "only the second session's");
    assert!(for_scoped.iter().all(|d| d.event_type == EventType::SessionStatus));
    assert!(count(&typed).await.is_empty());
    assert!(count(&other).await.is_empty());
    assert_eq!(count(&off).await.len(), 4, "a disabled webhook's deliveries wait for it");
    assert_eq!(queued, 10);

    // Only the enabled webhooks' deliveries are claimable (and counted as backlog).
    assert_eq!(store.count_pending_deliveries().await.unwrap(), 6);
    let claimed = claim_all(store.as_ref(), later(1), 10).await;
    assert_eq!(claimed.len(), 6);
    assert!(claimed.iter().all(|c| c.webhook.id != off.id));

    // A webhook receives what is committed after it was created.
    let late = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    store.update_session_state(&n1.id, &state(SessionStatus::Stopped, None, IdentityUpdate::Keep)).await.unwrap();
    assert_eq!(fan_out_all(store.as_ref()).await, 3, "all, off and late");
    assert_eq!(count(&late).await.len(), 1);
}

pub async fn claims_follow_event_order_under_a_per_webhook_limit(store: Arc<dyn Store>) {
    let acme = org("acme");
    let a = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    let b = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    for status in [SessionStatus::Starting, SessionStatus::AwaitingPairing, SessionStatus::Connected] {
        store.update_session_state(&s.id, &state(status, None, IdentityUpdate::Keep)).await.unwrap();
    }
    fan_out_all(store.as_ref()).await;
    let now = later(1);
    assert!(store.claim_delivery(now - Duration::seconds(10), now, 2).await.unwrap().is_none(), "nothing due yet");
    assert!(store.next_delivery_due().await.unwrap().is_some_and(|due| due <= now));

    // Two per webhook at a time, lowest position first; a batch counts its own claims, and
    // stops at its limit.
    let lease = now + Duration::seconds(60);
    let mut claimed = store.claim_deliveries(now, lease, 2, 3).await.unwrap();
    assert_eq!(claimed.len(), 3, "the batch's limit");
    claimed.extend(store.claim_deliveries(now, lease, 2, 10).await.unwrap());
    assert_eq!(claimed.len(), 4, "two per webhook, the batch's own included");
    assert!(store.claim_deliveries(now, lease, 2, 10).await.unwrap().is_empty());
    assert!(claimed.windows(2).all(|w| w[0].delivery.event_seq <= w[1].delivery.event_seq), "claimed in event order");
    for hook in [&a, &b] {
        let seqs: Vec<i64> = claimed.iter().filter(|c| c.webhook.id == hook.id).map(|c| c.delivery.event_seq).collect();
        assert_eq!(seqs.len(), 2);
        assert!(seqs[0] < seqs[1]);
    }
    let all_a = deliveries_of(store.list_deliveries(&acme, &a.id, None, PageRequest { size: 10, after: None }).await.unwrap().items);
    let lowest: Vec<i64> = { let mut s: Vec<i64> = all_a.iter().map(|d| d.event_seq).collect(); s.sort(); s.truncate(2); s };
    let got: Vec<i64> = claimed.iter().filter(|c| c.webhook.id == a.id).map(|c| c.delivery.event_seq).collect();
    assert_eq!(got, lowest);

    // Settling one frees a place; the next in order follows.
    let first = &claimed[0];
    store.record_attempt(&first.delivery.id, &AttemptRecord { webhook: &first.webhook.id, attempt: &attempt(now, Some(200)), next: NextStep::Succeeded, disable: None }).await.unwrap();
    let next = store.claim_delivery(now, now + Duration::seconds(60), 2).await.unwrap().unwrap();
    assert_eq!(next.webhook.id, first.webhook.id);
    assert!(next.delivery.event_seq > got[1] || first.webhook.id != a.id);

    // A lease that ran out (a worker that died) makes its delivery claimable again.
    let after_lease = now + Duration::seconds(61);
    let again = claim_all(store.as_ref(), after_lease, 10).await;
    let again: HashSet<DeliveryId> = again.into_iter().map(|c| c.delivery.id).collect();
    assert!(claimed[1..].iter().all(|c| again.contains(&c.delivery.id)));
    assert!(!again.contains(&first.delivery.id), "a settled delivery is not claimed again");
}

pub async fn attempts_are_recorded_with_their_outcome(store: Arc<dyn Store>) {
    let acme = org("acme");
    let hook = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    store.update_session_state(&s.id, &state(SessionStatus::Starting, None, IdentityUpdate::Keep)).await.unwrap();
    store.update_session_state(&s.id, &state(SessionStatus::Stopped, None, IdentityUpdate::Keep)).await.unwrap();
    fan_out_all(store.as_ref()).await;
    let now = later(1);
    let c = store.claim_delivery(now, now + Duration::seconds(30), 1).await.unwrap().unwrap();
    let retry_at = now + Duration::seconds(5);
    let d = store
        .record_attempt(&c.delivery.id, &AttemptRecord { webhook: &hook.id, attempt: &attempt(now, Some(500)), next: NextStep::RetryAt(retry_at), disable: None })
        .await
        .unwrap();
    assert_eq!((d.status, d.attempts, d.cycle_attempts, d.next_attempt_at), (DeliveryStatus::Pending, 1, 1, Some(retry_at)));
    assert_eq!((d.response_status, d.last_attempt_at, d.error.as_deref()), (Some(500), Some(now), Some("HTTP 500")));
    let failing = store.get_webhook(&acme, &hook.id).await.unwrap().unwrap().failing_since;
    assert_eq!(failing, Some(now), "the failure clock starts");

    // Not due before its retry time (the other delivery of the webhook is then the one claimed).
    let other = store.claim_delivery(now, now + Duration::seconds(30), 1).await.unwrap().unwrap();
    assert_ne!(other.delivery.id, d.id);
    let ok_at = now + Duration::seconds(1);
    store.record_attempt(&other.delivery.id, &AttemptRecord { webhook: &hook.id, attempt: &attempt(ok_at, Some(204)), next: NextStep::Succeeded, disable: None }).await.unwrap();
    assert_eq!(store.get_webhook(&acme, &hook.id).await.unwrap().unwrap().failing_since, None, "a success stops it");

    let c = store.claim_delivery(retry_at, retry_at + Duration::seconds(30), 1).await.unwrap().unwrap();
    assert_eq!(c.delivery.id, d.id);
    let gone = store
        .record_attempt(&d.id, &AttemptRecord { webhook: &hook.id, attempt: &attempt(retry_at, Some(410)), next: NextStep::Failed, disable: Some(DisabledReason::Gone) })
        .await
        .unwrap();
    assert_eq!((gone.status, gone.attempts, gone.next_attempt_at), (DeliveryStatus::Failed, 2, None));
    let hook_now = store.get_webhook(&acme, &hook.id).await.unwrap().unwrap();
    assert_eq!((hook_now.enabled, hook_now.disabled_reason), (false, Some(DisabledReason::Gone)));

    let (got, attempts) = store.get_delivery(&acme, &hook.id, &d.id).await.unwrap().unwrap();
    assert_eq!(got, gone);
    assert_eq!(attempts.iter().map(|a| a.response_status).collect::<Vec<_>>(), vec![Some(500), Some(410)]);
    assert_eq!(attempts[0], attempt(now, Some(500)));
    assert!(store.get_delivery(&org("globex"), &hook.id, &d.id).await.unwrap().is_none());
    let failed = store.list_deliveries(&acme, &hook.id, Some(DeliveryStatus::Failed), PageRequest { size: 10, after: None }).await.unwrap();
    assert_eq!(failed.items.iter().map(|(d, _)| d.id.clone()).collect::<Vec<_>>(), vec![d.id.clone()]);
    assert_eq!(failed.items[0].1, attempts, "a listed delivery carries its attempts");

    // A retry queues it again now, with a fresh schedule (once the webhook is enabled again).
    let retried = store.retry_delivery(&acme, &hook.id, &d.id, retry_at).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.attempts, retried.cycle_attempts), (DeliveryStatus::Pending, 2, 0));
    assert!(store.claim_delivery(retry_at, retry_at + Duration::seconds(1), 1).await.unwrap().is_none(), "disabled");
    store.update_webhook(&acme, &hook.id, &WebhookUpdate { enabled: Some(true), ..WebhookUpdate::default() }, retry_at).await.unwrap();
    assert_eq!(store.claim_delivery(retry_at, retry_at + Duration::seconds(1), 1).await.unwrap().unwrap().delivery.id, d.id);
    assert!(store.retry_delivery(&org("globex"), &hook.id, &d.id, retry_at).await.unwrap().is_none());
}

/// A batch of attempts commits together, with the same outcome as one attempt at a time: the
/// webhook's failure clock follows its attempts in order, also within one batch. The batch's
/// events are read by their positions.
pub async fn attempts_recorded_in_a_batch_apply_in_order(store: Arc<dyn Store>) {
    let acme = org("acme");
    let a = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let b = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    for status in [SessionStatus::Starting, SessionStatus::Stopped, SessionStatus::Starting] {
        store.update_session_state(&s.id, &state(status, None, IdentityUpdate::Keep)).await.unwrap();
    }
    fan_out_all(store.as_ref()).await;
    let now = later(1);
    let claimed = claim_all(store.as_ref(), now, 10).await;
    assert!(claimed.iter().filter(|c| c.webhook.id == a.id).count() >= 3 && claimed.iter().filter(|c| c.webhook.id == b.id).count() >= 3);

    let seqs: Vec<i64> = claimed.iter().map(|c| c.delivery.event_seq).collect();
    let events = store.events_at(&seqs).await.unwrap();
    let mut got: Vec<i64> = events.iter().map(|e| e.seq).collect();
    got.sort_unstable();
    let mut want = seqs.clone();
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want, "each position's event once");
    assert!(claimed.iter().all(|c| events.iter().any(|e| e.seq == c.delivery.event_seq && e.id == c.delivery.event)));
    assert!(store.events_at(&[]).await.unwrap().is_empty());
    assert!(store.events_at(&[i64::MAX]).await.unwrap().is_empty());

    // Webhook `a` fails (its clock starts at t0); then, in one batch, it succeeds and fails
    // again: the clock restarts at that failure. Webhook `b` only succeeds.
    assert!(store.record_attempts(&[]).await.unwrap().is_empty(), "an empty batch records nothing");
    let mine_a: Vec<&wagate_store::Claimed> = claimed.iter().filter(|c| c.webhook.id == a.id).collect();
    let mine_b: Vec<&wagate_store::Claimed> = claimed.iter().filter(|c| c.webhook.id == b.id).collect();
    let retry = NextStep::RetryAt(now + Duration::seconds(30));
    let (t0, t1, t2) = (now, now + Duration::seconds(1), now + Duration::seconds(2));
    store.record_attempt(&mine_a[0].delivery.id, &AttemptRecord { webhook: &a.id, attempt: &attempt(t0, Some(500)), next: retry, disable: None }).await.unwrap();
    assert_eq!(store.get_webhook(&acme, &a.id).await.unwrap().unwrap().failing_since, Some(t0));
    let targets = [mine_a[1], mine_a[2], mine_b[0], mine_b[1], mine_b[2]];
    let attempts = [attempt(t1, Some(200)), attempt(t2, Some(500)), attempt(t0, Some(204)), attempt(t1, Some(204)), attempt(t2, Some(204))];
    let nexts = [NextStep::Succeeded, retry, NextStep::Succeeded, NextStep::Succeeded, NextStep::Succeeded];
    let records: Vec<(DeliveryId, AttemptRecord<'_>)> = targets
        .iter()
        .zip(attempts.iter().zip(nexts))
        .map(|(c, (attempt, next))| (c.delivery.id.clone(), AttemptRecord { webhook: &c.webhook.id, attempt, next, disable: None }))
        .collect();
    let recorded = store.record_attempts(&records).await.unwrap();
    let recorded_ids: Vec<DeliveryId> = recorded.iter().map(|d| d.id.clone()).collect();
    let target_ids: Vec<DeliveryId> = targets.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(recorded_ids, target_ids, "in the order given");
    assert_eq!(recorded[0].status, DeliveryStatus::Succeeded);
    assert_eq!((recorded[1].status, recorded[1].attempts, recorded[1].next_attempt_at), (DeliveryStatus::Pending, 1, Some(now + Duration::seconds(30))));
    assert_eq!(store.get_webhook(&acme, &a.id).await.unwrap().unwrap().failing_since, Some(t2), "from the failure after the success");
    assert_eq!(store.get_webhook(&acme, &b.id).await.unwrap().unwrap().failing_since, None);
    let (_, tried) = store.get_delivery(&acme, &a.id, &mine_a[1].delivery.id).await.unwrap().unwrap();
    assert_eq!(tried, vec![attempt(t1, Some(200))]);
}

pub async fn test_events_and_replays_reach_only_their_webhook(store: Arc<dyn Store>) {
    let acme = org("acme");
    let since = wagate_core::now();
    let hook = store.insert_webhook(&new_webhook(&acme, None, Some(vec![EventType::SessionStatus]))).await.unwrap();
    let other = store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    let commits = store.event_commits();
    let test = NewEvent::new(&acme, None, EventType::WebhookTest, &serde_json::json!({"webhookId": hook.id.as_str()}));
    let (event, delivery) = store.enqueue_test(&hook, &test).await.unwrap();
    assert!(commits.has_changed().unwrap(), "readers of the log are woken");
    assert_eq!((delivery.event.clone(), delivery.event_type, delivery.webhook.clone()), (event.id.clone(), EventType::WebhookTest, hook.id.clone()));
    assert_eq!(store.get_event(&acme, &event.id).await.unwrap().unwrap().id, event.id);
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    store.update_session_state(&s.id, &state(SessionStatus::Starting, None, IdentityUpdate::Keep)).await.unwrap();
    fan_out_all(store.as_ref()).await;
    let listed = |id: WebhookId| {
        let store = Arc::clone(&store);
        let acme = acme.clone();
        async move { deliveries_of(store.list_deliveries(&acme, &id, None, PageRequest { size: 50, after: None }).await.unwrap().items) }
    };
    assert_eq!(listed(hook.id.clone()).await.len(), 3, "its test and two status events");
    assert!(listed(other.id.clone()).await.iter().all(|d| d.event_type != EventType::WebhookTest), "tests are not fanned out");

    // Settle them all, then replay the window: every accepted event is pending again.
    let now = later(1);
    for c in claim_all(store.as_ref(), now, 10).await {
        store.record_attempt(&c.delivery.id, &AttemptRecord { webhook: &c.webhook.id, attempt: &attempt(now, Some(200)), next: NextStep::Succeeded, disable: None }).await.unwrap();
    }
    let window = ReplayWindow { since, until: None };
    assert_eq!(store.replay_deliveries(&hook, window, now).await.unwrap(), 3);
    let replayed = listed(hook.id.clone()).await;
    assert_eq!(replayed.len(), 3, "the same deliveries, queued again");
    assert!(replayed.iter().all(|d| d.status == DeliveryStatus::Pending && d.cycle_attempts == 0 && d.attempts == 1));
    assert_eq!(store.replay_deliveries(&other, window, now).await.unwrap(), 2, "not the other webhook's test");
    let empty = ReplayWindow { since, until: Some(since) };
    assert_eq!(store.replay_deliveries(&hook, empty, now).await.unwrap(), 0);
}

pub async fn concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    let acme = org("acme");
    for _ in 0..4 {
        store.insert_webhook(&new_webhook(&acme, None, None)).await.unwrap();
    }
    let s = store.insert_session(&new_session(&acme, None)).await.unwrap();
    for i in 0..10 {
        let status = if i % 2 == 0 { SessionStatus::Starting } else { SessionStatus::Stopped };
        store.update_session_state(&s.id, &state(status, None, IdentityUpdate::Keep)).await.unwrap();
    }
    let queued = fan_out_all(store.as_ref()).await;
    assert_eq!(queued, 44, "eleven events (a creation, ten changes), four webhooks");
    let now = later(1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { claim_all(store.as_ref(), now, 100).await }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for c in task.await.unwrap() {
            assert!(seen.insert(c.delivery.id.clone()), "{} claimed twice", c.delivery.id);
        }
    }
    assert_eq!(seen.len(), 44);
}
