use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use wagate_core::{DeliveryStatus, OrgId};

use super::*;
use crate::testing::test_store;
use crate::webhooks::{CreateWebhook, WebhookService};

fn config() -> WebhookConfig {
    WebhookConfig {
        retry_schedule: vec![Duration::from_millis(10), Duration::from_millis(10)],
        allow_private: true,
        timeout: Duration::from_secs(5),
        ..WebhookConfig::default()
    }
}

/// A receiver that answers the statuses it is given, in turn (then 200), and keeps what came.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn receiver(answers: Vec<(u16, Option<&'static str>)>) -> Receiver {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let app = {
        let seen = Arc::clone(&seen);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (seen, answers) = (Arc::clone(&seen), Arc::clone(&answers));
                async move {
                    seen.lock().unwrap().push((headers, body));
                    let (status, retry_after) = answers.lock().unwrap().next().unwrap_or((200, None));
                    let mut res = StatusCode::from_u16(status).unwrap().into_response();
                    if let Some(value) = retry_after {
                        res.headers_mut().insert("retry-after", value.parse().unwrap());
                    }
                    res
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, seen }
}

/// Drives the worker step until a delivery is attempted (retries become due within ms).
async fn attempt(service: &WebhookService) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = service.deliverer().deliver_next().await.unwrap() {
            return d;
        }
        assert!(Instant::now() < deadline, "nothing became due");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_then_fail() {
    let (store, _dir) = test_store().await;
    let rx = receiver(vec![(500, None), (503, Some("0")), (500, None)]).await;
    let service = WebhookService::new(Arc::clone(&store), Arc::new(Metrics::default()), config());
    let org = OrgId::parse("acme").unwrap();
    let hook = service.create(&org, CreateWebhook { url: rx.url.clone(), events: None, session: None, description: None }).await.unwrap();
    let queued = service.test(&hook).await.unwrap();

    let first = attempt(&service).await;
    assert_eq!((first.id.clone(), first.status, first.attempts, first.response_status), (queued.id.clone(), DeliveryStatus::Pending, 1, Some(500)));
    let second = attempt(&service).await;
    assert_eq!((second.status, second.attempts, second.response_status), (DeliveryStatus::Pending, 2, Some(503)));
    assert!(second.next_attempt_at.unwrap() <= second.last_attempt_at.unwrap() + chrono::Duration::milliseconds(1), "Retry-After: 0");
    let third = attempt(&service).await;
    assert_eq!((third.status, third.attempts, third.next_attempt_at), (DeliveryStatus::Failed, 3, None), "the schedule is spent");
    assert!(service.deliverer().deliver_next().await.unwrap().is_none());

    // Every attempt carried the same id and the event's envelope, signed.
    let seen = rx.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let event = store.get_event(&org, &third.event).await.unwrap().unwrap();
    for (headers, body) in &seen {
        assert_eq!(headers["webhook-id"], event.id.as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body, &event.envelope_json());
        let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        assert_eq!(headers["webhook-signature"].to_str().unwrap(), signing::sign(&hook.secret, event.id.as_str(), ts, body));
    }
    let (_, attempts) = store.get_delivery(&org, &hook.id, &third.id).await.unwrap().unwrap();
    assert_eq!(attempts.iter().map(|a| a.response_status).collect::<Vec<_>>(), vec![Some(500), Some(503), Some(500)]);
    assert!(attempts.iter().all(|a| a.error.as_deref().is_some_and(|e| e.contains("HTTP 5"))));
}

