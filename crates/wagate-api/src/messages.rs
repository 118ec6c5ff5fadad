//! `/api/v1/sessions/{session}/messages` and `/chats`: sending, reading, editing, revoking,
//! read receipts, presence and number checks.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wagate_core::{
    Capability, ContactCard, Direction, Jid, Location, MediaInfo, Message, MessageId, MessageType, Phone, Session,
    Timestamp, parse_recipient,
};
use wagate_engine::{ChatPresence, Content, MediaContent};
use wagate_runtime::{MediaSource, SendContent, SendMedia, SendMessage};
use wagate_store::{MessageFilter, PageRequest};

use crate::custom::{Call, Incoming, Methods, split_segment};
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::extract::{ApiJson, RawQuery, decode_page_token, encode_page_token, page_size, parse_json};
use crate::sessions::no_body;
use crate::state::{AppState, Auth};

/// The longest text WhatsApp carries.
const MAX_TEXT_CHARS: usize = 65_536;

/// Media to send: by `url` (fetched by the gateway) or `data` (base64).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MediaRequest {
    pub url: Option<String>,
    /// The bytes, base64.
    pub data: Option<String>,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    /// A voice note (audio only).
    pub voice: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocationRequest {
    /// -90 to 90.
    pub latitude: f64,
    /// -180 to 180.
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContactRequest {
    pub name: String,
    /// International format, digits only.
    #[schema(example = "628123456789")]
    pub phone: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReactionRequest {
    /// A stored message (`msg_…`) of this session, in the chat `to`.
    pub message_id: String,
    /// One emoji; empty removes the reaction.
    pub emoji: String,
}

/// `to` plus exactly one content field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// A phone number (international format, digits only) or a user JID (`…@s.whatsapp.net`, `…@lid`).
    #[schema(example = "628123456789")]
    pub to: String,
    /// 1 to 65,536 characters.
    pub text: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub image: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub video: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub audio: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub document: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub sticker: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub location: Option<LocationRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub contact: Option<ContactRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub reaction: Option<ReactionRequest>,
    /// Text and media only: a stored message (`msg_…`) of the same chat to quote.
    pub reply_to: Option<String>,
    /// Text and media only: phone numbers mentioned.
    pub mentions: Option<Vec<String>>,
}

/// `from` plus one content field as in sending (text, location or contact).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReceiveRequest {
    /// The simulated sender's phone number.
    #[schema(example = "628123456789")]
    pub from: String,
    pub push_name: Option<String>,
    pub text: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub image: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub video: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub audio: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub document: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub sticker: Option<MediaRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub location: Option<LocationRequest>,
    #[serde(default, deserialize_with = "crate::extract::object")]
    pub contact: Option<ContactRequest>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageList {
    pub messages: Vec<Message>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EditRequest {
    /// The new text, 1 to 65,536 characters.
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatView {
    /// The chat's JID.
    #[schema(example = "628123456789@s.whatsapp.net")]
    pub id: String,
    /// The push name of the chat's latest inbound message that had one.
    pub name: Option<String>,
    pub last_message: Message,
    /// Inbound messages not yet marked read.
    pub unread_count: u64,
    /// When the latest message of the chat was stored.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatList {
    pub chats: Vec<ChatView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MarkReadView {
    /// How many inbound messages were marked read.
    pub read: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Typing,
    Recording,
    Paused,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    pub state: PresenceState,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckNumbersRequest {
    /// 1 to 50 phone numbers, international format, digits only.
    pub phones: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberResult {
    pub phone: String,
    pub on_whats_app: bool,
    pub jid: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckNumbersView {
    pub results: Vec<NumberResult>,
}

fn validate_text(field: &str, text: &str) -> ApiResult<String> {
    if text.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::validation(field, format!("must be at most {MAX_TEXT_CHARS} characters")));
    }
    Ok(text.to_owned())
}

fn optional_text(field: &str, value: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::validation(field, format!("must be at most {max} characters"))),
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn location(req: LocationRequest) -> ApiResult<Location> {
    if !(req.latitude.is_finite() && (-90.0..=90.0).contains(&req.latitude)) {
        return Err(ApiError::validation("location.latitude", "must be from -90 to 90"));
    }
    if !(req.longitude.is_finite() && (-180.0..=180.0).contains(&req.longitude)) {
        return Err(ApiError::validation("location.longitude", "must be from -180 to 180"));
    }
    Ok(Location {
        latitude: req.latitude,
        longitude: req.longitude,
        name: optional_text("location.name", req.name, 1024)?,
        address: optional_text("location.address", req.address, 1024)?,
    })
}

fn contact(req: ContactRequest) -> ApiResult<ContactCard> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::validation("contact.name", "must be 1 to 256 characters"));
    }
    let phone = Phone::parse(&req.phone).map_err(|e| ApiError::validation("contact.phone", e.to_string()))?;
    Ok(ContactCard { name: name.to_owned(), phone: phone.to_string() })
}

/// Checks a media field and reads its bytes when given as `data`; the URL otherwise.
fn parse_media(state: &AppState, field: &'static str, req: MediaRequest) -> ApiResult<SendMedia> {
    use base64::Engine as _;
    let kind = MessageType::parse(field).expect("a media field is named after its kind");
    if req.voice.is_some() && kind != MessageType::Audio {
        return Err(ApiError::validation(&format!("{field}.voice"), "only audio can be a voice note"));
    }
    let mime_type = match req.mime_type {
        None => None,
        Some(m) => {
            let valid = m.len() <= 255 && m.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                && m.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(ApiError::validation(&format!("{field}.mimeType"), "must be a media type such as image/png"));
            }
            Some(m.to_ascii_lowercase())
        }
    };
    let source = match (req.data, req.url) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::validation(field, "give exactly one of `data` (base64) and `url`"));
        }
        (Some(data), None) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| ApiError::validation(&format!("{field}.data"), "must be base64"))?;
            if bytes.is_empty() {
                return Err(ApiError::validation(&format!("{field}.data"), "must not be empty"));
            }
            if bytes.len() > state.messages.media_max_bytes() {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge, "the media is too large")
                    .with_detail("field", format!("{field}.data"))
                    .with_detail("limit", state.messages.media_max_bytes()));
            }
            MediaSource::Data { sha256: wagate_runtime::media::sha256_hex(&bytes), bytes }
        }
        (None, Some(url)) => {
            let parsed = wagate_egress_url(&url).ok_or_else(|| ApiError::validation(&format!("{field}.url"), "must be an http or https URL"))?;
            MediaSource::Url(parsed)
        }
    };
    Ok(SendMedia {
        kind,
        source,
        mime_type,
        filename: optional_text(&format!("{field}.filename"), req.filename, 255)?,
        caption: optional_text(&format!("{field}.caption"), req.caption, 4096)?,
        voice: req.voice.unwrap_or(false),
    })
}

