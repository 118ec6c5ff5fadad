//! The HTTP/1 accept loop: connection cap, header-read and idle timeouts, a graceful shutdown
//! bounded by a grace period, and the JSON error envelope for requests too malformed to reach
//! the router.
//!
//! Each connection's bytes pass through [`HeadGuard`] on their way to hyper. It parses every
//! request head itself (with `httparse`, the parser hyper uses) before hyper sees a byte of it,
//! follows the framing of the body (`Content-Length` or chunked) to find where the next head
//! starts, and never changes a byte: hyper stays the parser of record. A head that breaks a
//! rule (too many or too large headers, a URL over the limit, a control byte, a bad
//! `Content-Length` or `Transfer-Encoding`) is kept from hyper: hyper sees the end of the
//! stream, finishes the responses it owes (half-close on), and hands the socket back, and the
//! envelope is written here. Knowing where each head starts also gives the timeouts: from the
//! first byte of a head to its end (header-read timeout), and from the end of a response to the
//! first byte of the next request (idle timeout).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use wagate_api::error::{ApiError, ErrorCode};

/// Most headers in one request (hyper's own default).
pub const MAX_HEADERS: usize = 100;
/// Longest request target.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest line of chunked framing (size line with extensions, trailer).
const MAX_CHUNK_LINE: usize = 8 * 1024;

/// Connection limits (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the first byte of a request head (or the connection's opening) to its end.
    pub header_read_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a shutdown waits for open requests before closing every connection.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How often the cap's warning may repeat while the cap holds.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// requests finish for up to the grace period and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_cap_warning: Option<Instant> = None;
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_cap_warning.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait in the listen backlog until others close"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Per-connection failures (reset before accept) and running out of file
                    // descriptors: wait a moment, never spin, never stop serving.
                    if last_accept_error.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                        last_accept_error = Some(Instant::now());
                        tracing::warn!(error = %e, "accepting a connection failed");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        connections.spawn(connection(stream, router.clone(), limits, stop_rx.clone(), permit));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "shutdown grace period over: closing the remaining connections");
        connections.shutdown().await;
    }
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let shared = Arc::new(Shared::new());
    let service = {
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let router = router.clone();
            let guard = InFlight::start(Arc::clone(&shared));
            Box::pin(async move {
                // The request is in flight until its answer's body is done (a stream of events
                // may take hours), not only until the head is ready.
                let res = router.oneshot(req.map(Body::new)).await;
                res.map(|res| res.map(|body| Body::new(TrackedBody { inner: body, _in_flight: guard })))
            }) as Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        // A client that half-closes after its request still gets the answer; and the guard's
        // end of stream after a rejected head lets hyper finish the answers it owes first.
        .half_close(true)
        // The guard enforces the head's limits and times (hyper's default header count, 100,
        // equals ours, so hyper never refuses a head the guard let through).
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(HeadGuard::new(stream, Arc::clone(&shared))), service);
    let mut stopping = *stop.borrow();
    if stopping {
        Pin::new(&mut conn).graceful_shutdown();
    }
    let done = loop {
        let check_at = shared
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + limits.header_read_timeout.min(limits.idle_timeout));
        tokio::select! {
            done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break done.is_ok(),
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(check_at) => {
                if shared.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    // Idle, or a head not finished in time: just close.
                    return;
                }
            }
        }
    };
    if !done {
        return;
    }
    let guard = conn.into_parts().io.into_inner();
    if let Some(rejection) = guard.rejection {
        reject(guard.stream, rejection).await;
    }
}

/// Writes the envelope for a rejected head and closes, reading (and dropping) what the client
/// still sends for a moment so the close does not reset the connection under the answer.
async fn reject(mut stream: TcpStream, rejection: Rejection) {
    let err = ApiError::new(ErrorCode::ValidationError, rejection.message);
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    let status = rejection.status;
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(5), written).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 8192];
        let mut left = 256 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Per-connection state shared by the guard, the service and the connection task

struct Shared {
    timing: Mutex<Timing>,
}

struct Timing {
    /// When the current request head began arriving (None between heads).
    head_started: Option<Instant>,
    /// When the guard last began waiting for a head.
    waiting_since: Instant,
    /// A request body is on its way.
    in_body: bool,
    /// Requests being answered.
    in_flight: usize,
    /// When the last answer was produced.
    last_answer: Option<Instant>,
    /// Heads passed to hyper so far.
    heads: u64,
}

