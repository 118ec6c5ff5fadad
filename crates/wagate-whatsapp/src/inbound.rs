//! From what `whatsapp-rust` decrypted (a `wa::Message` and its `MessageInfo`) and its receipts
//! to the engine's [`Traffic`], and from wagate's JIDs to the crate's.
//!
//! Pure functions: the phone number of an `@lid` sender is looked up by the caller (the
//! client's LID ↔ PN store) and passed in, so every mapping here is unit-tested with
//! constructed messages.

use wagate_core::{ContactCard, Jid, Location, MediaInfo, MessageError, MessageType, Phone, Timestamp, hex};
use wagate_engine::{Content, InboundMessage, MediaContent, ReceiptKind, Traffic};
use whatsapp_rust::download::Downloadable;
use whatsapp_rust::Server;
use whatsapp_rust::types::events::{Receipt, UndecryptableMessage};
use whatsapp_rust::types::message::MessageInfo;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::whatsapp as wa;

type CrateJid = whatsapp_rust::Jid;

/// wagate's JID of a crate JID (device and agent dropped); `None` for servers wagate does not
/// address (newsletters, broadcasts, bots).
pub(crate) fn jid_of(jid: &CrateJid) -> Option<Jid> {
    match jid.server {
        Server::Pn | Server::Lid | Server::Group => Jid::parse(&jid.to_non_ad_string()).ok(),
        _ => None,
    }
}

/// The crate's JID of a wagate JID.
pub(crate) fn crate_jid(jid: &Jid) -> CrateJid {
    let user = jid.user().to_owned();
    match jid.server() {
        wagate_core::JidServer::User => CrateJid::pn(user),
        wagate_core::JidServer::Lid => CrateJid::lid(user),
        wagate_core::JidServer::Group => CrateJid::new(&user, Server::Group),
    }
}

/// The phone number of a PN JID.
pub(crate) fn phone_of(jid: &CrateJid) -> Option<Phone> {
    (jid.server == Server::Pn).then(|| Phone::parse(&jid.user).ok()).flatten()
}

/// What a delivered message means for the session: `None` for what wagate does not keep
/// (protocol housekeeping such as key shares). This account's own messages sent from its other
/// devices (the phone, WhatsApp Web) are kept, `from_me`, with the recipient as the chat.
pub(crate) fn traffic_of(message: &wa::Message, info: &MessageInfo, from_phone: Option<Phone>) -> Option<Traffic> {
    let chat = jid_of(&info.source.chat)?;
    let from = jid_of(&info.source.sender).unwrap_or_else(|| chat.clone());
    let at: Timestamp = info.timestamp;
    let base = message.get_base_message();

    if let Some(reaction) = base.reaction_message.as_option() {
        let target = reaction.key.as_option().and_then(|k| k.id.clone())?;
        let emoji = reaction.text.clone().unwrap_or_default();
        return Some(Traffic::Reaction { chat, from, target, emoji, at });
    }
    if let Some(protocol) = base.protocol_message.as_option() {
        use wa::message::protocol_message::Type;
        let target = protocol.key.as_option().and_then(|k| k.id.clone());
        return match (protocol.r#type, target) {
            (Some(Type::Revoke), Some(wa_message_id)) => Some(Traffic::Revoked { chat, from, wa_message_id, at }),
            (Some(Type::MessageEdit), Some(wa_message_id)) => {
                let edited = protocol.edited_message.as_option()?;
                let text = edited.get_base_message().text_content().or_else(|| edited.get_caption())?.to_owned();
                Some(Traffic::Edited { chat, from, wa_message_id, text, at })
            }
            // Key shares, history sync notices, ephemeral settings...: housekeeping.
            _ => None,
        };
    }

    let (content, context) = content_of(base, info)?;
    let (reply_to, mentions) = match context {
        Some(ctx) => (
            ctx.stanza_id.clone().filter(|s| !s.is_empty()),
            ctx.mentioned_jid.iter().filter_map(|j| Jid::parse(j).ok()).collect(),
        ),
        None => (None, Vec::new()),
    };
    let from_phone = from_phone.or_else(|| phone_of(&info.source.sender));
    Some(Traffic::Message(Box::new(InboundMessage {
        wa_message_id: info.id.to_string(),
        chat,
        from,
        from_me: info.source.is_from_me,
        from_phone,
        push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
        timestamp: at,
        content,
        reply_to,
        mentions,
        error: None,
    })))
}