/// `url` when it is an absolute http(s) URL.
fn wagate_egress_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let ok = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") && !rest.is_empty() && url.len() <= 4096
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| url.to_owned())
}

/// The media of a `sandbox:receive`, with its bytes (fetched when given by URL).
async fn received_media(state: &AppState, field: &'static str, req: MediaRequest) -> ApiResult<Content> {
    let media = parse_media(state, field, req)?;
    let (bytes, content_type) = match media.source {
        MediaSource::Data { bytes, .. } => (bytes, None),
        MediaSource::Url(url) => {
            let (bytes, content_type) = state.messages.fetch_media("url", &url).await.map_err(|e| match ApiError::from(e) {
                mut e if e.code == ErrorCode::ValidationError => {
                    e.details.insert("field".into(), format!("{field}.url").into());
                    e
                }
                e => e,
            })?;
            (bytes, content_type)
        }
    };
    let mime_type = media.mime_type.or(content_type).unwrap_or_else(|| media.kind.default_mime().to_owned());
    let info = MediaInfo {
        mime_type,
        filename: media.filename,
        size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        sha256: wagate_runtime::media::sha256_hex(&bytes),
        caption: media.caption,
        voice: media.voice,
    };
    Ok(Content::Media(MediaContent { kind: media.kind, info, bytes: bytes.into() }))
}

/// The one content field of a send or receive body, by name; `validation_error` when there
/// is none or more than one.
fn one_content<'a>(present: &[(&'a str, bool)]) -> ApiResult<&'a str> {
    let mut given = present.iter().filter(|(_, p)| *p).map(|(name, _)| *name);
    let names = present.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let first = given.next().ok_or_else(|| {
        ApiError::invalid(present[0].0, format!("one content field is required: {names}"), "is required")
    })?;
    if let Some(second) = given.next() {
        return Err(ApiError::invalid(
            second,
            format!("exactly one content field is allowed, got `{first}` and `{second}`"),
            "only one content field",
        ));
    }
    Ok(first)
}

