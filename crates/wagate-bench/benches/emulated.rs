//! Resident memory of the whole gateway with N real `whatsapp` sessions connected to the
//! WhatsApp emulator, and the time to bring all of them back after a gateway restart.
//!
//! ```text
//! cargo bench -p wagate-bench --bench emulated -- 100 500
//! ```
//!
//! Three kinds of process, all this binary:
//!
//! * the driver (no flag) runs each N in a fresh `--gateway-run N` process, so that a row does
//!   not inherit the memory an earlier row freed but the allocator kept, and prints the table;
//! * `--gateway-run N` runs the gateway in-process (SQLite and engine keys in a temp dir) and
//!   reads its own `VmRSS`; the HTTP client that drives the API is the only non-gateway part;
//! * `--emulator-child` (started by the gateway run) serves the emulator and its HTTP control
//!   surface, prints `READY <ws_url> <control_url>`, and exits when its stdin closes, so the
//!   emulator's memory is not counted.
//!
//! A run: baseline RSS once the gateway is up; N sessions created through the API and paired by
//! QR (the emulated phone scans through `POST /scan`), at most 32 pairings (create, first QR,
//! scan) in flight; waits until all N are `connected`, settles 10 s, reads RSS. Then a graceful
//! stop (`run_until`'s shutdown future), a new `Application` on the same data dir and database,
//! and the time from `Application::build` until all N are `connected` again; settles, reads RSS.
//!
//! `WAGATE_WA_*` variables apply (e.g. `WAGATE_WA_MAX_CONNECTS`), except the URL and version,
//! which point at the emulator. Logs: warnings and errors, the first of each kind printed and
//! all counted (`RUST_LOG` overrides the filter). Expect the client's warnings about the
//! optional post-login IQs the emulator answers `501 feature-not-implemented` (props,
//! blocklist, privacy settings, digest key, own device list): a few per login.

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

