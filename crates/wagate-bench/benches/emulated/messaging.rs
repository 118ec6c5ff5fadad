//! Messages through the emulator, both ways, with N sessions connected
//! (`cargo bench -p wagate-bench --bench emulated -- messaging 100`; see `main.rs`).
//!
//! Session `i` is paired with the emulated phone `1555<i>` and talks to the phone `1666<i>` (a
//! peer account, created first). Pacing is lifted as far as the API allows: every session
//! sends at `WAGATE_SEND_PER_MINUTE=600` (the ceiling of `sendPolicy.messagesPerMinute`).
//!
//! 1. **Idle**: all N paired and connected, settled 10 s: `VmRSS`.
//! 2. **Outbound**: M texts per session through `POST /api/v1/sessions/{id}/messages`, one
//!    client task per session posting its M one after another (N requests in flight); a
//!    message counts when its `message.status` `sent` event arrives on the event stream; the
//!    run waits for the phones' `delivered` too and checks each peer phone's inbox.
//! 3. **Inbound, paced**: the peer phones send `WAGATE_BENCH_PACED_PER_SESSION` texts each, all
//!    together at `WAGATE_BENCH_PACED_RATE` messages/s (round robin over the phones). Each
//!    text carries the time the emulator child sent it (`CLOCK_REALTIME`, µs); latency is the
//!    event's `createdAt` (taken as the row is stored, ms resolution) minus that, and the
//!    arrival of the `message.received` event on the stream minus that.
//! 4. **Inbound, burst**: the rest of the M texts per phone, as fast as the emulator child
//!    produces them; rate = messages / (last `message.received` − start).
//! 5. **After**: settled 10 s, `VmRSS` again.
//!
//! CPU: utime + stime of this process (`/proc/self/stat`) minus the threads of the bench's
//! client runtime (`bench-client*`, `/proc/self/task/*/stat`: the API requests and the event
//! stream reader), and of the emulator child (`/proc/<pid>/stat`), over each phase.
//!
//! The inbound load is generated inside the emulator child by a bench route
//! (`POST /bench/inbound`, `common.rs`) calling the emulator's `phone_send_text`, so neither its
//! HTTP requests nor its encryption are counted as the gateway's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use wagate::config::Layer;

use crate::common::*;

pub(crate) const MESSAGING_RUN: &str = "--messaging-run";
const CLIENT_THREADS: &str = "bench-client";
/// The most `sendPolicy.messagesPerMinute` allows.
const PER_MINUTE: u32 = 600;

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().with_context(|| format!("{name}: not a number: {v}")),
        _ => Ok(default),
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Settings {
    n: usize,
    /// Messages per session each way.
    messages: usize,
    paced_rate: usize,
    paced_per_session: usize,
}

impl Settings {
    fn from_env(n: usize) -> anyhow::Result<Self> {
        let messages = env_usize("WAGATE_BENCH_MESSAGES", 1000)?;
        let paced_rate = env_usize("WAGATE_BENCH_PACED_RATE", 500)?;
        let paced_per_session = env_usize("WAGATE_BENCH_PACED_PER_SESSION", 100)?.min(messages);
        Ok(Self { n, messages, paced_rate, paced_per_session })
    }
}

