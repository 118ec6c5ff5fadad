//! `/api/v1/sessions`: the session resource and its custom methods.

use axum::Json;
use axum::extract::{Path, State};
use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wagate_core::{Capability, EngineKind, Phone, Session, SessionId, SessionStatus, Timestamp};
use wagate_runtime::CreateSession;
use wagate_store::{PageRequest, SessionSettings};

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::custom::{Call, Incoming, Methods, split_segment};
use crate::extract::{ApiJson, RawQuery, decode_page_token, encode_page_token, page_size, parse_json};
use crate::qr;
use crate::state::{AppState, Auth};

/// A session: one attached (or to-be-attached) WhatsApp number.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    #[schema(example = "sess_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")]
    pub id: String,
    /// 12 characters (A-Z, 0-9), for the wawp-compatible API.
    #[schema(example = "A1B2C3D4E5F6")]
    pub instance_id: String,
    pub name: Option<String>,
    pub engine: EngineKind,
    pub status: SessionStatus,
    /// Why the session is `failed`, `logged_out` or stopped by itself, e.g. `device_removed`,
    /// `stream_replaced`, `qr_codes_exhausted`.
    pub status_reason: Option<String>,
    /// International format, digits only.
    pub phone_number: Option<String>,
    pub wa_jid: Option<String>,
    pub wa_lid: Option<String>,
    pub push_name: Option<String>,
    /// The linked-device name this session shows on the phone (Linked devices); `null` when it
    /// uses the gateway-wide default (`WAGATE_WA_DEVICE_NAME`, `wagate` unless configured).
    #[schema(example = "Front desk")]
    pub device_name: Option<String>,
    /// How the session sends messages: the policy in force (the gateway default where the
    /// session sets none).
    pub send_policy: SendPolicyView,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// The send policy in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendPolicyView {
    /// At most this many messages a minute, with random spacing (1 to 600; the gateway default
    /// `WAGATE_SEND_PER_MINUTE`, 20, unless set on the session).
    #[schema(example = 20, minimum = 1, maximum = 600)]
    pub messages_per_minute: u32,
    /// Whether a chat shows "typing…" before a text is sent, for a time that grows with the text.
    pub typing: bool,
}

