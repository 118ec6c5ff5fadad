//! The emulated phones as Signal peers: a small libsignal store that keeps every record as its
//! `serialize()` bytes (so it persists with the emulator's state), and the few operations a
//! phone needs: publish a bundle, start a session from a fetched bundle, encrypt, decrypt.
//!
//! The store lives in memory, so none of libsignal's store futures ever waits: the operations
//! run to completion synchronously ([`FutureExt::now_or_never`]) under the emulator's lock.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use futures::FutureExt as _;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::libsignal::protocol::{
    CiphertextMessage, DeviceId, Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore,
    ProtocolAddress, SessionRecord, SessionStore, SignalMessage, SignalProtocolError, SignedPreKeyId,
    SignedPreKeyRecord, SignedPreKeyStore, Timestamp, UsePQRatchet, message_decrypt, message_encrypt,
    process_prekey_bundle,
};

type SignalResult<T> = Result<T, SignalProtocolError>;

/// One-time prekeys a phone keeps published; topped up when fewer remain.
const ONE_TIME_KEYS: u32 = 20;

/// A phone's Signal state: identity (the account key), registration id, signed prekey,
/// one-time prekeys, the identities it trusts and its sessions, all as serialized records.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PhoneSignal {
    pub registration_id: u32,
    pub signed_prekey_id: u32,
    #[serde(with = "crate::state::b64")]
    pub signed_prekey: Vec<u8>,
    /// Private one-time prekeys by id, kept until a pkmsg consumes them.
    #[serde(with = "crate::state::b64_map")]
    pub prekeys: BTreeMap<u32, Vec<u8>>,
    /// One-time prekey ids not yet handed out by a prekey fetch.
    pub unserved: Vec<u32>,
    pub next_prekey_id: u32,
    #[serde(with = "crate::state::b64_map_str")]
    pub identities: BTreeMap<String, Vec<u8>>,
    #[serde(with = "crate::state::b64_map_str")]
    pub sessions: BTreeMap<String, Vec<u8>>,
}

impl PhoneSignal {
    /// Whether this state was ever set up (older state files have none).
    pub fn is_initialised(&self) -> bool {
        self.registration_id != 0 && !self.signed_prekey.is_empty()
    }