fn parse_message_id(field: &str, raw: &str) -> ApiResult<MessageId> {
    MessageId::parse(raw).map_err(|_| ApiError::validation(field, "must be a message id (msg_…)"))
}

impl SendMessageRequest {
    fn parse(self, state: &AppState) -> ApiResult<SendMessage> {
        let to = parse_recipient(&self.to).map_err(|e| ApiError::validation("to", e.to_string()))?;
        let kind = one_content(&[
            ("text", self.text.is_some()),
            ("image", self.image.is_some()),
            ("video", self.video.is_some()),
            ("audio", self.audio.is_some()),
            ("document", self.document.is_some()),
            ("sticker", self.sticker.is_some()),
            ("location", self.location.is_some()),
            ("contact", self.contact.is_some()),
            ("reaction", self.reaction.is_some()),
        ])?;
        let quotes = matches!(kind, "text" | "image" | "video" | "audio" | "document" | "sticker");
        if !quotes && self.reply_to.is_some() {
            return Err(ApiError::validation("replyTo", "only text and media messages can reply"));
        }
        if !quotes && self.mentions.is_some() {
            return Err(ApiError::validation("mentions", "only text and media messages can mention"));
        }
        let content = match kind {
            "text" => SendContent::Text(validate_text("text", self.text.as_deref().unwrap_or_default())?),
            "location" => SendContent::Location(location(self.location.expect("present"))?),
            "contact" => SendContent::Contact(contact(self.contact.expect("present"))?),
            "reaction" => {
                let reaction = self.reaction.expect("present");
                let message_id = parse_message_id("reaction.messageId", &reaction.message_id)?;
                if reaction.emoji.chars().count() > 16 || reaction.emoji.chars().any(char::is_control) {
                    return Err(ApiError::validation("reaction.emoji", "must be one emoji, or empty to remove the reaction"));
                }
                SendContent::Reaction { message_id, emoji: reaction.emoji }
            }
            "image" => SendContent::Media(parse_media(state, "image", self.image.expect("present"))?),
            "video" => SendContent::Media(parse_media(state, "video", self.video.expect("present"))?),
            "audio" => SendContent::Media(parse_media(state, "audio", self.audio.expect("present"))?),
            "document" => SendContent::Media(parse_media(state, "document", self.document.expect("present"))?),
            _ => SendContent::Media(parse_media(state, "sticker", self.sticker.expect("present"))?),
        };
        let reply_to = self.reply_to.as_deref().map(|r| parse_message_id("replyTo", r)).transpose()?;
        let mentions = self.mentions.unwrap_or_default();
        if mentions.len() > 100 {
            return Err(ApiError::validation("mentions", "at most 100 phone numbers"));
        }
        let mentions = mentions
            .iter()
            .enumerate()
            .map(|(i, m)| Phone::parse(m).map_err(|e| ApiError::validation(&format!("mentions[{i}]"), e.to_string())))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(SendMessage { to, content, reply_to, mentions })
    }
}

/// The `Idempotency-Key` header: 1 to 255 printable characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    let invalid = || ApiError::validation("Idempotency-Key", "must be 1 to 255 printable ASCII characters, given once");
    if values.next().is_some() {
        return Err(invalid());
    }
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

fn message_response(status: StatusCode, message: &Message) -> Response {
    (status, Json(message)).into_response()
}

/// Send a message
///
/// Accepts the message into the session's durable, paced send queue and answers at once with
/// it (`status: queued`): a 202 means the message is committed and will be sent, also across a
/// gateway restart, under the `waMessageId` fixed now. It waits while the session is
/// disconnected, reconnecting or stopped, and goes once it is connected; it goes `failed` with
/// an `error` when it cannot be sent. Follow it with `message.status` events.
///
/// With an `Idempotency-Key`, a repeat of the same request to the same session within 24 h
/// answers the first message again and sends nothing; the same key with another request is
/// 409 `conflict`. Media (`image`, `video`, `audio`, `document`, `sticker`) comes as `data`
/// (base64) or as a `url` the gateway fetches before sending, under the same address guard as
/// webhooks; at most `WAGATE_MEDIA_MAX_BYTES` (16 MiB), a larger `data` is 413, a URL that
/// cannot be fetched or is too large fails the message (`media_unreachable`, `media_too_large`).
/// Until a URL is fetched the message's `media` has `size` 0 and an empty `sha256`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/messages", tag = "messages",
    params(("session" = String, Path, description = "Session id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable characters")),
    request_body = SendMessageRequest,
    responses((status = 202, body = Message), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session was never paired or is logged out, or the Idempotency-Key was used with another request"),
              (status = 413, body = ErrorEnvelope, description = "media `data` over `WAGATE_MEDIA_MAX_BYTES`")),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Path(id): Path<String>,
    auth: Auth,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let session = state.session(principal, &id).await?;
    let key = idempotency_key(&headers)?;
    let request = req.parse(&state)?;
    let (message, _new) = state.messages.send(&session, request, key).await?;
    Ok(message_response(StatusCode::ACCEPTED, &message))
}