impl SessionView {
    /// The view of `s`, with the send policy in force.
    pub fn new(state: &AppState, s: &Session) -> Self {
        let id = s.identity.as_ref();
        Self {
            id: s.id.to_string(),
            instance_id: s.instance_id.to_string(),
            name: s.name.clone(),
            engine: s.engine,
            status: s.status,
            status_reason: s.status_reason.clone(),
            phone_number: id.map(|i| i.phone.to_string()),
            wa_jid: id.map(|i| i.jid.clone()),
            wa_lid: id.and_then(|i| i.lid.clone()),
            push_name: id.and_then(|i| i.push_name.clone()),
            device_name: s.device_name.clone(),
            send_policy: SendPolicyView { messages_per_minute: state.messages.per_minute(s), typing: s.send_policy.typing },
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn view(state: &AppState, s: &Session) -> Json<SessionView> {
    Json(SessionView::new(state, s))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// Unique within the organization; at most 100 characters, no control characters; leading
    /// and trailing white space is trimmed and at least one other character must remain.
    #[schema(example = "support-line", min_length = 1, max_length = 100, pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$")]
    pub name: Option<String>,
    /// Default `whatsapp`.
    pub engine: Option<EngineKind>,
    /// Start connecting at once (default true).
    pub start: Option<bool>,
    /// The linked-device name shown on the phone (Linked devices); at most 50 characters, no
    /// control characters; leading and trailing white space is trimmed and at least one other
    /// character must remain. Absent or `null`: the gateway-wide default.
    #[schema(example = "Front desk", min_length = 1, max_length = 50, pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$")]
    pub device_name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchSessionRequest {
    /// A new name (at most 100 characters, no control characters, surrounding white space
    /// trimmed); `null` removes it; absent leaves it unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$")]
    pub name: Option<Option<String>>,
    /// A new linked-device name (at most 50 characters, no control characters, surrounding white
    /// space trimmed); `null` returns to the gateway-wide default; absent leaves it unchanged.
    /// Takes effect at the next pairing or start: a device that is already linked keeps the name
    /// the phone has shown since pairing.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "Front desk", min_length = 1, max_length = 50, pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$")]
    pub device_name: Option<Option<String>>,
    /// How the session sends messages; fields left out are unchanged.
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub send_policy: Option<SendPolicyRequest>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendPolicyRequest {
    /// 1 to 600; `null` returns to the gateway default (`WAGATE_SEND_PER_MINUTE`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 600)]
    pub messages_per_minute: Option<Option<u32>>,
    /// Show "typing…" before a text is sent.
    pub typing: Option<bool>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None, via `default`).
pub(crate) fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrView {
    /// The raw string to encode in a QR code.
    pub qr: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingCodeRequest {
    /// International format, digits only, no leading `+`, 8 to 15 digits.
    #[schema(example = "628123456789", pattern = r"^[1-9][0-9]{7,14}$")]
    pub phone: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCodeView {
    /// Enter it on the phone: Settings → Linked devices → Link a device → Link with phone number instead.
    #[schema(example = "ABCD-1234")]
    pub code: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// The WhatsApp identity of the number attached to a session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    pub connected: bool,
    #[schema(example = "628123456789")]
    pub phone_number: String,
    pub session_id: String,
    pub status: SessionStatus,
    #[schema(example = "628123456789@s.whatsapp.net")]
    pub wa_jid: String,
    #[schema(example = "123456789012345@lid")]
    pub wa_lid: Option<String>,
    pub push_name: Option<String>,
}

pub(crate) fn parse_phone(field: &str, raw: &str) -> ApiResult<Phone> {
    Phone::parse(raw).map_err(|e| ApiError::validation(field, e.to_string()))
}

/// Trims `raw` and checks it is 1 to `max` characters without control characters.
/// Trims surrounding white space. The length limit applies to the text as sent, as the
/// OpenAPI `maxLength` does, so a value the schema refuses is never accepted.
fn validate_text(field: &str, raw: &str, max: usize) -> ApiResult<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || raw.chars().count() > max {
        return Err(ApiError::validation(field, format!("must be 1 to {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::validation(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

fn validate_name(name: &str) -> ApiResult<String> {
    validate_text("name", name, 100)
}

fn validate_device_name(device_name: &str) -> ApiResult<String> {
    validate_text("deviceName", device_name, 50)
}

/// Create a session
///
/// Creates a session in the caller's organization and, unless `start` is false, starts it:
/// a `whatsapp` session then waits for pairing (`GET .../qr` or `:requestPairingCode`).
/// The body is optional: an empty body means all defaults, exactly like `{}`.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions",
    request_body(content = CreateSessionRequest, description = "Optional: an empty body means `{}` (all defaults)."),
    responses((status = 201, body = SessionView), (status = 400, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope, description = "duplicate name")),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, auth: Auth, ApiJson(req): ApiJson<CreateSessionRequest>) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let name = req.name.as_deref().map(validate_name).transpose()?;
    let device_name = req.device_name.as_deref().map(validate_device_name).transpose()?;
    let start = req.start.unwrap_or(true);
    let create = CreateSession { name, engine: req.engine.unwrap_or_default(), device_name, start };
    let session = state.sessions.create(&principal.org, create).await?;
    let location = HeaderValue::from_str(&format!("/api/v1/sessions/{}", session.id)).map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], view(&state, &session)).into_response())
}

/// List sessions
///
/// The organization's sessions, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    params(("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
           ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page")),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, auth: Auth, query: RawQuery) -> ApiResult<Json<SessionList>> {
    let principal = auth.require(Capability::Read)?;
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| SessionId::parse(s).ok())?;
    let page = state.sessions.list(&principal.org, PageRequest { size, after: after.as_ref() }).await?;
    Ok(Json(SessionList {
        sessions: page.items.iter().map(|s| SessionView::new(&state, s)).collect(),
        next_page_token: page.next.map(|id| encode_page_token(id.as_str())),
    }))
}

/// Get a session
#[utoipa::path(get, path = "/api/v1/sessions/{session}", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let session = state.session(principal, id).await?;
    Ok(view(state, &session).into_response())
}

/// Update a session
///
/// Changes the name, the linked-device name and/or the send policy; fields left out are
/// unchanged. A new `sendPolicy` applies to the next message sent. A new
/// `deviceName` takes effect at the next pairing or start: a device that is already linked
/// keeps the name the phone has shown since it paired (log out and pair again to change it).
#[utoipa::path(patch, path = "/api/v1/sessions/{session}", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    request_body = PatchSessionRequest,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn patch(state: &AppState, auth: &Auth, id: &str, req: PatchSessionRequest) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    // Validate everything before writing anything.
    let name = req.name.map(|n| n.as_deref().map(validate_name).transpose()).transpose()?;
    let device_name = req.device_name.map(|n| n.as_deref().map(validate_device_name).transpose()).transpose()?;
    let (send_per_minute, send_typing) = match req.send_policy {
        None => (None, None),
        Some(policy) => {
            if let Some(Some(n)) = policy.messages_per_minute
                && !wagate_core::SendPolicy::PER_MINUTE.contains(&n)
            {
                return Err(ApiError::validation("sendPolicy.messagesPerMinute", "must be an integer from 1 to 600"));
            }
            (policy.messages_per_minute, policy.typing)
        }
    };
    if name.is_none() && device_name.is_none() && send_per_minute.is_none() && send_typing.is_none() {
        return Ok(view(state, &session).into_response());
    }
    let settings = SessionSettings {
        name: name.as_ref().map(|n| n.as_deref()),
        device_name: device_name.as_ref().map(|n| n.as_deref()),
        send_per_minute,
        send_typing,
    };
    let updated = state.sessions.update_settings(&principal.org, &session.id, &settings).await?;
    let updated = updated.ok_or_else(ApiError::session_not_found)?;
    Ok(view(state, &updated).into_response())
}

/// Delete a session
///
/// Stops the session, deletes its engine keys and its stored data. Destructive and
/// irreversible: log the number out first (`:logout`) to unlink the device cleanly.
#[utoipa::path(delete, path = "/api/v1/sessions/{session}", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    state.sessions.delete(&session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Start a session
///
/// Idempotent: starting a running session returns it unchanged. A paired session
/// reconnects from its stored keys; an unpaired one waits for pairing.
#[utoipa::path(post, path = "/api/v1/sessions/{session}:start", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn start(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    Ok(view(state, &state.sessions.start(&session).await?).into_response())
}

/// Stop a session
///
/// Idempotent. Disconnects and keeps the keys: `:start` resumes without re-pairing.
#[utoipa::path(post, path = "/api/v1/sessions/{session}:stop", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn stop(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    Ok(view(state, &state.sessions.stop(&session).await?).into_response())
}

