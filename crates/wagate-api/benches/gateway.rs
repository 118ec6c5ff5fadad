//! Gateway overhead of an authenticated `GET /api/v1/sessions/{id}`: auth, routing, layers and
//! serialization, with a SQLite store in a temporary directory (the embedded default).
//!
//! 1. In-process latency per request (criterion, `Router::oneshot`), with an API key and with an
//!    RS256 JWT.
//! 2. Requests per second over loopback: the real server on 127.0.0.1:0 and keep-alive clients.
//!
//! Run: `cargo bench -p wagate-api --bench gateway` (see docs/PERFORMANCE.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group};
use tower::ServiceExt;
use wagate_api::{AppState, HttpLimits, Metrics};
use wagate_auth::Authenticator;
use wagate_auth::jwt::{JwtConfig, JwtVerifier};
use wagate_auth::testing::{TestKey, claims, jwks, sign};
use wagate_core::{ApiKeyId, ApiKeyRecord, Capabilities, EngineKind, InstanceId, NewSession, OrgId, SessionId, SessionStatus};
use wagate_engine::Engine;
use wagate_sandbox::SandboxEngine;
use wagate_runtime::supervisor::{Supervisor, SupervisorConfig};

struct Fixture {
    _db: tempfile::TempDir,
    router: axum::Router,
    path: String,
    api_key: String,
    jwt: String,
}

async fn fixture() -> Fixture {
    let db = tempfile::tempdir().expect("temp dir");
    let store = wagate_store::connect(&format!("sqlite://{}", db.path().join("wagate.db").display())).await.expect("sqlite store");
    let org = OrgId::parse("bench").unwrap();
    let key = wagate_auth::apikey::generate();
    store
        .insert_api_key(&ApiKeyRecord {
            id: ApiKeyId::generate(),
            org: org.clone(),
            name: "bench".into(),
            capabilities: Capabilities::ALL,
            hash: key.hash,
            created_at: wagate_core::now(),
            expires_at: None,
            revoked_at: None,
            // Just used: lastUsedAt is written at most once a minute, so the steady state has no write.
            last_used_at: Some(wagate_core::now()),
        })
        .await
        .unwrap();
    let session = store
        .insert_session(&NewSession {
            id: SessionId::generate(),
            org: org.clone(),
            instance_id: InstanceId::generate(),
            name: Some("bench".into()),
            engine: EngineKind::Sandbox,
            status: SessionStatus::Stopped,
            desired_running: false,
            device_name: None,
            created_at: wagate_core::now(),
        })
        .await
        .unwrap();
    let verifier = JwtVerifier::with_static_keys(JwtConfig::new("http://unused.invalid/jwks"), &jwks(&[(TestKey::Rsa, "k1")])).unwrap();
    let auth = Arc::new(Authenticator::new(Arc::clone(&store) as _, Some(Arc::new(verifier))));
    let engines: Vec<Arc<dyn Engine>> = vec![Arc::new(SandboxEngine::default())];
    let supervisor = Supervisor::new(Arc::clone(&store), engines, SupervisorConfig::default());
    let metrics = Arc::new(Metrics::default());
    let events = wagate_runtime::EventHub::start(Arc::clone(&store), Arc::clone(&metrics), Default::default()).await.unwrap();
    let webhooks = Arc::new(wagate_runtime::WebhookService::new(Arc::clone(&store), Arc::clone(&metrics), Default::default()));
    let messages = wagate_runtime::MessageService::new(Arc::clone(&store), Arc::clone(&supervisor), Default::default());
    let state = AppState::new(store, auth, supervisor, metrics, events, webhooks, messages);
    let mut c = claims("bench", "admin");
    c["exp"] = serde_json::json!(wagate_auth::testing::now_secs() + 3600 * 24);
    Fixture {
        _db: db,
        router: wagate_api::router(state, HttpLimits::default()),
        path: format!("/api/v1/sessions/{}", session.id),
        api_key: key.secret,
        jwt: sign(TestKey::Rsa, Some("k1"), &c),
    }
}

async fn one(router: &axum::Router, path: &str, token: &str) {
    let req = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
}

fn in_process(c: &mut Criterion) {
    // A current-thread runtime: each iteration is one request on one thread, so the figure is
    // the gateway's work and not a cross-thread wake-up of the benchmark harness.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let f = rt.block_on(fixture());
    let mut group = c.benchmark_group("get_session_in_process");
    group.bench_function("api_key", |b| b.to_async(&rt).iter(|| one(&f.router, &f.path, &f.api_key)));
    group.bench_function("jwt_rs256", |b| b.to_async(&rt).iter(|| one(&f.router, &f.path, &f.jwt)));
    group.finish();
}

criterion_group!(benches, in_process);

/// Requests per second over loopback, `clients` keep-alive connections for `secs` seconds.
fn loopback(label: &str, clients: usize, secs: u64, use_jwt: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let f = fixture().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = f.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let url = format!("http://{addr}{}", f.path);
        let token = if use_jwt { f.jwt.clone() } else { f.api_key.clone() };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, token) = (url.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let res = client.get(&url).bearer_auth(&token).send().await.unwrap();
                    assert_eq!(res.status(), 200);
                    let _ = res.bytes().await.unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!("loopback/{label}: {total} requests in {elapsed:.1} s with {clients} clients = {:.0} req/s", total as f64 / elapsed);
    });
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let secs = std::env::var("WAGATE_BENCH_LOOPBACK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    if secs > 0 {
        loopback("api_key", 8, secs, false);
        loopback("jwt_rs256", 8, secs, true);
    }
}
