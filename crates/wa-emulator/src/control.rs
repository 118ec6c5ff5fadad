//! The emulator's HTTP control surface, for demos and for tests in other languages.
//!
//! | route | does |
//! |---|---|
//! | `GET /accounts`, `POST /accounts` `{phone?, pushName?, platform?}` | list or create phones |
//! | `GET /devices` | linked companion devices, with `online` |
//! | `GET /pairing-requests` | companions connected and waiting to be paired |
//! | `POST /scan` `{qr, phone?, pushName?, platform?}` | the phone scans a QR code |
//! | `POST /enter-code` `{phone, code}` | the user types a pairing code into the phone |
//! | `POST /devices/{jid}/unlink`, `POST /devices/{jid}/replace` | remove a device; replace its stream |
//! | `POST /drop` `{jid?}` | drop connections (all without `jid`) |
//! | `POST /refuse-logins` `{reason}` | answer logins `<failure reason=…>` (`null` accepts again) |
//! | `GET /events` | what happened, in order |
//! | `POST /phones/{phone}/send` `{to, text}` | the phone sends a text (`{id}` back) |
//! | `POST /phones/{phone}/send-media` `{to, kind, mimetype, data, caption?, fileName?, ptt?}` | the phone sends media (`{id}` back): `kind` is `image`, `video`, `audio`, `document` or `sticker`, `data` the file in base64 |
//! | `GET /phones/{phone}/messages` | what the phone received, decrypted, with `media` (`{kind, mimetype, caption, fileName, ptt, data, error}`, `data` in base64) when it carried some |
//! | `GET /phones/{phone}/receipts` | receipts for what the phone sent |
//! | `POST /phones/{phone}/read` `{ids}` | the phone reads messages it received |
//! | `POST /phones/{phone}/presence` `{available}` | the phone goes online or offline |
//! | `POST /phones/{phone}/typing` `{to, state}` | `composing`, `recording` or `paused` |

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::{AccountSpec, Emulator, EmulatorError, PhoneMedia};

pub fn router(emulator: Arc<Emulator>) -> Router {
    Router::new()
        .route("/accounts", get(accounts).post(create_account))
        .route("/devices", get(devices))
        .route("/pairing-requests", get(pairing_requests))
        .route("/scan", post(scan))
        .route("/enter-code", post(enter_code))
        .route("/devices/{jid}/unlink", post(unlink))
        .route("/devices/{jid}/replace", post(replace))
        .route("/drop", post(drop_connections))
        .route("/refuse-logins", post(refuse_logins))
        .route("/events", get(events))
        .route("/phones/{phone}/send", post(phone_send))
        // Files arrive in base64 in JSON: more than axum's 2 MB default.
        .route("/phones/{phone}/send-media", post(phone_send_media).layer(DefaultBodyLimit::max(64 * 1024 * 1024)))
        .route("/phones/{phone}/messages", get(phone_messages))
        .route("/phones/{phone}/receipts", get(phone_receipts))
        .route("/phones/{phone}/read", post(phone_read))
        .route("/phones/{phone}/presence", post(phone_presence))
        .route("/phones/{phone}/typing", post(phone_typing))
        .with_state(emulator)
}

type Emu = State<Arc<Emulator>>;

impl IntoResponse for EmulatorError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            EmulatorError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EmulatorError::Invalid(_) => (StatusCode::BAD_REQUEST, "validation_error"),
            EmulatorError::Rejected(_) => (StatusCode::CONFLICT, "rejected"),
            EmulatorError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        };
        (status, Json(json!({ "error": { "code": code, "message": self.to_string() } }))).into_response()
    }
}

async fn accounts(State(e): Emu) -> impl IntoResponse {
    Json(e.accounts())
}

async fn create_account(State(e): Emu, Json(spec): Json<AccountSpec>) -> Result<impl IntoResponse, EmulatorError> {
    Ok((StatusCode::CREATED, Json(e.create_account(spec)?)))
}

async fn devices(State(e): Emu) -> impl IntoResponse {
    Json(e.devices())
}