/// List messages
///
/// The session's messages, newest first, optionally of one chat and one direction.
#[utoipa::path(get, path = "/api/v1/sessions/{session}/messages", tag = "messages",
    params(("session" = String, Path, description = "Session id"),
           ("chatId" = Option<String>, Query, description = "Only this chat (a JID)"),
           ("direction" = Option<Direction>, Query, description = "`inbound` or `outbound`"),
           ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
           ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page")),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, Path(id): Path<String>, auth: Auth, query: RawQuery) -> ApiResult<Json<MessageList>> {
    let principal = auth.require(Capability::Read)?;
    let session = state.session(principal, &id).await?;
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| MessageId::parse(s).ok())?;
    let chat = query
        .get("chatId")
        .map(|c| Jid::parse(c).map_err(|e| ApiError::validation("chatId", e.to_string())))
        .transpose()?;
    let direction = query
        .get("direction")
        .map(|d| Direction::parse(d).ok_or_else(|| ApiError::validation("direction", "must be `inbound` or `outbound`")))
        .transpose()?;
    let filter = MessageFilter { chat, direction };
    let page = state.messages.list(&session, &filter, PageRequest { size, after: after.as_ref() }).await?;
    Ok(Json(MessageList { messages: page.items, next_page_token: page.next.map(|id| encode_page_token(id.as_str())) }))
}

/// The caller's session and its message `raw`; malformed, unknown and other organizations'
/// ids all give the same `not_found`.
async fn session_message(state: &AppState, session: &Session, raw: &str) -> ApiResult<Message> {
    let not_found = || ApiError::not_found("message not found");
    let id = MessageId::parse(raw).map_err(|_| not_found())?;
    state.messages.get(session, &id).await?.ok_or_else(not_found)
}

/// `{session}/{message}` as the message methods' table passes it.
fn ids(call_id: &str) -> (&str, &str) {
    call_id.split_once('/').unwrap_or((call_id, ""))
}

/// Get a message
#[utoipa::path(get, path = "/api/v1/sessions/{session}/messages/{message}", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("message" = String, Path, description = "Message id")),
    responses((status = 200, body = Message), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(state: &AppState, auth: &Auth, call_id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let (session_id, message_id) = ids(call_id);
    let session = state.session(principal, session_id).await?;
    let message = session_message(state, &session, message_id).await?;
    Ok(message_response(StatusCode::OK, &message))
}

/// Edit a message
///
/// Replaces the text of a text message this session sent (once it was sent); the recipient
/// sees it edited, and both sides get `message.edited`. The session must be running.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/messages/{message}:edit", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("message" = String, Path, description = "Message id")),
    request_body = EditRequest,
    responses((status = 200, body = Message), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "not an own sent text message, revoked, or the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn edit(state: &AppState, auth: &Auth, call_id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let (session_id, message_id) = ids(call_id);
    let session = state.session(principal, session_id).await?;
    let message = session_message(state, &session, message_id).await?;
    let req: EditRequest = parse_json(body)?;
    let text = validate_text("text", &req.text)?;
    let edited = state.messages.edit(&session, &message, &text).await?;
    Ok(message_response(StatusCode::OK, &edited))
}

/// Revoke a message
///
/// Deletes a message this session sent for everyone; both sides get `message.revoked`.
/// Idempotent. The session must be running.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/messages/{message}:revoke", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("message" = String, Path, description = "Message id")),
    responses((status = 200, body = Message), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "not an own sent message, or the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn revoke(state: &AppState, auth: &Auth, call_id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let (session_id, message_id) = ids(call_id);
    let session = state.session(principal, session_id).await?;
    let message = session_message(state, &session, message_id).await?;
    no_body(body)?;
    let revoked = state.messages.revoke(&session, &message).await?;
    Ok(message_response(StatusCode::OK, &revoked))
}

/// A message's media bytes
///
/// The bytes with their `Content-Type`. 404 for a message without media, or whose media given
/// by URL is not fetched yet.
#[utoipa::path(get, path = "/api/v1/sessions/{session}/messages/{message}/media", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("message" = String, Path, description = "Message id")),
    responses((status = 200, description = "The bytes, with the media's `Content-Type`", content_type = "*/*"), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn media(State(state): State<AppState>, Path((session_id, message_id)): Path<(String, String)>, auth: Auth) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let session = state.session(principal, &session_id).await?;
    let message = session_message(&state, &session, &message_id).await?;
    let Some(media) = message.media.as_ref() else {
        return Err(ApiError::not_found("this message has no media"));
    };
    let bytes = state.messages.media_bytes(&message).await?.ok_or_else(|| ApiError::not_found("the media bytes are not stored (yet)"))?;
    let content_type = HeaderValue::from_str(&media.mime_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

fn message_methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .standard(Method::GET, |c: Call| async move { get(&c.state, &c.auth, &c.id).await })
            .verb("edit", Method::POST, |c: Call| async move { edit(&c.state, &c.auth, &c.id, &c.body).await })
            .verb("revoke", Method::POST, |c: Call| async move { revoke(&c.state, &c.auth, &c.id, &c.body).await })
    });
    &METHODS
}