    /// A registration id, a signed prekey signed by `identity` and one-time prekeys.
    pub fn generate(identity: &KeyPair) -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let mut this = Self {
            registration_id: rng.random_range(1..16_380u32),
            signed_prekey_id: 1,
            next_prekey_id: 1,
            ..Default::default()
        };
        let signed = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .map_err(|e| anyhow!("signing the prekey: {e}"))?;
        let record = SignedPreKeyRecord::new(
            SignedPreKeyId::from(1),
            Timestamp::from_epoch_millis(crate::unix_now() * 1000),
            &signed,
            &signature,
        );
        this.signed_prekey = record.serialize().map_err(|e| anyhow!("{e}"))?;
        this.top_up()?;
        Ok(this)
    }

    /// Generates one-time prekeys until [`ONE_TIME_KEYS`] are unserved.
    pub fn top_up(&mut self) -> anyhow::Result<()> {
        let mut rng = rand::rng();
        while self.unserved.len() < ONE_TIME_KEYS as usize {
            let id = self.next_prekey_id.max(1);
            self.next_prekey_id = if id >= 0x00ff_ffff { 1 } else { id + 1 };
            let record = PreKeyRecord::new(PreKeyId::from(id), &KeyPair::generate(&mut rng));
            self.prekeys.insert(id, record.serialize().map_err(|e| anyhow!("{e}"))?);
            self.unserved.push(id);
        }
        Ok(())
    }

    /// This phone's bundle for a prekey fetch, handing out one one-time prekey (never twice).
    pub fn take_bundle(&mut self, identity: &KeyPair) -> anyhow::Result<PreKeyBundle> {
        if self.unserved.is_empty() {
            self.top_up()?;
        }
        let one_time = if self.unserved.is_empty() { None } else { Some(self.unserved.remove(0)) };
        let pre_key = match one_time {
            Some(id) => {
                let record = PreKeyRecord::deserialize(self.prekeys.get(&id).context("prekey record")?)
                    .map_err(|e| anyhow!("{e}"))?;
                Some((PreKeyId::from(id), record.public_key().map_err(|e| anyhow!("{e}"))?))
            }
            None => None,
        };
        let signed = SignedPreKeyRecord::deserialize(&self.signed_prekey).map_err(|e| anyhow!("{e}"))?;
        PreKeyBundle::new(
            self.registration_id,
            DeviceId::from(0),
            pre_key,
            SignedPreKeyId::from(self.signed_prekey_id),
            signed.public_key().map_err(|e| anyhow!("{e}"))?,
            signed.signature().map_err(|e| anyhow!("{e}"))?,
            IdentityKey::new(identity.public_key),
        )
        .map_err(|e| anyhow!("{e}"))
    }

    pub fn has_session(&self, address: &ProtocolAddress) -> bool {
        self.sessions.contains_key(address.as_str())
    }

    /// Starts a session with `address` from its fetched `bundle`.
    pub fn start_session(&mut self, identity: &KeyPair, address: &ProtocolAddress, bundle: &PreKeyBundle) -> anyhow::Result<()> {
        let (mut sessions, mut identities, _, _) = self.stores(identity);
        let mut rng = rand::rng();
        process_prekey_bundle(address, &mut sessions, &mut identities, bundle, &mut rng, UsePQRatchet::No)
            .now_or_never()
            .ok_or_else(|| anyhow!("a Signal store operation did not complete"))?
            .map_err(|e| anyhow!("starting a session with {}: {e}", address.as_str()))?;
        Ok(())
    }

    /// Encrypts `plaintext` (already padded) for `address`: `("pkmsg"|"msg", bytes)`.
    pub fn encrypt(&mut self, identity: &KeyPair, address: &ProtocolAddress, plaintext: &[u8]) -> anyhow::Result<(&'static str, Vec<u8>)> {
        let (mut sessions, mut identities, _, _) = self.stores(identity);
        let message = message_encrypt(plaintext, address, &mut sessions, &mut identities)
            .now_or_never()
            .ok_or_else(|| anyhow!("a Signal store operation did not complete"))?
            .map_err(|e| anyhow!("encrypting for {}: {e}", address.as_str()))?;
        let kind = match &message {
            CiphertextMessage::PreKeySignalMessage(_) => "pkmsg",
            CiphertextMessage::SignalMessage(_) => "msg",
            _ => return Err(anyhow!("unexpected ciphertext kind")),
        };
        Ok((kind, message.serialize().to_vec()))
    }

    /// Decrypts an `<enc type=pkmsg|msg>` from `address`; a consumed one-time prekey is removed.
    pub fn decrypt(&mut self, identity: &KeyPair, address: &ProtocolAddress, kind: &str, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let message = match kind {
            "pkmsg" => CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(data).map_err(|e| anyhow!("pkmsg: {e}"))?,
            ),
            "msg" => CiphertextMessage::SignalMessage(SignalMessage::try_from(data).map_err(|e| anyhow!("msg: {e}"))?),
            other => return Err(anyhow!("cannot decrypt enc type {other:?}")),
        };
        let mut rng = rand::rng();
        let result = {
            let (mut sessions, mut identities, mut prekeys, signed) = self.stores(identity);
            message_decrypt(&message, address, &mut sessions, &mut identities, &mut prekeys, &signed, &mut rng, UsePQRatchet::No)
                .now_or_never()
                .ok_or_else(|| anyhow!("a Signal store operation did not complete"))?
                .map_err(|e| anyhow!("decrypting from {}: {e}", address.as_str()))?
        };
        if let Some(id) = result.consumed_prekey_id {
            let id: u32 = id.into();
            self.prekeys.remove(&id);
            self.unserved.retain(|u| *u != id);
        }
        Ok(result.plaintext)
    }

    /// Forgets the session with `address` (a retry receipt asks for a fresh one).
    pub fn drop_session(&mut self, address: &ProtocolAddress) {
        self.sessions.remove(address.as_str());
    }

    fn stores<'a>(&'a mut self, identity: &'a KeyPair) -> (Sessions<'a>, Identities<'a>, PreKeys<'a>, SignedPreKeys<'a>) {
        (
            Sessions(&mut self.sessions),
            Identities { identity, registration_id: self.registration_id, known: &mut self.identities },
            PreKeys(&mut self.prekeys),
            SignedPreKeys { id: self.signed_prekey_id, record: &self.signed_prekey },
        )
    }
}

struct Sessions<'a>(&'a mut BTreeMap<String, Vec<u8>>);
struct Identities<'a> {
    identity: &'a KeyPair,
    registration_id: u32,
    known: &'a mut BTreeMap<String, Vec<u8>>,
}
struct PreKeys<'a>(&'a mut BTreeMap<u32, Vec<u8>>);
struct SignedPreKeys<'a> {
    id: u32,
    record: &'a [u8],
}