/// Restart a session
#[utoipa::path(post, path = "/api/v1/sessions/{session}:restart", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn restart(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    Ok(view(state, &state.sessions.restart(&session).await?).into_response())
}

/// Log a session out
///
/// Unlinks the device from the WhatsApp account, wipes its keys, and keeps the session with
/// status `logged_out` (start it again to pair another number).
#[utoipa::path(post, path = "/api/v1/sessions/{session}:logout", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope), (status = 502, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn logout(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    Ok(view(state, &state.sessions.logout(&session).await?).into_response())
}

/// Request a phone pairing code
///
/// Attaches a number without scanning a QR: enter the returned code in WhatsApp on that
/// phone under Settings → Linked devices → Link a device → Link with phone number instead.
/// The session must be started and unpaired; a paired session is a `validation_error`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}:requestPairingCode", tag = "pairing",
    params(("session" = String, Path, description = "Session id")),
    request_body = PairingCodeRequest,
    responses((status = 200, body = PairingCodeView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "session not started"), (status = 429, body = ErrorEnvelope),
              (status = 502, body = ErrorEnvelope, description = "not connected to WhatsApp (the session is reconnecting), or WhatsApp failed")),
    security(("bearer" = [])))]
pub async fn request_pairing_code(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    let req: PairingCodeRequest = parse_json(body)?;
    let phone = parse_phone("phone", &req.phone)?;
    if session.identity.is_some() {
        return Err(ApiError::validation("phone", "session is already paired; log it out first"));
    }
    let code = state.sessions.request_pairing_code(&session, &phone).await?;
    Ok(Json(PairingCodeView { code: code.code, expires_at: code.expires_at }).into_response())
}

