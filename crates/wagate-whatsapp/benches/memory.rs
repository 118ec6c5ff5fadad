//! Resident memory of N WhatsApp sessions that cannot connect.
//!
//! ```text
//! cargo bench -p wagate-whatsapp --bench memory -- 0 100 500          # both scenarios
//! cargo bench -p wagate-whatsapp --bench memory -- closed 100         # one scenario
//! ```
//!
//! Scenarios: `closed` points every session at a closed port on 127.0.0.1 (connection
//! refused, the sessions sit in their reconnect backoff); `stall` points them at a local
//! WebSocket server in this process that completes the upgrade and never answers the Noise
//! handshake (each attempt holds a live transport until the connect timeout). Each (scenario,
//! N) runs in a fresh child process so the figures do not inherit freed-but-kept memory. The
//! process waits until every session has reported `Reconnecting` at least once, settles two
//! seconds, then reads VmRSS from /proc/self/status. Per-session = (RSS(N) - RSS(0)) / N.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use wagate_core::{OrgId, SessionId};
use wagate_engine::{Engine, EngineEvent, EventSink, SessionOutput, SessionSpec};
use wagate_whatsapp::{Backoff, WhatsappConfig, WhatsappEngine};

const CHILD_ENV: &str = "WAGATE_MEMORY_BENCH_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (scenario, n) = spec.split_once(':').expect("scenario:n");
        let n: usize = n.parse().expect("n");
        let rss = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure(scenario, n));
        println!("RESULT {rss}");
        return;
    }

    let mut scenarios = Vec::new();
    let mut counts = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "closed" | "stall" => scenarios.push(arg),
            a if a.starts_with('-') => {} // `cargo bench` passes --bench
            a => counts.push(a.parse::<usize>().unwrap_or_else(|_| panic!("not a count: {a}"))),
        }
    }
    if scenarios.is_empty() {
        scenarios = vec!["closed".into(), "stall".into()];
    }
    if counts.is_empty() {
        counts = vec![0, 100, 500];
    }
    if !counts.contains(&0) {
        counts.insert(0, 0);
    }

    let exe = std::env::current_exe().unwrap();
    println!("{:<8} {:>9} {:>12} {:>16}", "scenario", "sessions", "VmRSS (MiB)", "per session (KiB)");
    for scenario in &scenarios {
        let mut base = None;
        for &n in &counts {
            let out = std::process::Command::new(&exe)
                .env(CHILD_ENV, format!("{scenario}:{n}"))
                .output()
                .expect("run child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            for line in String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains(" n=")) {
                eprintln!("  {line}");
            }
            let Some(rss) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).and_then(|v| v.parse::<u64>().ok())
            else {
                eprintln!("{scenario} {n}: child failed\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
                continue;
            };
            let base_kib = *base.get_or_insert(rss);
            let per = if n == 0 { String::from("-") } else { format!("{:.0}", (rss as f64 - base_kib as f64) / n as f64) };
            println!("{scenario:<8} {n:>9} {:>12.1} {per:>16}", rss as f64 / 1024.0);
        }
    }
}

/// Starts `n` sessions, waits until all are retrying, returns VmRSS in KiB.
async fn measure(scenario: &str, n: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let addr = match scenario {
        "closed" => {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            drop(l);
            a
        }
        "stall" => stalling_server().await,
        other => panic!("unknown scenario {other}"),
    };
    let mut cfg = WhatsappConfig::new(dir.path());
    cfg.ws_url = Some(format!("ws://{addr}/ws/chat"));
    cfg.version = Some((2, 3000, 1_023_000_000));
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.max_concurrent_connects = 64;
    cfg.backoff = Backoff { initial: Duration::from_secs(5), max: Duration::from_secs(60), jitter: 0.1 };
    let engine = WhatsappEngine::new(cfg);
    let sink = Arc::new(Sink::default());

    let t = Instant::now();
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let spec = SessionSpec { id: SessionId::generate(), org: OrgId::parse("bench").unwrap(), identity: None, device_name: None };
        sessions.push(engine.start(spec, SessionOutput::new(sink.clone())).await.expect("start"));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let notified = sink.changed.notified();
        let retrying = sink.retrying.lock().unwrap().len();
        if retrying >= n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("only {retrying}/{n} sessions retrying after 600 s");
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
    let all_retrying = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = vm_kib("VmRSS:");
    eprintln!(
        "{scenario} n={n}: all retrying after {all_retrying:?}; VmRSS {rss} KiB, VmHWM {} KiB, threads {}",
        vm_kib("VmHWM:"),
        vm_kib("Threads:")
    );
    let t = Instant::now();
    for s in &sessions {
        s.stop().await;
    }
    eprintln!("{scenario} n={n}: stopped all in {:?}", t.elapsed());
    rss
}

fn vm_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Sink {
    retrying: Mutex<HashSet<SessionId>>,
    changed: Notify,
}

#[async_trait]
impl EventSink for Sink {
    async fn emit(&self, session: &SessionId, event: EngineEvent) {
        if matches!(event, EngineEvent::Reconnecting { .. }) && self.retrying.lock().unwrap().insert(session.clone()) {
            self.changed.notify_waiters();
        }
    }
}

/// Completes the WebSocket upgrade and never answers.
async fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok((_req, mut ws)) = tokio_websockets::ServerBuilder::new().accept(stream).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    addr
}
