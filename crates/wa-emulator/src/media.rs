//! Media: the blob host the emulator names in `<media_conn>`, the media phones send, and
//! what phones fetch and decrypt when a companion sends them media.
//!
//! The blob host is plain HTTP on its own port ([`crate::Emulator::media_host`]):
//!
//! | route | does |
//! |---|---|
//! | `POST /mms/{type}/{token}?auth=…&token=…` | stores the ciphertext in the body; `auth` must be one the emulator issued in `<media_conn>` (401 otherwise), `token` the unpadded base64url SHA-256 of the body (400 otherwise); answers `{url, direct_path}` |
//! | `GET /v/{type}/{id}.enc[?token=…]` | the ciphertext stored under that direct path, 404 when unknown |
//!
//! The real client always builds `https://{host}…` URLs; only a test seam that sends them to
//! `http://` reaches this host (see the crate's media tests). Encryption is wacore's own
//! (`encrypt_media`, `DownloadUtils::verify_and_decrypt`): the emulator writes no crypto.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::download::{DownloadUtils, Downloadable, MediaType};
use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::EmulatorError;
use crate::state::b64;

/// The largest upload the blob host takes (WhatsApp's own document limit is larger; an
/// emulator for tests does not need it).
const MAX_BLOB: usize = 128 * 1024 * 1024;
/// Media auth tokens remembered; older ones are refused (the client then asks again).
const KEEP_AUTHS: usize = 1_000;
/// The `ttl` of a `<media_conn>` answer, seconds.
pub(crate) const MEDIA_CONN_TTL: u64 = 3_600;

/// What kind of media a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    fn media_type(self) -> MediaType {
        match self {
            MediaKind::Image => MediaType::Image,
            MediaKind::Video => MediaType::Video,
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Document => MediaType::Document,
            MediaKind::Sticker => MediaType::Sticker,
        }
    }
}

/// Media an emulated phone sends ([`crate::Emulator::phone_send_media`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneMedia {
    pub kind: MediaKind,
    /// The plaintext file.
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    pub mimetype: String,
    /// Images, videos and documents.
    #[serde(default)]
    pub caption: Option<String>,
    /// Documents.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Audio: a voice note (push-to-talk) rather than an audio file.
    #[serde(default)]
    pub ptt: bool,
}

/// Media an emulated phone received, fetched from the blob host and decrypted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMedia {
    pub kind: MediaKind,
    /// As the message declared it (empty when it did not).
    pub mimetype: String,
    pub caption: Option<String>,
    pub file_name: Option<String>,
    /// Audio sent as a voice note.
    #[serde(default)]
    pub ptt: bool,
    /// The decrypted, verified file; empty when `error` is set.
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    /// Why the file could not be fetched, verified or decrypted.
    #[serde(default)]
    pub error: Option<String>,
}

/// The blob host's storage: ciphertexts by direct path, and the media auth tokens issued.
pub(crate) struct MediaStore {
    /// `IP:PORT` as named in `<host hostname>`.
    host: String,
    /// `data_dir/blobs`, when blobs persist.
    dir: Option<PathBuf>,
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    /// In memory (no data directory): `{type}/{id}.enc` → ciphertext.
    blobs: HashMap<String, Vec<u8>>,
    auths: VecDeque<String>,
}

