//! After login: the IQs a client sends (prekeys, usync, props, blocklist, privacy), message
//! routing between companions and the emulated phones, receipts, presence, typing and the
//! offline queue.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use rand::RngExt;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::libsignal::protocol::{
    DeviceId, IdentityKey, KeyPair, PreKeyBundle, PreKeyId, ProtocolAddress, PublicKey, SignedPreKeyId,
};
use whatsapp_rust::wacore::messages::{MessageUtils, decode_plaintext, unwrap_device_sent, wrap_device_sent};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::wacore_binary::{Jid, Node, NodeContent, Server};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::server::Outbound;
use crate::state::{AccountRecord, PhoneMessage, PhoneReceipt, SentMessage, UploadedKeys};
use crate::{EmulatorError, Inner, SERVER, ServerEvent, Shared, iq_error, iq_result, unix_now};

/// Sent messages a phone keeps for retry receipts.
const KEEP_SENT: usize = 500;
/// Received messages and receipts a phone keeps.
const KEEP_INBOX: usize = 10_000;
/// Below this many one-time prekeys a companion is told to upload more (the client's own
/// minimum).
const LOW_PREKEYS: usize = 5;

/// The content of `node` as bytes.
pub(crate) fn bytes_of(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    node.get_optional_child(tag).and_then(bytes_of)
}

/// A big-endian unsigned integer of 1 to 4 bytes (ids on the wire are 3 bytes).
fn be_uint(bytes: &[u8]) -> Option<u32> {
    (!bytes.is_empty() && bytes.len() <= 4).then(|| bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// A random message id in the style WhatsApp phones use.
pub(crate) fn message_id() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("3A{hex}")
}

/// The Signal address the phones key their sessions by: the peer device's LID.
pub(crate) fn peer_address(account: &AccountRecord, device: u32) -> ProtocolAddress {
    ProtocolAddress::new(&format!("{}@lid", account.lid_user), DeviceId::from(device))
}

fn device_pn(account: &AccountRecord, device: u32) -> Jid {
    Jid::pn_device(account.phone.as_str(), device as u16)
}

fn device_lid(account: &AccountRecord, device: u32) -> Jid {
    Jid::lid_device(account.lid_user.as_str(), device as u16)
}

/// The text of a message, if it carries one.
pub(crate) fn text_of(message: &wa::Message) -> Option<String> {
    if let Some(text) = &message.conversation {
        return Some(text.clone());
    }
    message.extended_text_message.as_option().and_then(|e| e.text.clone())
}

impl Inner {
    /// The account and device a PN or LID JID names, if the device exists.
    pub(crate) fn locate(&self, jid: &Jid) -> Option<(usize, u32)> {
        let idx = match jid.server {
            Server::Pn => self.accounts.iter().position(|a| a.phone == jid.user.as_str()),
            Server::Lid => self.accounts.iter().position(|a| a.lid_user == jid.user.as_str()),
            _ => None,
        }?;
        let device = u32::from(jid.device);
        (device == 0 || self.accounts[idx].devices.iter().any(|d| d.device == device)).then_some((idx, device))
    }

    /// The account of a PN or LID user, any device.
    pub(crate) fn locate_user(&self, jid: &Jid) -> Option<usize> {
        match jid.server {
            Server::Pn => self.accounts.iter().position(|a| a.phone == jid.user.as_str()),
            Server::Lid => self.accounts.iter().position(|a| a.lid_user == jid.user.as_str()),
            _ => None,
        }
    }

    /// The account of a phone number, a PN JID or a LID JID given as text.
    pub(crate) fn locate_text(&self, who: &str) -> Option<usize> {
        if let Some(i) = self.accounts.iter().position(|a| a.phone == who) {
            return Some(i);
        }
        who.parse::<Jid>().ok().and_then(|j| self.locate_user(&j))
    }

    /// The account and device of a logged-in connection.
    pub(crate) fn conn_device(&self, conn: u64) -> Option<(usize, u32)> {
        let jid: Jid = self.conns.get(&conn)?.jid()?.parse().ok()?;
        self.locate(&jid)
    }

    /// Hands `node` to the companion's open connections, or queues it while it is offline.
    pub(crate) fn deliver(&mut self, account: usize, device: u32, node: Node) {
        let jid = device_pn(&self.accounts[account], device).to_string();
        let conns = self.conns_of(&jid);
        if conns.is_empty() {
            match marshal(&node) {
                Ok(bytes) => self.accounts[account].companions.entry(device).or_default().offline.push(bytes),
                Err(e) => tracing::warn!("cannot queue a stanza for {jid}: {e}"),
            }
        } else {
            for conn in conns {
                self.send(conn, Outbound::Node(node.clone()));
            }
        }
    }

    /// Sends `node` to the open connections of every companion of `account` but `except`.
    fn send_to_companions(&mut self, account: usize, except: Option<u32>, node: &Node, queue: bool) {
        let devices: Vec<u32> = self.accounts[account].devices.iter().map(|d| d.device).filter(|d| Some(*d) != except).collect();
        for device in devices {
            if queue {
                self.deliver(account, device, node.clone());
            } else {
                let jid = device_pn(&self.accounts[account], device).to_string();
                for conn in self.conns_of(&jid) {
                    self.send(conn, Outbound::Node(node.clone()));
                }
            }
        }
    }

    fn ensure_signal(&mut self, account: usize) -> anyhow::Result<KeyPair> {
        let a = &mut self.accounts[account];
        let identity = a.identity()?;
        if !a.signal.is_initialised() {
            a.signal = crate::signal::PhoneSignal::generate(&identity)?;
        }
        Ok(identity)
    }

    /// The phone of `from` encrypts `message` for every companion of `to` with keys, copies
    /// it to its own companions, and delivers both. Returns the message id.
    /// With a `fault`, the recipient's copies arrive corrupted (fault injection: the companion
    /// cannot decrypt them and must ask again with a retry receipt, which [`Fault::Lost`]
    /// leaves unanswered).
    pub(crate) fn phone_send(
        &mut self,
        from: usize,
        to: usize,
        message: &wa::Message,
        fault: Fault,
    ) -> Result<String, EmulatorError> {
        let id = message_id();
        let now = unix_now();
        let chat = self.accounts[to].jid();
        let mut targets: Vec<(usize, u32, wa::Message)> = Vec::new();
        for d in &self.accounts[to].devices {
            if from != to {
                targets.push((to, d.device, message.clone()));
            }
        }
        for d in &self.accounts[from].devices {
            targets.push((from, d.device, wrap_device_sent(message.clone(), chat.clone())));
        }
        let mut delivered = 0;
        for (account, device, content) in targets {
            let node = match self.phone_encrypt(from, account, device, &content) {
                Ok((kind, mut data)) => {
                    if fault != Fault::None && account == to {
                        corrupt_mac(kind, &mut data);
                    }
                    let mut b = NodeBuilder::new("message")
                        .attr("from", Jid::pn(self.accounts[from].phone.as_str()))
                        .attr("id", id.clone())
                        .attr("t", now.to_string())
                        .attr("type", message_type(message))
                        .attr("notify", self.accounts[from].push_name.clone())
                        .attr("sender_lid", Jid::lid(self.accounts[from].lid_user.as_str()));
                    if account == from {
                        b = b.attr("recipient", Jid::pn(self.accounts[to].phone.as_str()));
                    }
                    b.children([NodeBuilder::new("enc").attr("v", "2").attr("type", kind).bytes(data).build()]).build()
                }
                Err(e) => {
                    tracing::warn!("phone {} cannot encrypt for device {device}: {e:#}", self.accounts[from].phone);
                    continue;
                }
            };
            self.deliver(account, device, node);
            delivered += 1;
        }
        let from_account = &mut self.accounts[from];
        if fault != Fault::Lost {
            from_account.sent.push(SentMessage { id: id.clone(), chat, raw: message.encode_to_vec() });
            if from_account.sent.len() > KEEP_SENT {
                from_account.sent.remove(0);
            }
        }
        if from != to && self.accounts[to].devices.is_empty() {
            // Phone to phone: both ends are emulated, the message lands in the inbox as is.
            let record = PhoneMessage {
                id: id.clone(),
                from: self.accounts[from].jid(),
                chat: self.accounts[from].jid(),
                from_me: false,
                text: text_of(message),
                timestamp: now,
                raw: message.encode_to_vec(),
                media: crate::media::receive(&self.media, message),
            };
            push_capped(&mut self.accounts[to].inbox, record);
        }
        tracing::debug!(%id, delivered, "phone sent");
        Ok(id)
    }

    /// Encrypts `message` from the phone of `from` for companion `device` of `account`,
    /// starting a session from its uploaded keys when there is none.
    fn phone_encrypt(&mut self, from: usize, account: usize, device: u32, message: &wa::Message) -> anyhow::Result<(&'static str, Vec<u8>)> {
        let identity = self.ensure_signal(from)?;
        let address = peer_address(&self.accounts[account], device);
        if !self.accounts[from].signal.has_session(&address) {
            let bundle = self.take_companion_bundle(account, device)?;
            self.accounts[from].signal.start_session(&identity, &address, &bundle)?;
        }
        let plaintext = MessageUtils::encode_and_pad(message);
        self.accounts[from].signal.encrypt(&identity, &address, &plaintext)
    }

    /// A companion's bundle from its upload, handing out one one-time key (never twice).
    fn take_companion_bundle(&mut self, account: usize, device: u32) -> anyhow::Result<PreKeyBundle> {
        let phone = self.accounts[account].phone.clone();
        let keys = self.accounts[account]
            .companions
            .get_mut(&device)
            .and_then(|c| c.keys.as_mut())
            .with_context(|| format!("device {device} of {phone} uploaded no keys"))?;
        let one_time = keys.prekeys.pop_first();
        let bundle = bundle_from_upload(keys, device, one_time);
        self.check_prekeys_low(account, device);
        bundle
    }

    /// `<notification type="encrypt"><count value=N/>` once a companion's one-time prekeys
    /// run low; it answers with an upload.
    fn check_prekeys_low(&mut self, account: usize, device: u32) {
        let Some(companion) = self.accounts[account].companions.get_mut(&device) else { return };
        let left = companion.keys.as_ref().map_or(0, |k| k.prekeys.len());
        if left >= LOW_PREKEYS || companion.low_notified || companion.keys.is_none() {
            return;
        }
        companion.low_notified = true;
        let node = NodeBuilder::new("notification")
            .attr("from", SERVER)
            .attr("type", "encrypt")
            .attr("id", message_id())
            .attr("t", unix_now().to_string())
            .children([NodeBuilder::new("count").attr("value", left.to_string()).build()])
            .build();
        self.deliver(account, device, node);
    }

    /// The phone of `account` decrypts an `<enc>` one of the companions of `sender` sent it.
    fn phone_receive(&mut self, account: usize, sender: (usize, u32), kind: &str, data: &[u8]) -> anyhow::Result<wa::Message> {
        let identity = self.ensure_signal(account)?;
        let address = peer_address(&self.accounts[sender.0], sender.1);
        let plaintext = self.accounts[account].signal.decrypt(&identity, &address, kind, data)?;
        decode_plaintext(&plaintext, 2)
    }
}

fn push_capped<T>(list: &mut Vec<T>, item: T) {
    list.push(item);
    if list.len() > KEEP_INBOX {
        list.drain(..KEEP_INBOX / 10);
    }
}

/// The `type` attribute of a message stanza.
fn message_type(message: &wa::Message) -> &'static str {
    if message.reaction_message.is_set() {
        "reaction"
    } else if message.image_message.is_set()
        || message.video_message.is_set()
        || message.audio_message.is_set()
        || message.document_message.is_set()
        || message.sticker_message.is_set()
    {
        "media"
    } else {
        "text"
    }
}

