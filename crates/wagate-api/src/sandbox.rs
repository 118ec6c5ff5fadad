//! `/api/v1/sessions/{session}/sandbox:*`: controls of the simulated phone and network.
//! These routes exist only for `sandbox` sessions (404 for any other).

use axum::Json;
use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wagate_core::Capability;
use wagate_runtime::SandboxAction;

use crate::custom::{Call, Incoming, Methods, split_segment};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::parse_json;
use crate::sessions::{SessionView, parse_phone};
use crate::state::{AppState, Auth};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScanQrRequest {
    /// The simulated phone's number: international format, digits only, 8 to 15 digits.
    #[schema(example = "628123456789", pattern = r"^[1-9][0-9]{7,14}$")]
    pub phone_number: String,
    pub push_name: Option<String>,
    /// Default `android`.
    pub platform: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnterPairingCodeRequest {
    #[schema(example = "ABCD-1234")]
    pub code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// The simulated phone scans the current QR
///
/// The session pairs with the phone and connects.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/sandbox:scanQr", tag = "sandbox",
    params(("session" = String, Path, description = "Session id (a sandbox session)")),
    request_body = ScanQrRequest,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "already paired, or no current QR code"),
              (status = 502, body = ErrorEnvelope, description = "the simulated connection is down (after `sandbox:disconnect`, until it reconnects)")),
    security(("bearer" = [])))]
pub async fn scan_qr(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    run(state, auth, id, body, |req: ScanQrRequest| {
        let phone = parse_phone("phoneNumber", &req.phone_number)?;
        let push_name = req.push_name.filter(|n| !n.trim().is_empty());
        Ok(SandboxAction::ScanQr { phone, push_name, platform: req.platform })
    })
    .await
}

/// The simulated phone enters a pairing code
///
/// Completes a pending pairing code; a wrong or expired code is a `validation_error`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/sandbox:enterPairingCode", tag = "sandbox",
    params(("session" = String, Path, description = "Session id (a sandbox session)")),
    request_body = EnterPairingCodeRequest,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session is not started"),
              (status = 502, body = ErrorEnvelope, description = "the simulated connection is down (after `sandbox:disconnect`, until it reconnects)")),
    security(("bearer" = [])))]
pub async fn enter_pairing_code(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    run(state, auth, id, body, |req: EnterPairingCodeRequest| Ok(SandboxAction::EnterPairingCode(req.code))).await
}

/// The simulated connection drops
///
/// The session goes `reconnecting` and comes back, as a real one would.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/sandbox:disconnect", tag = "sandbox",
    params(("session" = String, Path, description = "Session id (a sandbox session)")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn disconnect(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    run(state, auth, id, body, |_: EmptyBody| Ok(SandboxAction::Disconnect)).await
}

/// The simulated phone removes the linked device
///
/// The session becomes `logged_out`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/sandbox:unlink", tag = "sandbox",
    params(("session" = String, Path, description = "Session id (a sandbox session)")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn unlink(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    run(state, auth, id, body, |_: EmptyBody| Ok(SandboxAction::Unlink)).await
}

/// Shared shape of every sandbox route: manage capability, session lookup (404 for non-sandbox
/// sessions, the same answer as an unknown route), body validation, then the action, which
/// answers the session as it is afterwards.
async fn run<B, F>(state: &AppState, auth: &Auth, id: &str, body: &[u8], make: F) -> ApiResult<Response>
where
    B: serde::de::DeserializeOwned,
    F: FnOnce(B) -> ApiResult<SandboxAction>,
{
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    state.sandbox.check(&session)?;
    let action = make(parse_json(body)?)?;
    let session = state.sandbox.act(&session, action).await?.ok_or_else(ApiError::session_not_found)?;
    Ok(Json(SessionView::new(state, &session)).into_response())
}

/// The sandbox custom methods, on the `sandbox` sub-resource of a session.
fn methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .verb("scanQr", Method::POST, |c: Call| async move { scan_qr(&c.state, &c.auth, &c.id, &c.body).await })
            .verb("enterPairingCode", Method::POST, |c: Call| async move {
                enter_pairing_code(&c.state, &c.auth, &c.id, &c.body).await
            })
            .verb("disconnect", Method::POST, |c: Call| async move { disconnect(&c.state, &c.auth, &c.id, &c.body).await })
            .verb("unlink", Method::POST, |c: Call| async move { unlink(&c.state, &c.auth, &c.id, &c.body).await })
            .verb("receive", Method::POST, |c: Call| async move {
                crate::messages::receive(&c.state, &c.auth, &c.id, &c.body).await
            })
    });
    &METHODS
}

/// Any method on `/api/v1/sessions/{session}/{action}`: `sandbox:<verb>`, or 404.
pub async fn dispatch(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    req: Incoming,
) -> ApiResult<Response> {
    match split_segment(&action) {
        ("sandbox", Some(verb)) => methods().dispatch(state, &id, Some(verb), req).await,
        _ => Err(ApiError::not_found("route not found")),
    }
}
