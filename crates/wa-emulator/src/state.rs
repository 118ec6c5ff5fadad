//! Accounts (simulated phones) and their linked companion devices, optionally persisted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PrivateKey};

use crate::media::ReceivedMedia;
use crate::signal::PhoneSignal;

/// What to create an account with; anything left out is generated.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSpec {
    /// Digits only, 8 to 15 of them.
    pub phone: Option<String>,
    pub push_name: Option<String>,
    /// The primary's platform as the companion is told (`android`, `iphone`, …). A WhatsApp
    /// Business app (`smba`, `smbi`) makes a business account, whose companions learn the
    /// business name at pairing (`<biz name>`).
    pub platform: Option<String>,
}

/// A WhatsApp account: the primary phone and its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub phone: String,
    /// `PHONE@s.whatsapp.net`
    pub jid: String,
    /// `LID@lid`
    pub lid: String,
    pub push_name: String,
    pub platform: String,
    pub business: bool,
    pub devices: Vec<Device>,
}

/// A companion device linked to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// `PHONE:N@s.whatsapp.net`
    pub jid: String,
    /// `LID:N@lid`
    pub lid: String,
    pub phone: String,
    pub device: u32,
    /// What the companion calls itself (its platform display name), if it said.
    pub name: Option<String>,
    /// Linked at, unix seconds.
    pub linked_at: u64,
    /// Logins accepted so far.
    pub logins: u32,
    /// Whether a logged-in connection of this device is open now.
    #[serde(skip_deserializing)]
    pub online: bool,
    #[serde(with = "b64")]
    pub(crate) noise_pub: Vec<u8>,
    #[serde(with = "b64")]
    pub(crate) identity_pub: Vec<u8>,
}

/// The persisted form of an account, with the phone's private identity key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountRecord {
    pub phone: String,
    pub lid_user: String,
    pub push_name: String,
    pub platform: String,
    #[serde(with = "b64")]
    pub identity_private: Vec<u8>,
    pub next_device: u32,
    pub next_key_index: u32,
    pub devices: Vec<Device>,
    #[serde(default)]
    pub business: bool,
    /// The phone as a Signal peer (its identity is the account key).
    #[serde(default)]
    pub signal: PhoneSignal,
    /// What the server keeps per companion device id: its ADV identity and uploaded keys.
    #[serde(default)]
    pub companions: BTreeMap<u32, CompanionState>,
    #[serde(default)]
    pub blocklist: Vec<String>,
    #[serde(default)]
    pub privacy: BTreeMap<String, String>,
    /// Messages the phone received and decrypted, oldest first.
    #[serde(default)]
    pub inbox: Vec<PhoneMessage>,
    /// Receipts for messages the phone sent.
    #[serde(default)]
    pub receipts: Vec<PhoneReceipt>,
    /// What the phone sent, by id, for retry receipts (the latest few).
    #[serde(default)]
    pub sent: Vec<SentMessage>,
    /// The app-state sync key the phone shares with its companions (id, key).
    #[serde(default, with = "b64")]
    pub app_state_key: Vec<u8>,
}

/// The server's record of one companion device.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompanionState {
    /// The ADV key index the phone gave it.
    pub key_index: u32,
    /// Its `ADVSignedDeviceIdentity` from pair-device-sign (served with its prekeys).
    #[serde(with = "b64")]
    pub device_identity: Vec<u8>,
    pub keys: Option<UploadedKeys>,
    /// Stanzas for it while it is offline, marshalled, oldest first.
    #[serde(default, with = "b64_list")]
    pub offline: Vec<Vec<u8>>,
    /// Whether the phone has shared the app-state key with it.
    #[serde(default)]
    pub key_shared: bool,
    /// Whether it was told its one-time prekeys run low (until it uploads more).
    #[serde(default)]
    pub low_notified: bool,
}

/// A companion's prekey upload: its bundle, with the one-time keys not yet handed out.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UploadedKeys {
    pub registration_id: u32,
    #[serde(with = "b64")]
    pub identity: Vec<u8>,
    pub skey_id: u32,
    #[serde(with = "b64")]
    pub skey_pub: Vec<u8>,
    #[serde(with = "b64")]
    pub skey_sig: Vec<u8>,
    #[serde(with = "b64_map")]
    pub prekeys: BTreeMap<u32, Vec<u8>>,
}

