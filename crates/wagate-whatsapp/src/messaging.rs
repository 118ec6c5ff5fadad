//! The messaging ability of a WhatsApp session: sending under the WhatsApp id fixed at accept
//! time, edits, revocations, read receipts, chat presence and number lookups, each through the
//! session's `whatsapp-rust` client.

use std::sync::Arc;

use async_trait::async_trait;
use wagate_core::{Jid, JidServer, Phone};
use wagate_engine::{
    ChatPresence, Content, EngineError, Messaging, NumberCheck, OutboundMessage, ReadMark, Sent,
};
use whatsapp_rust::Client;
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
        let body = outbound_body(&client, message)?;
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

/// The `wa::Message` for an outbound message.
fn outbound_body(client: &Client, message: &OutboundMessage) -> Result<wa::Message, EngineError> {
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
        Content::Reaction { target, emoji } => {
            let key = wa::MessageKey {
                remote_jid: Some(crate_jid(&message.chat).to_string()),
                // Which side sent the target is not known here; WhatsApp matches by id.
                from_me: Some(false),
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
        Content::Media(_) => return Err(EngineError::Unsupported("media on the whatsapp engine")),
        Content::Unsupported { .. } => return Err(EngineError::Unsupported("this kind of message")),
    })
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