impl Shared {
    fn new() -> Self {
        Self {
            timing: Mutex::new(Timing {
                head_started: None,
                waiting_since: Instant::now(),
                in_body: false,
                in_flight: 0,
                last_answer: None,
                heads: 0,
            }),
        }
    }

    fn timing(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection must be closed if nothing changes; None while a request is on its
    /// way in or being answered.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let t = self.timing();
        if let Some(started) = t.head_started {
            return Some(started + limits.header_read_timeout);
        }
        if t.in_body || t.in_flight > 0 {
            return None;
        }
        let since = t.last_answer.map_or(t.waiting_since, |a| a.max(t.waiting_since));
        // A fresh connection must send its first request within the header-read timeout.
        Some(since + if t.heads == 0 { limits.header_read_timeout } else { limits.idle_timeout })
    }
}

/// Counts a request as being answered until dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: Arc<Shared>) -> Self {
        shared.timing().in_flight += 1;
        Self(shared)
    }
}

/// An answer's body that keeps its request counted as in flight until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut t = self.0.timing();
        t.in_flight = t.in_flight.saturating_sub(1);
        t.last_answer = Some(Instant::now());
    }
}

// ---------------------------------------------------------------------------------------------
// The head guard

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

/// Where the guard is in the byte stream (just after the bytes it has already let through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// Framing the guard does not follow (hyper will end the connection): pass everything.
    Opaque,
}

/// The connection's byte stream on its way to hyper; see the module documentation.
struct HeadGuard {
    stream: TcpStream,
    /// Bytes read from the socket and not yet handed to hyper.
    buf: Vec<u8>,
    /// How many bytes at the front of `buf` are checked and may go to hyper.
    pass: usize,
    framing: Framing,
    rejection: Option<Rejection>,
    eof: bool,
    shared: Arc<Shared>,
}