/// The content of a user message and its context (quote, mentions); `None` for a message with
/// nothing a user sent (a bare sender-key distribution, an empty envelope).
fn content_of<'m>(base: &'m wa::Message, info: &MessageInfo) -> Option<(Content, Option<&'m wa::ContextInfo>)> {
    if let Some(text) = base.conversation.as_deref() {
        return Some((Content::Text(text.to_owned()), None));
    }
    if let Some(ext) = base.extended_text_message.as_option() {
        let text = ext.text.clone().unwrap_or_default();
        return Some((Content::Text(text), ext.context_info.as_option()));
    }
    if let Some(loc) = base.location_message.as_option() {
        let location = Location {
            latitude: loc.degrees_latitude.unwrap_or_default(),
            longitude: loc.degrees_longitude.unwrap_or_default(),
            name: loc.name.clone().filter(|s| !s.is_empty()),
            address: loc.address.clone().filter(|s| !s.is_empty()),
        };
        return Some((Content::Location(location), loc.context_info.as_option()));
    }
    if let Some(contact) = base.contact_message.as_option() {
        let card = ContactCard {
            name: contact.display_name.clone().unwrap_or_default(),
            phone: contact.vcard.as_deref().and_then(vcard_phone).unwrap_or_default(),
        };
        return Some((Content::Contact(card), contact.context_info.as_option()));
    }
    if let Some((media, context)) = media_of(base) {
        return Some((Content::Media(media), context));
    }
    let raw = raw_kind(base, info)?;
    Some((Content::Unsupported { raw }, None))
}

/// The description of the media a message carries (image, video, audio, document, sticker),
/// with no bytes yet: the caller downloads them ([`downloadable_of`]). `size` and `sha256` are
/// what the sender declared.
fn media_of(base: &wa::Message) -> Option<(MediaContent, Option<&wa::ContextInfo>)> {
    let info = |kind: MessageType, mime: &Option<String>, sha: &Option<Vec<u8>>, len: Option<u64>| MediaInfo {
        mime_type: mime.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| kind.default_mime().to_owned()),
        filename: None,
        size: len.unwrap_or_default(),
        sha256: sha.as_deref().map(hex).unwrap_or_default(),
        caption: None,
        voice: false,
    };
    let caption = |c: &Option<String>| c.clone().filter(|c| !c.is_empty());
    let (kind, info, context) = if let Some(m) = base.image_message.as_option() {
        let kind = MessageType::Image;
        (kind, MediaInfo { caption: caption(&m.caption), ..info(kind, &m.mimetype, &m.file_sha256, m.file_length) }, m.context_info.as_option())
    } else if let Some(m) = base.video_message.as_option() {
        let kind = MessageType::Video;
        (kind, MediaInfo { caption: caption(&m.caption), ..info(kind, &m.mimetype, &m.file_sha256, m.file_length) }, m.context_info.as_option())
    } else if let Some(m) = base.audio_message.as_option() {
        let kind = MessageType::Audio;
        (kind, MediaInfo { voice: m.ptt.unwrap_or(false), ..info(kind, &m.mimetype, &m.file_sha256, m.file_length) }, m.context_info.as_option())
    } else if let Some(m) = base.document_message.as_option() {
        let kind = MessageType::Document;
        let filename = m.file_name.clone().filter(|n| !n.is_empty());
        (
            kind,
            MediaInfo { filename, caption: caption(&m.caption), ..info(kind, &m.mimetype, &m.file_sha256, m.file_length) },
            m.context_info.as_option(),
        )
    } else if let Some(m) = base.sticker_message.as_option() {
        let kind = MessageType::Sticker;
        (kind, info(kind, &m.mimetype, &m.file_sha256, m.file_length), m.context_info.as_option())
    } else {
        return None;
    };
    Some((MediaContent { kind, info, bytes: Vec::new().into() }, context))
}