fn bundle_from_upload(keys: &UploadedKeys, device: u32, one_time: Option<(u32, Vec<u8>)>) -> anyhow::Result<PreKeyBundle> {
    let key = |b: &[u8]| PublicKey::from_djb_public_key_bytes(b).map_err(|e| anyhow!("{e}"));
    let pre_key = match one_time {
        Some((id, public)) => Some((PreKeyId::from(id), key(&public)?)),
        None => None,
    };
    PreKeyBundle::new(
        keys.registration_id,
        DeviceId::from(device),
        pre_key,
        SignedPreKeyId::from(keys.skey_id),
        key(&keys.skey_pub)?,
        keys.skey_sig.clone(),
        IdentityKey::new(key(&keys.identity)?),
    )
    .map_err(|e| anyhow!("{e}"))
}

/// The bundle keys of a `<keys>`/upload node: registration, identity, skey, optional key.
/// A bundle's keys, and the one one-time key it carries if any (`(id, public)`).
type ParsedKeys = (UploadedKeys, Option<(u32, Vec<u8>)>);

fn keys_from_node(node: &Node) -> anyhow::Result<ParsedKeys> {
    let registration_id = child_bytes(node, "registration").and_then(be_uint).context("registration")?;
    let identity = child_bytes(node, "identity").context("identity")?.to_vec();
    anyhow::ensure!(identity.len() == 32, "identity is {} bytes", identity.len());
    let skey = node.get_optional_child("skey").context("skey")?;
    let skey_id = child_bytes(skey, "id").and_then(be_uint).context("skey id")?;
    let skey_pub = child_bytes(skey, "value").context("skey value")?.to_vec();
    let skey_sig = child_bytes(skey, "signature").context("skey signature")?.to_vec();
    anyhow::ensure!(skey_pub.len() == 32 && skey_sig.len() == 64, "malformed signed prekey");
    let one = |k: &Node| -> Option<(u32, Vec<u8>)> {
        let id = child_bytes(k, "id").and_then(be_uint)?;
        let value = child_bytes(k, "value")?;
        (value.len() == 32).then(|| (id, value.to_vec()))
    };
    let mut prekeys = BTreeMap::new();
    if let Some(list) = node.get_optional_child("list") {
        for k in list.get_children_by_tag("key") {
            let (id, value) = one(k).context("malformed one-time prekey")?;
            prekeys.insert(id, value);
        }
    }
    let single = node.get_optional_child("key").and_then(one);
    Ok((UploadedKeys { registration_id, identity, skey_id, skey_pub, skey_sig, prekeys }, single))
}

/// The signed-prekey signature is the identity's XEdDSA over the 33-byte serialized key.
fn verify_signed_prekey(keys: &UploadedKeys) -> anyhow::Result<()> {
    let identity = PublicKey::from_djb_public_key_bytes(&keys.identity).map_err(|e| anyhow!("{e}"))?;
    let skey = PublicKey::from_djb_public_key_bytes(&keys.skey_pub).map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(identity.verify_signature(&skey.serialize(), &keys.skey_sig), "bad signed-prekey signature");
    Ok(())
}

fn key_node(id: u32, value: &[u8]) -> Node {
    NodeBuilder::new("key")
        .children([
            NodeBuilder::new("id").bytes(id.to_be_bytes()[1..].to_vec()).build(),
            NodeBuilder::new("value").bytes(value.to_vec()).build(),
        ])
        .build()
}

fn skey_node(id: u32, value: &[u8], signature: &[u8]) -> Node {
    NodeBuilder::new("skey")
        .children([
            NodeBuilder::new("id").bytes(id.to_be_bytes()[1..].to_vec()).build(),
            NodeBuilder::new("value").bytes(value.to_vec()).build(),
            NodeBuilder::new("signature").bytes(signature.to_vec()).build(),
        ])
        .build()
}

/// `<user jid>` with a bundle, as a prekey fetch answers it.
fn bundle_user_node(jid: &str, registration: u32, identity: &[u8], skey: Node, key: Option<Node>, device_identity: Option<&[u8]>) -> Node {
    let mut children = vec![
        NodeBuilder::new("registration").bytes(registration.to_be_bytes().to_vec()).build(),
        NodeBuilder::new("type").bytes(vec![5]).build(),
        NodeBuilder::new("identity").bytes(identity.to_vec()).build(),
        skey,
    ];
    children.extend(key);
    if let Some(d) = device_identity.filter(|d| !d.is_empty()) {
        children.push(NodeBuilder::new("device-identity").bytes(d.to_vec()).build());
    }
    NodeBuilder::new("user").attr("jid", jid.to_owned()).children(children).build()
}

/// The `ADVSignedKeyIndexList` of an account: the key indexes of its companions, signed by
/// the account key.
fn key_index_list(account: &AccountRecord, now: u64) -> anyhow::Result<Vec<u8>> {
    let valid: Vec<u32> = account
        .devices
        .iter()
        .filter_map(|d| account.companions.get(&d.device).map(|c| c.key_index))
        .filter(|k| *k != 0)
        .collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(1),
        timestamp: Some(now),
        current_index: Some(account.next_key_index.saturating_sub(1)),
        valid_indexes: valid,
        ..Default::default()
    }
    .encode_to_vec();
    let identity = account.identity()?;
    let mut message = vec![6u8, 2];
    message.extend_from_slice(&details);
    let signature = identity
        .private_key
        .calculate_signature(&message, &mut rand::rng())
        .map_err(|e| anyhow!("{e}"))?;
    Ok(wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature.to_vec()),
        ..Default::default()
    }
    .encode_to_vec())
}