impl HeadGuard {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Self { stream, buf: Vec::with_capacity(4096), pass: 0, framing: Framing::Head, rejection: None, eof: false, shared }
    }

    /// Checks as much of the unchecked bytes as possible, growing `pass`.
    fn advance(&mut self) {
        loop {
            let unchecked = &self.buf[self.pass..];
            if unchecked.is_empty() {
                return;
            }
            match self.framing {
                Framing::Opaque => {
                    self.pass = self.buf.len();
                    return;
                }
                Framing::Head => {
                    {
                        let mut t = self.shared.timing();
                        if t.head_started.is_none() {
                            t.head_started = Some(Instant::now());
                        }
                    }
                    match check_head(unchecked) {
                        Ok(None) => return,
                        Ok(Some((len, next))) => {
                            self.pass += len;
                            self.enter(next);
                            let mut t = self.shared.timing();
                            t.head_started = None;
                            t.heads += 1;
                        }
                        Err(rejection) => {
                            self.rejection = Some(rejection);
                            return;
                        }
                    }
                }
                Framing::Body(left) => {
                    let n = (unchecked.len() as u64).min(left);
                    self.pass += n as usize;
                    self.enter(if n == left { Framing::Head } else { Framing::Body(left - n) });
                }
                Framing::ChunkData(left) => {
                    let n = (unchecked.len() as u64).min(left);
                    self.pass += n as usize;
                    self.framing = if n == left { Framing::ChunkDataEnd } else { Framing::ChunkData(left - n) };
                }
                Framing::ChunkSize | Framing::ChunkDataEnd | Framing::Trailers => {
                    let Some(end) = unchecked.iter().position(|&b| b == b'\n') else {
                        if unchecked.len() > MAX_CHUNK_LINE {
                            self.framing = Framing::Opaque;
                        }
                        return;
                    };
                    let line = trim_line(&unchecked[..end]);
                    let next = match self.framing {
                        Framing::ChunkSize => match chunk_size(line) {
                            Some(0) => Framing::Trailers,
                            Some(n) => Framing::ChunkData(n),
                            None => Framing::Opaque,
                        },
                        Framing::ChunkDataEnd if line.is_empty() => Framing::ChunkSize,
                        Framing::Trailers if line.is_empty() => Framing::Head,
                        Framing::Trailers => Framing::Trailers,
                        _ => Framing::Opaque,
                    };
                    self.pass += end + 1;
                    self.enter(next);
                }
            }
        }
    }

    fn enter(&mut self, next: Framing) {
        self.framing = next;
        let mut t = self.shared.timing();
        t.in_body = !matches!(next, Framing::Head);
        if next == Framing::Head {
            t.waiting_since = Instant::now();
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The size of a chunk-size line (`1a;ext=x`), None when it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = &line[digits..];
    if !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

/// Checks one request head at the start of `bytes`: `Ok(None)` when incomplete, else its
/// length and the framing of its body.
fn check_head(bytes: &[u8]) -> Result<Option<(usize, Framing)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            let line_done = bytes.contains(&b'\n');
            if !line_done && bytes.len() > MAX_URI_BYTES + 64 {
                return Err(uri_too_long());
            }
            if bytes.len() > MAX_HEAD_BYTES {
                return Err(head_too_large());
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                message: format!("too many headers (at most {MAX_HEADERS})"),
            });
        }
        Err(e) => {
            if bytes.len() > MAX_URI_BYTES + 64 && !bytes.contains(&b'\n') {
                return Err(uri_too_long());
            }
            return Err(Rejection::bad(match e {
                httparse::Error::HeaderName => "invalid header name",
                httparse::Error::HeaderValue => "invalid header value (control characters are not allowed)",
                httparse::Error::Version => "unsupported HTTP version (use HTTP/1.1)",
                httparse::Error::Token => "invalid request line",
                _ => "malformed request",
            }));
        }
    };
    if len > MAX_HEAD_BYTES {
        return Err(head_too_large());
    }
    let path = req.path.unwrap_or_default();
    if path.len() > MAX_URI_BYTES {
        return Err(uri_too_long());
    }
    if axum::http::Uri::try_from(path).is_err() {
        return Err(Rejection::bad("invalid request target"));
    }
    let http11 = req.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            let n = (!value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Rejection::bad("invalid Content-Length (digits only)"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(Rejection::bad("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let framing = match (chunked, content_length) {
        (Some(_), _) if !http11 => return Err(Rejection::bad("Transfer-Encoding needs HTTP/1.1")),
        (Some(_), Some(_)) => return Err(Rejection::bad("both Transfer-Encoding and Content-Length")),
        (Some(false), None) => return Err(Rejection::bad("unsupported Transfer-Encoding (only chunked)")),
        (Some(true), None) => Framing::ChunkSize,
        (None, Some(0) | None) => Framing::Head,
        (None, Some(n)) => Framing::Body(n),
    };
    Ok(Some((len, framing)))
}

fn uri_too_long() -> Rejection {
    Rejection { status: StatusCode::URI_TOO_LONG, message: format!("the URL is too long (at most {MAX_URI_BYTES} bytes)") }
}

fn head_too_large() -> Rejection {
    Rejection {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        message: format!("the request headers are too large (at most {MAX_HEAD_BYTES} bytes)"),
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.pass > 0 {
                let n = this.pass.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.drain(..n);
                this.pass -= n;
                return Poll::Ready(Ok(()));
            }
            if this.rejection.is_some() || this.eof {
                // The end of the stream for hyper: after a refused head nothing more goes through.
                return Poll::Ready(Ok(()));
            }
            this.advance();
            if this.pass > 0 || this.rejection.is_some() {
                continue;
            }
            // More bytes are needed.
            let len = this.buf.len();
            this.buf.resize(len + 8192, 0);
            let mut read = ReadBuf::new(&mut this.buf[len..]);
            let polled = Pin::new(&mut this.stream).poll_read(cx, &mut read);
            let got = read.filled().len();
            this.buf.truncate(len + got);
            ready!(polled)?;
            if got == 0 {
                this.eof = true;
                // A partial head at the end of the stream goes nowhere; a partial body is
                // hyper's to notice.
                if this.framing != Framing::Head {
                    this.pass = this.buf.len();
                }
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_their_framing() {
        assert_eq!(check_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(check_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), Ok(Some((27, Framing::Head))));
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(check_head(post), Ok(Some((post.len(), Framing::Body(5)))));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(check_head(chunked), Ok(Some((chunked.len(), Framing::ChunkSize))));
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
        ] {
            assert_eq!(check_head(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES + 200));
        assert_eq!(check_head(long.as_bytes()).unwrap_err().status, StatusCode::URI_TOO_LONG);
        assert_eq!(check_head(&long.as_bytes()[..MAX_URI_BYTES + 100]).unwrap_err().status, StatusCode::URI_TOO_LONG);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(check_head(many.as_bytes()).unwrap_err().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0;ext=1"), Some(0));
        assert_eq!(chunk_size(b"zz"), None);
        assert_eq!(chunk_size(b"1x"), None);
    }
}
