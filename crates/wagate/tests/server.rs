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

// ---------------------------------------------------------------------------------------------
// Connection limits, timeouts, graceful shutdown

/// `serve` with connection settings, under a file-descriptor limit of `nofile` when given.
fn serve_with(dir: &Path, nofile: Option<u32>, settings: &[(&str, &str)]) -> Command {
    let bin = env!("CARGO_BIN_EXE_wagate");
    let mut cmd = match nofile {
        Some(n) => {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WAGATE_DATA_DIR", dir)
        .env("WAGATE_LOG_FORMAT", "json")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    for (k, v) in settings {
        cmd.env(k, v);
    }
    cmd
}

/// Reads one response (head and `Content-Length` body) from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
}

/// Waits (bounded by the socket's read timeout) for the server to close `s`; the time it took.
fn closed_after(s: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("not closed after {:?}: {e}", started.elapsed()),
        }
    }
}

#[test]
fn idle_sockets_are_closed_and_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    // Fewer descriptors than idle sockets: without timeouts the gateway could accept no more.
    let server = Server::start(serve_with(
        dir.path(),
        Some(128),
        &[("WAGATE_HEADER_READ_TIMEOUT", "1"), ("WAGATE_IDLE_TIMEOUT", "1")],
    ));
    let mut idle: Vec<TcpStream> = (0..200).map(|_| server.connect()).collect();
    let mut answered = String::new();
    wait_until(30, "/healthz answers despite 200 idle sockets", || {
        answered = server.healthz();
        answered.starts_with("HTTP/1.1 200")
    });
    // The idle sockets were closed by the server (after the header-read timeout).
    for s in idle.iter_mut().take(5) {
        closed_after(s);
    }

    // A kept-alive connection is closed after the idle timeout once its answer is out.
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"), "kept alive");
    let took = closed_after(&mut s);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "idle close after {took:?}");
}

#[test]
fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_with(dir.path(), None, &[("WAGATE_HEADER_READ_TIMEOUT", "1")]));
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap();
    let took = closed_after(&mut s);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");
    assert!(server.healthz().starts_with("HTTP/1.1 200"));
}

#[test]
fn sigterm_with_a_half_sent_request_open_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(serve_with(
        dir.path(),
        None,
        &[("WAGATE_HEADER_READ_TIMEOUT", "120"), ("WAGATE_IDLE_TIMEOUT", "120"), ("WAGATE_SHUTDOWN_GRACE", "2")],
    ));
    let mut half = server.connect();
    half.write_all(b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Le").unwrap();
    let mut body = server.connect();
    body.write_all(b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{").unwrap();
    let _idle = server.connect();
    let (status, took) = server.terminate();
    assert!(status.success(), "{}", server.logs());
    assert!(took < Duration::from_secs(6), "exited after {took:?} (grace 2 s)");
}

#[test]
fn the_connection_cap_is_logged_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_with(
        dir.path(),
        None,
        &[("WAGATE_MAX_CONNECTIONS", "4"), ("WAGATE_HEADER_READ_TIMEOUT", "120"), ("WAGATE_IDLE_TIMEOUT", "120")],
    ));
    let held: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
    wait_until(20, "the cap's log line", || server.logs().contains("connection limit reached"));
    assert!(server.logs().contains("\"max_connections\":4"), "{}", server.logs());
    let addr = server.addr;
    let waiting = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        read_all(&mut s)
    });
    drop(held);
    let answer = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "served once sockets closed: {answer:?}");
}

// ---------------------------------------------------------------------------------------------
// The envelope for protocol errors

/// The status line and the parsed envelope of a response.
fn envelope(response: &str) -> (String, serde_json::Value) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("a response: {response:?}"));
    let status = head.lines().next().unwrap().to_owned();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {response:?}"));
    assert!(body["error"]["message"].is_string() && body["error"]["details"].is_object(), "{body}");
    (status, body)
}

