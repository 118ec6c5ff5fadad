//! The certificate switch of the tests never reaches users.
//!
//! The tests build `whatsapp-rust` with `danger-skip-cert-chain-verify` (a dev-dependency) so
//! the real engine accepts the emulator's self-rooted Noise certificate. A release binary
//! built by the README's command must refuse it. `.ci/run` builds that binary and names it in
//! `WAGATE_RELEASE_BINARY`; without it this test says it was skipped.
//!
//! As a control, the test build of the same binary (which has the switch) is run against the
//! same emulator and does get past the handshake, so the check cannot pass vacuously.

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

/// Creates a `whatsapp` session and returns its state once it settled into trying or pairing.
async fn session_outcome(gw: &Gateway) -> Value {
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/api/v1/sessions", gw.base))
        .bearer_auth(&gw.key)
        .json(&json!({"name": "release-check"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("session created").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value = client
            .get(format!("{}/api/v1/sessions/{id}", gw.base))
            .bearer_auth(&gw.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ["reconnecting", "awaiting_pairing", "failed"].contains(&s["status"].as_str().unwrap_or_default()) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session never settled: {s}");
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

    // Control: the test build has the switch and pairs (the emulator offers it QR refs).
    let test_build = serve(Path::new(env!("CARGO_BIN_EXE_wagate")), &emulator.ws_url());
    let s = session_outcome(&test_build).await;
    assert_eq!(s["status"], "awaiting_pairing", "the test build accepts the emulator: {s}");
    assert_eq!(registrations(&emulator), 1);
    drop(test_build);

    // The release build refuses the certificate and never gets past the handshake.
    let release = serve(Path::new(&release), &emulator.ws_url());
    let s = session_outcome(&release).await;
    assert_eq!(s["status"], "reconnecting", "the release build must refuse the emulator: {s}");
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
}
