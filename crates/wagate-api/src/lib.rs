//! The HTTP API of wagate.
//!
//! One module per resource, each handler parses its input into domain types, checks the
//! capability it needs, and works only inside the caller's organization. Errors are
//! [`error::ApiError`], rendered as the documented envelope.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use axum::routing::{any, get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub mod custom;
pub mod error;
pub mod events;
pub mod extract;
pub mod messages;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod qr;
pub mod sandbox;
pub mod sessions;
pub mod state;
pub mod wawp;
pub mod webhooks;

/// The metrics live in the runtime, so that background workers count without this crate.
pub use wagate_runtime::metrics;
pub use metrics::Metrics;
pub use state::AppState;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest accepted request body (64 KiB by default) except on the routes that take media.
    pub body_bytes: usize,
    /// Largest body of a send or `sandbox:receive`, which may carry media in base64.
    pub media_body_bytes: usize,
    /// Longest a request may take before it is answered 504 `timeout`.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::with_media(wagate_runtime::messages::DEFAULT_MEDIA_MAX_BYTES)
    }
}

impl HttpLimits {
    /// The default limits, with bodies that carry up to `media_max_bytes` of media (in base64,
    /// plus the rest of the request) on the routes that take media.
    pub fn with_media(media_max_bytes: usize) -> Self {
        Self {
            body_bytes: 64 * 1024,
            media_body_bytes: media_max_bytes.saturating_add(2) / 3 * 4 + 64 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a request may carry media (a send, or a message arriving in the sandbox).
pub(crate) fn takes_media(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path.starts_with("/api/v1/sessions/")
        && (path.ends_with("/messages") || path.ends_with("/sandbox:receive"))
}

/// The whole HTTP application.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let api = Router::new()
        .route("/api/v1/sessions", post(sessions::create).get(sessions::list))
        .route("/api/v1/sessions/{segment}", any(sessions::segment))
        .route("/api/v1/sessions/{session}/qr", get(sessions::qr))
        .route("/api/v1/sessions/{session}/me", get(sessions::me))
        .route(
            "/api/v1/sessions/{session}/messages",
            post(messages::send).layer(DefaultBodyLimit::max(limits.media_body_bytes)).get(messages::list),
        )
        .route("/api/v1/sessions/{session}/messages/{segment}", any(messages::message_segment))
        .route("/api/v1/sessions/{session}/messages/{message}/media", get(messages::media))
        .route("/api/v1/sessions/{session}/chats", get(messages::chats))
        .route("/api/v1/sessions/{session}/chats/{segment}", any(messages::chat_segment))
        .route("/api/v1/sessions/{session}/{action}", any(sandbox::dispatch).layer(DefaultBodyLimit::max(limits.media_body_bytes)))
        .route("/api/v1/{collection}", any(collection))
        .route("/api/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/api/v1/webhooks/{segment}", any(webhooks::segment))
        .route("/api/v1/webhooks/{webhook}/deliveries", get(webhooks::list_deliveries))
        .route("/api/v1/webhooks/{webhook}/deliveries/{segment}", any(webhooks::delivery_segment))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/{event}", get(events::get))
        .route("/v2/session/me", get(wawp::session_me))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::docs))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .with_state(state.clone());

    with_common_layers(api, Arc::clone(&state.metrics), limits)
}

/// Any method on `/api/v1/{collection}` that no route above takes: a custom method of a
/// collection (`/api/v1/events:stream`), or 404.
async fn collection(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    req: custom::Incoming,
) -> error::ApiResult<Response> {
    match custom::split_segment(&segment) {
        ("events", Some(verb)) => events::methods().dispatch(state, "", Some(verb), req).await,
        _ => Err(error::ApiError::not_found("route not found")),
    }
}

/// The layers every route gets: body limit, request ids (sanitised), tracing, metrics, the error
/// envelope, panics as 500 and the request timeout as 504 `timeout`.
pub fn with_common_layers(api: Router, metrics: Arc<Metrics>, limits: HttpLimits) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            // The path only: query strings may carry an access token (wawp API).
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
        })
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros));

    api.layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::map_request(middleware::sanitize_request_id))
                .layer(SetRequestIdLayer::new(request_id.clone(), middleware::UlidRequestId))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn_with_state(metrics, middleware::record_metrics))
                .layer(axum::middleware::from_fn_with_state(limits, middleware::refuse_declared_oversize))
                .layer(axum::middleware::from_fn(middleware::envelope_errors))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, limits.request_timeout)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_request_over_the_timeout_is_504_timeout_in_the_envelope() {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        );
        let limits = HttpLimits { request_timeout: Duration::from_millis(50), ..HttpLimits::default() };
        let app = with_common_layers(slow, Arc::new(Metrics::default()), limits);
        let res = app.oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "timeout", "{body}");
        assert_eq!(body["error"]["message"], "request timed out", "{body}");
    }
}