impl Shared {
    /// IQs of the messaging era. Returns `None` when the IQ is not one of them.
    pub(crate) fn on_messaging_iq(&self, conn: u64, id: &str, xmlns: &str, node: &Node) -> Option<Node> {
        let kind = attr(node, "type").unwrap_or_default();
        let child = node.children().and_then(|c| c.first());
        let child_tag = child.map(|c| c.tag.as_ref()).unwrap_or("");
        Some(match (xmlns, kind.as_str(), child_tag) {
            ("encrypt", "get", "count") => self.prekey_count(conn, id),
            ("encrypt", "get", "digest") => self.prekey_digest(conn, id),
            ("encrypt", "get", "key") => self.prekey_fetch(id, child?),
            ("encrypt", "set", "rotate") => self.rotate_signed_prekey(conn, id, child?),
            ("encrypt", "set", _) => self.prekey_upload(conn, id, node),
            ("usync", "get", "usync") => self.usync(conn, id, child?),
            ("w", "get", "props") => iq_result(
                id,
                Some(
                    NodeBuilder::new("props")
                        .attr("protocol", "2")
                        .attr("hash", "emu")
                        .children([NodeBuilder::new("prop").attr("name", "max_participants").attr("value", "1024").build()])
                        .build(),
                ),
            ),
            ("abt", "get", "props") => iq_result(
                id,
                Some(
                    NodeBuilder::new("props")
                        .attr("protocol", "1")
                        .attr("ab_key", "emu")
                        .attr("hash", "emu")
                        .attr("refresh", "86400")
                        .attr("delta_update", "false")
                        .build(),
                ),
            ),
            ("blocklist", "get", _) => self.blocklist(conn, id),
            ("blocklist", "set", "item") => self.block(conn, id, child?),
            ("privacy", "get", "privacy") => self.privacy(conn, id),
            ("privacy", "set", "privacy") => self.set_privacy(conn, id, child?),
            ("w:m", "set", "media_conn") => self.media_conn(id),
            _ => return None,
        })
    }

    /// `<media_conn auth ttl><host hostname/></media_conn>`: the blob host, and a fresh auth
    /// token its uploads must carry.
    fn media_conn(&self, id: &str) -> Node {
        let media = self.lock().media.clone();
        let host = NodeBuilder::new("host").attr("hostname", media.host().to_owned()).attr("type", "primary").build();
        let conn = NodeBuilder::new("media_conn")
            .attr("auth", media.issue_auth())
            .attr("ttl", crate::media::MEDIA_CONN_TTL.to_string())
            .attr("auth_ttl", crate::media::MEDIA_CONN_TTL.to_string())
            .attr("max_buckets", "12")
            .children([host])
            .build();
        iq_result(id, Some(conn))
    }

    fn with_device<T>(&self, conn: u64, f: impl FnOnce(&mut Inner, usize, u32) -> T) -> Option<T> {
        let mut inner = self.lock();
        let (a, d) = inner.conn_device(conn)?;
        Some(f(&mut inner, a, d))
    }

    fn prekey_count(&self, conn: u64, id: &str) -> Node {
        let count = self
            .with_device(conn, |inner, a, d| {
                inner.accounts[a].companions.get(&d).and_then(|c| c.keys.as_ref()).map_or(0, |k| k.prekeys.len())
            })
            .unwrap_or(0);
        iq_result(id, Some(NodeBuilder::new("count").attr("value", count.to_string()).build()))
    }

    fn prekey_digest(&self, conn: u64, id: &str) -> Node {
        let keys = self
            .with_device(conn, |inner, a, d| inner.accounts[a].companions.get(&d).and_then(|c| c.keys.clone()))
            .flatten();
        let Some(keys) = keys else {
            return iq_error(id, 404, "item-not-found");
        };
        let prekeys: Vec<&[u8]> = keys.prekeys.values().map(Vec::as_slice).collect();
        let hash =
            whatsapp_rust::wacore::prekeys::compute_key_bundle_digest(&keys.identity, &keys.skey_pub, &keys.skey_sig, &prekeys);
        let digest = NodeBuilder::new("digest")
            .children([
                NodeBuilder::new("registration").bytes(keys.registration_id.to_be_bytes().to_vec()).build(),
                NodeBuilder::new("type").bytes(vec![5]).build(),
                NodeBuilder::new("identity").bytes(keys.identity.clone()).build(),
                skey_node(keys.skey_id, &keys.skey_pub, &keys.skey_sig),
                NodeBuilder::new("list")
                    .children(
                        keys.prekeys
                            .keys()
                            .map(|k| NodeBuilder::new("id").bytes(k.to_be_bytes()[1..].to_vec()).build()),
                    )
                    .build(),
                NodeBuilder::new("hash").bytes(hash).build(),
            ])
            .build();
        iq_result(id, Some(digest))
    }

