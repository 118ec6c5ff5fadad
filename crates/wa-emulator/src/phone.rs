//! What the primary phone computes: the signed device identity of a pair-success, and its
//! half of pairing by code.

use anyhow::{Context, anyhow, ensure};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::crypto::hkdf_sha256_into;
use whatsapp_rust::wacore::libsignal::crypto::aes_256_gcm_decrypt;
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PublicKey};
use whatsapp_rust::wacore::pair::PairUtils;
use whatsapp_rust::wacore::pair_code::PairCodeUtils;
use whatsapp_rust::waproto::whatsapp as wa;

/// Prefix of the account signature over a companion's identity (`ADV_PREFIX_ACCOUNT_SIGNATURE`).
const ACCOUNT_SIGNATURE_PREFIX: [u8; 2] = [6, 0];

/// What a QR code tells the phone about the companion.
#[derive(Clone, Debug)]
pub struct ScannedQr {
    pub pairing_ref: String,
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub adv_secret: [u8; 32],
}

/// Parses `ref,noise,identity,adv[,platform]` (the client's `PairingQrCode`).
pub fn parse_qr(qr: &str) -> anyhow::Result<ScannedQr> {
    let (pairing_ref, noise_pub, identity_pub) = PairUtils::parse_qr_code(qr.trim())?;
    let body = qr.trim().rsplit_once('#').map_or(qr.trim(), |(_, b)| b);
    let adv = body.split(',').nth(3).context("QR code without an ADV secret")?;
    let adv_secret: [u8; 32] = BASE64_STANDARD
        .decode(adv)
        .context("QR ADV secret is not base64")?
        .try_into()
        .map_err(|_| anyhow!("QR ADV secret is not 32 bytes"))?;
    Ok(ScannedQr { pairing_ref, noise_pub, identity_pub, adv_secret })
}

/// The `<device-identity>` content of a pair-success: an `ADVSignedDeviceIdentityHMAC` whose
/// inner identity the account key signed over the companion's identity key, and whose HMAC is
/// keyed with the ADV secret the phone and companion share.
pub fn signed_device_identity(
    account: &KeyPair,
    companion_identity: &[u8; 32],
    adv_secret: &[u8; 32],
    raw_id: u32,
    key_index: u32,
    now: u64,
) -> anyhow::Result<Vec<u8>> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(now),
        key_index: Some(key_index),
        ..Default::default()
    }
    .encode_to_vec();
    let mut signed_message = Vec::with_capacity(2 + details.len() + 32);
    signed_message.extend_from_slice(&ACCOUNT_SIGNATURE_PREFIX);
    signed_message.extend_from_slice(&details);
    signed_message.extend_from_slice(companion_identity);
    let account_signature = account
        .private_key
        .calculate_signature(&signed_message, &mut rand::rng())
        .map_err(|e| anyhow!("signing the device identity: {e}"))?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account.public_key.public_key_bytes().to_vec()),
        account_signature: Some(account_signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(adv_secret).map_err(|e| anyhow!("{e}"))?;
    mac.update(&signed);
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        ..Default::default()
    }
    .encode_to_vec())
}

