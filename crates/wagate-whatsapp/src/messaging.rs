//! The messaging ability of a WhatsApp session: sending under the WhatsApp id fixed at accept
//! time, edits, revocations, read receipts, chat presence and number lookups, each through the
//! session's `whatsapp-rust` client.

use std::sync::Arc;

use async_trait::async_trait;
use wagate_core::{Jid, JidServer, MessageType, Phone};
use wagate_engine::{
    ChatPresence, Content, EngineError, MediaContent, Messaging, NumberCheck, OutboundMessage, ReadMark, Sent,
};
use whatsapp_rust::Client;
use whatsapp_rust::download::MediaType;
use whatsapp_rust::http::HttpStatusError;
use whatsapp_rust::upload::{UploadOptions, UploadResponse};
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::request::IqError;
use whatsapp_rust::send::{RevokeType, SendError, SendOptions};
use whatsapp_rust::wacore::proto_helpers::{MessageBuilderExt, build_reaction_message};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::inbound::crate_jid;
use crate::session::WhatsappSession;

impl WhatsappSession {
    /// The client, when it is logged in (else `Upstream`: the runtime tries again once the
    /// session is connected).
    fn online(&self) -> Result<Arc<Client>, EngineError> {
        self.client()
            .filter(|c| c.is_logged_in())
            .ok_or_else(|| EngineError::Upstream("not connected to WhatsApp".into()))
    }
}

#[async_trait]
impl Messaging for WhatsappSession {
    async fn send(&self, message: &OutboundMessage) -> Result<Sent, EngineError> {
        let client = self.online()?;
        let uploaded = match &message.content {
            Content::Media(media) => Some(upload(&client, media).await?),
            _ => None,
        };
        let body = outbound_body(&client, message, uploaded)?;
        let options = SendOptions::default().with_message_id(message.wa_message_id.clone());
        client
            .send_message_with_options(crate_jid(&message.chat), body, options)
            .await
            .map_err(|e| send_error(&client, e))?;
        Ok(Sent { at: wagate_core::now() })
    }

    async fn edit(&self, chat: &Jid, wa_message_id: &str, text: &str) -> Result<(), EngineError> {
        let client = self.online()?;
        client
            .edit_message(crate_jid(chat), wa_message_id, wa::Message::text(text))
            .await
            .map_err(|e| send_error(&client, e))?;
        Ok(())
    }

    async fn revoke(&self, chat: &Jid, wa_message_id: &str) -> Result<(), EngineError> {
        let client = self.online()?;
        client
            .revoke_message(crate_jid(chat), wa_message_id, RevokeType::Sender)
            .await
            .map_err(|e| send_error(&client, e))
    }

    async fn mark_read(&self, chat: &Jid, messages: &[ReadMark]) -> Result<(), EngineError> {
        if messages.is_empty() {
            return Ok(());
        }
        let client = self.online()?;
        let to = crate_jid(chat);
        let upstream = |e: anyhow::Error| EngineError::Upstream(format!("read receipt failed: {e:#}"));
        if chat.server() == JidServer::Group {
            // In a group a read receipt names the sender: one per sender.
            let mut senders: Vec<&Jid> = messages.iter().map(|m| &m.from).collect();
            senders.sort();
            senders.dedup();
            for sender in senders {
                let ids: Vec<&str> =
                    messages.iter().filter(|m| &m.from == sender).map(|m| m.wa_message_id.as_str()).collect();
                client.mark_as_read(&to, Some(&crate_jid(sender)), &ids).await.map_err(upstream)?;
            }
        } else {
            let ids: Vec<&str> = messages.iter().map(|m| m.wa_message_id.as_str()).collect();
            client.mark_as_read(&to, None, &ids).await.map_err(upstream)?;
        }
        Ok(())
    }

    async fn presence(&self, chat: &Jid, presence: ChatPresence) -> Result<(), EngineError> {
        let client = self.online()?;
        let to = crate_jid(chat);
        let chatstate = client.chatstate();
        let sent = match presence {
            ChatPresence::Typing => chatstate.send_composing(&to).await,
            ChatPresence::Recording => chatstate.send_recording(&to).await,
            ChatPresence::Paused => chatstate.send_paused(&to).await,
        };
        sent.map_err(|e| EngineError::Upstream(format!("chat state failed: {e}")))
    }

    async fn check_numbers(&self, phones: &[Phone]) -> Result<Vec<NumberCheck>, EngineError> {
        if phones.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.online()?;
        let jids: Vec<whatsapp_rust::Jid> = phones.iter().map(|p| whatsapp_rust::Jid::pn(p.as_str())).collect();
        let found = client.contacts().is_on_whatsapp(&jids).await.map_err(|e| EngineError::Upstream(format!("number lookup failed: {e}")))?;
        Ok(phones
            .iter()
            .map(|phone| {
                let registered = found.iter().any(|r| {
                    r.is_registered
                        && (r.jid.user == phone.as_str() || r.pn_jid.as_ref().is_some_and(|j| j.user == phone.as_str()))
                });
                NumberCheck { phone: phone.clone(), jid: registered.then(|| Jid::of_phone(phone)) }
            })
            .collect())
    }
}

