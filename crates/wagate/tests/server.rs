//! The real `wagate` binary as a process: one owner per data store, connection limits and
//! timeouts, graceful shutdown, and the error envelope for protocol errors (raw TCP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wagate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wagate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WAGATE_DATA_DIR", dir)
        .env("WAGATE_LOG_FORMAT", "json");
    cmd
}

/// A running `wagate serve`, its stderr collected line by line.
struct Server {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The bootstrap key, when this start created it.
    key: Option<String>,
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `secs`.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Starts `wagate serve` with `args` and waits until it listens.
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("wagate starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let logs = Arc::clone(&logs);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let key = Arc::new(Mutex::new(None));
        std::thread::spawn({
            let key = Arc::clone(&key);
            move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("wag_") {
                        *key.lock().unwrap() = Some(line);
                    }
                }
            }
        });
        let mut addr = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wagate exited ({status}): {}", logs.lock().unwrap().join("\n"));
            }
            assert!(Instant::now() < deadline, "wagate did not start: {}", logs.lock().unwrap().join("\n"));
            addr = logs.lock().unwrap().iter().find(|l| l.contains("wagate listening")).map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["fields"]["addr"].as_str().unwrap().parse().unwrap()
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        // The bootstrap key is printed before the listener starts.
        let key = key.lock().unwrap().clone();
        Server { child, addr: addr.unwrap(), logs, key }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends `raw` on a new connection and reads until the server closes it.
    fn exchange(&self, raw: &[u8]) -> String {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_all(&mut s)
    }

    fn healthz(&self) -> String {
        self.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    }

    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let mut status = None;
        wait_until(30, "exit after SIGTERM", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        (status.unwrap(), started.elapsed())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until EOF (or the read timeout, or a reset), returning what arrived.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(dir: &Path) -> Command {
    let mut cmd = wagate(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    cmd
}

/// Runs a second `serve` that must refuse to start; returns its stderr.
fn refused(mut cmd: Command) -> String {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a second gateway must not start: {err}");
    err
}

// ---------------------------------------------------------------------------------------------
// One owner per data store

#[test]
fn a_second_gateway_on_one_data_directory_is_refused_and_kill_9_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(serve(dir.path()));

    let err = refused(serve(dir.path()));
    let line = err.lines().find(|l| l.starts_with("wagate: ")).unwrap_or_else(|| panic!("one error line: {err}"));
    assert!(line.contains("is in use by another wagate process"), "{line}");
    assert!(line.contains(&format!("(pid {})", first.child.id())), "{line}");
    assert!(first.healthz().starts_with("HTTP/1.1 200"), "the first keeps serving");

    // Short-lived CLI writers do not need the lock.
    let out = wagate(dir.path())
        .args(["keys", "create", "--org", "acme", "--name", "ci", "--capabilities", "read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    first.child.kill().unwrap(); // SIGKILL: no cleanup runs
    first.child.wait().unwrap();
    let mut next = Server::start(serve(dir.path()));
    assert!(next.healthz().starts_with("HTTP/1.1 200"));
    let (status, _) = next.terminate();
    assert!(status.success(), "{}", next.logs());
    // A clean stop releases it too.
    let mut again = Server::start(serve(dir.path()));
    again.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_on_one_postgres_database_is_refused() {
    let Some(admin) = wagate_store::testing::postgres_url_from_env() else {
        eprintln!("skipped: {} not set", wagate_store::testing::POSTGRES_URL_ENV);
        return;
    };
    let (url, _guard) = wagate_store::testing::fresh_postgres(&admin).await.unwrap();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let on_pg = |dir: &Path| {
            let mut cmd = serve(dir);
            cmd.env("WAGATE_DATABASE_URL", &url2);
            cmd
        };
        let mut first = Server::start(on_pg(dir1.path()));
        // Another data directory, the same database: the advisory lock refuses it.
        let err = refused(on_pg(dir2.path()));
        let line = err.lines().find(|l| l.starts_with("wagate: ")).unwrap_or_else(|| panic!("one error line: {err}"));
        assert!(line.contains("in use by another wagate gateway"), "{line}");
        assert!(!line.contains("postgres://"), "no URL (and no password) in the message: {line}");
        assert!(first.healthz().starts_with("HTTP/1.1 200"), "the first keeps serving");

        first.child.kill().unwrap();
        first.child.wait().unwrap();
        // PostgreSQL ends the killed gateway's session (and its lock) when the socket closes.
        let mut next = Server::start(on_pg(dir2.path()));
        let (status, _) = next.terminate();
        assert!(status.success(), "{}", next.logs());
    })
    .await
    .unwrap();
    let _ = url;
}