/// A message an emulated phone received, decrypted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneMessage {
    pub id: String,
    /// The sending device (`PHONE:D@s.whatsapp.net`).
    pub from: String,
    /// The chat: the other party, or for a copy of the phone's own companion's message,
    /// the chat it was sent to.
    pub chat: String,
    /// Sent by one of this phone's own companions (a device-sent copy).
    pub from_me: bool,
    /// The text, when the message has one (conversation or extended text).
    pub text: Option<String>,
    pub timestamp: u64,
    /// The decrypted `Message` protobuf.
    #[serde(with = "b64")]
    pub raw: Vec<u8>,
    /// The media the message carries (image, video, audio, document, sticker), fetched from
    /// the blob host and decrypted.
    #[serde(default)]
    pub media: Option<ReceivedMedia>,
}

impl PhoneMessage {
    pub fn message(&self) -> Option<whatsapp_rust::waproto::whatsapp::Message> {
        use whatsapp_rust::buffa::Message as _;
        whatsapp_rust::waproto::whatsapp::Message::decode_from_slice(&self.raw).ok()
    }
}

/// A receipt for a message an emulated phone sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneReceipt {
    pub id: String,
    /// The device that sent the receipt.
    pub from: String,
    /// `delivery`, `read`, `played`, …
    pub kind: String,
    pub timestamp: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SentMessage {
    pub id: String,
    pub chat: String,
    #[serde(with = "b64")]
    pub raw: Vec<u8>,
}

impl AccountRecord {
    pub fn generate(spec: &AccountSpec, taken: impl Fn(&str) -> bool) -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let phone = match &spec.phone {
            Some(p) => {
                anyhow::ensure!(
                    (8..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0'),
                    "phone must be 8 to 15 digits without a leading 0"
                );
                anyhow::ensure!(!taken(p), "an account with phone {p} exists");
                p.clone()
            }
            // 1555 01XX XXXX: the North American range set aside for fiction.
            None => loop {
                let p = format!("155501{:05}", rng.random_range(0..100_000u32));
                if !taken(&p) {
                    break p;
                }
            },
        };
        let lid_user = format!("{}", rng.random_range(100_000_000_000_000u64..999_999_999_999_999u64));
        let identity = KeyPair::generate(&mut rng);
        Ok(Self {
            push_name: spec.push_name.clone().unwrap_or_else(|| format!("Emulated {}", &phone[phone.len() - 4..])),
            platform: spec.platform.clone().unwrap_or_else(|| "android".to_owned()),
            phone,
            lid_user,
            identity_private: identity.private_key.serialize().to_vec(),
            next_device: 1,
            next_key_index: 1,
            devices: Vec::new(),
            business: matches!(spec.platform.as_deref(), Some("smba" | "smbi")),
            signal: PhoneSignal::generate(&identity)?,
            companions: BTreeMap::new(),
            blocklist: Vec::new(),
            privacy: BTreeMap::new(),
            inbox: Vec::new(),
            receipts: Vec::new(),
            sent: Vec::new(),
            app_state_key: Vec::new(),
        })
    }

    pub fn identity(&self) -> anyhow::Result<KeyPair> {
        let private =
            PrivateKey::deserialize(&self.identity_private).map_err(|e| anyhow::anyhow!("account key: {e}"))?;
        let public = private.public_key().map_err(|e| anyhow::anyhow!("account key: {e}"))?;
        Ok(KeyPair::new(public, private))
    }

    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.phone)
    }

    pub fn lid(&self) -> String {
        format!("{}@lid", self.lid_user)
    }

    pub fn view(&self, online: impl Fn(&str) -> bool) -> Account {
        Account {
            phone: self.phone.clone(),
            jid: self.jid(),
            lid: self.lid(),
            push_name: self.push_name.clone(),
            platform: self.platform.clone(),
            business: self.business,
            devices: self
                .devices
                .iter()
                .map(|d| Device { online: online(&d.jid), ..d.clone() })
                .collect(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Persisted {
    #[serde(with = "b64_opt", default)]
    pub server_key: Option<Vec<u8>>,
    pub accounts: Vec<AccountRecord>,
}

impl Persisted {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("emulator.json")
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

pub(crate) mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64_STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        BASE64_STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&BASE64_STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| BASE64_STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod b64_list {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| BASE64_STANDARD.encode(b)))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| BASE64_STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

pub(crate) mod b64_map {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k.to_string(), BASE64_STANDARD.encode(v))))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let k = k.parse().map_err(serde::de::Error::custom)?;
                let v = BASE64_STANDARD.decode(v).map_err(serde::de::Error::custom)?;
                Ok((k, v))
            })
            .collect()
    }
}

pub(crate) mod b64_map_str {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &BTreeMap<String, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, BASE64_STANDARD.encode(v))))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, BASE64_STANDARD.decode(v).map_err(serde::de::Error::custom)?)))
            .collect()
    }
}