/// Checks the companion's `pair-device-sign` answer: an `ADVSignedDeviceIdentity` whose
/// details the account signed (with the key index it was given) and which the companion
/// signed with its own identity key over `[6,1] ‖ details ‖ its identity ‖ account key`.
pub fn verify_device_signature(
    signed: &[u8],
    companion_identity: &[u8; 32],
    account: &KeyPair,
    key_index: u32,
) -> anyhow::Result<()> {
    use whatsapp_rust::wacore::adv::{AdvValidation, validate_adv_with_identity_key};
    let account_pub: [u8; 32] =
        account.public_key.public_key_bytes().try_into().map_err(|_| anyhow!("account key length"))?;
    let identity = wa::ADVSignedDeviceIdentity::decode_from_slice(signed).context("not an ADVSignedDeviceIdentity")?;
    if let Some(key) = identity.account_signature_key.as_deref().filter(|k| !k.is_empty()) {
        ensure!(key == account_pub, "signed for another account key");
    }
    ensure!(identity.device_signature.as_deref().is_some_and(|s| s.len() == 64), "no device signature");
    match validate_adv_with_identity_key(signed, companion_identity, Some(&account_pub)) {
        AdvValidation::Valid => {}
        other => anyhow::bail!("signatures do not verify ({other:?})"),
    }
    let details = wa::ADVDeviceIdentity::decode_from_slice(identity.details.as_deref().unwrap_or_default())
        .context("ADVDeviceIdentity")?;
    ensure!(details.key_index == Some(key_index), "key index {:?}, expected {key_index}", details.key_index);
    Ok(())
}

/// The companion's `companion_hello`, kept until the user types the code on the phone.
#[derive(Clone, Debug)]
pub struct CompanionHello {
    pub phone: String,
    pub wrapped_ephemeral: Vec<u8>,
    pub noise_pub: Vec<u8>,
    pub platform_display: Option<String>,
    pub pairing_ref: String,
}

/// The phone's state between `primary_hello` and the companion's `companion_finish`.
pub struct PrimaryHello {
    pub ephemeral: KeyPair,
    pub companion_ephemeral: [u8; 32],
    /// `link_code_pairing_wrapped_primary_ephemeral_pub`: our ephemeral wrapped with the code.
    pub wrapped: [u8; 80],
}

/// The phone's side of stage 2: unwrap the companion's ephemeral with the typed code (which
/// fails to produce a usable key when the code is wrong) and wrap our own.
pub fn primary_hello(hello: &CompanionHello, code: &str) -> anyhow::Result<PrimaryHello> {
    let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    ensure!(PairCodeUtils::validate_code(&code), "a pairing code is 8 characters of Crockford base32");
    // The wrapping is symmetric (salt ‖ iv ‖ AES-CTR under PBKDF2(code, salt)).
    let companion_ephemeral = PairCodeUtils::decrypt_primary_ephemeral_pub(&hello.wrapped_ephemeral, &code)
        .map_err(|e| anyhow!("unwrapping the companion's ephemeral key: {e}"))?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let wrapped = PairCodeUtils::encrypt_ephemeral_pub(
        ephemeral.public_key.public_key_bytes().try_into().map_err(|_| anyhow!("ephemeral key length"))?,
        &code,
    );
    Ok(PrimaryHello { ephemeral, companion_ephemeral, wrapped })
}

/// What the phone learns from `companion_finish`: the companion's identity key and the ADV
/// secret both sides now derive (the QR flow's secret travels in the QR code instead).
pub struct CompanionFinish {
    pub companion_identity: [u8; 32],
    pub adv_secret: [u8; 32],
}

