//! Cross-cutting layers: request ids, metrics, and the error envelope for answers produced
//! outside our handlers (unknown routes, wrong methods, body limits, timeouts, panics).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::{ApiError, ErrorCode};
use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// The longest client-sent request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `x-request-id` is kept: 1 to 64 characters of `[A-Za-z0-9._-]`, so it
/// can neither inject log fields nor bloat logs.
pub fn acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// Drops a client's `x-request-id` unless it is exactly one acceptable id; a new one is then
/// generated (runs before `SetRequestIdLayer`).
pub async fn sanitize_request_id(mut req: Request) -> Request {
    let mut ids = req.headers().get_all("x-request-id").iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => acceptable_request_id(id.as_bytes()),
        (None, _) => true,
        _ => false,
    };
    if !keep {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// Request ids are ULIDs (sortable, unique), unless the client sent an acceptable `x-request-id`.
#[derive(Clone, Copy, Default)]
pub struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string()).ok().map(RequestId::new)
    }
}

pub async fn record_metrics(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    metrics.http_requests.get_or_create(&HttpLabels { method, route: route.clone(), status: res.status().as_u16() }).inc();
    metrics.http_duration.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    res
}

/// Gives every error answer that is not already JSON the documented envelope, keeping
/// headers such as `Allow` and `Retry-After`.
pub async fn envelope_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let code = ErrorCode::for_status(status);
    let message = match status {
        StatusCode::NOT_FOUND => "route not found",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "request timed out",
        s if s.is_client_error() => "bad request",
        _ => "internal error",
    };
    let mut err = ApiError::new(code, message);
    if let Some(allow) = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) {
        err = err.with_detail("allow", allow);
    }
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A panic in a handler becomes a plain 500 (the envelope layer fills the body).
pub fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

/// Answers 413 at once when the declared `Content-Length` is over `limit`, before anything
/// reads the body (so no `100 Continue` is ever sent for it).
pub async fn refuse_declared_oversize(State(limits): State<crate::HttpLimits>, req: Request, next: Next) -> Response {
    let limit = if crate::takes_media(req.method(), req.uri().path()) { limits.media_body_bytes } else { limits.body_bytes };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let mut res = ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            .with_detail("limit", limit)
            .into_response();
        // The body stays unread: do not keep the connection for a next request.
        res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_request_ids_are_kept() {
        assert!(acceptable_request_id(b"abc-123_X.y"));
        assert!(acceptable_request_id(&[b'a'; 64]));
        assert!(!acceptable_request_id(&[b'a'; 65]));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(b"a b"));
        assert!(!acceptable_request_id(b"a\" level=error"));
        assert!(!acceptable_request_id("é".as_bytes()));
    }
}