/// What to download for the media of `message`, when it carries any.
pub(crate) fn downloadable_of(message: &wa::Message) -> Option<&dyn Downloadable> {
    let base = message.get_base_message();
    let found: Option<&dyn Downloadable> = if let Some(m) = base.image_message.as_option() {
        Some(m)
    } else if let Some(m) = base.video_message.as_option() {
        Some(m)
    } else if let Some(m) = base.audio_message.as_option() {
        Some(m)
    } else if let Some(m) = base.document_message.as_option() {
        Some(m)
    } else if let Some(m) = base.sticker_message.as_option() {
        Some(m)
    } else {
        None
    };
    found
}

/// The first phone number of a vCard (`TEL;waid=628…:+62 8…` or `TEL:+62…`), digits only.
fn vcard_phone(vcard: &str) -> Option<String> {
    vcard.lines().find_map(|line| {
        let upper = line.to_ascii_uppercase();
        if !(upper.starts_with("TEL") || upper.contains(".TEL")) {
            return None;
        }
        if let Some(pos) = upper.find("WAID=") {
            let digits: String = line[pos + 5..].chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                return Some(digits);
            }
        }
        let value = line.rsplit_once(':').map(|(_, v)| v)?;
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    })
}

/// A name for a message kind wagate does not model; `None` when there is no user content at all.
fn raw_kind(base: &wa::Message, info: &MessageInfo) -> Option<String> {
    let named = [
        (base.ptv_message.is_set(), "ptv"),
        (base.contacts_array_message.is_set(), "contacts_array"),
        (base.live_location_message.is_set(), "live_location"),
        (base.poll_creation_message.is_set() || base.poll_creation_message_v2.is_set() || base.poll_creation_message_v3.is_set(), "poll"),
        (base.poll_update_message.is_set(), "poll_update"),
        (base.buttons_message.is_set(), "buttons"),
        (base.buttons_response_message.is_set(), "buttons_response"),
        (base.list_message.is_set(), "list"),
        (base.list_response_message.is_set(), "list_response"),
        (base.template_message.is_set(), "template"),
        (base.interactive_message.is_set(), "interactive"),
        (base.group_invite_message.is_set(), "group_invite"),
        (base.product_message.is_set(), "product"),
        (base.order_message.is_set(), "order"),
        (base.event_message.is_set(), "event"),
        (base.pin_in_chat_message.is_set(), "pin_in_chat"),
        (base.enc_reaction_message.is_set(), "enc_reaction"),
        (base.call.is_set(), "call"),
    ];
    if let Some((_, name)) = named.iter().find(|(set, _)| *set) {
        return Some((*name).to_owned());
    }
    if stripped_is_empty(base) {
        return None;
    }
    let kind = if info.media_type.is_empty() { info.r#type.clone() } else { format!("{}:{}", info.r#type, info.media_type) };
    Some(if kind.is_empty() { "unknown".to_owned() } else { kind })
}

/// Whether the message holds nothing but key material and message context.
fn stripped_is_empty(base: &wa::Message) -> bool {
    use whatsapp_rust::buffa::Message as _;
    let mut rest = base.clone();
    rest.sender_key_distribution_message = Default::default();
    rest.fast_ratchet_key_sender_key_distribution_message = Default::default();
    rest.message_context_info = Default::default();
    rest.encoded_len() == 0
}

/// A message the client could not decrypt, as a placeholder to store with an error, so it is
/// not lost: `undecryptable` (the client asked the sender to send it again; when it does, the
/// message replaces the placeholder) or `unavailable` (content WhatsApp does not give linked
/// devices, such as view-once media). `None` for this account's own messages.
pub(crate) fn undecryptable_traffic(event: &UndecryptableMessage) -> Option<Traffic> {
    let info = &*event.info;
    if info.source.is_from_me {
        return None;
    }
    let chat = jid_of(&info.source.chat)?;
    let from = jid_of(&info.source.sender).unwrap_or_else(|| chat.clone());
    let (raw, error) = if event.is_unavailable {
        let kind = format!("{:?}", event.unavailable_type).to_ascii_lowercase();
        (format!("unavailable:{kind}"), MessageError { code: "unavailable".into(), message: format!("WhatsApp does not give this message to linked devices ({kind})") })
    } else {
        (
            "undecryptable".to_owned(),
            MessageError {
                code: "undecryptable".into(),
                message: "the message could not be decrypted; the sender was asked to send it again".into(),
            },
        )
    };
    let from_phone = phone_of(&info.source.sender).or_else(|| info.source.sender_alt.as_ref().and_then(phone_of));
    Some(Traffic::Message(Box::new(InboundMessage {
        wa_message_id: info.id.to_string(),
        chat,
        from,
        from_me: false,
        from_phone,
        push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
        timestamp: info.timestamp,
        content: Content::Unsupported { raw },
        reply_to: None,
        mentions: Vec::new(),
        error: Some(error),
    })))
}

/// The status a receipt moves an outbound message to; `None` for receipts that say nothing
/// about delivery to the peer (our own devices' read-self, retries, server errors).
pub(crate) fn receipt_traffic(receipt: &Receipt) -> Option<Traffic> {
    let kind = match receipt.r#type {
        // `inactive`: delivered to a device that is not in the foreground.
        ReceiptType::Delivered | ReceiptType::Inactive => ReceiptKind::Delivered,
        ReceiptType::Read => ReceiptKind::Read,
        ReceiptType::Played => ReceiptKind::Played,
        _ => return None,
    };
    if receipt.source.is_from_me || receipt.message_ids.is_empty() {
        return None;
    }
    let chat = jid_of(&receipt.source.chat)?;
    Some(Traffic::Receipt {
        chat,
        wa_message_ids: receipt.message_ids.iter().map(ToString::to_string).collect(),
        kind,
        at: receipt.timestamp,
    })
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::buffa::MessageField;
    use whatsapp_rust::types::message::MessageSource;
    use whatsapp_rust::wacore::proto_helpers::MessageBuilderExt;

    use super::*;

    fn info(sender: CrateJid, chat: CrateJid) -> MessageInfo {
        MessageInfo {
            source: MessageSource { chat, sender, ..MessageSource::default() },
            id: "3EB0AAAABBBBCCCCDDDD01".into(),
            push_name: "Bob".into(),
            r#type: "text".into(),
            ..MessageInfo::default()
        }
    }

    fn lid_info() -> MessageInfo {
        let mut sender = CrateJid::lid("123456789012345");
        sender.device = 3;
        info(sender, CrateJid::lid("123456789012345"))
    }

    fn key(id: &str) -> MessageField<wa::MessageKey> {
        MessageField::some(wa::MessageKey { id: Some(id.into()), ..Default::default() })
    }

    #[test]
    fn a_text_from_a_lid_sender_carries_the_phone_given_and_drops_the_device() {
        let message = wa::Message { conversation: Some("hello".into()), ..Default::default() };
        let phone = Phone::parse("15550100101").unwrap();
        let Some(Traffic::Message(m)) = traffic_of(&message, &lid_info(), Some(phone.clone())) else { panic!() };
        assert_eq!(m.content, Content::Text("hello".into()));
        assert_eq!(m.from.as_str(), "123456789012345@lid");
        assert_eq!(m.chat.as_str(), "123456789012345@lid");
        assert_eq!(m.from_phone, Some(phone));
        assert_eq!(m.push_name.as_deref(), Some("Bob"));
        assert_eq!(m.wa_message_id, "3EB0AAAABBBBCCCCDDDD01");
    }

    #[test]
    fn a_pn_sender_is_its_own_phone_and_a_quote_and_mentions_are_kept() {
        let context = wa::ContextInfo {
            stanza_id: Some("3EB0QUOTED".into()),
            mentioned_jid: vec!["15550100101@s.whatsapp.net".into()],
            ..Default::default()
        };
        let message = wa::Message::text_with_context("re", context);
        let mut sender = CrateJid::pn("15550100102");
        sender.device = 0;
        let Some(Traffic::Message(m)) = traffic_of(&message, &info(sender, CrateJid::pn("15550100102")), None) else {
            panic!()
        };
        assert_eq!(m.from_phone.as_ref().map(Phone::as_str), Some("15550100102"));
        assert_eq!(m.reply_to.as_deref(), Some("3EB0QUOTED"));
        assert_eq!(m.mentions, vec![Jid::parse("15550100101@s.whatsapp.net").unwrap()]);
    }

    #[test]
    fn reactions_edits_and_revocations_become_their_traffic() {
        let reaction = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: key("3EB0TARGET"),
                text: Some("👍".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(Traffic::Reaction { target, emoji, .. }) = traffic_of(&reaction, &lid_info(), None) else { panic!() };
        assert_eq!((target.as_str(), emoji.as_str()), ("3EB0TARGET", "👍"));

        use wa::message::protocol_message::Type;
        let protocol = |kind, edited: Option<wa::Message>| wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: key("3EB0TARGET"),
                r#type: Some(kind),
                edited_message: edited.map_or_else(MessageField::none, MessageField::some),
                ..Default::default()
            }),
            ..Default::default()
        };
        let edit = protocol(Type::MessageEdit, Some(wa::Message::text("new text")));
        let Some(Traffic::Edited { wa_message_id, text, .. }) = traffic_of(&edit, &lid_info(), None) else { panic!() };
        assert_eq!((wa_message_id.as_str(), text.as_str()), ("3EB0TARGET", "new text"));
        let revoke = protocol(Type::Revoke, None);
        assert!(matches!(traffic_of(&revoke, &lid_info(), None), Some(Traffic::Revoked { wa_message_id, .. }) if wa_message_id == "3EB0TARGET"));
        let key_share = protocol(Type::AppStateSyncKeyShare, None);
        assert_eq!(traffic_of(&key_share, &lid_info(), None), None, "housekeeping is not stored");
    }

    #[test]
    fn media_is_described_from_what_the_sender_declared_and_downloaded_by_the_caller() {
        let voice = wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                mimetype: Some("audio/ogg; codecs=opus".into()),
                file_sha256: Some(vec![0xab; 32]),
                file_length: Some(1234),
                ptt: Some(true),
                direct_path: Some("/v/t62.7117-24/x.enc".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(Traffic::Message(m)) = traffic_of(&voice, &lid_info(), None) else { panic!() };
        let Content::Media(media) = &m.content else { panic!("{:?}", m.content) };
        assert_eq!(media.kind, MessageType::Audio);
        assert!(media.info.voice);
        assert_eq!((media.info.size, media.info.sha256.as_str()), (1234, "ab".repeat(32).as_str()));
        assert!(media.bytes.is_empty(), "the bytes are the caller's to download");
        assert_eq!(downloadable_of(&voice).and_then(|d| d.direct_path().map(str::to_owned)).as_deref(), Some("/v/t62.7117-24/x.enc"));

        let document = wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                file_name: Some("report.pdf".into()),
                caption: Some("Q3".into()),
                context_info: MessageField::some(wa::ContextInfo { stanza_id: Some("3EB0QUOTED".into()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(Traffic::Message(m)) = traffic_of(&document, &lid_info(), None) else { panic!() };
        let Content::Media(media) = &m.content else { panic!() };
        assert_eq!((media.kind, media.info.mime_type.as_str()), (MessageType::Document, "application/octet-stream"));
        assert_eq!((media.info.filename.as_deref(), media.info.caption.as_deref()), (Some("report.pdf"), Some("Q3")));
        assert_eq!(m.reply_to.as_deref(), Some("3EB0QUOTED"));
        assert!(downloadable_of(&wa::Message::text("no media")).is_none());
    }

    #[test]
    fn an_undecryptable_message_becomes_a_placeholder_with_an_error() {
        use whatsapp_rust::types::events::{DecryptFailMode, UnavailableType};
        let event = |unavailable: bool, kind: UnavailableType| {
            UndecryptableMessage::builder()
                .info(std::sync::Arc::new(info(CrateJid::pn("15550100101"), CrateJid::pn("15550100101"))))
                .is_unavailable(unavailable)
                .unavailable_type(kind)
                .decrypt_fail_mode(DecryptFailMode::Show)
                .build()
        };
        let Some(Traffic::Message(m)) = undecryptable_traffic(&event(false, UnavailableType::Unknown)) else { panic!() };
        assert_eq!(m.content, Content::Unsupported { raw: "undecryptable".into() });
        assert_eq!(m.error.as_ref().map(|e| e.code.as_str()), Some("undecryptable"));
        assert_eq!((m.wa_message_id.as_str(), m.from_phone.as_ref().map(Phone::as_str)), ("3EB0AAAABBBBCCCCDDDD01", Some("15550100101")));
        let Some(Traffic::Message(m)) = undecryptable_traffic(&event(true, UnavailableType::ViewOnce)) else { panic!() };
        assert_eq!(m.content, Content::Unsupported { raw: "unavailable:viewonce".into() });
        assert_eq!(m.error.as_ref().map(|e| e.code.as_str()), Some("unavailable"));
    }

    #[test]
    fn other_kinds_are_unsupported_with_their_name_and_key_shares_are_skipped() {
        let ptv = wa::Message { ptv_message: MessageField::some(Default::default()), ..Default::default() };
        let Some(Traffic::Message(m)) = traffic_of(&ptv, &lid_info(), None) else { panic!() };
        assert_eq!(m.content, Content::Unsupported { raw: "ptv".into() });

        let poll = wa::Message { poll_creation_message: MessageField::some(Default::default()), ..Default::default() };
        let Some(Traffic::Message(m)) = traffic_of(&poll, &lid_info(), None) else { panic!() };
        assert_eq!(m.content, Content::Unsupported { raw: "poll".into() });

        let keys_only = wa::Message {
            sender_key_distribution_message: MessageField::some(Default::default()),
            ..Default::default()
        };
        assert_eq!(traffic_of(&keys_only, &lid_info(), None), None);
    }

    /// What this account sent from its phone comes to its companions with the recipient as the
    /// chat: kept as the account's own message, not dropped.
    #[test]
    fn own_messages_from_other_devices_are_kept_as_from_me() {
        let mut mine = lid_info();
        mine.source.is_from_me = true;
        let Some(Traffic::Message(m)) = traffic_of(&wa::Message::text("typed on the phone"), &mine, None) else { panic!() };
        assert!(m.from_me);
        assert_eq!(m.chat, jid_of(&mine.source.chat).unwrap());
        assert_eq!(m.content, Content::Text("typed on the phone".into()));

        let theirs = traffic_of(&wa::Message::text("x"), &lid_info(), None);
        assert!(matches!(theirs, Some(Traffic::Message(m)) if !m.from_me));
    }

    #[test]
    fn contact_cards_and_locations_map() {
        let contact = wa::Message {
            contact_message: MessageField::some(wa::message::ContactMessage {
                display_name: Some("Ada".into()),
                vcard: Some("BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL;type=CELL;waid=15550100101:+1 555 0100 101\nEND:VCARD".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(Traffic::Message(m)) = traffic_of(&contact, &lid_info(), None) else { panic!() };
        assert_eq!(m.content, Content::Contact(ContactCard { name: "Ada".into(), phone: "15550100101".into() }));
        assert_eq!(vcard_phone("TEL:+49 151 1234"), Some("491511234".into()));

        let location = wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(-6.2),
                degrees_longitude: Some(106.8),
                name: Some("Monas".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Some(Traffic::Message(m)) = traffic_of(&location, &lid_info(), None) else { panic!() };
        assert_eq!(m.content, Content::Location(Location { latitude: -6.2, longitude: 106.8, name: Some("Monas".into()), address: None }));
    }

    #[test]
    fn jids_convert_both_ways() {
        for s in ["15550100101@s.whatsapp.net", "123456789012345@lid", "120363012345678901@g.us"] {
            let jid = Jid::parse(s).unwrap();
            assert_eq!(crate_jid(&jid).to_string(), s);
            assert_eq!(jid_of(&crate_jid(&jid)), Some(jid));
        }
        assert_eq!(jid_of(&CrateJid::new("123", Server::Newsletter)), None);
    }
}
