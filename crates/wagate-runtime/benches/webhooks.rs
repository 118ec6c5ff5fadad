//! Webhook delivery under load, through the whole pipeline: events committed to the log, the
//! fan-out queuing one delivery row per event, workers claiming, signing, POSTing to a local
//! receiver (an axum server on 127.0.0.1 in this process) and recording every attempt.
//!
//! 1. Signed deliveries per second: `WAGATE_BENCH_EVENTS` events (default 20,000) committed
//!    first, then the workers start; the clock runs until the receiver has them all.
//! 2. Event-to-webhook latency: events committed at 100 and at 1,000 per second for
//!    `WAGATE_BENCH_SECS` (default 5) each; every event carries the time just before its commit
//!    and the receiver records how long after that its delivery arrived.
//!
//! SQLite always (a fresh file in a temporary directory); PostgreSQL too when
//! `WAGATE_TEST_POSTGRES_URL` names a server where a fresh database may be created.
//!
//! Run: `cargo bench -p wagate-runtime --bench webhooks` (see docs/PERFORMANCE.md).
//! Knobs: `WAGATE_BENCH_EVENTS`, `WAGATE_BENCH_SECS`, `WAGATE_BENCH_WORKERS` and
//! `WAGATE_BENCH_PER_WEBHOOK` (attempts in flight in all and to the one webhook; default the
//! gateway's defaults, `WAGATE_WEBHOOK_WORKERS` and `WAGATE_WEBHOOK_CONCURRENCY`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wagate_core::{EventType, NewEvent, OrgId};
use wagate_runtime::{CreateWebhook, Metrics, WebhookConfig, WebhookService};
use wagate_store::prelude::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the receiver saw: for each request, microseconds from the commit to its arrival.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u64>>>);

async fn receiver(epoch: Instant, seen: Seen) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                let event: serde_json::Value = serde_json::from_str(&body).unwrap();
                let sent = event["data"]["t"].as_u64().unwrap_or(0);
                seen.0.lock().unwrap().push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn commit(store: &dyn Store, org: &OrgId, epoch: Instant) {
    let data = json!({"t": epoch.elapsed().as_micros() as u64});
    let mut uow = store.begin().await.expect("begin");
    uow.append_event(&NewEvent::new(org, None, EventType::MessageReceived, &data)).await.expect("append");
    uow.commit().await.expect("commit");
}

async fn wait_for(seen: &Seen, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while seen.0.lock().unwrap().len() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

/// A service delivering to a fresh receiver, and the receiver's record.
async fn setup(store: &Arc<dyn Store>, epoch: Instant) -> (Arc<WebhookService>, Seen) {
    let config = WebhookConfig {
        allow_private: true,
        workers: env_num("WAGATE_BENCH_WORKERS", WebhookConfig::DEFAULT_WORKERS as u64) as usize,
        per_webhook_concurrency: env_num("WAGATE_BENCH_PER_WEBHOOK", u64::from(WebhookConfig::DEFAULT_PER_WEBHOOK)) as u32,
        ..WebhookConfig::default()
    };
    let service = Arc::new(WebhookService::new(Arc::clone(store), Arc::new(Metrics::default()), config));
    let seen = Seen::default();
    let url = receiver(epoch, seen.clone()).await;
    let org = OrgId::parse("bench").unwrap();
    let create = CreateWebhook { url, events: Some(vec![EventType::MessageReceived]), session: None, description: None };
    service.create(&org, create).await.unwrap();
    (service, seen)
}

async fn throughput(store: Arc<dyn Store>, events: usize) -> f64 {
    let epoch = Instant::now();
    let (service, seen) = setup(&store, epoch).await;
    let org = OrgId::parse("bench").unwrap();
    for _ in 0..events {
        commit(store.as_ref(), &org, epoch).await;
    }
    let started = Instant::now();
    let workers = service.spawn_workers();
    assert!(wait_for(&seen, events, Duration::from_secs(600)).await, "deliveries stalled");
    let per_sec = events as f64 / started.elapsed().as_secs_f64();
    service.close();
    for w in workers {
        w.abort();
    }
    per_sec
}

async fn latency(store: Arc<dyn Store>, rate: u64, secs: u64) -> (usize, f64, f64, f64) {
    let epoch = Instant::now();
    let (service, seen) = setup(&store, epoch).await;
    let org = OrgId::parse("bench").unwrap();
    let workers = service.spawn_workers();
    let total = (rate * secs) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = tokio::time::Instant::now();
    for _ in 0..total {
        tokio::time::sleep_until(next).await;
        next += every;
        commit(store.as_ref(), &org, epoch).await;
    }
    assert!(wait_for(&seen, total, Duration::from_secs(120)).await, "deliveries stalled");
    service.close();
    for w in workers {
        w.abort();
    }
    let mut all = seen.0.lock().unwrap().clone();
    all.sort_unstable();
    (all.len(), percentile(&all, 0.5), percentile(&all, 0.99), percentile(&all, 1.0))
}

async fn run(name: &str, connect: impl Fn() -> futures::future::BoxFuture<'static, Arc<dyn Store>>) {
    let events = env_num("WAGATE_BENCH_EVENTS", 20_000) as usize;
    let secs = env_num("WAGATE_BENCH_SECS", 5);
    let per_sec = throughput(connect().await, events).await;
    println!("{name}: {per_sec:.0} signed deliveries/s ({events} events committed first, then delivered and recorded)");
    for rate in [100, 1000] {
        let (n, p50, p99, max) = latency(connect().await, rate, secs).await;
        println!("{name}: event-to-webhook latency at {rate} events/s for {secs} s ({n} deliveries): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        run("sqlite", || {
            let (dir, counter) = (Arc::clone(&dir), Arc::clone(&counter));
            Box::pin(async move {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                wagate_store::connect(&format!("sqlite://{}", dir.path().join(format!("bench{n}.db")).display())).await.unwrap()
            })
        })
        .await;
        match wagate_store::testing::postgres_url_from_env() {
            Some(admin) => {
                let guards = Arc::new(Mutex::new(Vec::new()));
                run("postgres", || {
                    let (admin, guards) = (admin.clone(), Arc::clone(&guards));
                    Box::pin(async move {
                        let (url, guard) = wagate_store::testing::fresh_postgres(&admin).await.unwrap();
                        guards.lock().unwrap().push(guard);
                        wagate_store::connect(&url).await.unwrap()
                    })
                })
                .await;
            }
            None => println!("postgres: skipped ({} not set)", wagate_store::testing::POSTGRES_URL_ENV),
        }
    });
}
