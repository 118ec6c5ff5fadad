//! Test builds only (feature `test-media-seam`, switched on by the dev-dependencies of the
//! crates whose tests run the WhatsApp emulator): media for a **loopback** host goes over plain
//! HTTP.
//!
//! The client fixes the media scheme to `https://` and takes its hosts from the server's
//! `<media_conn>`; the emulator names its own blob host, `127.0.0.1:PORT`, which speaks plain
//! HTTP. WhatsApp's media hosts are never loopback, so this changes nothing but the emulator's
//! traffic, and like `danger-skip-cert-chain-verify` it never reaches the release binary:
//! `cargo build --release --bin wagate` builds no dev-dependency, and `tests/release.rs` checks
//! that binary does not announce this seam ([`ANNOUNCEMENT`]) while the test build does.

use anyhow::Result;
use async_trait::async_trait;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse, UreqHttpClient};
use whatsapp_rust::wacore::net::{StreamingHttpResponse, UploadBody};

/// Logged once when an engine with this seam starts.
pub const ANNOUNCEMENT: &str = "test build: media for loopback hosts goes over plain HTTP (test-media-seam)";

/// The crate's HTTP client, with `https://` to a loopback host rewritten to `http://`.
pub(crate) struct LoopbackPlainHttp(UreqHttpClient);

impl LoopbackPlainHttp {
    pub fn new() -> Self {
        Self(UreqHttpClient::new())
    }
}

/// `https://127.0.0.1:PORT/...` (or `localhost`, `[::1]`) → `http://...`; anything else as is.
fn rewrite(mut request: HttpRequest) -> HttpRequest {
    if let Some(rest) = request.url.strip_prefix("https://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback {
            request.url = format!("http://{rest}");
        }
    }
    request
}

#[async_trait]
impl HttpClient for LoopbackPlainHttp {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse> {
        self.0.execute(rewrite(request)).await
    }

    fn supports_streaming(&self) -> bool {
        self.0.supports_streaming()
    }

    fn execute_streaming(&self, request: HttpRequest) -> Result<StreamingHttpResponse> {
        self.0.execute_streaming(rewrite(request))
    }

    fn supports_upload_streaming(&self) -> bool {
        self.0.supports_upload_streaming()
    }

    fn execute_upload(&self, request: HttpRequest, body: UploadBody, content_length: u64) -> Result<HttpResponse> {
        self.0.execute_upload(rewrite(request), body, content_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> String {
        rewrite(HttpRequest::get(u)).url
    }

    #[test]
    fn only_loopback_hosts_lose_tls() {
        assert_eq!(url("https://127.0.0.1:4321/mms/image/x?auth=a"), "http://127.0.0.1:4321/mms/image/x?auth=a");
        assert_eq!(url("https://localhost:80/v/t62/abc"), "http://localhost:80/v/t62/abc");
        assert_eq!(url("https://[::1]:9/x"), "http://[::1]:9/x");
        assert_eq!(url("https://mmg.whatsapp.net/v/t62/abc"), "https://mmg.whatsapp.net/v/t62/abc");
        assert_eq!(url("https://10.0.0.1:443/x"), "https://10.0.0.1:443/x");
        assert_eq!(url("https://127.0.0.1.example.com/x"), "https://127.0.0.1.example.com/x");
    }
}