const EMULATOR_CHILD: &str = "--emulator-child";
const GATEWAY_RUN: &str = "--gateway-run";
/// Pairings (create, first QR, scan) in flight at once.
const PAIRING_CONCURRENCY: usize = 32;
/// How long all N may take to connect (after pairing) or to come back (after the restart).
const ALL_CONNECTED_TIMEOUT: Duration = Duration::from_secs(900);
const SETTLE: Duration = Duration::from_secs(10);
const WA_VERSION: &str = "2.3000.1027934701";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == EMULATOR_CHILD) {
        tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
        return runtime().block_on(emulator_child());
    }
    if let Some(i) = args.iter().position(|a| a == GATEWAY_RUN) {
        let n: usize = args.get(i + 1).context("--gateway-run N")?.parse().context("N")?;
        init_logs();
        let report = runtime().block_on(gateway_run(n))?;
        println!("RESULT {}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let counts: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with('-')) // `cargo bench` passes --bench
        .map(|a| a.parse().with_context(|| format!("not a session count: {a}")))
        .collect::<anyhow::Result<_>>()?;
    let counts = if counts.is_empty() { vec![100, 500] } else { counts };
    driver(&counts)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// Warnings and errors (`RUST_LOG` overrides the filter) are not printed one by one: 500
/// sessions repeat the same few. The first of each kind is printed, then all are counted and
/// [`print_log_tally`] prints the counts.
fn init_logs() {
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

fn print_log_tally(when: &str) {
    let tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!("log lines so far ({when}):{}", if tally.is_empty() { " none" } else { "" });
    for (kind, count) in tally.iter() {
        eprintln!("  {count:>6} × {kind}");
    }
}

// ------------------------------------------------------------------------------------------
// Driver: one fresh process per N, then the table.

fn driver(counts: &[usize]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("emulated bench: N = {counts:?}, {cores} cores, {PAIRING_CONCURRENCY} pairings in flight");
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("\n=== N = {n} ===");
        let out = std::process::Command::new(&exe)
            .args([GATEWAY_RUN, &n.to_string()])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("run the gateway process")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
            Some(json) => rows.push(serde_json::from_str::<Report>(json)?),
            None => eprintln!("N = {n}: the gateway run failed ({})\n{stdout}", out.status),
        }
    }
    println!();
    println!(
        "{:>5} {:>9} {:>10} {:>12} {:>11} {:>9} {:>10} {:>10} {:>12} {:>11} {:>9}",
        "N",
        "base MiB",
        "conn. MiB",
        "per sess KiB",
        "pair all s",
        "stop s",
        "resume s",
        "resumed",
        "resumed MiB",
        "peak MiB",
        "emu MiB"
    );
    for r in &rows {
        println!(
            "{:>5} {:>9.1} {:>10.1} {:>12.0} {:>11.1} {:>9.1} {:>10.1} {:>10} {:>12.1} {:>11.1} {:>9.1}",
            r.n,
            mib(r.baseline_kib),
            mib(r.connected_kib),
            r.per_session_kib(),
            r.pair_all_secs,
            r.stop_secs,
            r.resume_secs,
            format!("{}/{}", r.resumed, r.n),
            mib(r.resumed_kib),
            mib(r.peak_kib),
            mib(r.emulator_kib),
        );
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
struct Report {
    n: usize,
    baseline_kib: u64,
    connected_kib: u64,
    /// Sessions `connected` before the restart.
    connected: usize,
    pair_all_secs: f64,
    stop_secs: f64,
    resume_secs: f64,
    /// Sessions `connected` again after the restart (within the timeout).
    resumed: usize,
    resumed_kib: u64,
    /// VmHWM at the end of the run.
    peak_kib: u64,
    emulator_kib: u64,
}

impl Report {
    fn per_session_kib(&self) -> f64 {
        if self.n == 0 { 0.0 } else { (self.connected_kib as f64 - self.baseline_kib as f64) / self.n as f64 }
    }
}

// ------------------------------------------------------------------------------------------
// The emulator child.

async fn emulator_child() -> anyhow::Result<()> {
    let emulator = Arc::new(wa_emulator::Emulator::start(wa_emulator::EmulatorConfig::default()).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control = format!("http://{}", listener.local_addr()?);
    println!("READY {} {control}", emulator.ws_url());
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    axum::serve(listener, wa_emulator::control::router(emulator)).with_graceful_shutdown(stdin_closed).await?;
    Ok(())
}

struct EmulatorProcess {
    child: tokio::process::Child,
    ws_url: String,
    control: String,
}

impl EmulatorProcess {
    async fn spawn() -> anyhow::Result<Self> {
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

    fn rss_kib(&self) -> u64 {
        self.child.id().map(|pid| proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")).unwrap_or(0)
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The gateway run.

struct Gateway {
    base: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    async fn start(config: &Config) -> anyhow::Result<(Self, Option<String>)> {
        let app = Application::build(config).await?;
        let key = app.bootstrap_key().map(str::to_owned);
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Ok((Self { base, shutdown: tx, server }, key))
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.context("the server task")?
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
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
    async fn sessions(&self) -> anyhow::Result<Vec<Value>> {
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

fn statuses(sessions: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in sessions {
        *out.entry(s["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    out
}

fn connected(sessions: &[Value]) -> usize {
    sessions.iter().filter(|s| s["status"] == "connected").count()
}

async fn gateway_run(n: usize) -> anyhow::Result<Report> {
    check_open_files(n);
    let emulator = EmulatorProcess::spawn().await?;
    eprintln!("emulator child {} at {} (control {})", emulator.child.id().unwrap_or(0), emulator.ws_url, emulator.control);

    let dir = tempfile::tempdir()?;
    let flags = Layer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        database_url: Some(Secret::new(format!("sqlite://{}", dir.path().join("wagate.db").display()))),
        ..Layer::default()
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
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    let (gateway, key) = Gateway::start(&config).await?;
    let key = key.context("a fresh database yields the bootstrap key")?;
    let mut api = Api { http: http.clone(), base: gateway.base.clone(), key };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_kib = self_kib("VmRSS:");
    eprintln!("baseline: VmRSS {:.1} MiB", mib(baseline_kib));

    // Pair N sessions.
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(PAIRING_CONCURRENCY));
    let mut pairings = JoinSet::new();
    for i in 0..n {
        let (api, http, control, gate) = (api.clone(), http.clone(), emulator.control.clone(), Arc::clone(&gate));
        pairings.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            pair_one(&api, &http, &control, i).await.with_context(|| format!("pairing session {i}"))
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
    let (connected_before, _) = wait_all_connected(&api, n, t, "paired").await?;
    let pair_all_secs = t.elapsed().as_secs_f64();
    eprintln!("{connected_before}/{n} connected {pair_all_secs:.1} s after the first session was created");
    tokio::time::sleep(SETTLE).await;
    let connected_kib = self_kib("VmRSS:");
    let events_before = emulator_events(&http, &emulator.control).await.unwrap_or_default();
    let devices_before = emulator_devices(&http, &emulator.control).await.unwrap_or_default();
    print_log_tally("paired and connected");
    eprintln!(
        "connected: VmRSS {:.1} MiB ({:.0} KiB per session over the baseline), VmHWM {:.1} MiB, {} threads, {} fds; emulator: {} online, VmRSS {:.1} MiB; events {events_before:?}",
        mib(connected_kib),
        (connected_kib as f64 - baseline_kib as f64) / n.max(1) as f64,
        mib(self_kib("VmHWM:")),
        self_kib("Threads:"),
        open_fds(),
        emulator_online(&http, &emulator.control).await.unwrap_or(0),
        mib(emulator.rss_kib()),
    );

    // Restart: graceful stop, then a new Application on the same data dir and database.
    let t = Instant::now();
    gateway.stop().await.context("the gateway stops cleanly")?;
    let stop_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "stopped all sessions in {stop_secs:.1} s; VmRSS {:.1} MiB; emulator: {} online",
        mib(self_kib("VmRSS:")),
        emulator_online(&http, &emulator.control).await.unwrap_or(0)
    );
    let t = Instant::now();
    let (gateway, _) = Gateway::start(&config).await?;
    api.base = gateway.base.clone();
    let (resumed, timeline) = wait_all_connected(&api, n, t, "resumed").await?;
    let resume_secs = t.elapsed().as_secs_f64();
    // The statuses come from the engine's events; the emulator's own count confirms them.
    let devices_after = emulator_devices(&http, &emulator.control).await.unwrap_or_default();
    let events_after = emulator_events(&http, &emulator.control).await.unwrap_or_default();
    eprintln!("{resumed}/{n} connected again {resume_secs:.1} s after Application::build; emulator events {events_after:?}");
    eprintln!(
        "  emulator: {} logged-in connections; {} linked devices (before the restart {}); {} logins during the resume",
        devices_after.online,
        devices_after.linked,
        devices_before.linked,
        devices_after.logins.saturating_sub(devices_before.logins)
    );
    if devices_after.linked != devices_before.linked {
        eprintln!("  ODD: the resume changed the number of linked devices (new pairings?)");
    }
    if let Some(peak) = timeline.windows(2).map(|w| w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0).max(1e-3)).reduce(f64::max) {
        eprintln!("  fastest resume rate between polls: {peak:.0} sessions/s");
    }
    tokio::time::sleep(SETTLE).await;
    let resumed_kib = self_kib("VmRSS:");
    let peak_kib = self_kib("VmHWM:");
    let emulator_kib = emulator.rss_kib();
    eprintln!(
        "resumed: VmRSS {:.1} MiB, VmHWM {:.1} MiB, {} threads, {} fds; emulator VmRSS {:.1} MiB",
        mib(resumed_kib),
        mib(peak_kib),
        self_kib("Threads:"),
        open_fds(),
        mib(emulator_kib)
    );

    let t = Instant::now();
    gateway.stop().await.context("the gateway stops cleanly")?;
    eprintln!("final stop in {:.1} s", t.elapsed().as_secs_f64());
    print_log_tally("end of the run");
    emulator.stop().await;
    Ok(Report {
        n,
        baseline_kib,
        connected_kib,
        connected: connected_before,
        pair_all_secs,
        stop_secs,
        resume_secs,
        resumed,
        resumed_kib,
        peak_kib,
        emulator_kib,
    })
}

/// Creates session `i`, waits for its first QR code and has the emulated phone scan it.
async fn pair_one(api: &Api, http: &reqwest::Client, control: &str, i: usize) -> anyhow::Result<()> {
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
            .json(&json!({"qr": qr, "phone": format!("1555{i:07}"), "pushName": format!("Bench {i}")}))
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

async fn current_qr(api: &Api, id: &str) -> anyhow::Result<String> {
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
async fn wait_all_connected(api: &Api, n: usize, t: Instant, what: &str) -> anyhow::Result<(usize, Vec<(f64, usize)>)> {
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

async fn emulator_online(http: &reqwest::Client, control: &str) -> anyhow::Result<usize> {
    Ok(emulator_devices(http, control).await?.online)
}

#[derive(Default)]
struct Devices {
    linked: usize,
    online: usize,
    /// Logins the emulator accepted, all devices together.
    logins: u64,
}

async fn emulator_devices(http: &reqwest::Client, control: &str) -> anyhow::Result<Devices> {
    let devices: Vec<Value> = http.get(format!("{control}/devices")).send().await?.json().await?;
    Ok(Devices {
        linked: devices.len(),
        online: devices.iter().filter(|d| d["online"] == true).count(),
        logins: devices.iter().filter_map(|d| d["logins"].as_u64()).sum(),
    })
}

/// The emulator's events, counted by type (it keeps the latest 10,000).
async fn emulator_events(http: &reqwest::Client, control: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let events: Vec<Value> = http.get(format!("{control}/events")).send().await?.json().await?;
    let mut out = BTreeMap::new();
    for e in &events {
        *out.entry(e["type"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// /proc readings.

fn proc_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn self_kib(key: &str) -> u64 {
    proc_kib("/proc/self/status", key)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Each connected session holds a socket and its SQLite key store's files; warn early when
/// the soft limit on open files cannot fit them (raise it with `ulimit -n`).
fn check_open_files(n: usize) {
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