/// Any method on `/api/v1/sessions/{session}/messages/{segment}`.
pub async fn message_segment(
    State(state): State<AppState>,
    Path((session, segment)): Path<(String, String)>,
    req: Incoming,
) -> ApiResult<Response> {
    let (message, verb) = split_segment(&segment);
    message_methods().dispatch(state, &format!("{session}/{message}"), verb, req).await
}

/// List chats
///
/// The session's chats (the JIDs it exchanged messages with), latest activity first.
#[utoipa::path(get, path = "/api/v1/sessions/{session}/chats", tag = "messages",
    params(("session" = String, Path, description = "Session id"),
           ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
           ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page")),
    responses((status = 200, body = ChatList), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn chats(State(state): State<AppState>, Path(id): Path<String>, auth: Auth, query: RawQuery) -> ApiResult<Json<ChatList>> {
    let principal = auth.require(Capability::Read)?;
    let session = state.session(principal, &id).await?;
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| MessageId::parse(s).ok())?;
    let page = state.messages.chats(&session, PageRequest { size, after: after.as_ref() }).await?;
    let chats = page
        .items
        .into_iter()
        .map(|c| ChatView {
            id: c.id.to_string(),
            name: c.name,
            updated_at: c.last_message.created_at,
            last_message: c.last_message,
            unread_count: c.unread_count,
        })
        .collect();
    Ok(Json(ChatList { chats, next_page_token: page.next.map(|id| encode_page_token(id.as_str())) }))
}

fn parse_chat(raw: &str) -> ApiResult<Jid> {
    Jid::parse(raw).map_err(|e| ApiError::validation("chat", e.to_string()))
}

/// Mark a chat read
///
/// Sends read receipts for the chat's unread inbound messages and marks them `read`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/chats/{chat}:markRead", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("chat" = String, Path, description = "The chat's JID")),
    responses((status = 200, body = MarkReadView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn mark_read(state: &AppState, auth: &Auth, call_id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let (session_id, chat) = ids(call_id);
    let session = state.session(principal, session_id).await?;
    let chat = parse_chat(chat)?;
    no_body(body)?;
    let read = state.messages.mark_read(&session, &chat).await?;
    Ok(Json(MarkReadView { read }).into_response())
}

/// Show presence in a chat
///
/// `typing`, `recording` or `paused`.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/chats/{chat}:presence", tag = "messages",
    params(("session" = String, Path, description = "Session id"), ("chat" = String, Path, description = "The chat's JID")),
    request_body = PresenceRequest,
    responses((status = 200, description = "`{}`"), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn presence(state: &AppState, auth: &Auth, call_id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let (session_id, chat) = ids(call_id);
    let session = state.session(principal, session_id).await?;
    let chat = parse_chat(chat)?;
    let req: PresenceRequest = parse_json(body)?;
    let presence = match req.state {
        PresenceState::Typing => ChatPresence::Typing,
        PresenceState::Recording => ChatPresence::Recording,
        PresenceState::Paused => ChatPresence::Paused,
    };
    state.messages.presence(&session, &chat, presence).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

fn chat_methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .verb("markRead", Method::POST, |c: Call| async move { mark_read(&c.state, &c.auth, &c.id, &c.body).await })
            .verb("presence", Method::POST, |c: Call| async move { presence(&c.state, &c.auth, &c.id, &c.body).await })
    });
    &METHODS
}

/// Any method on `/api/v1/sessions/{session}/chats/{segment}`.
pub async fn chat_segment(
    State(state): State<AppState>,
    Path((session, segment)): Path<(String, String)>,
    req: Incoming,
) -> ApiResult<Response> {
    let (chat, verb) = split_segment(&segment);
    chat_methods().dispatch(state, &format!("{session}/{chat}"), verb, req).await
}

/// Check numbers
///
/// Which of 1 to 50 phone numbers have a WhatsApp account. The session must be running.
#[utoipa::path(post, path = "/api/v1/sessions/{session}:checkNumbers", tag = "messages",
    params(("session" = String, Path, description = "Session id")),
    request_body = CheckNumbersRequest,
    responses((status = 200, body = CheckNumbersView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn check_numbers(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Send)?;
    let session = state.session(principal, id).await?;
    let req: CheckNumbersRequest = parse_json(body)?;
    if req.phones.is_empty() || req.phones.len() > 50 {
        return Err(ApiError::validation("phones", "must hold 1 to 50 phone numbers"));
    }
    let phones = req
        .phones
        .iter()
        .enumerate()
        .map(|(i, p)| Phone::parse(p).map_err(|e| ApiError::validation(&format!("phones[{i}]"), e.to_string())))
        .collect::<ApiResult<Vec<_>>>()?;
    let checks = state.messages.check_numbers(&session, &phones).await?;
    let results = checks
        .into_iter()
        .map(|c| NumberResult { phone: c.phone.to_string(), on_whats_app: c.jid.is_some(), jid: c.jid.map(|j| j.to_string()) })
        .collect();
    Ok(Json(CheckNumbersView { results }).into_response())
}

/// A message arrives from a simulated phone
///
/// `from` plus one content field as in sending (`text`, media by `data` or `url`, `location`
/// or `contact`). Answers the stored inbound message; its `message.received` event is committed
/// with it.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/sandbox:receive", tag = "sandbox",
    params(("session" = String, Path, description = "Session id (a sandbox session)")),
    request_body = ReceiveRequest,
    responses((status = 200, body = Message), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope, description = "the session is not running"),
              (status = 501, body = ErrorEnvelope, description = "the session's engine does not offer messaging"),
              (status = 502, body = ErrorEnvelope, description = "the session is not connected")),
    security(("bearer" = [])))]
