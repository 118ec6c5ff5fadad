//! What the emulated benches share: the emulator child process, the gateway in-process, the
//! API client, pairing N sessions by QR, logs and `/proc` readings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wagate::Application;
use wagate::config::{Config, Layer, Secret};

pub(crate) const EMULATOR_CHILD: &str = "--emulator-child";
/// Pairings (create, first QR, scan) in flight at once.
pub(crate) const PAIRING_CONCURRENCY: usize = 32;
/// How long all N may take to connect (after pairing) or to come back (after the restart).
const ALL_CONNECTED_TIMEOUT: Duration = Duration::from_secs(900);
pub(crate) const SETTLE: Duration = Duration::from_secs(10);
const WA_VERSION: &str = "2.3000.1027934701";

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// Runs this bench binary again as `mode N` (one fresh process per N) and reads the report it
/// prints as `RESULT {json}`; `None`, with its output shown, when the run failed.
pub(crate) fn run_child<R: serde::de::DeserializeOwned>(exe: &std::path::Path, mode: &str, n: usize) -> anyhow::Result<Option<R>> {
    let out = std::process::Command::new(exe)
        .args([mode, &n.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run the gateway process")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        Some(json) => Ok(Some(serde_json::from_str(json)?)),
        None => {
            eprintln!("N = {n}: the gateway run failed ({})\n{stdout}", out.status);
            Ok(None)
        }
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Warnings and errors (`RUST_LOG` overrides the filter) are not printed one by one: 500
/// sessions repeat the same few. The first of each kind is printed, then all are counted and
/// [`print_log_tally`] prints the counts.
pub(crate) fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::registry().with(filter).with(Tally).init();
}

static TALLY: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

struct Tally;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Tally {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let mut message = Message::default();
        event.record(&mut message);
        // Records from the `log` crate (whatsapp-rust logs through it) carry their target here.
        let target = message.target.as_deref().unwrap_or(meta.target());
        // Digits vary (ids, counts, durations): one kind per shape of message.
        let shape: String = message.text.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).take(200).collect();
        let key = format!("{} {target}: {shape}", meta.level());
        let mut tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
        let count = tally.entry(key).or_default();
        *count += 1;
        if *count == 1 {
            let fields: String = message.fields.chars().take(400).collect();
            eprintln!("  log (first of its kind): {} {target}: {}{fields}", meta.level(), message.text);
        }
    }
}

#[derive(Default)]
struct Message {
    text: String,
    target: Option<String>,
    /// The other fields, `name=value …`, shown with the first of a kind.
    fields: String,
}

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.text),
            "log.target" => self.target = Some(value.to_owned()),
            name if name.starts_with("log.") => {}
            name => self.fields.push_str(&format!(" {name}={value:?}")),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.text = format!("{value:?}"),
            name if name.starts_with("log.") => {}
            name => self.fields.push_str(&format!(" {name}={value:?}")),
        }
    }
}

pub(crate) fn print_log_tally(when: &str) {
    let tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("log lines so far ({when}):{}", if tally.is_empty() { " none" } else { "" });
    for (kind, count) in tally.iter() {
        eprintln!("  {count:>6} × {kind}");
    }
}

// ------------------------------------------------------------------------------------------
// The emulator child.