/// Get the current QR code
///
/// The raw string to encode as JSON (default), or a rendered image with `?format=png`
/// (or `Accept: image/png`) and `?format=svg`. Each rotation replaces the previous code.
#[utoipa::path(get, path = "/api/v1/sessions/{session}/qr", tag = "pairing",
    params(("session" = String, Path, description = "Session id"),
           ("format" = Option<String>, Query, description = "`json` (default), `png` or `svg`")),
    responses((status = 200, description = "The current QR code: JSON (default), a PNG image or an SVG image",
               content((QrView = "application/json"), (String = "image/png"), (String = "image/svg+xml"))),
              (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope, description = "paired or not started"),
              (status = 502, body = ErrorEnvelope, description = "not connected to WhatsApp (the session is reconnecting)")),
    security(("bearer" = [])))]
pub async fn qr(State(state): State<AppState>, auth: Auth, Path(id): Path<String>, query: RawQuery, headers: HeaderMap) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let format = match query.get("format") {
        Some(f @ ("json" | "png" | "svg")) => f,
        Some(f) if !f.is_empty() => return Err(ApiError::validation("format", "must be json, png or svg")),
        _ => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if accept.contains("image/png") { "png" } else if accept.contains("image/svg+xml") { "svg" } else { "json" }
        }
    };
    let session = state.session(principal, &id).await?;
    let code = state.sessions.current_qr(&session).await?;
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(match format {
        "png" => {
            let png = qr::png(&code.code).map_err(|e| ApiError::internal(&e))?;
            ([(header::CONTENT_TYPE, HeaderValue::from_static("image/png")), no_store], png).into_response()
        }
        "svg" => {
            let svg = qr::svg(&code.code).map_err(|e| ApiError::internal(&e))?;
            ([(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml")), no_store], svg).into_response()
        }
        _ => ([no_store], Json(QrView { qr: code.code, expires_at: code.expires_at })).into_response(),
    })
}

/// Get the connected account's own identity
///
/// The WhatsApp identity of the number attached to this session: its JID, linked-device id,
/// push name and phone number. `not_found` when the session is unknown or not yet paired.
#[utoipa::path(get, path = "/api/v1/sessions/{session}/me", tag = "sessions",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 200, body = IdentityView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<IdentityView>> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, &id).await?;
    let identity = session.identity.as_ref().ok_or_else(|| ApiError::not_found("session is not paired yet"))?;
    Ok(Json(IdentityView {
        connected: session.status == SessionStatus::Connected,
        phone_number: identity.phone.to_string(),
        session_id: session.id.to_string(),
        status: session.status,
        wa_jid: identity.jid.clone(),
        wa_lid: identity.lid.clone(),
        push_name: identity.push_name.clone(),
    }))
}

// ---- dispatch of `/api/v1/sessions/{segment}` (a session id, or `id:method`) ----

/// The session resource's standard and custom methods.
fn methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .standard(Method::GET, |c: Call| async move { get(&c.state, &c.auth, &c.id).await })
            .standard(Method::PATCH, |c: Call| async move {
                let req: PatchSessionRequest = parse_json(&c.body)?;
                patch(&c.state, &c.auth, &c.id, req).await
            })
            .standard(Method::DELETE, |c: Call| async move { delete(&c.state, &c.auth, &c.id).await })
            .verb("start", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                start(&c.state, &c.auth, &c.id).await
            })
            .verb("stop", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                stop(&c.state, &c.auth, &c.id).await
            })
            .verb("restart", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                restart(&c.state, &c.auth, &c.id).await
            })
            .verb("logout", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                logout(&c.state, &c.auth, &c.id).await
            })
            .verb("requestPairingCode", Method::POST, |c: Call| async move {
                request_pairing_code(&c.state, &c.auth, &c.id, &c.body).await
            })
            .verb("checkNumbers", Method::POST, |c: Call| async move {
                crate::messages::check_numbers(&c.state, &c.auth, &c.id, &c.body).await
            })
    });
    &METHODS
}

/// Any method on `/api/v1/sessions/{segment}`: the session itself or one of its custom methods.
pub async fn segment(State(state): State<AppState>, Path(segment): Path<String>, req: Incoming) -> ApiResult<Response> {
    let (id, verb) = split_segment(&segment);
    methods().dispatch(state, id, verb, req).await
}

/// The body of a method that takes none: empty or `{}`; anything else is worth reporting.
pub(crate) fn no_body(body: &[u8]) -> ApiResult<()> {
    let _: EmptyBody = parse_json(body)?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}