    fn prekey_upload(&self, conn: u64, id: &str, node: &Node) -> Node {
        let (keys, _) = match keys_from_node(node).and_then(|k| verify_signed_prekey(&k.0).map(|()| k)) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("refusing a prekey upload: {e:#}");
                return iq_error(id, 406, "not-acceptable");
            }
        };
        let uploaded = keys.prekeys.len();
        let first = self.with_device(conn, |inner, a, d| {
            let companion = inner.accounts[a].companions.entry(d).or_default();
            let first = companion.keys.is_none();
            companion.low_notified = false;
            match &mut companion.keys {
                // A top-up (same identity): new one-time keys join the unserved ones.
                Some(old) if old.identity == keys.identity && old.registration_id == keys.registration_id => {
                    old.skey_id = keys.skey_id;
                    old.skey_pub = keys.skey_pub;
                    old.skey_sig = keys.skey_sig;
                    old.prekeys.extend(keys.prekeys);
                }
                slot => *slot = Some(keys),
            }
            let jid = device_pn(&inner.accounts[a], d).to_string();
            self.save(inner);
            (first, a, d, jid)
        });
        let Some((first, account, device, jid)) = first else {
            return iq_error(id, 401, "not-authorized");
        };
        self.event(ServerEvent::PrekeysUploaded { jid, count: uploaded });
        if first {
            self.share_app_state_key(account, device);
        }
        iq_result(id, None)
    }

    fn rotate_signed_prekey(&self, conn: u64, id: &str, rotate: &Node) -> Node {
        let Some(skey) = rotate.get_optional_child("skey") else {
            return iq_error(id, 400, "bad-request");
        };
        let parsed = (|| {
            Some((
                child_bytes(skey, "id").and_then(be_uint)?,
                child_bytes(skey, "value")?.to_vec(),
                child_bytes(skey, "signature")?.to_vec(),
            ))
        })();
        let Some((skey_id, skey_pub, skey_sig)) = parsed else {
            return iq_error(id, 400, "bad-request");
        };
        let done = self.with_device(conn, |inner, a, d| {
            let Some(keys) = inner.accounts[a].companions.get_mut(&d).and_then(|c| c.keys.as_mut()) else {
                return false;
            };
            let candidate = UploadedKeys { skey_id, skey_pub, skey_sig, ..keys.clone() };
            if verify_signed_prekey(&candidate).is_err() {
                return false;
            }
            *keys = candidate;
            self.save(inner);
            true
        });
        match done {
            Some(true) => iq_result(id, None),
            Some(false) => iq_error(id, 406, "not-acceptable"),
            None => iq_error(id, 401, "not-authorized"),
        }
    }

    /// `<key><user jid reason/>…</key>`: one bundle per device, one-time keys handed out once.
    fn prekey_fetch(&self, id: &str, key: &Node) -> Node {
        let mut inner = self.lock();
        let mut users = Vec::new();
        for user in key.get_children_by_tag("user") {
            let Some(raw) = attr(user, "jid") else { continue };
            let located = raw.parse::<Jid>().ok().and_then(|j| inner.locate(&j));
            let node = match located {
                Some((a, 0)) => match inner.ensure_signal(a).and_then(|identity| {
                    let bundle = inner.accounts[a].signal.take_bundle(&identity)?;
                    let signed = skey_node(
                        bundle.signed_pre_key_id().map_err(|e| anyhow!("{e}"))?.into(),
                        bundle.signed_pre_key_public().map_err(|e| anyhow!("{e}"))?.public_key_bytes(),
                        bundle.signed_pre_key_signature().map_err(|e| anyhow!("{e}"))?,
                    );
                    let one = match (bundle.pre_key_id().map_err(|e| anyhow!("{e}"))?, bundle.pre_key_public().map_err(|e| anyhow!("{e}"))?) {
                        (Some(id), Some(k)) => Some(key_node(id.into(), k.public_key_bytes())),
                        _ => None,
                    };
                    let registration = inner.accounts[a].signal.registration_id;
                    Ok(bundle_user_node(&raw, registration, identity.public_key.public_key_bytes(), signed, one, None))
                }) {
                    Ok(node) => node,
                    Err(e) => {
                        tracing::warn!("no bundle for {raw}: {e:#}");
                        error_user(&raw, 500, "internal-server-error")
                    }
                },
                Some((a, d)) => {
                    let companion = inner.accounts[a].companions.get_mut(&d);
                    let node = match companion.and_then(|c| c.keys.as_mut().map(|k| (k, &c.device_identity))) {
                        Some((keys, device_identity)) => {
                            let one = keys.prekeys.pop_first().map(|(id, v)| key_node(id, &v));
                            bundle_user_node(
                                &raw,
                                keys.registration_id,
                                &keys.identity,
                                skey_node(keys.skey_id, &keys.skey_pub, &keys.skey_sig),
                                one,
                                Some(device_identity),
                            )
                        }
                        None => error_user(&raw, 404, "item-not-found"),
                    };
                    inner.check_prekeys_low(a, d);
                    node
                }
                None => error_user(&raw, 406, "not-acceptable"),
            };
            users.push(node);
        }
        self.save(&inner);
        iq_result(id, Some(NodeBuilder::new("list").children(users).build()))
    }

    /// usync: `<lid/>`, `<devices version="2"/>`, `<contact/>` (others answered empty).
    fn usync(&self, _conn: u64, id: &str, usync: &Node) -> Node {
        let inner = self.lock();
        let protocols: Vec<String> = usync
            .get_optional_child("query")
            .and_then(|q| q.children())
            .unwrap_or_default()
            .iter()
            .map(|p| p.tag.to_string())
            .collect();
        let now = unix_now();
        let mut users = Vec::new();
        let list = usync.get_optional_child("list").and_then(|l| l.children()).unwrap_or_default();
        for user in list.iter().filter(|u| u.tag == "user") {
            // By JID, or by phone number (`<contact>+1555…</contact>`).
            let by_jid = attr(user, "jid");
            let contact = user.get_optional_child("contact").and_then(|c| c.content_as_string()).map(|c| c.to_string());
            let located = match (&by_jid, &contact) {
                (Some(j), _) => j.parse::<Jid>().ok().and_then(|j| inner.locate_user(&j)),
                (None, Some(number)) => {
                    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                    inner.accounts.iter().position(|a| a.phone == digits)
                }
                _ => None,
            };
            let answer_jid = match (&by_jid, &contact, located) {
                (Some(j), _, _) => j.parse::<Jid>().map(|j| j.to_non_ad().to_string()).unwrap_or_else(|_| j.clone()),
                (None, _, Some(a)) => inner.accounts[a].jid(),
                (None, Some(number), None) => {
                    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                    format!("{digits}@s.whatsapp.net")
                }
                (None, None, None) => continue,
            };
            let mut children = Vec::new();
            for protocol in &protocols {
                match (protocol.as_str(), located) {
                    ("contact", Some(_)) => children.push(NodeBuilder::new("contact").attr("type", "in").build()),
                    ("contact", None) => children.push(NodeBuilder::new("contact").attr("type", "out").build()),
                    ("lid", Some(a)) => {
                        children.push(NodeBuilder::new("lid").attr("val", Jid::lid(inner.accounts[a].lid_user.as_str())).build());
                    }
                    ("lid", None) => children.push(NodeBuilder::new("lid").build()),
                    ("devices", Some(a)) => {
                        let account = &inner.accounts[a];
                        let mut devices = vec![NodeBuilder::new("device").attr("id", "0").build()];
                        for d in &account.devices {
                            if let Some(c) = account.companions.get(&d.device).filter(|c| c.key_index != 0) {
                                devices.push(
                                    NodeBuilder::new("device")
                                        .attr("id", d.device.to_string())
                                        .attr("key-index", c.key_index.to_string())
                                        .build(),
                                );
                            }
                        }
                        let mut parts = vec![NodeBuilder::new("device-list").children(devices).build()];
                        match key_index_list(account, now) {
                            Ok(bytes) => parts.push(NodeBuilder::new("key-index-list").attr("ts", now.to_string()).bytes(bytes).build()),
                            Err(e) => tracing::warn!("key-index list of {}: {e:#}", account.phone),
                        }
                        children.push(NodeBuilder::new("devices").children(parts).build());
                    }
                    ("devices", None) => children.push(
                        NodeBuilder::new("devices")
                            .children([NodeBuilder::new("error").attr("code", "404").attr("text", "not-found").build()])
                            .build(),
                    ),
                    ("business", Some(a)) if inner.accounts[a].business => {
                        children.push(NodeBuilder::new("business").build());
                    }
                    _ => {}
                }
            }
            let mut b = NodeBuilder::new("user").attr("jid", answer_jid);
            if let (Some(a), Some(j)) = (located, by_jid.as_deref())
                && j.ends_with("@lid")
            {
                b = b.attr("pn_jid", Jid::pn(inner.accounts[a].phone.as_str()));
            }
            users.push(b.children(children).build());
        }
        let mut result = NodeBuilder::new("usync");
        for a in ["sid", "mode", "context", "index", "last"] {
            if let Some(v) = attr(usync, a) {
                result = result.attr(a, v);
            }
        }
        iq_result(id, Some(result.children([NodeBuilder::new("list").children(users).build()]).build()))
    }

    fn blocklist(&self, conn: u64, id: &str) -> Node {
        let items = self.with_device(conn, |inner, a, _| inner.accounts[a].blocklist.clone()).unwrap_or_default();
        let list = NodeBuilder::new("list")
            .children(items.into_iter().map(|j| NodeBuilder::new("item").attr("jid", j).build()))
            .build();
        iq_result(id, Some(list))
    }

    fn block(&self, conn: u64, id: &str, item: &Node) -> Node {
        let (Some(jid), Some(action)) = (attr(item, "jid"), attr(item, "action")) else {
            return iq_error(id, 400, "bad-request");
        };
        self.with_device(conn, |inner, a, _| {
            let list = &mut inner.accounts[a].blocklist;
            list.retain(|j| *j != jid);
            if action == "block" {
                list.push(jid);
            }
            self.save(inner);
        });
        iq_result(id, None)
    }

    fn privacy(&self, conn: u64, id: &str) -> Node {
        let settings = self.with_device(conn, |inner, a, _| inner.accounts[a].privacy.clone()).unwrap_or_default();
        let mut all: BTreeMap<String, String> = [
            ("last", "all"),
            ("online", "all"),
            ("profile", "all"),
            ("status", "contacts"),
            ("groupadd", "all"),
            ("readreceipts", "all"),
            ("calladd", "all"),
            ("messages", "all"),
            ("stickers", "all"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        all.extend(settings);
        let privacy = NodeBuilder::new("privacy")
            .children(all.into_iter().map(|(k, v)| NodeBuilder::new("category").attr("name", k).attr("value", v).build()))
            .build();
        iq_result(id, Some(privacy))
    }

    fn set_privacy(&self, conn: u64, id: &str, privacy: &Node) -> Node {
        let changes: Vec<(String, String)> = privacy
            .get_children_by_tag("category")
            .filter_map(|c| Some((attr(c, "name")?, attr(c, "value")?)))
            .collect();
        if changes.is_empty() {
            return iq_error(id, 400, "bad-request");
        }
        self.with_device(conn, |inner, a, _| {
            inner.accounts[a].privacy.extend(changes.iter().cloned());
            self.save(inner);
        });
        let answer = NodeBuilder::new("privacy")
            .children(changes.into_iter().map(|(k, v)| NodeBuilder::new("category").attr("name", k).attr("value", v).build()))
            .build();
        iq_result(id, Some(answer))
    }

    /// The companion is active: its queued stanzas, then `<ib><offline count>`.
    pub(crate) fn drain_offline(&self, conn: u64) {
        let mut inner = self.lock();
        let queued = match inner.conn_device(conn) {
            Some((a, d)) => inner.accounts[a].companions.get_mut(&d).map(|c| std::mem::take(&mut c.offline)).unwrap_or_default(),
            None => Vec::new(),
        };
        let count = queued.len();
        for bytes in queued {
            let node = unpack(&bytes).ok().and_then(|d| unmarshal_ref(&d).ok().map(|n| n.to_owned()));
            match node {
                Some(mut node) => {
                    node.attrs.insert("offline", "1".to_owned());
                    inner.send(conn, Outbound::Node(node));
                }
                None => tracing::warn!("dropping an unreadable queued stanza"),
            }
        }
        let offline = NodeBuilder::new("ib")
            .attr("from", SERVER)
            .children([NodeBuilder::new("offline").attr("count", count.to_string()).build()])
            .build();
        inner.send(conn, Outbound::Node(offline));
        if count > 0 {
            self.save(&inner);
        }
    }

    /// A `<message>` from a companion: ack it, then one stanza per recipient device.
    pub(crate) fn on_client_message(&self, conn: u64, node: &Node) {
        let Some(id) = attr(node, "id") else { return };
        let to_raw = attr(node, "to").unwrap_or_default();
        let now = unix_now();
        let mut inner = self.lock();
        let Some(sender) = inner.conn_device(conn) else { return };
        let mut ack = NodeBuilder::new("ack").attr("class", "message").attr("id", id.clone()).attr("t", now.to_string());
        if !to_raw.is_empty() {
            ack = ack.attr("from", to_raw.clone());
        }
        inner.send(conn, Outbound::Node(ack.build()));
        let Ok(to) = to_raw.parse::<Jid>() else { return };
        if !matches!(to.server, Server::Pn | Server::Lid) {
            tracing::debug!("not routing a message to {to_raw} (groups are not emulated)");
            return;
        }
        let stanza_type = attr(node, "type").unwrap_or_else(|| "text".into());
        let category = attr(node, "category");
        let edit = attr(node, "edit");
        let device_identity = child_bytes(node, "device-identity").map(<[u8]>::to_vec);
        // Per-device encs, or one top-level enc for a peer message to one device.
        let mut encs: Vec<(Jid, &Node)> = Vec::new();
        if let Some(participants) = node.get_optional_child("participants") {
            for target in participants.get_children_by_tag("to") {
                if let (Some(jid), Some(enc)) = (target.attrs().optional_jid("jid"), target.get_optional_child("enc")) {
                    encs.push((jid, enc));
                }
            }
        }
        for enc in node.get_children_by_tag("enc") {
            encs.push((to.clone(), enc));
        }
        let chat_account = inner.locate_user(&to);
        let push_name = inner.accounts[sender.0].push_name.clone();
        let mut routed = 0;
        for (target, enc) in encs {
            let Some((account, device)) = inner.locate(&target) else {
                tracing::debug!("message {id}: no device {target}");
                continue;
            };
            let kind = attr(enc, "type").unwrap_or_default();
            let data = bytes_of(enc).unwrap_or_default().to_vec();
            if device == 0 {
                self.phone_got(&mut inner, account, sender, chat_account, &id, &kind, &data, now);
                routed += 1;
                continue;
            }
            if (account, device) == sender {
                continue;
            }
            let lid_addressed = target.server == Server::Lid;
            let from = if lid_addressed { device_lid(&inner.accounts[sender.0], sender.1) } else { device_pn(&inner.accounts[sender.0], sender.1) };
            let mut b = NodeBuilder::new("message")
                .attr("from", from)
                .attr("id", id.clone())
                .attr("t", now.to_string())
                .attr("type", stanza_type.clone())
                .attr("notify", push_name.clone());
            if lid_addressed {
                b = b.attr("sender_pn", Jid::pn(inner.accounts[sender.0].phone.as_str()));
            } else {
                b = b.attr("sender_lid", Jid::lid(inner.accounts[sender.0].lid_user.as_str()));
            }
            if account == sender.0 && category.is_none() {
                // A copy for the sender's own other device: which chat it went to.
                b = b.attr("recipient", to.to_non_ad());
            }
            if let Some(c) = &category {
                b = b.attr("category", c.clone());
            }
            if let Some(e) = &edit {
                b = b.attr("edit", e.clone());
            }
            let mut children = vec![enc.clone()];
            if kind == "pkmsg"
                && let Some(d) = &device_identity
            {
                children.push(NodeBuilder::new("device-identity").bytes(d.clone()).build());
            }
            inner.deliver(account, device, b.children(children).build());
            routed += 1;
        }
        self.save(&inner);
        let from = device_pn(&inner.accounts[sender.0], sender.1).to_string();
        drop(inner);
        self.event(ServerEvent::MessageRouted { id, from, to: to_raw, devices: routed });
    }

    /// The phone of `account` receives an `<enc>` from companion `sender`.
    #[allow(clippy::too_many_arguments)]
    fn phone_got(&self, inner: &mut Inner, account: usize, sender: (usize, u32), chat_account: Option<usize>, id: &str, kind: &str, data: &[u8], now: u64) {
        let phone = inner.accounts[account].phone.clone();
        let from = device_pn(&inner.accounts[sender.0], sender.1).to_string();
        match inner.phone_receive(account, sender, kind, data) {
            Ok(message) => {
                let own = account == sender.0;
                let (chat, message) = if own {
                    let chat = message
                        .device_sent_message
                        .as_option()
                        .and_then(|d| d.destination_jid.clone())
                        .or_else(|| chat_account.map(|c| inner.accounts[c].jid()))
                        .unwrap_or_default();
                    (chat, unwrap_device_sent(message))
                } else {
                    (inner.accounts[sender.0].jid(), message)
                };
                // Fetched and decrypted as the phone would on receipt; a failure is noted on
                // the message, which is kept.
                let media = crate::media::receive(&inner.media, &message);
                if let Some(error) = media.as_ref().and_then(|m| m.error.as_deref()) {
                    tracing::warn!("phone {phone} cannot fetch the media of {id}: {error}");
                }
                let record = PhoneMessage {
                    id: id.to_owned(),
                    from: from.clone(),
                    chat,
                    from_me: own,
                    text: text_of(&message),
                    timestamp: now,
                    raw: message.encode_to_vec(),
                    media,
                };
                push_capped(&mut inner.accounts[account].inbox, record);
                if !own {
                    // The phone's delivery receipt, to every device of the sender.
                    let receipt = NodeBuilder::new("receipt")
                        .attr("from", Jid::pn(phone.as_str()))
                        .attr("id", id.to_owned())
                        .attr("t", now.to_string())
                        .build();
                    inner.send_to_companions(sender.0, None, &receipt, true);
                }
                inner.push_event(ServerEvent::PhoneReceived { phone, id: id.to_owned(), from });
            }
            Err(e) => {
                tracing::warn!("phone {phone} cannot decrypt {id} from {from}: {e:#}");
                inner.push_event(ServerEvent::PhoneUndecryptable { phone, id: id.to_owned(), from, error: format!("{e:#}") });
            }
        }
        self.changed.notify_waiters();
    }

    /// A `<receipt>` from a companion: acked, then passed to the message's sender.
    pub(crate) fn on_client_receipt(&self, conn: u64, node: &Node) {
        let Some(id) = attr(node, "id") else { return };
        let kind = attr(node, "type");
        let now = unix_now();
        let mut inner = self.lock();
        let Some(sender) = inner.conn_device(conn) else { return };
        let to_raw = attr(node, "to").unwrap_or_default();
        let mut ack = NodeBuilder::new("ack").attr("class", "receipt").attr("id", id.clone()).attr("from", to_raw.clone());
        if let Some(k) = &kind {
            ack = ack.attr("type", k.clone());
        }
        inner.send(conn, Outbound::Node(ack.build()));
        let Ok(to) = to_raw.parse::<Jid>() else { return };
        let Some(target) = inner.locate_user(&to) else { return };
        let mut ids = vec![id.clone()];
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(list.get_children_by_tag("item").filter_map(|i| attr(i, "id")));
        }
        if kind.as_deref() == Some("retry") {
            if u32::from(to.device) == 0 && target != sender.0 {
                self.phone_retry(&mut inner, target, sender, &id, node);
            } else if let Some((a, d)) = inner.locate(&to) {
                let mut forwarded = node.clone();
                forwarded.attrs = Default::default();
                forwarded.attrs.insert("from", device_pn(&inner.accounts[sender.0], sender.1));
                forwarded.attrs.insert("id", id.clone());
                forwarded.attrs.insert("type", "retry".to_owned());
                forwarded.attrs.insert("t", now.to_string());
                inner.deliver(a, d, forwarded);
            }
            self.save(&inner);
            return;
        }
        let kind_text = kind.clone().unwrap_or_else(|| "delivery".into());
        let from_device = device_pn(&inner.accounts[sender.0], sender.1);
        if target != sender.0 {
            for i in &ids {
                let record = PhoneReceipt { id: i.clone(), from: from_device.to_string(), kind: kind_text.clone(), timestamp: now };
                push_capped(&mut inner.accounts[target].receipts, record);
            }
        }
        let mut b = NodeBuilder::new("receipt").attr("id", id.clone()).attr("t", now.to_string());
        if target == sender.0 {
            // read-self and the like: the other devices of the same account.
            b = b.attr("from", device_pn(&inner.accounts[sender.0], sender.1));
        } else {
            b = b.attr("from", if sender.1 == 0 { Jid::pn(inner.accounts[sender.0].phone.as_str()) } else { from_device.clone() });
        }
        if let Some(k) = &kind {
            b = b.attr("type", k.clone());
        }
        if let Some(list) = node.get_optional_child("list") {
            b = b.children([list.clone()]);
        }
        let except = (target == sender.0).then_some(sender.1);
        inner.send_to_companions(target, except, &b.build(), true);
        self.save(&inner);
        let phone = inner.accounts[target].phone.clone();
        drop(inner);
        self.event(ServerEvent::ReceiptRouted { id, from: from_device.to_string(), to: phone, kind: kind_text });
    }

    /// A companion could not decrypt what the phone sent: a fresh session from the keys in
    /// the retry receipt (or its upload), and the message again with `<enc count>`.
    fn phone_retry(&self, inner: &mut Inner, phone: usize, companion: (usize, u32), id: &str, receipt: &Node) {
        let count = receipt.get_optional_child("retry").and_then(|r| attr(r, "count")).unwrap_or_else(|| "1".into());
        let Some(sent) = inner.accounts[phone].sent.iter().find(|s| s.id == id).cloned() else {
            tracing::debug!("retry for unknown message {id}");
            return;
        };
        let Ok(message) = wa::Message::decode_from_slice(&sent.raw) else { return };
        let address = peer_address(&inner.accounts[companion.0], companion.1);
        let rebuilt = (|| -> anyhow::Result<(&'static str, Vec<u8>)> {
            let identity = inner.ensure_signal(phone)?;
            let bundle = match receipt.get_optional_child("keys") {
                Some(keys_node) => {
                    let mut with_reg = keys_node.clone();
                    if with_reg.get_optional_child("registration").is_none()
                        && let Some(r) = receipt.get_optional_child("registration")
                    {
                        let mut children = with_reg.children().map(<[Node]>::to_vec).unwrap_or_default();
                        children.push(r.clone());
                        with_reg.content = Some(NodeContent::Nodes(children));
                    }
                    let (keys, one) = keys_from_node(&with_reg)?;
                    bundle_from_upload(&keys, companion.1, one)?
                }
                None => inner.take_companion_bundle(companion.0, companion.1)?,
            };
            inner.accounts[phone].signal.drop_session(&address);
            inner.accounts[phone].signal.start_session(&identity, &address, &bundle)?;
            let content = if phone == companion.0 { wrap_device_sent(message.clone(), sent.chat.clone()) } else { message.clone() };
            inner.accounts[phone].signal.encrypt(&identity, &address, &MessageUtils::encode_and_pad(&content))
        })();
        match rebuilt {
            Ok((kind, data)) => {
                let node = NodeBuilder::new("message")
                    .attr("from", Jid::pn(inner.accounts[phone].phone.as_str()))
                    .attr("id", id.to_owned())
                    .attr("t", unix_now().to_string())
                    .attr("type", message_type(&message))
                    .attr("notify", inner.accounts[phone].push_name.clone())
                    .attr("sender_lid", Jid::lid(inner.accounts[phone].lid_user.as_str()))
                    .children([NodeBuilder::new("enc").attr("v", "2").attr("type", kind).attr("count", count).bytes(data).build()])
                    .build();
                inner.deliver(companion.0, companion.1, node);
                let phone_number = inner.accounts[phone].phone.clone();
                inner.push_event(ServerEvent::PhoneResent { phone: phone_number, id: id.to_owned() });
                self.changed.notify_waiters();
            }
            Err(e) => tracing::warn!("phone cannot honour the retry for {id}: {e:#}"),
        }
    }

    /// `<presence>` from a companion: availability, or a subscription to someone's.
    pub(crate) fn on_client_presence(&self, conn: u64, node: &Node) {
        let kind = attr(node, "type").unwrap_or_else(|| "available".into());
        let mut inner = self.lock();
        let Some((account, _)) = inner.conn_device(conn) else { return };
        match kind.as_str() {
            "subscribe" => {
                let Some(to) = node.attrs().optional_jid("to") else { return };
                let Some(target) = inner.locate_user(&to) else { return };
                let phone = inner.accounts[target].phone.clone();
                inner.subscriptions.entry(phone.clone()).or_default().insert(conn);
                let available = inner.presence.get(&phone).copied().unwrap_or(false);
                let update = presence_node(&to.to_non_ad(), available);
                inner.send(conn, Outbound::Node(update));
            }
            "available" | "unavailable" => {
                let phone = inner.accounts[account].phone.clone();
                let available = kind == "available";
                inner.presence.insert(phone.clone(), available);
                let update = presence_node(&Jid::pn(phone.as_str()), available);
                let subscribers: Vec<u64> = inner.subscriptions.get(&phone).map(|s| s.iter().copied().collect()).unwrap_or_default();
                for s in subscribers {
                    inner.send(s, Outbound::Node(update.clone()));
                }
            }
            _ => {}
        }
    }

    /// `<chatstate to>`: typing, passed on to the other party's companions.
    pub(crate) fn on_client_chatstate(&self, conn: u64, node: &Node) {
        let mut inner = self.lock();
        let Some((account, _)) = inner.conn_device(conn) else { return };
        let Some(to) = node.attrs().optional_jid("to") else { return };
        let Some(target) = inner.locate_user(&to) else { return };
        let state = node.children().and_then(|c| c.first()).map(|c| c.tag.to_string()).unwrap_or_default();
        let from = if to.server == Server::Lid { Jid::lid(inner.accounts[account].lid_user.as_str()) } else { Jid::pn(inner.accounts[account].phone.as_str()) };
        let mut forwarded = node.clone();
        forwarded.attrs = Default::default();
        forwarded.attrs.insert("from", from);
        inner.send_to_companions(target, None, &forwarded, false);
        let (phone, sender) = (inner.accounts[target].phone.clone(), inner.accounts[account].phone.clone());
        drop(inner);
        self.event(ServerEvent::ChatState { phone, from: sender, state });
    }

    /// The phone of `account` gives companion `device` the app-state sync key, so the
    /// companion's first login does not wait for it.
    pub(crate) fn share_app_state_key(&self, account: usize, device: u32) {
        let mut inner = self.lock();
        if inner.accounts[account].app_state_key.is_empty() {
            let mut key = vec![0u8; 38];
            rand::rng().fill(&mut key[..]);
            inner.accounts[account].app_state_key = key;
        }
        let key = inner.accounts[account].app_state_key.clone();
        let (key_id, key_data) = key.split_at(6);
        let fingerprint = wa::message::AppStateSyncKeyFingerprint {
            raw_id: Some(1),
            current_index: Some(0),
            device_indexes: vec![0],
        };
        let sync_key = wa::message::AppStateSyncKey {
            key_id: MessageField::some(wa::message::AppStateSyncKeyId { key_id: Some(key_id.to_vec()) }),
            key_data: MessageField::some(wa::message::AppStateSyncKeyData {
                key_data: Some(key_data.to_vec()),
                fingerprint: MessageField::some(fingerprint),
                timestamp: Some(i64::try_from(unix_now() * 1000).unwrap_or_default()),
            }),
        };
        let share = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::AppStateSyncKeyShare),
                app_state_sync_key_share: MessageField::some(wa::message::AppStateSyncKeyShare { keys: vec![sync_key] }),
                ..Default::default()
            }),
            ..Default::default()
        };
        match inner.phone_encrypt(account, account, device, &share) {
            Ok((kind, data)) => {
                let node = NodeBuilder::new("message")
                    .attr("from", Jid::pn(inner.accounts[account].phone.as_str()))
                    .attr("id", message_id())
                    .attr("t", unix_now().to_string())
                    .attr("type", "protocol")
                    .attr("category", "peer")
                    .children([NodeBuilder::new("enc").attr("v", "2").attr("type", kind).bytes(data).build()])
                    .build();
                inner.deliver(account, device, node);
                inner.accounts[account].companions.entry(device).or_default().key_shared = true;
                self.save(&inner);
            }
            Err(e) => tracing::warn!("the phone cannot share its app-state key: {e:#}"),
        }
    }
}