/// `[a-z0-9-]`, as the mms types are.
fn valid_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= 40 && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// 32 lowercase hex digits and `.enc`.
fn valid_file(f: &str) -> bool {
    f.strip_suffix(".enc").is_some_and(|id| id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl MediaStore {
    pub(crate) fn new(host: String, dir: Option<PathBuf>) -> Self {
        Self { host, dir, inner: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// A fresh media auth token, as a `<media_conn>` answer hands out.
    pub(crate) fn issue_auth(&self) -> String {
        let mut bytes = [0u8; 24];
        rand::rng().fill(&mut bytes);
        let auth = BASE64_URL_SAFE_NO_PAD.encode(bytes);
        let mut inner = self.lock();
        inner.auths.push_back(auth.clone());
        if inner.auths.len() > KEEP_AUTHS {
            inner.auths.pop_front();
        }
        auth
    }

    fn auth_ok(&self, auth: &str) -> bool {
        self.lock().auths.iter().any(|a| a == auth)
    }

    /// Stores a ciphertext under a fresh direct path (`/v/{type}/{id}.enc`) and returns it.
    pub(crate) fn put(&self, mms_type: &str, ciphertext: Vec<u8>) -> anyhow::Result<String> {
        anyhow::ensure!(valid_type(mms_type), "bad media type {mms_type:?}");
        let mut id = [0u8; 16];
        rand::rng().fill(&mut id);
        let file = format!("{}.enc", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        match &self.dir {
            Some(dir) => {
                let folder = dir.join(mms_type);
                std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
                let path = folder.join(&file);
                let tmp = folder.join(format!("{file}.tmp"));
                std::fs::write(&tmp, &ciphertext).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            }
            None => {
                self.lock().blobs.insert(format!("{mms_type}/{file}"), ciphertext);
            }
        }
        Ok(format!("/v/{mms_type}/{file}"))
    }

    /// The ciphertext stored under `direct_path` (a query string is ignored), if any.
    pub(crate) fn get(&self, direct_path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = direct_path.split('?').next().unwrap_or_default();
        let Some((mms_type, file)) = path.strip_prefix("/v/").and_then(|rest| rest.split_once('/')) else {
            return Ok(None);
        };
        self.get_parts(mms_type, file)
    }

    fn get_parts(&self, mms_type: &str, file: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !valid_type(mms_type) || !valid_file(file) {
            return Ok(None);
        }
        match &self.dir {
            Some(dir) => {
                let path = dir.join(mms_type).join(file);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            None => Ok(self.lock().blobs.get(&format!("{mms_type}/{file}")).cloned()),
        }
    }

    fn url(&self, direct_path: &str) -> String {
        format!("https://{}{direct_path}", self.host)
    }
}

/// The blob host's HTTP routes.
pub(crate) fn router(store: Arc<MediaStore>) -> Router {
    Router::new()
        .route("/mms/{mms_type}/{token}", post(upload))
        .route("/v/{mms_type}/{file}", get(download))
        .layer(DefaultBodyLimit::max(MAX_BLOB))
        .with_state(store)
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn upload(
    State(store): State<Arc<MediaStore>>,
    Path((mms_type, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !query.get("auth").is_some_and(|a| store.auth_ok(a)) {
        return refusal(StatusCode::UNAUTHORIZED, "unknown or expired media auth");
    }
    if query.contains_key("resume") {
        // Nothing is ever half uploaded here: start from the beginning.
        return axum::Json(json!({ "resume": "0" })).into_response();
    }
    if query.contains_key("file_offset") {
        return refusal(StatusCode::BAD_REQUEST, "resumed uploads are not emulated");
    }
    if !valid_type(&mms_type) {
        return refusal(StatusCode::NOT_FOUND, "unknown media type");
    }
    if body.is_empty() {
        return refusal(StatusCode::BAD_REQUEST, "empty upload");
    }
    if BASE64_URL_SAFE_NO_PAD.encode(sha256(&body)) != token {
        return refusal(StatusCode::BAD_REQUEST, "the token is not the SHA-256 of the upload");
    }
    let put = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.put(&mms_type, body.to_vec())
    })
    .await;
    match put {
        Ok(Ok(direct_path)) => axum::Json(json!({ "url": store.url(&direct_path), "direct_path": direct_path })).into_response(),
        Ok(Err(e)) => {
            tracing::error!("storing an upload: {e:#}");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the upload")
        }
        Err(_) => refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the upload"),
    }
}

async fn download(
    State(store): State<Arc<MediaStore>>,
    Path((mms_type, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let got = tokio::task::spawn_blocking(move || store.get_parts(&mms_type, &file)).await;
    match got {
        Ok(Ok(Some(blob))) => {
            // The CDN serves a path only with the hash it was uploaded under.
            if query.get("token").is_some_and(|t| *t != BASE64_URL_SAFE_NO_PAD.encode(sha256(&blob))) {
                return refusal(StatusCode::NOT_FOUND, "no such media");
            }
            ([(header::CONTENT_TYPE, "application/octet-stream")], blob).into_response()
        }
        Ok(Ok(None)) => refusal(StatusCode::NOT_FOUND, "no such media"),
        Ok(Err(e)) => {
            tracing::error!("reading a blob: {e:#}");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the media")
        }
        Err(_) => refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the media"),
    }
}

/// Encrypts `media` with a fresh media key, stores the ciphertext on the blob host and
/// builds the message a phone sends for it.
pub(crate) fn phone_message(store: &MediaStore, media: PhoneMedia, now: u64) -> Result<wa::Message, EmulatorError> {
    if media.mimetype.trim().is_empty() {
        return Err(EmulatorError::Invalid("mimetype is required".into()));
    }
    let media_type = media.kind.media_type();
    let enc = whatsapp_rust::wacore::upload::encrypt_media(&media.data, media_type)
        .map_err(|e| EmulatorError::Rejected(format!("encrypting the media: {e:#}")))?;
    let direct_path = store
        .put(media_type.mms_type(), enc.data_to_upload)
        .map_err(|e| EmulatorError::Rejected(format!("storing the media: {e:#}")))?;
    let url = Some(store.url(&direct_path));
    let direct_path = Some(direct_path);
    let media_key = Some(enc.media_key.to_vec());
    let file_sha256 = Some(enc.file_sha256.to_vec());
    let file_enc_sha256 = Some(enc.file_enc_sha256.to_vec());
    let file_length = Some(media.data.len() as u64);
    let media_key_timestamp = Some(i64::try_from(now).unwrap_or_default());
    let mimetype = Some(media.mimetype);
    let mut message = wa::Message::default();
    match media.kind {
        MediaKind::Image => {
            message.image_message = MessageField::some(wa::message::ImageMessage {
                url,
                direct_path,
                media_key,
                file_sha256,
                file_enc_sha256,
                file_length,
                media_key_timestamp,
                mimetype,
                caption: media.caption,
                ..Default::default()
            });
        }
        MediaKind::Video => {
            message.video_message = MessageField::some(wa::message::VideoMessage {
                url,
                direct_path,
                media_key,
                file_sha256,
                file_enc_sha256,
                file_length,
                media_key_timestamp,
                mimetype,
                caption: media.caption,
                streaming_sidecar: enc.streaming_sidecar,
                ..Default::default()
            });
        }
        MediaKind::Audio => {
            message.audio_message = MessageField::some(wa::message::AudioMessage {
                url,
                direct_path,
                media_key,
                file_sha256,
                file_enc_sha256,
                file_length,
                media_key_timestamp,
                mimetype,
                ptt: Some(media.ptt),
                streaming_sidecar: enc.streaming_sidecar,
                ..Default::default()
            });
        }
        MediaKind::Document => {
            message.document_message = MessageField::some(wa::message::DocumentMessage {
                url,
                direct_path,
                media_key,
                file_sha256,
                file_enc_sha256,
                file_length,
                media_key_timestamp,
                mimetype,
                title: media.file_name.clone(),
                file_name: media.file_name,
                caption: media.caption,
                ..Default::default()
            });
        }
        MediaKind::Sticker => {
            message.sticker_message = MessageField::some(wa::message::StickerMessage {
                url,
                direct_path,
                media_key,
                file_sha256,
                file_enc_sha256,
                file_length,
                media_key_timestamp,
                mimetype,
                ..Default::default()
            });
        }
    }
    Ok(message)
}

/// The media `message` carries, fetched from the blob store, verified and decrypted, as a
/// phone that received it would; `None` when it carries none. Failures are recorded in
/// [`ReceivedMedia::error`], never raised.
pub(crate) fn receive(store: &MediaStore, message: &wa::Message) -> Option<ReceivedMedia> {
    let base = message.get_base_message();
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let (kind, downloadable, mimetype, caption, file_name, ptt): (MediaKind, &dyn Downloadable, _, _, _, _) =
        if let Some(m) = base.image_message.as_option() {
            (MediaKind::Image, m as &dyn Downloadable, text(&m.mimetype), m.caption.clone(), None, false)
        } else if let Some(m) = base.video_message.as_option() {
            (MediaKind::Video, m as &dyn Downloadable, text(&m.mimetype), m.caption.clone(), None, false)
        } else if let Some(m) = base.audio_message.as_option() {
            (MediaKind::Audio, m as &dyn Downloadable, text(&m.mimetype), None, None, m.ptt.unwrap_or(false))
        } else if let Some(m) = base.document_message.as_option() {
            (MediaKind::Document, m as &dyn Downloadable, text(&m.mimetype), m.caption.clone(), m.file_name.clone(), false)
        } else if let Some(m) = base.sticker_message.as_option() {
            (MediaKind::Sticker, m as &dyn Downloadable, text(&m.mimetype), None, None, false)
        } else {
            return None;
        };
    let (data, error) = match fetch(store, downloadable) {
        Ok(data) => (data, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    Some(ReceivedMedia { kind, mimetype, caption, file_name, ptt, data, error })
}

fn fetch(store: &MediaStore, media: &dyn Downloadable) -> anyhow::Result<Vec<u8>> {
    let direct_path = media.direct_path().context("the message has no direct path")?;
    let media_key = media.media_key().context("the message has no media key")?;
    let blob = store.get(direct_path)?.with_context(|| format!("no media at {direct_path}"))?;
    if let Some(expected) = media.file_enc_sha256() {
        anyhow::ensure!(sha256(&blob).as_slice() == expected, "the stored file does not match fileEncSha256");
    }
    let plain = DownloadUtils::verify_and_decrypt(&blob, media_key, media.app_info())
        .map_err(|e| anyhow::anyhow!("cannot decrypt the media: {e}"))?;
    if let Some(expected) = media.file_sha256() {
        anyhow::ensure!(sha256(&plain).as_slice() == expected, "the decrypted file does not match fileSha256");
    }
    if let Some(length) = media.file_length() {
        anyhow::ensure!(plain.len() as u64 == length, "the decrypted file is {} bytes, fileLength says {length}", plain.len());
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: Option<PathBuf>) -> MediaStore {
        MediaStore::new("127.0.0.1:1".into(), dir)
    }

    #[test]
    fn a_phone_message_round_trips_through_the_store() {
        let s = store(None);
        let media = PhoneMedia {
            kind: MediaKind::Document,
            data: b"%PDF-1.4 not really".to_vec(),
            mimetype: "application/pdf".into(),
            caption: Some("the report".into()),
            file_name: Some("report.pdf".into()),
            ptt: false,
        };
        let message = phone_message(&s, media.clone(), 1_700_000_000).unwrap();
        let doc = message.document_message.as_option().unwrap();
        assert!(doc.direct_path.as_deref().unwrap().starts_with("/v/document/"));
        assert_eq!(doc.url.as_deref(), Some(format!("https://127.0.0.1:1{}", doc.direct_path.as_deref().unwrap()).as_str()));
        assert_eq!(doc.media_key_timestamp, Some(1_700_000_000));
        let got = receive(&s, &message).unwrap();
        assert_eq!(got.error, None);
        assert_eq!(got.data, media.data);
        assert_eq!((got.kind, got.mimetype.as_str()), (MediaKind::Document, "application/pdf"));
        assert_eq!((got.caption.as_deref(), got.file_name.as_deref()), (Some("the report"), Some("report.pdf")));

        // A wrong key: recorded as an error, the message kept.
        let mut forged = message.clone();
        forged.document_message.as_option_mut().unwrap().media_key = Some(vec![7; 32]);
        let got = receive(&s, &forged).unwrap();
        assert!(got.error.as_deref().unwrap().contains("decrypt"), "{got:?}");
        assert!(got.data.is_empty());
        // Gone from the store.
        let mut missing = message;
        missing.document_message.as_option_mut().unwrap().direct_path = Some(format!("/v/document/{}.enc", "0".repeat(32)));
        assert!(receive(&s, &missing).unwrap().error.as_deref().unwrap().contains("no media"));
        assert!(receive(&s, &wa::Message { conversation: Some("hi".into()), ..Default::default() }).is_none());
    }

    #[test]
    fn direct_paths_cannot_leave_the_blob_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Some(dir.path().join("blobs")));
        let path = s.put("image", vec![1, 2, 3]).unwrap();
        assert_eq!(s.get(&path).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.get(&format!("{path}?token=x")).unwrap(), Some(vec![1, 2, 3]));
        for bad in ["/v/../emulator.json", "/v/image/../../x.enc", "/v/image/x.enc", "/etc/passwd", "/v/IMAGE/00.enc"] {
            assert_eq!(s.get(bad).unwrap(), None, "{bad}");
        }
        assert!(s.put("../x", vec![1]).is_err());
    }
}