/// Encrypts and uploads the media of an outbound message (again on each attempt: a resend
/// after a crash uploads afresh and sends under the same WhatsApp id).
async fn upload(client: &Client, media: &MediaContent) -> Result<UploadResponse, EngineError> {
    let kind = match media.kind {
        MessageType::Image => MediaType::Image,
        MessageType::Video => MediaType::Video,
        MessageType::Audio => MediaType::Audio,
        MessageType::Document => MediaType::Document,
        MessageType::Sticker => MediaType::Sticker,
        _ => return Err(EngineError::Unsupported("this kind of media")),
    };
    let options = UploadOptions::new().with_streaming_sidecar(matches!(kind, MediaType::Audio | MediaType::Video));
    client.upload(media.bytes.to_vec(), kind, options).await.map_err(|e| upload_error(&e, client.is_logged_in()))
}

/// Maps a failed upload: offline is `Upstream` (again once connected); a refusal of the file
/// itself (a 4xx other than the auth errors the client already retried) fails the message;
/// anything else (the media host unreachable, a 5xx) backs the sender off and tries again.
fn upload_error(e: &anyhow::Error, connected: bool) -> EngineError {
    let status = e.chain().find_map(|c| c.downcast_ref::<HttpStatusError>()).map(|s| s.status);
    match status {
        _ if !connected => EngineError::Upstream(format!("media upload failed while disconnected: {e:#}")),
        Some(code @ 400..=499) if code != 401 && code != 403 && code != 429 => EngineError::Refused {
            code: "media_refused".into(),
            message: format!("WhatsApp's media host refused the file (HTTP {code})"),
        },
        _ => {
            tracing::warn!(error = %format!("{e:#}"), "media upload failed; the sender backs off");
            EngineError::RateLimited { retry_after: None }
        }
    }
}

