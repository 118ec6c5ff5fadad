//! The real `whatsapp-rust` client against the emulator, media: emulated phones send images,
//! voice notes and documents the client downloads; the client uploads media and sends it to
//! a phone, which fetches and decrypts it; the blob host refuses foreign auth and unknown
//! paths, and keeps its blobs across a restart.
//!
//! The client's media HTTP goes through the test-only seam of `common` (`https://` to the
//! emulator's blob host becomes `http://`).

mod common;

use std::sync::Arc;

use base64::Engine as _;
use base64::prelude::{BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use common::{Companion, PATIENCE, emulator, emulator_with};
use wa_emulator::{AccountSpec, EmulatorConfig, MediaKind, PhoneMedia};
use whatsapp_rust::Jid;
use whatsapp_rust::media::{DocumentOptions, ImageOptions};
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::download::{DownloadUtils, MediaType};
use whatsapp_rust::http::{HttpClient, HttpRequest, UreqHttpClient};

/// Bytes that look like nothing in particular, `n` long.
fn file(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sends_an_image_a_voice_note_and_a_document_the_client_downloads() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550101102".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550101101", "Ada").await;

    let image = file(1, 70_001);
    let id = emulator
        .phone_send_media(
            "15550101102",
            "15550101101",
            PhoneMedia {
                kind: MediaKind::Image,
                data: image.clone(),
                mimetype: "image/jpeg".into(),
                caption: Some("a view".into()),
                file_name: None,
                ptt: false,
            },
        )
        .unwrap();
    let message = ada.received(&id).await;
    let img = message.image_message.as_option().expect("an image message");
    assert_eq!((img.mimetype.as_deref(), img.caption.as_deref()), (Some("image/jpeg"), Some("a view")));
    assert_eq!(img.file_length, Some(image.len() as u64));
    assert!(img.media_key_timestamp.is_some() && img.url.as_deref().is_some_and(|u| u.starts_with("https://")));
    assert_eq!(ada.client.download(img).await.expect("the client downloads the image"), image);

    let voice = file(2, 12_345);
    let id = emulator
        .phone_send_media(
            "15550101102",
            "15550101101",
            PhoneMedia {
                kind: MediaKind::Audio,
                data: voice.clone(),
                mimetype: "audio/ogg; codecs=opus".into(),
                caption: None,
                file_name: None,
                ptt: true,
            },
        )
        .unwrap();
    let message = ada.received(&id).await;
    let audio = message.audio_message.as_option().expect("an audio message");
    assert_eq!(audio.ptt, Some(true));
    assert_eq!(audio.mimetype.as_deref(), Some("audio/ogg; codecs=opus"));
    assert_eq!(ada.client.download(audio).await.expect("the client downloads the voice note"), voice);

    let pdf = file(3, 4_096);
    let id = emulator
        .phone_send_media(
            "15550101102",
            "15550101101",
            PhoneMedia {
                kind: MediaKind::Document,
                data: pdf.clone(),
                mimetype: "application/pdf".into(),
                caption: None,
                file_name: Some("minutes.pdf".into()),
                ptt: false,
            },
        )
        .unwrap();
    let message = ada.received(&id).await;
    let doc = message.document_message.as_option().expect("a document message");
    assert_eq!((doc.file_name.as_deref(), doc.mimetype.as_deref()), (Some("minutes.pdf"), Some("application/pdf")));
    assert_eq!(ada.client.download(doc).await.expect("the client downloads the document"), pdf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_uploads_and_sends_media_the_phone_decrypts() {
    use tower::ServiceExt as _;
    let emulator = Arc::new(emulator().await);
    let dir = tempfile::tempdir().unwrap();
    emulator.create_account(AccountSpec { phone: Some("15550101202".into()), ..Default::default() }).unwrap();
    let ada = Companion::paired(&emulator, dir.path(), "15550101201", "Ada").await;
    let bob = Jid::pn("15550101202");

    let png = file(4, 33_333);
    let upload = ada.client.upload(png.clone(), MediaType::Image, UploadOptions::new()).await.expect("uploaded");
    assert!(upload.direct_path.starts_with("/v/image/"), "{}", upload.direct_path);
    let options = ImageOptions { caption: Some("look".into()), mimetype: Some("image/png".into()), ..Default::default() };
    let sent = ada.client.send_message(bob.clone(), whatsapp_rust::media::image_message(upload, options)).await.unwrap();
    let got = emulator.wait_for_phone_message("15550101202", PATIENCE, |m| m.id == sent.message_id).await.unwrap();
    let media = got.media.expect("the phone fetched the image");
    assert_eq!(media.error, None);
    assert_eq!((media.kind, media.mimetype.as_str(), media.caption.as_deref()), (MediaKind::Image, "image/png", Some("look")));
    assert_eq!(media.data, png);
    // Ada's own phone fetched its device-sent copy too.
    let copy = emulator.wait_for_phone_message("15550101201", PATIENCE, |m| m.id == sent.message_id).await.unwrap();
    assert!(copy.from_me);
    assert_eq!(copy.media.map(|m| m.data), Some(png.clone()));

    let doc = file(5, 100_000);
    let upload = ada.client.upload(doc.clone(), MediaType::Document, UploadOptions::new()).await.expect("uploaded");
    let options = DocumentOptions {
        mimetype: Some("text/csv".into()),
        file_name: Some("numbers.csv".into()),
        caption: Some("the numbers".into()),
        ..Default::default()
    };
    let sent = ada.client.send_message(bob.clone(), whatsapp_rust::media::document_message(upload, options)).await.unwrap();
    let got = emulator.wait_for_phone_message("15550101202", PATIENCE, |m| m.id == sent.message_id).await.unwrap();
    let media = got.media.expect("the phone fetched the document");
    assert_eq!(media.error, None);
    assert_eq!(media.kind, MediaKind::Document);
    assert_eq!((media.mimetype.as_str(), media.file_name.as_deref()), ("text/csv", Some("numbers.csv")));
    assert_eq!(media.caption.as_deref(), Some("the numbers"));
    assert_eq!(media.data, doc);

    // The control surface: the phone sends a video, and lists what it received with media.
    let router = wa_emulator::control::router(emulator.clone());
    let call = |method: &str, uri: &str, body: Option<serde_json::Value>| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap();
            (status.as_u16(), serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default())
        }
    };
    let clip = file(6, 20_000);
    let body = serde_json::json!({
        "to": "15550101201", "kind": "video", "mimetype": "video/mp4",
        "data": BASE64_STANDARD.encode(&clip), "caption": "moving"
    });
    let (status, answer) = call("POST", "/phones/15550101202/send-media", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let message = ada.received(answer["id"].as_str().unwrap()).await;
    let video = message.video_message.as_option().expect("a video message");
    assert_eq!(video.caption.as_deref(), Some("moving"));
    assert_eq!(ada.client.download(video).await.expect("the client downloads the video"), clip);
    let (status, answer) =
        call("POST", "/phones/15550101202/send-media", Some(serde_json::json!({"to": "15550101201", "kind": "gif", "mimetype": "x", "data": ""}))).await;
    assert!(status == 400 || status == 422, "{status} {answer}");

    let (status, list) = call("GET", "/phones/15550101202/messages", None).await;
    assert_eq!(status, 200);
    let shown = list.as_array().unwrap().iter().find(|m| m["id"] == sent.message_id.as_str()).expect("listed");
    assert_eq!(shown["media"]["kind"], "document");
    assert_eq!(shown["media"]["fileName"], "numbers.csv");
    assert_eq!(shown["media"]["data"], BASE64_STANDARD.encode(&doc));
}

/// The blob host refuses an upload with an auth it did not issue, has nothing at unknown
/// paths, and keeps blobs under `data_dir` across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_host_checks_auth_and_keeps_blobs_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let config = EmulatorConfig { data_dir: Some(data.path().to_owned()), ..Default::default() };
    let first = emulator_with(config.clone()).await;
    first.create_account(AccountSpec { phone: Some("15550101301".into()), ..Default::default() }).unwrap();
    first.create_account(AccountSpec { phone: Some("15550101302".into()), ..Default::default() }).unwrap();
    let http = UreqHttpClient::new();

    let body = file(7, 1_000);
    let token = BASE64_URL_SAFE_NO_PAD.encode(sha256(&body));
    let host = first.media_host();
    let forged = HttpRequest::post(format!("http://{host}/mms/image/{token}?auth=forged&token={token}")).with_body(body);
    assert_eq!(http.execute(forged).await.unwrap().status_code, 401);
    let unknown = HttpRequest::get(format!("http://{host}/v/image/{}.enc", "0".repeat(32)));
    assert_eq!(http.execute(unknown).await.unwrap().status_code, 404);

    // Phone to phone: the recipient has no companion, the message lands in its inbox.
    let picture = file(8, 5_000);
    let media = PhoneMedia {
        kind: MediaKind::Sticker,
        data: picture.clone(),
        mimetype: "image/webp".into(),
        caption: None,
        file_name: None,
        ptt: false,
    };
    let id = first.phone_send_media("15550101301", "15550101302", media).unwrap();
    let got = first.wait_for_phone_message("15550101302", PATIENCE, |m| m.id == id).await.unwrap();
    assert_eq!(got.media.as_ref().map(|m| (m.kind, m.data.clone())), Some((MediaKind::Sticker, picture.clone())));
    let sticker = got.message().unwrap().sticker_message.as_option().unwrap().clone();
    drop(first);

    let second = emulator_with(config).await;
    let direct_path = sticker.direct_path.as_deref().unwrap();
    let token = BASE64_URL_SAFE_NO_PAD.encode(sticker.file_enc_sha256.as_deref().unwrap());
    let fetched = http.execute(HttpRequest::get(format!("http://{}{direct_path}?token={token}", second.media_host()))).await.unwrap();
    assert_eq!(fetched.status_code, 200);
    assert_eq!(sha256(&fetched.body), sticker.file_enc_sha256.clone().unwrap());
    let plain = DownloadUtils::verify_and_decrypt(&fetched.body, sticker.media_key.as_deref().unwrap(), MediaType::Sticker).unwrap();
    assert_eq!(plain, picture);
    let kept = second.phone_messages("15550101302").into_iter().find(|m| m.id == id).expect("the inbox persisted");
    assert_eq!(kept.media.map(|m| m.data), Some(picture));
}