pub(crate) async fn emulator_child() -> anyhow::Result<()> {
    let emulator = Arc::new(wa_emulator::Emulator::start(wa_emulator::EmulatorConfig::default()).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control = format!("http://{}", listener.local_addr()?);
    println!("READY {} {control}", emulator.ws_url());
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let router = wa_emulator::control::router(Arc::clone(&emulator)).merge(bench_routes(emulator));
    axum::serve(listener, router).with_graceful_shutdown(stdin_closed).await?;
    Ok(())
}

/// Routes of the bench's own in the emulator child, on top of the emulator's control surface.
fn bench_routes(emulator: Arc<wa_emulator::Emulator>) -> axum::Router {
    axum::Router::new().route("/bench/inbound", axum::routing::post(bench_inbound)).with_state(emulator)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundLoad {
    tag: String,
    /// (phone that sends, phone it sends to)
    pairs: Vec<(String, String)>,
    per_pair: usize,
    /// Messages per second over all pairs; 0: as fast as the emulator goes.
    rate: f64,
}

/// `POST /bench/inbound`: the phones of `pairs` send `perPair` texts each, round robin, at
/// `rate` per second, each text `<tag> <pair> <k> <µs since the epoch as it is sent>`.
/// Answers once all are sent: `{sent, errors, firstError, secs}`.
async fn bench_inbound(
    axum::extract::State(emulator): axum::extract::State<Arc<wa_emulator::Emulator>>,
    axum::Json(load): axum::Json<InboundLoad>,
) -> axum::Json<Value> {
    let start = tokio::time::Instant::now();
    let total = load.pairs.len() * load.per_pair;
    let (mut sent, mut errors, mut first_error) = (0usize, 0usize, None::<String>);
    for j in 0..total {
        if load.rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(j as f64 / load.rate)).await;
        } else if j % 8 == 0 {
            // Let the emulator's connections write what was sent.
            tokio::task::yield_now().await;
        }
        let (k, p) = (j / load.pairs.len(), j % load.pairs.len());
        let (from, to) = &load.pairs[p];
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
        match emulator.phone_send_text(from, to, &format!("{} {p} {k} {micros}", load.tag)) {
            Ok(_) => sent += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    axum::Json(json!({"sent": sent, "errors": errors, "firstError": first_error, "secs": start.elapsed().as_secs_f64()}))
}

pub(crate) struct EmulatorProcess {
    pub(crate) child: tokio::process::Child,
    pub(crate) ws_url: String,
    pub(crate) control: String,
}

impl EmulatorProcess {
    pub(crate) async fn spawn() -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg(EMULATOR_CHILD)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start the emulator child")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let line = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).lines().next_line())
            .await
            .context("the emulator child did not say READY in 30 s")??
            .context("the emulator child exited")?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("READY"), Some(ws), Some(control)) => {
                Ok(Self { ws_url: ws.to_owned(), control: control.to_owned(), child })
            }
            _ => bail!("unexpected line from the emulator child: {line}"),
        }
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        self.child.id().map(|pid| proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")).unwrap_or(0)
    }

    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The gateway in this process.

pub(crate) struct Gateway {
    pub(crate) base: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    pub(crate) async fn start(config: &Config) -> anyhow::Result<(Self, Option<String>)> {
        let app = Application::build(config).await?;
        let key = app.bootstrap_key().map(str::to_owned);
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Ok((Self { base, shutdown: tx, server }, key))
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.context("the server task")?
    }
}

/// The gateway's configuration: SQLite and engine keys in `dir`, the WhatsApp URL and version
/// of the emulator, the `WAGATE_*` variables for the rest; `flags` adds settings of the bench.
pub(crate) fn gateway_config(dir: &std::path::Path, emulator: &EmulatorProcess, flags: Layer) -> anyhow::Result<Config> {
    let flags = Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        database_url: Some(Secret::new(format!("sqlite://{}", dir.join("wagate.db").display()))),
        ..flags
    };
    let env = Layer {
        wa_url: Some(emulator.ws_url.clone()),
        wa_version: Some(WA_VERSION.into()),
        ..Layer::from_env(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?
    };
    let config = Config::resolve(None, flags, env).map_err(anyhow::Error::msg)?;
    eprintln!(
        "gateway: connect cap {}, connect timeout {:?}",
        config.whatsapp.max_concurrent_connects, config.whatsapp.connect_timeout
    );
    Ok(config)
}

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Api {
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Every session of the organization, following `nextPageToken`.
    pub(crate) async fn sessions(&self) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(t) => format!("/api/v1/sessions?pageSize=500&pageToken={t}"),
                None => "/api/v1/sessions?pageSize=500".to_owned(),
            };
            let (status, body) = self.send(reqwest::Method::GET, &path, None).await?;
            if status != 200 {
                bail!("GET /api/v1/sessions: {status} {body}");
            }
            out.extend(body["sessions"].as_array().cloned().unwrap_or_default());
            match body["nextPageToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

pub(crate) fn statuses(sessions: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in sessions {
        *out.entry(s["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    out
}

pub(crate) fn connected(sessions: &[Value]) -> usize {
    sessions.iter().filter(|s| s["status"] == "connected").count()
}

/// Creates N sessions and pairs each with the emulated phone `1555<i>` (at most
/// [`PAIRING_CONCURRENCY`] in flight), then waits until all N are `connected`. Returns how
/// many connected.
pub(crate) async fn pair_all(api: &Api, control: &str, n: usize) -> anyhow::Result<usize> {
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(PAIRING_CONCURRENCY));
    let mut pairings = JoinSet::new();
    for i in 0..n {
        let (api, control, gate) = (api.clone(), control.to_owned(), Arc::clone(&gate));
        pairings.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            pair_one(&api, &api.http, &control, i).await.with_context(|| format!("pairing session {i}"))
        });
    }
    let mut scanned = 0;
    let mut pairing_errors = 0;
    let mut last_print = Instant::now();
    while let Some(joined) = pairings.join_next().await {
        match joined? {
            Ok(()) => scanned += 1,
            Err(e) => {
                pairing_errors += 1;
                eprintln!("  pairing failed: {e:#}");
            }
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("  [{:>5.1} s] scanned {scanned}/{n}", t.elapsed().as_secs_f64());
        }
    }
    eprintln!("all QR codes scanned in {:.1} s ({pairing_errors} pairings failed)", t.elapsed().as_secs_f64());
    let (connected, _) = wait_all_connected(api, n, t, "paired").await?;
    Ok(connected)
}

/// The phone number session `i` is paired with.
pub(crate) fn session_phone(i: usize) -> String {
    format!("1555{i:07}")
}

/// Creates session `i`, waits for its first QR code and has the emulated phone scan it.
pub(crate) async fn pair_one(api: &Api, http: &reqwest::Client, control: &str, i: usize) -> anyhow::Result<()> {
    let (status, s) = api.send(reqwest::Method::POST, "/api/v1/sessions", Some(json!({"name": format!("bench-{i:04}")}))).await?;
    if status != 201 {
        bail!("create: {status} {s}");
    }
    let id = s["id"].as_str().context("session id")?.to_owned();
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let qr = current_qr(api, &id).await?;
        let res = http
            .post(format!("{control}/scan"))
            .json(&json!({"qr": qr, "phone": session_phone(i), "pushName": format!("Bench {i}")}))
            .send()
            .await?;
        if res.status().is_success() {
            return Ok(());
        }
        last_error = format!("scan: {} {}", res.status(), res.text().await.unwrap_or_default());
        eprintln!("  session {i} ({id}): {last_error}; retrying with a fresh QR");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{id}: {last_error}")
}

pub(crate) async fn current_qr(api: &Api, id: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = api.send(reqwest::Method::GET, &format!("/api/v1/sessions/{id}/qr"), None).await?;
        if status == 200 {
            return body["qr"].as_str().map(str::to_owned).context("qr");
        }
        if Instant::now() > deadline {
            bail!("no QR code within 180 s: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the list until all `n` are `connected` or the timeout; prints progress every 5 s.
/// Returns how many were connected and the (seconds since `t`, connected) samples.
pub(crate) async fn wait_all_connected(api: &Api, n: usize, t: Instant, what: &str) -> anyhow::Result<(usize, Vec<(f64, usize)>)> {
    let mut timeline = Vec::new();
    let mut last_print = Instant::now();
    loop {
        let sessions = match api.sessions().await {
            Ok(s) => s,
            // The restarted gateway answers as soon as it is built; tolerate a hiccup.
            Err(e) => {
                eprintln!("  list failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let up = connected(&sessions);
        timeline.push((t.elapsed().as_secs_f64(), up));
        if up >= n {
            return Ok((up, timeline));
        }
        if t.elapsed() > ALL_CONNECTED_TIMEOUT {
            eprintln!("  TIMEOUT: {up}/{n} {what} after {:?}; statuses {:?}", ALL_CONNECTED_TIMEOUT, statuses(&sessions));
            for s in sessions.iter().filter(|s| s["status"] != "connected").take(20) {
                eprintln!("    {} {} {}", s["id"], s["status"], s["statusReason"]);
            }
            return Ok((up, timeline));
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "  [{:>5.1} s] {what}: {up}/{n} connected; {:?}; VmRSS {:.1} MiB",
                t.elapsed().as_secs_f64(),
                statuses(&sessions),
                mib(self_kib("VmRSS:"))
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn emulator_online(http: &reqwest::Client, control: &str) -> anyhow::Result<usize> {
    Ok(emulator_devices(http, control).await?.online)
}

#[derive(Default)]
pub(crate) struct Devices {
    pub(crate) linked: usize,
    pub(crate) online: usize,
    /// Logins the emulator accepted, all devices together.
    pub(crate) logins: u64,
}

pub(crate) async fn emulator_devices(http: &reqwest::Client, control: &str) -> anyhow::Result<Devices> {
    let devices: Vec<Value> = http.get(format!("{control}/devices")).send().await?.json().await?;
    Ok(Devices {
        linked: devices.len(),
        online: devices.iter().filter(|d| d["online"] == true).count(),
        logins: devices.iter().filter_map(|d| d["logins"].as_u64()).sum(),
    })
}

/// The emulator's events, counted by type (it keeps the latest 10,000).
pub(crate) async fn emulator_events(http: &reqwest::Client, control: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let events: Vec<Value> = http.get(format!("{control}/events")).send().await?.json().await?;
    let mut out = BTreeMap::new();
    for e in &events {
        *out.entry(e["type"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// /proc readings.

pub(crate) fn proc_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn self_kib(key: &str) -> u64 {
    proc_kib("/proc/self/status", key)
}

pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Each connected session holds a socket and its SQLite key store's files; warn early when
/// the soft limit on open files cannot fit them (raise it with `ulimit -n`).
pub(crate) fn check_open_files(n: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    let needed = n * 6 + 256;
    match soft {
        Some(soft) if soft < needed => {
            eprintln!("WARNING: the open-files limit is {soft}; {n} sessions may need ~{needed} (raise `ulimit -n`)")
        }
        Some(soft) => eprintln!("open-files limit {soft} (~{needed} needed)"),
        None => {}
    }
}
