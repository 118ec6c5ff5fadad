//! The certificate switch of the tests never reaches users.
//!
//! The tests build `whatsapp-rust` with `danger-skip-cert-chain-verify` (a dev-dependency) so
//! the real engine accepts the emulator's self-rooted Noise certificate. A release binary
//! built by the README's command must refuse it. `.ci/run` builds that binary and names it in
//! `WAGATE_RELEASE_BINARY`; without it this test says it was skipped.
//!
//! As a control, the test build of the same binary (which has the switch) is run against the
//! same emulator and does get past the handshake, so the check cannot pass vacuously.
//!
//! The same goes for the media seam of the tests (`wagate-whatsapp`'s `test-media-seam`:
//! media for loopback hosts over plain HTTP): the test build announces it in its log, the
//! release binary neither logs it nor contains its text.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wa_emulator::{Emulator, EmulatorConfig, ServerEvent};

struct Gateway {
    child: Child,
    base: String,
    key: String,
    /// Its log lines (stderr) so far.
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve` against the emulator; returns once it listens, with its bootstrap key.
fn serve(binary: &Path, ws_url: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WAGATE_DATA_DIR", dir.path())
        .env("WAGATE_LISTEN", "127.0.0.1:0")
        .env("WAGATE_LOG_FORMAT", "json")
        .env("WAGATE_WA_URL", ws_url)
        .env("WAGATE_WA_VERSION", "2.3000.1027934701")
        .env("WAGATE_WA_CONNECT_TIMEOUT", "5")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx2.send((true, l)))));
    std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx.send((false, l)))));
    let (mut key, mut addr) = (None, None);
    let logs = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while key.is_none() || addr.is_none() {
        let (stdout, line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("wagate starts");
        if !stdout {
            logs.lock().unwrap().push(line.clone());
        }
        if stdout && line.starts_with("wag_") {
            key = Some(line);
        } else if !stdout && line.contains("wagate listening") {
            let log: Value = serde_json::from_str(&line).unwrap();
            addr = log["fields"]["addr"].as_str().map(str::to_owned);
        }
    }
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || rx.into_iter().for_each(|(_, line)| sink.lock().unwrap().push(line)));
    Gateway { child, base: format!("http://{}", addr.unwrap()), key: key.unwrap(), logs, _dir: dir }
}

/// Creates a `whatsapp` session; returns its id.
async fn create_session(gw: &Gateway) -> String {
    let created = call(gw, reqwest::Method::POST, "/api/v1/sessions", Some(json!({"name": "release-check"}))).await.1;
    created["id"].as_str().expect("session created").to_owned()
}

async fn call(gw: &Gateway, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", gw.base)).bearer_auth(&gw.key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let answer = req.send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` until `pred(status, body)` holds; panics after a minute.
async fn wait_until(gw: &Gateway, path: &str, what: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(gw, reqwest::Method::GET, path, None).await;
        if pred(status, &body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: never happened; last answer {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn registrations(emulator: &Emulator) -> usize {
    emulator.events().iter().filter(|e| matches!(e, ServerEvent::Registration { .. })).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_binary_refuses_the_emulator_certificate() {
    let Some(release) = std::env::var_os("WAGATE_RELEASE_BINARY") else {
        eprintln!("skipped: WAGATE_RELEASE_BINARY not set (.ci/run builds the release binary and sets it)");
        return;
    };
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();

    // Control: the test build has the switch, completes the handshake and shows a QR code.
    let test_build = serve(Path::new(env!("CARGO_BIN_EXE_wagate")), &emulator.ws_url());
    let id = create_session(&test_build).await;
    wait_until(&test_build, &format!("/api/v1/sessions/{id}/qr"), "a QR code from the test build", |status, _| status == 200).await;
    assert_eq!(registrations(&emulator), 1);
    let announcement = wagate_whatsapp::media_seam::ANNOUNCEMENT;
    assert!(
        test_build.logs.lock().unwrap().iter().any(|l| l.contains(announcement)),
        "the test build announces its media seam"
    );
    drop(test_build);

    // The release build refuses the certificate and never gets past the handshake.
    let release_path = std::path::PathBuf::from(&release);
    let release = serve(&release_path, &emulator.ws_url());
    let id = create_session(&release).await;
    let s = wait_until(&release, &format!("/api/v1/sessions/{id}"), "reconnecting", |_, s| s["status"] == "reconnecting").await;
    assert_eq!(s["statusReason"], "WhatsApp handshake failed", "{s}");
    let (status, _) = call(&release, reqwest::Method::GET, &format!("/api/v1/sessions/{id}/qr"), None).await;
    assert_ne!(status, 200, "no QR code from a refused server");
    // Refused for the certificate: the client logs why its handshake failed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = release.logs.lock().unwrap().clone();
        if logs.iter().any(|l| l.contains("server cert") && l.contains("signature")) {
            break;
        }
        assert!(Instant::now() < deadline, "no certificate error in the release build's logs:\n{}", logs.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(registrations(&emulator), 1, "no handshake of the release build completed");

    // No media seam: not announced, and its text is nowhere in the binary.
    let logs = release.logs.lock().unwrap().clone();
    assert!(!logs.iter().any(|l| l.contains(announcement)), "the release build has the media seam:\n{}", logs.join("\n"));
    let bytes = std::fs::read(&release_path).unwrap();
    assert!(
        !bytes.windows(announcement.len()).any(|w| w == announcement.as_bytes()),
        "the release binary contains the media seam's text"
    );
}