/// Opens `link_code_pairing_wrapped_key_bundle` (salt 32 ‖ iv 12 ‖ AES-GCM) and derives the
/// ADV secret from the two DH results and the companion's random bytes.
pub fn companion_finish(
    primary: &PrimaryHello,
    account: &KeyPair,
    wrapped_bundle: &[u8],
    companion_identity_public: &[u8],
) -> anyhow::Result<CompanionFinish> {
    ensure!(wrapped_bundle.len() > 44 + 16, "key bundle too short");
    let companion_eph = PublicKey::from_djb_public_key_bytes(&primary.companion_ephemeral)
        .map_err(|e| anyhow!("companion ephemeral key: {e}"))?;
    let ephemeral_shared =
        primary.ephemeral.private_key.calculate_agreement(&companion_eph).map_err(|e| anyhow!("{e}"))?;
    let (salt, rest) = wrapped_bundle.split_at(32);
    let (iv, sealed) = rest.split_at(12);
    let mut key = [0u8; 32];
    hkdf_sha256_into(&ephemeral_shared, Some(salt), b"link_code_pairing_key_bundle_encryption_key", &mut key)
        .map_err(|_| anyhow!("deriving the bundle key"))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| anyhow!("bundle iv length"))?;
    let mut bundle = Vec::with_capacity(96);
    aes_256_gcm_decrypt(&key, &iv, b"", sealed, &mut bundle)
        .map_err(|_| anyhow!("the key bundle does not open: wrong code or corrupted"))?;
    ensure!(bundle.len() == 96, "key bundle is {} bytes, expected 96", bundle.len());
    let companion_identity: [u8; 32] = bundle[..32].try_into().map_err(|_| anyhow!("bundle layout"))?;
    ensure!(
        bundle[32..64] == *account.public_key.public_key_bytes(),
        "the key bundle names another primary identity"
    );
    ensure!(
        companion_identity_public == companion_identity,
        "companion_identity_public differs from the identity in the key bundle"
    );
    let companion_id_pub =
        PublicKey::from_djb_public_key_bytes(&companion_identity).map_err(|e| anyhow!("companion identity: {e}"))?;
    let identity_shared = account.private_key.calculate_agreement(&companion_id_pub).map_err(|e| anyhow!("{e}"))?;
    let mut secret_input = Vec::with_capacity(96);
    secret_input.extend_from_slice(&ephemeral_shared);
    secret_input.extend_from_slice(&identity_shared);
    secret_input.extend_from_slice(&bundle[64..96]);
    let mut adv_secret = [0u8; 32];
    hkdf_sha256_into(&secret_input, None, b"adv_secret", &mut adv_secret)
        .map_err(|_| anyhow!("deriving the ADV secret"))?;
    Ok(CompanionFinish { companion_identity, adv_secret })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::wacore::pair::DeviceState;

    fn keypair() -> KeyPair {
        KeyPair::generate(&mut rand::rng())
    }

    /// The client's own verification (`PairUtils::do_pair_crypto`) accepts our pair-success,
    /// and refuses it under another ADV secret.
    #[test]
    fn pair_success_passes_the_clients_checks() {
        let (account, companion) = (keypair(), DeviceState { identity_key: keypair(), noise_key: keypair(), adv_secret_key: [7; 32] });
        let companion_pub: [u8; 32] = companion.identity_key.public_key.public_key_bytes().try_into().unwrap();
        let identity = signed_device_identity(&account, &companion_pub, &[7; 32], 1, 3, 1_700_000_000).unwrap();
        let (_, key_index) = PairUtils::do_pair_crypto(&companion, &identity).expect("accepted");
        assert_eq!(key_index, 3);

        let forged = signed_device_identity(&account, &companion_pub, &[8; 32], 1, 3, 1_700_000_000).unwrap();
        let err = PairUtils::do_pair_crypto(&companion, &forged).unwrap_err();
        assert_eq!(err.text, "hmac-mismatch");
        let other = keypair();
        let other_pub: [u8; 32] = other.public_key.public_key_bytes().try_into().unwrap();
        let wrong_device = signed_device_identity(&account, &other_pub, &[7; 32], 1, 3, 1_700_000_000).unwrap();
        assert_eq!(PairUtils::do_pair_crypto(&companion, &wrong_device).unwrap_err().text, "signature-mismatch");
    }

    /// What the client's own `do_pair_crypto` signs passes; a signature by another key, a
    /// tampered detail or another key index does not.
    #[test]
    fn pair_device_sign_is_verified() {
        let (account, companion) = (keypair(), DeviceState { identity_key: keypair(), noise_key: keypair(), adv_secret_key: [7; 32] });
        let companion_pub: [u8; 32] = companion.identity_key.public_key.public_key_bytes().try_into().unwrap();
        let identity = signed_device_identity(&account, &companion_pub, &[7; 32], 1, 3, 1_700_000_000).unwrap();
        let (signed, key_index) = PairUtils::do_pair_crypto(&companion, &identity).expect("accepted");
        verify_device_signature(&signed, &companion_pub, &account, key_index).expect("valid");
        assert!(verify_device_signature(&signed, &companion_pub, &account, key_index + 1).is_err());
        assert!(verify_device_signature(&signed, &companion_pub, &keypair(), key_index).is_err(), "another account");
        let impostor: [u8; 32] = keypair().public_key.public_key_bytes().try_into().unwrap();
        assert!(verify_device_signature(&signed, &impostor, &account, key_index).is_err(), "another identity");
        let mut tampered = wa::ADVSignedDeviceIdentity::decode_from_slice(&signed).unwrap();
        let mut sig = tampered.device_signature.clone().unwrap();
        sig[10] ^= 1;
        tampered.device_signature = Some(sig);
        assert!(verify_device_signature(&tampered.encode_to_vec(), &companion_pub, &account, key_index).is_err());
        tampered.device_signature = None;
        assert!(verify_device_signature(&tampered.encode_to_vec(), &companion_pub, &account, key_index).is_err());
    }

    #[test]
    fn qr_strings_parse_with_and_without_the_platform_field() {
        let b = |v: u8| BASE64_STANDARD.encode([v; 32]);
        let qr = format!("2@abc,{},{},{},9", b(1), b(2), b(3));
        let s = parse_qr(&qr).unwrap();
        assert_eq!((s.pairing_ref.as_str(), s.noise_pub, s.identity_pub, s.adv_secret), ("2@abc", [1; 32], [2; 32], [3; 32]));
        assert!(parse_qr(&format!("2@abc,{},{},{}", b(1), b(2), b(3))).is_ok());
        assert!(parse_qr("2@abc,xx").is_err());
        assert!(parse_qr(&format!("2@abc,{},{},{}", b(1), b(2), "short")).is_err());
    }

    /// Both halves of pairing by code, the companion's from the client crate: the phone
    /// derives the same ADV secret, and a mistyped code does not open the key bundle.
    #[test]
    fn pairing_code_exchange_agrees_on_the_adv_secret() {
        let (account, companion_identity, companion_eph) = (keypair(), keypair(), keypair());
        let code = "ABCD1234";
        let eph_pub: [u8; 32] = companion_eph.public_key.public_key_bytes().try_into().unwrap();
        let hello = CompanionHello {
            phone: "15550100001".into(),
            wrapped_ephemeral: PairCodeUtils::encrypt_ephemeral_pub(&eph_pub, code).to_vec(),
            noise_pub: vec![0; 32],
            platform_display: None,
            pairing_ref: "ref".into(),
        };
        let primary = primary_hello(&hello, "abcd-1234").unwrap();
        // The companion's stage 2.
        let primary_eph = PairCodeUtils::decrypt_primary_ephemeral_pub(&primary.wrapped, code).unwrap();
        let account_pub: [u8; 32] = account.public_key.public_key_bytes().try_into().unwrap();
        let (bundle, companion_secret) =
            PairCodeUtils::prepare_key_bundle(&companion_eph, &primary_eph, &account_pub, &companion_identity).unwrap();
        let identity_pub = companion_identity.public_key.public_key_bytes();
        let finish = companion_finish(&primary, &account, &bundle, identity_pub).unwrap();
        assert_eq!(finish.adv_secret, companion_secret);
        assert_eq!(finish.companion_identity, identity_pub);

        let mistyped = primary_hello(&hello, "ABCD1235").unwrap();
        let garbled = PairCodeUtils::decrypt_primary_ephemeral_pub(&mistyped.wrapped, code).unwrap();
        if let Ok((bundle, _)) = PairCodeUtils::prepare_key_bundle(&companion_eph, &garbled, &account_pub, &companion_identity) {
            assert!(companion_finish(&mistyped, &account, &bundle, identity_pub).is_err());
        }
        assert!(primary_hello(&hello, "not a code").is_err());
    }
}
