//! The event log under load.
//!
//! 1. Events committed per second: `WRITERS` concurrent writers, each committing units of work
//!    of one appended event (the shape of a status change), for a fixed time.
//! 2. Commit-to-subscriber latency: 1,000 open streams (`EventHub::subscribe`), events committed
//!    at a steady rate; each event carries the time just before its commit, and every
//!    subscriber records how long after that it received the event.
//!
//! SQLite always (a fresh file in a temporary directory); PostgreSQL too when
//! `WAGATE_TEST_POSTGRES_URL` names a server where a fresh database may be created.
//!
//! Run: `cargo bench -p wagate-runtime --bench events` (see docs/PERFORMANCE.md).
//! Knobs: `WAGATE_BENCH_SECS` (default 5), `WAGATE_BENCH_SUBSCRIBERS` (1000),
//! `WAGATE_BENCH_RATE` (events/s in part 2, default 200).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use wagate_core::{EventType, NewEvent, OrgId};
use wagate_runtime::{EventConfig, EventHub, Metrics};
use wagate_store::EventFilter;
use wagate_store::prelude::*;

const WRITERS: usize = 8;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn commit_one(store: &dyn Store, org: &OrgId, data: serde_json::Value) {
    let mut uow = store.begin().await.expect("begin");
    uow.append_event(&NewEvent::new(org, None, EventType::WebhookTest, &data)).await.expect("append");
    uow.commit().await.expect("commit");
}

async fn throughput(store: Arc<dyn Store>, secs: u64) -> f64 {
    let org = OrgId::parse("bench").unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, org, count, stop) = (Arc::clone(&store), org.clone(), Arc::clone(&count), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                commit_one(store.as_ref(), &org, json!({"w": w, "i": i})).await;
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn latency(store: Arc<dyn Store>, subscribers: usize, rate: u64, secs: u64) -> (usize, f64, f64, f64) {
    let org = OrgId::parse("bench").unwrap();
    let hub = EventHub::start(Arc::clone(&store), Arc::new(Metrics::default()), EventConfig::default()).await.unwrap();
    let epoch = Instant::now();
    let total = (rate * secs) as usize;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut stream = Box::pin(hub.subscribe(org.clone(), EventFilter::default(), None));
        readers.push(tokio::spawn(async move {
            let mut micros = Vec::with_capacity(total);
            while micros.len() < total {
                let event = stream.next().await.expect("stream open").expect("no store error");
                let data: serde_json::Value = serde_json::from_str(event.data.get()).unwrap();
                let sent = data["t"].as_u64().unwrap();
                micros.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
            }
            micros
        }));
    }
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = tokio::time::Instant::now();
    for _ in 0..total {
        tokio::time::sleep_until(next).await;
        next += every;
        commit_one(store.as_ref(), &org, json!({"t": epoch.elapsed().as_micros() as u64})).await;
    }
    let mut all = Vec::with_capacity(total * subscribers);
    for r in readers {
        all.extend(r.await.unwrap());
    }
    hub.close();
    all.sort_unstable();
    (all.len(), percentile(&all, 0.5), percentile(&all, 0.99), percentile(&all, 1.0))
}

async fn run(name: &str, store: Arc<dyn Store>) {
    let secs = env_num("WAGATE_BENCH_SECS", 5);
    let subscribers = env_num("WAGATE_BENCH_SUBSCRIBERS", 1000) as usize;
    let rate = env_num("WAGATE_BENCH_RATE", 200);
    let per_sec = throughput(Arc::clone(&store), secs).await;
    println!("{name}: {per_sec:.0} events/s committed ({WRITERS} writers, one event per transaction, {secs} s)");
    let (n, p50, p99, max) = latency(store, subscribers, rate, secs).await;
    println!(
        "{name}: commit-to-subscriber latency, {subscribers} streams, {rate} events/s for {secs} s ({n} deliveries): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = wagate_store::connect(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
        run("sqlite", sqlite).await;
        match wagate_store::testing::postgres_url_from_env() {
            Some(admin) => {
                let (url, _guard) = wagate_store::testing::fresh_postgres(&admin).await.unwrap();
                let pg = wagate_store::connect(&url).await.unwrap();
                run("postgres", pg).await;
            }
            None => println!("postgres: skipped ({} not set)", wagate_store::testing::POSTGRES_URL_ENV),
        }
    });
}