#[async_trait]
impl SessionStore for Sessions<'_> {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        // The emulator stores a record before the ciphertext leaves (under its lock), so it
        // needs no counter lease; with it, every reload would skip the rest of the leased
        // batch (63 counters per message) and bloat the peer's record with skipped keys, as a
        // real phone does not.
        let record = self.0.get(address.as_str()).map(|b| SessionRecord::deserialize(b)).transpose()?;
        Ok(record.map(|mut r| {
            r.waive_counter_lease();
            r
        }))
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(address.as_str()))
    }

    async fn store_session(&mut self, address: &ProtocolAddress, record: SessionRecord) -> SignalResult<()> {
        self.0.insert(address.as_str().to_owned(), record.serialize()?);
        Ok(())
    }
}

#[async_trait]
impl IdentityKeyStore for Identities<'_> {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(IdentityKeyPair::new(IdentityKey::new(self.identity.public_key), self.identity.private_key.clone()))
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(&mut self, address: &ProtocolAddress, identity: &IdentityKey) -> SignalResult<IdentityChange> {
        let new = identity.serialize().to_vec();
        let old = self.known.insert(address.name().to_owned(), new.clone());
        Ok(match old {
            Some(old) if old != new => IdentityChange::ReplacedExisting,
            _ => IdentityChange::NewOrUnchanged,
        })
    }

    /// Trust on first use, and a changed key too (the companion re-paired): the emulator
    /// plays a phone whose user always accepts the new safety number.
    async fn is_trusted_identity(&self, _: &ProtocolAddress, _: &IdentityKey, _: Direction) -> SignalResult<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        self.known.get(address.name()).map(|b| IdentityKey::decode(b)).transpose()
    }
}

#[async_trait]
impl PreKeyStore for PreKeys<'_> {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        let id: u32 = id.into();
        let bytes = self.0.get(&id).ok_or(SignalProtocolError::InvalidPreKeyId)?;
        PreKeyRecord::deserialize(bytes)
    }

    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.0.insert(id.into(), record.serialize()?);
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        let id: u32 = id.into();
        self.0.remove(&id);
        Ok(())
    }
}

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys<'_> {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        if u32::from(id) != self.id {
            return Err(SignalProtocolError::InvalidSignedPreKeyId);
        }
        SignedPreKeyRecord::deserialize(self.record)
    }

    async fn save_signed_pre_key(&mut self, _: SignedPreKeyId, _: &SignedPreKeyRecord) -> SignalResult<()> {
        Err(SignalProtocolError::InvalidArgument("the emulated phone does not rotate its signed prekey".into()))
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(state: &PhoneSignal) -> PhoneSignal {
        serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
    }

    /// Two phones talk; each is saved and loaded between every step, as across emulator
    /// restarts. The one-time key a pkmsg used is gone afterwards, and never handed out twice.
    #[test]
    fn sessions_survive_persistence_and_one_time_keys_are_used_once() {
        let mut rng = rand::rng();
        let (alice_key, bob_key) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        let (mut alice, mut bob) = (PhoneSignal::generate(&alice_key).unwrap(), PhoneSignal::generate(&bob_key).unwrap());
        let alice_at = ProtocolAddress::new("111@lid", DeviceId::from(0));
        let bob_at = ProtocolAddress::new("222@lid", DeviceId::from(0));

        let bundle = bob.take_bundle(&bob_key).unwrap();
        let used: u32 = bundle.pre_key_id().unwrap().unwrap().into();
        let other = bob.take_bundle(&bob_key).unwrap();
        assert_ne!(other.pre_key_id().unwrap().map(u32::from), Some(used), "a one-time key goes out once");

        alice.start_session(&alice_key, &bob_at, &bundle).unwrap();
        let mut alice = round_trip(&alice);
        let (kind, one) = alice.encrypt(&alice_key, &bob_at, b"one").unwrap();
        assert_eq!(kind, "pkmsg");
        let mut bob_loaded = round_trip(&bob);
        assert_eq!(bob_loaded.decrypt(&bob_key, &alice_at, kind, &one).unwrap(), b"one");
        assert!(!bob_loaded.prekeys.contains_key(&used), "the consumed one-time key is deleted");

        let mut bob = round_trip(&bob_loaded);
        let (kind, two) = bob.encrypt(&bob_key, &alice_at, b"two").unwrap();
        assert_eq!(kind, "msg");
        let mut alice = round_trip(&alice);
        assert_eq!(alice.decrypt(&alice_key, &bob_at, kind, &two).unwrap(), b"two");
        let (kind, three) = alice.encrypt(&alice_key, &bob_at, b"three").unwrap();
        assert_eq!(kind, "msg");
        assert_eq!(round_trip(&bob).decrypt(&bob_key, &alice_at, kind, &three).unwrap(), b"three");
        // A stranger's ciphertext does not decrypt.
        assert!(round_trip(&bob).decrypt(&bob_key, &alice_at, "msg", &three[..three.len() - 1]).is_err());
    }
}
