//! Accounts (simulated phones) and their linked companion devices, optionally persisted.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PrivateKey};

/// What to create an account with; anything left out is generated.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSpec {
    /// Digits only, 8 to 15 of them.
    pub phone: Option<String>,
    pub push_name: Option<String>,
    /// The primary's platform as the companion is told (`android`, `iphone`, `smba`, …).
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

mod b64 {
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