/// The `wa::Message` for an outbound message; `uploaded` is its media on WhatsApp's host.
fn outbound_body(client: &Client, message: &OutboundMessage, uploaded: Option<UploadResponse>) -> Result<wa::Message, EngineError> {
    let context = || {
        if message.reply_to.is_none() && message.mentions.is_empty() {
            return None;
        }
        let mut ctx = wa::ContextInfo {
            mentioned_jid: message.mentions.iter().map(|j| crate_jid(j).to_string()).collect(),
            ..Default::default()
        };
        if let Some(quoted) = &message.reply_to {
            ctx.stanza_id = Some(quoted.wa_message_id.clone());
            let author = match &quoted.from {
                Some(from) => Some(crate_jid(from)),
                None => client.pn().map(|me| me.to_non_ad()),
            };
            ctx.participant = author.map(|a| a.to_string());
        }
        Some(ctx)
    };
    Ok(match &message.content {
        Content::Text(text) => match context() {
            Some(ctx) => wa::Message::text_with_context(text.clone(), ctx),
            None => wa::Message::text(text.clone()),
        },
        Content::Reaction { target, emoji, target_from_me } => {
            let key = wa::MessageKey {
                remote_jid: Some(crate_jid(&message.chat).to_string()),
                from_me: Some(*target_from_me),
                id: Some(target.clone()),
                participant: None,
            };
            build_reaction_message(key, emoji.clone(), wagate_core::now().timestamp_millis())
        }
        Content::Location(loc) => wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(loc.latitude),
                degrees_longitude: Some(loc.longitude),
                name: loc.name.clone(),
                address: loc.address.clone(),
                context_info: context().map_or_else(MessageField::none, MessageField::some),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Contact(card) => wa::Message {
            contact_message: MessageField::some(wa::message::ContactMessage {
                display_name: Some(card.name.clone()),
                vcard: Some(format!(
                    "BEGIN:VCARD\nVERSION:3.0\nFN:{name}\nTEL;type=CELL;waid={phone}:+{phone}\nEND:VCARD",
                    name = card.name,
                    phone = card.phone
                )),
                context_info: context().map_or_else(MessageField::none, MessageField::some),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Media(media) => {
            let up = uploaded.ok_or(EngineError::Internal("media sent without an upload".into()))?;
            media_message(media, up, context())
        }
        Content::Unsupported { .. } => return Err(EngineError::Unsupported("this kind of message")),
    })
}

/// The message carrying uploaded media, as a phone builds it.
fn media_message(media: &MediaContent, up: UploadResponse, context: Option<wa::ContextInfo>) -> wa::Message {
    let info = &media.info;
    let context = || context.clone().map_or_else(MessageField::none, MessageField::some);
    let caption = info.caption.clone().filter(|c| !c.is_empty());
    let mime = Some(info.mime_type.clone());
    let (url, direct_path, key, key_ts) =
        (Some(up.url), Some(up.direct_path), Some(up.media_key.to_vec()), Some(up.media_key_timestamp));
    let (sha, enc_sha, len) = (Some(up.file_sha256.to_vec()), Some(up.file_enc_sha256.to_vec()), Some(up.file_length));
    let mut message = wa::Message::default();
    match media.kind {
        MessageType::Image => {
            message.image_message = MessageField::some(wa::message::ImageMessage {
                url, direct_path, media_key: key, media_key_timestamp: key_ts, file_sha256: sha, file_enc_sha256: enc_sha,
                file_length: len, mimetype: mime, caption, context_info: context(), ..Default::default()
            });
        }
        MessageType::Video => {
            message.video_message = MessageField::some(wa::message::VideoMessage {
                url, direct_path, media_key: key, media_key_timestamp: key_ts, file_sha256: sha, file_enc_sha256: enc_sha,
                file_length: len, mimetype: mime, caption, streaming_sidecar: up.streaming_sidecar, context_info: context(),
                ..Default::default()
            });
        }
        MessageType::Audio => {
            message.audio_message = MessageField::some(wa::message::AudioMessage {
                url, direct_path, media_key: key, media_key_timestamp: key_ts, file_sha256: sha, file_enc_sha256: enc_sha,
                file_length: len, mimetype: mime, ptt: Some(info.voice), streaming_sidecar: up.streaming_sidecar,
                context_info: context(), ..Default::default()
            });
        }
        MessageType::Sticker => {
            message.sticker_message = MessageField::some(wa::message::StickerMessage {
                url, direct_path, media_key: key, media_key_timestamp: key_ts, file_sha256: sha, file_enc_sha256: enc_sha,
                file_length: len, mimetype: mime, context_info: context(), ..Default::default()
            });
        }
        _ => {
            let file_name = info.filename.clone().unwrap_or_else(|| "file".to_owned());
            message.document_message = MessageField::some(wa::message::DocumentMessage {
                url, direct_path, media_key: key, media_key_timestamp: key_ts, file_sha256: sha, file_enc_sha256: enc_sha,
                file_length: len, mimetype: mime, caption, title: Some(file_name.clone()), file_name: Some(file_name),
                context_info: context(), ..Default::default()
            });
        }
    }
    message
}

/// Maps a failed send: the connection's failures are `Upstream` (sent again once connected),
/// throttling is `RateLimited`, and what WhatsApp refused for this message is `Refused`.
fn send_error(client: &Client, e: SendError) -> EngineError {
    map_send_error(e, client.is_logged_in())
}

/// [`send_error`] for a client that is (`connected`) or is not logged in any more.
fn map_send_error(e: SendError, connected: bool) -> EngineError {
    match e {
        SendError::NotLoggedIn => EngineError::Upstream("not logged in to WhatsApp".into()),
        SendError::Iq(IqError::ServerError { code: 429, backoff, .. }) => {
            EngineError::RateLimited { retry_after: backoff.map(|s| std::time::Duration::from_secs(u64::from(s))) }
        }
        SendError::Iq(IqError::ServerError { code, text, .. }) => {
            EngineError::Refused { code: "refused".into(), message: format!("WhatsApp refused the message ({code} {text})") }
        }
        SendError::InvalidRequest(message) => EngineError::Refused { code: "invalid".into(), message },
        other if !connected => EngineError::Upstream(format!("send failed while disconnected: {other}")),
        SendError::Iq(
            iq @ (IqError::Timeout
            | IqError::NotConnected
            | IqError::Socket(_)
            | IqError::Disconnected(_)
            | IqError::InternalChannelClosed),
        ) => EngineError::Upstream(format!("send failed: {iq}")),
        SendError::Client(whatsapp_rust::ClientError::NotConnected) => EngineError::Upstream("not connected to WhatsApp".into()),
        other => EngineError::Refused { code: "send_failed".into(), message: format!("WhatsApp send failed: {other:#}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16, backoff: Option<u32>) -> SendError {
        SendError::Iq(IqError::ServerError { code, text: "x".into(), error_type: None, backoff })
    }

    #[test]
    fn send_errors_map_to_retry_back_off_or_fail() {
        let limited = map_send_error(server_error(429, Some(7)), true);
        assert!(matches!(limited, EngineError::RateLimited { retry_after: Some(d) } if d == std::time::Duration::from_secs(7)), "{limited:?}");
        assert!(matches!(map_send_error(server_error(463, None), true), EngineError::Refused { code, .. } if code == "refused"));
        assert!(matches!(map_send_error(SendError::NotLoggedIn, true), EngineError::Upstream(_)));
        assert!(matches!(map_send_error(SendError::Iq(IqError::Timeout), true), EngineError::Upstream(_)));
        assert!(matches!(map_send_error(SendError::Client(whatsapp_rust::ClientError::NotConnected), true), EngineError::Upstream(_)));
        let internal = || SendError::Internal(anyhow::anyhow!("no devices"));
        assert!(matches!(map_send_error(internal(), false), EngineError::Upstream(_)), "the connection dropped mid-send: again later");
        assert!(matches!(map_send_error(internal(), true), EngineError::Refused { code, .. } if code == "send_failed"));
        assert!(matches!(map_send_error(SendError::InvalidRequest("bad".into()), true), EngineError::Refused { code, .. } if code == "invalid"));
    }
}