/// The phone's `critical_block` app-state patch for a companion's first sync: version 1,
/// one SET of `setting_pushName`, encrypted and MACed with the key the phone shared (the
/// key's first 6 bytes are its id). That is how a companion of a personal account learns
/// its push name.
pub(crate) fn push_name_patch(key: &[u8], push_name: &str) -> Option<Vec<u8>> {
    use whatsapp_rust::wacore::appstate::hash::{HashState, generate_patch_mac};
    use whatsapp_rust::wacore::appstate::{encode_record, expand_app_state_keys};
    const COLLECTION: &str = "critical_block";
    if key.len() != 38 {
        return None;
    }
    let (key_id, key_data) = key.split_at(6);
    let keys = expand_app_state_keys(key_data);
    let value = wa::SyncActionValue {
        timestamp: Some(i64::try_from(unix_now() * 1000).unwrap_or_default()),
        push_name_setting: MessageField::some(wa::sync_action_value::PushNameSetting { name: Some(push_name.to_owned()) }),
        ..Default::default()
    };
    let mut iv = [0u8; 16];
    rand::rng().fill(&mut iv);
    let (mutation, _) = encode_record(
        wa::syncd_mutation::SyncdOperation::SET,
        br#"["setting_pushName"]"#,
        &value,
        &keys,
        key_id,
        &iv,
        1,
    );
    let mut state = HashState::default();
    if let Some(record) = mutation.record.as_option() {
        state.update_hash_from_records(std::slice::from_ref(record));
    }
    state.version = 1;
    let mut patch = wa::SyncdPatch {
        version: MessageField::some(wa::SyncdVersion { version: Some(1) }),
        mutations: vec![mutation],
        snapshot_mac: Some(state.generate_snapshot_mac(COLLECTION, &keys.snapshot_mac)),
        key_id: MessageField::some(wa::KeyId { id: Some(key_id.to_vec()) }),
        ..Default::default()
    };
    patch.patch_mac = Some(generate_patch_mac(&patch, COLLECTION, &keys.patch_mac, 1));
    Some(patch.encode_to_vec())
}