#[tokio::test]
async fn gone_disables_the_webhook_and_refused_addresses_are_attempts_that_fail() {
    let (store, _dir) = test_store().await;
    let rx = receiver(vec![(410, None)]).await;
    let service = WebhookService::new(Arc::clone(&store), Arc::new(Metrics::default()), config());
    let org = OrgId::parse("acme").unwrap();
    let hook = service.create(&org, CreateWebhook { url: rx.url.clone(), events: None, session: None, description: None }).await.unwrap();
    service.test(&hook).await.unwrap();
    let gone = attempt(&service).await;
    assert_eq!((gone.status, gone.response_status), (DeliveryStatus::Failed, Some(410)));
    let hook = store.get_webhook(&org, &hook.id).await.unwrap().unwrap();
    assert_eq!((hook.enabled, hook.disabled_reason), (false, Some(DisabledReason::Gone)));

    // A gateway that does not allow private networks refuses the loopback receiver on every
    // attempt, even for a webhook saved while they were allowed.
    let strict = WebhookService::new(Arc::clone(&store), Arc::new(Metrics::default()), WebhookConfig { allow_private: false, ..config() });
    let other = service.create(&org, CreateWebhook { url: rx.url.clone(), events: None, session: None, description: None }).await.unwrap();
    strict.test(&other).await.unwrap();
    let refused = attempt(&strict).await;
    assert_eq!((refused.status, refused.response_status), (DeliveryStatus::Pending, None));
    assert!(refused.error.as_deref().unwrap().contains("loopback"), "{:?}", refused.error);
    assert_eq!(rx.seen.lock().unwrap().len(), 1, "only the 410 reached the receiver");
}

#[test]
fn retry_after_is_seconds_or_a_date() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap().with_timezone(&chrono::Utc);
    assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Sun, 29 Nov 2026 12:01:00 GMT", now), Some(Duration::from_secs(60)));
    assert_eq!(parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn jitter_stays_within_a_fifth() {
    for _ in 0..100 {
        let d = jittered(Duration::from_secs(100));
        assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120), "{d:?}");
    }
}

#[tokio::test]
async fn what_follows_an_attempt() {
    let (store, _dir) = test_store().await;
    let deliverer = Deliverer::new(store, Arc::new(config()), Arc::new(Metrics::default()));
    let now = wagate_core::now();
    let hook = Webhook {
        id: wagate_core::WebhookId::generate(),
        org: OrgId::parse("acme").unwrap(),
        url: "https://example.com/".into(),
        events: None,
        session: None,
        description: None,
        enabled: true,
        disabled_reason: None,
        secret: wagate_core::WebhookSecret::generate(),
        previous_secret: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    let delivery = |cycle_attempts| Delivery {
        id: wagate_core::DeliveryId::generate(),
        org: hook.org.clone(),
        webhook: hook.id.clone(),
        event: wagate_core::EventId::generate(),
        event_seq: 1,
        event_type: wagate_core::EventType::SessionStatus,
        status: DeliveryStatus::Pending,
        attempts: cycle_attempts,
        cycle_attempts,
        last_attempt_at: None,
        next_attempt_at: Some(now),
        response_status: None,
        error: None,
        created_at: now,
    };
    let status = |status| Answer::Status { status, retry_after: None };
    let step = |d: &Delivery, h: &Webhook, a: &Answer| deliverer.next_step(d, h, a, now);
    assert_eq!(step(&delivery(0), &hook, &status(204)), (NextStep::Succeeded, None));
    assert_eq!(step(&delivery(0), &hook, &status(410)), (NextStep::Failed, Some(DisabledReason::Gone)));
    assert_eq!(step(&delivery(0), &hook, &Answer::EventGone), (NextStep::Failed, None));
    let (NextStep::RetryAt(at), None) = step(&delivery(0), &hook, &status(301)) else { panic!("3xx is retried") };
    assert!(at > now && at <= now + chrono::Duration::milliseconds(12));
    let timeout = Answer::Failed("timed out".into());
    assert!(matches!(step(&delivery(1), &hook, &timeout), (NextStep::RetryAt(_), None)));
    assert_eq!(step(&delivery(2), &hook, &timeout), (NextStep::Failed, None), "two retries in this schedule");
    let waited = Answer::Status { status: 429, retry_after: Some(Duration::from_secs(30)) };
    assert_eq!(step(&delivery(0), &hook, &waited), (NextStep::RetryAt(now + chrono::Duration::seconds(30)), None));

    // Five days without a success disable it (the delivery itself waits for re-enabling).
    let failing = Webhook { failing_since: Some(now - chrono::Duration::days(5)), ..hook.clone() };
    assert!(matches!(step(&delivery(0), &failing, &timeout), (NextStep::RetryAt(_), Some(DisabledReason::Failing))));
    let recent = Webhook { failing_since: Some(now - chrono::Duration::days(4)), ..hook.clone() };
    assert!(matches!(step(&delivery(0), &recent, &timeout), (NextStep::RetryAt(_), None)));
    assert_eq!(step(&delivery(0), &failing, &status(200)), (NextStep::Succeeded, None));
}