fn peer_phone(i: usize) -> String {
    format!("1666{i:07}")
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Driver.

pub(crate) fn driver(counts: &[usize]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    for &n in counts {
        let s = Settings::from_env(n)?;
        eprintln!(
            "\n=== messaging, N = {n}: {} messages per session each way ({} of them inbound paced at {}/s), {cores} cores ===",
            s.messages, s.paced_per_session, s.paced_rate
        );
        if let Some(report) = run_child::<Report>(&exe, MESSAGING_RUN, n)? {
            rows.push(report);
        }
    }
    for r in &rows {
        r.print();
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
struct Latency {
    samples: usize,
    stored_p50_ms: f64,
    stored_p99_ms: f64,
    stored_max_ms: f64,
    seen_p50_ms: f64,
    seen_p99_ms: f64,
    seen_max_ms: f64,
}

#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
struct Phase {
    /// Messages that completed (sent / stored).
    messages: usize,
    expected: usize,
    secs: f64,
    /// CPU seconds over the phase: the gateway (this process without the bench's client
    /// threads), the client threads, the emulator child.
    gateway_cpu: f64,
    client_cpu: f64,
    emulator_cpu: f64,
    latency: Option<Latency>,
}

impl Phase {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 { self.messages as f64 / self.secs } else { 0.0 }
    }

    fn per_message_us(cpu: f64, messages: usize) -> f64 {
        if messages == 0 { 0.0 } else { cpu * 1e6 / messages as f64 }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
struct Report {
    settings: Option<Settings>,
    n: usize,
    baseline_kib: u64,
    idle_kib: u64,
    after_kib: u64,
    peak_kib: u64,
    emulator_kib: u64,
    /// Seconds until every outbound message was accepted (202).
    accept_secs: f64,
    outbound: Phase,
    /// Outbound messages the peer phones decrypted, and `delivered` events.
    phones_received: usize,
    delivered: usize,
    paced: Phase,
    /// Seconds the emulator child took to send the burst.
    burst_send_secs: f64,
    burst: Phase,
}

impl Report {
    fn per_session(&self, kib: u64) -> f64 {
        (kib as f64 - self.baseline_kib as f64) / self.n.max(1) as f64
    }

    fn print(&self) {
        let s = self.settings.clone().unwrap_or(Settings { n: self.n, messages: 0, paced_rate: 0, paced_per_session: 0 });
        println!();
        println!("messaging through the emulator: N = {}, {} messages per session each way, send pace {PER_MINUTE}/min", self.n, s.messages);
        println!(
            "{:<28} {:>9} {:>8} {:>10} {:>13} {:>12} {:>12} {:>16} {:>16}",
            "phase", "messages", "secs", "msg/s", "gw CPU µs/msg", "client µs", "emu µs/msg", "stored p50/p99", "seen p50/p99"
        );
        let row = |name: &str, p: &Phase| {
            let (stored, seen) = match &p.latency {
                Some(l) => (
                    format!("{:.1}/{:.1} ms", l.stored_p50_ms, l.stored_p99_ms),
                    format!("{:.1}/{:.1} ms", l.seen_p50_ms, l.seen_p99_ms),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:<28} {:>9} {:>8.1} {:>10.0} {:>13.0} {:>12.0} {:>12.0} {:>16} {:>16}",
                name,
                format!("{}/{}", p.messages, p.expected),
                p.secs,
                p.rate(),
                Phase::per_message_us(p.gateway_cpu, p.messages),
                Phase::per_message_us(p.client_cpu, p.messages),
                Phase::per_message_us(p.emulator_cpu, p.messages),
                stored,
                seen
            );
        };
        row("outbound (API -> phone)", &self.outbound);
        row(&format!("inbound paced at {}/s", s.paced_rate), &self.paced);
        row("inbound burst", &self.burst);
        for (name, p) in [("paced", &self.paced), ("burst", &self.burst)] {
            if let Some(l) = &p.latency {
                println!(
                    "  inbound {name}: max stored {:.1} ms, max seen {:.1} ms ({} samples)",
                    l.stored_max_ms, l.seen_max_ms, l.samples
                );
            }
        }
        println!(
            "  outbound: all {} accepted (202) in {:.1} s; peer phones decrypted {}; {} delivered events",
            self.outbound.expected, self.accept_secs, self.phones_received, self.delivered
        );
        println!("  burst: the emulator child sent it in {:.1} s", self.burst_send_secs);
        let idle = self.per_session(self.idle_kib);
        let after = self.per_session(self.after_kib);
        println!(
            "  memory: baseline {:.1} MiB; idle {:.1} MiB = {:.0} KiB/session; after {:.1} MiB = {:.0} KiB/session ({:.2}x idle); peak {:.1} MiB; emulator {:.1} MiB",
            mib(self.baseline_kib),
            mib(self.idle_kib),
            idle,
            mib(self.after_kib),
            after,
            if idle > 0.0 { after / idle } else { 0.0 },
            mib(self.peak_kib),
            mib(self.emulator_kib)
        );
    }
}

// ------------------------------------------------------------------------------------------
// CPU readings.

const TICKS_PER_SEC: f64 = 100.0; // USER_HZ

/// utime + stime, in seconds, of a `/proc/…/stat` line; its `comm` too.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Field 3 (state) is fields[0]: utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    client: f64,
    emulator: f64,
}

impl Cpu {
    fn read(emulator_pid: Option<u32>) -> Self {
        let process = stat_cpu("/proc/self/stat").map(|(_, c)| c).unwrap_or(0.0);
        let mut client = 0.0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                if let Some((comm, cpu)) = stat_cpu(&format!("{}/stat", task.path().display()))
                    && comm.starts_with(CLIENT_THREADS)
                {
                    client += cpu;
                }
            }
        }
        let emulator = emulator_pid.and_then(|pid| stat_cpu(&format!("/proc/{pid}/stat"))).map(|(_, c)| c).unwrap_or(0.0);
        Self { process, client, emulator }
    }

    /// (gateway, client, emulator) CPU seconds since `before`.
    fn since(&self, before: &Cpu) -> (f64, f64, f64) {
        let client = self.client - before.client;
        (self.process - before.process - client, client, self.emulator - before.emulator)
    }
}

// ------------------------------------------------------------------------------------------
// What the event stream showed.

#[derive(Default)]
struct Received {
    count: usize,
    last_at: Option<Instant>,
    stored_ms: Vec<f64>,
    seen_ms: Vec<f64>,
}

#[derive(Default)]
struct Observed {
    sent: usize,
    last_sent_at: Option<Instant>,
    delivered: usize,
    failed: usize,
    first_failure: Option<String>,
    /// Inbound bench messages by tag (`paced`, `burst`).
    received: HashMap<String, Received>,
    events: usize,
    reconnects: usize,
}

type Shared = Arc<Mutex<Observed>>;

fn lock(o: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

fn observe(o: &Shared, envelope: &Value) {
    let now = Instant::now();
    let mut o = lock(o);
    o.events += 1;
    let data = &envelope["data"];
    match envelope["type"].as_str() {
        Some("message.status") => match data["status"].as_str() {
            Some("sent") => {
                o.sent += 1;
                o.last_sent_at = Some(now);
            }
            Some("delivered") => o.delivered += 1,
            Some("failed") => {
                o.failed += 1;
                if o.first_failure.is_none() {
                    o.first_failure = Some(data.to_string());
                }
            }
            _ => {}
        },
        Some("message.received") => {
            // `<tag> <session> <k> <µs since the epoch when the phone sent it>`
            let Some(text) = data["text"].as_str() else { return };
            let mut parts = text.split(' ');
            let (Some(tag), Some(_), Some(_), Some(micros)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return;
            };
            let Ok(sent_us) = micros.parse::<i64>() else { return };
            let seen_us = unix_micros(SystemTime::now());
            let stored_us = envelope["createdAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros());
            let r = o.received.entry(tag.to_owned()).or_default();
            r.count += 1;
            r.last_at = Some(now);
            r.seen_ms.push((seen_us - sent_us) as f64 / 1000.0);
            if let Some(stored) = stored_us {
                r.stored_ms.push((stored - sent_us) as f64 / 1000.0);
            }
        }
        _ => {}
    }
}

/// Reads `GET /api/v1/events:stream` (message events) into `o`, reconnecting with
/// `Last-Event-ID` if the stream ends. `ready` fires once the first response is open.
async fn read_events(api: Api, o: Shared, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut last_id: Option<String> = None;
    loop {
        let mut req = api
            .http
            .get(format!("{}/api/v1/events:stream?types=message.received,message.status", api.base))
            .bearer_auth(&api.key);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id.as_str());
        }
        let mut res = match req.send().await {
            Ok(res) if res.status().is_success() => res,
            Ok(res) => {
                eprintln!("  event stream: {}", res.status());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                eprintln!("  event stream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        } else {
            lock(&o).reconnects += 1;
        }
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match res.chunk().await {
                Ok(Some(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let line = String::from_utf8_lossy(&line);
                        let line = line.trim_end();
                        if let Some(data) = line.strip_prefix("data:") {
                            if let Ok(v) = serde_json::from_str::<Value>(data.trim_start()) {
                                observe(&o, &v);
                            }
                        } else if let Some(id) = line.strip_prefix("id:") {
                            last_id = Some(id.trim().to_owned());
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("  event stream broke: {e}");
                    break;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The run.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(r: &Received) -> Latency {
    let mut stored = r.stored_ms.clone();
    let mut seen = r.seen_ms.clone();
    stored.sort_by(f64::total_cmp);
    seen.sort_by(f64::total_cmp);
    Latency {
        samples: seen.len(),
        stored_p50_ms: percentile(&stored, 0.50),
        stored_p99_ms: percentile(&stored, 0.99),
        stored_max_ms: stored.last().copied().unwrap_or(0.0),
        seen_p50_ms: percentile(&seen, 0.50),
        seen_p99_ms: percentile(&seen, 0.99),
        seen_max_ms: seen.last().copied().unwrap_or(0.0),
    }
}

/// Entry of `--messaging-run N`: the gateway on this thread's runtime, the bench's HTTP client
/// on a runtime of its own (one thread, `bench-client`), so that its CPU can be told apart.
pub(crate) fn run(n: usize) -> anyhow::Result<()> {
    let settings = Settings::from_env(n)?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let report = runtime().block_on(gateway_run(settings, client.handle().clone()));
    client.shutdown_background();
    println!("RESULT {}", serde_json::to_string(&report?)?);
    Ok(())
}

/// Polls every 100 ms until `done` or `timeout`; prints progress every 5 s.
async fn wait_for(
    what: &str,
    o: &Shared,
    emulator_pid: Option<u32>,
    timeout: Duration,
    progress: impl Fn(&Observed) -> usize,
    target: usize,
) -> bool {
    let t = Instant::now();
    let mut last_print = Instant::now();
    let mut last_count = progress(&lock(o));
    let mut last_cpu = Cpu::read(emulator_pid);
    loop {
        let count = progress(&lock(o));
        if count >= target {
            return true;
        }
        if t.elapsed() > timeout {
            eprintln!("  TIMEOUT: {what}: {count}/{target} after {timeout:?}");
            return false;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            let secs = last_print.elapsed().as_secs_f64();
            let cpu = Cpu::read(emulator_pid);
            let (gw, cl, emu) = cpu.since(&last_cpu);
            let metrics = Handle::current().metrics();
            eprintln!(
                "  [{:>6.1} s] {what}: {count}/{target}, {:.0}/s; CPU gateway {:.0}%, client {:.0}%, emulator {:.0}%; {} tasks; VmRSS {:.1} MiB",
                t.elapsed().as_secs_f64(),
                (count - last_count) as f64 / secs,
                gw * 100.0 / secs,
                cl * 100.0 / secs,
                emu * 100.0 / secs,
                metrics.num_alive_tasks(),
                mib(self_kib("VmRSS:"))
            );
            last_print = Instant::now();
            last_count = count;
            last_cpu = cpu;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gateway_run(settings: Settings, client: Handle) -> anyhow::Result<Report> {
    let n = settings.n;
    let m = settings.messages;
    check_open_files(n);
    let emulator = EmulatorProcess::spawn().await?;
    let emulator_pid = emulator.child.id();
    eprintln!("emulator child {} at {} (control {})", emulator_pid.unwrap_or(0), emulator.ws_url, emulator.control);
    let dir = tempfile::tempdir()?;
    let config = gateway_config(dir.path(), &emulator, Layer { send_per_minute: Some(PER_MINUTE), ..Layer::default() })?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    let (gateway, key) = Gateway::start(&config).await?;
    let key = key.context("a fresh database yields the bootstrap key")?;
    let api = Api { http: http.clone(), base: gateway.base.clone(), key: key.clone() };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_kib = self_kib("VmRSS:");
    eprintln!("baseline: VmRSS {:.1} MiB", mib(baseline_kib));

    // The peers, then N sessions paired with their own phones.
    for i in 0..n {
        let res = http
            .post(format!("{}/accounts", emulator.control))
            .json(&json!({"phone": peer_phone(i), "pushName": format!("Peer {i}")}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("create peer {i}: {} {}", res.status(), res.text().await.unwrap_or_default());
        }
    }
    let t = Instant::now();
    let connected = pair_all(&api, &emulator.control, n).await?;
    eprintln!("{connected}/{n} connected {:.1} s after the first session was created", t.elapsed().as_secs_f64());
    if connected < n {
        bail!("only {connected}/{n} sessions connected");
    }
    let mut ids = vec![String::new(); n];
    for s in api.sessions().await? {
        if let Some(i) = s["name"].as_str().and_then(|name| name.strip_prefix("bench-")).and_then(|i| i.parse::<usize>().ok())
            && i < n
        {
            ids[i] = s["id"].as_str().unwrap_or_default().to_owned();
        }
    }
    tokio::time::sleep(SETTLE).await;
    let idle_kib = self_kib("VmRSS:");
    print_log_tally("paired and connected");
    eprintln!(
        "idle: VmRSS {:.1} MiB ({:.0} KiB per session over the baseline), {} threads, {} fds, {} tasks; emulator VmRSS {:.1} MiB",
        mib(idle_kib),
        (idle_kib as f64 - baseline_kib as f64) / n.max(1) as f64,
        self_kib("Threads:"),
        open_fds(),
        Handle::current().metrics().num_alive_tasks(),
        mib(emulator.rss_kib())
    );

    // The event stream, read on the client runtime.
    let observed: Shared = Arc::new(Mutex::new(Observed::default()));
    let base = gateway.base.clone();
    let load_api = client
        .spawn(async move {
            let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
            anyhow::Ok(Api { http, base, key })
        })
        .await??;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reader = client.spawn(read_events(load_api.clone(), Arc::clone(&observed), ready_tx));
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.context("the event stream did not open")??;

    // Outbound: N clients, each posting its session's M texts one after another.
    eprintln!("outbound: {n} × {m} texts through the API");
    let total = n * m;
    let cpu0 = Cpu::read(emulator_pid);
    let t0 = Instant::now();
    let mut posters = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (api, id) = (load_api.clone(), id.clone());
        posters.spawn_on(
            async move {
                for k in 0..m {
                    let body = json!({"to": peer_phone(i), "text": format!("out {i} {k}")});
                    let (status, answer) = api.send(reqwest::Method::POST, &format!("/api/v1/sessions/{id}/messages"), Some(body)).await?;
                    if status != 202 {
                        bail!("session {i} message {k}: {status} {answer}");
                    }
                }
                anyhow::Ok(())
            },
            &client,
        );
    }
    let accept = tokio::spawn(async move {
        let mut errors = 0;
        while let Some(joined) = posters.join_next().await {
            if let Err(e) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
                errors += 1;
                eprintln!("  posting failed: {e:#}");
            }
        }
        (t0.elapsed().as_secs_f64(), errors)
    });
    let timeout = Duration::from_secs_f64((total as f64 / 100.0).max(300.0));
    wait_for("sent", &observed, emulator_pid, timeout, |o| o.sent + o.failed, total).await;
    let (accept_secs, post_errors) = accept.await?;
    let outbound_secs = lock(&observed).last_sent_at.map(|at| at.duration_since(t0).as_secs_f64()).unwrap_or(0.0);
    wait_for("delivered", &observed, emulator_pid, Duration::from_secs(60), |o| o.delivered, total).await;
    let (gateway_cpu, client_cpu, emulator_cpu) = Cpu::read(emulator_pid).since(&cpu0);
    let (sent, delivered, failed, first_failure) = {
        let o = lock(&observed);
        (o.sent, o.delivered, o.failed, o.first_failure.clone())
    };
    eprintln!(
        "outbound: {sent}/{total} sent in {outbound_secs:.1} s ({:.0}/s), all accepted in {accept_secs:.1} s ({post_errors} posters failed), {delivered} delivered, {failed} failed{}",
        sent as f64 / outbound_secs.max(1e-9),
        first_failure.map(|f| format!(" (first: {f})")).unwrap_or_default()
    );
    let mut phones_received = 0;
    // Copies of one message (one WhatsApp id) decrypted more than once, and texts that arrived
    // under more than one id (a message sent twice as two messages: must be none).
    let mut repeated_ids = 0;
    let mut repeated_texts = 0;
    for i in 0..n {
        let inbox: Vec<Value> = http.get(format!("{}/phones/{}/messages", emulator.control, peer_phone(i))).send().await?.json().await?;
        let ours: Vec<&Value> = inbox.iter().filter(|m| m["text"].as_str().is_some_and(|t| t.starts_with("out "))).collect();
        phones_received += ours.len();
        let mut ids = std::collections::HashSet::new();
        let mut texts = std::collections::HashMap::<&str, std::collections::HashSet<&str>>::new();
        for m in &ours {
            let (id, text) = (m["id"].as_str().unwrap_or_default(), m["text"].as_str().unwrap_or_default());
            if !ids.insert(id) {
                repeated_ids += 1;
            }
            texts.entry(text).or_default().insert(id);
        }
        repeated_texts += texts.values().filter(|ids| ids.len() > 1).count();
    }
    eprintln!(
        "  the peer phones decrypted {phones_received}/{total}: {repeated_ids} repeated copies of one id, {repeated_texts} texts under more than one id"
    );
    let outbound = Phase {
        messages: sent,
        expected: total,
        secs: outbound_secs,
        gateway_cpu,
        client_cpu,
        emulator_cpu,
        latency: None,
    };
    print_log_tally("outbound");

    // Inbound: the peers send to the sessions' phones, first paced, then a burst.
    let pairs: Vec<(String, String)> = (0..n).map(|i| (peer_phone(i), session_phone(i))).collect();
    let inbound = |tag: &'static str, per_pair: usize, rate: usize| {
        let (http, control, pairs) = (http.clone(), emulator.control.clone(), pairs.clone());
        async move {
            let res = http
                .post(format!("{control}/bench/inbound"))
                .json(&json!({"tag": tag, "pairs": pairs, "perPair": per_pair, "rate": rate}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            if !status.is_success() || body["errors"].as_u64() != Some(0) {
                eprintln!("  inbound {tag}: {status} {body}");
            }
            anyhow::Ok(body["secs"].as_f64().unwrap_or(0.0))
        }
    };
    let phase = |tag: &'static str, per_pair: usize, rate: usize| {
        let observed = Arc::clone(&observed);
        let send = inbound(tag, per_pair, rate);
        async move {
            let expected = n * per_pair;
            let cpu0 = Cpu::read(emulator_pid);
            let t0 = Instant::now();
            let sending = tokio::spawn(send);
            let timeout = Duration::from_secs_f64((expected as f64 / 100.0).max(300.0));
            wait_for(tag, &observed, emulator_pid, timeout, |o| o.received.get(tag).map_or(0, |r| r.count), expected).await;
            let send_secs = sending.await??;
            let (gateway_cpu, client_cpu, emulator_cpu) = Cpu::read(emulator_pid).since(&cpu0);
            let o = lock(&observed);
            let r = o.received.get(tag);
            let phase = Phase {
                messages: r.map_or(0, |r| r.count),
                expected,
                secs: r.and_then(|r| r.last_at).map_or(0.0, |at| at.duration_since(t0).as_secs_f64()),
                gateway_cpu,
                client_cpu,
                emulator_cpu,
                latency: r.map(latency),
            };
            eprintln!(
                "inbound {tag}: {}/{expected} stored in {:.1} s ({:.0}/s; the emulator sent them in {send_secs:.1} s); latency {:?}",
                phase.messages,
                phase.secs,
                phase.rate(),
                phase.latency
            );
            anyhow::Ok((phase, send_secs))
        }
    };
    eprintln!("inbound, paced: {n} × {} texts at {}/s", settings.paced_per_session, settings.paced_rate);
    let (paced, _) = phase("paced", settings.paced_per_session, settings.paced_rate).await?;
    let burst_per_session = m - settings.paced_per_session;
    eprintln!("inbound, burst: {n} × {burst_per_session} texts as fast as the emulator sends them");
    let (burst, burst_send_secs) = phase("burst", burst_per_session, 0).await?;
    print_log_tally("inbound");

    tokio::time::sleep(SETTLE).await;
    let after_kib = self_kib("VmRSS:");
    let peak_kib = self_kib("VmHWM:");
    let emulator_kib = emulator.rss_kib();
    {
        let o = lock(&observed);
        eprintln!(
            "after: VmRSS {:.1} MiB ({:.0} KiB per session over the baseline), VmHWM {:.1} MiB, {} threads, {} fds, {} tasks; emulator VmRSS {:.1} MiB; {} events read, {} stream reconnects",
            mib(after_kib),
            (after_kib as f64 - baseline_kib as f64) / n.max(1) as f64,
            mib(peak_kib),
            self_kib("Threads:"),
            open_fds(),
            Handle::current().metrics().num_alive_tasks(),
            mib(emulator_kib),
            o.events,
            o.reconnects
        );
    }
    let delivered = lock(&observed).delivered;
    reader.abort();
    let t = Instant::now();
    gateway.stop().await.context("the gateway stops cleanly")?;
    eprintln!("stopped in {:.1} s", t.elapsed().as_secs_f64());
    print_log_tally("end of the run");
    emulator.stop().await;
    Ok(Report {
        settings: Some(settings),
        n,
        baseline_kib,
        idle_kib,
        after_kib,
        peak_kib,
        emulator_kib,
        accept_secs,
        outbound,
        phones_received,
        delivered,
        paced,
        burst_send_secs,
        burst,
    })
}