async fn pairing_requests(State(e): Emu) -> impl IntoResponse {
    Json(e.pairing_requests())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Scan {
    qr: String,
    #[serde(flatten)]
    account: AccountSpec,
}

async fn scan(State(e): Emu, Json(body): Json<Scan>) -> Result<impl IntoResponse, EmulatorError> {
    Ok(Json(e.scan_qr(&body.qr, body.account).await?))
}

#[derive(Deserialize)]
struct EnterCode {
    phone: String,
    code: String,
}

async fn enter_code(State(e): Emu, Json(body): Json<EnterCode>) -> Result<impl IntoResponse, EmulatorError> {
    Ok(Json(e.enter_code(&body.phone, &body.code).await?))
}

async fn unlink(State(e): Emu, Path(jid): Path<String>) -> Result<impl IntoResponse, EmulatorError> {
    e.unlink(&jid)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replace(State(e): Emu, Path(jid): Path<String>) -> Result<impl IntoResponse, EmulatorError> {
    e.replace(&jid)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct Drop {
    jid: Option<String>,
}

async fn drop_connections(State(e): Emu, body: Option<Json<Drop>>) -> impl IntoResponse {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    Json(json!({ "dropped": e.drop_connections(body.jid.as_deref()) }))
}

#[derive(Deserialize)]
struct Refuse {
    reason: Option<u16>,
}

async fn refuse_logins(State(e): Emu, Json(body): Json<Refuse>) -> impl IntoResponse {
    e.refuse_logins(body.reason);
    StatusCode::NO_CONTENT
}

async fn events(State(e): Emu) -> impl IntoResponse {
    Json(e.events())
}

#[derive(Deserialize)]
struct PhoneSend {
    to: String,
    text: String,
}

async fn phone_send(State(e): Emu, Path(phone): Path<String>, Json(body): Json<PhoneSend>) -> Result<impl IntoResponse, EmulatorError> {
    let id = e.phone_send_text(&phone, &body.to, &body.text)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

#[derive(Deserialize)]
struct PhoneSendMedia {
    to: String,
    #[serde(flatten)]
    media: PhoneMedia,
}

async fn phone_send_media(
    State(e): Emu,
    Path(phone): Path<String>,
    Json(body): Json<PhoneSendMedia>,
) -> Result<impl IntoResponse, EmulatorError> {
    let id = e.phone_send_media(&phone, &body.to, body.media)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn phone_messages(State(e): Emu, Path(phone): Path<String>) -> Result<impl IntoResponse, EmulatorError> {
    e.account(&phone).ok_or_else(|| EmulatorError::NotFound(format!("no account {phone}")))?;
    Ok(Json(e.phone_messages(&phone)))
}

async fn phone_receipts(State(e): Emu, Path(phone): Path<String>) -> Result<impl IntoResponse, EmulatorError> {
    e.account(&phone).ok_or_else(|| EmulatorError::NotFound(format!("no account {phone}")))?;
    Ok(Json(e.phone_receipts(&phone)))
}

#[derive(Deserialize)]
struct PhoneRead {
    ids: Vec<String>,
}

async fn phone_read(State(e): Emu, Path(phone): Path<String>, Json(body): Json<PhoneRead>) -> Result<impl IntoResponse, EmulatorError> {
    let ids: Vec<&str> = body.ids.iter().map(String::as_str).collect();
    e.phone_mark_read(&phone, &ids)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PhonePresence {
    available: bool,
}

async fn phone_presence(State(e): Emu, Path(phone): Path<String>, Json(body): Json<PhonePresence>) -> Result<impl IntoResponse, EmulatorError> {
    e.phone_set_presence(&phone, body.available)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PhoneTyping {
    to: String,
    state: String,
}

async fn phone_typing(State(e): Emu, Path(phone): Path<String>, Json(body): Json<PhoneTyping>) -> Result<impl IntoResponse, EmulatorError> {
    e.phone_typing(&phone, &body.to, &body.state)?;
    Ok(StatusCode::NO_CONTENT)
}