pub async fn receive(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let session = state.session(principal, id).await?;
    state.sandbox.check(&session)?;
    let req: ReceiveRequest = parse_json(body)?;
    let from = Phone::parse(&req.from).map_err(|e| ApiError::validation("from", e.to_string()))?;
    let kind = one_content(&[
        ("text", req.text.is_some()),
        ("image", req.image.is_some()),
        ("video", req.video.is_some()),
        ("audio", req.audio.is_some()),
        ("document", req.document.is_some()),
        ("sticker", req.sticker.is_some()),
        ("location", req.location.is_some()),
        ("contact", req.contact.is_some()),
    ])?;
    let content = match kind {
        "text" => Content::Text(validate_text("text", req.text.as_deref().unwrap_or_default())?),
        "location" => Content::Location(location(req.location.expect("present"))?),
        "contact" => Content::Contact(contact(req.contact.expect("present"))?),
        "image" => received_media(state, "image", req.image.expect("present")).await?,
        "video" => received_media(state, "video", req.video.expect("present")).await?,
        "audio" => received_media(state, "audio", req.audio.expect("present")).await?,
        "document" => received_media(state, "document", req.document.expect("present")).await?,
        _ => received_media(state, "sticker", req.sticker.expect("present")).await?,
    };
    let push_name = optional_text("pushName", req.push_name, 256)?;
    let message = state.sandbox.receive(&session, from, push_name, content).await?;
    Ok(message_response(StatusCode::OK, &message))
}
