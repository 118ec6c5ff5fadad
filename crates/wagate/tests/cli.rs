//! The `wagate` binary itself: `keys`, `openapi`, and `serve` with its bootstrap key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wagate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wagate"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("WAGATE_DATA_DIR", dir);
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("wagate runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn keys_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(wagate(dir.path()).args(["keys", "create", "--org", "acme", "--name", "ci-bot", "--capabilities", "send,read", "--expires-in", "30d"]));
    assert!(ok, "{err}");
    let key = out.lines().last().unwrap();
    assert!(key.starts_with("wag_") && key.len() == 40, "the key alone on the last line: {out}");
    assert!(wagate_auth::apikey::parse(key).is_ok());
    assert!(!err.contains(key), "the key is not logged");

    let (ok, out, _) = run(wagate(dir.path()).args(["keys", "list", "--org", "acme"]));
    assert!(ok);
    assert!(out.contains("ci-bot") && out.contains("send,read") && out.contains("active"), "{out}");
    assert!(!out.contains(key), "list never shows secrets");
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(id.starts_with("key_"));

    let (ok, out, _) = run(wagate(dir.path()).args(["keys", "revoke", &id]));
    assert!(ok, "{out}");
    let (_, out, _) = run(wagate(dir.path()).args(["keys", "list", "--org", "acme"]));
    assert!(out.contains("revoked"), "{out}");

    let (ok, _, err) = run(wagate(dir.path()).args(["keys", "create", "--org", "acme", "--name", "x", "--capabilities", "root"]));
    assert!(!ok && err.contains("root"), "{err}");
    let (ok, _, err) = run(wagate(dir.path()).args(["keys", "revoke", "key_01J9Z3QK8M0000000000000000"]));
    assert!(!ok && err.contains("no key"), "{err}");
}

#[test]
fn openapi_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(wagate(dir.path()).arg("openapi"));
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["paths"]["/api/v1/sessions"].is_object());
}

#[test]
fn serve_prints_the_bootstrap_key_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    for first in [true, false] {
        let mut child = wagate(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("WAGATE_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut listening = false;
        for line in stderr.by_ref() {
            let line = line.unwrap();
            if line.contains("wagate listening") {
                listening = true;
                break;
            }
            assert!(Instant::now() < deadline, "serve did not start");
        }
        assert!(listening);
        // Keep reading so the child never writes into a closed pipe.
        let drain = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        let logs = drain.join().unwrap();
        assert!(out.status.success(), "graceful exit on SIGTERM: {:?}\n{logs}", out.status);
        assert!(logs.contains("stopped"), "{logs}");
        assert!(!logs.contains("wag_"), "the key is never logged: {logs}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if first {
            let key = stdout.lines().last().unwrap_or_default();
            assert!(key.starts_with("wag_"), "bootstrap key printed on the first start: {stdout}");
        } else {
            assert!(!stdout.contains("wag_"), "printed only once: {stdout}");
        }
    }
    assert!(dir.path().join("wagate.db").exists(), "SQLite in the data directory");
}