#[test]
fn protocol_errors_get_the_envelope_on_every_request_of_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path()));
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n", "X-Filler: 1\r\n".repeat(150));
    let long_url = format!("GET /healthz?{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(100 * 1024));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (many_headers.into_bytes(), "HTTP/1.1 431"),
        (long_url.into_bytes(), "HTTP/1.1 414"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(), "HTTP/1.1 400"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n".to_vec(), "HTTP/1.1 400"),
    ];
    for (raw, want) in &cases {
        let (status, body) = envelope(&server.exchange(raw));
        assert!(status.starts_with(want), "{status} for {:?}", String::from_utf8_lossy(&raw[..raw.len().min(80)]));
        assert_eq!(body["error"]["code"], "validation_error", "{body}");
    }
    // Not only the first request of a connection: a good one, a body, then a bad head.
    let mut s = server.connect();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    s.write_all(b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 405"));
    s.write_all(b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nGET GET /healthz HTTP/1.1\r\nHost: t\r\nX-Bad: \x01\r\n\r\n").unwrap();
    let rest = read_all(&mut s);
    let second = rest.find("HTTP/1.1 400").unwrap_or_else(|| panic!("the envelope for the bad head: {rest:?}"));
    assert!(rest.starts_with("HTTP/1.1 405"), "{rest:?}");
    let (_, body) = envelope(&rest[second..]);
    assert_eq!(body["error"]["code"], "validation_error");
    assert!(server.healthz().starts_with("HTTP/1.1 200"));
}

#[test]
fn a_declared_body_over_the_limit_is_refused_at_once_without_100_continue() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path()));
    let key = server.key.clone().expect("the bootstrap key");
    let raw = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n\r\n"
    );
    let mut s = server.connect();
    s.write_all(raw.as_bytes()).unwrap();
    let answer = read_all(&mut s);
    assert!(!answer.contains("100 Continue"), "the body is never asked for: {answer:?}");
    let (status, body) = envelope(&answer);
    assert!(status.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(answer.to_ascii_lowercase().contains("\r\nx-request-id: "), "like every answer, it names its request: {answer:?}");
    // Without Expect too, and before anything is read.
    let raw = format!("POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\nContent-Length: 10000000\r\n\r\n{{");
    let (status, _) = envelope(&server.exchange(raw.as_bytes()));
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
}

// ---------------------------------------------------------------------------------------------
// Keys changed by the CLI, another process, while the gateway runs (and caches keys)

/// The status line of an authenticated `GET /api/v1/sessions` on the keep-alive connection `s`.
fn list_sessions_status(s: &mut TcpStream, key: &str) -> String {
    let request = format!("GET /api/v1/sessions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    read_response(s).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_key_revoked_from_the_cli_is_refused_by_the_very_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve(dir.path()));
    let cli = |args: &[&str]| {
        let out = wagate(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A key created by the CLI works at once, on a connection that already served requests.
    let mut s = server.connect();
    let bootstrap = server.key.clone().expect("bootstrap key");
    assert!(list_sessions_status(&mut s, &bootstrap).contains(" 200 "));
    let created = cli(&["keys", "create", "--org", "default", "--name", "ci", "--capabilities", "read"]);
    let key = created.lines().last().unwrap().to_owned();
    for _ in 0..20 {
        assert!(list_sessions_status(&mut s, &key).contains(" 200 "), "{}", server.logs());
    }
    let listed = cli(&["keys", "list", "--org", "default"]);
    let id = listed.lines().find(|l| l.contains(" ci ")).unwrap().split_whitespace().next().unwrap().to_owned();
    // Revoked from the CLI: the very next request on the same connection is refused, and the
    // other keys keep working.
    cli(&["keys", "revoke", &id]);
    assert!(list_sessions_status(&mut s, &key).contains(" 401 "));
    assert!(list_sessions_status(&mut s, &key).contains(" 401 "));
    assert!(list_sessions_status(&mut s, &bootstrap).contains(" 200 "));
}