fn presence_node(from: &Jid, available: bool) -> Node {
    let mut b = NodeBuilder::new("presence").attr("from", from.clone());
    if !available {
        b = b.attr("type", "unavailable").attr("last", unix_now().to_string());
    }
    b.build()
}

fn error_user(jid: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("user")
        .attr("jid", jid.to_owned())
        .children([NodeBuilder::new("error").attr("code", code.to_string()).attr("text", text.to_owned()).build()])
        .build()
}

/// Faults [`Inner::phone_send`] can inject into the recipient's copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Corrupted; the phone answers the companion's retry receipt with the message again.
    Garbled,
    /// Corrupted, and the phone keeps no copy: a retry receipt finds nothing to send again.
    Lost,
}

/// Flips a byte of the MAC that ends the Signal message in `data` (a `msg`, or the one inside
/// a `pkmsg`): the envelope still parses, and the decryption fails as it does on a real broken
/// session. (A `pkmsg` does not end with its inner message: flipping its last byte changed a
/// key id that an established session never reads, and the copy decrypted.)
fn corrupt_mac(kind: &str, data: &mut [u8]) {
    let end = match kind {
        "pkmsg" => whatsapp_rust::wacore::libsignal::protocol::PreKeySignalMessage::try_from(&*data).ok().and_then(|m| {
            let inner = m.message().serialized();
            data.windows(inner.len()).position(|w| w == inner).map(|at| at + inner.len())
        }),
        _ => Some(data.len()),
    };
    if let Some(end) = end.filter(|&end| end > 0) {
        data[end - 1] ^= 0x5a;
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use whatsapp_rust::wacore::iq::blocklist::{GetBlocklistSpec, UpdateBlocklistSpec};
    use whatsapp_rust::wacore::iq::prekeys::{DigestKeyBundleSpec, PreKeyCountSpec, PreKeyFetchSpec, PreKeyUploadSpec};
    use whatsapp_rust::wacore::iq::privacy::PrivacySettingsSpec;
    use whatsapp_rust::wacore::iq::props::PropsSpec;
    use whatsapp_rust::wacore::iq::spec::IqSpec;
    use whatsapp_rust::wacore::iq::usync::{
        DeviceListSpec, IsOnWhatsAppQueryType, IsOnWhatsAppSpec, IsOnWhatsAppUser, LidQuerySpec,
    };
    use whatsapp_rust::wacore::libsignal::protocol::IdentityKeyPair;
    use whatsapp_rust::wacore::request::{InfoQuery, InfoQueryType};

    use super::*;
    use crate::state::CompanionState;
    use crate::{AccountSpec, Conn, ConnKind, Device, Emulator, EmulatorConfig};

    struct Fixture {
        emu: Emulator,
        conn: u64,
        rx: mpsc::UnboundedReceiver<Outbound>,
        jid: String,
        lid_user: String,
        /// What the connection got besides IQ answers.
        other: Vec<Node>,
    }

    /// An account with companion device 1 logged in on a fake connection.
    async fn fixture(phone: &str) -> Fixture {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        emu.create_account(AccountSpec { phone: Some(phone.into()), ..Default::default() }).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let jid = format!("{phone}:1@s.whatsapp.net");
        let conn = 1_000_000;
        let lid_user = {
            let mut inner = emu.shared.lock();
            let account = inner.accounts.iter_mut().find(|a| a.phone == phone).unwrap();
            link(account, 1, 1);
            let lid_user = account.lid_user.clone();
            inner.conns.insert(conn, Conn { tx, kind: ConnKind::LoggedIn { jid: jid.clone() } });
            lid_user
        };
        Fixture { emu, conn, rx, jid, lid_user, other: Vec::new() }
    }

    fn link(account: &mut AccountRecord, device: u32, key_index: u32) {
        account.devices.push(Device {
            jid: format!("{}:{device}@s.whatsapp.net", account.phone),
            lid: format!("{}:{device}@lid", account.lid_user),
            phone: account.phone.clone(),
            device,
            name: None,
            linked_at: 0,
            logins: 1,
            online: false,
            noise_pub: vec![0; 32],
            identity_pub: vec![0; 32],
        });
        account.companions.insert(device, CompanionState { key_index, ..Default::default() });
        account.next_key_index = account.next_key_index.max(key_index + 1);
    }

    impl Fixture {
        /// Sends the IQ a spec builds and returns the answer.
        fn ask(&mut self, q: InfoQuery<'_>) -> Node {
            let kind = match q.query_type {
                InfoQueryType::Set => "set",
                InfoQueryType::Get => "get",
            };
            let mut b = NodeBuilder::new("iq").attr("id", "q1").attr("xmlns", q.namespace.to_owned()).attr("type", kind).attr("to", q.to.clone());
            if let Some(NodeContent::Nodes(children)) = q.content {
                b = b.children(children);
            }
            self.emu.shared.on_node(self.conn, b.build());
            while let Ok(out) = self.rx.try_recv() {
                if let Outbound::Node(n) = out {
                    if n.tag == "iq" {
                        return n;
                    }
                    self.other.push(n);
                }
            }
            panic!("no answer");
        }

        fn parse<S: IqSpec>(&mut self, spec: &S) -> S::Response {
            let answer = self.ask(spec.build_iq());
            assert_eq!(attr(&answer, "type").as_deref(), Some("result"), "{answer:?}");
            spec.parse_response(&answer.as_node_ref()).expect("the client's parser accepts the answer")
        }
    }

    fn error_code(node: &Node) -> Option<String> {
        (attr(node, "type").as_deref() == Some("error")).then(|| node.get_optional_child("error").and_then(|e| attr(e, "code"))).flatten()
    }

    fn upload_spec(identity: &IdentityKeyPair, ids: std::ops::Range<u32>) -> (PreKeyUploadSpec, Vec<(u32, PublicKey)>) {
        let mut rng = rand::rng();
        let skey = KeyPair::generate(&mut rng);
        let signature = identity.private_key().calculate_signature(&skey.public_key.serialize(), &mut rng).unwrap();
        let prekeys: Vec<(u32, PublicKey)> = ids.map(|id| (id, KeyPair::generate(&mut rng).public_key)).collect();
        (PreKeyUploadSpec::new(4242, *identity.public_key(), 7, skey.public_key, signature.to_vec(), prekeys.clone()), prekeys)
    }

    #[tokio::test]
    async fn prekey_upload_count_digest_and_fetch() {
        let mut f = fixture("15550100011").await;
        // Nothing stored yet: no digest (the client uploads on 404), a count of 0.
        assert_eq!(error_code(&f.ask(DigestKeyBundleSpec::new().build_iq())).as_deref(), Some("404"));
        assert_eq!(f.parse(&PreKeyCountSpec::new()).count, 0);

        let identity = IdentityKeyPair::generate(&mut rand::rng());
        let (upload, prekeys) = upload_spec(&identity, 1..6);
        f.parse(&upload);
        // The phone shared its app-state key with the new companion at once, which took one.
        assert!(
            f.other.iter().any(|n| n.tag == "message" && attr(n, "category").as_deref() == Some("peer")),
            "{:?}",
            f.other
        );
        assert_eq!(f.parse(&PreKeyCountSpec::new()).count, 4);
        assert_eq!(f.emu.prekey_count(&f.jid), Some(4));

        // The digest is what the client recomputes over its own keys.
        let digest = f.parse(&DigestKeyBundleSpec::new());
        assert_eq!(digest.reg_id, 4242);
        assert_eq!(digest.identity, identity.public_key().public_key_bytes());
        assert_eq!((digest.skey_id, digest.skey_pubkey.as_slice()), (7, upload.signed_pre_key_public.public_key_bytes()));
        assert_eq!(digest.prekey_ids, vec![2, 3, 4, 5]);
        let publics: Vec<&[u8]> = prekeys[1..].iter().map(|(_, k)| k.public_key_bytes()).collect();
        let expected = whatsapp_rust::wacore::prekeys::compute_key_bundle_digest(
            identity.public_key().public_key_bytes(),
            upload.signed_pre_key_public.public_key_bytes(),
            &upload.signed_pre_key_signature,
            &publics,
        );
        assert_eq!(digest.hash, expected);

        // A fetch hands out one one-time key, never the same twice; PN and LID both work,
        // and the JID is echoed as asked.
        let pn: Jid = f.jid.parse().unwrap();
        let first = f.parse(&PreKeyFetchSpec::new(vec![pn.clone()]));
        let bundle = first.bundles.get(&pn).expect("a bundle for the PN device");
        assert_eq!(bundle.registration_id().unwrap(), 4242);
        assert_eq!(bundle.pre_key_id().unwrap().map(u32::from), Some(2));
        let lid = Jid::lid_device(f.lid_user.as_str(), 1);
        let second = f.parse(&PreKeyFetchSpec::new(vec![lid.clone()]));
        assert_eq!(second.bundles.get(&lid).expect("a bundle for the LID device").pre_key_id().unwrap().map(u32::from), Some(3));
        assert_eq!(f.parse(&PreKeyCountSpec::new()).count, 2);

        // The phone (device 0) answers from its own Signal identity, the account key.
        let phone = Jid::pn("15550100011");
        let phone_bundle = f.parse(&PreKeyFetchSpec::new(vec![phone.clone()]));
        let account_key = f.emu.shared.lock().accounts[0].identity().unwrap();
        let b = phone_bundle.bundles.get(&phone).expect("the phone's bundle");
        assert_eq!(b.identity_key().unwrap().public_key(), &account_key.public_key);
        assert!(b.pre_key_id().unwrap().is_some());

        // An unknown device is refused per user, not for the whole IQ.
        let stranger = Jid::pn_device("15550100011", 9);
        let refused = f.parse(&PreKeyFetchSpec::new(vec![stranger.clone()]));
        assert!(refused.bundles.is_empty());
        assert_eq!(refused.rejected.len(), 1);

        // Exhausted: the bundle goes out without a one-time key.
        for _ in 0..2 {
            f.parse(&PreKeyFetchSpec::new(vec![pn.clone()]));
        }
        let last = f.parse(&PreKeyFetchSpec::new(vec![pn.clone()]));
        assert_eq!(last.bundles.get(&pn).unwrap().pre_key_id().unwrap(), None);
        // Running low was announced once, as the client's prekey-low handler expects.
        let low: Vec<&Node> = f
            .other
            .iter()
            .filter(|n| n.tag == "notification" && attr(n, "type").as_deref() == Some("encrypt"))
            .collect();
        assert_eq!(low.len(), 1, "{:?}", f.other);
        assert_eq!(low[0].get_optional_child("count").and_then(|c| attr(c, "value")).as_deref(), Some("4"));
        assert_eq!(f.parse(&PreKeyCountSpec::new()).count, 0);

        // A top-up adds keys; a bundle whose signed prekey is not signed by its identity is refused.
        let (more, _) = upload_spec(&identity, 6..9);
        f.parse(&more);
        assert_eq!(f.parse(&PreKeyCountSpec::new()).count, 3);
        let (mut forged, _) = upload_spec(&identity, 9..10);
        forged.signed_pre_key_signature[0] ^= 1;
        assert_eq!(error_code(&f.ask(forged.build_iq())).as_deref(), Some("406"));
    }

    #[tokio::test]
    async fn usync_answers_lid_devices_and_contacts_for_pn_and_lid() {
        let mut f = fixture("15550100021").await;
        f.emu.create_account(AccountSpec { phone: Some("15550100022".into()), ..Default::default() }).unwrap();
        let peer_lid = {
            let mut inner = f.emu.shared.lock();
            let peer = inner.accounts.iter_mut().find(|a| a.phone == "15550100022").unwrap();
            link(peer, 2, 4);
            link(peer, 3, 5);
            peer.lid_user.clone()
        };
        let peer = Jid::pn("15550100022");

        let lids = f.parse(&LidQuerySpec::new(vec![peer.clone(), Jid::pn("15550199999")], "s1"));
        assert_eq!(lids.lid_mappings.len(), 1);
        assert_eq!((lids.lid_mappings[0].phone_number.as_str(), lids.lid_mappings[0].lid.as_str()), ("15550100022", peer_lid.as_str()));

        for user in [peer.clone(), Jid::lid(peer_lid.as_str())] {
            let lists = f.parse(&DeviceListSpec::new(vec![user.clone()], "s2").require_complete_response());
            let list = &lists.device_lists[0];
            let devices: Vec<(u16, Option<u32>)> = list.devices.iter().map(|d| (d.device, d.key_index)).collect();
            assert_eq!(devices, vec![(0, None), (2, Some(4)), (3, Some(5))], "for {user}");
            let decoded = whatsapp_rust::wacore::adv::decode_key_index_list(list.key_index_bytes.as_deref().unwrap()).unwrap();
            assert_eq!(decoded.valid_indexes, vec![4, 5]);
            assert_eq!(decoded.current_index, 5);
        }

        let users = vec![
            IsOnWhatsAppUser { jid: peer.clone(), known_lid: None },
            IsOnWhatsAppUser { jid: Jid::pn("15550199999"), known_lid: None },
        ];
        let found = f.parse(&IsOnWhatsAppSpec::new(users, "s3", IsOnWhatsAppQueryType::Pn));
        let on = |n: &str| found.iter().find(|r| r.jid.user.as_str() == n).map(|r| (r.is_registered, r.lid.clone()));
        assert_eq!(on("15550100022"), Some((true, Some(Jid::lid(peer_lid.as_str())))));
        assert_eq!(on("15550199999"), Some((false, None)));
    }

    #[tokio::test]
    async fn props_blocklist_and_privacy_are_answered() {
        let mut f = fixture("15550100031").await;
        f.parse(&PropsSpec::new());
        let w = f.ask(InfoQuery::get("w", Jid::new("", Server::Pn), Some(NodeContent::Nodes(vec![NodeBuilder::new("props").attr("protocol", "2").build()]))));
        assert_eq!(attr(&w, "type").as_deref(), Some("result"));
        assert!(w.get_optional_child("props").is_some_and(|p| p.get_children_by_tag("prop").count() > 0));

        assert!(f.parse(&GetBlocklistSpec).is_empty());
        let pest = Jid::pn("15550177777");
        f.parse(&UpdateBlocklistSpec::block(&pest));
        let blocked = f.parse(&GetBlocklistSpec);
        assert_eq!(blocked.iter().map(|e| e.jid.clone()).collect::<Vec<_>>(), vec![pest.clone()]);
        f.parse(&UpdateBlocklistSpec::unblock(&pest));
        assert!(f.parse(&GetBlocklistSpec).is_empty());

        let privacy = f.parse(&PrivacySettingsSpec::new());
        assert!(privacy.settings.len() >= 8);
    }
}
